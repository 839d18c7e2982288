//! Which backup a restore chooses for a recovery target, by the server's
//! own clock and LSNs, and a part that is not the one its manifest
//! recorded. Real PostgreSQL, backed up into a local repository.

use pgark_catalog::BackupManifest;
use pgark_codec::{CompressionSpec, DigestAlgorithm, ObjectReader, ObjectWriter};
use pgark_engine::{
    backup_fetch, backup_push, load_manifest, ArchiveMode, BackupFetchOptions, BackupPushOptions,
    BackupSelector, ErrorClass, RecoveryOptions, RecoveryTarget, RepoKeys, RetryPolicy,
};
use pgark_pgclient::ConnectOptions;
use pgark_store::{LocalStore, ObjectStore, ObjectStoreExt, PutMode};
use pgark_testkit::pg::{ClusterOptions, PgCluster, PgInstall};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

fn cluster() -> PgCluster {
    let c =
        PgCluster::start_new(ClusterOptions::new(PgInstall::detect().expect("PostgreSQL"))).expect("start");
    c.psql("create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 5000) g")
        .unwrap();
    c
}

fn push_options(c: &PgCluster) -> BackupPushOptions {
    let mut opts = BackupPushOptions::new(c.data_dir().to_path_buf());
    opts.connect = ConnectOptions {
        conninfo: Some(c.conninfo()),
        connect_timeout: None,
    };
    // The test cluster does not archive: the WAL wait is not under test.
    opts.archive_timeout = None;
    opts
}

fn fetch_options(
    dest: PathBuf,
    backup: BackupSelector,
    target: Option<RecoveryTarget>,
) -> BackupFetchOptions {
    BackupFetchOptions {
        dest,
        backup,
        force: false,
        concurrency: 2,
        tablespace_map: Default::default(),
        recovery: Some(RecoveryOptions {
            restore_command: Some("false".into()),
            target,
            ..Default::default()
        }),
        archive_mode: ArchiveMode::Preserve,
        dry_run: false,
        delta: false,
        delta_by_timestamp: false,
        progress: None,
        keys: RepoKeys::none(),
        retry: RetryPolicy::none(),
    }
}

/// Rewrites a backup's manifest with `edit` (as a host whose clock is off
/// would have written it).
async fn rewrite_manifest(
    store: &dyn ObjectStore,
    m: &BackupManifest,
    edit: impl FnOnce(&mut BackupManifest),
) {
    let mut m = m.clone();
    edit(&mut m);
    let (bytes, _) = pgark_codec::encode_to_vec(&m.to_json(), CompressionSpec::default()).unwrap();
    store
        .put(&m.name.manifest_key(), bytes.into(), PutMode::Overwrite)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_backup_is_chosen_by_the_servers_stop_time_and_stop_lsn() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("repo")).unwrap());
    let early = c.psql("select clock_timestamp()::text").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let first = backup_push(store.clone(), &push_options(&c)).await.unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let between = c.psql("select clock_timestamp()::text").unwrap();
    let between_lsn = c.psql("select pg_current_wal_lsn()::text").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    c.psql("insert into t select g, 'more' from generate_series(5001, 6000) g")
        .unwrap();
    let second = backup_push(store.clone(), &push_options(&c)).await.unwrap();
    // pgark ran on a host whose clock was an hour behind the server's when
    // it took the second backup.
    rewrite_manifest(&*store, &second, |m| {
        m.started_at -= chrono::Duration::hours(1);
        m.finished_at -= chrono::Duration::hours(1);
    })
    .await;
    let second = load_manifest(&*store, &second.name, &RepoKeys::none())
        .await
        .unwrap();
    let target_time = Some(RecoveryTarget::Time(between.clone()));

    // LATEST with a target time between the two: the first backup, which
    // the server stopped before it.
    let dest = dir.path().join("by-time");
    let out = backup_fetch(
        store.clone(),
        &fetch_options(dest.clone(), BackupSelector::Latest, target_time.clone()),
    )
    .await
    .unwrap();
    assert_eq!(out.manifest.name, first.name, "{}", out.reason);
    assert!(out.reason.contains("server's clock"), "{}", out.reason);

    // By LSN: the first backup stopped before `between_lsn`, the second after.
    let dest = dir.path().join("by-lsn");
    let out = backup_fetch(
        store.clone(),
        &fetch_options(
            dest,
            BackupSelector::Latest,
            Some(RecoveryTarget::Lsn(between_lsn.clone())),
        ),
    )
    .await
    .unwrap();
    assert_eq!(out.manifest.name, first.name, "{}", out.reason);

    // Named, but it cannot reach the target: refused, nothing written.
    for target in [target_time.clone(), Some(RecoveryTarget::Lsn(between_lsn))] {
        let dest = dir.path().join("named");
        let err = backup_fetch(
            store.clone(),
            &fetch_options(dest.clone(), BackupSelector::Named(second.name.clone()), target),
        )
        .await
        .expect_err("the second backup cannot reach a target before it");
        assert_eq!(err.class(), ErrorClass::Rejected, "{err}");
        assert!(!dest.exists());
    }

    // No backup reaches a target before the first: "not found", nothing written.
    let dest = dir.path().join("none");
    let err = backup_fetch(
        store.clone(),
        &fetch_options(
            dest.clone(),
            BackupSelector::Latest,
            Some(RecoveryTarget::Time(early)),
        ),
    )
    .await
    .expect_err("no backup was consistent that early");
    assert_eq!(err.class(), ErrorClass::NotFound, "{err}");
    assert!(err.to_string().contains("can reach"), "{err}");
    assert!(!dest.exists());
}

