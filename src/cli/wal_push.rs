use crate::config::Settings;
use clap::Args;
use pgark_engine::{ArchiveAhead, WalPushOptions, WalPushOutcome, WalPushStatus};
use std::path::PathBuf;
use std::sync::Arc;

/// Archive one WAL file: archive_command = 'pgark wal-push %p'.
///
/// Checks that the file is a WAL segment of a supported PostgreSQL (13-18) whose header agrees
/// with its name (or a .history, .backup or .partial file), compresses it and stores it under
/// one key. Exits 0 only once the file is durable. Pushing a file that is already archived
/// with the same content succeeds without rewriting it; different content under the same name
/// fails with exit code 4 and changes nothing. The first segment pushed records the cluster's
/// system identifier in the repository; WAL of another cluster is refused (exit code 3).
///
/// Called by PostgreSQL for a segment in pg_wal while more are ready, it also starts a
/// background archiver that pushes the ready segments, --archive-parallel at once, and records
/// each one durably stored in pg_wal/pgark-archived/, so that PostgreSQL's next calls return
/// at once (see docs/01-archiving.md, "Archiving ahead").
#[derive(Debug, Clone, Args)]
pub struct WalPushArgs {
    /// The WAL file to archive (PostgreSQL's %p).
    pub path: PathBuf,
    /// Segments archived at once ahead of PostgreSQL's archiver by the background archiver (or,
    /// without a running server, by this call along with the one asked for); 1 archives only
    /// the one asked for [default: number of CPUs].
    #[arg(long, env = "PGARK_ARCHIVE_PARALLEL", value_name = "N")]
    pub archive_parallel: Option<usize>,
    /// Run as the background archiver of PATH's pg_wal (wal-push starts it itself).
    #[arg(long, hide = true)]
    pub archiver: bool,
}

/// The hidden flag that makes wal-push the background archiver.
pub const ARCHIVER_FLAG: &str = "--archiver";

pub async fn run(args: WalPushArgs, settings: &Settings) -> anyhow::Result<()> {
    let parallel = args.archive_parallel.unwrap_or_else(crate::config::cpus).max(1);
    if args.archiver {
        if let Err(e) = run_archiver(&args, parallel, settings).await {
            tracing::warn!("the background archiver stopped: {e:#}");
        }
        // Always 0: see cli::is_background.
        return Ok(());
    }
    let store = crate::repo::open(settings)?;
    let mut ahead = ArchiveAhead {
        parallel,
        repository: settings.repo()?.to_string(),
        start_archiver: None,
    };
    // Answered from the spool before anything else is read (the keys).
    if let Some(out) = pgark_engine::archived_ahead(&*store, &args.path, &ahead).await? {
        report(&out);
        return Ok(());
    }
    let opts = push_options(&*store, settings).await?;
    ahead.start_archiver = Some(Arc::new(|lock: &std::fs::File| {
        super::detach::start_detached(ARCHIVER_FLAG, lock)
    }));
    let out = pgark_engine::wal_push_ahead(store, &args.path, &opts, &ahead).await?;
    report(&out);
    Ok(())
}

/// How a segment is pushed: the settings' codec and retries, the
/// repository's keys (opened here: this reads the keyring).
async fn push_options(
    store: &dyn pgark_store::ObjectStore,
    settings: &Settings,
) -> anyhow::Result<WalPushOptions> {
    Ok(WalPushOptions {
        compression: settings.compression,
        retry: settings.retry,
        part_size: None,
        keys: crate::encryption::open_keys(store, settings, true).await?,
    })
}

fn report(out: &WalPushOutcome) {
    match out.status {
        WalPushStatus::Stored => tracing::info!(
            "archived {} ({} bytes, stored {} bytes as {})",
            out.file.file_name(),
            out.original_len,
            out.stored_len,
            out.key
        ),
        WalPushStatus::ArchivedAhead => tracing::info!(
            "{} was archived ahead by an earlier wal-push",
            out.file.file_name()
        ),
        WalPushStatus::AlreadyArchived => {
            tracing::info!(
                "{} was already archived with the same content",
                out.file.file_name()
            )
        }
    }
}

/// The background archiver of the pg_wal holding `args.path`, when the
/// spool's lock is ours (passed on by the wal-push that started us).
async fn run_archiver(args: &WalPushArgs, parallel: usize, settings: &Settings) -> anyhow::Result<()> {
    let Some(pg_wal) = pgark_engine::pg_wal_of(&args.path) else {
        return Ok(());
    };
    // Before anything else opens a file: the lock is descriptor 3.
    let Some(lock) = pgark_engine::adopt_archiver_lock(&pg_wal) else {
        // Another archiver holds the spool.
        return Ok(());
    };
    let store = crate::repo::open(settings)?;
    let repository = settings.repo()?.to_string();
    let opts = push_options(&*store, settings).await?;
    // Stopped by a signal, it still exits 0 (see cli::is_background):
    // what it was pushing is pushed again by PostgreSQL's own calls.
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int, mut hup) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
        signal(SignalKind::hangup())?,
    );
    tokio::select! {
        result = pgark_engine::run_archiver(store, &pg_wal, lock, opts, parallel, &repository) => result?,
        _ = term.recv() => tracing::warn!("the background archiver was stopped (SIGTERM)"),
        _ = int.recv() => tracing::warn!("the background archiver was stopped (SIGINT)"),
        _ = hup.recv() => tracing::warn!("the background archiver was stopped (SIGHUP)"),
    }
    Ok(())
}
