//! Prefetching for recovery: `wal-fetch --fetch-parallel N`.
//!
//! PostgreSQL's startup process runs `restore_command` for one segment at a
//! time and replays it before it asks for the next one, so a recovery that
//! fetches every segment from the repository waits one round trip (and one
//! decompression) per segment. When `wal-fetch` hands PostgreSQL a segment
//! that `%p` places in a `pg_wal`, it also makes sure one prefetcher runs
//! for that `pg_wal`: a detached `pgark` process that downloads the next
//! segments of the same timeline (up to `2 N` ahead of the last one handed
//! over, `N` at a time) into the spool, `pg_wal/pgark-prefetch/`, while
//! PostgreSQL replays. The next `wal-fetch` finds its segment there and
//! hands it over by a rename, without contacting the repository.
//!
//! # Contract
//! - A segment reaches the spool only verified: it is decoded, checked
//!   against the digest stored with its object, written to a temporary file,
//!   fsynced and renamed into place ([`crate::wal_fetch`] does this), and
//!   only then is its record (`<name>.rec`: repository, size) written.
//!   `wal-fetch` hands a spool file over only when its record names the
//!   same repository and size; otherwise it fetches from the repository as
//!   usual.
//! - Archived segments never change under their name (wal-push refuses
//!   different content), so a verified copy is as good as the object.
//! - Bounded: at most `2 N` segments in the spool, `N` downloads at once.
//!   Segments before the last one handed over, and those of other
//!   timelines, are removed as soon as the prefetcher sees them.
//! - Timeline switches: the prefetcher follows the timeline of the last
//!   segment handed over. When PostgreSQL asks for a segment of a newer
//!   timeline, `wal-fetch` gets it from the repository, and the prefetcher
//!   drops the old timeline's files and fetches ahead on the new one.
//! - It ends when its server has stopped (`postmaster.pid`'s process is
//!   gone), when its `pg_wal` is gone, or after 10 s without a request, and
//!   removes its spool files as it ends. What a kill -9 leaves (spool files,
//!   `*.pgark-tmp` temporary files) is removed by the next prefetcher when it
//!   starts, and is never handed over without its record.
//! - The spool directory and its `lock` file stay in `pg_wal`; PostgreSQL
//!   ignores directories there, and base backups do not copy `pg_wal`'s
//!   contents.

mod worker;

pub use worker::run_prefetcher;

use crate::wal_fetch::{check_until, refuse_tablespace_create, WalFetchOptions, WalFetchOutcome};
use crate::EngineError;
use pgark_catalog::wal_key;
use pgark_pg::{ArchivedFile, WalSegmentName, WalSegmentSize};
use serde::{Deserialize, Serialize};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The spool's directory name, inside `pg_wal`.
pub const PREFETCH_DIR: &str = "pgark-prefetch";

/// How long a prefetcher waits for a new request before it ends.
pub const PREFETCH_IDLE: std::time::Duration = std::time::Duration::from_secs(10);

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
    /// The spool for a `restore_command` destination, when `%p` is in a
    /// `pg_wal` (its directory has `archive_status/`); `None` otherwise.
    pub fn for_dest(dest: &Path, repository: &str) -> Option<FetchSpool> {
        let pg_wal = crate::archive_ahead::pg_wal_of(dest)?;
        Some(FetchSpool {
            dir: pg_wal.join(PREFETCH_DIR),
            pg_wal,
            repository: repository.to_string(),
        })
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
        std::fs::create_dir_all(&self.dir).ok()?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join(LOCK_FILE))
            .ok()?;
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        (rc == 0).then_some(file)
    }

    /// Whether a prefetcher is running for this spool.
    pub fn prefetcher_running(&self) -> bool {
        self.try_lock().is_none()
    }

    /// Waits up to `limit` for the prefetcher of this spool, if one runs,
    /// to end (restore-test, before it removes its scratch directory).
    pub fn wait_for_prefetcher(&self, limit: std::time::Duration) -> bool {
        if !self.dir.is_dir() {
            return true;
        }
        let deadline = std::time::Instant::now() + limit;
        loop {
            if self.try_lock().is_some() {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    /// The data directory's `postmaster.pid` process, when `pg_wal` is
    /// named so (its parent taken by name, not through a symbolic link).
    fn postmaster_pid(&self) -> Option<i32> {
        if self.pg_wal.file_name()? != "pg_wal" {
            return None;
        }
        let data = match self.pg_wal.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let text = std::fs::read_to_string(data.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

/// Removes what a killed prefetcher left in `pg_wal`'s spool, when no
/// prefetcher runs there (wal-push calls it: the archiver runs on the
/// server a recovery promoted).
pub(crate) fn clear_abandoned(pg_wal: &Path) {
    let spool = FetchSpool {
        dir: pg_wal.join(PREFETCH_DIR),
        pg_wal: pg_wal.to_path_buf(),
        repository: String::new(),
    };
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

/// Whether the process `pid` exists.
fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests;
