use crate::config::Settings;
use clap::Args;
use pgark_engine::{BackupPushOptions, DeltaFrom, DeltaOptions};
use pgark_pgclient::ConnectOptions;
use std::path::PathBuf;
use std::time::Duration;

/// Take an online physical backup of a running cluster.
///
/// Runs a non-exclusive backup (fast checkpoint unless --spread-checkpoint) on one session,
/// copies the data directory and tablespaces through parallel compress/upload pipelines,
/// copies pg_control last, then waits until the backup's last WAL segment is archived and
/// writes the manifest that makes the backup exist. Connects like libpq: --pg-conn, or the
/// PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE environment variables; over TCP with TLS
/// as sslmode, sslrootcert, sslcert, sslkey (PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY)
/// say, sslmode prefer by default. Prints the new
/// backup's name on stdout, and on stderr one line saying what was made (name, full or delta,
/// files, size read and stored, time taken), terminal or not. With a retention policy (--retain-count, --retain-max-age or
/// their PGARK_RETAIN_* variables), then deletes what it expires, as `pgark delete --confirm`
/// does, reporting on stderr (--no-retain skips this).
#[derive(Debug, Clone, Args)]
pub struct BackupPushArgs {
    /// Then run restore-test on the new backup (its options from PGARK_PG_BIN, PGARK_RUN_AS,
    /// PGARK_CHECK_SQL, PGARK_CHECK_DB, PGARK_RESTORE_TEST_DEST, PGARK_RESTORE_TEST_TIMEOUT);
    /// when it fails, the retention policy is not applied, and the exit code is restore-test's.
    #[arg(long, env = "PGARK_TEST", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub test: Option<bool>,
    /// Data directory of the cluster [env: PGDATA].
    #[arg(value_name = "PGDATA")]
    pub pgdata_arg: Option<PathBuf>,
    /// Data directory of the cluster (same as the argument).
    #[arg(long, env = "PGARK_PGDATA", value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// libpq connection string or URL ("host=/var/run/postgresql user=postgres", "host=db
    /// sslmode=verify-full sslrootcert=/etc/pg-tls/ca.crt").
    #[arg(long, env = "PGARK_PG_CONN", value_name = "CONNINFO")]
    pub pg_conn: Option<String>,
    /// For a backup from a standby: conninfo of its primary, asked to switch WAL
    /// (pg_switch_wal) so the backup's last segment is archived at once [default: the
    /// standby's primary_conninfo].
    #[arg(long, env = "PGARK_PRIMARY_CONN", value_name = "CONNINFO")]
    pub primary_conn: Option<String>,
    /// Let the start checkpoint spread out instead of requesting it immediately.
    #[arg(long, env = "PGARK_SPREAD_CHECKPOINT", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub spread_checkpoint: Option<bool>,
    /// Parts compressed and uploaded at once [default: number of CPUs].
    #[arg(long, env = "PGARK_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,
    /// Target size of one stored part, in MiB; larger files are split into pieces of this
    /// size [default: 64].
    #[arg(long, env = "PGARK_PART_SIZE", value_name = "MIB")]
    pub part_size: Option<u64>,
    /// Seconds to wait for the backup's last WAL segment to be archived; 0 skips the wait
    /// and the archive_mode check [default: 300].
    #[arg(long, env = "PGARK_ARCHIVE_TIMEOUT", value_name = "SECONDS")]
    pub archive_timeout: Option<u64>,
    /// Take a delta backup: only the pages changed since the parent backup started (see
    /// --delta-from). Falls back to a full backup, saying why, when there is no suitable
    /// parent or the chain would exceed --delta-max-steps. Also implied by setting
    /// --delta-max-steps / PGARK_DELTA_MAX_STEPS (unless --full).
    #[arg(long, env = "PGARK_DELTA", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub delta: Option<bool>,
    /// Take a full backup even when PGARK_DELTA_MAX_STEPS is set.
    #[arg(long, env = "PGARK_FULL", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub full: Option<bool>,
    /// The parent of a delta: LATEST (the newest backup), LATEST_FULL or a backup name
    /// [default: LATEST].
    #[arg(long, env = "PGARK_DELTA_FROM", value_name = "LATEST|LATEST_FULL|NAME")]
    pub delta_from: Option<String>,
    /// The longest chain of deltas after a full backup; the next backup is full
    /// [default: 6].
    #[arg(long, env = "PGARK_DELTA_MAX_STEPS", value_name = "N")]
    pub delta_max_steps: Option<u32>,
    /// Exit with status 5 when data pages fail their checksum (the backup is still
    /// complete and listed; the pages are named in its manifest).
    #[arg(long, env = "PGARK_FAIL_ON_CORRUPT_PAGES", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", value_parser = clap::builder::BoolishValueParser::new(), value_name = "BOOL")]
    pub fail_on_corrupt_pages: Option<bool>,
    /// Mark the new backup permanent: retention never deletes it (see backup-mark). The
    /// mark is written before the manifest, so the backup is never listed without it.
    #[arg(long)]
    pub permanent: bool,
    /// After a successful backup, delete what the retention policy expires, as `pgark delete
    /// --confirm` would (see delete --help) [default: no policy, nothing deleted].
    #[arg(long, env = "PGARK_RETAIN_COUNT", value_name = "N")]
    pub retain_count: Option<u32>,
    /// After a successful backup, delete backups older than this (see delete --help).
    #[arg(long, env = "PGARK_RETAIN_MAX_AGE", value_name = "AGE")]
    pub retain_max_age: Option<String>,
    /// With a retention policy: the age past which backups without a manifest are garbage
    /// [default: 24h].
    #[arg(long, env = "PGARK_GARBAGE_AGE", value_name = "AGE")]
    pub garbage_age: Option<String>,
    /// Do not apply the retention policy after this backup.
    #[arg(long)]
    pub no_retain: bool,
}

