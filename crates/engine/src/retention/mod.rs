//! Deleting backups: by a retention policy ([`plan_retention`]) or one by
//! name ([`plan_delete_one`]), and the permanent marks that protect them.
//!
//! Planning is a pure function (see [`plan`]); this module reads what it
//! needs from the repository and carries a plan out so that a delete
//! killed at any point never leaves a listed backup that does not
//! restore, nor objects that only age would make garbage:
//! 1. each expired backup gets a deletion mark (`backups/<name>/deleting`);
//! 2. the manifests (completion markers) of the expired backups go,
//!    newest first, so every delta loses its manifest before its parent;
//! 3. then every object under each expired backup's prefix, listed by
//!    prefix and deleted in batches ([`ObjectStore::delete_many`]: S3's
//!    `DeleteObjects`, 1000 keys a request; bounded parallel deletes
//!    elsewhere);
//! 4. the marks last.
//!
//! A run killed after step 2 leaves objects without a manifest, which no
//! command reads; their mark makes them garbage at once, so the next
//! policy run (`pgark delete --retain-*`, or a backup-push applying the
//! policy) removes them, and they do not hold back the WAL cutoff. A mark
//! beside a manifest (a run killed during step 1) means nothing: the
//! backup is whole and listed, and the next plan decides afresh.

mod plan;
mod wal;

pub use plan::{
    format_age, plan_delete_one, plan_retention, DeleteRefusal, ExpireReason, Expired, KeepReason, Kept,
    RetentionCandidate, RetentionPlan, RetentionPolicy,
};
pub use wal::{cutoff_backup, plan_wal_deletion, started_in, wal_file_expires, WalCutoff, WalPlan};

use crate::{load_manifest, EngineError, RepoKeys};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use pgark_catalog::{BackupName, BACKUPS_PREFIX};
use pgark_store::{Leftover, ObjectStore, PutMode};
use std::collections::BTreeMap;

pub use pgark_store::DELETE_CONCURRENCY;

/// What is stored under `backups/`, grouped by backup.
#[derive(Debug, Clone, Default)]
pub struct BackupInventory {
    /// Completed backups (those with a manifest), in name order.
    pub backups: Vec<RetentionCandidate>,
    /// Names with objects but no manifest: interrupted pushes or
    /// half-finished deletes, with the bytes they hold.
    pub incomplete: Vec<(BackupName, u64)>,
    /// Those of `incomplete` that carry a deletion mark: a delete removed
    /// their manifest and was stopped before it removed the rest. Garbage
    /// whatever their age.
    pub deleting: Vec<BackupName>,
}

/// Lists `backups/` once and reads every manifest.
pub async fn backup_inventory(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
) -> Result<BackupInventory, EngineError> {
    #[derive(Default)]
    struct Seen {
        manifest: bool,
        permanent: bool,
        deleting: bool,
        size: u64,
    }
    let mut seen: BTreeMap<BackupName, Seen> = BTreeMap::new();
    for meta in store.list(BACKUPS_PREFIX).await? {
        let Some((name, file)) = BackupName::from_key(&meta.key) else {
            continue;
        };
        let entry = seen.entry(name).or_default();
        entry.size += meta.size;
        entry.manifest |= BackupName::is_manifest_file(file);
        entry.permanent |= BackupName::is_permanent_file(file);
        entry.deleting |= BackupName::is_deleting_file(file);
    }
    let complete: Vec<(&BackupName, &Seen)> = seen.iter().filter(|(_, s)| s.manifest).collect();
    let backups = futures::stream::iter(complete.into_iter().map(|(name, s)| async move {
        let m = load_manifest(store, name, keys).await?;
        RetentionCandidate::from_manifest(&m, s.size, s.permanent).ok_or_else(|| {
            EngineError::Internal(format!(
                "the manifest of {name} names WAL segments that do not parse ({}, {})",
                m.start_wal_segment, m.stop_wal_segment
            ))
        })
    }))
    .buffered(8)
    .try_collect()
    .await?;
    let incomplete = seen
        .iter()
        .filter(|(_, s)| !s.manifest)
        .map(|(n, s)| (n.clone(), s.size))
        .collect();
    let deleting = seen
        .iter()
        .filter(|(_, s)| !s.manifest && s.deleting)
        .map(|(n, _)| n.clone())
        .collect();
    Ok(BackupInventory {
        backups,
        incomplete,
        deleting,
    })
}

