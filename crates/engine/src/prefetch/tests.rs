use super::*;
use crate::{wal_push, WalPushOptions};
use pgark_store::{MemoryStore, ObjectStore, ObjectStoreExt};
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

/// A repository holding the fixture segment under `names` (objects are
/// verified against their own digest, not their name, when fetched).
async fn store_with(names: &[String]) -> Arc<dyn ObjectStore> {
    let store: Arc<dyn ObjectStore> = Arc::new(MemoryStore::new());
    wal_push(store.clone(), &fixture(), &WalPushOptions::default())
        .await
        .unwrap();
    let source = wal_key(&ArchivedFile::parse(&seg(1, 4)).unwrap());
    let bytes = store.get_bytes(&source).await.unwrap();
    for name in names {
        let key = wal_key(&ArchivedFile::parse(name).unwrap());
        store
            .put(&key, bytes.clone(), pgark_store::PutMode::Overwrite)
            .await
            .unwrap();
    }
    store
}

fn pg_wal() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let pg_wal = dir.path().join("pg_wal");
    std::fs::create_dir_all(pg_wal.join("archive_status")).unwrap();
    (dir, pg_wal)
}

fn spool_of(pg_wal: &Path, repository: &str) -> FetchSpool {
    FetchSpool::for_dest(&pg_wal.join("RECOVERYXLOG"), repository).unwrap()
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
fn only_a_pg_wal_destination_has_a_spool() {
    let (_dir, pg_wal) = pg_wal();
    assert!(FetchSpool::for_dest(&pg_wal.join("RECOVERYXLOG"), "r").is_some());
    assert!(FetchSpool::for_dest(&pg_wal.parent().unwrap().join("x"), "r").is_none());
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
    let (_dir, pg_wal) = pg_wal();
    let spool = spool_of(&pg_wal, "/repo/a");
    std::fs::create_dir_all(spool.dir()).unwrap();
    let name = seg(1, 5);
    let dest = pg_wal.join("RECOVERYXLOG");
    let opts = WalFetchOptions::default();
    // A file without a record (a prefetcher killed before writing it).
    std::fs::write(spool.dir().join(&name), vec![7u8; 1000]).unwrap();
    assert!(spool.take(&name, &dest, &opts).unwrap().is_none());
    // A record of another repository.
    let other = spool_of(&pg_wal, "/repo/b");
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
    // The record agrees: handed over by a rename.
    spool.write_record(&name, &outcome).unwrap();
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
    let (_dir, pg_wal) = pg_wal();
    let spool = spool_of(&pg_wal, "/repo");
    // Leftovers of a killed prefetcher are removed when the next starts.
    std::fs::create_dir_all(spool.dir()).unwrap();
    std::fs::write(spool.dir().join(".000000010000000000000005.1234.pgark-tmp"), b"x").unwrap();
    std::fs::write(spool.dir().join(seg(1, 5)), b"partial").unwrap();
    spool.want(&seg(1, 4), SIZE);
    let worker = tokio::spawn(run_prefetcher(
        store.clone(),
        spool.clone(),
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
    // A second prefetcher for the same pg_wal does nothing.
    assert!(spool.prefetcher_running());
    run_prefetcher(store.clone(), spool.clone(), WalFetchOptions::default(), 2)
        .await
        .unwrap();

    // Handed over, verified: the fixture's bytes.
    let dest = pg_wal.join("RECOVERYXLOG");
    let taken = spool
        .take(&seg(1, 5), &dest, &WalFetchOptions::default())
        .unwrap();
    assert!(taken.is_some());
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(fixture()).unwrap());
    spool.want(&seg(1, 5), SIZE);
    wait_until("the window moves", || {
        held_names(&spool) == vec![seg(1, 6), seg(1, 7), seg(1, 8), seg(1, 9)]
    });

    // The archive ends at 12: nothing past it, no error.
    spool.want(&seg(1, 10), SIZE);
    wait_until("the end of the archive", || {
        held_names(&spool) == vec![seg(1, 11), seg(1, 12)]
    });

    // PostgreSQL moves to timeline 2: timeline 1's files go.
    spool.want(&seg(2, 9), SIZE);
    wait_until("the new timeline", || {
        held_names(&spool) == vec![seg(2, 10), seg(2, 11), seg(2, 12)]
    });

    // Its pg_wal removed, it ends and leaves nothing but the lock.
    std::fs::remove_dir_all(&pg_wal).unwrap();
    tokio::time::timeout(Duration::from_secs(20), worker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prefetcher_ends_with_its_server_and_removes_its_files() {
    let store = store_with(&[seg(1, 5), seg(1, 6)]).await;
    let (dir, pg_wal) = pg_wal();
    // A server that is gone: a pid that no process has.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    std::fs::write(dir.path().join("postmaster.pid"), format!("{pid}\n")).unwrap();
    let spool = spool_of(&pg_wal, "/repo");
    spool.want(&seg(1, 4), SIZE);
    tokio::time::timeout(
        Duration::from_secs(20),
        run_prefetcher(store, spool.clone(), WalFetchOptions::default(), 2),
    )
    .await
    .unwrap()
    .unwrap();
    let left: Vec<_> = std::fs::read_dir(spool.dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("lock")]);
    assert!(spool.wait_for_prefetcher(Duration::from_secs(1)));
}

#[test]
fn what_a_killed_prefetcher_left_is_removed_when_none_runs() {
    let (_dir, pg_wal) = pg_wal();
    let spool = spool_of(&pg_wal, "/repo");
    std::fs::create_dir_all(spool.dir()).unwrap();
    for leftover in [
        seg(1, 5),
        format!("{}.rec", seg(1, 5)),
        "want".into(),
        ".x.pgark-tmp".into(),
    ] {
        std::fs::write(spool.dir().join(leftover), b"x").unwrap();
    }
    // Not while a prefetcher holds the lock.
    let lock = spool.try_lock().unwrap();
    clear_abandoned(&pg_wal);
    assert_eq!(std::fs::read_dir(spool.dir()).unwrap().count(), 5);
    drop(lock);
    clear_abandoned(&pg_wal);
    let left: Vec<_> = std::fs::read_dir(spool.dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("lock")]);
}
