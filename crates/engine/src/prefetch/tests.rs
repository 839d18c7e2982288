use super::*;
use pgark_store::{MemoryStore, ObjectStore};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIZE: u64 = 16 << 20;

fn fixture() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/wal/000000010000000000000004"
    ))
}

fn seg(tli: u32, n: u32) -> String {
    format!("{tli:08X}00000000{n:08X}")
}

/// The fixture with its last 16 bytes set to `name`'s timeline and segment
/// number: distinct content per name.
fn content_of(name: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(fixture()).unwrap();
    let n = bytes.len();
    bytes[n - 16..n - 8].copy_from_slice(&name.as_bytes()[0..8]);
    bytes[n - 8..].copy_from_slice(&name.as_bytes()[16..24]);
    bytes
}

/// A repository holding `names`, each with its own content.
async fn store_with(names: &[String]) -> Arc<dyn ObjectStore> {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        let path = dir.path().join(name);
        std::fs::write(&path, content_of(name)).unwrap();
        let key = wal_key(&ArchivedFile::parse(name).unwrap());
        crate::pipe::upload_file(
            &*store,
            &key,
            &path,
            pgark_codec::CompressionSpec::default(),
            None,
            pgark_store::UploadOptions::default(),
        )
        .await
        .unwrap();
    }
    store
}

/// A data directory in recovery: `pg_wal/archive_status/`,
/// `recovery.signal`, and a `postmaster.pid` naming a live process (a
/// child the test kills to stop "the server").
struct Server {
    dir: tempfile::TempDir,
    postmaster: std::process::Child,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pg_wal/archive_status")).unwrap();
        std::fs::write(dir.path().join("recovery.signal"), b"").unwrap();
        let postmaster = std::process::Command::new("sleep").arg("600").spawn().unwrap();
        std::fs::write(
            dir.path().join("postmaster.pid"),
            format!("{}\n", postmaster.id()),
        )
        .unwrap();
        Server { dir, postmaster }
    }

    fn pg_wal(&self) -> PathBuf {
        self.dir.path().join("pg_wal")
    }

    fn dest(&self) -> PathBuf {
        self.pg_wal().join("RECOVERYXLOG")
    }

    fn spool(&self, repository: &str) -> FetchSpool {
        FetchSpool::for_recovery(&self.dest(), repository).unwrap()
    }

    fn stop(&mut self) {
        let _ = self.postmaster.kill();
        let _ = self.postmaster.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn held_names(spool: &FetchSpool) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(spool.dir())
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| n.len() == 24 && spool.record_path(n).is_file())
        .collect();
    names.sort();
    names
}

#[test]
fn only_a_running_servers_recovery_is_prefetched_for() {
    let mut server = Server::start();
    assert!(FetchSpool::for_recovery(&server.dest(), "r").is_some());
    // pg_rewind names the segment itself.
    assert!(FetchSpool::for_recovery(&server.pg_wal().join(seg(1, 5)), "r").is_none());
    // Not in a pg_wal.
    assert!(FetchSpool::for_recovery(&server.dir.path().join("RECOVERYXLOG"), "r").is_none());
    // A single-user backend's negated pid.
    let pid_file = server.dir.path().join("postmaster.pid");
    std::fs::write(&pid_file, "-1234\n").unwrap();
    assert!(FetchSpool::for_recovery(&server.dest(), "r").is_none());
    std::fs::write(&pid_file, format!("{}\n", server.postmaster.id())).unwrap();
    assert!(FetchSpool::for_recovery(&server.dest(), "r").is_some());
    // The server stopped.
    server.stop();
    assert!(FetchSpool::for_recovery(&server.dest(), "r").is_none());
}

