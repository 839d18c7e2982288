//! The prefetcher: one detached process per `pg_wal` (see the module docs
//! of [`super`]).

use super::{
    FetchSpool, FREE_SPACE_RESERVE, LOCK_FILE, PREFETCH_IDLE, RECORD_SUFFIX, SPOOL_MAX_BYTES, WANT_FILE,
};
use crate::wal_fetch::{check_until, wal_fetch, WalFetchOptions, WalFetchOutcome};
use crate::{EngineError, ErrorClass};
use pgark_pg::{ArchivedFile, WalSegmentName, WalSegmentSize};
use pgark_store::ObjectStore;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How often the prefetcher looks for a new request.
const POLL: Duration = Duration::from_millis(25);
/// How long a segment that was not found, or failed, waits before it is
/// asked for again (the archive grows while a standby replays it): this,
/// doubled after each miss up to [`RETRY_MAX`].
const RETRY_AFTER: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(8);
/// How long the prefetcher waits for its downloads when it ends for a
/// reason other than its server stopping.
const FINISH_LIMIT: Duration = Duration::from_secs(10);
/// Failures of one segment after which the prefetcher leaves it to
/// `wal-fetch` (which reports the error to PostgreSQL).
const MAX_FAILURES: u32 = 3;

/// A segment the prefetcher could not get.
struct Miss {
    at: Instant,
    /// Misses in a row (for the backoff).
    count: u32,
    failures: u32,
    not_found: bool,
}

impl Miss {
    fn retry_after(&self) -> Duration {
        RETRY_AFTER
            .saturating_mul(1 << self.count.saturating_sub(1).min(8))
            .min(RETRY_MAX)
    }
}

