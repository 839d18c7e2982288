use crate::config::{ConfigError, Settings};
use clap::Args;
use pgark_catalog::BackupName;
use pgark_engine::{ArchiveMode, BackupFetchOptions, BackupSelector, RecoveryOptions, RecoveryTarget};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Restore a base backup into an empty directory, ready to recover.
///
/// Downloads, verifies and writes every file in parallel, recreates tablespaces as symlinks
/// (--tablespace-map OID=PATH to move them), writes backup_label, and restores pg_control last
/// after everything is flushed to disk. The backed-up server's recovery settings in
/// postgresql.auto.conf are commented out; unless --no-recovery, restore_command (this pgark
/// binary's absolute path, wal-fetch and the same repository settings) and the chosen recovery
/// target are written there, and recovery.signal (standby.signal with --standby) created.
/// NAME is a backup name or LATEST: with --target-time, the newest backup the server itself
/// stopped before the target; with --target-lsn, the newest that stopped at or before it.
/// Never writes into a directory a running PostgreSQL uses.
#[derive(Debug, Clone, Args)]
pub struct BackupFetchArgs {
    /// Directory to restore into; must be empty or missing unless --force or --delta.
    pub dest: PathBuf,
    /// Backup name (see backup-list) or LATEST.
    #[arg(default_value = "LATEST")]
    pub name: String,
    /// Empty a non-empty DEST (and tablespace directories) first.
    #[arg(long, conflicts_with = "delta")]
    pub force: bool,
    /// Restore into an existing data directory (a failed primary, a stale replica): files
    /// that already match the backup (size and CRC-32C) are kept, the others rewritten,
    /// anything not in the backup removed, pg_control removed first and restored last.
    /// PostgreSQL must be stopped.
    #[arg(long)]
    pub delta: bool,
    /// With --delta: keep a file whose size and mtime match the backup's without reading
    /// it (faster; trusts that a changed file has a changed mtime).
    #[arg(long, requires = "delta")]
    pub delta_by_timestamp: bool,
    /// Check that every object of the backup exists and say what would be restored; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Parts downloaded and written at once [default: number of CPUs].
    #[arg(long, env = "PGARK_CONCURRENCY", value_name = "N")]
    pub concurrency: Option<usize>,
    /// Restore tablespace OID into PATH instead of its original location (repeatable).
    #[arg(long, value_name = "OID=PATH")]
    pub tablespace_map: Vec<String>,
    /// Recover up to this time ('2026-11-22 10:30:00+00').
    #[arg(long, value_name = "TIME", group = "target")]
    pub target_time: Option<String>,
    /// Recover up to this transaction ID.
    #[arg(long, value_name = "XID", group = "target")]
    pub target_xid: Option<String>,
    /// Recover up to this named restore point (pg_create_restore_point).
    #[arg(long, value_name = "NAME", group = "target")]
    pub target_name: Option<String>,
    /// Recover up to this WAL location (X/X).
    #[arg(long, value_name = "LSN", group = "target")]
    pub target_lsn: Option<String>,
    /// Stop as soon as the backup is consistent.
    #[arg(long, group = "target")]
    pub target_immediate: bool,
    /// What to do at the target: promote, pause or shutdown.
    #[arg(long, value_name = "ACTION", value_parser = ["promote", "pause", "shutdown"])]
    pub target_action: Option<String>,
    /// Timeline to recover along: latest, current or a number.
    #[arg(long, value_name = "TLI")]
    pub target_timeline: Option<String>,
    /// Create standby.signal: the restored server follows the archive as a standby.
    #[arg(long)]
    pub standby: bool,
    /// Write no recovery settings and no signal file (the backed-up server's recovery
    /// settings in postgresql.auto.conf are disabled all the same).
    #[arg(long, conflicts_with_all = ["target", "standby", "target_action", "target_timeline"])]
    pub no_recovery: bool,
    /// preserve: the restored server archives as the backed-up one did (a restore in its
    /// place). off: archive_mode = off, for a clone or a test restore, which would otherwise
    /// archive its own timeline into the same repository.
    #[arg(long, value_name = "MODE", value_parser = ["preserve", "off"], default_value = "preserve")]
    pub archive_mode: String,
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// restore_command: this binary, wal-fetch, and the repository settings
/// in force now, so it works as the postgres user without PATH changes.
pub(super) fn restore_command(
    settings: &Settings,
    config: Option<&Path>,
    standby: bool,
) -> anyhow::Result<String> {
    restore_command_for(settings, config, standby, true)
}

fn restore_command_for(
    settings: &Settings,
    config: Option<&Path>,
    standby: bool,
    warn_env_key: bool,
) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let mut cmd = shell_quote(&exe.to_string_lossy());
    if let Some(cfg) = config {
        cmd += &format!(" --config {}", shell_quote(&absolute(cfg).to_string_lossy()));
    }
    let repo = settings.repo()?;
    let repo = if repo.contains("://") {
        repo.to_string()
    } else {
        absolute(Path::new(repo)).to_string_lossy().into_owned()
    };
    cmd += &format!(" --repo {}", shell_quote(&repo));
    // Credentials are not written down: the server's environment, its
    // user's profile or an instance/pod identity must provide them.
    let store_flags = if repo.starts_with("s3://") {
        settings.s3.to_flags()
    } else if repo.starts_with("gs://") {
        settings.gcs.to_flags()
    } else if repo.starts_with("azure://") {
        settings.azure.to_flags()
    } else {
        Vec::new()
    };
    for flag in store_flags {
        cmd += " ";
        cmd += &if flag.starts_with("--") {
            flag
        } else {
            shell_quote(&flag)
        };
    }
    match settings.encryption.restore_args() {
        Some(args) => cmd += &args,
        None if settings.encryption.is_given() && warn_env_key => tracing::warn!(
            "the key comes from the environment ({}), which restore_command cannot carry without \
             writing the key into postgresql.auto.conf: set it in the restored server's environment \
             too, or give the key by --encryption-key-file or --encryption-key-command",
            settings
                .encryption
                .key_env
                .or(settings.encryption.passphrase_env)
                .unwrap_or("")
        ),
        None => {}
    }
    if !standby {
        // A one-off recovery must not end early on a repository failure.
        cmd += " --abort-on-error";
    }
    cmd += " wal-fetch %f %p";
    Ok(cmd)
}

