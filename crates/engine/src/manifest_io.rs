//! Storing, finding and reading backup manifests.

use crate::EngineError;
use crate::RepoKeys;
use futures::StreamExt;
use pgark_catalog::{BackupManifest, BackupName, BACKUPS_PREFIX};
use pgark_codec::{encode_to_vec, encode_to_vec_encrypted, CompressionSpec};
use pgark_store::{ObjectStore, ObjectStoreExt, PutMode};
use std::collections::HashSet;
use std::io::Read;

/// Writes the manifest, create-only: it is the completion marker.
pub(crate) async fn put_manifest(
    store: &dyn ObjectStore,
    manifest: &BackupManifest,
    keys: &RepoKeys,
) -> Result<(), EngineError> {
    let json = manifest.to_json();
    let key = manifest.name.manifest_key();
    let (stored, _) = match &keys.data_key {
        Some(dk) => encode_to_vec_encrypted(&json, CompressionSpec::default(), dk, key.as_str()),
        None => encode_to_vec(&json, CompressionSpec::default()),
    }
    .map_err(|e| EngineError::Internal(e.to_string()))?;
    store.put(&key, stored.into(), PutMode::Create).await?;
    Ok(())
}

/// Reads and verifies one backup's manifest.
pub async fn load_manifest(
    store: &dyn ObjectStore,
    name: &BackupName,
    keys: &RepoKeys,
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
    let integrity = |source| EngineError::Integrity {
        key: key.to_string(),
        source,
    };
    let mut reader =
        pgark_codec::ObjectReader::new_with_key(&stored[..], keys.data_key.as_ref(), key.as_str())
            .map_err(integrity)?;
    if keys.data_key.is_some() && !reader.is_encrypted() {
        return Err(integrity(pgark_codec::CodecError::Crypto(
            pgark_crypto::CryptoError::NotEncryptedStream {
                reason: "an unencrypted manifest in an encrypted repository".into(),
            },
        )));
    }
    let mut json = Vec::new();
    reader
        .read_to_end(&mut json)
        .map_err(|e| integrity(pgark_codec::CodecError::from(e)))?;
    BackupManifest::from_json(&json).map_err(|source| EngineError::Catalog { source })
}

/// Every completed backup (those with a manifest), oldest first.
pub async fn list_backups(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
) -> Result<Vec<BackupManifest>, EngineError> {
    Ok(list_backups_marked(store, keys).await?.0)
}

/// [`list_backups`], and the names of those marked permanent, from one
/// listing.
pub async fn list_backups_marked(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
) -> Result<(Vec<BackupManifest>, HashSet<BackupName>), EngineError> {
    let listed = store.list(BACKUPS_PREFIX).await?;
    let names: Vec<BackupName> = listed
        .iter()
        .filter_map(|m| BackupName::from_manifest_key(&m.key))
        .collect();
    let permanent: HashSet<BackupName> = listed
        .iter()
        .filter_map(|m| BackupName::from_key(&m.key))
        .filter(|(_, file)| BackupName::is_permanent_file(file))
        .map(|(n, _)| n)
        .collect();
    let loaded: Vec<Result<BackupManifest, EngineError>> =
        futures::stream::iter(names.iter().map(|n| load_manifest(store, n, keys)))
            .buffered(8)
            .collect()
            .await;
    let mut manifests = loaded.into_iter().collect::<Result<Vec<_>, _>>()?;
    manifests.sort_by(|a, b| {
        a.finished_at
            .cmp(&b.finished_at)
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok((manifests, permanent))
}