/// [`plan_delete_one`] over `inventory`, its refusals as errors:
/// [`EngineError::NotFound`] for a name that is not a completed backup,
/// [`EngineError::Refused`] for one that deltas depend on (without
/// `with_dependents`) or that is permanent.
pub fn plan_delete_backup(
    inventory: &BackupInventory,
    name: &BackupName,
    with_dependents: bool,
) -> Result<RetentionPlan, EngineError> {
    let refused = |reason: String| EngineError::Refused {
        action: format!("delete backup {name}"),
        reason,
    };
    plan_delete_one(&inventory.backups, name, with_dependents).map_err(|r| match r {
        DeleteRefusal::NotFound => EngineError::NotFound {
            what: format!("backup {name}"),
            key: name.manifest_key().to_string(),
        },
        DeleteRefusal::HasDependents(deps) => refused(format!(
            "delta backup(s) {} depend on it (--with-dependents deletes them too)",
            deps.iter().map(BackupName::as_str).collect::<Vec<_>>().join(", ")
        )),
        DeleteRefusal::Permanent(p) if p == *name => {
            refused("it is permanent (pgark backup-mark --impermanent first)".into())
        }
        DeleteRefusal::Permanent(p) => refused(format!(
            "its dependent {p} is permanent (pgark backup-mark --impermanent first)"
        )),
    })
}

/// Default age past which a backup without a manifest is garbage: long
/// enough that no running backup-push is touched.
pub const DEFAULT_GARBAGE_AGE: chrono::Duration = chrono::Duration::hours(24);

/// The backups of `inventory` without a manifest that are garbage: those
/// a stopped delete left (they carry its deletion mark), and those that
/// started more than `min_age` before `now` (by the start time in their
/// name; names without one are never garbage by age): interrupted
/// backup-push runs. With their sizes.
pub fn garbage(
    inventory: &BackupInventory,
    now: DateTime<Utc>,
    min_age: chrono::Duration,
) -> Vec<(BackupName, u64)> {
    inventory
        .incomplete
        .iter()
        .filter(|(name, _)| {
            inventory.deleting.contains(name) || name.started_at().is_some_and(|at| at < now - min_age)
        })
        .cloned()
        .collect()
}

/// Deletes every object of each garbage backup; returns how many objects.
/// Deletion marks go last, so a run stopped halfway leaves them to say
/// what is garbage.
pub async fn delete_garbage(
    store: &dyn ObjectStore,
    garbage: &[(BackupName, u64)],
) -> Result<usize, EngineError> {
    let names: Vec<&BackupName> = garbage.iter().map(|(n, _)| n).collect();
    delete_backup_objects(store, &names).await
}

/// Deletes every object under the prefixes of `names`, batched, the
/// deletion marks last; returns how many objects there were, not
/// counting the marks (bookkeeping of the delete itself). One listing of
/// `backups/` (one per name when there are only a few).
async fn delete_backup_objects(store: &dyn ObjectStore, names: &[&BackupName]) -> Result<usize, EngineError> {
    let wanted: std::collections::HashSet<&BackupName> = names.iter().copied().collect();
    let listing = if names.len() <= 2 {
        let mut all = Vec::new();
        for name in names {
            all.extend(store.list(&name.prefix()).await?);
        }
        all
    } else {
        store.list(BACKUPS_PREFIX).await?
    };
    let mut keys = Vec::new();
    let mut marks = Vec::new();
    for meta in listing {
        let Some((name, file)) = BackupName::from_key(&meta.key) else {
            continue;
        };
        if !wanted.contains(&name) {
            continue;
        }
        if BackupName::is_deleting_file(file) {
            marks.push(meta.key);
        } else {
            keys.push(meta.key);
        }
    }
    store.delete_many(&keys).await?;
    store.delete_many(&marks).await?;
    Ok(keys.len())
}

