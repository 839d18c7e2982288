use crate::config::Settings;
use crate::exit::Quiet;
use clap::Args;
use pgark_engine::{ErrorClass, WalFetchOptions};
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
}

pub async fn run(args: WalFetchArgs, settings: &Settings) -> anyhow::Result<()> {
    let (store, keys) = crate::repo::open_existing_with_keys(settings).await?;
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
    let opts = WalFetchOptions {
        retry: settings.retry,
        keys,
        until,
        refuse_tablespace_create: args.no_tablespace_create,
    };
    match pgark_engine::wal_fetch(store, &args.name, &args.dest, &opts).await {
        Ok(out) => {
            tracing::info!("restored {} ({} bytes)", out.file.file_name(), out.original_len);
            Ok(())
        }
        Err(e) if e.class() == ErrorClass::NotFound => Err(anyhow::Error::new(Quiet(e))),
        Err(e) => Err(e.into()),
    }
}
