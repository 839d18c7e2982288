//! Where the encryption key comes from, and turning that into a
//! [`Credential`] once per command.
//!
//! Sources (at most one may be given):
//!
//! * a key file: `--encryption-key-file`, `PGARK_ENCRYPTION_KEY_FILE`,
//!   `encryption_key_file` (exactly 32 raw bytes);
//! * key text in the environment: `PGARK_ENCRYPTION_KEY` (64 hex digits or
//!   base64 of 32 bytes). There is deliberately no `--encryption-key` flag:
//!   a key on the command line would show in process titles;
//! * a key command: `--encryption-key-command`,
//!   `PGARK_ENCRYPTION_KEY_COMMAND`, `encryption_key_command`;
//! * a passphrase (stretched with Argon2id): `--encryption-passphrase-file`,
//!   `PGARK_ENCRYPTION_PASSPHRASE_FILE`, `encryption_passphrase_file`, or the
//!   text in `PGARK_ENCRYPTION_PASSPHRASE`.
//!
//! Only where the key comes from is kept here (paths, the command); the
//! key itself is read when [`KeySources::credential`] is called and lives
//! in zeroizing buffers from then on.

use crate::config::ConfigError;
use pgark_crypto::{Credential, CryptoError, MasterKey};
use pgark_engine::EngineError;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where a key comes from: names and paths only, never key material.
#[derive(Debug, Clone, Default)]
pub struct KeySources {
    pub key_file: Option<PathBuf>,
    pub key_command: Option<String>,
    pub passphrase_file: Option<PathBuf>,
    /// The environment variable holding key text, if it is set (not empty).
    pub key_env: Option<&'static str>,
    /// The environment variable holding a passphrase, if it is set.
    pub passphrase_env: Option<&'static str>,
}

/// Environment variable with the current key as text.
pub const KEY_ENV: &str = "PGARK_ENCRYPTION_KEY";
/// Environment variable with the current passphrase.
pub const PASSPHRASE_ENV: &str = "PGARK_ENCRYPTION_PASSPHRASE";
/// Environment variable with the new key as text (`key rotate`).
pub const NEW_KEY_ENV: &str = "PGARK_NEW_ENCRYPTION_KEY";
/// Environment variable with the new passphrase (`key rotate`).
pub const NEW_PASSPHRASE_ENV: &str = "PGARK_NEW_ENCRYPTION_PASSPHRASE";

fn env_set(name: &'static str) -> Option<&'static str> {
    std::env::var_os(name)
        .filter(|v| !v.as_encoded_bytes().trim_ascii().is_empty())
        .map(|_| name)
}

impl KeySources {
    /// Sources from flags (or their environment variables) over the
    /// configuration file, plus the text environment variables.
    pub fn new(
        key_file: Option<PathBuf>,
        key_command: Option<String>,
        passphrase_file: Option<PathBuf>,
        key_env: &'static str,
        passphrase_env: &'static str,
    ) -> KeySources {
        KeySources {
            key_file,
            key_command,
            passphrase_file,
            key_env: env_set(key_env),
            passphrase_env: env_set(passphrase_env),
        }
    }

    fn given(&self) -> Vec<String> {
        let mut given = Vec::new();
        if self.key_file.is_some() {
            given.push("a key file".to_string());
        }
        if self.key_command.is_some() {
            given.push("a key command".to_string());
        }
        if self.passphrase_file.is_some() {
            given.push("a passphrase file".to_string());
        }
        given.extend(self.key_env.map(String::from));
        given.extend(self.passphrase_env.map(String::from));
        given
    }

    /// Whether any source is given.
    pub fn is_given(&self) -> bool {
        !self.given().is_empty()
    }

    /// Reads the key (or passphrase) from the one source given; `None` if
    /// none is.
    pub fn credential(&self) -> Result<Option<Credential>, anyhow::Error> {
        let given = self.given();
        if given.len() > 1 {
            return Err(ConfigError::Invalid {
                name: "encryption key",
                message: format!("give one key source, not {}", given.join(" and ")),
            }
            .into());
        }
        let key = |r: Result<MasterKey, CryptoError>| -> Result<Option<Credential>, anyhow::Error> {
            Ok(Some(Credential::Key(r.map_err(EngineError::from)?)))
        };
        if let Some(path) = &self.key_file {
            return key(MasterKey::from_file(path));
        }
        if let Some(command) = &self.key_command {
            return key(MasterKey::from_command(command));
        }
        if let Some(path) = &self.passphrase_file {
            return Ok(Some(Credential::Passphrase(read_passphrase_file(path)?)));
        }
        if let Some(name) = self.key_env {
            let value = Zeroizing::new(std::env::var(name).map_err(|_| {
                EngineError::from(CryptoError::KeyText {
                    reason: format!("{name} is not UTF-8 text"),
                })
            })?);
            return key(MasterKey::from_text(&value));
        }
        if let Some(name) = self.passphrase_env {
            let value = std::env::var(name).map_err(|_| {
                EngineError::from(CryptoError::Passphrase {
                    reason: "it is not UTF-8 text",
                })
            })?;
            return Ok(Some(Credential::Passphrase(Zeroizing::new(value))));
        }
        Ok(None)
    }

    /// The options that make a `pgark wal-fetch` in `restore_command` find
    /// the same key: the key file, key command or passphrase file (never a
    /// key). `None` when the key comes only from an environment variable,
    /// whose value must not be written into the server's configuration.
    pub fn restore_args(&self) -> Option<String> {
        if let Some(path) = &self.key_file {
            return Some(format!(" --encryption-key-file {}", shell_quote(&absolute(path))));
        }
        if let Some(command) = &self.key_command {
            return Some(format!(" --encryption-key-command {}", shell_quote(command)));
        }
        if let Some(path) = &self.passphrase_file {
            return Some(format!(
                " --encryption-passphrase-file {}",
                shell_quote(&absolute(path))
            ));
        }
        None
    }
}

fn read_passphrase_file(path: &Path) -> Result<Zeroizing<String>, EngineError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| CryptoError::KeyFileRead {
        path: path.into(),
        source,
    })?);
    let text = std::str::from_utf8(&bytes).map_err(|_| CryptoError::Passphrase {
        reason: "the passphrase file is not UTF-8 text",
    })?;
    // One trailing newline is the file's, not the passphrase's.
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    Ok(Zeroizing::new(text.to_string()))
}

fn absolute(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The repository's keys for this command, from the key settings: read
/// once, before anything is written. `write` sets up encryption on a new
/// repository when a key is given.
pub async fn open_keys(
    store: &dyn pgark_store::ObjectStore,
    settings: &crate::config::Settings,
    write: bool,
) -> anyhow::Result<pgark_engine::RepoKeys> {
    let credential = settings.encryption.credential()?;
    let keys = if write {
        pgark_engine::RepoKeys::open_for_write(store, credential.as_ref()).await?
    } else {
        pgark_engine::RepoKeys::open(store, credential.as_ref()).await?
    };
    Ok(keys)
}
