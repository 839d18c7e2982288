//! Reading and first-time writing of `repository.json`.

use crate::EngineError;
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
