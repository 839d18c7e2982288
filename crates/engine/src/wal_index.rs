//! The archive's WAL as `verify` and `status` see it: which segments each
//! timeline holds, how the timelines fork (their history files), and how
//! far the archive reaches from a backup without a gap.

use crate::pipe::{classify_read_error, decode_object};
use crate::timelines::history_entries;
use crate::{EngineError, RepoKeys};
use pgark_catalog::{parse_wal_key, wal_key, BackupManifest};
use pgark_pg::{ArchivedFile, Lsn, SegmentNo, TimelineId, WalSegmentName, WalSegmentSize};
use pgark_store::ObjectStore;
use std::collections::{BTreeSet, HashMap};
use std::io::Read;

/// The archive's segments by timeline, and its timelines' histories.
pub(crate) struct WalIndex {
    pub(crate) segments: HashMap<u32, BTreeSet<u64>>,
    /// Timeline -> (parent, switch LSN), from `<TLI>.history`.
    pub(crate) forks: HashMap<u32, (u32, Lsn)>,
    pub(crate) seg_size: Option<WalSegmentSize>,
}

impl WalIndex {
    pub(crate) async fn load(store: &dyn ObjectStore, keys: &RepoKeys) -> Result<WalIndex, EngineError> {
        let listing = store.list(pgark_catalog::WAL_PREFIX).await?;
        Self::from_listing(store, keys, &listing).await
    }

    /// [`WalIndex::load`] from a listing already made (of `wal/` or of
    /// more: other keys are skipped).
    pub(crate) async fn from_listing(
        store: &dyn ObjectStore,
        keys: &RepoKeys,
        listing: &[pgark_store::ObjectMeta],
    ) -> Result<WalIndex, EngineError> {
        let seg_size = crate::repository::load_repository_meta(store)
            .await?
            .and_then(|m| WalSegmentSize::new(u64::from(m.wal_segment_size)).ok());
        let mut segments: HashMap<u32, BTreeSet<u64>> = HashMap::new();
        let mut histories = Vec::new();
        for meta in listing {
            match parse_wal_key(&meta.key) {
                Some(ArchivedFile::Segment(seg)) => {
                    if let Some(no) = seg_size.and_then(|s| seg.segment_no(s).ok()) {
                        segments.entry(seg.timeline.0).or_default().insert(no.0);
                    }
                }
                Some(ArchivedFile::TimelineHistory(t)) => histories.push(t),
                _ => {}
            }
        }
        let mut forks = HashMap::new();
        for t in histories {
            let key = wal_key(&ArchivedFile::TimelineHistory(t));
            let named = key.clone();
            let text = decode_object(store, &key, keys.data_key.as_ref(), move |reader| {
                let mut text = String::new();
                reader
                    .read_to_string(&mut text)
                    .map_err(|e| classify_read_error(&named, e))?;
                Ok(text)
            })
            .await?;
            if let Some((parent, switch)) = history_entries(&text).pop() {
                forks.insert(t.0, (parent.0, switch));
            }
        }
        Ok(WalIndex {
            segments,
            forks,
            seg_size,
        })
    }

    /// Follows the archive from `m`'s start segment (see the module docs):
    /// (reached, first gap, problems).
    pub(crate) fn follow(
        &self,
        m: &BackupManifest,
    ) -> (Option<WalSegmentName>, Option<WalSegmentName>, Vec<String>) {
        let size = WalSegmentSize::new(u64::from(m.wal_segment_size)).ok();
        self.follow_range(&m.name, &m.start_wal_segment, &m.stop_wal_segment, size)
    }

    /// [`WalIndex::follow`] from what a backup's summary holds: its name,
    /// start and stop segments; `size` when the repository does not say.
    pub(crate) fn follow_range(
        &self,
        name: &pgark_catalog::BackupName,
        start_segment: &str,
        stop_segment: &str,
        size: Option<WalSegmentSize>,
    ) -> (Option<WalSegmentName>, Option<WalSegmentName>, Vec<String>) {
        let Some(size) = self.seg_size.or(size) else {
            return (None, None, vec!["the WAL segment size is unknown".into()]);
        };
        let (Ok(start), Ok(stop)) = (
            WalSegmentName::parse(start_segment),
            WalSegmentName::parse(stop_segment),
        ) else {
            return (
                None,
                None,
                vec![format!("backup {}: bad WAL segment names", name)],
            );
        };
        let (Ok(first), Ok(last_needed)) = (start.segment_no(size), stop.segment_no(size)) else {
            return (
                None,
                None,
                vec![format!("backup {}: bad WAL segment names", name)],
            );
        };
        let mut tli = start.timeline.0;
        let mut no = first.0;
        let mut reached: Option<WalSegmentName> = None;
        let mut problems = Vec::new();
        loop {
            // The newest timeline descending from `tli` whose fork lies ahead.
            let child = self
                .forks
                .iter()
                .filter(|(t, (parent, switch))| {
                    **t > tli && *parent == tli && switch.segment_no(size).0 >= no
                })
                .map(|(t, (_, switch))| (*t, switch.segment_no(size).0))
                .max();
            let have = self.segments.get(&tli).is_some_and(|s| s.contains(&no));
            match child {
                // At the fork's segment, the child timeline holds its copy.
                Some((t, at)) if at == no => {
                    tli = t;
                    continue;
                }
                _ => {}
            }
            if !have {
                let gap = WalSegmentName::from_segment_no(TimelineId(tli), SegmentNo(no), size);
                if no <= last_needed.0 {
                    problems.push(format!(
                        "WAL segment {gap}, needed by backup {} to become consistent, is not in the archive",
                        name
                    ));
                }
                let goes_on = self
                    .segments
                    .iter()
                    .any(|(t, s)| *t >= tli && s.range(no..).next().is_some());
                return (reached, goes_on.then_some(gap), problems);
            }
            reached = Some(WalSegmentName::from_segment_no(
                TimelineId(tli),
                SegmentNo(no),
                size,
            ));
            no += 1;
        }
    }
}

impl WalIndex {
    pub(crate) fn has(&self, tli: TimelineId, no: SegmentNo) -> bool {
        self.segments.get(&tli.0).is_some_and(|s| s.contains(&no.0))
    }
}
