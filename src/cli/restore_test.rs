use crate::config::{ConfigError, Settings};
use crate::exit::{CheckFailed, Interrupted};
use clap::Args;
use pgark_catalog::{BackupName, CheckOutcome, RestoreTestRecord};
use pgark_engine::{BackupSelector, RestoreTestOptions, RestoreTestReport};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Restore a backup into a scratch directory, start PostgreSQL on it, check it, and record the
/// result.
///
/// Restores NAME (or LATEST) like backup-fetch into --dest (every tablespace inside it too),
/// starts PostgreSQL of the backup's major version on it (listening on a Unix socket in the
/// scratch directory only, archive_mode off, restore_command this pgark's wal-fetch from the same
/// repository), waits until recovery reaches the target (default: the end of the archived WAL)
/// and the server promotes, then checks: every database accepts a connection; pg_amcheck
/// --heapallindexed on every database (PostgreSQL 14 and later, when pg_amcheck and the amcheck
/// extension are installed; the extension is created in the scratch cluster); the statements of
/// --check-sql; a clean shutdown; pg_checksums --check when the cluster has data checksums. The
/// server is always stopped and the scratch directory removed (unless --keep), also on failure,
/// SIGINT and SIGTERM. The only thing written to the repository is the result,
/// restore-test/latest, which backup-list --detail, status and the exporter show. Exit 0 when
/// every check passed, 13 when a check failed, 5 when the restore met a damaged object or recovery
/// could not replay the whole archive (a missing segment, invalid WAL), 8 when
/// PostgreSQL did not start or recover, 10 when recovery or the checks outlasted --timeout, 2 when the
/// PostgreSQL programs or the --run-as account are missing, 7 when the scratch directory's
/// filesystem is too small, 130 or 143 when interrupted by SIGINT or SIGTERM.
#[derive(Debug, Clone, Args)]
pub struct RestoreTestArgs {
    /// Backup name (see backup-list) or LATEST.
    #[arg(default_value = "LATEST")]
    pub name: String,
    /// Scratch directory: must be missing or empty [default: a new directory under the system
    /// temporary directory].
    #[arg(long, env = "PGARK_RESTORE_TEST_DEST", value_name = "DIR")]
    pub dest: Option<PathBuf>,
    /// Leave the scratch directory after the test (the server is stopped all the same).
    #[arg(long)]
    pub keep: bool,
    /// Recover up to this time ('2026-11-22 10:30:00+00') instead of the end of the archive.
    #[arg(long, value_name = "TIME", group = "target")]
    pub target_time: Option<String>,
    /// Recover up to this transaction ID.
    #[arg(long, value_name = "XID", group = "target")]
    pub target_xid: Option<String>,
    /// Recover up to this named restore point.
    #[arg(long, value_name = "NAME", group = "target")]
    pub target_name: Option<String>,
    /// Recover up to this WAL location (X/X).
    #[arg(long, value_name = "LSN", group = "target")]
    pub target_lsn: Option<String>,
    /// Stop as soon as the backup is consistent (tests the backup alone, not the archive after it).
    #[arg(long, group = "target")]
    pub target_immediate: bool,
    /// Timeline to recover along: latest, current or a number.
    #[arg(long, value_name = "TLI")]
    pub target_timeline: Option<String>,
    /// Bin directory of the PostgreSQL to run [default: searched for the backup's major version
    /// in /usr/lib/postgresql/<major>/bin, /usr/pgsql-<major>/bin, ..., then PATH].
    #[arg(long, env = "PGARK_PG_BIN", value_name = "DIR")]
    pub pg_bin: Option<PathBuf>,
    /// When pgark runs as root: the account PostgreSQL runs as (it refuses root) [default: postgres].
    #[arg(long, env = "PGARK_RUN_AS", value_name = "USER")]
    pub run_as: Option<String>,
    /// How long recovery may take from the server's start, and then the checks: 90s, 10m, 2h
    /// [default: 1h].
    #[arg(long, env = "PGARK_RESTORE_TEST_TIMEOUT", value_name = "DURATION")]
    pub timeout: Option<String>,
    /// File of SQL statements, each ended by ';' at the end of a line ('--' lines are comments);
    /// each must return a row whose first column is true.
    #[arg(long, env = "PGARK_CHECK_SQL", value_name = "FILE")]
    pub check_sql: Option<PathBuf>,
    /// Database the --check-sql statements run in [default: postgres].
    #[arg(long, env = "PGARK_CHECK_DB", value_name = "DB")]
    pub check_db: Option<String>,
    /// Further server setting NAME=VALUE, applied after pgark's (repeatable), e.g.
    /// shared_preload_libraries= when the backed-up server loaded libraries this host lacks.
    #[arg(long = "set", value_name = "NAME=VALUE")]
    pub settings: Vec<String>,
    /// Print the result as JSON (the fields of restore-test/latest, plus dest and kept).
    #[arg(long)]
    pub json: bool,
    /// Parts downloaded and written at once, and pg_amcheck's jobs [default: number of CPUs].
    #[arg(long, env = "PGARK_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,
    /// The report goes to stderr (backup-push --test: stdout holds the backup's name).
    #[arg(skip)]
    pub report_to_stderr: bool,
}

