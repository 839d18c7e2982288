//! Storing, finding and reading backup manifests.

use crate::EngineError;
use crate::RepoKeys;
use futures::StreamExt;
use pgark_catalog::{BackupManifest, BackupName, BackupSummary, BACKUPS_PREFIX};
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
    put_summary(store, manifest, keys).await;
    Ok(())
}

/// Writes the backup's summary after its manifest (see [`BackupSummary`]).
/// Not writing it only makes listing read the manifest instead: a failure
/// is a warning.
async fn put_summary(store: &dyn ObjectStore, manifest: &BackupManifest, keys: &RepoKeys) {
    let json = BackupSummary::of(manifest).to_json();
    let key = manifest.name.summary_key();
    let encoded = match &keys.data_key {
        Some(dk) => encode_to_vec_encrypted(&json, CompressionSpec::default(), dk, key.as_str()),
        None => encode_to_vec(&json, CompressionSpec::default()),
    };
    let result = match encoded {
        Ok((stored, _)) => store
            .put(&key, stored.into(), PutMode::Overwrite)
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = result {
        tracing::warn!(
            "backup {} is complete, but its summary could not be written ({e}): listing reads its manifest",
            manifest.name
        );
    }
}

/// Decodes and verifies a small stored object (a manifest, a summary):
/// with a data key it must be encrypted under it for `key`.
pub(crate) fn decode_small(
    stored: &[u8],
    key: &pgark_store::Key,
    keys: &RepoKeys,
) -> Result<Vec<u8>, EngineError> {
    let integrity = |source| EngineError::Integrity {
        key: key.to_string(),
        source,
    };
    let mut reader = pgark_codec::ObjectReader::new_with_key(stored, keys.data_key.as_ref(), key.as_str())
        .map_err(integrity)?;
    if keys.data_key.is_some() && !reader.is_encrypted() {
        return Err(integrity(pgark_codec::CodecError::Crypto(
            pgark_crypto::CryptoError::NotEncryptedStream {
                reason: "an unencrypted object in an encrypted repository".into(),
            },
        )));
    }
    let mut json = Vec::new();
    reader
        .read_to_end(&mut json)
        .map_err(|e| integrity(pgark_codec::CodecError::from(e)))?;
    Ok(json)
}

/// Writes a small record (a run's result) under `key`, replacing the one
/// before: a pgark object of `json`, encrypted under the data key in an
/// encrypted repository. One put: a reader sees the old record or the new.
pub(crate) async fn put_record(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
    key: &pgark_store::Key,
    json: &[u8],
) -> Result<(), EngineError> {
    let spec = pgark_codec::CompressionSpec::default();
    let (stored, _) = match &keys.data_key {
        Some(dk) => pgark_codec::encode_to_vec_encrypted(json, spec, dk, key.as_str()),
        None => pgark_codec::encode_to_vec(json, spec),
    }
    .map_err(|e| EngineError::Internal(e.to_string()))?;
    store
        .put(key, stored.into(), pgark_store::PutMode::Overwrite)
        .await?;
    Ok(())
}

/// Reads a record [`put_record`] wrote (`None`: there is none), parsed by
/// `parse`. A record that does not decode or parse is an integrity error.
pub(crate) async fn get_record<T, E: std::fmt::Display>(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
    key: &pgark_store::Key,
    parse: impl FnOnce(&[u8]) -> Result<T, E>,
) -> Result<Option<T>, EngineError> {
    let stored = match store.get_bytes(key).await {
        Ok(stored) => stored,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(source) => return Err(EngineError::Store { source }),
    };
    let json = decode_small(&stored, key, keys)?;
    parse(&json).map(Some).map_err(|e| EngineError::Integrity {
        key: key.to_string(),
        source: pgark_codec::CodecError::Io(std::io::Error::other(e.to_string())),
    })
}

/// Reads and verifies a backup's summary.
async fn load_summary(
    store: &dyn ObjectStore,
    name: &BackupName,
    keys: &RepoKeys,
) -> Result<BackupSummary, EngineError> {
    let key = name.summary_key();
    let stored = store.get_bytes(&key).await?;
    let json = decode_small(&stored, &key, keys)?;
    let summary = BackupSummary::from_json(&json).map_err(|source| EngineError::Catalog { source })?;
    if summary.name != *name {
        return Err(EngineError::Integrity {
            key: key.to_string(),
            source: pgark_codec::CodecError::Io(std::io::Error::other(format!(
                "the summary of {name} names {}",
                summary.name
            ))),
        });
    }
    Ok(summary)
}

/// Every completed backup's summary, oldest first (by finish time): read
/// from the small summary objects, from the manifest where a backup has
/// none or a damaged one. A backup whose manifest is damaged is left out
/// with a warning (backup-list reports it); a repository failure fails the
/// call. One listing of `backups/` and one small read per backup.
pub async fn list_summaries(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
) -> Result<Vec<BackupSummary>, EngineError> {
    let metas = store.list(BACKUPS_PREFIX).await?;
    let with_summary: std::collections::HashSet<BackupName> = metas
        .iter()
        .filter_map(|m| BackupName::from_summary_key(&m.key))
        .collect();
    let names: Vec<BackupName> = metas
        .iter()
        .filter_map(|m| BackupName::from_manifest_key(&m.key))
        .collect();
    let with_summary = &with_summary;
    let loaded: Vec<Result<Result<BackupSummary, EngineError>, EngineError>> =
        futures::stream::iter(names.into_iter().map(|n| async move {
            if with_summary.contains(&n) {
                match load_summary(store, &n, keys).await {
                    Ok(s) => return Ok(Ok(s)),
                    Err(e) if is_damage(&e) => {
                        tracing::warn!("the summary of backup {n} is unusable ({e}): reading its manifest")
                    }
                    Err(e) => return Err(e),
                }
            }
            match load_manifest(store, &n, keys).await {
                Ok(m) => Ok(Ok(BackupSummary::of(&m))),
                Err(e) if is_damage(&e) => {
                    tracing::warn!("skipping backup {n}: its manifest is damaged ({e})");
                    Ok(Err(e))
                }
                Err(e) => Err(e),
            }
        }))
        .buffered(8)
        .collect()
        .await;
    let mut summaries = Vec::new();
    let mut first_damage = None;
    for r in loaded {
        match r? {
            Ok(s) => summaries.push(s),
            Err(e) => {
                first_damage.get_or_insert(e);
            }
        }
    }
    // Backups there, all damaged: that is the answer, not "none".
    if let (true, Some(e)) = (summaries.is_empty(), first_damage) {
        return Err(e);
    }
    summaries.sort_by(|a, b| {
        a.finished_at
            .cmp(&b.finished_at)
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(summaries)
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
    let json = decode_small(&stored, &key, keys)?;
    BackupManifest::from_json(&json).map_err(|source| EngineError::Catalog { source })
}

/// One completed backup (one with a manifest) as found in the repository.
#[derive(Debug)]
pub enum ListedBackup {
    /// Its manifest was read and verified.
    Ok(Box<BackupManifest>),
    /// Its manifest is there but cannot be used: bad checksum, truncated,
    /// not JSON, a format this version does not read, wrong encryption.
    Damaged {
        name: BackupName,
        /// The verification error, naming the manifest's key.
        reason: String,
        error: EngineError,
    },
}

impl ListedBackup {
    pub fn name(&self) -> &BackupName {
        match self {
            ListedBackup::Ok(m) => &m.name,
            ListedBackup::Damaged { name, .. } => name,
        }
    }
}

/// A manifest read failed because the manifest itself is damaged (as opposed
/// to the repository failing, which must fail the caller).
fn is_damage(e: &EngineError) -> bool {
    matches!(e, EngineError::Integrity { .. } | EngineError::Catalog { .. })
}

/// Every completed backup, damaged ones included: usable ones oldest first
/// (by finish time), each damaged one (whose times are unknown) before the
/// first usable one with a later name. A repository failure fails the
/// call; a damaged manifest does not.
pub async fn list_backups_detailed(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
) -> Result<Vec<ListedBackup>, EngineError> {
    let names: Vec<BackupName> = store
        .list(BACKUPS_PREFIX)
        .await?
        .iter()
        .filter_map(|m| BackupName::from_manifest_key(&m.key))
        .collect();
    let loaded: Vec<(BackupName, Result<BackupManifest, EngineError>)> =
        futures::stream::iter(names.into_iter().map(|n| async move {
            let r = load_manifest(store, &n, keys).await;
            (n, r)
        }))
        .buffered(8)
        .collect()
        .await;
    let mut usable = Vec::with_capacity(loaded.len());
    let mut damaged = Vec::new();
    for (name, r) in loaded {
        match r {
            Ok(m) => usable.push(m),
            Err(e) if is_damage(&e) => damaged.push(ListedBackup::Damaged {
                name,
                reason: e.to_string(),
                error: e,
            }),
            Err(e) => return Err(e),
        }
    }
    usable.sort_by(|a, b| {
        a.finished_at
            .cmp(&b.finished_at)
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut listed: Vec<ListedBackup> = usable
        .into_iter()
        .map(|m| ListedBackup::Ok(Box::new(m)))
        .collect();
    // A damaged backup's times are unknown: it goes before the first usable
    // one with a later name (names start with the start segment).
    damaged.sort_by(|a, b| a.name().cmp(b.name()));
    for d in damaged {
        let at = listed
            .iter()
            .position(|l| matches!(l, ListedBackup::Ok(m) if &m.name > d.name()))
            .unwrap_or(listed.len());
        listed.insert(at, d);
    }
    Ok(listed)
}

/// The usable backups, oldest first. A damaged manifest is skipped with a
/// warning naming the backup and the reason, so one bad old backup does not
/// block LATEST or delta pushes; a repository failure fails the call. When
/// there are backups but every one of them is damaged, the first damage is
/// the error (a restore of LATEST then exits "damaged", not "not found").
pub async fn list_backups(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
) -> Result<Vec<BackupManifest>, EngineError> {
    let mut usable = Vec::new();
    let mut first_damage = None;
    for b in list_backups_detailed(store, keys).await? {
        match b {
            ListedBackup::Ok(m) => usable.push(*m),
            ListedBackup::Damaged { name, reason, error } => {
                tracing::warn!("skipping backup {name}: its manifest is damaged: {reason}");
                first_damage.get_or_insert(error);
            }
        }
    }
    match first_damage {
        Some(e) if usable.is_empty() => Err(e),
        _ => Ok(usable),
    }
}

/// [`list_backups`], and the names of the backups marked permanent.
pub async fn list_backups_marked(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
) -> Result<(Vec<BackupManifest>, HashSet<BackupName>), EngineError> {
    let manifests = list_backups(store, keys).await?;
    Ok((manifests, permanent_marks(store).await?))
}

/// The backups marked permanent (see `BackupName::permanent_key`).
pub async fn permanent_marks(store: &dyn ObjectStore) -> Result<HashSet<BackupName>, EngineError> {
    Ok(store
        .list(BACKUPS_PREFIX)
        .await?
        .iter()
        .filter_map(|m| BackupName::from_key(&m.key))
        .filter(|(_, file)| BackupName::is_permanent_file(file))
        .map(|(n, _)| n)
        .collect())
}
