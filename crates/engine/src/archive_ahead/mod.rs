//! Archiving ahead of PostgreSQL's archiver: `wal-push --archive-parallel N`.
//!
//! PostgreSQL's archiver runs `archive_command` for one file at a time and
//! waits for it, so a queue of ready WAL drains no faster than one
//! compression after another. When PostgreSQL asks for segment X of a
//! running server and more segments are ready after it, `wal-push` starts
//! the background archiver of that `pg_wal` (one detached `pgark` process,
//! [`run_archiver`]), which pushes the ready segments, oldest first, N at a
//! time, and records each one durably stored in the spool,
//! `pg_wal/pgark-archived/<name>`, while `wal-push` pushes X itself.
//! PostgreSQL's next calls find their segment recorded, check the record
//! (below) and return at once; a call whose segment the archiver is pushing
//! at that moment waits for it. Where no archiver can run (no live
//! postmaster for that `pg_wal`: a call by hand), `wal-push` pushes up to
//! N - 1 ready segments in parallel with X itself, and records them the
//! same way.
//!
//! # Contract
//! - A segment is reported archived (exit 0) only once it is durably in
//!   the repository: a record is written after its push returned, and a
//!   record is believed only when the file it names is the same file (size,
//!   modification time, inode), the record is of this repository, and the
//!   repository has the object (one existence check). Otherwise it is
//!   ignored with a warning and the segment pushed as usual.
//! - One push per segment at a time: whoever pushes a segment (a `wal-push`
//!   or the archiver) holds its claim, a `flock` on `<name>.busy` that ends
//!   with its process, kill -9 included. A `wal-push` whose segment is
//!   claimed waits for its record, or for the claim to end and then pushes
//!   it itself (the archiver failed or was killed); after 60 s it pushes it
//!   anyway (a stuck holder). A file system that cannot `flock` turns the
//!   spool off: every segment is pushed as it is asked for.
//! - PostgreSQL alone renames `.ready` to `.done`; pgark never touches
//!   `archive_status/`.
//! - A crash or kill -9 at any point leaves at worst a record missing (the
//!   segment is pushed again, which the duplicate check turns into a
//!   no-op), an unlocked claim file (ignored, and removed once PostgreSQL is
//!   past it) or a record's temporary file (`*.tmp`, removed after a
//!   minute); never a record of a segment that is not stored.
//! - The spool is bounded: records of segments older than the one
//!   PostgreSQL asks for are removed (it archives in order), the archiver
//!   keeps at most [`worker::MAX_AHEAD`] (64) records ahead of PostgreSQL, and at most N
//!   pushes run at once in it.
//! - The archiver ends when no ready segment is left to push for
//!   [`ARCHIVER_IDLE`] (5 s), when its server stops (its pushes in flight get
//!   [`worker::FINISH_LIMIT`] (30 s) to finish), when `pg_wal` is gone, or after
//!   [`worker::MAX_FAILURES_IN_A_ROW`] (3) failed pushes (the next `wal-push` reports the
//!   failure to PostgreSQL, and starts another archiver). It exits 0 on
//!   every path, and its warnings go to the server's log.
//! - History, backup-history and partial files are never pushed ahead.

mod spool;
mod worker;

pub use spool::SPOOL_DIR;
pub use worker::{run_archiver, ARCHIVER_IDLE};

use crate::wal_push::{wal_push, WalPushOptions, WalPushOutcome, WalPushStatus};
use crate::EngineError;
use futures::StreamExt;
use pgark_codec::{ContentDigest, DigestAlgorithm};
use pgark_pg::ArchivedFile;
use pgark_store::ObjectStore;
use spool::{is_segment, Spool};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Starts the background archiver, handing it the spool's lock (held by
/// the caller, who lets go of it once this returns).
pub type StartArchiver = Arc<dyn Fn(&std::fs::File) -> std::io::Result<()> + Send + Sync>;

