//! The repository's encryption keys, as the engine uses them.
//!
//! [`RepoKeys`] is obtained once per command ([`RepoKeys::open`] for
//! reading, [`RepoKeys::open_for_write`] for commands that write) and
//! handed to every engine function in its options: with a data key every
//! object written is encrypted under it and every object read must be.

use crate::EngineError;
use pgark_crypto::{repository, Credential, CryptoError, DataKey};
use pgark_store::ObjectStore;

/// The data key of an encrypted repository, or none for an unencrypted one.
#[derive(Debug, Clone, Default)]
pub struct RepoKeys {
    pub data_key: Option<DataKey>,
}

impl RepoKeys {
    /// No encryption.
    pub fn none() -> RepoKeys {
        RepoKeys::default()
    }

    /// Opens the repository for reading with what the user gave:
    /// [`CryptoError::KeyRequired`], [`CryptoError::WrongKey`] or
    /// [`CryptoError::RepositoryNotEncrypted`] otherwise.
    pub async fn open(
        store: &dyn ObjectStore,
        credential: Option<&Credential>,
    ) -> Result<RepoKeys, EngineError> {
        let data_key = repository::open(store, credential)
            .await
            .map_err(EngineError::from)?;
        Ok(RepoKeys { data_key })
    }

    /// Opens the repository for writing. A key for a repository that holds
    /// nothing yet sets up encryption (writes `keyring.json`); a key for a
    /// repository that already holds unencrypted objects, and no key for an
    /// encrypted one, are refused before anything is written.
    pub async fn open_for_write(
        store: &dyn ObjectStore,
        credential: Option<&Credential>,
    ) -> Result<RepoKeys, EngineError> {
        if let Some(credential) = credential {
            if repository::read_keyring(store).await?.is_none() {
                let existing = store.list("").await?;
                if existing.iter().any(|m| !m.key.as_str().starts_with("keyring")) {
                    return Err(CryptoError::RepositoryNotEncrypted.into());
                }
                let master = credential.new_master_key()?;
                match repository::init(store, &master).await {
                    Ok(data_key) => {
                        tracing::info!("set up encryption for repository {store}");
                        return Ok(RepoKeys {
                            data_key: Some(data_key),
                        });
                    }
                    // Another command set it up meanwhile: open it as usual.
                    Err(CryptoError::AlreadyEncrypted) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        RepoKeys::open(store, credential).await
    }

    pub fn is_encrypted(&self) -> bool {
        self.data_key.is_some()
    }
}