impl RestoreTestArgs {
    /// The options `backup-push --test` uses: LATEST's defaults with
    /// everything else from the environment and the configuration file.
    pub fn for_backup(name: &str) -> RestoreTestArgs {
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        RestoreTestArgs {
            name: name.to_string(),
            dest: env("PGARK_RESTORE_TEST_DEST").map(PathBuf::from),
            keep: false,
            target_time: None,
            target_xid: None,
            target_name: None,
            target_lsn: None,
            target_immediate: false,
            target_timeline: None,
            pg_bin: env("PGARK_PG_BIN").map(PathBuf::from),
            run_as: env("PGARK_RUN_AS").map(|v| v.to_string_lossy().into_owned()),
            timeout: env("PGARK_RESTORE_TEST_TIMEOUT").map(|v| v.to_string_lossy().into_owned()),
            check_sql: env("PGARK_CHECK_SQL").map(PathBuf::from),
            check_db: env("PGARK_CHECK_DB").map(|v| v.to_string_lossy().into_owned()),
            settings: Vec::new(),
            json: false,
            concurrency: env("PGARK_CONCURRENCY").and_then(|v| v.to_str().and_then(|s| s.parse().ok())),
            report_to_stderr: true,
        }
    }
}

fn parse_settings(items: &[String]) -> Result<Vec<(String, String)>, ConfigError> {
    items
        .iter()
        .map(|item| {
            let (name, value) = item.split_once('=').ok_or_else(|| ConfigError::Invalid {
                name: "set",
                message: format!("{item:?} is not NAME=VALUE"),
            })?;
            let name = name.trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(ConfigError::Invalid {
                    name: "set",
                    message: format!("{name:?} is not a setting name"),
                });
            }
            if pgark_engine::PROTECTED_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) {
                return Err(ConfigError::Invalid {
                    name: "set",
                    message: format!(
                        "{name} is restore-test's own: it keeps the server off the network, off the archive and \
                         inside its scratch directory"
                    ),
                });
            }
            Ok((name.to_string(), value.to_string()))
        })
        .collect()
}

/// What the server's account must reach: this binary (restore_command),
/// a local repository, key files.
fn must_reach(settings: &Settings, config: Option<&Path>) -> anyhow::Result<Vec<(PathBuf, u32)>> {
    let mut paths = vec![(std::env::current_exe()?, 0o1)];
    let repo = settings.repo()?;
    if !repo.contains("://") || repo.starts_with("file://") {
        let path = repo.strip_prefix("file://").unwrap_or(repo);
        paths.push((PathBuf::from(path), 0o5));
    }
    if let Some(cfg) = config {
        paths.push((cfg.to_path_buf(), 0o4));
    }
    for file in [
        &settings.encryption.key_file,
        &settings.encryption.passphrase_file,
    ]
    .into_iter()
    .flatten()
    {
        paths.push((file.clone(), 0o4));
    }
    Ok(paths)
}

fn print_text(report: &RestoreTestReport, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let r = &report.record;
    eprintln!("pgark restore-test: chose {}", report.reason);
    writeln!(out, "backup:     {}", r.backup)?;
    writeln!(out, "target:     {}", r.target)?;
    if let Some(v) = &r.server_version {
        writeln!(out, "postgresql: {v}")?;
    }
    writeln!(out, "restore:    {:.1} s", r.restore_seconds)?;
    if let Some(s) = r.recovery_seconds {
        let replayed = r
            .wal_replayed_bytes
            .map(|b| format!(", {} MiB of WAL replayed", b >> 20))
            .unwrap_or_default();
        let to = r
            .recovered_to_lsn
            .as_deref()
            .map(|l| format!(" to {l}"))
            .unwrap_or_default();
        let tli = r
            .timeline
            .map(|t| format!(", promoted onto timeline {t}"))
            .unwrap_or_default();
        writeln!(out, "recovery:   {s:.1} s{to}{replayed}{tli}")?;
    }
    if let Some(t) = r.last_replayed_commit {
        writeln!(
            out,
            "data as of: {} (last transaction replayed)",
            t.format("%Y-%m-%d %H:%M:%S UTC")
        )?;
    }
    if let Some(s) = r.checks_seconds {
        writeln!(out, "checks:     {s:.1} s")?;
    }
    for c in &r.checks {
        let mark = match c.outcome {
            CheckOutcome::Passed => "passed ",
            CheckOutcome::Failed => "FAILED ",
            CheckOutcome::Skipped => "skipped",
        };
        if c.detail.is_empty() {
            writeln!(out, "  {mark} {}", c.name)?;
        } else {
            writeln!(
                out,
                "  {mark} {}: {}",
                c.name,
                c.detail.replace('\n', "\n           ")
            )?;
        }
    }
    let verdict = if r.passed() { "PASSED" } else { "FAILED" };
    writeln!(out, "result:     {verdict}")?;
    if report.kept {
        writeln!(out, "kept:       {} (remove it when done)", report.dest.display())?;
    }
    Ok(())
}

