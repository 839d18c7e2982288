//! The archiving spool, `pg_wal/pgark-archived/`: a record per segment
//! durably stored ahead of PostgreSQL's archiver, a claim per segment being
//! pushed, and the lock of the background archiver.

use crate::wal_push::WalPushOutcome;
use pgark_pg::ArchivedFile;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The spool's directory name, inside `pg_wal`.
pub const SPOOL_DIR: &str = "pgark-archived";

/// The background archiver's lock file, in the spool.
const LOCK_FILE: &str = "lock";
/// A claim on a segment: `<name>.busy`, locked by the process pushing it.
const CLAIM_SUFFIX: &str = ".busy";
const TMP_SUFFIX: &str = ".tmp";

/// What a record says about a segment pushed ahead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Record {
    /// The repository it was stored in (its URL as given).
    pub repository: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub inode: u64,
    /// The content digest the push recorded.
    pub digest: String,
}

fn stat(path: &Path) -> std::io::Result<(u64, i64, u64)> {
    let meta = std::fs::metadata(path)?;
    Ok((
        meta.len(),
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        meta.ino(),
    ))
}

/// Whether `name` is a WAL segment's name (the only files pushed ahead).
pub(super) fn is_segment(name: &str) -> bool {
    matches!(ArchivedFile::parse(name), Ok(ArchivedFile::Segment(_)))
}

/// The spool of one `pg_wal`.
pub(super) struct Spool {
    pub pg_wal: PathBuf,
    pub dir: PathBuf,
    pub repository: String,
}

/// A claim on one segment: while it is held, nobody else pushes that
/// segment. A `flock` on `<name>.busy`, so it ends with its process, kill -9
/// included; the file is removed when the claim is dropped.
pub(super) struct Claim {
    path: PathBuf,
    file: File,
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Only the file this claim locked (another may have replaced it
        // after a crash left an unlocked one).
        if same_file(&self.path, &self.file) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn same_file(path: &Path, file: &File) -> bool {
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

impl Spool {
    pub fn new(pg_wal: &Path, repository: &str) -> Spool {
        Spool {
            pg_wal: pg_wal.to_path_buf(),
            dir: pg_wal.join(SPOOL_DIR),
            repository: repository.to_string(),
        }
    }

    pub fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }

    /// The record of `name` when it holds for the file at `path`; `None`
    /// when there is none or it does not hold (said in a warning).
    pub fn read(&self, name: &str, path: &Path) -> Option<Record> {
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

    /// Whether a record of `name` exists (not checked: for counting).
    pub fn has_record(&self, name: &str) -> bool {
        self.record_path(name).is_file()
    }

    /// Records `name` as durably stored (atomically: a temporary file
    /// renamed; not synced, since a lost record only costs a second push).
    /// Call only once the push returned.
    pub fn write(&self, name: &str, path: &Path, outcome: &WalPushOutcome) -> std::io::Result<()> {
        let (size, mtime_ns, inode) = stat(path)?;
        let record = Record {
            repository: self.repository.clone(),
            size,
            mtime_ns,
            inode,
            digest: outcome.digest.to_string(),
        };
        std::fs::create_dir_all(&self.dir)?;
        let tmp = self
            .dir
            .join(format!("{name}.{}{TMP_SUFFIX}", std::process::id()));
        std::fs::write(&tmp, serde_json::to_vec(&record).expect("records serialize"))?;
        std::fs::rename(&tmp, self.record_path(name))
    }

    /// Claims `name` for a push: `None` while a live process holds it.
    pub fn claim(&self, name: &str) -> std::io::Result<Option<Claim>> {
        std::fs::create_dir_all(&self.dir)?;
        let path = self.dir.join(format!("{name}{CLAIM_SUFFIX}"));
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)?;
            if !crate::spool_lock::flock_now(&file)? {
                return Ok(None);
            }
            // Its holder may have removed the file between our open and our
            // lock: the claim is the file at the path now, so try again.
            if same_file(&path, &file) {
                return Ok(Some(Claim { path, file }));
            }
        }
    }

    /// Removes what PostgreSQL no longer needs, when it asks for `current`
    /// (it archives segments in order): records of earlier segments,
    /// claims nobody holds of earlier segments, and temporary files left by
    /// a process that was killed (older than a minute).
    pub fn prune(&self, current: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if file_name.ends_with(TMP_SUFFIX) {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|age| age.as_secs() > 60));
                if old {
                    let _ = std::fs::remove_file(entry.path());
                }
            } else if let Some(segment) = file_name.strip_suffix(CLAIM_SUFFIX) {
                if segment < current {
                    // Dropping the claim removes the file.
                    let _ = self.claim(segment);
                }
            } else if is_segment(file_name) && file_name < current {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// The records in the spool of segments from `current` on: those
    /// PostgreSQL has yet to ask for.
    pub fn records_from(&self, current: &str) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| is_segment(n) && n >= current)
            })
            .count()
    }

    /// The segments PostgreSQL has marked ready, in the order it asks for
    /// them (history, backup-history and partial files excluded).
    pub fn ready(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.pg_wal.join("archive_status")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_suffix(".ready").map(str::to_string))
            .filter(|n| is_segment(n))
            .collect();
        names.sort();
        names
    }

    /// Whether PostgreSQL still has `name` marked ready (not archived yet).
    pub fn is_ready(&self, name: &str) -> bool {
        self.pg_wal
            .join("archive_status")
            .join(format!("{name}.ready"))
            .exists()
    }

    /// The ready segments after `after` that no record covers yet, at most
    /// `limit`.
    pub fn unrecorded_after(&self, after: &str, limit: usize) -> Vec<String> {
        self.ready()
            .into_iter()
            .filter(|n| n.as_str() > after && !self.has_record(n))
            .take(limit)
            .collect()
    }

    /// Takes the background archiver's lock without waiting: `Ok(Some)`
    /// when no archiver runs, `Ok(None)` when one does.
    pub fn try_lock(&self) -> std::io::Result<Option<File>> {
        crate::spool_lock::try_lock_checked(&self.lock_path())
    }

    /// The postmaster of `pg_wal`'s server when it is running now.
    pub fn running_postmaster(&self) -> Option<i32> {
        crate::spool_lock::postmaster_pid(&self.pg_wal).filter(|pid| crate::spool_lock::alive(*pid))
    }
}
