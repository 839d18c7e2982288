//! `status`: what an operator asks every day, read from the repository
//! (and, optionally, the server's archiver statistics) without restoring:
//! when was the last backup, is WAL archiving healthy, what can be
//! recovered (the recovery window).
//!
//! Cost: one listing of the repository, the small summary object of each
//! backup (after a listing of `backups/`), the timelines' history files,
//! the record of the last verify run, and the newest few WAL segments
//! (read for the time of their last commit, one at a time, each held in
//! memory whole: 16 MiB by default). No manifest, no part.
//!
//! - **Recovery window.** It starts at the end of the oldest backup whose
//!   own WAL (start to stop segment) is archived: the earliest point a
//!   restore can stop at. It ends at the last commit or abort record in
//!   the newest archived WAL reachable without a gap from the newest such
//!   backup, read from the WAL records themselves (`xact_time`), not from
//!   an object's upload time; when that record is older than the end of
//!   the newest backup from which WAL reaches so far (nothing committed
//!   since that backup is archived), the window ends where that backup
//!   does. It never ends before it starts.
//! - **Healthy** means all of: WAL is contiguous from the oldest backup's
//!   start to the newest archived segment; the newest segment arrived less
//!   than `max_archive_age` ago, or the server (when asked) has nothing
//!   more to archive; the server's archiver has no failure newer than its
//!   last success. Every reason it is not is listed.
//!
//! Read-only.

use crate::manifest_io::list_summaries;
use crate::pipe::{classify_read_error, decode_object};
use crate::timelines::{diverged_timelines, Divergence};
use crate::wal_index::WalIndex;
use crate::{EngineError, RepoKeys};
use chrono::{DateTime, Utc};
use pgark_catalog::{parse_wal_key, wal_key, BackupName, BackupSummary, BACKUPS_PREFIX, WAL_PREFIX};
use pgark_pg::{ArchivedFile, SegmentNo, TimelineId, WalSegmentName, WalSegmentSize};
use pgark_store::ObjectStore;
use std::io::Read;

/// Segments read back from the end of the contiguous archive, at most, to
/// find the last commit (an idle server's segments hold none).
pub const COMMIT_SEARCH_SEGMENTS: u64 = 8;

/// What the server's `pg_stat_archiver` says, for [`status`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiverView {
    pub failed_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<DateTime<Utc>>,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<DateTime<Utc>>,
    /// The segment the server writes now (`None` on a standby).
    pub current_wal: Option<String>,
    /// Files waiting to be archived (`.ready`), when the server lets
    /// pgark look (superuser or `pg_monitor`).
    pub ready_segments: Option<i64>,
}

impl ArchiverView {
    /// Completed segments not archived yet: the server's `.ready` files,
    /// else the segments from the last archived one to the one being
    /// written (which counts a segment just switched away from as being
    /// written); `None` when it cannot be told.
    pub fn lag_segments(&self, size: WalSegmentSize) -> Option<u64> {
        if let Some(ready) = self.ready_segments {
            return Some(ready.max(0) as u64);
        }
        let last = WalSegmentName::parse(self.last_archived_wal.as_deref()?.get(..24)?).ok()?;
        let current = WalSegmentName::parse(self.current_wal.as_deref()?).ok()?;
        let (last, current) = (last.segment_no(size).ok()?, current.segment_no(size).ok()?);
        Some(current.0.saturating_sub(last.0 + 1))
    }

