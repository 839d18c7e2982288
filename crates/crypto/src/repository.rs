//! The keyring in the repository: setting up encryption, opening, and key
//! rotation that survives being interrupted at any point.
//!
//! # Documents
//!
//! * `keyring.json` — the [`Keyring`]. Its presence is what makes a
//!   repository encrypted. Written create-only by [`init`], replaced whole
//!   (an atomic overwrite) only by [`rotate`].
//! * `keyring.rotation.json` — present only while a rotation is under way:
//!   the keyring with the data key wrapped under **both** the old and the
//!   new master key. It is the rotation's journal and its lock (created
//!   create-only, so of two racing rotations one fails at once).
//!
//! Store guarantees relied on: a put is atomic (readers see the old or the
//! new object, never a part), a create-only put fails if the key exists,
//! a delete is idempotent.
//!
//! # Rotation (old master key → new), write sequence
//!
//! | step | operation | put mode |
//! |-----:|-----------|----------|
//! | 1 | `keyring.rotation.json` ← keyring wrapped under old **and** new | create-only |
//! | 2 | `keyring.json` ← the same two-wrap keyring | overwrite |
//! | 3 | `keyring.json` ← keyring wrapped under new only | overwrite |
//! | 4 | delete `keyring.rotation.json` | — |
//!
//! [`open`] reads `keyring.json`; if the key does not open it and a
//! rotation journal exists, it tries the journal (same data key id
//! required).
//!
//! # Crash states
//!
//! Stopped after step *n* (`keyring.json`, `keyring.rotation.json`):
//!
//! | after | keyring.json | journal | old key opens | new key opens |
//! |------:|--------------|---------|:---:|:---:|
//! | 0 | old | — | yes | no (rotation never happened; it did not report success) |
//! | 1 | old | old + new | yes | yes (journal) |
//! | 2 | old + new | old + new | yes | yes |
//! | 3 | new | old + new | yes (journal) | yes |
//! | 4 | new | — | **no** | yes |
//!
//! At every instant the old or the new key opens the repository, never
//! neither; once the rotation has reported success only the new one does.
//! An interrupted rotation is finished by running it again with the same
//! two keys (it resumes from the journal, steps 2–4). A rotation with other
//! keys while a journal exists is refused ([`CryptoError::RotationInProgress`]),
//! as is a second rotation racing the first (step 1 is create-only). Run
//! again after success, it reports [`Rotation::AlreadyDone`].
//!
//! # Limits of re-wrapping
//!
//! The data key does not change, so nothing is re-encrypted. Whoever held
//! the old master key *and* a copy of the old keyring (or the data key
//! itself) can still read the data: re-wrapping retires a key, it does not
//! recover from a stolen data key. If the bucket keeps object versions,
//! delete the old versions of `keyring.json` and the journal too.

use bytes::Bytes;
use pgark_store::{Key, ObjectStore, ObjectStoreExt, PutMode};

use crate::error::CryptoError;
use crate::keyring::{Credential, Keyring};
use crate::keys::{DataKey, MasterKey};

/// Key of the keyring document.
pub const KEYRING_KEY: &str = "keyring.json";
/// Key of the rotation journal.
pub const ROTATION_JOURNAL_KEY: &str = "keyring.rotation.json";

fn key(name: &str) -> Key {
    Key::new(name).expect("constant keys are valid")
}