/// Runs the prefetcher of `spool` until it has nothing to do (see the
/// module docs), `parallel` downloads at once and `2 * parallel` segments
/// ahead (within [`SPOOL_MAX_BYTES`]). `lock` is the spool's lock
/// ([`FetchSpool::try_lock`] or [`FetchSpool::adopt_lock`]), held until
/// this returns. Errors of single segments are logged, not returned:
/// `wal-fetch` fetches such a segment itself and reports what fails.
pub async fn run_prefetcher(
    store: Arc<dyn ObjectStore>,
    spool: FetchSpool,
    lock: std::fs::File,
    opts: WalFetchOptions,
    parallel: usize,
) -> Result<(), EngineError> {
    let _lock = lock;
    let opts = WalFetchOptions {
        // Checked when the segment is handed over.
        refuse_tablespace_create: false,
        ..opts
    };
    clear(&spool, false);
    let Some(postmaster) = spool.postmaster_pid() else {
        clear(&spool, true);
        return Ok(());
    };
    let mut want = spool.wanted();
    let mut changed = Instant::now();
    let mut tasks: JoinSet<(String, Result<WalFetchOutcome, EngineError>)> = JoinSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut misses: HashMap<String, Miss> = HashMap::new();
    let mut low_space_said = false;
    let server_gone = loop {
        if !crate::spool_lock::server_runs(&spool.pg_wal, postmaster) {
            break true;
        }
        if !spool.dir.is_dir() || !spool.in_recovery() {
            break false;
        }
        let now = spool.wanted();
        if now != want {
            want = now;
            changed = Instant::now();
        }
        if changed.elapsed() > PREFETCH_IDLE {
            break false;
        }
        let (window, segment_bytes) = match &want {
            Some((name, size)) => {
                let fits = (SPOOL_MAX_BYTES / u64::from(size.bytes())).max(2) as usize;
                (
                    window_after(name, *size, (2 * parallel).min(fits), &opts),
                    u64::from(size.bytes()),
                )
            }
            None => (Vec::new(), 0),
        };
        let parallel = parallel.min(window.len()).max(1);
        prune(&spool, &window, &in_flight);
        misses.retain(|name, _| window.contains(name));
        for name in &window {
            if in_flight.contains(name) || held(&spool, name) {
                continue;
            }
            if let Some(miss) = misses.get(name) {
                if miss.at.elapsed() < miss.retry_after()
                    || (!miss.not_found && miss.failures >= MAX_FAILURES)
                {
                    // Nothing past a gap: the archive ends here for now.
                    break;
                }
            }
            if in_flight.len() >= parallel {
                break;
            }
            let need = segment_bytes * (in_flight.len() as u64 + 1) + FREE_SPACE_RESERVE;
            if free_space(&spool.dir).is_some_and(|free| free < need) {
                if !low_space_said {
                    tracing::warn!(
                        "not prefetching: less than {} MiB free in {}",
                        need >> 20,
                        spool.dir.display()
                    );
                    low_space_said = true;
                }
                break;
            }
            low_space_said = false;
            in_flight.insert(name.clone());
            let store = store.clone();
            let dest = spool.dir.join(name);
            let opts = opts.clone();
            let name = name.clone();
            tasks.spawn(async move {
                let result = wal_fetch(store, &name, &dest, &opts).await;
                (name, result)
            });
        }
        tokio::select! {
            Some(joined) = tasks.join_next() => {
                let Ok((name, result)) = joined else { continue };
                in_flight.remove(&name);
                finish(&spool, &name, result, &mut misses);
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    };
    if server_gone {
        // Nobody will ask for them: stop at once.
        tasks.abort_all();
    }
    let _ = tokio::time::timeout(FINISH_LIMIT, async { while tasks.join_next().await.is_some() {} }).await;
    clear(&spool, true);
    Ok(())
}

/// Free bytes for an unprivileged user in the file system of `dir`.
fn free_space(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs into a zeroed struct, with a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Records a finished download, or remembers its failure.
fn finish(
    spool: &FetchSpool,
    name: &str,
    result: Result<WalFetchOutcome, EngineError>,
    misses: &mut HashMap<String, Miss>,
) {
    match result {
        Ok(outcome) => {
            if let Err(e) = spool.write_record(name, &outcome) {
                tracing::warn!("could not record the prefetched {name}: {e}");
                let _ = std::fs::remove_file(spool.dir.join(name));
            }
            misses.remove(name);
        }
        Err(e) => {
            let not_found = e.class() == ErrorClass::NotFound;
            if !not_found {
                tracing::warn!("prefetching {name} failed: {e}");
            }
            let (count, failures) = misses.get(name).map_or((0, 0), |m| (m.count, m.failures));
            misses.insert(
                name.to_string(),
                Miss {
                    at: Instant::now(),
                    count: count + 1,
                    failures: failures + u32::from(!not_found),
                    not_found,
                },
            );
        }
    }
}

/// The `count` segments after `name` on its timeline, up to `opts.until`.
pub(super) fn window_after(
    name: &WalSegmentName,
    size: WalSegmentSize,
    count: usize,
    opts: &WalFetchOptions,
) -> Vec<String> {
    let Ok(mut segno) = name.segment_no(size) else {
        return Vec::new();
    };
    let mut names = Vec::with_capacity(count);
    for _ in 0..count {
        segno = segno.next();
        let next = WalSegmentName::from_segment_no(name.timeline, segno, size);
        let text = next.to_string();
        if check_until(&ArchivedFile::Segment(next), &text, opts).is_err() {
            break;
        }
        names.push(text);
    }
    names
}

/// Whether the spool holds `name` with its record.
fn held(spool: &FetchSpool, name: &str) -> bool {
    spool.dir.join(name).is_file() && spool.record_path(name).is_file()
}

/// Removes the spool's segments and records outside `window` (handed over
/// already, passed, or of another timeline).
fn prune(spool: &FetchSpool, window: &[String], in_flight: &HashSet<String>) {
    let Ok(entries) = std::fs::read_dir(&spool.dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let segment = file_name.strip_suffix(RECORD_SUFFIX).unwrap_or(file_name);
        if file_name.starts_with('.') || file_name == LOCK_FILE || file_name == WANT_FILE {
            continue;
        }
        if !window.iter().any(|w| w == segment) && !in_flight.contains(segment) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes everything in the spool but its lock (and the request, unless
/// `all`): what an earlier prefetcher left, or this one's files as it ends.
pub(super) fn clear(spool: &FetchSpool, all: bool) {
    let Ok(entries) = std::fs::read_dir(&spool.dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name == LOCK_FILE || (!all && name == WANT_FILE) {
            continue;
        }
        let _ = std::fs::remove_file(entry.path());
    }
}
