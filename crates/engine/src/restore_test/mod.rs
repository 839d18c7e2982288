//! `pgark restore-test`: restore a backup into a scratch directory, run
//! PostgreSQL on it until recovery ends, check it, stop it, remove it, and
//! record the result as `restore-test/latest`.
//!
//! # Order
//! 1. Choose the backup (manifests only), find PostgreSQL programs of its
//!    major and the account to run them as, and check that account can
//!    reach what the server will run (the pgark binary, a local
//!    repository): a test that cannot run fails before any work.
//! 2. Make the scratch directory (see `scratch`) and check its filesystem
//!    has room for the backup.
//! 3. Restore with backup-fetch's engine: every tablespace under the
//!    scratch directory, `archive_mode = off`, recovery to the target (by
//!    default the end of the archived WAL) then promote.
//! 4. Start PostgreSQL (see `pgark_pgserver::server` for what it may do)
//!    and wait, at most `timeout`, until recovery ends.
//! 5. Checks: every database accepts a connection; pg_amcheck
//!    --heapallindexed; the user's statements; a clean fast shutdown;
//!    pg_checksums --check.
//! 6. Record the result, remove the scratch directory (unless kept).
//!
//! # What it writes to the repository
//! Only `restore-test/latest`, and only when the run reached a verdict on
//! the backup (see [`pgark_catalog::RestoreTestRecord`]). The promoted
//! server never archives: its new timeline stays in the scratch directory.

mod record;
mod scratch;

pub use record::{last_restore_test, record_restore_test};

use crate::restore::{backup_fetch, select_backup, BackupFetchOptions, BackupSelector, RecoveryOptions};
use crate::{ArchiveMode, EngineError, ErrorClass, ProgressSink, RecoveryTarget, RepoKeys, RetryPolicy};
use chrono::Utc;
use pgark_catalog::{CheckOutcome, CheckResult, RestoreTestOutcome, RestoreTestRecord, RestoreTestStage};
use pgark_pgserver::{Check, CheckStatus, Server, ServerSpec, SqlCheck};
use pgark_store::ObjectStore;
use scratch::Scratch;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to test and how.
#[derive(Debug, Clone)]
pub struct RestoreTestOptions {
    pub backup: BackupSelector,
    /// The scratch directory (missing or empty); `None`: a new one under
    /// the system temporary directory.
    pub dest: Option<PathBuf>,
    pub target: Option<RecoveryTarget>,
    pub target_timeline: Option<String>,
    /// The server's restore_command up to and including `wal-fetch` (this
    /// pgark, this repository); restore-test adds `--no-tablespace-create`,
    /// `--until` (see below) and `%f %p`.
    pub wal_fetch_command: String,
    /// Where PostgreSQL's programs are; `None`: searched for.
    pub pg_bin: Option<PathBuf>,
    /// The account PostgreSQL runs as when pgark runs as root.
    pub run_as: Option<String>,
    /// How long recovery may take, from the server's start.
    pub timeout: Duration,
    pub check_sql: Vec<SqlCheck>,
    /// The database the statements run in.
    pub check_db: String,
    /// Further server settings, applied last.
    pub settings: Vec<(String, String)>,
    /// Leave the scratch directory (the server is stopped all the same).
    pub keep: bool,
    pub concurrency: usize,
    pub retry: RetryPolicy,
    pub keys: RepoKeys,
    pub progress: Option<Arc<dyn ProgressSink>>,
    /// Paths the server's account must reach, with the access it needs
    /// (0o1 run, 0o4 read, 0o5 list): the pgark binary, a local
    /// repository, key files.
    pub must_reach: Vec<(PathBuf, u32)>,
}

/// What a run found. `error` is set when the run failed at the restore or
/// at recovery (the record says so too), or when its record could not be
/// written; a failed check shows in the record alone.
#[derive(Debug)]
pub struct RestoreTestReport {
    pub record: RestoreTestRecord,
    /// The scratch directory.
    pub dest: PathBuf,
    /// Whether it was left in place.
    pub kept: bool,
    /// Why recovery was chosen (backup-fetch's words).
    pub reason: String,
    pub error: Option<EngineError>,
}