/// Default of --delta-max-steps.
const DEFAULT_DELTA_MAX_STEPS: u32 = 6;

pub async fn run(
    args: BackupPushArgs,
    settings: &Settings,
    config: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let file = &settings.file;
    let pgdata = args
        .pgdata_arg
        .or(args.pgdata)
        .or_else(|| std::env::var_os("PGDATA").map(PathBuf::from))
        .or(file.pgdata.clone())
        .ok_or_else(|| crate::config::ConfigError::Invalid {
            name: "pgdata",
            message: "no data directory: give it as an argument, --pgdata, PGARK_PGDATA or PGDATA".into(),
        })?;
    let policy = super::delete::resolve_policy(args.retain_count, args.retain_max_age.as_deref(), settings)?;
    let garbage_age = super::delete::resolve_garbage_age(args.garbage_age.clone(), settings)?;
    let store = crate::repo::open(settings)?;
    let mut opts = BackupPushOptions::new(pgdata);
    opts.connect = ConnectOptions {
        conninfo: args.pg_conn.or(file.pg_conn.clone()),
        connect_timeout: None,
    };
    opts.primary_conn = args.primary_conn.or(file.primary_conn.clone());
    opts.compression = settings.compression;
    opts.fast_checkpoint = !args.spread_checkpoint.or(file.spread_checkpoint).unwrap_or(false);
    if let Some(n) = args.concurrency.or(file.concurrency) {
        opts.concurrency = n.max(1);
    }
    if let Some(mib) = args.part_size.or(file.part_size) {
        opts.part_size = mib.max(1) << 20;
    }
    opts.archive_timeout = match args.archive_timeout.or(file.archive_timeout) {
        Some(0) => None,
        Some(s) => Some(Duration::from_secs(s)),
        None => opts.archive_timeout,
    };
    let max_steps = args.delta_max_steps.or(file.delta_max_steps);
    let full = args.full.or(file.full).unwrap_or(false);
    let delta = args
        .delta
        .or(file.delta)
        .unwrap_or(max_steps.is_some_and(|n| n > 0) && !full);
    if delta && full {
        return Err(crate::config::ConfigError::Invalid {
            name: "delta",
            message: "--delta and --full contradict each other".into(),
        }
        .into());
    }
    if delta {
        let from = match args.delta_from.or(file.delta_from.clone()) {
            Some(s) => s
                .parse::<DeltaFrom>()
                .map_err(|message| crate::config::ConfigError::Invalid {
                    name: "delta-from",
                    message,
                })?,
            None => DeltaFrom::Latest,
        };
        opts.delta = Some(DeltaOptions {
            from,
            max_steps: max_steps.unwrap_or(DEFAULT_DELTA_MAX_STEPS),
        });
    }
    let fail_on_corrupt = args
        .fail_on_corrupt_pages
        .or(file.fail_on_corrupt_pages)
        .unwrap_or(false);
    opts.permanent = args.permanent;
    opts.retry = settings.retry;
    opts.keys = crate::encryption::open_keys(&*store, settings, true).await?;
    opts.progress = Some(crate::progress::for_stderr("backup-push"));
    let started = std::time::Instant::now();
    let manifest = pgark_engine::backup_push(store.clone(), &opts).await?;
    println!("{}", manifest.name);
    // On a terminal the bar is cleared by now; elsewhere (cron, a log
    // file) this is the line that says the backup was made.
    eprintln!("{}", summary(&manifest, started.elapsed()));
    if args.test.unwrap_or(false) {
        // The new backup's restore test before retention: a backup that
        // does not restore must not be what older ones are deleted for.
        let test = super::restore_test::RestoreTestArgs::for_backup(manifest.name.as_str());
        if let Err(e) = super::restore_test::run(test, settings, config).await {
            if !policy.is_empty() && !args.no_retain {
                eprintln!(
                    "pgark backup-push: the restore test of {} failed: retention not applied",
                    manifest.name
                );
            }
            return Err(e);
        }
    }
    // Retention after success: the backup is complete whatever happens
    // here; a failure is reported with its own exit code.
    if !policy.is_empty() && !args.no_retain {
        let what = super::delete::What::Policy { policy, garbage_age };
        let done = super::delete::execute(&*store, &opts.keys, &what, true).await?;
        eprintln!("{}", done.to_text());
    }
    if fail_on_corrupt {
        if let Some(e) = pgark_engine::EngineError::corrupt_pages(&manifest) {
            return Err(e.into());
        }
    }
    Ok(())
}

