//! Prefetching for recovery: `wal-fetch --fetch-parallel N`.
//!
//! PostgreSQL's startup process runs `restore_command` for one segment at a
//! time and replays it before it asks for the next one, so a recovery that
//! fetches every segment from the repository waits one round trip (and one
//! decompression) per segment. When `wal-fetch` hands a running server's
//! recovery a segment (`%p` is `pg_wal/RECOVERYXLOG` and `postmaster.pid`
//! names a live process), it also makes sure one prefetcher runs for that
//! `pg_wal`: a detached `pgark` process that downloads the next segments of
//! the same timeline (up to `2 N` ahead of the last one handed over, `N` at
//! a time, at most 256 MiB) into the spool, `pg_wal/pgark-prefetch/`, while
//! PostgreSQL replays. The next `wal-fetch` finds its segment there and
//! hands it over by a rename, without contacting the repository.
//!
//! # Contract
//! - A segment reaches the spool only verified: it is decoded, checked
//!   against the digest stored with its object, written to a temporary file,
//!   fsynced and renamed into place ([`crate::wal_fetch`] does this), and
//!   only then is its record (`<name>.rec`: repository, size) written.
//! - `wal-fetch` hands a spool file over only while a prefetcher holds the
//!   spool's lock (so only what the running prefetcher, started by this
//!   recovery's `restore_command`, verified), and only when its record names
//!   the same repository and size; otherwise it fetches from the
//!   repository as usual. Archived segments never change under their name
//!   (wal-push refuses different content).
//! - Bounded: at most `2 N` segments and 256 MiB in the spool (at least
//!   2 segments), plus the `N` being downloaded; no download starts while
//!   `pg_wal`'s file system has less than 1 GiB free beyond them. Segments
//!   before the last one handed over, and those of other timelines, are
//!   removed as soon as the prefetcher sees them.
//! - Timeline switches: the prefetcher follows the timeline of the last
//!   segment handed over. When PostgreSQL asks for a segment of a newer
//!   timeline, `wal-fetch` gets it from the repository, and the prefetcher
//!   drops the old timeline's files and fetches ahead on the new one.
//! - It ends, removing its files, when its server has stopped
//!   (`postmaster.pid`'s process is gone: downloads in flight are
//!   abandoned), when recovery is over (neither `recovery.signal` nor
//!   `standby.signal` is left), when its `pg_wal` is gone, or after 5
//!   minutes without a new segment handed over. A new prefetcher removes
//!   whatever an earlier one left (a kill -9), before it fetches anything.
//! - The spool directory and its `lock` file stay in `pg_wal`; PostgreSQL
//!   ignores directories there, and base backups do not copy `pg_wal`'s
//!   contents.

mod worker;

pub use worker::run_prefetcher;

use crate::spool_lock::alive;
use crate::wal_fetch::{check_until, refuse_tablespace_create, WalFetchOptions, WalFetchOutcome};
use crate::EngineError;
use pgark_catalog::wal_key;
use pgark_pg::{ArchivedFile, WalSegmentName, WalSegmentSize};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The spool's directory name, inside `pg_wal`.
pub const PREFETCH_DIR: &str = "pgark-prefetch";

/// How long a prefetcher waits for a new segment to be handed over before
/// it ends (the last resort: it normally ends with its recovery).
pub const PREFETCH_IDLE: std::time::Duration = std::time::Duration::from_secs(300);

/// The most the spool holds, in bytes (at least two segments).
pub const SPOOL_MAX_BYTES: u64 = 256 << 20;

/// Free space kept in `pg_wal`'s file system beyond the downloads.
pub const FREE_SPACE_RESERVE: u64 = 1 << 30;

/// The name PostgreSQL gives `%p` when recovery restores a file.
const RECOVERY_FILE: &str = "RECOVERYXLOG";

const LOCK_FILE: &str = "lock";

const WANT_FILE: &str = "want";
const RECORD_SUFFIX: &str = ".rec";

