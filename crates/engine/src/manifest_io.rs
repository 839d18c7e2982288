//! Storing, finding and reading backup manifests.

use crate::EngineError;
use futures::StreamExt;
use pgark_catalog::{BackupManifest, BackupName, BACKUPS_PREFIX};
use pgark_codec::{decode_to_vec, encode_to_vec, CompressionSpec};
use pgark_store::{ObjectStore, ObjectStoreExt, PutMode};

/// Writes the manifest, create-only: it is the completion marker.
pub(crate) async fn put_manifest(
    store: &dyn ObjectStore,
    manifest: &BackupManifest,
) -> Result<(), EngineError> {
    let json = manifest.to_json();
    let (stored, _) =
        encode_to_vec(&json, CompressionSpec::default()).map_err(|e| EngineError::Internal(e.to_string()))?;
    store
        .put(&manifest.name.manifest_key(), stored.into(), PutMode::Create)
        .await?;
    Ok(())
}

/// Reads and verifies one backup's manifest.
pub async fn load_manifest(
    store: &dyn ObjectStore,
    name: &BackupName,
) -> Result<BackupManifest, EngineError> {
    let key = name.manifest_key();
    let stored = store.get_bytes(&key).await.map_err(|e| {
        if e.is_not_found() {
            EngineError::NotFound {
                what: format!("backup {name}"),
                key: key.to_string(),
            }
        } else {
            e.into()
        }
    })?;
    let (json, _) = decode_to_vec(&stored).map_err(|source| EngineError::Integrity {
        key: key.to_string(),
        source,
    })?;
    BackupManifest::from_json(&json).map_err(|source| EngineError::Catalog { source })
}

/// Every completed backup (those with a manifest), oldest first.
pub async fn list_backups(store: &dyn ObjectStore) -> Result<Vec<BackupManifest>, EngineError> {
    let names: Vec<BackupName> = store
        .list(BACKUPS_PREFIX)
        .await?
        .iter()
        .filter_map(|m| BackupName::from_manifest_key(&m.key))
        .collect();
    let loaded: Vec<Result<BackupManifest, EngineError>> =
        futures::stream::iter(names.iter().map(|n| load_manifest(store, n)))
            .buffered(8)
            .collect()
            .await;
    let mut manifests = loaded.into_iter().collect::<Result<Vec<_>, _>>()?;
    manifests.sort_by(|a, b| {
        a.finished_at
            .cmp(&b.finished_at)
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(manifests)
}