/// The target in words, for the record.
pub fn describe_target(target: Option<&RecoveryTarget>, timeline: Option<&str>) -> String {
    let mut words = match target {
        None => "end of the archived WAL".to_string(),
        Some(RecoveryTarget::Time(t)) => format!("time {t}"),
        Some(RecoveryTarget::Xid(x)) => format!("transaction {x}"),
        Some(RecoveryTarget::Name(n)) => format!("restore point {n}"),
        Some(RecoveryTarget::Lsn(l)) => format!("LSN {l}"),
        Some(RecoveryTarget::Immediate) => "consistency (immediate)".to_string(),
    };
    if let Some(tli) = timeline {
        words += &format!(", timeline {tli}");
    }
    words
}

fn check_result(check: Check) -> CheckResult {
    CheckResult {
        name: check.name,
        outcome: match check.status {
            CheckStatus::Passed => CheckOutcome::Passed,
            CheckStatus::Failed => CheckOutcome::Failed,
            CheckStatus::Skipped => CheckOutcome::Skipped,
        },
        detail: check.detail,
    }
}

/// Runs one restore test (see the module docs). `Err` when the test could
/// not run (no backup, no binaries, an unreachable repository, no room):
/// nothing is recorded then. Dropping the future stops the server and
/// removes the scratch directory.
pub async fn restore_test(
    store: Arc<dyn ObjectStore>,
    opts: &RestoreTestOptions,
) -> Result<RestoreTestReport, EngineError> {
    let mut fetch = BackupFetchOptions {
        recovery: None,
        dest: PathBuf::new(),
        backup: opts.backup.clone(),
        force: false,
        concurrency: opts.concurrency.max(1),
        tablespace_map: HashMap::new(),
        archive_mode: ArchiveMode::Off,
        dry_run: false,
        delta: false,
        delta_by_timestamp: false,
        progress: opts.progress.clone(),
        keys: opts.keys.clone(),
        retry: opts.retry,
    };
    fetch.recovery = Some(recovery_options(opts, String::new()));
    let (manifest, reason) = select_backup(&*store, &fetch).await?;
    // The end of the archive, fixed now: recovery ends there however fast
    // the primary goes on archiving, and must reach it.
    let archive_end = match opts.target {
        None => Some(archive_end(&*store, &opts.keys, &manifest).await?),
        Some(_) => None,
    };
    let until = archive_end.as_ref().and_then(|e| e.reached);
    let mut restore_command = format!("{} --no-tablespace-create", opts.wal_fetch_command);
    if let Some(until) = until {
        restore_command += &format!(" --until {until}");
    }
    restore_command += " %f %p";
    fetch.recovery = Some(recovery_options(opts, restore_command.clone()));
    let major = manifest.pg_version_num / 10000;
    let bins = pgark_pgserver::bins::find(major, opts.pg_bin.as_deref())?;
    let account = pgark_pgserver::account::choose(opts.run_as.as_deref())?;
    for (path, bits) in &opts.must_reach {
        account.check_reachable(path, *bits)?;
    }
    let scratch = Scratch::create(opts.dest.as_deref(), opts.keep)?;
    account.check_reachable(scratch.root(), 0)?;
    scratch.check_free_space(manifest.files.iter().map(|f| f.size).sum())?;

    let mut record = RestoreTestRecord {
        time: Utc::now(),
        backup: manifest.name.to_string(),
        target: describe_target(opts.target.as_ref(), opts.target_timeline.as_deref()),
        outcome: RestoreTestOutcome::Failed,
        failed_stage: None,
        error: None,
        restore_seconds: 0.0,
        recovery_seconds: None,
        checks_seconds: None,
        wal_replayed_bytes: None,
        recovered_to_lsn: None,
        last_replayed_commit: None,
        timeline: None,
        server_version: None,
        checks: Vec::new(),
        pgark_version: env!("CARGO_PKG_VERSION").to_string(),
    };

    // 3. Restore.
    fetch.dest = scratch.data();
    fetch.backup = BackupSelector::Named(manifest.name.clone());
    fetch.tablespace_map = manifest
        .tablespaces
        .iter()
        .map(|t| (t.oid, scratch.tablespaces().join(t.oid.to_string())))
        .collect();
    let started = Instant::now();
    let fetched = backup_fetch(store.clone(), &fetch).await;
    record.restore_seconds = started.elapsed().as_secs_f64();
    if let Err(e) = fetched {
        if !matches!(e.class(), ErrorClass::Integrity | ErrorClass::NotFound) {
            return Err(e);
        }
        record.failed_stage = Some(RestoreTestStage::Restore);
        return finish(&*store, opts, scratch, record, reason, Some(e)).await;
    }
    scratch.hand_over(&account)?;

    // 4. Start and recover.
    let spec = ServerSpec {
        bins,
        data: scratch.data(),
        socket_dir: scratch.socket_dir(),
        log: scratch.log(),
        port: 40000 + (std::process::id() % 20000) as u16,
        restore_command,
        extra_settings: opts.settings.clone(),
        account,
    };
    record.server_version = Some(spec.bins.version.clone());
    let mut server = Server::start(spec)?;
    let recovered = match server.wait_recovered(opts.timeout).await {
        Ok(r) => r,
        Err(e) => {
            server.kill();
            record.recovery_seconds = Some(started.elapsed().as_secs_f64() - record.restore_seconds);
            record.failed_stage = Some(RestoreTestStage::Recovery);
            return finish(&*store, opts, scratch, record, reason, Some(e.into())).await;
        }
    };
    record.recovery_seconds = Some(recovered.elapsed.as_secs_f64());
    record.server_version = Some(recovered.server_version.clone());
    record.timeline = Some(recovered.timeline);
    record.last_replayed_commit = recovered
        .last_replayed_commit
        .as_deref()
        .and_then(|t| t.parse().ok());
    if let Some(lsn) = &recovered.replay_lsn {
        record.recovered_to_lsn = Some(lsn.clone());
        if let (Ok(end), Ok(start)) = (
            lsn.parse::<pgark_pg::Lsn>(),
            manifest.start_lsn.parse::<pgark_pg::Lsn>(),
        ) {
            record.wal_replayed_bytes = Some(end.0.saturating_sub(start.0));
        }
    }
    tracing::info!(
        "recovered to {:?} in {:.1?}",
        recovered.replay_lsn,
        recovered.elapsed
    );
    let short = archive_end
        .as_ref()
        .and_then(|end| end.shortfall(recovered.replay_lsn.as_deref(), manifest.wal_segment_size));

    // 5. Checks, bounded like recovery.
    let checks_started = Instant::now();
    let checks = tokio::time::timeout(
        opts.timeout,
        run_checks(&mut server, opts, recovered.data_checksums),
    )
    .await;
    let checks = match checks {
        Ok(checks) => checks,
        Err(_) => {
            server.kill();
            record.checks_seconds = Some(checks_started.elapsed().as_secs_f64());
            record.failed_stage = Some(RestoreTestStage::Checks);
            let error = pgark_pgserver::ServerError::ChecksTimedOut { limit: opts.timeout };
            return finish(&*store, opts, scratch, record, reason, Some(error.into())).await;
        }
    };
    drop(server);
    record.checks_seconds = Some(checks_started.elapsed().as_secs_f64());
    record.checks = checks.into_iter().map(check_result).collect();
    let failed: Vec<&str> = record
        .checks
        .iter()
        .filter(|c| c.outcome == CheckOutcome::Failed)
        .map(|c| c.name.as_str())
        .collect();
    if let Some(short) = short {
        record.failed_stage = Some(RestoreTestStage::Recovery);
        return finish(
            &*store,
            opts,
            scratch,
            record,
            reason,
            Some(EngineError::IncompleteArchive(short)),
        )
        .await;
    }
    if failed.is_empty() {
        record.outcome = RestoreTestOutcome::Passed;
    } else {
        record.failed_stage = Some(RestoreTestStage::Checks);
        record.error = Some(format!("{} check(s) failed: {}", failed.len(), failed.join("; ")));
    }
    finish(&*store, opts, scratch, record, reason, None).await
}