/// How often a `wal-push` whose segment another process is pushing looks
/// again.
const CLAIM_POLL: Duration = Duration::from_millis(5);
/// How long it waits for that process before it pushes the segment itself
/// anyway (a stuck holder: pushes are idempotent).
const CLAIM_WAIT_MAX: Duration = Duration::from_secs(60);

/// How [`wal_push_ahead`] archives.
#[derive(Clone)]
pub struct ArchiveAhead {
    /// Segments pushed at once, the one asked for included (1: none ahead,
    /// and no archiver).
    pub parallel: usize,
    /// Identifies the repository in the records (its URL).
    pub repository: String,
    /// Starts the background archiver; `None` pushes ahead in this process.
    pub start_archiver: Option<StartArchiver>,
}

impl std::fmt::Debug for ArchiveAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveAhead")
            .field("parallel", &self.parallel)
            .field("repository", &self.repository)
            .field("start_archiver", &self.start_archiver.is_some())
            .finish()
    }
}

/// The `pg_wal` holding `path`, when it is one: its directory has
/// `archive_status/`.
pub fn pg_wal_of(path: &Path) -> Option<PathBuf> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    dir.join("archive_status").is_dir().then(|| dir.to_path_buf())
}

/// The background archiver's lock of `pg_wal`, as the archiver process
/// holds it: passed on by the `wal-push` that started it, or else taken now
/// (see `spool_lock::adopt_lock`; only for that process). `None` when
/// another archiver holds it.
pub fn adopt_archiver_lock(pg_wal: &Path) -> Option<std::fs::File> {
    crate::spool_lock::adopt_lock(&Spool::new(pg_wal, "").lock_path())
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

/// The spool of the `pg_wal` holding `path`, when `path` is a segment there
/// and archiving ahead is on.
fn spool_for(path: &Path, ahead: &ArchiveAhead) -> Option<(String, Spool)> {
    let name = path.file_name()?.to_str()?.to_string();
    if ahead.parallel <= 1 || !is_segment(&name) {
        return None;
    }
    let pg_wal = pg_wal_of(path)?;
    if !crate::spool_lock::owns(&pg_wal) {
        return None;
    }
    Some((name, Spool::new(&pg_wal, &ahead.repository)))
}

/// The answer for `path` when an earlier push recorded it in the spool and
/// the repository holds it: nothing is read or written then. `Ok(None)`
/// when it has to be pushed. Removes the records PostgreSQL is past.
pub async fn archived_ahead(
    store: &dyn ObjectStore,
    path: &Path,
    ahead: &ArchiveAhead,
) -> Result<Option<WalPushOutcome>, EngineError> {
    let Some((name, spool)) = spool_for(path, ahead) else {
        return Ok(None);
    };
    spool.prune(&name);
    recorded(store, &spool, &name, path).await
}

async fn recorded(
    store: &dyn ObjectStore,
    spool: &Spool,
    name: &str,
    path: &Path,
) -> Result<Option<WalPushOutcome>, EngineError> {
    let Some(record) = spool.read(name, path) else {
        return Ok(None);
    };
    let file = ArchivedFile::parse(name).expect("only segments have records");
    let key = pgark_catalog::wal_key(&file);
    if pgark_store::ObjectStoreExt::exists(store, &key).await? {
        return Ok(Some(WalPushOutcome {
            file,
            key,
            status: WalPushStatus::ArchivedAhead,
            original_len: record.size,
            stored_len: 0,
            digest: parse_digest(&record.digest),
        }));
    }
    tracing::warn!(
        "the spool says {name} was archived ahead, but the repository does not hold {key}: archiving it again"
    );
    let _ = std::fs::remove_file(spool.record_path(name));
    Ok(None)
}

/// [`wal_push`] of `path`, answering from the spool when a parallel push
/// already stored it, and archiving the next ready segments along with it
/// (see the module docs). Other files, and files outside a `pg_wal`, are
/// pushed alone.
pub async fn wal_push_ahead(
    store: Arc<dyn ObjectStore>,
    path: &Path,
    opts: &WalPushOptions,
    ahead: &ArchiveAhead,
) -> Result<WalPushOutcome, EngineError> {
    let Some((name, spool)) = spool_for(path, ahead) else {
        return wal_push(store, path, opts).await;
    };
    crate::prefetch::clear_abandoned(&spool.pg_wal);
    spool.prune(&name);
    let waiting_since = std::time::Instant::now();
    let claim = loop {
        if waiting_since.elapsed() > CLAIM_WAIT_MAX {
            tracing::warn!(
                "{name} has been claimed by another pgark process for {}: pushing it without waiting more",
                pgark_store::format_duration(CLAIM_WAIT_MAX)
            );
            break None;
        }
        match spool.claim(&name) {
            Ok(Some(claim)) => {
                // A holder that just finished recorded it before letting go.
                if let Some(out) = recorded(&*store, &spool, &name, path).await? {
                    return Ok(out);
                }
                break Some(claim);
            }
            Ok(None) => {
                if let Some(out) = recorded(&*store, &spool, &name, path).await? {
                    return Ok(out);
                }
                tokio::time::sleep(CLAIM_POLL).await;
            }
            Err(e) => {
                tracing::warn!("cannot use the spool in {}: {e}", spool.dir.display());
                break None;
            }
        }
    };
    let Some(claim) = claim else {
        return wal_push(store, path, opts).await;
    };

    // The rest of the queue: to the archiver, or pushed here.
    let mut here = Vec::new();
    let more = spool.unrecorded_after(&name, (ahead.parallel - 1) * 4);
    if !more.is_empty() && !archiver_runs(&spool, ahead) {
        for n in more {
            if here.len() + 1 >= ahead.parallel {
                break;
            }
            if let Ok(Some(c)) = spool.claim(&n) {
                if spool.read(&n, &spool.pg_wal.join(&n)).is_none() {
                    here.push((n, c));
                }
            }
        }
    }
    let own = wal_push(store.clone(), path, opts);
    let others = futures::stream::iter(here.into_iter().map(|(n, c)| {
        let store = store.clone();
        let spool = &spool;
        let file = spool.pg_wal.join(&n);
        async move {
            match wal_push(store, &file, opts).await {
                Ok(outcome) => record(spool, &n, &file, &outcome),
                // PostgreSQL will ask for it, and the push is tried again.
                Err(e) => tracing::warn!("archiving {n} ahead failed: {e}"),
            }
            drop(c);
        }
    }))
    .buffer_unordered(ahead.parallel.max(1))
    .collect::<Vec<()>>();
    let (result, _) = futures::join!(own, others);
    if let Ok(outcome) = &result {
        // So that the archiver does not push it again before PostgreSQL
        // marks it done.
        record(&spool, &name, path, outcome);
    }
    drop(claim);
    result
}

fn record(spool: &Spool, name: &str, path: &Path, outcome: &WalPushOutcome) {
    if let Err(e) = spool.write(name, path, outcome) {
        tracing::warn!("could not record {name} in the spool: {e}");
    }
}

/// Whether the background archiver runs for `spool` now: one was running
/// already, or one was just started. `false` when none can run (no
/// starter, no live server for this `pg_wal`, or it could not start).
fn archiver_runs(spool: &Spool, ahead: &ArchiveAhead) -> bool {
    let Some(start) = &ahead.start_archiver else {
        return false;
    };
    match spool.running_postmaster() {
        // A postmaster that is PID 1 (a container's command) reaps orphans
        // and takes a process killed by a signal for a crashed backend:
        // nothing detached there.
        None | Some(1) => return false,
        Some(_) => {}
    }
    match spool.try_lock() {
        // Held: an archiver runs.
        Ok(None) => true,
        Ok(Some(lock)) => match start(&lock) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!("could not start the background archiver: {e}");
                false
            }
        },
        Err(e) => {
            tracing::warn!(
                "cannot lock {}: {e}; archiving ahead in this process",
                spool.lock_path().display()
            );
            false
        }
    }
}

#[cfg(test)]
mod tests;