/// restore_command without its arguments: up to and including `wal-fetch`,
/// for a caller that adds wal-fetch's options and `%f %p`.
/// No warning about a key in the environment: the caller starts the
/// server itself, which inherits it.
pub(super) fn wal_fetch_command(settings: &Settings, config: Option<&Path>) -> anyhow::Result<String> {
    let full = restore_command_for(settings, config, false, false)?;
    Ok(full
        .strip_suffix(" %f %p")
        .expect("restore_command ends with its arguments")
        .to_string())
}

fn parse_tablespace_map(items: &[String]) -> Result<HashMap<u32, PathBuf>, ConfigError> {
    items
        .iter()
        .map(|item| {
            let bad = || ConfigError::Invalid {
                name: "tablespace-map",
                message: format!("{item:?} is not OID=PATH"),
            };
            let (oid, path) = item.split_once('=').ok_or_else(bad)?;
            let oid = oid.parse::<u32>().map_err(|_| bad())?;
            if !Path::new(path).is_absolute() {
                return Err(ConfigError::Invalid {
                    name: "tablespace-map",
                    message: format!("{path:?} must be absolute"),
                });
            }
            Ok((oid, PathBuf::from(path)))
        })
        .collect()
}

/// The recovery target the --target-* options name (at most one: clap's
/// group), checked.
pub(super) fn recovery_target(
    time: Option<String>,
    xid: Option<String>,
    name: Option<String>,
    lsn: Option<String>,
    immediate: bool,
) -> anyhow::Result<Option<RecoveryTarget>> {
    Ok(if let Some(t) = time {
        pgark_engine::parse_target_time(&t)?;
        Some(RecoveryTarget::Time(t))
    } else if let Some(x) = xid {
        Some(RecoveryTarget::Xid(x))
    } else if let Some(n) = name {
        Some(RecoveryTarget::Name(n))
    } else if let Some(l) = lsn {
        l.parse::<pgark_pg::Lsn>().map_err(|_| ConfigError::Invalid {
            name: "target-lsn",
            message: format!("{l:?} is not an LSN like 0/3000028"),
        })?;
        Some(RecoveryTarget::Lsn(l))
    } else if immediate {
        Some(RecoveryTarget::Immediate)
    } else {
        None
    })
}

pub async fn run(args: BackupFetchArgs, settings: &Settings, config: Option<&Path>) -> anyhow::Result<()> {
    let (store, keys) = crate::repo::open_existing_with_keys(settings).await?;
    let backup = if args.name == "LATEST" {
        BackupSelector::Latest
    } else {
        BackupSelector::Named(BackupName::parse(&args.name)?)
    };
    let target = recovery_target(
        args.target_time,
        args.target_xid,
        args.target_name,
        args.target_lsn,
        args.target_immediate,
    )?;
    let recovery = if args.no_recovery {
        None
    } else {
        Some(RecoveryOptions {
            restore_command: Some(restore_command(settings, config, args.standby)?),
            target,
            action: args.target_action,
            timeline: args.target_timeline,
            standby: args.standby,
        })
    };
    let opts = BackupFetchOptions {
        dest: args.dest,
        backup,
        force: args.force,
        concurrency: args
            .concurrency
            .or(settings.file.concurrency)
            .unwrap_or_else(crate::config::cpus),
        tablespace_map: parse_tablespace_map(&args.tablespace_map)?,
        recovery,
        archive_mode: if args.archive_mode == "off" {
            ArchiveMode::Off
        } else {
            ArchiveMode::Preserve
        },
        dry_run: args.dry_run,
        delta: args.delta,
        delta_by_timestamp: args.delta_by_timestamp,
        progress: Some(crate::progress::for_stderr("backup-fetch")),
        retry: settings.retry,
        keys,
    };
    let out = pgark_engine::backup_fetch(store, &opts).await?;
    let m = &out.manifest;
    eprintln!("pgark backup-fetch: chose {}", out.reason);
    if out.dry_run {
        println!(
            "would restore backup {} ({} files, {} bytes, {} parts; all present) into {}",
            m.name,
            out.files,
            out.bytes,
            m.parts.len(),
            opts.dest.display()
        );
    } else {
        println!(
            "restored backup {} ({} files, {} bytes) into {}",
            m.name,
            out.files,
            out.bytes,
            opts.dest.display()
        );
    }
    Ok(())
}
