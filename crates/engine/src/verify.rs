//! `verify`: read every object of a backup and check it, writing only the record of the run.
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
//! At the WAL level ([`VerifyOptions::wal_level`], `verify --wal`), the
//! backup's own WAL is also read: every segment from its start segment to
//! its stop segment, on its timeline, is downloaded and decoded (length and
//! digest checked) into memory, one at a time, and handed in order to
//! [`WalReader`]: its page headers must be valid (magic, page address,
//! timeline) and its records must chain (`xl_prev`) with valid CRCs up to
//! the backup's stop LSN. A segment that does not decode, or where the
//! reader stops for anything but the end of its input before the stop LSN,
//! is a problem naming its key.
//!
//! Parts are read `concurrency` at a time, each through a bounded channel
//! (see `pipe`): memory does not grow with the backup; WAL segments are
//! held one at a time. Read-only, but for the record of the run
//! ([`record_verify`], written by the command); a failure of the repository
//! ends the command (exit 6), what is damaged or missing is reported per
//! backup and the command goes on.

use crate::manifest_io::{get_record, list_backups, load_manifest, put_record};
use crate::pipe::{classify_read_error, decode_object};
use crate::verify_wal::verify_wal_records;
use crate::wal_index::WalIndex;
use crate::{EngineError, ErrorClass, RepoKeys};
use futures::StreamExt;
use pgark_catalog::{
    delta_entry_name, piece_entry_name, verify_record_key, BackupManifest, BackupName, VerifiedBackup,
    VerifyOutcome, VerifyRecord,
};
use pgark_pg::WalSegmentName;
use pgark_store::ObjectStore;
use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;

/// What to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VerifyTarget {
    Latest,
    Named(BackupName),
    All,
}

/// How to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyOptions {
    /// Parts read at once.
    pub concurrency: usize,
    /// Also read every WAL segment from each backup's start to its stop and
    /// check its pages and records (see the module docs).
    pub wal_level: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            concurrency: 2,
            wal_level: false,
        }
    }
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
    /// At the WAL level: the segments of the backup's own WAL read and
    /// checked (`None`: not verified at the WAL level).
    pub wal_checked_segments: Option<usize>,
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
    opts: &VerifyOptions,
) -> Result<Vec<BackupVerdict>, EngineError> {
    let concurrency = opts.concurrency;
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
        let wal_checked_segments = if opts.wal_level {
            let (read, wal_problems) = verify_wal_records(&store, &m, keys, &wal).await?;
            problems.extend(wal_problems);
            Some(read)
        } else {
            None
        };
        verdicts.push(BackupVerdict {
            name: m.name.clone(),
            parts,
            bytes,
            problems,
            wal_reaches: reaches,
            wal_gap: gap,
            wal_checked_segments,
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

/// The record of a verify run of `target` that found `verdicts`.
pub fn verify_record(target: &VerifyTarget, wal_level: bool, verdicts: &[BackupVerdict]) -> VerifyRecord {
    let whole = verdicts.iter().all(BackupVerdict::is_whole);
    VerifyRecord {
        time: chrono::Utc::now(),
        target: match target {
            VerifyTarget::All => "all".to_string(),
            VerifyTarget::Latest => "latest".to_string(),
            VerifyTarget::Named(name) => name.to_string(),
        },
        wal_level,
        backups: verdicts
            .iter()
            .map(|v| VerifiedBackup {
                name: v.name.to_string(),
                whole: v.is_whole(),
                problems: v.problems.clone(),
            })
            .collect(),
        outcome: if whole {
            VerifyOutcome::Whole
        } else {
            VerifyOutcome::Damaged
        },
        pgark_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Writes `record` as `verify/latest`, replacing the last run's. Like a
/// backup's summary: a pgark object of JSON, encrypted under the data key
/// in an encrypted repository.
pub async fn record_verify(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
    record: &VerifyRecord,
) -> Result<(), EngineError> {
    put_record(store, keys, &verify_record_key(), &record.to_json()).await
}

/// The record of the last verify run (`None`: never verified). A record
/// that does not decode or parse is an integrity error.
pub async fn last_verify(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
) -> Result<Option<VerifyRecord>, EngineError> {
    get_record(store, keys, &verify_record_key(), VerifyRecord::from_json).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgark_store::MemoryStore;

    fn verdict(name: &str, problems: &[&str]) -> BackupVerdict {
        BackupVerdict {
            name: BackupName::parse(name).unwrap(),
            parts: 1,
            bytes: 1,
            problems: problems.iter().map(|p| p.to_string()).collect(),
            wal_reaches: None,
            wal_gap: None,
            wal_checked_segments: Some(1),
        }
    }

    /// The record round-trips, plain and encrypted; none before the first
    /// run; a damaged one, or one read without its repository's key, is an
    /// integrity error.
    #[tokio::test]
    async fn the_last_run_is_recorded_and_read_back() {
        let a = "base_000000010000000000000002_20260102T030000Z";
        let b = "base_000000010000000000000005_20260102T040000Z";
        for keys in [
            RepoKeys::default(),
            RepoKeys {
                data_key: Some(pgark_crypto::DataKey::generate()),
            },
        ] {
            let store = MemoryStore::new();
            assert_eq!(last_verify(&store, &keys).await.unwrap(), None);
            let record = verify_record(
                &VerifyTarget::All,
                true,
                &[verdict(a, &[]), verdict(b, &["wal/x: damaged"])],
            );
            assert_eq!(record.outcome, VerifyOutcome::Damaged);
            assert_eq!(record.target, "all");
            record_verify(&store, &keys, &record).await.unwrap();
            assert_eq!(last_verify(&store, &keys).await.unwrap(), Some(record));
            let again = verify_record(
                &VerifyTarget::Named(BackupName::parse(a).unwrap()),
                false,
                &[verdict(a, &[])],
            );
            assert_eq!(again.outcome, VerifyOutcome::Whole);
            assert_eq!(again.target, a);
            record_verify(&store, &keys, &again).await.unwrap();
            let read = last_verify(&store, &keys).await.unwrap().unwrap();
            assert!(read.backup(a).unwrap().whole && read.backup(b).is_none());
            if keys.is_encrypted() {
                let err = last_verify(&store, &RepoKeys::default()).await.unwrap_err();
                assert_eq!(err.class(), ErrorClass::Integrity, "{err}");
            }
            store
                .put(
                    &verify_record_key(),
                    "{ damaged".into(),
                    pgark_store::PutMode::Overwrite,
                )
                .await
                .unwrap();
            let err = last_verify(&store, &keys).await.unwrap_err();
            assert_eq!(err.class(), ErrorClass::Integrity, "{err}");
        }
    }
}