/// CRC-32C is linear: changes `data[at..at + 4]` so that the CRC-32C of
/// `data` is `want` again (a forgery CRC-32C cannot see).
fn restore_crc32c(data: &mut [u8], at: usize, want: u32) {
    let crc = |d: &[u8]| crc32c::crc32c(d);
    let zeros = vec![0u8; data.len()];
    let base = crc(&zeros);
    // Effect of each of the 32 bits at `at` on the CRC.
    let mut columns = Vec::with_capacity(32);
    for bit in 0..32 {
        let mut z = zeros.clone();
        z[at + bit / 8] ^= 1 << (bit % 8);
        columns.push(crc(&z) ^ base);
    }
    let delta = crc(data) ^ want;
    // Solve sum(x_i * columns_i) = delta over GF(2).
    let mut rows: Vec<(u32, u32)> = columns.iter().enumerate().map(|(i, &c)| (c, 1u32 << i)).collect();
    let mut pivots: Vec<(u32, u32)> = Vec::new();
    for (mut c, mut mask) in rows.drain(..) {
        for &(pc, pm) in &pivots {
            if c ^ pc < c {
                c ^= pc;
                mask ^= pm;
            }
        }
        if c != 0 {
            pivots.push((c, mask));
            pivots.sort_by_key(|p| std::cmp::Reverse(p.0));
        }
    }
    let (mut d, mut mask) = (delta, 0u32);
    for &(pc, pm) in &pivots {
        if d ^ pc < d {
            d ^= pc;
            mask ^= pm;
        }
    }
    assert_eq!(d, 0, "the 32 bits at {at} span every CRC");
    for bit in 0..32 {
        if mask & (1 << bit) != 0 {
            data[at + bit / 8] ^= 1 << (bit % 8);
        }
    }
    assert_eq!(crc(data), want);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_part_replaced_behind_the_manifest_is_refused() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("repo")).unwrap());
    let backup = backup_push(store.clone(), &push_options(&c)).await.unwrap();

    // Change the first bytes of postgresql.conf in its
    // part, keeping its size and CRC-32C, and store the part again as a
    // valid object (its own trailer checksums hold).
    let file = backup.files.iter().find(|f| f.path == "postgresql.conf").unwrap();
    let key = backup.name.part_key(file.part);
    let stored = store.get_bytes(&key).await.unwrap();
    let mut tar_bytes = Vec::new();
    ObjectReader::new(&stored[..])
        .unwrap()
        .read_to_end(&mut tar_bytes)
        .unwrap();
    let offset = {
        let mut archive = tar::Archive::new(&tar_bytes[..]);
        let entry = archive
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.path().unwrap() == Path::new("postgresql.conf"))
            .unwrap();
        entry.raw_file_position() as usize
    };
    let content = &mut tar_bytes[offset..offset + file.size as usize];
    let want = crc32c::crc32c(content);
    content[..12].copy_from_slice(b"fsync = off\n");
    restore_crc32c(content, 12, want);
    let mut writer = ObjectWriter::with_options(
        Vec::new(),
        CompressionSpec::default(),
        DigestAlgorithm::Blake3,
        None,
    )
    .unwrap();
    writer.write_all(&tar_bytes).unwrap();
    let (forged, _) = writer.finish().unwrap();
    store.put(&key, forged.into(), PutMode::Overwrite).await.unwrap();

    let dest = dir.path().join("restore");
    let fetched = backup_fetch(
        store.clone(),
        &fetch_options(dest.clone(), BackupSelector::Latest, None),
    )
    .await;
    let Err(err) = fetched else {
        panic!("a part that is not the one its manifest recorded was restored");
    };
    assert_eq!(err.class(), ErrorClass::Integrity, "{err}");
    assert!(err.to_string().contains("other content"), "{err}");

    // A --delta restore keeps what it wrote, but not a forged part's files:
    // run again, it must not find them "already matching".
    let delta_dest = dir.path().join("delta");
    let mut opts = fetch_options(delta_dest.clone(), BackupSelector::Latest, None);
    opts.delta = true;
    let Err(err) = backup_fetch(store.clone(), &opts).await else {
        panic!("a forged part was restored by --delta");
    };
    assert_eq!(err.class(), ErrorClass::Integrity, "{err}");
    assert!(
        !delta_dest.join("postgresql.conf").exists(),
        "a forged file stayed"
    );
    assert!(!delta_dest.join("global/pg_control").exists());
    assert_eq!(
        std::fs::read_dir(&dest).unwrap().count(),
        0,
        "a failed restore leaves DEST empty"
    );
}

