//! Which backups a retention policy expires, and why: a pure function of
//! the backups in the repository, their permanent marks and the time.
//!
//! The rules, in the order they are applied:
//! 1. A backup is expired by the policy when it is beyond the newest
//!    `retain_count` backups (newest by finish time) **or** finished more
//!    than `retain_max_age` ago. Without either setting nothing is expired.
//! 2. A permanent backup is never expired.
//! 3. The newest full backup and every delta built on it (its chain) are
//!    never expired, whatever their age or position.
//! 4. A backup that a kept delta depends on (its parent, transitively) is
//!    never expired.
//!
//! So the plan never leaves a kept delta without its parent, and never
//! leaves a repository with backups but without a restorable full chain.

use chrono::{DateTime, Duration, Utc};
use pgark_catalog::{BackupManifest, BackupName};
use pgark_pg::WalSegmentName;
use std::collections::{HashMap, HashSet};

/// What the planner needs to know about one completed backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionCandidate {
    pub name: BackupName,
    /// The backup this one is a delta of; `None` for a full backup.
    pub parent: Option<BackupName>,
    pub finished_at: DateTime<Utc>,
    /// Bytes stored under the backup's prefix (what deleting it frees).
    pub size: u64,
    pub permanent: bool,
    /// The WAL the backup needs to restore consistently: from its start
    /// segment to its stop segment, on its timeline.
    pub start_wal_segment: WalSegmentName,
    pub stop_wal_segment: WalSegmentName,
}

impl RetentionCandidate {
    /// `None` when the manifest's WAL segment names do not parse.
    pub fn from_manifest(m: &BackupManifest, size: u64, permanent: bool) -> Option<RetentionCandidate> {
        Some(RetentionCandidate {
            name: m.name.clone(),
            parent: m.parent.clone(),
            finished_at: m.finished_at,
            size,
            permanent,
            start_wal_segment: m.start_wal_segment.parse().ok()?,
            stop_wal_segment: m.stop_wal_segment.parse().ok()?,
        })
    }
}

/// How many backups to keep and for how long.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep the newest N backups (full and delta alike).
    pub retain_count: Option<u32>,
    /// Keep backups that finished less than this long ago.
    pub retain_max_age: Option<Duration>,
}

impl RetentionPolicy {
    pub fn is_empty(&self) -> bool {
        self.retain_count.is_none() && self.retain_max_age.is_none()
    }
}

/// Why a backup stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepReason {
    /// Within the newest N and younger than the maximum age (or no
    /// setting expires it).
    Policy,
    /// Marked permanent.
    Permanent,
    /// Part of the newest full backup's chain (the safety floor).
    NewestFullChain,
    /// A kept delta depends on it.
    NeededBy(BackupName),
    /// Not the backup a single delete asked for.
    NotRequested,
}

impl std::fmt::Display for KeepReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeepReason::Policy => f.write_str("within the retention policy"),
            KeepReason::Permanent => f.write_str("permanent"),
            KeepReason::NewestFullChain => f.write_str("the newest full backup's chain is always kept"),
            KeepReason::NeededBy(n) => write!(f, "kept delta {n} depends on it"),
            KeepReason::NotRequested => f.write_str("not requested"),
        }
    }
}

/// Why a backup goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpireReason {
    /// Beyond the newest `count` backups (`position` is 1 for the newest).
    BeyondCount { position: usize, count: u32 },
    /// Finished more than `max_age` ago.
    OlderThan { max_age: Duration },
    /// Named by a single delete.
    Requested,
    /// A delta of a backup a single delete was asked for, with
    /// `--with-dependents`.
    DependsOn(BackupName),
}

impl std::fmt::Display for ExpireReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpireReason::BeyondCount { position, count } => {
                write!(f, "number {position} from the newest, beyond the newest {count}")
            }
            ExpireReason::OlderThan { max_age } => {
                write!(f, "finished more than {} ago", format_age(*max_age))
            }
            ExpireReason::Requested => f.write_str("requested"),
            ExpireReason::DependsOn(n) => write!(f, "depends on {n}, which is deleted"),
        }
    }
}

/// A duration as the settings spell it (`30d`, `12h`, `90s`).
pub fn format_age(d: Duration) -> String {
    let s = d.num_seconds();
    for (unit, secs) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s != 0 && s % secs == 0 {
            return format!("{}{unit}", s / secs);
        }
    }
    format!("{s}s")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    pub backup: RetentionCandidate,
    pub reason: KeepReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    pub backup: RetentionCandidate,
    pub reason: ExpireReason,
}

