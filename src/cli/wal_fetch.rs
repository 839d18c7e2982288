use crate::config::Settings;
use crate::exit::Quiet;
use clap::Args;
use pgark_engine::{ErrorClass, FetchSpool, WalFetchOptions};
use std::path::PathBuf;

/// Restore one archived WAL file: restore_command = 'pgark wal-fetch %f %p'.
///
/// Downloads and verifies the file into a temporary file beside DEST, then renames it into
/// place: DEST is never left half-written. A file that is not in the archive exits 1 quietly
/// (PostgreSQL asks for such files routinely). No repository at --repo (no repository.json: a
/// wrong path or prefix, an unmounted volume) exits 11; nothing is created. Any other failure
/// exits with its own code
/// and one line naming the object and the cause; with --abort-on-error those codes are
/// raised above 125 so that PostgreSQL aborts recovery rather than ending it at the wrong point.
#[derive(Debug, Clone, Args)]
pub struct WalFetchArgs {
    /// Name of the archived file (PostgreSQL's %f).
    pub name: String,
    /// Where to write it (PostgreSQL's %p).
    pub dest: PathBuf,
    /// Hand out no segment after this one (by number, on any timeline): later ones are "not
    /// found", so recovery ends there (restore-test sets it to the archive's end when it starts).
    #[arg(long, value_name = "SEGMENT")]
    pub until: Option<String>,
    /// Refuse (exit 3) a segment that creates a tablespace: its replay would use the
    /// tablespace's original directory (restore-test sets it).
    #[arg(long)]
    pub no_tablespace_create: bool,
    /// Segments fetched at once ahead of a running server's recovery (DEST is
    /// pg_wal/RECOVERYXLOG): a detached prefetcher keeps up to twice this many verified
    /// segments (at most 256 MiB) in pg_wal/pgark-prefetch/ so the next calls return at once; 1 fetches only the one asked for [default: the number of
    /// CPUs, at most 4]. See docs/01-archiving.md, "Prefetching for recovery".
    #[arg(long, env = "PGARK_FETCH_PARALLEL", value_name = "N")]
    pub fetch_parallel: Option<usize>,
    /// Run as the prefetcher of DEST's pg_wal (wal-fetch starts it itself).
    #[arg(long, hide = true)]
    pub prefetch_worker: bool,
}

/// The hidden flag that makes wal-fetch the prefetcher.
pub const PREFETCH_WORKER_FLAG: &str = "--prefetch-worker";

/// The default of --fetch-parallel is the number of CPUs up to this.
const DEFAULT_FETCH_PARALLEL_MAX: usize = 4;

pub async fn run(args: WalFetchArgs, settings: &Settings) -> anyhow::Result<()> {
    let until =
        match &args.until {
            Some(name) => Some(pgark_pg::WalSegmentName::parse(name).map_err(|e| {
                crate::config::ConfigError::Invalid {
                    name: "until",
                    message: format!("{name:?} is not a WAL segment name: {e}"),
                }
            })?),
            None => None,
        };
    // Replay is one process: more downloads than this would only fill pg_wal.
    let parallel = args
        .fetch_parallel
        .unwrap_or_else(|| crate::config::cpus().min(DEFAULT_FETCH_PARALLEL_MAX))
        .max(1);
    let spool = match parallel {
        1 => None,
        _ => FetchSpool::for_recovery(&args.dest, settings.repo()?),
    };
    let mut opts = WalFetchOptions {
        retry: settings.retry,
        keys: Default::default(),
        until,
        refuse_tablespace_create: args.no_tablespace_create,
    };
    if args.prefetch_worker {
        let Some(spool) = spool else {
            // Its server stopped before it started, or it was run by hand.
            return Ok(());
        };
        if let Err(e) = run_prefetcher(spool, opts, parallel, settings).await {
            tracing::warn!("the prefetcher stopped: {e:#}");
        }
        // Always 0: see cli::is_background.
        return Ok(());
    }
    let not_found = |e: pgark_engine::EngineError| match e.class() {
        ErrorClass::NotFound => anyhow::Error::new(Quiet(e)),
        _ => e.into(),
    };
    if let Some(spool) = &spool {
        // Handed over from the spool without opening the repository.
        if let Some(out) = spool.take(&args.name, &args.dest, &opts).map_err(not_found)? {
            tracing::info!(
                "restored {} ({} bytes, prefetched)",
                out.file.file_name(),
                out.original_len
            );
            spool.want(&out.file.file_name(), out.original_len);
            return Ok(());
        }
    }
    // No prefetcher runs when this takes the lock: it is passed on to the
    // one started below, so that no other can start in between.
    let lock = spool.as_ref().and_then(FetchSpool::try_lock);
    let (store, keys) = crate::repo::open_existing_with_keys(settings).await?;
    opts.keys = keys;
    let out = pgark_engine::wal_fetch(store, &args.name, &args.dest, &opts)
        .await
        .map_err(not_found)?;
    tracing::info!("restored {} ({} bytes)", out.file.file_name(), out.original_len);
    if let (Some(spool), pgark_pg::ArchivedFile::Segment(_)) = (&spool, &out.file) {
        spool.want(&out.file.file_name(), out.original_len);
        if let Some(lock) = lock {
            if let Err(e) = start_prefetcher(&lock) {
                tracing::warn!("could not start the prefetcher: {e}");
            }
        }
    }
    Ok(())
}

async fn run_prefetcher(
    spool: FetchSpool,
    mut opts: WalFetchOptions,
    parallel: usize,
    settings: &Settings,
) -> anyhow::Result<()> {
    let Some(lock) = spool.adopt_lock() else {
        // Another prefetcher holds the spool.
        return Ok(());
    };
    let (store, keys) = crate::repo::open_existing_with_keys(settings).await?;
    opts.keys = keys;
    pgark_engine::run_prefetcher(store, spool, lock, opts, parallel).await?;
    Ok(())
}

/// Starts this command again, detached, as the prefetcher (see
/// [`super::detach::start_detached`]).
fn start_prefetcher(lock: &std::fs::File) -> std::io::Result<()> {
    super::detach::start_detached(PREFETCH_WORKER_FLAG, lock)
}
