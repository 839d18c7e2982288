//! backup_push against a repository that fails: transient faults are ridden
//! out (the part is written again), permanent ones fail the backup cleanly
//! with no manifest, so no backup exists. A real PostgreSQL (run by the
//! testkit as an unprivileged user) is backed up into a local directory
//! behind a fault-injecting store.

use pgark_engine::{
    backup_fetch, backup_push, list_backups, ArchiveMode, BackupFetchOptions, BackupPushOptions,
    BackupSelector, ErrorClass, RepoKeys, RetryPolicy,
};
use pgark_pgclient::ConnectOptions;
use pgark_store::{ErrorKind, LocalStore, ObjectStore, Operation};
use pgark_testkit::faults::FaultyStore;
use pgark_testkit::pg::{scratch_dir, ClusterOptions, PgCluster, PgInstall};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

fn cluster() -> PgCluster {
    let c =
        PgCluster::start_new(ClusterOptions::new(PgInstall::detect().expect("PostgreSQL"))).expect("start");
    c.psql("create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 20000) g")
        .unwrap();
    c
}

fn options(c: &PgCluster) -> BackupPushOptions {
    let mut opts = BackupPushOptions::new(c.data_dir().to_path_buf());
    opts.connect = ConnectOptions {
        conninfo: Some(c.conninfo()),
        connect_timeout: None,
    };
    // The test cluster does not archive: the WAL wait is not under test.
    opts.archive_timeout = None;
    // Small parts: many uploads, so faults land in the middle of the copy.
    opts.part_size = 1 << 20;
    opts.retry = RetryPolicy {
        attempts: 4,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    };
    opts
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_faults_are_ridden_out_and_the_backup_restores() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("repo")).unwrap());
    // The first three writes fail as a throttled or timed-out request would.
    let faulty = Arc::new(FaultyStore::new(
        local.clone(),
        ErrorKind::Transient,
        &[Operation::Put],
        3,
    ));
    let store: Arc<dyn ObjectStore> = faulty.clone();
    let manifest = backup_push(store, &options(&c))
        .await
        .expect("the backup rides out transient faults");
    assert_eq!(faulty.injected.load(Ordering::SeqCst), 3);
    assert!(manifest.parts.len() > 3, "{} parts", manifest.parts.len());

    let listed = list_backups(&*local, &RepoKeys::none()).await.unwrap();
    assert_eq!(listed.len(), 1);
    let dest = dir.path().join("restore");
    let fetch = fetch_options(dest.clone(), RetryPolicy::none());
    let out = backup_fetch(local, &fetch).await.expect("restore");
    assert_eq!(out.files, manifest.files.len());
    assert!(dest.join("global/pg_control").is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn permanent_faults_fail_the_backup_and_leave_no_manifest() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("repo")).unwrap());
    // repository.json goes through; then every write is refused, as a
    // bucket policy or bad credentials would.
    LocalStoreWarmUp::repository_meta(&local, &c).await;
    let faulty = Arc::new(FaultyStore::new(
        local.clone(),
        ErrorKind::Permanent,
        &[Operation::Put],
        u32::MAX,
    ));
    let store: Arc<dyn ObjectStore> = faulty.clone();
    let err = backup_push(store, &options(&c))
        .await
        .expect_err("a refused write fails the backup");
    assert_eq!(err.class(), ErrorClass::Storage, "{err}");
    // Not retried: one refusal per part in flight at most.
    assert!(
        faulty.injected.load(Ordering::SeqCst) <= 2,
        "{}",
        faulty.injected.load(Ordering::SeqCst)
    );
    assert!(list_backups(&*local, &RepoKeys::none()).await.unwrap().is_empty());
}

/// Issue 12, item 2: a part write that timed out after the store had
/// stored it is retried and meets "already exists". The retry reads the
/// stored part back, finds the same content and carries on; the backup
/// restores. (Parts failing part-way through their write, or at their
/// completion, are written again whole: those are the transient faults
/// above, and a damaged download is refused.)
#[tokio::test(flavor = "multi_thread")]
async fn part_writes_that_land_but_report_failure_are_accepted_when_identical() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("repo")).unwrap());
    let faulty = Arc::new(
        FaultyStore::new(local.clone(), ErrorKind::Transient, &[Operation::Put], 3)
            .with_message("timed out waiting for the response")
            .writes_land()
            .only_keys_containing("/part_"),
    );
    let store: Arc<dyn ObjectStore> = faulty.clone();
    let manifest = backup_push(store, &options(&c))
        .await
        .expect("an identical part stored by a failed-looking attempt is accepted");
    assert_eq!(faulty.injected.load(Ordering::SeqCst), 3);
    for part in &manifest.parts {
        let stored = local.head(&manifest.name.part_key(part.index)).await.unwrap();
        assert_eq!(stored.size, part.stored_size, "part {}", part.index);
    }
    let dest = dir.path().join("restore");
    let out = backup_fetch(local.clone(), &fetch_options(dest.clone(), RetryPolicy::none()))
        .await
        .expect("restore");
    assert_eq!(out.files, manifest.files.len());

    // The same parts read back as wrong bytes of the right length: the
    // restore refuses them as damaged and leaves nothing behind.
    let garbled = Arc::new(
        FaultyStore::new(local, ErrorKind::Transient, &[Operation::Get], u32::MAX)
            .garble_gets()
            .only_keys_containing("/part_"),
    );
    let dest = dir.path().join("garbled");
    let err = backup_fetch(garbled, &fetch_options(dest.clone(), RetryPolicy::none()))
        .await
        .expect_err("wrong bytes are refused");
    assert_eq!(err.class(), ErrorClass::Integrity, "{err}");
    assert!(
        !dest.exists() || std::fs::read_dir(&dest).unwrap().next().is_none(),
        "the refused restore left files behind"
    );
}