/// What a delete does. Both lists are newest first, so deleting in the
/// order of `expired` removes every delta before its parent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPlan {
    pub expired: Vec<Expired>,
    pub kept: Vec<Kept>,
    /// Sum of the expired backups' sizes.
    pub bytes_freed: u64,
}

/// Newest first: by finish time, then name (a delta always finishes after
/// its parent).
fn newest_first(backups: &[RetentionCandidate]) -> Vec<RetentionCandidate> {
    let mut v = backups.to_vec();
    v.sort_by(|a, b| {
        b.finished_at
            .cmp(&a.finished_at)
            .then_with(|| b.name.cmp(&a.name))
    });
    v
}

/// The newest full backup and every backup whose chain of parents leads
/// to it.
fn newest_full_chain(sorted: &[RetentionCandidate]) -> HashSet<BackupName> {
    let Some(full) = sorted.iter().find(|b| b.parent.is_none()) else {
        return HashSet::new();
    };
    let parents: HashMap<&BackupName, &BackupName> = sorted
        .iter()
        .filter_map(|b| b.parent.as_ref().map(|p| (&b.name, p)))
        .collect();
    let mut chain = HashSet::from([full.name.clone()]);
    for b in sorted {
        // Walk up to the root; bounded by the number of backups, so a
        // cycle in damaged manifests cannot loop forever.
        let mut cur = &b.name;
        for _ in 0..=sorted.len() {
            if *cur == full.name {
                chain.insert(b.name.clone());
                break;
            }
            match parents.get(cur) {
                Some(p) => cur = p,
                None => break,
            }
        }
    }
    chain
}

/// Applies the rules of this module to `backups` (in any order).
pub fn plan_retention(
    backups: &[RetentionCandidate],
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> RetentionPlan {
    let sorted = newest_first(backups);
    let chain = newest_full_chain(&sorted);
    let mut decisions: Vec<Result<KeepReason, ExpireReason>> = sorted
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let by_count =
                policy
                    .retain_count
                    .filter(|&n| i >= n as usize)
                    .map(|count| ExpireReason::BeyondCount {
                        position: i + 1,
                        count,
                    });
            let by_age = policy
                .retain_max_age
                .filter(|&age| b.finished_at < now - age)
                .map(|max_age| ExpireReason::OlderThan { max_age });
            match by_count.or(by_age) {
                None => Ok(KeepReason::Policy),
                Some(_) if b.permanent => Ok(KeepReason::Permanent),
                Some(_) if chain.contains(&b.name) => Ok(KeepReason::NewestFullChain),
                Some(reason) => Err(reason),
            }
        })
        .collect();
    keep_parents(&sorted, &mut decisions);
    assemble(sorted, decisions)
}