fn recovery_options(opts: &RestoreTestOptions, restore_command: String) -> RecoveryOptions {
    RecoveryOptions {
        restore_command: Some(restore_command),
        target: opts.target.clone(),
        action: Some("promote".into()),
        timeline: opts.target_timeline.clone(),
        standby: false,
    }
}

/// How far the archive reaches from a backup without a gap, when the test
/// starts.
struct ArchiveEnd {
    /// The last segment of contiguous WAL from the backup's start.
    reached: Option<pgark_pg::WalSegmentName>,
    /// The first missing segment, when WAL was archived after it.
    gap: Option<pgark_pg::WalSegmentName>,
}

async fn archive_end(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
    manifest: &pgark_catalog::BackupManifest,
) -> Result<ArchiveEnd, EngineError> {
    let index = crate::wal_index::WalIndex::load(store, keys).await?;
    let (reached, gap, _) = index.follow(manifest);
    Ok(ArchiveEnd { reached, gap })
}

impl ArchiveEnd {
    /// Why recovery, which ended after `replay_lsn`, did not replay the
    /// whole archive (`None`: it did).
    fn shortfall(&self, replay_lsn: Option<&str>, seg_size: u32) -> Option<String> {
        let size = pgark_pg::WalSegmentSize::new(u64::from(seg_size)).ok()?;
        let reached = self.reached?;
        let gap = self.gap.map(|g| {
            format!(
                "; the archive has a gap: segment {g} is missing, and the WAL archived after it cannot be replayed"
            )
        });
        let end = replay_lsn.and_then(|l| l.parse::<pgark_pg::Lsn>().ok());
        let last_no = reached.segment_no(size).ok()?.0;
        // The last record replayed ends in (or exactly at the end of) the
        // archive's last segment.
        let replayed_no = end.map(|l| pgark_pg::Lsn(l.0.saturating_sub(1)).segment_no(size).0);
        match (replayed_no, gap) {
            (Some(no), None) if no >= last_no => None,
            (Some(_), Some(gap)) => Some(format!(
                "recovery replayed the archive up to {}{gap}",
                replay_lsn.unwrap_or("?")
            )),
            (_, gap) => Some(format!(
                "recovery ended at {}, before the end of the archived WAL (segment {reached}): the WAL after it is \
                 invalid or could not be read{}",
                replay_lsn.unwrap_or("an unknown position"),
                gap.unwrap_or_default()
            )),
        }
    }
}

