//! Which archived WAL no kept backup needs, once backups are expired.
//!
//! The cutoff is the start segment of the oldest (by finish time) kept
//! backup that is not permanent. A WAL file is deleted when:
//! - it is a complete segment or a backup history file (timeline history
//!   files and `.partial` segments are always kept);
//! - its timeline is the cutoff backup's timeline or one of its ancestors
//!   (from the timeline's history file; without one, only the timeline
//!   itself);
//! - its segment comes before the cutoff segment;
//! - it is not within a permanent backup's own WAL (its start to its stop
//!   segment, on its timeline), which that backup needs to restore
//!   consistently.
//!
//! Without a kept non-permanent backup nothing is deleted. A backup that
//! has stored parts but no manifest yet (in progress, or interrupted)
//! lowers the cutoff to its start segment (from its name), so WAL that a
//! running backup-push will need is kept.

use super::plan::{RetentionCandidate, RetentionPlan};
use crate::pipe::decode_object;
use crate::{EngineError, RepoKeys};
use pgark_catalog::{parse_wal_key, wal_key, BackupName, WAL_PREFIX};
use pgark_pg::{ArchivedFile, TimelineId, WalSegmentName};
use pgark_store::{Key, ObjectStore};
use std::collections::HashSet;
use std::io::Read;

/// The segment the cutoff falls on and the timelines it applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalCutoff {
    /// Segments before this one (on `timelines`) are deleted.
    pub segment: WalSegmentName,
    /// The cutoff backup's timeline and its ancestors.
    pub timelines: HashSet<TimelineId>,
    /// Start and stop segments of the permanent backups, kept.
    pub permanent: Vec<(WalSegmentName, WalSegmentName)>,
}

/// What a WAL deletion removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WalPlan {
    pub cutoff: Option<WalSegmentName>,
    pub keys: Vec<Key>,
    pub bytes: u64,
}

/// The oldest kept non-permanent backup, if any.
pub fn cutoff_backup(plan: &RetentionPlan) -> Option<&RetentionCandidate> {
    plan.kept
        .iter()
        .map(|k| &k.backup)
        .filter(|b| !b.permanent)
        .min_by(|a, b| {
            a.finished_at
                .cmp(&b.finished_at)
                .then_with(|| a.name.cmp(&b.name))
        })
}

fn position(s: &WalSegmentName) -> (u32, u32) {
    (s.log, s.seg)
}

/// Whether the archived file `file` goes, under `cutoff`.
pub fn wal_file_expires(file: &ArchivedFile, cutoff: &WalCutoff) -> bool {
    let seg = match file {
        ArchivedFile::Segment(seg) | ArchivedFile::BackupHistory { segment: seg, .. } => seg,
        ArchivedFile::Partial(_) | ArchivedFile::TimelineHistory(_) => return false,
    };
    cutoff.timelines.contains(&seg.timeline)
        && position(seg) < position(&cutoff.segment)
        && !cutoff.permanent.iter().any(|(start, stop)| {
            seg.timeline == start.timeline
                && position(start) <= position(seg)
                && position(seg) <= position(stop)
        })
}