fn as_json(report: &RestoreTestReport) -> serde_json::Value {
    let mut value = serde_json::to_value(&report.record).expect("records serialize");
    value["dest"] = report.dest.to_string_lossy().into_owned().into();
    value["kept"] = report.kept.into();
    value
}

/// Resolves when SIGINT or SIGTERM arrives, with the signal's number.
async fn interrupted() -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => libc_signal::SIGINT,
        _ = term.recv() => libc_signal::SIGTERM,
    }
}

mod libc_signal {
    pub const SIGINT: i32 = 2;
    pub const SIGTERM: i32 = 15;
}

pub async fn run(args: RestoreTestArgs, settings: &Settings, config: Option<&Path>) -> anyhow::Result<()> {
    let (store, keys) = crate::repo::open_existing_with_keys(settings).await?;
    let backup = if args.name == "LATEST" {
        BackupSelector::Latest
    } else {
        BackupSelector::Named(BackupName::parse(&args.name)?)
    };
    let target = super::backup_fetch::recovery_target(
        args.target_time,
        args.target_xid,
        args.target_name,
        args.target_lsn,
        args.target_immediate,
    )?;
    let timeout = match &args.timeout {
        Some(t) => crate::config::parse_timeout(t).map_err(|message| ConfigError::Invalid {
            name: "timeout",
            message,
        })?,
        None => std::time::Duration::from_secs(3600),
    };
    if timeout.is_zero() {
        return Err(ConfigError::Invalid {
            name: "timeout",
            message: "must be more than zero".into(),
        }
        .into());
    }
    let check_sql = match &args.check_sql {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                name: "check-sql",
                message: format!("cannot read {}: {e}", path.display()),
            })?;
            let checks = pgark_engine::parse_check_sql(&text);
            if checks.is_empty() {
                return Err(ConfigError::Invalid {
                    name: "check-sql",
                    message: format!("{} holds no statement", path.display()),
                }
                .into());
            }
            checks
        }
        None => Vec::new(),
    };
    let opts = RestoreTestOptions {
        backup,
        dest: args.dest,
        target,
        target_timeline: args.target_timeline,
        wal_fetch_command: super::backup_fetch::wal_fetch_command(settings, config)?,
        pg_bin: args.pg_bin,
        run_as: args.run_as,
        timeout,
        check_sql,
        check_db: args.check_db.unwrap_or_else(|| "postgres".into()),
        settings: parse_settings(&args.settings)?,
        keep: args.keep,
        concurrency: args
            .concurrency
            .or(settings.file.concurrency)
            .unwrap_or_else(crate::config::cpus),
        retry: settings.retry,
        keys,
        progress: Some(crate::progress::for_stderr("restore-test")),
        must_reach: must_reach(settings, config)?,
    };
    // A signal drops the test's future: the restore's workers are stopped
    // and waited for, the server is stopped, and then the scratch directory
    // removed, by their guards, before this returns.
    let report = tokio::select! {
        report = pgark_engine::restore_test(store, &opts) => report?,
        signal = interrupted() => return Err(Interrupted(signal).into()),
    };
    let mut out: Box<dyn std::io::Write> = if args.report_to_stderr {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&as_json(&report))?)?;
    } else {
        print_text(&report, &mut out)?;
    }
    conclude(report)
}

/// The exit: the failure of the restore or recovery as it is, a failed
/// check as [`CheckFailed`].
fn conclude(report: RestoreTestReport) -> anyhow::Result<()> {
    if let Some(e) = report.error {
        return Err(e.into());
    }
    if !report.record.passed() {
        return Err(CheckFailed(failed_checks(&report.record)).into());
    }
    Ok(())
}

fn failed_checks(record: &RestoreTestRecord) -> String {
    record
        .checks
        .iter()
        .filter(|c| c.outcome == CheckOutcome::Failed)
        .map(|c| format!("{} ({})", c.name, c.detail.lines().next().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_name_value_pairs() {
        assert_eq!(
            parse_settings(&["shared_preload_libraries=".into(), "work_mem=64MB".into()]).unwrap(),
            vec![
                ("shared_preload_libraries".into(), String::new()),
                ("work_mem".into(), "64MB".into())
            ]
        );
        assert!(parse_settings(&["no-equals".into()]).is_err());
        assert!(parse_settings(&["bad name=1".into()]).is_err());
        let err = parse_settings(&["ARCHIVE_MODE=on".into()]).unwrap_err();
        assert!(err.to_string().contains("restore-test's own"), "{err}");
    }
}
