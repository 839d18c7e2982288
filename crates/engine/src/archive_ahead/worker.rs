//! The background archiver: one detached process per `pg_wal` (see the
//! module docs of [`super`]).

use super::record;
use super::spool::Spool;
use crate::spool_lock::{postmaster_pid, server_runs};
use crate::wal_push::{wal_push, WalPushOptions, WalPushOutcome};
use crate::EngineError;
use pgark_store::ObjectStore;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// How often the archiver looks for newly ready segments.
const POLL: Duration = Duration::from_millis(20);
/// How long the archiver waits with nothing to push before it ends.
pub const ARCHIVER_IDLE: Duration = Duration::from_secs(5);
/// How long its pushes in flight may take to finish once it ends.
pub const FINISH_LIMIT: Duration = Duration::from_secs(30);
/// Records the archiver keeps ahead of PostgreSQL's archiver, at most.
pub const MAX_AHEAD: usize = 64;
/// Failed pushes in a row after which the archiver ends.
pub const MAX_FAILURES_IN_A_ROW: u32 = 3;
/// How long a segment whose push failed waits before the archiver tries it
/// again (meanwhile PostgreSQL's own call pushes it and reports the error).
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// Runs the background archiver of `pg_wal` until it has nothing to do (see
/// the module docs), `parallel` pushes at once. `lock` is the spool's lock
/// (taken by the `wal-push` that started it), held until this returns.
/// Errors of single segments are logged, not returned: PostgreSQL's own
/// `wal-push` of such a segment pushes it and reports what fails.
pub async fn run_archiver(
    store: Arc<dyn ObjectStore>,
    pg_wal: &Path,
    lock: std::fs::File,
    opts: WalPushOptions,
    parallel: usize,
    repository: &str,
) -> Result<(), EngineError> {
    let _lock = lock;
    let spool = Arc::new(Spool::new(pg_wal, repository));
    let Some(postmaster) = postmaster_pid(pg_wal) else {
        return Ok(());
    };
    let opts = Arc::new(opts);
    let parallel = parallel.max(1);
    let mut tasks: JoinSet<(String, Result<WalPushOutcome, EngineError>)> = JoinSet::new();
    let mut in_flight: HashSet<String> = HashSet::new();
    let mut failed: HashMap<String, Instant> = HashMap::new();
    // Pushed by this archiver: never pushed again, even when its record
    // could not be written (pg_wal full).
    let mut pushed: HashSet<String> = HashSet::new();
    let mut failures_in_a_row = 0;
    let mut idle_since = Instant::now();
    loop {
        if !server_runs(pg_wal, postmaster) || !spool.dir.is_dir() {
            break;
        }
        if failures_in_a_row >= MAX_FAILURES_IN_A_ROW {
            tracing::warn!(
                "the background archiver of {} stops after {failures_in_a_row} failed pushes in a row",
                pg_wal.display()
            );
            break;
        }
        if tasks.len() < parallel {
            let ready = spool.ready();
            let ahead = ready.first().map_or(0, |oldest| spool.records_from(oldest));
            failed.retain(|_, at| at.elapsed() < RETRY_AFTER);
            if !pushed.is_empty() {
                let listed: HashSet<&String> = ready.iter().collect();
                pushed.retain(|n| listed.contains(n));
            }
            for name in ready {
                if tasks.len() >= parallel || ahead + tasks.len() >= MAX_AHEAD {
                    break;
                }
                if in_flight.contains(&name)
                    || pushed.contains(&name)
                    || failed.contains_key(&name)
                    || spool.has_record(&name)
                {
                    continue;
                }
                // Claimed elsewhere: PostgreSQL's wal-push pushes it.
                let Ok(Some(claim)) = spool.claim(&name) else {
                    continue;
                };
                let file = pg_wal.join(&name);
                // Recorded, or archived and marked done, since the listing.
                if spool.read(&name, &file).is_some() || !spool.is_ready(&name) {
                    continue;
                }
                in_flight.insert(name.clone());
                let (store, opts, spool) = (store.clone(), opts.clone(), spool.clone());
                tasks.spawn(async move {
                    let result = wal_push(store, &file, &opts).await;
                    if let Ok(outcome) = &result {
                        record(&spool, &name, &file, outcome);
                    }
                    drop(claim);
                    (name, result)
                });
            }
        }
        if tasks.is_empty() {
            if idle_since.elapsed() > ARCHIVER_IDLE {
                break;
            }
        } else {
            idle_since = Instant::now();
        }
        tokio::select! {
            Some(joined) = tasks.join_next() => {
                let Ok((name, result)) = joined else { continue };
                in_flight.remove(&name);
                match result {
                    Ok(_) => {
                        failures_in_a_row = 0;
                        pushed.insert(name);
                    }
                    Err(e) => {
                        tracing::warn!("the background archiver could not archive {name}: {e}");
                        failures_in_a_row += 1;
                        failed.insert(name, Instant::now());
                    }
                }
            }
            _ = tokio::time::sleep(POLL) => {}
        }
    }
    // Pushes in flight finish and are recorded; what is not done by then
    // is abandoned (PostgreSQL's calls push those segments).
    let _ = tokio::time::timeout(FINISH_LIMIT, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    Ok(())
}
