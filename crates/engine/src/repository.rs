//! Reading and first-time writing of `repository.json`, the object that
//! makes a place a pgark repository.
//!
//! Only the commands that write (wal-push, backup-push) create it
//! ([`ensure_repository_meta`]); every other command first calls
//! [`require_repository`], so that a wrong URL, an unmounted volume or a
//! prefix nothing was archived into is reported as such, and never taken
//! for an archive that lacks the requested file (which would end a
//! recovery early) or for a repository without backups.

use crate::{EngineError, RetryPolicy};
use pgark_catalog::{RepositoryMeta, REPOSITORY_META_KEY};
use pgark_store::{Key, ObjectStore, ObjectStoreExt, PutMode};

fn meta_key() -> Key {
    Key::new(REPOSITORY_META_KEY).expect("constant key is valid")
}

/// The repository's metadata, or `None` for a repository nothing has been
/// written to yet.
pub async fn load_repository_meta(store: &dyn ObjectStore) -> Result<Option<RepositoryMeta>, EngineError> {
    match store.get_bytes(&meta_key()).await {
        Ok(bytes) => RepositoryMeta::from_json(&bytes)
            .map(Some)
            .map_err(|source| EngineError::Catalog { source }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The metadata of the repository a reading command is about to use, read
/// (with retries of transient failures) before anything else;
/// [`EngineError::NoRepository`] when there is no `repository.json`. A
/// `repository.json` that cannot be read or parsed, or is of a newer format,
/// is the storage or integrity error it is, not "no repository". Reads only.
pub async fn require_repository(
    store: &dyn ObjectStore,
    retry: &RetryPolicy,
) -> Result<RepositoryMeta, EngineError> {
    retry
        .run("read repository metadata", || load_repository_meta(store))
        .await?
        .ok_or_else(|| EngineError::NoRepository {
            url: store.to_string(),
            reason: format!("{REPOSITORY_META_KEY} is missing"),
        })
}

/// Returns the repository's metadata, creating it from `candidate` if the
/// repository has none. Create-only: of two commands racing to initialise
/// a repository, one writes and both then read the same document.
pub async fn ensure_repository_meta(
    store: &dyn ObjectStore,
    candidate: RepositoryMeta,
) -> Result<RepositoryMeta, EngineError> {
    if let Some(meta) = load_repository_meta(store).await? {
        return Ok(meta);
    }
    match store
        .put(&meta_key(), candidate.to_json().into(), PutMode::Create)
        .await
    {
        Ok(_) => {
            tracing::info!(
                "initialised repository {store} for system identifier {}",
                candidate.system_identifier
            );
            Ok(candidate)
        }
        Err(e) if e.is_already_exists() => load_repository_meta(store)
            .await?
            .ok_or_else(|| EngineError::Internal("repository.json vanished after a create race".into())),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorClass;
    use pgark_store::MemoryStore;

    #[tokio::test]
    async fn require_repository_tells_missing_from_damaged() {
        let store = MemoryStore::new();
        let retry = RetryPolicy::default();
        let err = require_repository(&store, &retry).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::NoRepository, "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&store.to_string()) && msg.contains("repository.json is missing"),
            "{msg}"
        );

        // Objects without repository.json (a prefix above a repository,
        // a keyring alone) are no repository either.
        store
            .put(
                &Key::new("wal/00000002.history").unwrap(),
                "x".into(),
                PutMode::Create,
            )
            .await
            .unwrap();
        let err = require_repository(&store, &retry).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::NoRepository, "{err}");

        store
            .put(&meta_key(), "{ damaged".into(), PutMode::Create)
            .await
            .unwrap();
        let err = require_repository(&store, &retry).await.unwrap_err();
        assert_eq!(err.class(), ErrorClass::Integrity, "{err}");

        let meta = RepositoryMeta::new(7, 17, 16 << 20);
        store
            .put(&meta_key(), meta.to_json().into(), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(require_repository(&store, &retry).await.unwrap(), meta);
    }
}