/// What the prefetcher recorded about a segment in the spool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    /// The repository it came from (its URL as given).
    repository: String,
    size: u64,
    /// The digest of its content, as verified against the object.
    digest: String,
}

/// The prefetch spool of one `pg_wal`.
#[derive(Debug, Clone)]
pub struct FetchSpool {
    pg_wal: PathBuf,
    dir: PathBuf,
    repository: String,
}

impl FetchSpool {
    /// The spool for a `restore_command` destination when it is a running
    /// server's recovery: `%p` is `pg_wal/RECOVERYXLOG` (PostgreSQL's name;
    /// pg_rewind and other callers name the segment itself) and the data
    /// directory's `postmaster.pid` names a live process. `None` otherwise:
    /// no prefetching.
    pub fn for_recovery(dest: &Path, repository: &str) -> Option<FetchSpool> {
        if dest.file_name()? != RECOVERY_FILE {
            return None;
        }
        let spool = Self::of_pg_wal(&crate::archive_ahead::pg_wal_of(dest)?, repository);
        spool.postmaster_pid().filter(|pid| alive(*pid))?;
        Some(spool)
    }

    fn of_pg_wal(pg_wal: &Path, repository: &str) -> FetchSpool {
        FetchSpool {
            dir: pg_wal.join(PREFETCH_DIR),
            pg_wal: pg_wal.to_path_buf(),
            repository: repository.to_string(),
        }
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn record_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}{RECORD_SUFFIX}"))
    }

    fn read_record(&self, name: &str) -> Option<Record> {
        let text = std::fs::read(self.record_path(name)).ok()?;
        match serde_json::from_slice::<Record>(&text) {
            Ok(r) if r.repository == self.repository => Some(r),
            Ok(r) => {
                tracing::warn!(
                    "ignoring the prefetched {name}: it came from {}, not {}",
                    r.repository,
                    self.repository
                );
                None
            }
            Err(e) => {
                tracing::warn!("ignoring the prefetched {name}: unreadable record: {e}");
                None
            }
        }
    }

    fn write_record(&self, name: &str, outcome: &WalFetchOutcome) -> std::io::Result<()> {
        let record = Record {
            repository: self.repository.clone(),
            size: outcome.original_len,
            digest: outcome.digest.to_string(),
        };
        let tmp = self.dir.join(format!(".{name}{RECORD_SUFFIX}.pgark-tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&record).expect("records serialize"))?;
        std::fs::rename(&tmp, self.record_path(name))
    }

    /// Hands the prefetched `name` over to `dest` (a rename), after the
    /// same checks [`crate::wal_fetch`] makes (`until`, tablespaces).
    /// `Ok(None)` when the spool does not hold it, or holds it without a
    /// record that agrees: the caller fetches it from the repository.
    pub fn take(
        &self,
        name: &str,
        dest: &Path,
        opts: &WalFetchOptions,
    ) -> Result<Option<WalFetchOutcome>, EngineError> {
        let Ok(file @ ArchivedFile::Segment(_)) = ArchivedFile::parse(name) else {
            return Ok(None);
        };
        check_until(&file, name, opts)?;
        if !self.prefetcher_running() {
            // What a prefetcher that is gone left is not trusted.
            return Ok(None);
        }
        let path = self.dir.join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            return Ok(None);
        };
        let Some(record) = self.read_record(name) else {
            return Ok(None);
        };
        if record.size != meta.len() {
            tracing::warn!(
                "ignoring the prefetched {name}: {} bytes, its record says {}",
                meta.len(),
                record.size
            );
            return Ok(None);
        }
        if let Err(e) = std::fs::rename(&path, dest) {
            tracing::warn!("could not hand over the prefetched {name}: {e}");
            return Ok(None);
        }
        let _ = std::fs::remove_file(self.record_path(name));
        if opts.refuse_tablespace_create {
            if let ArchivedFile::Segment(seg) = &file {
                if let Err(e) = refuse_tablespace_create(seg, dest) {
                    let _ = std::fs::remove_file(dest);
                    return Err(e);
                }
            }
        }
        Ok(Some(WalFetchOutcome {
            key: wal_key(&file),
            file,
            original_len: record.size,
            digest: crate::archive_ahead::parse_digest(&record.digest),
        }))
    }

    /// Tells the prefetcher that PostgreSQL now replays `name`, a segment
    /// of `size` bytes: it fetches the segments after it. Atomic (a
    /// temporary file renamed); a failure only costs the prefetching.
    pub fn want(&self, name: &str, size: u64) {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let tmp = self
                .dir
                .join(format!(".{WANT_FILE}.{}.pgark-tmp", std::process::id()));
            std::fs::write(&tmp, format!("{name} {size}\n"))?;
            std::fs::rename(&tmp, self.dir.join(WANT_FILE))
        };
        if let Err(e) = write() {
            tracing::warn!("could not tell the prefetcher in {}: {e}", self.dir.display());
        }
    }

    /// The segment PostgreSQL replays now, and the segment size.
    fn wanted(&self) -> Option<(WalSegmentName, WalSegmentSize)> {
        let text = std::fs::read_to_string(self.dir.join(WANT_FILE)).ok()?;
        let (name, size) = text.trim().split_once(' ')?;
        let name = WalSegmentName::parse(name).ok()?;
        let size = WalSegmentSize::new(size.parse().ok()?).ok()?;
        Some((name, size))
    }

    /// Takes the spool's lock without waiting: `Some` when no prefetcher
    /// holds it. The lock is held until the returned file is dropped.
    pub fn try_lock(&self) -> Option<std::fs::File> {
        crate::spool_lock::try_lock(&self.dir.join(LOCK_FILE))
    }

    /// The spool's lock as a new prefetcher process holds it (see
    /// [`crate::spool_lock`]): only for the prefetcher process itself.
    pub fn adopt_lock(&self) -> Option<std::fs::File> {
        crate::spool_lock::adopt_lock(&self.dir.join(LOCK_FILE))
    }

    /// Whether a prefetcher is running for this spool.
    pub fn prefetcher_running(&self) -> bool {
        self.try_lock().is_none()
    }

    /// The data directory, when `pg_wal` is named so.
    fn data_dir(&self) -> Option<PathBuf> {
        crate::spool_lock::data_dir_of(&self.pg_wal)
    }

    /// The postmaster's process id from `postmaster.pid`.
    fn postmaster_pid(&self) -> Option<i32> {
        crate::spool_lock::postmaster_pid(&self.pg_wal)
    }

    /// Whether the server is still in recovery: it removes its signal
    /// files when recovery ends.
    fn in_recovery(&self) -> bool {
        self.data_dir()
            .is_some_and(|d| d.join("recovery.signal").exists() || d.join("standby.signal").exists())
    }
}