#[test]
fn the_window_follows_the_timeline_crosses_log_ids_and_stops_at_until() {
    let size = WalSegmentSize::new(SIZE).unwrap();
    let name = WalSegmentName::parse("0000000200000003000000FE").unwrap();
    let opts = WalFetchOptions::default();
    assert_eq!(
        worker::window_after(&name, size, 3, &opts),
        vec![
            "0000000200000003000000FF",
            "000000020000000400000000",
            "000000020000000400000001"
        ]
    );
    let opts = WalFetchOptions {
        until: Some(WalSegmentName::parse("000000010000000400000000").unwrap()),
        ..Default::default()
    };
    assert_eq!(
        worker::window_after(&name, size, 3, &opts),
        vec!["0000000200000003000000FF", "000000020000000400000000"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spool_file_is_handed_over_only_with_a_record_that_agrees() {
    let server = Server::start();
    let spool = server.spool("/repo/a");
    std::fs::create_dir_all(spool.dir()).unwrap();
    let name = seg(1, 5);
    let dest = server.dest();
    let opts = WalFetchOptions::default();
    // A file without a record (a prefetcher killed before writing it).
    std::fs::write(spool.dir().join(&name), vec![7u8; 1000]).unwrap();
    assert!(spool.take(&name, &dest, &opts).unwrap().is_none());
    // A record of another repository.
    let other = server.spool("/repo/b");
    let outcome = WalFetchOutcome {
        file: ArchivedFile::parse(&name).unwrap(),
        key: wal_key(&ArchivedFile::parse(&name).unwrap()),
        original_len: 1000,
        digest: pgark_codec::ContentDigest::of(pgark_codec::DigestAlgorithm::Sha256, &[7u8; 1000]),
    };
    other.write_record(&name, &outcome).unwrap();
    assert!(spool.take(&name, &dest, &opts).unwrap().is_none());
    // A record of another size.
    spool
        .write_record(
            &name,
            &WalFetchOutcome {
                original_len: 999,
                ..outcome.clone()
            },
        )
        .unwrap();
    assert!(spool.take(&name, &dest, &opts).unwrap().is_none());
    assert!(!dest.exists());
    // The record agrees, but no prefetcher runs: what one left is not
    // trusted.
    spool.write_record(&name, &outcome).unwrap();
    assert!(spool.take(&name, &dest, &opts).unwrap().is_none());
    // While a prefetcher holds the lock (flock: another open file
    // description, as another process would have): handed over by a rename.
    let _lock = spool.try_lock().unwrap();
    let taken = spool.take(&name, &dest, &opts).unwrap().unwrap();
    assert_eq!(taken.digest, outcome.digest);
    assert_eq!(std::fs::read(&dest).unwrap(), vec![7u8; 1000]);
    assert!(!spool.dir().join(&name).exists() && !spool.record_path(&name).exists());
    // After `until`: not found, even from the spool.
    std::fs::write(spool.dir().join(seg(1, 6)), vec![7u8; 1000]).unwrap();
    spool.write_record(&seg(1, 6), &outcome).unwrap();
    let until = WalFetchOptions {
        until: Some(WalSegmentName::parse(&seg(1, 5)).unwrap()),
        ..Default::default()
    };
    let err = spool.take(&seg(1, 6), &dest, &until).unwrap_err();
    assert_eq!(err.class(), crate::ErrorClass::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prefetcher_fetches_ahead_follows_requests_and_timelines_and_cleans_up() {
    let mut names: Vec<String> = (5..=12).map(|n| seg(1, n)).collect();
    names.extend((9..=12).map(|n| seg(2, n)));
    let store = store_with(&names).await;
    let server = Server::start();
    let spool = server.spool("/repo");
    // Leftovers of a killed prefetcher are removed when the next starts.
    std::fs::create_dir_all(spool.dir()).unwrap();
    std::fs::write(spool.dir().join(".000000010000000000000005.1234.pgark-tmp"), b"x").unwrap();
    std::fs::write(spool.dir().join(seg(1, 5)), b"partial").unwrap();
    std::fs::write(spool.record_path(&seg(1, 5)), b"{}").unwrap();
    spool.want(&seg(1, 4), SIZE);
    let worker = tokio::spawn(run_prefetcher(
        store.clone(),
        spool.clone(),
        spool.try_lock().unwrap(),
        WalFetchOptions::default(),
        2,
    ));
    wait_until("four segments ahead", || held_names(&spool).len() == 4);
    assert_eq!(
        held_names(&spool),
        vec![seg(1, 5), seg(1, 6), seg(1, 7), seg(1, 8)]
    );
    assert!(!spool
        .dir()
        .join(".000000010000000000000005.1234.pgark-tmp")
        .exists());
    // A second prefetcher for the same pg_wal cannot start.
    assert!(spool.prefetcher_running());
    assert!(spool.try_lock().is_none());

    // Handed over: each name's own bytes.
    let dest = server.dest();
    let opts = WalFetchOptions::default();
    for n in [5, 6] {
        let taken = spool.take(&seg(1, n), &dest, &opts).unwrap();
        assert!(taken.is_some(), "{} was not handed over", seg(1, n));
        assert!(std::fs::read(&dest).unwrap() == content_of(&seg(1, n)));
        spool.want(&seg(1, n), SIZE);
    }
    wait_until("the window moves", || {
        held_names(&spool) == vec![seg(1, 7), seg(1, 8), seg(1, 9), seg(1, 10)]
    });

    // The archive ends at 12: nothing past it, no error.
    spool.want(&seg(1, 10), SIZE);
    wait_until("the end of the archive", || {
        held_names(&spool) == vec![seg(1, 11), seg(1, 12)]
    });

    // PostgreSQL moves to timeline 2 (wal-fetch got 00000002...09 from the
    // repository): timeline 1's files go, timeline 2's come.
    spool.want(&seg(2, 9), SIZE);
    wait_until("the new timeline", || {
        held_names(&spool) == vec![seg(2, 10), seg(2, 11), seg(2, 12)]
    });
    assert!(spool.take(&seg(1, 11), &dest, &opts).unwrap().is_none());
    let taken = spool.take(&seg(2, 10), &dest, &opts).unwrap();
    assert!(taken.is_some() && std::fs::read(&dest).unwrap() == content_of(&seg(2, 10)));

    // Recovery over (PostgreSQL removed recovery.signal): it ends and leaves
    // nothing but the lock.
    std::fs::remove_file(server.dir.path().join("recovery.signal")).unwrap();
    tokio::time::timeout(Duration::from_secs(20), worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(only_lock(&spool), Vec::<String>::new());
}

/// The spool's files other than its lock.
fn only_lock(spool: &FetchSpool) -> Vec<String> {
    std::fs::read_dir(spool.dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "lock")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prefetcher_ends_at_once_when_its_server_stops_even_mid_download() {
    let names: Vec<String> = (5..=8).map(|n| seg(1, n)).collect();
    let slow = Arc::new(
        pgark_testkit::faults::FaultyStore::new(
            store_with(&names).await,
            pgark_store::ErrorKind::Transient,
            &[],
            0,
        )
        .with_delay(Duration::from_secs(30)),
    );
    let mut server = Server::start();
    let spool = server.spool("/repo");
    spool.want(&seg(1, 4), SIZE);
    // Taken here, as wal-fetch takes it and passes it on: a probe of the
    // lock racing the prefetcher's own start cannot make it give up.
    let lock = spool.try_lock().unwrap();
    let worker = tokio::spawn(run_prefetcher(
        slow,
        spool.clone(),
        lock,
        WalFetchOptions::default(),
        2,
    ));
    assert!(spool.prefetcher_running());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = Instant::now();
    server.stop();
    tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .expect("the prefetcher did not end with its server")
        .unwrap()
        .unwrap();
    assert!(stopped.elapsed() < Duration::from_secs(3));
    assert_eq!(only_lock(&spool), Vec::<String>::new());
    assert!(wait_for_prefetcher(&server.pg_wal(), Duration::from_secs(1)));
}

#[test]
fn what_a_killed_prefetcher_left_is_removed_after_recovery_when_none_runs() {
    let server = Server::start();
    let spool = server.spool("/repo");
    std::fs::create_dir_all(spool.dir()).unwrap();
    for leftover in [
        seg(1, 5),
        format!("{}.rec", seg(1, 5)),
        "want".into(),
        ".x.pgark-tmp".into(),
    ] {
        std::fs::write(spool.dir().join(leftover), b"x").unwrap();
    }
    // Not during recovery (a prefetcher may be starting)...
    clear_abandoned(&server.pg_wal());
    assert_eq!(only_lock(&spool).len(), 4);
    std::fs::remove_file(server.dir.path().join("recovery.signal")).unwrap();
    // ... nor while a prefetcher holds the lock.
    let lock = spool.try_lock().unwrap();
    clear_abandoned(&server.pg_wal());
    assert_eq!(only_lock(&spool).len(), 4);
    drop(lock);
    clear_abandoned(&server.pg_wal());
    assert_eq!(only_lock(&spool), Vec::<String>::new());
}
