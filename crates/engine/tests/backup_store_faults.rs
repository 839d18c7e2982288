//! backup_push against a repository that fails: transient faults are ridden
//! out (the part is written again), permanent ones fail the backup cleanly
//! with no manifest, so no backup exists. A real PostgreSQL (run by the
//! testkit as an unprivileged user) is backed up into a local directory
//! behind a fault-injecting store.

use pgark_engine::{
    backup_fetch, backup_push, list_backups, BackupFetchOptions, BackupPushOptions, BackupSelector,
    ErrorClass, RepoKeys, RetryPolicy,
};
use pgark_pgclient::ConnectOptions;
use pgark_store::{ErrorKind, LocalStore, ObjectStore, Operation};
use pgark_testkit::faults::FaultyStore;
use pgark_testkit::pg::{ClusterOptions, PgCluster, PgInstall};
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
    let fetch = BackupFetchOptions {
        dest: dest.clone(),
        backup: BackupSelector::Latest,
        force: false,
        concurrency: 2,
        tablespace_map: Default::default(),
        recovery: None,
        dry_run: false,
        delta: false,
        delta_by_timestamp: false,
        progress: None,
        keys: RepoKeys::none(),
    };
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
