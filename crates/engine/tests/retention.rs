//! Retention against real backups: a real PostgreSQL (run by the testkit
//! as an unprivileged user) is backed up, full and delta, into a local
//! directory; the plan deletes exactly the expired backups, nothing is
//! left under their keys, and every kept backup restores.

use chrono::{Duration as Age, Utc};
use pgark_catalog::{BackupManifest, BackupName};
use pgark_engine::{
    apply_plan, backup_fetch, backup_inventory, backup_push, list_backups, mark_permanent,
    plan_delete_backup, plan_retention, ArchiveMode, BackupFetchOptions, BackupPushOptions, BackupSelector,
    DeltaFrom, DeltaOptions, ErrorClass, KeepReason, RepoKeys, RetentionPolicy, RetryPolicy,
};
use pgark_pgclient::ConnectOptions;
use pgark_store::{ErrorKind, Key, LocalStore, ObjectMeta, ObjectStore, Operation, PutMode, StoreError};
use pgark_testkit::pg::{ClusterOptions, PgCluster, PgInstall};
use std::sync::Arc;

fn cluster() -> PgCluster {
    let c =
        PgCluster::start_new(ClusterOptions::new(PgInstall::detect().expect("PostgreSQL"))).expect("start");
    c.psql("create table t (id int primary key, v text); insert into t select g, md5(g::text) from generate_series(1, 5000) g")
        .unwrap();
    c
}

/// Changes some rows, then takes a backup: a delta of the newest backup,
/// or a full one.
async fn push(c: &PgCluster, store: &Arc<dyn ObjectStore>, delta: bool) -> BackupManifest {
    c.psql("update t set v = md5(v) where id % 7 = 0").unwrap();
    let mut opts = BackupPushOptions::new(c.data_dir().to_path_buf());
    opts.connect = ConnectOptions {
        conninfo: Some(c.conninfo()),
        connect_timeout: None,
    };
    // The test cluster does not archive: the WAL wait is not under test.
    opts.archive_timeout = None;
    opts.concurrency = 2;
    opts.delta = delta.then_some(DeltaOptions {
        from: DeltaFrom::Latest,
        max_steps: 6,
    });
    let m = backup_push(store.clone(), &opts).await.expect("backup");
    assert_eq!(m.is_delta(), delta, "{}", m.name);
    // Names carry the start time to the second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    m
}

async fn all_keys(store: &dyn ObjectStore) -> Vec<(String, u64)> {
    let listed = store.list("").await.unwrap();
    listed.into_iter().map(|m| (m.key.to_string(), m.size)).collect()
}

async fn names(store: &dyn ObjectStore) -> Vec<BackupName> {
    let listed = list_backups(store, &RepoKeys::none()).await.unwrap();
    listed.into_iter().map(|m| m.name).collect()
}

async fn restores(store: &Arc<dyn ObjectStore>, m: &BackupManifest, dir: &std::path::Path) {
    let dest = dir.join(format!("restore-{}", m.name));
    let opts = BackupFetchOptions {
        dest: dest.clone(),
        backup: BackupSelector::Named(m.name.clone()),
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
        retry: RetryPolicy::none(),
    };
    let out = backup_fetch(store.clone(), &opts)
        .await
        .unwrap_or_else(|e| panic!("{} restores: {e}", m.name));
    assert_eq!(out.manifest.name, m.name);
    assert_eq!(out.files, m.files.len());
    assert!(dest.join("global/pg_control").is_file());
}

