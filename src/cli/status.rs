use crate::config::{ConfigError, Settings};
use clap::{Args, ValueEnum};
use pgark_engine::{ArchiverView, Status};
use serde_json::json;

/// Is WAL archiving healthy, what can be recovered, when was the last backup.
///
/// Reads the repository (listings, each backup's small summary, the timelines' history files
/// and the newest few WAL segments; no manifest) and, with --pg-conn (or the libpq
/// environment, PGHOST...), the server's pg_stat_archiver. The recovery window ends at the
/// last commit or abort found in the archived WAL itself (at the end of the newest backup when
/// nothing committed after it is archived). Healthy: WAL contiguous from the
/// oldest backup that is not permanent to the newest archived segment, the newest segment
/// younger than --max-archive-age (or the server archives here and has nothing waiting), no
/// archiver failure newer than its last success, no forked timeline both sides of which
/// archive. Exit 0 healthy,
/// 12 not healthy (reasons printed), 6 repository failure, 11 no repository.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Output: text, json (the field names of an operator's cluster status), or prometheus
    /// (text exposition format, for node_exporter's textfile collector).
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// The same as --format json.
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    #[command(flatten)]
    pub source: StatusSource,
    /// Exit 0 even when not healthy (for scripts that read the output).
    #[arg(long)]
    pub no_fail: bool,
}

/// Where status reads from besides the repository, and its health limit
/// (shared with `pgark exporter`).
#[derive(Debug, Clone, Args)]
pub struct StatusSource {
    /// Newest archived segment older than this (and the server not idle) is unhealthy:
    /// 90s, 15m, 2h [default: 15m].
    #[arg(long, env = "PGARK_MAX_ARCHIVE_AGE", value_name = "AGE")]
    pub max_archive_age: Option<String>,
    /// Ask this server for its archiver statistics (libpq connection string, TLS settings
    /// sslmode, sslrootcert, sslcert, sslkey included). Without it, the libpq environment
    /// (PGHOST, PGPORT, PGSERVICE; PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY) is used when
    /// set; without either, the server is not asked.
    #[arg(long, env = "PGARK_PG_CONN", value_name = "CONNINFO")]
    pub pg_conn: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
    Prometheus,
}

/// Default of --max-archive-age.
const DEFAULT_MAX_ARCHIVE_AGE: chrono::Duration = chrono::Duration::minutes(15);

pub async fn run(args: StatusArgs, settings: &Settings) -> anyhow::Result<()> {
    let max_age = args.source.max_archive_age(settings)?;
    let (store, keys) = crate::repo::open_existing_with_keys(settings).await?;
    let archiver = args.source.ask_server(settings).await?;
    let now = chrono::Utc::now();
    let status = pgark_engine::status(&*store, &keys, archiver, max_age, now).await?;
    let format = if args.json { Format::Json } else { args.format };
    match format {
        Format::Text => print!("{}", to_text(&status)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&to_json(&status))?),
        Format::Prometheus => print!("{}", to_prometheus(&status)),
    }
    if !status.healthy && !args.no_fail {
        return Err(crate::exit::Unhealthy(status.problems.join("; ")).into());
    }
    Ok(())
}

impl StatusSource {
    /// `--max-archive-age`, `PGARK_MAX_ARCHIVE_AGE` or `max_archive_age`,
    /// else 15 minutes.
    pub fn max_archive_age(&self, settings: &Settings) -> Result<chrono::Duration, ConfigError> {
        match self
            .max_archive_age
            .clone()
            .or(settings.file.max_archive_age.clone())
        {
            // As time limits are written: `m` is minutes here.
            Some(a) => crate::config::parse_timeout(&a)
                .ok()
                .filter(|d| !d.is_zero())
                .and_then(|d| chrono::Duration::from_std(d).ok())
                .ok_or_else(|| ConfigError::Invalid {
                    name: "max-archive-age",
                    message: format!("{a:?} is not a duration such as 90s, 15m or 2h"),
                }),
            None => Ok(DEFAULT_MAX_ARCHIVE_AGE),
        }
    }