fn fetch_options(dest: std::path::PathBuf, retry: RetryPolicy) -> BackupFetchOptions {
    BackupFetchOptions {
        dest,
        backup: BackupSelector::Latest,
        force: false,
        concurrency: 2,
        tablespace_map: Default::default(),
        recovery: None,
        archive_mode: ArchiveMode::Preserve,
        dry_run: false,
        delta: false,
        delta_by_timestamp: false,
        progress: None,
        keys: RepoKeys::none(),
        retry,
    }
}

/// Every regular file under `dir`, by relative path, with its content.
fn tree(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let rel = e.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn downloads_broken_off_halfway_are_read_again_and_restore_the_same_files() {
    // The cluster archives its WAL with cp, so that a restore can start.
    let wal = scratch_dir("wal");
    let c = PgCluster::start_new(
        ClusterOptions::new(PgInstall::detect().expect("PostgreSQL"))
            .with_archive_command(format!("cp %p {}/%f", wal.path().display())),
    )
    .expect("start");
    c.psql("create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 20000) g")
        .unwrap();
    let dir = scratch_dir("faults");
    let local: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("repo")).unwrap());
    // A full backup whose table file is larger than a part (stored in
    // pieces), then a delta of it: the restore reads whole files, pieces,
    // an increment and a base in pieces.
    let mut opts = options(&c);
    backup_push(local.clone(), &opts).await.expect("full backup");
    c.psql("update t set v = md5(v) where id % 7 = 0; insert into t select g, md5(g::text) from generate_series(20001, 30000) g; checkpoint")
        .unwrap();
    opts.delta = Some(pgark_engine::DeltaOptions {
        from: pgark_engine::DeltaFrom::Latest,
        max_steps: 3,
    });
    let delta = backup_push(local.clone(), &opts).await.expect("delta backup");
    assert!(delta.parent.is_some(), "the second backup is a delta");
    assert!(
        delta
            .files
            .iter()
            .any(|f| f.delta.as_ref().is_some_and(|d| !d.unchanged)),
        "the delta stores an increment"
    );

    let at_delta = c
        .psql("select count(*) || ':' || md5(string_agg(v, ',' order by id)) from t")
        .unwrap();
    let segment = c.switch_wal().unwrap();
    c.wait_for("WAL to be archived", Duration::from_secs(120), || {
        c.psql("select coalesce(last_archived_wal, '') from pg_stat_archiver")
            .is_ok_and(|last| last.as_str() >= segment.as_str())
    })
    .unwrap();

    let clean = dir.path().join("clean");
    let quick = RetryPolicy {
        attempts: 20,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    };
    let mut clean_opts = fetch_options(clean.clone(), quick);
    // Recovery that replays as little WAL as possible: to the end of the
    // backup, so a wrong page would not be rewritten by later WAL.
    clean_opts.recovery = Some(pgark_engine::RecoveryOptions {
        restore_command: Some(format!("cp {}/%f %p", wal.path().display())),
        target: Some(pgark_engine::RecoveryTarget::Immediate),
        action: Some("promote".into()),
        ..Default::default()
    });
    backup_fetch(local.clone(), &clean_opts)
        .await
        .expect("restore without faults");
    let mut expected = tree(&clean);
    expected.remove("recovery.signal");
    // The restore, started, holds the source's data at the delta backup,
    // and amcheck finds its tables and indexes whole.
    {
        let restored = PgCluster::from_data_dir(c.install(), &clean).unwrap();
        restored.set_archive_command(None).unwrap();
        restored.start().unwrap_or_else(|e| panic!("{e}"));
        restored
            .wait_for("recovery to end", Duration::from_secs(120), || {
                restored
                    .psql("select pg_is_in_recovery()")
                    .is_ok_and(|r| r == "f")
            })
            .unwrap_or_else(|e| panic!("{e}\n{}", restored.log_tail(20)));
        assert_eq!(
            restored
                .psql("select count(*) || ':' || md5(string_agg(v, ',' order by id)) from t")
                .unwrap(),
            at_delta
        );
        let mut amcheck = restored.client_command("pg_amcheck");
        amcheck.args(["--install-missing", "--heapallindexed", "--all"]);
        let out = pgark_testkit::pg::run_capture(&mut amcheck, None, Duration::from_secs(300)).unwrap();
        assert!(
            out.status.success(),
            "pg_amcheck: {}{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        restored.stop().unwrap();
    }

    // Downloads that end with a connection reset after a few bytes, after
    // some entries, in the middle of a large one; of parts only, and of
    // manifests too. The parent's parts (the base, in pieces) are read
    // after the delta's, so one run breaks only those.
    let parent_parts = format!("{}/part_", delta.parent.as_ref().unwrap());
    let runs = [
        (3_000, "/part_"),
        (60_000, "/part_"),
        (400_000, "/part_"),
        (200_000, parent_parts.as_str()),
        (60_000, "/"),
    ];
    for (n, (cut, only)) in runs.into_iter().enumerate() {
        let faulty = Arc::new(
            FaultyStore::new(local.clone(), ErrorKind::Transient, &[Operation::Get], 12)
                .with_message("connection reset by peer")
                .cut_gets_after(cut)
                .only_keys_containing(only),
        );
        let dest = dir.path().join(format!("run-{n}"));
        let store: Arc<dyn ObjectStore> = faulty.clone();
        let out = backup_fetch(store, &fetch_options(dest.clone(), quick))
            .await
            .unwrap_or_else(|e| panic!("restore with downloads cut after {cut} bytes: {e}"));
        assert_eq!(faulty.injected.load(Ordering::SeqCst), 12, "cut after {cut}");
        assert_eq!(out.files, delta.files.len());
        let got = tree(&dest);
        assert_eq!(
            got.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "cut after {cut}"
        );
        for (path, content) in &expected {
            if path == "backup_manifest" || path == "postgresql.auto.conf" {
                // The time of the restore, and the clean restore's recovery
                // settings (it was started).
                continue;
            }
            assert!(
                &got[path] == content,
                "{path} differs after downloads cut after {cut} bytes"
            );
        }
    }

    // A repository so slow that the command's time limit runs out in the
    // middle of the restore: it fails as timed out (not retried) and leaves
    // the destination empty.
    let slow = Arc::new(
        FaultyStore::new(local.clone(), ErrorKind::Transient, &[Operation::Get], 0)
            .with_delay(Duration::from_millis(400)),
    );
    let limit = Duration::from_millis(2500);
    let store: Arc<dyn ObjectStore> = Arc::new(pgark_store::DeadlineStore::new(
        slow,
        tokio::time::Instant::now() + limit,
        limit,
    ));
    let dest = dir.path().join("too-slow");
    let err = backup_fetch(store, &fetch_options(dest.clone(), quick))
        .await
        .expect_err("the time limit runs out");
    assert_eq!(err.class(), ErrorClass::TimedOut, "{err}");
    // The restore had begun (the directory was made) and was undone.
    assert!(
        std::fs::read_dir(&dest).unwrap().next().is_none(),
        "the timed-out restore left files behind"
    );

    // The same breaks with no retries left: the restore fails as a
    // repository failure and leaves the destination empty.
    let faulty = Arc::new(
        FaultyStore::new(local.clone(), ErrorKind::Transient, &[Operation::Get], u32::MAX)
            .only_keys_containing("/part_")
            .cut_gets_after(60_000),
    );
    let dest = dir.path().join("gives-up");
    let store: Arc<dyn ObjectStore> = faulty;
    let err = backup_fetch(store, &fetch_options(dest.clone(), quick))
        .await
        .expect_err("every download breaks");
    assert_eq!(err.class(), ErrorClass::Storage, "{err}");
    assert!(
        !dest.exists() || std::fs::read_dir(&dest).unwrap().next().is_none(),
        "the failed restore left files behind"
    );
}

/// Takes one good backup first, so that repository.json exists and the
/// permanent faults hit the parts.
struct LocalStoreWarmUp;

impl LocalStoreWarmUp {
    async fn repository_meta(store: &Arc<dyn ObjectStore>, c: &PgCluster) {
        let mut opts = options(c);
        opts.part_size = 64 << 20;
        backup_push(store.clone(), &opts).await.expect("warm-up backup");
        // Leave no backup behind: only repository.json matters here.
        for m in list_backups(&**store, &RepoKeys::none()).await.unwrap() {
            for o in store.list(&format!("backups/{}/", m.name)).await.unwrap() {
                store.delete(&o.key).await.unwrap();
            }
        }
    }
}