/// Waits up to `limit` for the prefetcher of `pg_wal`, if one runs, to end
/// (restore-test, before it removes its scratch directory).
pub fn wait_for_prefetcher(pg_wal: &Path, limit: std::time::Duration) -> bool {
    let spool = FetchSpool::of_pg_wal(pg_wal, "");
    if !spool.dir.is_dir() {
        return true;
    }
    let deadline = std::time::Instant::now() + limit;
    loop {
        if spool.try_lock().is_some() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Removes what a killed prefetcher left in `pg_wal`'s spool, when the
/// server is not in recovery and no prefetcher runs there (wal-push calls
/// it: the archiver runs on the server a recovery promoted).
pub(crate) fn clear_abandoned(pg_wal: &Path) {
    let spool = FetchSpool::of_pg_wal(pg_wal, "");
    if spool.in_recovery() {
        // A standby archiving (archive_mode = always): its prefetcher may
        // be starting.
        return;
    }
    let Ok(mut entries) = std::fs::read_dir(&spool.dir) else {
        return;
    };
    let only_lock = entries.all(|e| e.is_ok_and(|e| e.file_name() == LOCK_FILE));
    if only_lock {
        return;
    }
    if let Some(_lock) = spool.try_lock() {
        worker::clear(&spool, true);
    }
}

#[cfg(test)]
mod tests;