    /// Whether the last failure is newer than the last success.
    pub fn failing(&self) -> bool {
        match (self.last_failed_time, self.last_archived_time) {
            (Some(failed), Some(ok)) => failed > ok,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// A segment and when the store says it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedSegment {
    pub name: WalSegmentName,
    pub arrived: Option<DateTime<Utc>>,
}

/// The last transaction end found in the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastTransaction {
    pub time: DateTime<Utc>,
    /// `COMMIT`, `ABORT`, `COMMIT_PREPARED`, `ABORT_PREPARED` (as `pg_waldump`).
    pub kind: String,
    pub segment: WalSegmentName,
}

/// What [`status`] found.
#[derive(Debug, Clone)]
pub struct Status {
    /// When it was read (`now` as given).
    pub time: DateTime<Utc>,
    pub backup_count: usize,
    /// The newest backup (by finish time).
    pub last_backup: Option<BackupSummary>,
    /// The oldest backup whose own WAL is archived: where the window
    /// starts.
    pub first_restorable: Option<BackupSummary>,
    pub recovery_window_start: Option<DateTime<Utc>>,
    /// The later of `last_transaction`'s time and the end of the newest
    /// backup from which WAL reaches `contiguous_to` (`None`: unknown).
    pub recovery_window_end: Option<DateTime<Utc>>,
    /// The backup whose end is where the window ends, when no commit or
    /// abort archived after it was found.
    pub recovery_window_end_backup: Option<BackupName>,
    /// The last commit or abort found in the newest archived WAL reachable
    /// without a gap (at most [`COMMIT_SEARCH_SEGMENTS`] read back).
    pub last_transaction: Option<LastTransaction>,
    /// The newest segment reachable without a gap from the newest
    /// restorable backup.
    pub contiguous_to: Option<WalSegmentName>,
    /// The newest archived segment of all.
    pub newest_segment: Option<ArchivedSegment>,
    /// The first missing segment after the oldest backup's start, if the
    /// archive goes on past it.
    pub first_gap: Option<WalSegmentName>,
    /// Every timeline that forked from a parent which had archived past
    /// the fork (a point-in-time restore, or a clone).
    pub forks: Vec<Divergence>,
    /// Those of `forks` whose parent archived after the fork was stored:
    /// both still grow (unhealthy).
    pub growing_forks: Vec<Divergence>,
    pub repository_bytes: u64,
    pub wal_bytes: u64,
    pub archiver: Option<ArchiverView>,
    /// The record of the last `pgark verify` run, if any.
    pub last_verify: Option<pgark_catalog::VerifyRecord>,
    /// The record of the last `pgark restore-test` run, if any.
    pub last_restore_test: Option<pgark_catalog::RestoreTestRecord>,
    pub healthy: bool,
    /// Why not healthy (empty when healthy).
    pub problems: Vec<String>,
}

/// Reads the status of the repository (see the module docs). `archiver`:
/// the server's view, when pgark could ask it.
pub async fn status(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
    archiver: Option<ArchiverView>,
    max_archive_age: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<Status, EngineError> {
    let all = store.list("").await?;
    let repository_bytes = all.iter().map(|m| m.size).sum();
    let mut wal_bytes = 0;
    let mut newest: Option<(WalSegmentName, Option<DateTime<Utc>>)> = None;
    for meta in all.iter().filter(|m| m.key.as_str().starts_with(WAL_PREFIX)) {
        wal_bytes += meta.size;
        if let Some(ArchivedFile::Segment(seg)) = parse_wal_key(&meta.key) {
            let later = newest
                .as_ref()
                .is_none_or(|(n, _)| (seg.timeline, seg.log, seg.seg) > (n.timeline, n.log, n.seg));
            if later {
                newest = Some((seg, meta.modified.map(DateTime::<Utc>::from)));
            }
        }
    }
    let has_backups = all.iter().any(|m| m.key.as_str().starts_with(BACKUPS_PREFIX));
    let summaries = if has_backups {
        list_summaries(store, keys).await?
    } else {
        Vec::new()
    };
    let index = WalIndex::from_listing(store, keys, &all).await?;
    let seg_size = index.seg_size;
    let mut problems = Vec::new();

    // Permanent backups keep only their own WAL (retention deletes the
    // rest): the gap after one is by design.
    let permanent: std::collections::HashSet<pgark_catalog::BackupName> = all
        .iter()
        .filter_map(|m| BackupName::from_key(&m.key))
        .filter(|(_, file)| BackupName::is_permanent_file(file))
        .map(|(name, _)| name)
        .collect();
    let follows: Vec<_> = summaries
        .iter()
        .map(|s| index.follow_range(&s.name, &s.start_wal_segment, &s.stop_wal_segment, None))
        .collect();
    // How far the newest restorable backup reaches.
    let contiguous_to = follows
        .iter()
        .rev()
        .find(|(_, _, own)| own.is_empty())
        .and_then(|(reaches, _, _)| *reaches);
    // The window starts at the oldest restorable backup whose WAL goes on
    // without a gap to that point: every moment from its end on can be
    // recovered.
    let reaching: Vec<&BackupSummary> = summaries
        .iter()
        .zip(&follows)
        .filter(|(_, (reaches, _, own))| own.is_empty() && *reaches == contiguous_to)
        .map(|(s, _)| s)
        .collect();
    let first_restorable = reaching.first().map(|s| (*s).clone());
    // The newest of them ends the window at the latest (see window_end).
    let newest_restorable = reaching.iter().max_by_key(|s| consistent_point(s)).copied();
    // Its end may end the window only when that end is the primary's own
    // clock at the backup's stop position (see window_end).
    let end_backup = newest_restorable.filter(|s| may_end_window(&s.backup_from, s.server_stop_time));
    // Health: the oldest backup that is not permanent must be restorable,
    // and WAL must go on from it without a gap.
    let mut first_gap = None;
    for (s, (_, gap, own)) in summaries.iter().zip(&follows) {
        if permanent.contains(&s.name) {
            continue;
        }
        if !own.is_empty() {
            problems.push(format!(
                "backup {} cannot be restored: {}",
                s.name,
                own.join("; ")
            ));
            continue;
        }
        first_gap = *gap;
        break;
    }
    let search = match (&contiguous_to, seg_size) {
        (Some(end), Some(size)) => {
            let floor = end_backup
                .and_then(|s| WalSegmentName::parse(&s.stop_wal_segment).ok())
                .and_then(|n| n.segment_no(size).ok());
            last_transaction(store, keys, &index, end, size, floor, &mut problems).await?
        }
        _ => Search::default(),
    };
    let (recovery_window_end, recovery_window_end_backup) = window_end(
        end_backup.map(|s| (&s.name, consistent_point(s))),
        search.found.as_ref(),
        search.read_back_to_floor,
    );
    let forks = match seg_size {
        Some(size) => diverged_timelines(store, keys, size).await?,
        None => Vec::new(),
    };

    // The last verify's record: a damaged one is said, not fatal.
    let last_verify = match crate::verify::last_verify(store, keys).await {
        Ok(record) => record,
        Err(e) if matches!(e.class(), crate::ErrorClass::Integrity) => {
            tracing::warn!("the record of the last verify run is unreadable: {e}");
            None
        }
        Err(e) => return Err(e),
    };
    let last_restore_test = match crate::restore_test::last_restore_test(store, keys).await {
        Ok(record) => record,
        Err(e) if matches!(e.class(), crate::ErrorClass::Integrity) => {
            tracing::warn!("the record of the last restore test is unreadable: {e}");
            None
        }
        Err(e) => return Err(e),
    };

    // Health.
    if summaries.is_empty() {
        problems.push("no backup in the repository".into());
    }
    if let Some(gap) = &first_gap {
        problems.push(format!(
            "WAL segment {gap} is missing from the archive, which goes on after it"
        ));
    }
    if let (Some((newest_name, _)), Some(reached)) = (&newest, &contiguous_to) {
        if newest_name != reached && first_gap.is_none() {
            problems.push(format!(
                "the archive is contiguous only up to {reached}; it holds segments up to {newest_name}"
            ));
        }
    }
    // A fork is a problem when both sides still grow: the parent archived
    // after the child's history file was stored (a clone archiving into
    // the source's repository). A point-in-time restore whose parent
    // stopped is history, reported but healthy.
    let stored_at = |key: &pgark_store::Key| {
        all.iter()
            .find(|m| &m.key == key)
            .and_then(|m| m.modified)
            .map(DateTime::<Utc>::from)
    };
    let mut growing_forks = Vec::new();
    for f in &forks {
        let history = stored_at(&wal_key(&ArchivedFile::TimelineHistory(f.timeline)));
        let parent_newest = stored_at(&wal_key(&ArchivedFile::Segment(f.parent_went_on_to)));
        let both_grow = match (history, parent_newest) {
            (Some(h), Some(p)) => p > h,
            // Without times, say it.
            _ => true,
        };
        if both_grow {
            problems.push(format!(
                "{f} after the fork (a restored clone archiving into this repository?)"
            ));
            growing_forks.push(f.clone());
        }
    }
    // The server has nothing more to archive: it is a primary, it has
    // archived into this repository (its last archived segment is here),
    // and no file waits to be archived.
    let idle = match (&archiver, seg_size) {
        (Some(a), Some(size)) => {
            let archives_here = a
                .last_archived_wal
                .as_deref()
                .and_then(|w| WalSegmentName::parse(w.get(..24)?).ok())
                .is_some_and(|w| w.segment_no(size).is_ok_and(|no| index.has(w.timeline, no)));
            a.current_wal.is_some() && archives_here && a.lag_segments(size) == Some(0)
        }
        _ => false,
    };
    match &newest {
        None => problems.push("no WAL segment archived".into()),
        Some((name, Some(arrived))) => {
            let age = now - *arrived;
            if age > max_archive_age && !idle {
                problems.push(format!(
                    "the newest archived segment, {name}, arrived {} ago (more than {}), and the server does not \
                     say it archived into this repository and has nothing more to archive",
                    crate::format_age(age),
                    crate::format_age(max_archive_age)
                ));
            }
        }
        Some((name, None)) if !idle => problems.push(format!(
            "the store does not tell when {name} arrived, and the server was not asked whether archiving keeps up"
        )),
        Some(_) => {}
    }
    if let Some(a) = &archiver {
        if a.failing() {
            problems.push(format!(
                "the server's archiver failed on {} at {} and has not succeeded since ({} failures in all)",
                a.last_failed_wal.as_deref().unwrap_or("?"),
                a.last_failed_time.map_or("?".into(), |t| t
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                a.failed_count
            ));
        }
    }
    Ok(Status {
        time: now,
        backup_count: summaries.len(),
        last_backup: summaries.last().cloned(),
        recovery_window_start: first_restorable.as_ref().map(consistent_point),
        first_restorable,
        recovery_window_end,
        recovery_window_end_backup,
        last_transaction: search.found,
        contiguous_to,
        newest_segment: newest.map(|(name, arrived)| ArchivedSegment { name, arrived }),
        first_gap,
        forks,
        growing_forks,
        repository_bytes,
        wal_bytes,
        archiver,
        last_verify,
        last_restore_test,
        healthy: problems.is_empty(),
        problems,
    })
}

/// Where a restore of `s` is consistent, the earliest point it can stop
/// at: the server's clock at `pg_backup_stop` (pgark's at the backup's
/// end for a summary without it).
fn consistent_point(s: &BackupSummary) -> DateTime<Utc> {
    s.server_stop_time.unwrap_or(s.finished_at)
}

/// The recovery window's end: `last`, the last commit or abort found in
/// the archive, unless `newest`, the newest backup from which WAL reaches
/// the end of the archive (its name and consistent point), ends later:
/// then nothing committed after that backup is archived, and the window
/// ends at its consistent point. Only a backup taken on the primary, with
/// the server's time at its stop, is given as `newest`: a standby's stop
/// trails the primary by its replication lag, so commits the primary made
/// before the standby's stop time may not be archived yet, and pgark's own
/// clock at the end of a backup (summaries without the server's time) is
/// later still. Without a transaction found, the end is
/// that point when the search read back to that backup's last segment
/// (`read_back_to_floor`: nothing committed after it), else unknown.
/// Returns the time, and the backup when it is that backup's end.
fn window_end(
    newest: Option<(&BackupName, DateTime<Utc>)>,
    last: Option<&LastTransaction>,
    read_back_to_floor: bool,
) -> (Option<DateTime<Utc>>, Option<BackupName>) {
    match (newest, last) {
        (Some((name, point)), Some(t)) if t.time < point => (Some(point), Some(name.clone())),
        (_, Some(t)) => (Some(t.time), None),
        (Some((name, point)), None) if read_back_to_floor => (Some(point), Some(name.clone())),
        _ => (None, None),
    }
}

/// Whether a backup's end may end the recovery window (see
/// [`window_end`]): taken on the primary, with the server's time at its
/// stop.
fn may_end_window(backup_from: &str, server_stop_time: Option<DateTime<Utc>>) -> bool {
    backup_from != "standby" && server_stop_time.is_some()
}

/// What [`last_transaction`] found.
#[derive(Debug, Default)]
struct Search {
    found: Option<LastTransaction>,
    /// Every segment from the end back to the floor was read whole (none
    /// damaged) before `found`: when nothing is found, no transaction
    /// ended there.
    read_back_to_floor: bool,
}

/// The last commit or abort in the archive at or before `end`, reading
/// back at most [`COMMIT_SEARCH_SEGMENTS`] segments along `end`'s
/// timeline and its ancestors; whether it read every segment back to
/// `floor` (the newest restorable backup's last segment) on the way. A
/// segment that is damaged (fails its digest, or is not WAL) is a
/// problem, passed over.
async fn last_transaction(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
    index: &WalIndex,
    end: &WalSegmentName,
    size: WalSegmentSize,
    floor: Option<SegmentNo>,
    problems: &mut Vec<String>,
) -> Result<Search, EngineError> {
    let Ok(mut no) = end.segment_no(size) else {
        return Ok(Search::default());
    };
    // Every segment read so far was whole.
    let mut whole = true;
    let mut read_back_to_floor = false;
    let mut tli = end.timeline.0;
    for _ in 0..COMMIT_SEARCH_SEGMENTS {
        // Before a fork, the segment is the parent timeline's.
        while !index.segments.get(&tli).is_some_and(|s| s.contains(&no.0)) {
            match index.forks.get(&tli) {
                Some((parent, _)) => tli = *parent,
                None => {
                    return Ok(Search {
                        found: None,
                        read_back_to_floor,
                    })
                }
            }
        }
        let name = WalSegmentName::from_segment_no(TimelineId(tli), no, size);
        let key = wal_key(&ArchivedFile::Segment(name));
        let named = key.clone();
        let decoded = decode_object(store, &key, keys.data_key.as_ref(), move |reader| {
            let mut buf = Vec::with_capacity(size.bytes() as usize);
            reader
                .read_to_end(&mut buf)
                .map_err(|e| classify_read_error(&named, e))?;
            Ok(buf)
        })
        .await;
        let scanned = match decoded {
            Ok(bytes) => pgark_pg::read_xact_records(&name, size, &bytes).map_err(|e| e.to_string()),
            Err(e) if matches!(e.class(), crate::ErrorClass::Integrity) => Err(e.to_string()),
            Err(e) => return Err(e),
        };
        let found = match scanned {
            Ok(scan) => match scan.xacts.last() {
                None => None,
                Some(last) => match last.time.to_system_time() {
                    Some(time) => Some(LastTransaction {
                        time: DateTime::<Utc>::from(time),
                        kind: last.kind.name().to_string(),
                        segment: name,
                    }),
                    // A time out of range: a transaction ended here.
                    None => {
                        whole = false;
                        None
                    }
                },
            },
            Err(e) => {
                problems.push(format!("WAL segment {name} ({key}) is damaged: {e}"));
                whole = false;
                None
            }
        };
        if found.is_some() {
            return Ok(Search {
                found,
                read_back_to_floor,
            });
        }
        if floor.is_some_and(|f| no.0 <= f.0) {
            read_back_to_floor |= whole;
        }
        if no.0 == 0 {
            break;
        }
        no = SegmentNo(no.0 - 1);
    }
    Ok(Search {
        found: None,
        read_back_to_floor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn commit(time: &str) -> LastTransaction {
        LastTransaction {
            time: at(time),
            kind: "COMMIT".into(),
            segment: WalSegmentName::parse("000000010000000000000002").unwrap(),
        }
    }

    #[test]
    fn the_window_ends_at_the_last_commit_after_the_newest_backup() {
        let b = BackupName::new("000000010000000000000002", at("2026-12-03T10:00:00Z"));
        let end = window_end(
            Some((&b, at("2026-12-03T10:00:05Z"))),
            Some(&commit("2026-12-03T10:30:00.5Z")),
            false,
        );
        assert_eq!(end, (Some(at("2026-12-03T10:30:00.5Z")), None));
    }

    /// A backup with nothing committed after it archived: the last commit
    /// is older than the backup's end, and the window is that end alone,
    /// not a window ending before it starts.
    #[test]
    fn a_commit_before_the_newest_backup_ends_the_window_at_the_backup() {
        let b = BackupName::new("000000010000000000000002", at("2026-12-03T10:00:00Z"));
        let point = at("2026-12-03T10:00:05.25Z");
        for read_back in [false, true] {
            let end = window_end(
                Some((&b, point)),
                Some(&commit("2026-12-03T09:59:59Z")),
                read_back,
            );
            assert_eq!(end, (Some(point), Some(b.clone())));
        }
        // The same instant: the commit is where the window ends.
        let end = window_end(Some((&b, point)), Some(&commit("2026-12-03T10:00:05.25Z")), false);
        assert_eq!(end, (Some(point), None));
    }

    /// A standby's stop trails the primary, and pgark's clock at a
    /// backup's end is later than the server's: neither ends the window.
    #[test]
    fn only_a_primary_backup_with_the_servers_stop_time_ends_the_window() {
        let t = Some(at("2026-12-03T10:00:05Z"));
        assert!(may_end_window("primary", t));
        assert!(!may_end_window("standby", t));
        assert!(!may_end_window("primary", None));
    }

    /// No commit found: the backup's end when every segment after it was
    /// read whole, else unknown (one may lie further back than was read).
    #[test]
    fn no_commit_found_ends_the_window_at_the_backup_only_when_read_back_to_it() {
        let b = BackupName::new("000000010000000000000002", at("2026-12-03T10:00:00Z"));
        let point = at("2026-12-03T10:00:05Z");
        assert_eq!(
            window_end(Some((&b, point)), None, true),
            (Some(point), Some(b.clone()))
        );
        assert_eq!(window_end(Some((&b, point)), None, false), (None, None));
        assert_eq!(window_end(None, None, true), (None, None));
        assert_eq!(
            window_end(None, Some(&commit("2026-12-03T09:00:00Z")), false),
            (Some(at("2026-12-03T09:00:00Z")), None)
        );
    }
}
