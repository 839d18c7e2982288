use crate::config::Settings;
use clap::Args;
use pgark_engine::{WalPushOptions, WalPushStatus};
use std::path::PathBuf;

/// Archive one WAL file: archive_command = 'pgark wal-push %p'.
///
/// Checks that the file is a WAL segment of a supported PostgreSQL (13-18) whose header agrees
/// with its name (or a .history, .backup or .partial file), compresses it and stores it under
/// one key. Exits 0 only once the file is durable. Pushing a file that is already archived
/// with the same content succeeds without rewriting it; different content under the same name
/// fails with exit code 4 and changes nothing. The first segment pushed records the cluster's
/// system identifier in the repository; WAL of another cluster is refused (exit code 3).
///
/// Called by PostgreSQL for a segment in pg_wal, it also archives the next segments PostgreSQL
/// has marked ready (up to --archive-parallel at once) and records each one durably stored in
/// pg_wal/pgark-archived/, so that PostgreSQL's next calls return at once (see docs/01-archiving.md,
/// "Archiving ahead").
#[derive(Debug, Clone, Args)]
pub struct WalPushArgs {
    /// The WAL file to archive (PostgreSQL's %p).
    pub path: PathBuf,
    /// Segments archived at once when PostgreSQL calls for one in pg_wal: the one asked for and
    /// the next ready ones; 1 archives only the one asked for [default: number of CPUs].
    #[arg(long, env = "PGARK_ARCHIVE_PARALLEL", value_name = "N")]
    pub archive_parallel: Option<usize>,
}

pub async fn run(args: WalPushArgs, settings: &Settings) -> anyhow::Result<()> {
    let store = crate::repo::open(settings)?;
    let keys = crate::encryption::open_keys(&*store, settings, true).await?;
    let opts = WalPushOptions {
        compression: settings.compression,
        retry: settings.retry,
        part_size: None,
        keys,
    };
    let ahead = pgark_engine::ArchiveAhead {
        parallel: args.archive_parallel.unwrap_or_else(crate::config::cpus).max(1),
        repository: settings.repo()?.to_string(),
    };
    let out = pgark_engine::wal_push_ahead(store, &args.path, &opts, &ahead).await?;
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
    Ok(())
}