async fn read_doc(store: &dyn ObjectStore, name: &str) -> Result<Option<Keyring>, CryptoError> {
    match store.get_bytes(&key(name)).await {
        Ok(bytes) => Keyring::from_json(&bytes).map(Some),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The repository's keyring, if it is encrypted.
pub async fn read_keyring(store: &dyn ObjectStore) -> Result<Option<Keyring>, CryptoError> {
    read_doc(store, KEYRING_KEY).await
}

/// Makes the repository encrypted: a fresh data key wrapped under
/// `master`, written create-only. If a keyring is already there and
/// `master` opens it (a retried `init`), its data key is returned; another
/// key gets [`CryptoError::AlreadyEncrypted`].
///
/// Refusing to encrypt a repository that already holds unencrypted objects
/// is the caller's policy (it knows the layout).
pub async fn init(store: &dyn ObjectStore, master: &MasterKey) -> Result<DataKey, CryptoError> {
    let (keyring, data_key) = Keyring::create(master);
    match store
        .put(&key(KEYRING_KEY), Bytes::from(keyring.to_json()), PutMode::Create)
        .await
    {
        Ok(_) => Ok(data_key),
        Err(e) if e.is_already_exists() => {
            let existing = read_keyring(store).await?.ok_or(CryptoError::AlreadyEncrypted)?;
            existing.open(master).map_err(|_| CryptoError::AlreadyEncrypted)
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens the repository with what the user gave: `None` for an
/// unencrypted repository and no credential; [`CryptoError::KeyRequired`],
/// [`CryptoError::WrongKey`] or [`CryptoError::RepositoryNotEncrypted`]
/// as [`crate::open_repository`] says. During an interrupted rotation
/// either of its two keys opens (through the journal).
pub async fn open(
    store: &dyn ObjectStore,
    credential: Option<&Credential>,
) -> Result<Option<DataKey>, CryptoError> {
    let keyring = read_keyring(store).await?;
    let first = crate::keyring::open_repository(keyring.as_ref(), credential);
    let (Err(err @ CryptoError::WrongKey { .. }), Some(keyring), Some(credential)) =
        (&first, &keyring, credential)
    else {
        return first;
    };
    if let Some(journal) = read_doc(store, ROTATION_JOURNAL_KEY).await? {
        if journal.data_key_id() == keyring.data_key_id() {
            if let Ok((_, data_key)) = credential.open(&journal) {
                return Ok(Some(data_key));
            }
        }
    }
    Err(err.duplicate())
}

/// What [`rotate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The keyring moved from the old key to the new one.
    Rotated,
    /// An interrupted rotation between these keys was finished.
    Resumed,
    /// The new key alone already opened the repository: nothing written.
    AlreadyDone,
}

/// Re-wraps the repository's data key from `old` to `new` through the
/// journaled sequence of the [module docs](self); safe to interrupt and to
/// run again. A passphrase as `new` is stretched with fresh Argon2id
/// parameters.
pub async fn rotate(
    store: &dyn ObjectStore,
    old: &Credential,
    new: &Credential,
) -> Result<Rotation, CryptoError> {
    let current = read_keyring(store)
        .await?
        .ok_or(CryptoError::RepositoryNotEncrypted)?;
    let journal = read_doc(store, ROTATION_JOURNAL_KEY).await?;
    let (both, outcome) = match journal {
        Some(journal) => {
            let resumable = journal.data_key_id() == current.data_key_id()
                && matches!(
                    (old.open(&journal), new.open(&journal)),
                    (Ok((o, _)), Ok((n, _))) if o.id() != n.id()
                );
            if !resumable {
                return Err(CryptoError::RotationInProgress {
                    detail: format!(
                        "{ROTATION_JOURNAL_KEY} wraps the data key under key ids {}; run the rotation \
                         again with those two keys to finish it",
                        ids(&journal)
                    ),
                });
            }
            (journal, Rotation::Resumed)
        }
        None => {
            let old_opens = old.open(&current);
            if let Ok((n, _)) = new.open(&current) {
                match &old_opens {
                    Err(_) if current.master_key_ids() == [n.id()] => return Ok(Rotation::AlreadyDone),
                    Ok((o, _)) if o.id() == n.id() => return Err(CryptoError::SameKey { key_id: n.id() }),
                    _ => {}
                }
            }
            let (old_master, _) = old_opens?;
            let new_master = new.new_master_key()?;
            if new_master.id() == old_master.id() {
                return Err(CryptoError::SameKey {
                    key_id: new_master.id(),
                });
            }
            let both = current.add_key(&old_master, &new_master)?;
            // Step 1: journal and lock.
            match store
                .put(
                    &key(ROTATION_JOURNAL_KEY),
                    Bytes::from(both.to_json()),
                    PutMode::Create,
                )
                .await
            {
                Ok(_) => {}
                Err(e) if e.is_already_exists() => {
                    return Err(CryptoError::RotationInProgress {
                        detail: format!("another rotation created {ROTATION_JOURNAL_KEY} meanwhile"),
                    })
                }
                Err(e) => return Err(e.into()),
            }
            (both, Rotation::Rotated)
        }
    };
    // Step 2: both keys open keyring.json.
    store
        .put(&key(KEYRING_KEY), Bytes::from(both.to_json()), PutMode::Overwrite)
        .await?;
    // Step 3: only the new key does.
    let (new_master, _) = new.open(&both)?;
    let only_new = both.retain_only(&new_master)?;
    store
        .put(
            &key(KEYRING_KEY),
            Bytes::from(only_new.to_json()),
            PutMode::Overwrite,
        )
        .await?;
    // Step 4: the journal (which the old key opens) goes.
    store.delete(&key(ROTATION_JOURNAL_KEY)).await?;
    Ok(outcome)
}

fn ids(keyring: &Keyring) -> String {
    keyring
        .master_key_ids()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(" and ")
}

#[cfg(test)]
mod tests;