/// Rule 4: keeps, transitively, the parent of every kept delta.
fn keep_parents(sorted: &[RetentionCandidate], decisions: &mut [Result<KeepReason, ExpireReason>]) {
    let index: HashMap<&BackupName, usize> = sorted.iter().enumerate().map(|(i, b)| (&b.name, i)).collect();
    // Newest first, a child comes before its parent: one pass suffices
    // when finish times are consistent; loop until stable otherwise.
    loop {
        let mut changed = false;
        for i in 0..sorted.len() {
            if decisions[i].is_err() {
                continue;
            }
            let Some(&p) = sorted[i].parent.as_ref().and_then(|p| index.get(p)) else {
                continue;
            };
            if decisions[p].is_err() {
                decisions[p] = Ok(KeepReason::NeededBy(sorted[i].name.clone()));
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
}

fn assemble(
    sorted: Vec<RetentionCandidate>,
    decisions: Vec<Result<KeepReason, ExpireReason>>,
) -> RetentionPlan {
    let mut plan = RetentionPlan::default();
    for (backup, d) in sorted.into_iter().zip(decisions) {
        match d {
            Ok(reason) => plan.kept.push(Kept { backup, reason }),
            Err(reason) => {
                plan.bytes_freed += backup.size;
                plan.expired.push(Expired { backup, reason });
            }
        }
    }
    plan
}

/// Why a single delete is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteRefusal {
    /// No completed backup of that name.
    NotFound,
    /// The backup, or one of the deltas `--with-dependents` would take
    /// with it, is permanent.
    Permanent(BackupName),
    /// Deltas depend on it (newest first); `--with-dependents` deletes them too.
    HasDependents(Vec<BackupName>),
}

/// The plan of deleting `name` alone, or with every delta built on it
/// (transitively) when `with_dependents`. A permanent backup is never
/// deleted: its mark must be removed first.
pub fn plan_delete_one(
    backups: &[RetentionCandidate],
    name: &BackupName,
    with_dependents: bool,
) -> Result<RetentionPlan, DeleteRefusal> {
    let sorted = newest_first(backups);
    if !sorted.iter().any(|b| b.name == *name) {
        return Err(DeleteRefusal::NotFound);
    }
    // Oldest first, a parent is seen before its deltas.
    let mut doomed: HashSet<&BackupName> = HashSet::from([name]);
    loop {
        let before = doomed.len();
        for b in &sorted {
            if b.parent.as_ref().is_some_and(|p| doomed.contains(p)) {
                doomed.insert(&b.name);
            }
        }
        if doomed.len() == before {
            break;
        }
    }
    let dependents: Vec<BackupName> = sorted
        .iter()
        .filter(|b| b.name != *name && doomed.contains(&b.name))
        .map(|b| b.name.clone())
        .collect();
    if !dependents.is_empty() && !with_dependents {
        return Err(DeleteRefusal::HasDependents(dependents));
    }
    if let Some(p) = sorted.iter().find(|b| b.permanent && doomed.contains(&b.name)) {
        return Err(DeleteRefusal::Permanent(p.name.clone()));
    }
    let decisions = sorted
        .iter()
        .map(|b| {
            if b.name == *name {
                Err(ExpireReason::Requested)
            } else if doomed.contains(&b.name) {
                Err(ExpireReason::DependsOn(name.clone()))
            } else {
                Ok(KeepReason::NotRequested)
            }
        })
        .collect();
    Ok(assemble(sorted.clone(), decisions))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(i: usize) -> BackupName {
        BackupName::parse(&format!("base_{:024X}_{i:03}", i)).unwrap()
    }

    /// Backup `i` finished `i` days after the epoch of the test; `parent`
    /// is the index of its parent.
    fn backup(i: usize, parent: Option<usize>) -> RetentionCandidate {
        RetentionCandidate {
            name: name(i),
            parent: parent.map(name),
            finished_at: t0() + Duration::days(i as i64),
            size: 100 + i as u64,
            permanent: false,
            start_wal_segment: format!("{:024X}", 0x1_0000_0000_0000_0000u128 + i as u128)
                .parse()
                .unwrap(),
            stop_wal_segment: format!("{:024X}", 0x1_0000_0000_0000_0001u128 + i as u128)
                .parse()
                .unwrap(),
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn expired_names(plan: &RetentionPlan) -> Vec<usize> {
        let mut v: Vec<usize> = plan
            .expired
            .iter()
            .map(|e| e.backup.name.as_str()[30..].parse().unwrap())
            .collect();
        v.sort();
        v
    }

    fn kept_reason(plan: &RetentionPlan, i: usize) -> Option<KeepReason> {
        plan.kept
            .iter()
            .find(|k| k.backup.name == name(i))
            .map(|k| k.reason.clone())
    }

    fn count(n: u32) -> RetentionPolicy {
        RetentionPolicy {
            retain_count: Some(n),
            retain_max_age: None,
        }
    }

    #[test]
    fn count_keeps_the_newest_and_their_parents() {
        // 0 full, 1 delta of 0, 2 delta of 1, 3 full, 4 delta of 3, 5 full.
        let backups = [
            backup(0, None),
            backup(1, Some(0)),
            backup(2, Some(1)),
            backup(3, None),
            backup(4, Some(3)),
            backup(5, None),
        ];
        let cases: &[(u32, &[usize])] = &[
            (1, &[0, 1, 2, 3, 4]),
            (2, &[0, 1, 2]), // 4 kept, so 3 is needed
            (3, &[0, 1, 2]),
            (4, &[]), // 2 kept: 1 and 0 needed
            (6, &[]),
            (0, &[0, 1, 2, 3, 4]), // 0 still keeps the newest full chain
        ];
        for (n, want) in cases {
            let plan = plan_retention(&backups, &count(*n), t0() + Duration::days(10));
            assert_eq!(expired_names(&plan), *want, "retain_count {n}");
            assert_eq!(plan.kept.len() + plan.expired.len(), backups.len());
        }
        let plan = plan_retention(&backups, &count(2), t0());
        assert_eq!(kept_reason(&plan, 3), Some(KeepReason::NeededBy(name(4))));
        assert_eq!(plan.bytes_freed, 100 + 101 + 102);
        // Deleting in plan order removes deltas first.
        assert_eq!(expired_names(&plan), [0, 1, 2]);
        assert_eq!(plan.expired[0].backup.name, name(2));
    }

    #[test]
    fn age_expires_old_backups_but_never_the_newest_full_chain() {
        let backups = [
            backup(0, None),
            backup(1, Some(0)),
            backup(2, None),
            backup(3, Some(2)),
        ];
        let age = |days| RetentionPolicy {
            retain_count: None,
            retain_max_age: Some(Duration::days(days)),
        };
        // Now is day 40: everything is older than 30 days.
        let now = t0() + Duration::days(40);
        let plan = plan_retention(&backups, &age(30), now);
        assert_eq!(expired_names(&plan), [0, 1]);
        assert_eq!(kept_reason(&plan, 2), Some(KeepReason::NewestFullChain));
        assert_eq!(kept_reason(&plan, 3), Some(KeepReason::NewestFullChain));
        // Day 3 minus 1.5 days: 2 and 3 within age, 1 not.
        let plan = plan_retention(&backups, &age(1), t0() + Duration::hours(3 * 24 + 12));
        assert_eq!(expired_names(&plan), [0, 1]);
        assert_eq!(kept_reason(&plan, 3), Some(KeepReason::Policy));
    }

    #[test]
    fn either_rule_expires() {
        let backups = [backup(0, None), backup(1, None), backup(2, None), backup(3, None)];
        let now = t0() + Duration::days(3);
        // Count alone keeps 1..=3; age alone keeps 2..=3 (1 is 2 days old).
        let policy = RetentionPolicy {
            retain_count: Some(3),
            retain_max_age: Some(Duration::hours(36)),
        };
        assert_eq!(expired_names(&plan_retention(&backups, &policy, now)), [0, 1]);
        let policy = RetentionPolicy {
            retain_count: Some(1),
            retain_max_age: Some(Duration::days(365)),
        };
        assert_eq!(expired_names(&plan_retention(&backups, &policy, now)), [0, 1, 2]);
    }

    #[test]
    fn permanent_backups_and_their_parents_stay() {
        let mut backups = vec![
            backup(0, None),
            backup(1, Some(0)),
            backup(2, None),
            backup(3, None),
        ];
        backups[1].permanent = true;
        let plan = plan_retention(&backups, &count(1), t0() + Duration::days(9));
        assert_eq!(expired_names(&plan), [2]);
        assert_eq!(kept_reason(&plan, 1), Some(KeepReason::Permanent));
        assert_eq!(kept_reason(&plan, 0), Some(KeepReason::NeededBy(name(1))));
    }

    #[test]
    fn no_policy_and_no_backups_expire_nothing() {
        let backups = [backup(0, None), backup(1, None)];
        let plan = plan_retention(&backups, &RetentionPolicy::default(), t0() + Duration::days(900));
        assert!(plan.expired.is_empty());
        assert_eq!(plan.bytes_freed, 0);
        assert_eq!(plan_retention(&[], &count(1), t0()), RetentionPlan::default());
    }

    #[test]
    fn only_deltas_whose_full_is_gone_are_not_a_chain() {
        // Broken: 1's parent 0 is not in the repository. 1 and 2 are
        // deltas; the newest full is 3.
        let backups = [backup(1, Some(0)), backup(2, Some(1)), backup(3, None)];
        let plan = plan_retention(&backups, &count(1), t0() + Duration::days(9));
        assert_eq!(expired_names(&plan), [1, 2]);
    }

    #[test]
    fn delete_one_refuses_dependents_and_permanent() {
        let mut backups = vec![
            backup(0, None),
            backup(1, Some(0)),
            backup(2, Some(1)),
            backup(3, None),
        ];
        assert_eq!(
            plan_delete_one(&backups, &name(0), false),
            Err(DeleteRefusal::HasDependents(vec![name(2), name(1)]))
        );
        let plan = plan_delete_one(&backups, &name(0), true).unwrap();
        assert_eq!(expired_names(&plan), [0, 1, 2]);
        assert_eq!(plan.expired[0].reason, ExpireReason::DependsOn(name(0)));
        assert_eq!(plan.expired[2].reason, ExpireReason::Requested);
        let plan = plan_delete_one(&backups, &name(2), false).unwrap();
        assert_eq!(expired_names(&plan), [2]);
        assert_eq!(plan.bytes_freed, 102);
        assert_eq!(
            plan_delete_one(&backups, &name(7), true),
            Err(DeleteRefusal::NotFound)
        );
        backups[2].permanent = true;
        assert_eq!(
            plan_delete_one(&backups, &name(0), true),
            Err(DeleteRefusal::Permanent(name(2)))
        );
    }

    #[test]
    fn ages_print_as_settings() {
        for (d, s) in [
            (Duration::days(30), "30d"),
            (Duration::hours(12), "12h"),
            (Duration::minutes(90), "90m"),
            (Duration::seconds(1), "1s"),
        ] {
            assert_eq!(format_age(d), s);
        }
    }

    /// A random repository: backup i is full or a delta of an earlier one.
    fn repository() -> impl Strategy<Value = Vec<RetentionCandidate>> {
        prop::collection::vec(
            (any::<bool>(), any::<prop::sample::Index>(), any::<bool>()),
            0..25,
        )
        .prop_map(|spec| {
            spec.iter()
                .enumerate()
                .map(|(i, (full, parent, permanent))| {
                    let mut b = backup(i, (!full && i > 0).then(|| parent.index(i)));
                    b.permanent = *permanent && i % 5 == 0;
                    b
                })
                .collect()
        })
    }

    fn policy() -> impl Strategy<Value = RetentionPolicy> {
        (prop::option::of(0u32..30), prop::option::of(0i64..40)).prop_map(|(c, a)| RetentionPolicy {
            retain_count: c,
            retain_max_age: a.map(Duration::days),
        })
    }

    proptest! {
        #[test]
        fn plans_keep_what_the_rules_promise(backups in repository(), policy in policy(), now in 0i64..60) {
            let now = t0() + Duration::days(now);
            let plan = plan_retention(&backups, &policy, now);
            let kept: HashSet<&BackupName> = plan.kept.iter().map(|k| &k.backup.name).collect();
            // Every backup is in exactly one list.
            prop_assert_eq!(kept.len() + plan.expired.len(), backups.len());
            // Every kept delta's parent is kept.
            for k in &plan.kept {
                if let Some(p) = &k.backup.parent {
                    prop_assert!(kept.contains(p), "{} kept without its parent {}", k.backup.name, p);
                }
            }
            // The newest full chain is always kept.
            for n in newest_full_chain(&newest_first(&backups)) {
                prop_assert!(kept.contains(&n), "{} of the newest full chain expired", n);
            }
            // Permanent backups are never expired.
            prop_assert!(plan.expired.iter().all(|e| !e.backup.permanent));
            // What the policy keeps is kept.
            let sorted = newest_first(&backups);
            for (i, b) in sorted.iter().enumerate() {
                let young = policy.retain_max_age.is_none_or(|a| b.finished_at >= now - a);
                let recent = policy.retain_count.is_none_or(|c| i < c as usize);
                if young && recent {
                    prop_assert!(kept.contains(&b.name));
                }
            }
            // Expired deltas come before their parents.
            let pos: HashMap<&BackupName, usize> =
                plan.expired.iter().enumerate().map(|(i, e)| (&e.backup.name, i)).collect();
            for (i, e) in plan.expired.iter().enumerate() {
                if let Some(p) = e.backup.parent.as_ref().and_then(|p| pos.get(p)) {
                    prop_assert!(*p > i);
                }
            }
            prop_assert_eq!(plan.bytes_freed, plan.expired.iter().map(|e| e.backup.size).sum::<u64>());
        }

        #[test]
        fn single_deletes_never_orphan_a_delta(backups in repository(), pick in any::<prop::sample::Index>(), with in any::<bool>()) {
            prop_assume!(!backups.is_empty());
            let target = backups[pick.index(backups.len())].name.clone();
            if let Ok(plan) = plan_delete_one(&backups, &target, with) {
                let kept: HashSet<&BackupName> = plan.kept.iter().map(|k| &k.backup.name).collect();
                for k in &plan.kept {
                    if let Some(p) = &k.backup.parent {
                        prop_assert!(kept.contains(p));
                    }
                }
                prop_assert!(plan.expired.iter().all(|e| !e.backup.permanent));
                prop_assert!(plan.expired.iter().any(|e| e.backup.name == target));
            }
        }
    }
}