/// The cutoff of `plan`: `None` when no non-permanent backup is kept.
async fn wal_cutoff(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
    plan: &RetentionPlan,
    incomplete: &[BackupName],
) -> Result<Option<WalCutoff>, EngineError> {
    let Some(oldest) = cutoff_backup(plan) else {
        return Ok(None);
    };
    let mut segment = oldest.start_wal_segment;
    let mut timelines = HashSet::from([segment.timeline]);
    if segment.timeline.0 > 1 {
        let key = wal_key(&ArchivedFile::TimelineHistory(segment.timeline));
        let named = key.clone();
        let text = decode_object(store, &key, keys.data_key.as_ref(), move |reader| {
            let mut text = String::new();
            reader
                .read_to_string(&mut text)
                .map_err(|e| crate::pipe::classify_read_error(&named, e))?;
            Ok(text)
        })
        .await;
        match text {
            Ok(text) => timelines.extend(
                crate::timelines::history_entries(&text)
                    .into_iter()
                    .map(|(t, _)| t),
            ),
            // Without the history file, only the timeline itself.
            Err(EngineError::Store { source }) if source.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    for started in incomplete.iter().filter_map(started_in) {
        if position(&started) < position(&segment) {
            segment.log = started.log;
            segment.seg = started.seg;
        }
    }
    let permanent = plan
        .kept
        .iter()
        .filter(|k| k.backup.permanent)
        .map(|k| (k.backup.start_wal_segment, k.backup.stop_wal_segment))
        .collect();
    Ok(Some(WalCutoff {
        segment,
        timelines,
        permanent,
    }))
}

/// The segment a backup started in, from its name
/// (`base_<segment>_...`).
pub fn started_in(name: &BackupName) -> Option<WalSegmentName> {
    name.as_str().get(5..29)?.parse().ok()
}

/// Lists the WAL archive and picks what no kept backup needs, nor any
/// backup in `incomplete` (names with parts but no manifest).
pub async fn plan_wal_deletion(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
    plan: &RetentionPlan,
    incomplete: &[BackupName],
) -> Result<WalPlan, EngineError> {
    let Some(cutoff) = wal_cutoff(store, keys, plan, incomplete).await? else {
        return Ok(WalPlan::default());
    };
    let mut out = WalPlan {
        cutoff: Some(cutoff.segment),
        ..WalPlan::default()
    };
    for meta in store.list(WAL_PREFIX).await? {
        if parse_wal_key(&meta.key).is_some_and(|f| wal_file_expires(&f, &cutoff)) {
            out.bytes += meta.size;
            out.keys.push(meta.key);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(s: &str) -> WalSegmentName {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn an_incomplete_backup_keeps_the_wal_from_its_start() {
        use crate::retention::plan::{plan_retention, RetentionPolicy};
        use pgark_store::{MemoryStore, PutMode};
        let store = MemoryStore::new();
        for i in 1..=8u32 {
            let file = ArchivedFile::Segment(seg(&format!("0000000100000000{i:08X}")));
            store
                .put(&wal_key(&file), bytes::Bytes::from_static(b"x"), PutMode::Create)
                .await
                .unwrap();
        }
        let history = wal_key(&ArchivedFile::TimelineHistory(TimelineId(2)));
        store
            .put(&history, bytes::Bytes::new(), PutMode::Create)
            .await
            .unwrap();
        let backup = RetentionCandidate {
            name: BackupName::parse("base_000000010000000000000006_a").unwrap(),
            parent: None,
            finished_at: chrono::Utc::now(),
            size: 1,
            permanent: false,
            start_wal_segment: seg("000000010000000000000006"),
            stop_wal_segment: seg("000000010000000000000006"),
        };
        let plan = plan_retention(&[backup], &RetentionPolicy::default(), chrono::Utc::now());
        let deleted = |p: &WalPlan| -> Vec<String> {
            p.keys
                .iter()
                .map(|k| k.as_str().rsplit('/').next().unwrap().to_string())
                .collect()
        };
        let wal = plan_wal_deletion(&store, &RepoKeys::none(), &plan, &[])
            .await
            .unwrap();
        assert_eq!(wal.cutoff, Some(seg("000000010000000000000006")));
        assert_eq!(deleted(&wal).len(), 5);
        let running = BackupName::parse("base_000000010000000000000003_b").unwrap();
        let wal = plan_wal_deletion(&store, &RepoKeys::none(), &plan, &[running])
            .await
            .unwrap();
        assert_eq!(
            deleted(&wal),
            ["000000010000000000000001", "000000010000000000000002"]
        );
        assert_eq!(wal.bytes, 2);
    }

    #[test]
    fn backups_start_where_their_name_says() {
        let name = BackupName::parse("base_00000002000000010000000F_20261122T031500Z").unwrap();
        assert_eq!(started_in(&name), Some(seg("00000002000000010000000F")));
    }

    #[test]
    fn only_older_segments_of_the_cutoff_timeline_and_its_ancestors_go() {
        let cutoff = WalCutoff {
            segment: seg("000000020000000100000010"),
            timelines: HashSet::from([TimelineId(1), TimelineId(2)]),
            permanent: vec![(seg("000000010000000000000003"), seg("000000010000000000000004"))],
        };
        let cases = [
            ("000000010000000000000002", true),
            ("000000010000000000000003", false), // a permanent backup's WAL
            ("000000010000000000000004", false),
            ("000000010000000000000005", true),
            ("0000000100000000000000FF", true),
            ("00000002000000010000000F", true),
            ("000000020000000100000010", false), // the cutoff itself
            ("000000010000000100000011", false), // after it, on the parent
            ("000000030000000000000001", false), // another timeline
            ("000000010000000000000002.partial", false),
            ("00000002.history", false),
            ("000000010000000000000002.00000028.backup", true),
            ("000000020000000100000010.00000028.backup", false),
        ];
        for (name, expires) in cases {
            let file = ArchivedFile::parse(name).unwrap();
            assert_eq!(wal_file_expires(&file, &cutoff), expires, "{name}");
        }
    }
}
