//! `verify`: read every object of a backup and check it, writing nothing.
//!
//! For each backup: the manifest decodes; every part is read whole through
//! the verifying decoder (length and digest against its trailer), its
//! digest is the one the manifest recorded, every tar entry is one the
//! manifest expects in that part (a whole file, a piece, a delta
//! increment, a directory) with the manifest's size and CRC-32C, and every
//! entry the manifest expects was found. For a delta, its parents are
//! verified the same way. Then the WAL: the segments from the backup's
//! start to its stop (what a restore needs to become consistent) must be in
//! the archive, and the archive is followed from the backup's start
//! segment, along its timeline and the timelines that descend from it
//! (their history files), to the first missing segment: the point up to
//! which the backup can restore.
//!
//! Parts are read `concurrency` at a time, each through a bounded channel
//! (see `pipe`): memory does not grow with the backup. Read-only; a failure
//! of the repository ends the command (exit 6), what is damaged or missing
//! is reported per backup and the command goes on.

use crate::manifest_io::{list_backups, load_manifest};
use crate::pipe::{classify_read_error, decode_object};
use crate::timelines::history_entries;
use crate::{EngineError, ErrorClass, RepoKeys};
use futures::StreamExt;
use pgark_catalog::{delta_entry_name, parse_wal_key, piece_entry_name, wal_key, BackupManifest, BackupName};
use pgark_pg::{ArchivedFile, Lsn, SegmentNo, TimelineId, WalSegmentName, WalSegmentSize};
use pgark_store::ObjectStore;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;

/// What to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyTarget {
    Latest,
    Named(BackupName),
    All,
}

/// The outcome for one backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupVerdict {
    pub name: BackupName,
    /// Parts read (of this backup and, for a delta, its parents).
    pub parts: usize,
    /// Bytes of tar streams read and checked.
    pub bytes: u64,
    /// What is damaged or missing, each naming the object; empty: whole.
    pub problems: Vec<String>,
    /// The newest archived segment reached from the backup's start without
    /// a gap (`None`: not even the start segment is archived).
    pub wal_reaches: Option<WalSegmentName>,
    /// The first segment missing after that, if the archive goes on past it.
    pub wal_gap: Option<WalSegmentName>,
}