/// The checks on the recovered server, its clean shutdown, then
/// pg_checksums on the stopped cluster.
async fn run_checks(server: &mut Server, opts: &RestoreTestOptions, data_checksums: bool) -> Vec<Check> {
    let mut checks = match server.check_connections().await {
        Ok(c) => c,
        Err(e) => vec![Check {
            name: "connect".into(),
            status: CheckStatus::Failed,
            detail: e.to_string(),
        }],
    };
    checks.push(server.check_amcheck(opts.concurrency).await);
    if !opts.check_sql.is_empty() {
        checks.extend(server.check_sql(&opts.check_db, &opts.check_sql).await);
    }
    match server.stop().await {
        Ok(()) => checks.push(server.check_checksums(data_checksums).await),
        Err(e) => checks.push(Check {
            name: "clean shutdown".into(),
            status: CheckStatus::Failed,
            detail: e.to_string(),
        }),
    }
    checks
}

/// Records the verdict and removes the scratch directory.
async fn finish(
    store: &dyn ObjectStore,
    opts: &RestoreTestOptions,
    mut scratch: Scratch,
    mut record: RestoreTestRecord,
    reason: String,
    error: Option<EngineError>,
) -> Result<RestoreTestReport, EngineError> {
    if let Some(e) = &error {
        record.outcome = RestoreTestOutcome::Failed;
        record.error = Some(e.to_string());
    }
    record.time = Utc::now();
    let dest = scratch.root().to_path_buf();
    let removed = scratch.finish();
    let error = match record_restore_test(store, &opts.keys, &record).await {
        Ok(()) => error,
        Err(e) => {
            tracing::error!("could not record the restore test's result: {e}");
            error.or(Some(e))
        }
    };
    Ok(RestoreTestReport {
        record,
        dest,
        kept: !removed,
        reason,
        error,
    })
}
