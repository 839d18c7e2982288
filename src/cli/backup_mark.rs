use crate::config::{ConfigError, Settings};
use clap::Args;
use pgark_catalog::BackupName;

/// Mark a backup permanent (never deleted by retention) or remove the mark.
///
/// The mark is a small object beside the backup's manifest
/// (backups/NAME/permanent); the manifest is not rewritten. Marking is idempotent. A NAME
/// that is not a completed backup exits 1; no repository at --repo exits 11.
#[derive(Debug, Clone, Args)]
pub struct BackupMarkArgs {
    /// The backup to mark.
    #[arg(value_name = "NAME")]
    pub name: String,
    /// Never expire the backup.
    #[arg(long, conflicts_with = "impermanent", required_unless_present = "impermanent")]
    pub permanent: bool,
    /// Remove the permanent mark.
    #[arg(long)]
    pub impermanent: bool,
}

pub async fn run(args: BackupMarkArgs, settings: &Settings) -> anyhow::Result<()> {
    let name = BackupName::parse(&args.name).map_err(|e| ConfigError::Invalid {
        name: "NAME",
        message: e.to_string(),
    })?;
    let (store, keys) = crate::repo::open_existing_with_keys(settings).await?;
    pgark_engine::mark_permanent(&*store, &keys, &name, args.permanent).await?;
    Ok(())
}
