//! Archiving ahead of PostgreSQL's archiver: `wal-push --archive-parallel N`.
//!
//! PostgreSQL's archiver runs `archive_command` for one file at a time and
//! waits for it. When it asks for segment X, pgark also pushes the next
//! ready segments (their `pg_wal/archive_status/<name>.ready` files, in
//! name order, at most N - 1 of them) in parallel with X, and records each
//! one that is durably stored in the spool, `pg_wal/pgark-archived/<name>`.
//! When PostgreSQL then asks for one of them, pgark finds its record,
//! checks it (below) and answers at once.
//!
//! # Contract
//! - A segment is reported archived (exit 0) only once it is durably in
//!   the repository: a record is written after its push returned, and a
//!   record is believed only when the file it names is the same file (size,
//!   modification time, inode), the record is of this repository, and the
//!   repository has the object (one existence check). Otherwise it is
//!   ignored with a warning and the segment pushed as usual.
//! - PostgreSQL alone renames `.ready` to `.done`; pgark never touches
//!   `archive_status/`.
//! - A crash or kill -9 at any point leaves at worst a record missing (the
//!   segment is pushed again, which the duplicate check turns into a
//!   no-op) or a record's temporary file (`*.tmp`, removed by the next run);
//!   never a record of a segment that is not stored.
//! - The spool is bounded: records of segments older than the one
//!   PostgreSQL asks for are removed (it archives in order), and at most N
//!   records are ahead of it.
//! - History, backup-history and partial files are never pushed ahead.

use crate::wal_push::{wal_push, WalPushOptions, WalPushOutcome, WalPushStatus};
use crate::EngineError;
use futures::StreamExt;
use pgark_codec::{ContentDigest, DigestAlgorithm};
use pgark_pg::ArchivedFile;
use pgark_store::ObjectStore;
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The spool's directory name, inside `pg_wal`.
pub const SPOOL_DIR: &str = "pgark-archived";

/// What a record says about a segment pushed ahead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// The repository it was stored in (its URL as given).
    repository: String,
    size: u64,
    mtime_ns: i64,
    inode: u64,
    /// The content digest the push recorded.
    digest: String,
}

/// How [`wal_push_ahead`] archives.
#[derive(Debug, Clone)]
pub struct ArchiveAhead {
    /// Segments pushed at once, the one asked for included (1: none ahead).
    pub parallel: usize,
    /// Identifies the repository in the records (its URL).
    pub repository: String,
}

/// The `pg_wal` holding `path`, when it is one: its directory has
/// `archive_status/`.
pub(crate) fn pg_wal_of(path: &Path) -> Option<PathBuf> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join("archive_status").is_dir().then(|| dir.to_path_buf())
}

fn stat(path: &Path) -> std::io::Result<(u64, i64, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((
        meta.len(),
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        meta.ino(),
    ))
}

/// The segments after `after` that PostgreSQL has marked ready, in the
/// order it will ask for them.
fn ready_after(pg_wal: &Path, after: &str, limit: usize) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(pg_wal.join("archive_status")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".ready").map(str::to_string))
        .filter(|n| matches!(ArchivedFile::parse(n), Ok(ArchivedFile::Segment(_))) && n.as_str() > after)
        .collect();
    names.sort();
    names.truncate(limit);
    names
}

/// A digest as `Display` wrote it (`blake3:<hex>`); zeros when unreadable
/// (the record is informational: the repository's object has its own).
pub(crate) fn parse_digest(text: &str) -> ContentDigest {
    let (algorithm, hex) = text.split_once(':').unwrap_or(("", ""));
    let algorithm = if algorithm == "blake3" {
        DigestAlgorithm::Blake3
    } else {
        DigestAlgorithm::Sha256
    };
    let mut bytes = [0u8; 32];
    let _ = hex::decode_to_slice(hex, &mut bytes);
    ContentDigest { algorithm, bytes }
}

/// The spool: one record per segment pushed ahead.
struct Spool {
    dir: PathBuf,
    repository: String,
}