    /// The server's archiver statistics, when a connection is given (flag,
    /// environment, configuration file) or the libpq environment names a
    /// server. A connection that fails is an error (exit 8): asked, it must
    /// answer.
    pub async fn ask_server(&self, settings: &Settings) -> anyhow::Result<Option<ArchiverView>> {
        let conninfo = self.pg_conn.clone().or(settings.file.pg_conn.clone());
        let from_env = ["PGHOST", "PGPORT", "PGSERVICE"]
            .iter()
            .any(|v| std::env::var_os(v).is_some());
        if conninfo.is_none() && !from_env {
            return Ok(None);
        }
        let opts = pgark_pgclient::ConnectOptions {
            conninfo,
            ..Default::default()
        };
        let session = pgark_pgclient::Session::connect(&opts)
            .await
            .map_err(pgark_engine::EngineError::from)?;
        let h = session
            .archiver_health()
            .await
            .map_err(pgark_engine::EngineError::from)?;
        Ok(Some(ArchiverView {
            failed_count: h.failed_count,
            last_archived_wal: h.last_archived_wal,
            last_archived_time: h.last_archived_time,
            last_failed_wal: h.last_failed_wal,
            last_failed_time: h.last_failed_time,
            current_wal: h.current_wal,
            ready_segments: h.ready_segments,
        }))
    }
}