/// LATEST is chosen from the small summary objects: the manifests of the
/// backups not chosen are never read (here, reading the older one fails,
/// and is counted). A backup without a summary is listed from its manifest.
#[tokio::test(flavor = "multi_thread")]
async fn latest_reads_only_the_chosen_backups_manifest() {
    use pgark_store::{ErrorKind, Operation};
    use pgark_testkit::faults::FaultyStore;
    use std::sync::atomic::Ordering;
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("repo")).unwrap());
    let first = backup_push(local.clone(), &push_options(&c)).await.unwrap();
    let second = backup_push(local.clone(), &push_options(&c)).await.unwrap();
    assert!(local.exists(&second.name.summary_key()).await.unwrap());
    let faulty = Arc::new(
        FaultyStore::new(local.clone(), ErrorKind::Permanent, &[Operation::Get], u32::MAX)
            .only_keys_containing(first.name.manifest_key().as_str()),
    );
    let store: Arc<dyn ObjectStore> = faulty.clone();
    let out = backup_fetch(
        store.clone(),
        &fetch_options(dir.path().join("a"), BackupSelector::Latest, None),
    )
    .await
    .unwrap();
    assert_eq!(out.manifest.name, second.name);
    assert_eq!(
        faulty.injected.load(Ordering::SeqCst),
        0,
        "the older manifest was read"
    );

    // The newest without its summary (as a backup of an older pgark): read
    // from its manifest, chosen all the same.
    local.delete(&second.name.summary_key()).await.unwrap();
    let out = backup_fetch(
        store,
        &fetch_options(dir.path().join("b"), BackupSelector::Latest, None),
    )
    .await
    .unwrap();
    assert_eq!(out.manifest.name, second.name);
    assert_eq!(faulty.injected.load(Ordering::SeqCst), 0);
}