/// What interrupted uploads left in the repository that started before
/// `before` (see [`ObjectStore::leftovers`]): a local repository's
/// `*.pgark-tmp` files, S3's incomplete multipart uploads. Of the uploads
/// that tell their key, only those of pgark's own objects (under
/// `backups/` or `wal/`).
pub async fn unfinished_uploads(
    store: &dyn ObjectStore,
    before: DateTime<Utc>,
) -> Result<Vec<Leftover>, EngineError> {
    let found = store.leftovers(before.into()).await?;
    Ok(found
        .into_iter()
        .filter(|l| {
            // Only keys pgark writes: a backup's object or an archived WAL
            // file (a repository at a bucket's root shares it).
            l.key.as_ref().is_none_or(|k| {
                BackupName::from_key(k).is_some() || pgark_catalog::parse_wal_key(k).is_some()
            })
        })
        .collect())
}

/// Removes the leftovers found by [`unfinished_uploads`]. Idempotent.
pub async fn remove_unfinished_uploads(
    store: &dyn ObjectStore,
    found: &[Leftover],
) -> Result<(), EngineError> {
    futures::stream::iter(found.iter().map(|l| store.remove_leftover(l)))
        .buffer_unordered(DELETE_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

/// What carrying out a plan did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteOutcome {
    pub backups_deleted: usize,
    pub objects_deleted: usize,
}

/// Carries out `plan`: marks every expired backup as being deleted,
/// removes their manifests, newest first, then every object under their
/// prefixes (batched, see [`ObjectStore::delete_many`]), the marks last.
/// Idempotent: a policy run after a failure or a kill finishes the job,
/// since what carries a mark and no manifest is garbage at once.
pub async fn apply_plan(store: &dyn ObjectStore, plan: &RetentionPlan) -> Result<DeleteOutcome, EngineError> {
    for e in &plan.expired {
        store
            .put(&e.backup.name.deleting_key(), Bytes::new(), PutMode::Overwrite)
            .await?;
    }
    // The order of `expired` puts every delta before its parent.
    for e in &plan.expired {
        store.delete(&e.backup.name.manifest_key()).await?;
    }
    let names: Vec<&BackupName> = plan.expired.iter().map(|e| &e.backup.name).collect();
    let objects_deleted = delete_backup_objects(store, &names).await?;
    Ok(DeleteOutcome {
        backups_deleted: plan.expired.len(),
        objects_deleted,
    })
}

/// Carries out a [`WalPlan`] (after [`apply_plan`]): deletes the WAL
/// files it names, batched. Idempotent.
pub async fn apply_wal_plan(store: &dyn ObjectStore, plan: &WalPlan) -> Result<usize, EngineError> {
    store.delete_many(&plan.keys).await?;
    Ok(plan.keys.len())
}

/// Marks a completed backup permanent (never expired) or removes the
/// mark. Idempotent. The mark is its own small object beside the
/// manifest, so the manifest is never rewritten.
pub async fn mark_permanent(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
    name: &BackupName,
    permanent: bool,
) -> Result<(), EngineError> {
    // Refuses names that are not completed backups (NotFound).
    load_manifest(store, name, keys).await?;
    let key = name.permanent_key();
    if permanent {
        store.put(&key, Bytes::new(), PutMode::Overwrite).await?;
    } else {
        store.delete(&key).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use pgark_store::{Key, MemoryStore, ObjectStoreExt};

    async fn put(store: &MemoryStore, key: &str, data: &'static [u8]) {
        store
            .put(
                &Key::new(key).unwrap(),
                Bytes::from_static(data),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn applying_a_plan_removes_everything_under_the_expired_prefixes_only() {
        let store = MemoryStore::new();
        let a = BackupName::parse("base_000000010000000000000002_a").unwrap();
        let a_long = BackupName::parse("base_000000010000000000000002_ab").unwrap();
        for name in [&a, &a_long] {
            for file in ["part_00001.tar", "part_00002.tar", "manifest", "permanent"] {
                put(&store, &format!("{}{file}", name.prefix()), b"x").await;
            }
        }
        let summary = |name: &BackupName| RetentionCandidate {
            name: name.clone(),
            parent: None,
            finished_at: Utc::now(),
            size: 4,
            permanent: false,
            start_wal_segment: "000000010000000000000002".parse().unwrap(),
            stop_wal_segment: "000000010000000000000002".parse().unwrap(),
        };
        let plan = plan_retention(
            &[summary(&a)],
            &RetentionPolicy {
                retain_count: Some(0),
                retain_max_age: None,
            },
            Utc::now() + Duration::days(1),
        );
        // The newest full chain is kept: delete it by name instead.
        assert!(plan.expired.is_empty());
        let plan = plan_delete_one(&[summary(&a), summary(&a_long)], &a, false).unwrap();
        let outcome = apply_plan(&store, &plan).await.unwrap();
        assert_eq!(
            outcome,
            DeleteOutcome {
                backups_deleted: 1,
                objects_deleted: 3
            }
        );
        assert!(store.list(&a.prefix()).await.unwrap().is_empty());
        assert_eq!(store.list(&a_long.prefix()).await.unwrap().len(), 4);
        // Again: nothing left to do, no error.
        assert_eq!(apply_plan(&store, &plan).await.unwrap().objects_deleted, 0);
    }

    #[test]
    fn only_old_incomplete_backups_are_garbage() {
        let now = Utc::now();
        let old = BackupName::new("000000010000000000000002", now - Duration::hours(25));
        let recent = BackupName::new("000000010000000000000003", now - Duration::hours(23));
        let unnamed = BackupName::parse("base_000000010000000000000001_custom").unwrap();
        let inventory = BackupInventory {
            backups: vec![],
            incomplete: vec![(old.clone(), 7), (recent.clone(), 8), (unnamed.clone(), 9)],
            deleting: vec![],
        };
        assert_eq!(garbage(&inventory, now, DEFAULT_GARBAGE_AGE), [(old.clone(), 7)]);
        assert_eq!(garbage(&inventory, now, Duration::hours(1)).len(), 2);
        // What a stopped delete marked is garbage whatever its age.
        let inventory = BackupInventory {
            deleting: vec![recent.clone(), unnamed.clone()],
            ..inventory
        };
        assert_eq!(
            garbage(&inventory, now, DEFAULT_GARBAGE_AGE),
            [(old, 7), (recent, 8), (unnamed, 9)]
        );
    }

    #[tokio::test]
    async fn inventory_groups_objects_and_marks_and_marks_need_a_backup() {
        let store = MemoryStore::new();
        let name = BackupName::parse("base_000000010000000000000002_x").unwrap();
        put(
            &store,
            "backups/base_000000010000000000000003_y/part_00001.tar",
            b"abc",
        )
        .await;
        put(&store, "backups/not-a-backup/part_00001.tar", b"abc").await;
        let inv = backup_inventory(&store, &RepoKeys::none()).await.unwrap();
        assert!(inv.backups.is_empty());
        assert_eq!(inv.incomplete.len(), 1);
        assert_eq!(inv.incomplete[0].1, 3);
        let err = mark_permanent(&store, &RepoKeys::none(), &name, true)
            .await
            .unwrap_err();
        assert_eq!(err.class(), crate::ErrorClass::NotFound);
        assert!(!store.exists(&name.permanent_key()).await.unwrap());
    }
}
