//! Timelines of the WAL archive that forked and then both grew.
//!
//! When a server is promoted, it archives a new timeline's history file
//! and goes on writing WAL on that timeline. If the server it forked from
//! also goes on archiving its own timeline past the fork (a clone restored
//! from this repository and promoted while the source still runs, or a
//! failover whose old primary kept running), two servers archive into one
//! repository, and a restore that follows `recovery_target_timeline =
//! latest` (PostgreSQL's default) follows the newest timeline: perhaps the
//! clone's. [`diverged_timelines`] finds such forks: a timeline whose
//! parent has archived segments after the one the fork happened in. The
//! archive alone cannot tell this from a point-in-time restore promoted
//! at a target before the end of the archived WAL (the parent's later
//! segments were archived before the fork, not after): both are reported,
//! and the report says so.
//!
//! Cost: one request per timeline history file (probed in order from
//! timeline 2, as PostgreSQL finds its newest timeline) and, per fork, a
//! listing of the parent's segments from the fork on (at most two key
//! groups of 4 GiB of WAL each). Read-only.

use crate::pipe::decode_object;
use crate::{EngineError, RepoKeys};
use pgark_catalog::{parse_wal_key, wal_key, WAL_PREFIX};
use pgark_pg::{ArchivedFile, Lsn, TimelineId, WalSegmentName, WalSegmentSize};
use pgark_store::{ObjectStore, ObjectStoreExt};
use std::io::Read;

/// A timeline that forked from a parent which went on archiving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    pub timeline: TimelineId,
    pub parent: TimelineId,
    /// Where the timeline left its parent.
    pub switch: Lsn,
    /// The newest segment the parent archived after the fork.
    pub parent_went_on_to: WalSegmentName,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "timeline {} forked from timeline {} at {}, and timeline {} went on archiving (up to {})",
            self.timeline.0, self.parent.0, self.switch, self.parent.0, self.parent_went_on_to
        )
    }
}

/// The history files checked at most (timelines 2 to this + 1).
const MAX_TIMELINES: u32 = 10_000;

/// Every fork of the archive whose parent timeline went on past it (see
/// the module docs), oldest timeline first.
pub async fn diverged_timelines(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
    seg_size: WalSegmentSize,
) -> Result<Vec<Divergence>, EngineError> {
    let mut found = Vec::new();
    for tli in 2..MAX_TIMELINES + 2 {
        let timeline = TimelineId(tli);
        let key = wal_key(&ArchivedFile::TimelineHistory(timeline));
        if !store.exists(&key).await? {
            break;
        }
        let named = key.clone();
        let text = decode_object(store, &key, keys.data_key.as_ref(), move |reader| {
            let mut text = String::new();
            reader
                .read_to_string(&mut text)
                .map_err(|e| crate::pipe::classify_read_error(&named, e))?;
            Ok(text)
        })
        .await?;
        let Some((parent, switch)) = last_fork(&text) else {
            continue;
        };
        if let Some(newest) = parent_segments_after(store, parent, switch, seg_size).await? {
            found.push(Divergence {
                timeline,
                parent,
                switch,
                parent_went_on_to: newest,
            });
        }
    }
    Ok(found)
}

/// The entries of a timeline history file, in order: `<parent TLI>
/// <switch LSN> <reason>` lines (`#` comments and blank lines skipped), as
/// (timeline, the LSN where it ended).
pub(crate) fn history_entries(text: &str) -> Vec<(TimelineId, Lsn)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let tli = fields.next()?.parse::<u32>().ok()?;
            let lsn = fields.next()?.parse::<Lsn>().ok()?;
            Some((TimelineId(tli), lsn))
        })
        .collect()
}

/// The parent and switch point of the timeline a history file describes:
/// its last entry.
fn last_fork(text: &str) -> Option<(TimelineId, Lsn)> {
    history_entries(text).pop()
}

/// The newest segment of `parent` archived after the one holding `switch`.
async fn parent_segments_after(
    store: &dyn ObjectStore,
    parent: TimelineId,
    switch: Lsn,
    seg_size: WalSegmentSize,
) -> Result<Option<WalSegmentName>, EngineError> {
    let fork_segment = switch.segment_no(seg_size);
    let first_log = fork_segment.0 / seg_size.segments_per_xlogid();
    let mut newest: Option<(u64, WalSegmentName)> = None;
    for log in [first_log, first_log + 1] {
        let prefix = format!("{WAL_PREFIX}{}{log:08X}/", parent.hex());
        for meta in store.list(&prefix).await? {
            let Some(ArchivedFile::Segment(seg)) = parse_wal_key(&meta.key) else {
                continue;
            };
            let Ok(no) = seg.segment_no(seg_size) else {
                continue;
            };
            if no.0 > fork_segment.0 && newest.as_ref().is_none_or(|(n, _)| no.0 > *n) {
                newest = Some((no.0, seg));
            }
        }
    }
    Ok(newest.map(|(_, seg)| seg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_entry_of_a_history_file_is_the_fork() {
        let text = "1\t0/3000000\tno recovery target specified\n\n2\t0/5000A28\tat restore point \"x\"\n";
        assert_eq!(last_fork(text), Some((TimelineId(2), Lsn(0x500_0A28))));
        assert_eq!(last_fork("# nothing\n"), None);
    }
}