/// A time in JSON: RFC 3339 in UTC (`Z`), with its fraction of a second,
/// as backup-list --json keeps it (scripts compare times).
fn rfc3339(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// A time in the text output: RFC 3339 in UTC (`Z`), to the second, as
/// backup-list prints its times (the fraction dropped).
fn to_second(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<String> {
    t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// The start of the recovery window to the second, rounded up: a restore
/// to the time printed is inside the window (rounded down it could be
/// before the backup's consistent point, which a restore refuses).
fn to_second_up(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<String> {
    use chrono::{SubsecRound, Timelike};
    to_second(t.map(|t| match t.nanosecond() {
        0 => t,
        _ => t.trunc_subsecs(0) + chrono::Duration::seconds(1),
    }))
}

fn last_backup_time(s: &Status) -> Option<chrono::DateTime<chrono::Utc>> {
    s.last_backup
        .as_ref()
        .map(|b| b.server_stop_time.unwrap_or(b.finished_at))
}

pub fn to_json(s: &Status) -> serde_json::Value {
    json!({
        "lastBackupTime": rfc3339(last_backup_time(s)),
        "lastBackupName": s.last_backup.as_ref().map(|b| b.name.as_str()),
        "backupCount": s.backup_count,
        "walArchivingHealthy": s.healthy,
        "recoveryWindowStart": rfc3339(s.recovery_window_start),
        "recoveryWindowEnd": rfc3339(s.recovery_window_end),
        "problems": s.problems,
        "firstRestorableBackup": s.first_restorable.as_ref().map(|b| b.name.as_str()),
        "lastTransaction": s.last_transaction.as_ref().map(|t| json!({
            "time": rfc3339(Some(t.time)),
            "kind": t.kind,
            "segment": t.segment.to_string(),
        })),
        "walContiguousTo": s.contiguous_to.map(|n| n.to_string()),
        "newestArchivedSegment": s.newest_segment.as_ref().map(|n| n.name.to_string()),
        "newestArchivedSegmentTime": rfc3339(s.newest_segment.as_ref().and_then(|n| n.arrived)),
        "firstWalGap": s.first_gap.map(|n| n.to_string()),
        "timelineForks": s.forks.iter().map(|f| json!({
            "timeline": f.timeline.0,
            "parent": f.parent.0,
            "switchLsn": f.switch.to_string(),
            "parentWentOnTo": f.parent_went_on_to.to_string(),
            "bothGrowing": s.growing_forks.contains(f),
        })).collect::<Vec<_>>(),
        "statusTime": rfc3339(Some(s.time)),
        "lastVerify": s.last_verify.as_ref().map(|v| json!({
            "time": rfc3339(Some(v.time)),
            "target": v.target,
            "walLevel": v.wal_level,
            "whole": v.outcome == pgark_catalog::VerifyOutcome::Whole,
            "backups": v.backups.len(),
        })),
        "lastRestoreTest": s.last_restore_test.as_ref().map(|r| json!({
            "time": rfc3339(Some(r.time)),
            "backup": r.backup,
            "target": r.target,
            "passed": r.passed(),
            "outcome": r.outcome,
            "failedStage": r.failed_stage,
            "error": r.error,
            "restoreSeconds": r.restore_seconds,
            "recoverySeconds": r.recovery_seconds,
            "checksSeconds": r.checks_seconds,
            "walReplayedBytes": r.wal_replayed_bytes,
            "lastReplayedCommit": rfc3339(r.last_replayed_commit),
            "checks": r.checks.len(),
            "checksFailed": r.checks.iter().filter(|c| c.outcome == pgark_catalog::CheckOutcome::Failed).count(),
        })),
        "repositoryBytes": s.repository_bytes,
        "walBytes": s.wal_bytes,
        "archiver": s.archiver.as_ref().map(|a| json!({
            "failedCount": a.failed_count,
            "lastArchivedWal": a.last_archived_wal,
            "lastArchivedTime": rfc3339(a.last_archived_time),
            "lastFailedWal": a.last_failed_wal,
            "lastFailedTime": rfc3339(a.last_failed_time),
            "currentWal": a.current_wal,
            "readySegments": a.ready_segments,
            "failing": a.failing(),
        })),
    })
}

fn to_text(s: &Status) -> String {
    let or_none = |v: Option<String>| v.unwrap_or_else(|| "none".into());
    let mut out = String::new();
    out += &format!(
        "WAL archiving: {}\n",
        if s.healthy { "healthy" } else { "NOT HEALTHY" }
    );
    for p in &s.problems {
        out += &format!("  {p}\n");
    }
    out += &format!("backups: {}\n", s.backup_count);
    out += &format!(
        "last backup: {}\n",
        match &s.last_backup {
            Some(b) => format!(
                "{} (finished {})",
                b.name,
                or_none(to_second(last_backup_time(s)))
            ),
            None => "none".into(),
        }
    );
    out += &format!(
        "recovery window: {} to {}\n",
        or_none(to_second_up(s.recovery_window_start)),
        match (
            s.recovery_window_end,
            &s.recovery_window_end_backup,
            &s.last_transaction
        ) {
            (Some(end), Some(b), _) => format!(
                "{} (the end of backup {b}: nothing committed after it is archived)",
                or_none(to_second(Some(end)))
            ),
            (Some(end), None, Some(t)) => format!(
                "{} (last {} in {})",
                or_none(to_second(Some(end))),
                t.kind,
                t.segment
            ),
            (Some(end), None, None) => or_none(to_second(Some(end))),
            (None, _, _) => "unknown (no commit in the newest archived WAL)".into(),
        }
    );
    out += &format!(
        "newest archived segment: {}{}\n",
        or_none(s.newest_segment.as_ref().map(|n| n.name.to_string())),
        s.newest_segment
            .as_ref()
            .and_then(|n| n.arrived)
            .map(|t| format!(" (arrived {})", or_none(to_second(Some(t)))))
            .unwrap_or_default()
    );
    out += &format!(
        "repository: {} bytes ({} of WAL)\n",
        s.repository_bytes, s.wal_bytes
    );
    out += &format!(
        "last verify: {}\n",
        match &s.last_verify {
            Some(v) => format!(
                "{} of {} ({} backups{}): {}",
                or_none(to_second(Some(v.time))),
                v.target,
                v.backups.len(),
                if v.wal_level { ", with --wal" } else { "" },
                if v.outcome == pgark_catalog::VerifyOutcome::Whole {
                    "whole"
                } else {
                    "DAMAGED"
                }
            ),
            None => "never".into(),
        }
    );
    out += &format!(
        "last restore test: {}\n",
        match &s.last_restore_test {
            Some(r) => format!(
                "{} of {} to {}: {}{}",
                or_none(to_second(Some(r.time))),
                r.backup,
                r.target,
                if r.passed() { "passed" } else { "FAILED" },
                r.error
                    .as_deref()
                    .map(|e| format!(" ({})", e.lines().next().unwrap_or("")))
                    .unwrap_or_default()
            ),
            None => "never".into(),
        }
    );
    if let Some(a) = &s.archiver {
        out += &format!(
            "server archiver: {} failures, last archived {} at {}, writing {}\n",
            a.failed_count,
            or_none(a.last_archived_wal.clone()),
            or_none(to_second(a.last_archived_time)),
            or_none(a.current_wal.clone())
        );
    }
    out
}

/// The Prometheus text exposition format (version 0.0.4): every metric a
/// gauge with its HELP and TYPE lines; a metric whose value is unknown is
/// left out.
pub fn to_prometheus(s: &Status) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: Option<f64>| {
        if let Some(v) = value {
            out += &format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n");
        }
    };
    let secs = |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.timestamp_micros() as f64 / 1e6);
    gauge(
        "pgark_last_backup_timestamp_seconds",
        "When the newest backup finished (server clock), as a Unix time.",
        secs(last_backup_time(s)),
    );
    gauge(
        "pgark_backup_count",
        "Completed backups in the repository.",
        Some(s.backup_count as f64),
    );
    gauge(
        "pgark_recovery_window_start_timestamp_seconds",
        "The earliest point a restore can stop at: the end of the oldest restorable backup.",
        secs(s.recovery_window_start),
    );
    gauge(
        "pgark_recovery_window_end_timestamp_seconds",
        "The last commit or abort in the archived WAL reachable without a gap, or the end of the newest \
         restorable backup when nothing committed after it is archived.",
        secs(s.recovery_window_end),
    );
    gauge(
        "pgark_wal_archive_healthy",
        "1 when WAL archiving is healthy (see pgark status), else 0.",
        Some(if s.healthy { 1.0 } else { 0.0 }),
    );
    gauge(
        "pgark_wal_newest_segment_timestamp_seconds",
        "When the newest archived WAL segment was stored, as a Unix time.",
        secs(s.newest_segment.as_ref().and_then(|n| n.arrived)),
    );
    gauge(
        "pgark_repository_bytes",
        "Bytes stored in the repository.",
        Some(s.repository_bytes as f64),
    );
    gauge(
        "pgark_wal_bytes",
        "Bytes of archived WAL in the repository.",
        Some(s.wal_bytes as f64),
    );
    gauge(
        "pgark_timeline_forks",
        "Timelines forked from a parent that went on archiving after the fork (both growing).",
        Some(s.growing_forks.len() as f64),
    );
    gauge(
        "pgark_status_timestamp_seconds",
        "When this status was read, as a Unix time.",
        secs(Some(s.time)),
    );
    gauge(
        "pgark_wal_gap",
        "1 when a WAL segment is missing after the oldest backup's start, else 0.",
        Some(if s.first_gap.is_some() { 1.0 } else { 0.0 }),
    );
    if let Some(v) = &s.last_verify {
        gauge(
            "pgark_last_verify_timestamp_seconds",
            "When the last pgark verify run ended, as a Unix time.",
            secs(Some(v.time)),
        );
        gauge(
            "pgark_last_verify_success",
            "1 when every backup the last pgark verify run checked was whole, else 0.",
            Some(if v.outcome == pgark_catalog::VerifyOutcome::Whole {
                1.0
            } else {
                0.0
            }),
        );
    }
    if let Some(r) = &s.last_restore_test {
        gauge(
            "pgark_last_restore_test_timestamp_seconds",
            "When the last pgark restore-test run ended, as a Unix time.",
            secs(Some(r.time)),
        );
        gauge(
            "pgark_last_restore_test_success",
            "1 when the last pgark restore-test restored, recovered and passed every check, else 0.",
            Some(if r.passed() { 1.0 } else { 0.0 }),
        );
        gauge(
            "pgark_last_restore_test_restore_seconds",
            "Seconds the last restore test spent restoring files.",
            Some(r.restore_seconds),
        );
        gauge(
            "pgark_last_restore_test_recovery_seconds",
            "Seconds the last restore test's server took to recover to its target.",
            r.recovery_seconds,
        );
        gauge(
            "pgark_last_restore_test_checks_seconds",
            "Seconds the last restore test spent on its checks.",
            r.checks_seconds,
        );
        gauge(
            "pgark_last_restore_test_wal_replayed_bytes",
            "WAL the last restore test replayed: from the backup's start to the last record replayed.",
            r.wal_replayed_bytes.map(|b| b as f64),
        );
    }
    if let Some(a) = &s.archiver {
        gauge(
            "pgark_archiver_failed_count",
            "pg_stat_archiver.failed_count of the server asked.",
            Some(a.failed_count as f64),
        );
        gauge(
            "pgark_archiver_ready_segments",
            "WAL files the server has not archived yet (.ready), when it lets pgark look.",
            a.ready_segments.map(|n| n as f64),
        );
        gauge(
            "pgark_archiver_failing",
            "1 when the server's last archiving failure is newer than its last success.",
            Some(if a.failing() { 1.0 } else { 0.0 }),
        );
    }
    out
}