/// What backup-push made, in one line for stderr: name, full or delta,
/// files, size read and stored, time taken.
fn summary(m: &pgark_catalog::BackupManifest, took: Duration) -> String {
    format!(
        "pgark backup-push: backup {} complete: {}, {} files, {} read, {} stored, in {}",
        m.name,
        match &m.parent {
            Some(parent) => format!("delta of {parent}"),
            None => "full".to_string(),
        },
        m.files.len(),
        size(m.original_size),
        size(m.stored_size),
        duration(took)
    )
}

/// Bytes in the largest binary unit that keeps a number of at least 1:
/// `512 B`, `1.6 MiB`, `2.0 GiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `3.2 s`, `4 min 05 s`, `2 h 03 min`.
fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 60 {
        format!("{:.1} s", d.as_secs_f64())
    } else if secs < 3600 {
        format!("{} min {:02} s", secs / 60, secs % 60)
    } else {
        format!("{} h {:02} min", secs / 3600, secs / 60 % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::{duration, size};
    use std::time::Duration;

    #[test]
    fn sizes_and_durations_read_as_a_person_writes_them() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(1_667_585), "1.6 MiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(size(5 << 40), "5.0 TiB");
        assert_eq!(size(u64::MAX), "16777216.0 TiB");
        assert_eq!(duration(Duration::from_millis(3_240)), "3.2 s");
        assert_eq!(duration(Duration::from_secs(245)), "4 min 05 s");
        assert_eq!(duration(Duration::from_secs(7_380)), "2 h 03 min");
    }
}