impl Spool {
    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The record of `name` when it holds for the file at `path`; `None`
    /// when there is none or it does not hold (said in a warning).
    fn read(&self, name: &str, path: &Path) -> Option<Record> {
        let text = std::fs::read(self.record_path(name)).ok()?;
        let record: Record = match serde_json::from_slice(&text) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("ignoring the spool's unreadable record of {name}: {e}");
                return None;
            }
        };
        if record.repository != self.repository {
            tracing::warn!(
                "ignoring the spool's record of {name}: it was archived into {}, not {}",
                record.repository,
                self.repository
            );
            return None;
        }
        match stat(path) {
            Ok((size, mtime_ns, inode))
                if size == record.size && mtime_ns == record.mtime_ns && inode == record.inode =>
            {
                Some(record)
            }
            _ => {
                tracing::warn!(
                    "ignoring the spool's record of {name}: {} is not the file it recorded",
                    path.display()
                );
                None
            }
        }
    }

    /// Records `name` as durably stored (atomically: a temporary file
    /// renamed; not synced, since a lost record only costs a second push).
    fn write(&self, name: &str, path: &Path, outcome: &WalPushOutcome) -> std::io::Result<()> {
        let (size, mtime_ns, inode) = stat(path)?;
        let record = Record {
            repository: self.repository.clone(),
            size,
            mtime_ns,
            inode,
            digest: outcome.digest.to_string(),
        };
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self.dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&record).expect("records serialize"))?;
        std::fs::rename(&tmp, self.record_path(name))
    }

    /// Removes the records PostgreSQL no longer needs: those of segments
    /// before `current` (it archives in order), and temporary files.
    fn prune(&self, current: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") || name < current {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// [`wal_push`] of `path`, answering from the spool when a parallel push
/// already stored it, and pushing the next ready segments along with it
/// (see the module docs). Other files, and files outside a `pg_wal`, are
/// pushed alone.
pub async fn wal_push_ahead(
    store: Arc<dyn ObjectStore>,
    path: &Path,
    opts: &WalPushOptions,
    ahead: &ArchiveAhead,
) -> Result<WalPushOutcome, EngineError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_string();
    let segment = matches!(ArchivedFile::parse(&name), Ok(ArchivedFile::Segment(_)));
    let pg_wal = match pg_wal_of(path) {
        Some(dir) if segment && ahead.parallel > 1 => dir,
        _ => return wal_push(store, path, opts).await,
    };
    crate::prefetch::clear_abandoned(&pg_wal);
    let spool = Spool {
        dir: pg_wal.join(SPOOL_DIR),
        repository: ahead.repository.clone(),
    };
    spool.prune(&name);
    if let Some(record) = spool.read(&name, path) {
        let key = pgark_catalog::wal_key(&ArchivedFile::parse(&name).expect("checked above"));
        if pgark_store::ObjectStoreExt::exists(&*store, &key).await? {
            return Ok(WalPushOutcome {
                file: ArchivedFile::parse(&name).expect("checked above"),
                key,
                status: WalPushStatus::ArchivedAhead,
                original_len: record.size,
                stored_len: 0,
                digest: parse_digest(&record.digest),
            });
        }
        tracing::warn!(
            "the spool says {name} was archived ahead, but the repository does not hold {key}: archiving it again"
        );
    }
    let _ = std::fs::remove_file(spool.record_path(&name));

    let ahead_names: Vec<String> = ready_after(&pg_wal, &name, ahead.parallel.saturating_sub(1) * 4)
        .into_iter()
        .filter(|n| spool.read(n, &pg_wal.join(n)).is_none())
        .take(ahead.parallel - 1)
        .collect();
    let own = wal_push(store.clone(), path, opts);
    let others = futures::stream::iter(ahead_names.into_iter().map(|n| {
        let store = store.clone();
        let spool = &spool;
        let file = pg_wal.join(&n);
        async move {
            match wal_push(store, &file, opts).await {
                Ok(outcome) => {
                    if let Err(e) = spool.write(&n, &file, &outcome) {
                        tracing::warn!("could not record {n} in the spool: {e}");
                    }
                }
                // PostgreSQL will ask for it, and the push is tried again.
                Err(e) => tracing::warn!("archiving {n} ahead failed: {e}"),
            }
        }
    }))
    .buffer_unordered(ahead.parallel.max(1))
    .collect::<Vec<()>>();
    let (result, _) = futures::join!(own, others);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_segments_after_the_current_one_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let status = dir.path().join("archive_status");
        std::fs::create_dir(&status).unwrap();
        for n in [
            "000000010000000000000005.ready",
            "000000010000000000000003.ready",
            "000000010000000000000002.done",
            "000000010000000000000004.ready",
            "00000002.history.ready",
            "000000010000000000000001.ready",
        ] {
            std::fs::write(status.join(n), b"").unwrap();
        }
        assert_eq!(
            pg_wal_of(&dir.path().join("000000010000000000000002")).as_deref(),
            Some(dir.path())
        );
        assert_eq!(
            ready_after(dir.path(), "000000010000000000000002", 2),
            vec!["000000010000000000000003", "000000010000000000000004"]
        );
        assert!(pg_wal_of(Path::new("/nonexistent/000000010000000000000002")).is_none());
    }

    #[test]
    fn records_hold_only_for_the_same_file_and_repository() {
        let dir = tempfile::tempdir().unwrap();
        let seg = dir.path().join("000000010000000000000003");
        std::fs::write(&seg, vec![1u8; 100]).unwrap();
        let spool = Spool {
            dir: dir.path().join(SPOOL_DIR),
            repository: "/repo/a".into(),
        };
        let outcome = WalPushOutcome {
            file: ArchivedFile::parse("000000010000000000000003").unwrap(),
            key: pgark_catalog::wal_key(&ArchivedFile::parse("000000010000000000000003").unwrap()),
            status: WalPushStatus::Stored,
            original_len: 100,
            stored_len: 10,
            digest: ContentDigest::of(DigestAlgorithm::Blake3, b"x"),
        };
        spool.write("000000010000000000000003", &seg, &outcome).unwrap();
        let record = spool.read("000000010000000000000003", &seg).unwrap();
        assert_eq!(parse_digest(&record.digest), outcome.digest);
        let other_repo = Spool {
            dir: spool.dir.clone(),
            repository: "/repo/b".into(),
        };
        assert!(other_repo.read("000000010000000000000003", &seg).is_none());
        // The same name, another file (a new inode).
        std::fs::remove_file(&seg).unwrap();
        std::fs::write(&seg, vec![2u8; 100]).unwrap();
        assert!(spool.read("000000010000000000000003", &seg).is_none());
        // Pruned once PostgreSQL asks for a later segment.
        std::fs::write(spool.dir.join("000000010000000000000009.tmp"), b"x").unwrap();
        spool.prune("000000010000000000000004");
        assert_eq!(std::fs::read_dir(&spool.dir).unwrap().count(), 0);
    }
}