/// Full A (permanent), deltas B of A and C of B, full D, delta E of D;
/// `retain_count 2` deletes B and C only: E and D are the newest two, A is
/// permanent.
#[tokio::test(flavor = "multi_thread")]
async fn retain_count_deletes_exactly_the_expired_backups_and_the_rest_restores() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("repo")).unwrap());
    let a = push(&c, &store, false).await;
    let b = push(&c, &store, true).await;
    let c2 = push(&c, &store, true).await;
    let d = push(&c, &store, false).await;
    let e = push(&c, &store, true).await;
    assert_eq!(b.parent.as_ref(), Some(&a.name));
    assert_eq!(c2.parent.as_ref(), Some(&b.name));
    assert_eq!(e.parent.as_ref(), Some(&d.name));
    mark_permanent(&*store, &RepoKeys::none(), &a.name, true)
        .await
        .unwrap();

    let policy = RetentionPolicy {
        retain_count: Some(2),
        retain_max_age: None,
    };
    let before = all_keys(&*store).await;
    let inventory = backup_inventory(&*store, &RepoKeys::none()).await.unwrap();
    let plan = plan_retention(&inventory.backups, &policy, Utc::now());
    // Planning is the dry run: nothing changed.
    assert_eq!(all_keys(&*store).await, before);
    let expired: Vec<&BackupName> = plan.expired.iter().map(|x| &x.backup.name).collect();
    assert_eq!(
        expired,
        [&c2.name, &b.name],
        "newest first: deltas before parents"
    );
    let reason = |n: &BackupName| {
        plan.kept
            .iter()
            .find(|k| k.backup.name == *n)
            .map(|k| k.reason.clone())
    };
    assert_eq!(reason(&a.name), Some(KeepReason::Permanent));
    assert_eq!(reason(&d.name), Some(KeepReason::Policy));
    let freed: u64 = before
        .iter()
        .filter(|(k, _)| k.starts_with(&b.name.prefix()) || k.starts_with(&c2.name.prefix()))
        .map(|(_, s)| s)
        .sum();
    assert_eq!(plan.bytes_freed, freed);

    let outcome = apply_plan(&*store, &plan).await.unwrap();
    assert_eq!(outcome.backups_deleted, 2);
    let after = all_keys(&*store).await;
    for gone in [&b.name, &c2.name] {
        assert!(
            !after.iter().any(|(k, _)| k.starts_with(&gone.prefix())),
            "leftovers of {gone}"
        );
    }
    // Everything else is untouched.
    let untouched: Vec<_> = before
        .into_iter()
        .filter(|(k, _)| !k.starts_with(&b.name.prefix()) && !k.starts_with(&c2.name.prefix()))
        .collect();
    assert_eq!(after, untouched);
    assert_eq!(
        names(&*store).await,
        [a.name.clone(), d.name.clone(), e.name.clone()]
    );
    for m in [&a, &d, &e] {
        restores(&store, m, dir.path()).await;
    }

    // Applying the policy again deletes nothing more.
    let inventory = backup_inventory(&*store, &RepoKeys::none()).await.unwrap();
    assert!(plan_retention(&inventory.backups, &policy, Utc::now())
        .expired
        .is_empty());
    // The full backup a kept delta depends on is refused by name, and so
    // is the permanent one; deleting E alone is allowed.
    let refused = plan_delete_backup(&inventory, &d.name, false).unwrap_err();
    assert_eq!(refused.class(), ErrorClass::Rejected, "{refused}");
    let refused = plan_delete_backup(&inventory, &a.name, false).unwrap_err();
    assert_eq!(refused.class(), ErrorClass::Rejected, "{refused}");
    let plan = plan_delete_backup(&inventory, &e.name, false).unwrap();
    apply_plan(&*store, &plan).await.unwrap();
    assert_eq!(names(&*store).await, [a.name.clone(), d.name.clone()]);
    assert_eq!(
        plan_delete_backup(&inventory, &b.name, false)
            .unwrap_err()
            .class(),
        ErrorClass::NotFound
    );
}

/// Everything is older than the maximum age: only the newest full backup
/// and its delta stay, and they restore.
#[tokio::test(flavor = "multi_thread")]
async fn max_age_never_expires_the_newest_full_chain() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("repo")).unwrap());
    let a = push(&c, &store, false).await;
    let b = push(&c, &store, true).await;
    let full = push(&c, &store, false).await;
    let delta = push(&c, &store, true).await;
    let policy = RetentionPolicy {
        retain_count: None,
        retain_max_age: Some(Age::seconds(1)),
    };
    let inventory = backup_inventory(&*store, &RepoKeys::none()).await.unwrap();
    let plan = plan_retention(&inventory.backups, &policy, Utc::now() + Age::seconds(5));
    let expired: Vec<&BackupName> = plan.expired.iter().map(|x| &x.backup.name).collect();
    assert_eq!(expired, [&b.name, &a.name]);
    for k in &plan.kept {
        assert_eq!(k.reason, KeepReason::NewestFullChain, "{}", k.backup.name);
    }
    apply_plan(&*store, &plan).await.unwrap();
    assert_eq!(names(&*store).await, [full.name.clone(), delta.name.clone()]);
    assert!(!all_keys(&*store)
        .await
        .iter()
        .any(|(k, _)| k.starts_with(&a.name.prefix()) || k.starts_with(&b.name.prefix())));
    restores(&store, &delta, dir.path()).await;
}

/// A store on which every delete after the first `allowed` fails, as if
/// the delete had been killed there.
#[derive(Debug)]
struct KilledAfter {
    inner: Arc<dyn ObjectStore>,
    allowed: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Display for KilledAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

#[async_trait::async_trait]
impl ObjectStore for KilledAfter {
    async fn put(&self, key: &Key, data: bytes::Bytes, mode: PutMode) -> pgark_store::Result<ObjectMeta> {
        self.inner.put(key, data, mode).await
    }
    async fn put_multipart(
        &self,
        key: &Key,
        mode: PutMode,
    ) -> pgark_store::Result<Box<dyn pgark_store::MultipartUpload>> {
        self.inner.put_multipart(key, mode).await
    }
    async fn get(&self, key: &Key) -> pgark_store::Result<pgark_store::GetResult> {
        self.inner.get(key).await
    }
    async fn head(&self, key: &Key) -> pgark_store::Result<ObjectMeta> {
        self.inner.head(key).await
    }
    async fn list(&self, prefix: &str) -> pgark_store::Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, key: &Key) -> pgark_store::Result<()> {
        use std::sync::atomic::Ordering;
        let left = self.allowed.load(Ordering::SeqCst);
        if left == 0 {
            return Err(StoreError::new(
                ErrorKind::Permanent,
                Operation::Delete,
                self,
                key,
                "killed",
            ));
        }
        self.allowed.store(left - 1, Ordering::SeqCst);
        self.inner.delete(key).await
    }
}