impl BackupVerdict {
    pub fn is_whole(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies the backups `target` names (see the module docs).
pub async fn verify(
    store: Arc<dyn ObjectStore>,
    target: &VerifyTarget,
    keys: &RepoKeys,
    concurrency: usize,
) -> Result<Vec<BackupVerdict>, EngineError> {
    let manifests: Vec<BackupManifest> = match target {
        VerifyTarget::Named(name) => vec![load_manifest(&*store, name, keys).await?],
        VerifyTarget::Latest => {
            let mut all = list_backups(&*store, keys).await?;
            vec![all.pop().ok_or_else(|| EngineError::NotFound {
                what: "a completed backup".into(),
                key: pgark_catalog::BACKUPS_PREFIX.into(),
            })?]
        }
        VerifyTarget::All => list_backups(&*store, keys).await?,
    };
    let wal = WalIndex::load(&*store, keys).await?;
    let mut checked: HashMap<BackupName, (usize, u64, Vec<String>)> = HashMap::new();
    let mut verdicts = Vec::new();
    for m in manifests {
        let mut parts = 0;
        let mut bytes = 0;
        let mut problems = Vec::new();
        // The backup and its parents, each read once per command.
        let mut next = Some(m.clone());
        while let Some(b) = next.take() {
            if !checked.contains_key(&b.name) {
                let result = verify_objects(&store, &b, keys, concurrency).await?;
                checked.insert(b.name.clone(), result);
            }
            let (p, n, probs) = &checked[&b.name];
            parts += p;
            bytes += n;
            problems.extend(probs.iter().cloned());
            if let Some(parent) = &b.parent {
                match load_manifest(&*store, parent, keys).await {
                    Ok(pm) => next = Some(pm),
                    Err(e) if matches!(e.class(), ErrorClass::NotFound | ErrorClass::Integrity) => {
                        problems.push(format!("parent backup {parent}: {e}"));
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let (reaches, gap, wal_problems) = wal.follow(&m);
        problems.extend(wal_problems);
        if let Some(gap) = &gap {
            problems.push(format!(
                "WAL segment {gap} is missing from the archive, which goes on after it: backup {} restores only up \
                 to {}",
                m.name,
                reaches.as_ref().map_or("none of its WAL".to_string(), |r| format!("the end of {r}"))
            ));
        }
        verdicts.push(BackupVerdict {
            name: m.name.clone(),
            parts,
            bytes,
            problems,
            wal_reaches: reaches,
            wal_gap: gap,
        });
    }
    Ok(verdicts)
}

/// What a tar entry of a part must be.
struct Expected {
    part: u32,
    size: u64,
    crc32c: String,
}

/// One part read: its entries and bytes, or what is wrong with it.
type PartCheck = Result<(Vec<String>, u64), String>;

/// Reads every part of `m`: (parts read, bytes, problems). Repository
/// failures are errors; damage and absence are problems.
async fn verify_objects(
    store: &Arc<dyn ObjectStore>,
    m: &BackupManifest,
    keys: &RepoKeys,
    concurrency: usize,
) -> Result<(usize, u64, Vec<String>), EngineError> {
    let mut expected: HashMap<String, Expected> = HashMap::new();
    for f in &m.files {
        match (&f.delta, f.pieces.is_empty()) {
            (Some(d), _) if d.unchanged => {}
            (Some(d), _) => {
                expected.insert(
                    delta_entry_name(&f.path),
                    Expected {
                        part: f.part,
                        size: d.size,
                        crc32c: d.crc32c.clone(),
                    },
                );
            }
            (None, true) => {
                expected.insert(
                    f.path.clone(),
                    Expected {
                        part: f.part,
                        size: f.size,
                        crc32c: f.crc32c.clone(),
                    },
                );
            }
            (None, false) => {
                for (n, p) in f.pieces.iter().enumerate() {
                    expected.insert(
                        piece_entry_name(&f.path, n),
                        Expected {
                            part: p.part,
                            size: p.size,
                            crc32c: p.crc32c.clone(),
                        },
                    );
                }
            }
        }
    }
    let dirs: HashSet<String> = m.directories.iter().map(|d| d.path.clone()).collect();
    let expected = Arc::new(expected);
    let dirs = Arc::new(dirs);
    let results: Vec<Result<PartCheck, EngineError>> =
        futures::stream::iter(m.parts.iter().map(|part| {
            let (expected, dirs) = (expected.clone(), dirs.clone());
            let key = m.name.part_key(part.index);
            let index = part.index;
            let digest = part.digest.clone();
            async move {
                let named = key.clone();
                let read = decode_object(&**store, &key, keys.data_key.as_ref(), move |reader| {
                    let mut seen = Vec::new();
                    let mut problems = Vec::new();
                    let mut archive = tar::Archive::new(&mut *reader);
                    let entries = archive
                        .entries()
                        .map_err(|e| classify_read_error(&named, e))?;
                    for entry in entries {
                        let mut entry = entry.map_err(|e| classify_read_error(&named, e))?;
                        let rel = entry
                            .path()
                            .map(|p| p.to_string_lossy().trim_end_matches('/').to_string())
                            .unwrap_or_default();
                        if entry.header().entry_type() == tar::EntryType::Directory {
                            if !dirs.contains(&rel) {
                                problems.push(format!("{named}: directory {rel} is not in the manifest"));
                            }
                            continue;
                        }
                        let mut crc = 0u32;
                        let mut len = 0u64;
                        let mut buf = vec![0u8; 256 << 10];
                        loop {
                            let n = entry.read(&mut buf).map_err(|e| classify_read_error(&named, e))?;
                            if n == 0 {
                                break;
                            }
                            crc = crc32c::crc32c_append(crc, &buf[..n]);
                            len += n as u64;
                        }
                        match expected.get(&rel) {
                            None => problems.push(format!("{named}: {rel} is not in the manifest")),
                            Some(e) if e.part != index => {
                                problems.push(format!("{named}: {rel} belongs in part {}", e.part))
                            }
                            Some(e) if e.size != len || e.crc32c != format!("{crc:08x}") => problems.push(format!(
                                "{named}: {rel}: {len} bytes with CRC-32C {crc:08x}, the manifest says {} bytes \
                                 with CRC-32C {}",
                                e.size, e.crc32c
                            )),
                            Some(_) => {}
                        }
                        seen.push(rel);
                    }
                    std::io::copy(archive.into_inner(), &mut std::io::sink())
                        .map_err(|e| classify_read_error(&named, e))?;
                    let summary = reader
                        .summary()
                        .ok_or_else(|| EngineError::Internal(format!("{named}: decoder ended unverified")))?;
                    if !crate::restore::same_digest(&summary.digest.to_string(), &digest) {
                        problems.push(format!(
                            "{named}: digest {} is not the manifest's {digest}: another object than the backup wrote",
                            summary.digest
                        ));
                    }
                    Ok((seen, summary.original_len, problems))
                })
                .await;
                match read {
                    Ok((seen, bytes, problems)) => {
                        if problems.is_empty() {
                            Ok(Ok((seen, bytes)))
                        } else {
                            Ok(Err(problems.join("; ")))
                        }
                    }
                    Err(e) => match e.class() {
                        ErrorClass::NotFound => Ok(Err(format!("{key}: missing"))),
                        ErrorClass::Integrity => Ok(Err(e.to_string())),
                        _ => Err(e),
                    },
                }
            }
        }))
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let mut problems = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut bytes = 0;
    for r in results {
        match r? {
            Ok((entries, n)) => {
                bytes += n;
                seen.extend(entries);
            }
            Err(p) => problems.push(p),
        }
    }
    if problems.is_empty() {
        let mut missing: Vec<&String> = expected.keys().filter(|k| !seen.contains(*k)).collect();
        missing.sort();
        if let Some(first) = missing.first() {
            problems.push(format!(
                "backup {}: {} entries of the manifest are in no part (first: {first})",
                m.name,
                missing.len()
            ));
        }
    }
    Ok((m.parts.len(), bytes, problems))
}

/// The archive's segments by timeline, and its timelines' histories.
pub(crate) struct WalIndex {
    pub(crate) segments: HashMap<u32, BTreeSet<u64>>,
    /// Timeline -> (parent, switch LSN), from `<TLI>.history`.
    pub(crate) forks: HashMap<u32, (u32, Lsn)>,
    pub(crate) seg_size: Option<WalSegmentSize>,
}

impl WalIndex {
    pub(crate) async fn load(store: &dyn ObjectStore, keys: &RepoKeys) -> Result<WalIndex, EngineError> {
        let seg_size = crate::repository::load_repository_meta(store)
            .await?
            .and_then(|m| WalSegmentSize::new(u64::from(m.wal_segment_size)).ok());
        let mut segments: HashMap<u32, BTreeSet<u64>> = HashMap::new();
        let mut histories = Vec::new();
        for meta in store.list(pgark_catalog::WAL_PREFIX).await? {
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
        let Some(size) = self
            .seg_size
            .or_else(|| WalSegmentSize::new(u64::from(m.wal_segment_size)).ok())
        else {
            return (None, None, vec!["the WAL segment size is unknown".into()]);
        };
        let (Ok(start), Ok(stop)) = (
            WalSegmentName::parse(&m.start_wal_segment),
            WalSegmentName::parse(&m.stop_wal_segment),
        ) else {
            return (
                None,
                None,
                vec![format!("backup {}: bad WAL segment names", m.name)],
            );
        };
        let (Ok(first), Ok(last_needed)) = (start.segment_no(size), stop.segment_no(size)) else {
            return (
                None,
                None,
                vec![format!("backup {}: bad WAL segment names", m.name)],
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
                        m.name
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
