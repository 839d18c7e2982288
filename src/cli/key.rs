use crate::config::Settings;
use crate::encryption::{KeySources, NEW_KEY_ENV, NEW_PASSPHRASE_ENV};
use clap::{Args, Subcommand};
use pgark_crypto::repository::{self, Rotation};
use pgark_engine::EngineError;
use std::path::PathBuf;

/// Manage the encryption key of an encrypted repository.
#[derive(Debug, Clone, Subcommand)]
pub enum KeyCommand {
    Rotate(RotateArgs),
}

/// Replace the repository's key: the current key (given as for any command) opens the
/// repository, the new one replaces it. Nothing is re-encrypted: the repository's data key is
/// re-wrapped under the new key, so afterwards the old key no longer opens the repository
/// and every backup and WAL file restores with the new one. Safe to interrupt: run it again
/// with the same two keys to finish. Needs an existing repository (exit 11 where there is none).
/// Give the new key by --new-key-file, PGARK_NEW_ENCRYPTION_KEY
/// (text), --new-encryption-key-command or --new-encryption-passphrase-file
/// (or PGARK_NEW_ENCRYPTION_PASSPHRASE).
#[derive(Debug, Clone, Args)]
pub struct RotateArgs {
    /// The new key: a file holding exactly 32 raw bytes.
    #[arg(
        long,
        env = "PGARK_NEW_ENCRYPTION_KEY_FILE",
        value_name = "PATH",
        visible_alias = "new-encryption-key-file"
    )]
    pub new_key_file: Option<PathBuf>,
    /// The new key: a command (sh -c) printing it.
    #[arg(long, env = "PGARK_NEW_ENCRYPTION_KEY_COMMAND", value_name = "CMD")]
    pub new_encryption_key_command: Option<String>,
    /// The new key: a file holding a passphrase (stretched with Argon2id).
    #[arg(long, env = "PGARK_NEW_ENCRYPTION_PASSPHRASE_FILE", value_name = "PATH")]
    pub new_encryption_passphrase_file: Option<PathBuf>,
}

pub async fn rotate(args: RotateArgs, settings: &Settings) -> anyhow::Result<()> {
    let store = crate::repo::open_existing(settings).await?;
    let new_sources = KeySources::new(
        args.new_key_file,
        args.new_encryption_key_command,
        args.new_encryption_passphrase_file,
        NEW_KEY_ENV,
        NEW_PASSPHRASE_ENV,
    );
    let Some(new) = new_sources.credential()? else {
        return Err(crate::config::ConfigError::Invalid {
            name: "new key",
            message: format!(
                "give the new key with --new-key-file, {NEW_KEY_ENV}, --new-encryption-key-command \
                 or --new-encryption-passphrase-file"
            ),
        }
        .into());
    };
    let Some(old) = settings.encryption.credential()? else {
        return Err(EngineError::from(pgark_crypto::CryptoError::KeyRequired).into());
    };
    let outcome = repository::rotate(&*store, &old, &new)
        .await
        .map_err(EngineError::from)?;
    match outcome {
        Rotation::Rotated => println!("rotated the repository key: only the new key opens it now"),
        Rotation::Resumed => println!("finished an interrupted key rotation: only the new key opens it now"),
        Rotation::AlreadyDone => println!("the new key already opens this repository alone: nothing to do"),
    }
    Ok(())
}