/// A delete killed after each of its deletes in turn (run again with one
/// more delete allowed each time): every backup still
/// listed has all its parts and its parent, and running the delete again
/// finishes it.
#[tokio::test(flavor = "multi_thread")]
async fn a_delete_killed_anywhere_leaves_only_listed_backups_that_are_whole() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(dir.path().join("repo")).unwrap());
    let a = push(&c, &store, false).await;
    let b = push(&c, &store, true).await;
    let c3 = push(&c, &store, true).await;
    let d = push(&c, &store, false).await;
    let policy = RetentionPolicy {
        retain_count: Some(1),
        retain_max_age: None,
    };
    let inventory = backup_inventory(&*store, &RepoKeys::none()).await.unwrap();
    let plan = plan_retention(&inventory.backups, &policy, Utc::now());
    assert_eq!(plan.expired.len(), 3);
    let mut kills = 0;
    loop {
        let killed = KilledAfter {
            inner: store.clone(),
            // A rerun repeats the deletes already done (idempotent), then
            // gets one further than the last run.
            allowed: (kills + 1).into(),
        };
        if apply_plan(&killed, &plan).await.is_ok() {
            break;
        }
        kills += 1;
        let listed = list_backups(&*store, &RepoKeys::none()).await.unwrap();
        let listed_names: Vec<&BackupName> = listed.iter().map(|m| &m.name).collect();
        for m in &listed {
            for p in &m.parts {
                assert!(
                    store.head(&m.name.part_key(p.index)).await.is_ok(),
                    "after kill {kills}: listed {} lacks part {}",
                    m.name,
                    p.index
                );
            }
            if let Some(parent) = &m.parent {
                assert!(
                    listed_names.contains(&parent),
                    "after kill {kills}: {} without its parent",
                    m.name
                );
            }
        }
        // What lost its manifest is garbage at once for the next policy
        // run, whatever its age (no backup-push runs here).
        let inventory = pgark_engine::backup_inventory(&*store, &RepoKeys::none())
            .await
            .unwrap();
        let garbage =
            pgark_engine::garbage(&inventory, chrono::Utc::now(), pgark_engine::DEFAULT_GARBAGE_AGE);
        for (name, _) in &inventory.incomplete {
            assert!(
                garbage.iter().any(|(g, _)| g == name),
                "after kill {kills}: {name} has no manifest and is not garbage"
            );
        }
        assert!(kills < 1000, "the delete makes no progress");
    }
    assert!(kills > 3, "{kills} kills");
    assert_eq!(names(&*store).await, vec![d.name.clone()]);
    for gone in [&a.name, &b.name, &c3.name] {
        assert!(
            store.list(&gone.prefix()).await.unwrap().is_empty(),
            "leftovers of {gone}"
        );
    }
    restores(&store, &d, dir.path()).await;
}

/// Deletes a backup's manifest (by its file in a local repository) when
/// the copy starts: a delete running during a delta backup.
#[derive(Debug)]
struct DeleteAtStart(std::path::PathBuf);

impl pgark_engine::ProgressSink for DeleteAtStart {
    fn start(&self, _: u64) {
        std::fs::remove_file(&self.0).unwrap();
    }
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// A delta whose parent is deleted while it is taken is not written: it
/// would be listed and not restore.
#[tokio::test(flavor = "multi_thread")]
async fn a_delta_whose_parent_is_deleted_meanwhile_is_not_listed() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let store: Arc<dyn ObjectStore> = Arc::new(LocalStore::new(&repo).unwrap());
    let full = push(&c, &store, false).await;
    let mut opts = BackupPushOptions::new(c.data_dir().to_path_buf());
    opts.connect = ConnectOptions {
        conninfo: Some(c.conninfo()),
        connect_timeout: None,
    };
    opts.archive_timeout = None;
    opts.delta = Some(DeltaOptions {
        from: DeltaFrom::Latest,
        max_steps: 6,
    });
    opts.progress = Some(Arc::new(DeleteAtStart(
        repo.join(full.name.manifest_key().as_str()),
    )));
    let err = backup_push(store.clone(), &opts).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::NotFound, "{err}");
    assert!(
        err.to_string().contains("deleted while this delta was taken"),
        "{err}"
    );
    assert!(names(&*store).await.is_empty());
}
