//! The repository's keyring (`keyring.json`): the data key, wrapped under
//! one or more master keys.
//!
//! ```json
//! {
//!   "format": "pgark-keyring",
//!   "version": 1,
//!   "wrap_algorithm": "aes-256-gcm/hkdf-sha256",
//!   "data_key_id": "5f0c1e9a7b3d2c41",
//!   "wraps": [
//!     {
//!       "master_key_id": "a1b2c3d4e5f60718",
//!       "kdf": { "algorithm": "argon2id", "version": 19, "memory_kib": 65536,
//!                "iterations": 3, "parallelism": 4, "salt": "<base64, 16 bytes>" },
//!       "salt": "<base64, 16 bytes>",
//!       "nonce": "<base64, 12 bytes>",
//!       "wrapped_key": "<base64, 48 bytes: 32 encrypted + 16 tag>"
//!     }
//!   ]
//! }
//! ```
//!
//! A wrap: `KEK = HKDF-SHA256(salt = wrap.salt, ikm = master key, info =
//! "pgark v1 keyring key-encryption key")`, then `wrapped_key =
//! AES-256-GCM(KEK, nonce, data key, aad = "pgark v1 keyring wrap" ||
//! data_key_id || master_key_id)`. `kdf` is present only when the master
//! key is derived from a passphrase (Argon2id, [`KdfParams`]).
//!
//! The **key check** is the wrap itself: a master key opens the repository
//! iff the GCM tag of its wrap verifies; no data is decrypted to find out.
//! Readable without a key: the format and version, the key ids (HKDF
//! fingerprints of the keys, not the keys), the Argon2id costs and salts,
//! and the number of master keys. An attacker holding the keyring can test
//! guesses of a master key (as with any key check): raw keys are 256-bit
//! random, passphrases are slowed by Argon2id.

use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::keys::{
    hkdf, random_bytes, DataKey, KdfParams, KeyId, MasterKey, ObjectCipherKey, INFO_KEY_WRAP, KEY_LEN,
};

/// `format` of a keyring document.
pub const KEYRING_FORMAT: &str = "pgark-keyring";
/// The keyring version this crate writes and reads.
pub const KEYRING_VERSION: u32 = 1;
/// `wrap_algorithm` of version 1.
pub const WRAP_ALGORITHM: &str = "aes-256-gcm/hkdf-sha256";
/// Associated-data prefix of a wrap.
const WRAP_AAD: &[u8] = b"pgark v1 keyring wrap";

/// The data key wrapped under one master key. Not secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Wrap {
    /// Id of the master key that opens this wrap.
    pub master_key_id: KeyId,
    /// How that master key is derived from a passphrase, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<KdfParams>,
    /// HKDF salt of the key-encryption key.
    #[serde(with = "crate::b64")]
    pub salt: [u8; 16],
    /// AES-256-GCM nonce.
    #[serde(with = "crate::b64")]
    pub nonce: [u8; 12],
    /// The encrypted data key (32 bytes) and its GCM tag (16 bytes).
    #[serde(with = "crate::b64")]
    pub wrapped_key: [u8; 48],
}

impl Wrap {
    fn aad(data_key_id: KeyId, master_key_id: KeyId) -> Vec<u8> {
        [WRAP_AAD, &data_key_id.0, &master_key_id.0].concat()
    }

    fn kek(master: &MasterKey, salt: &[u8; 16]) -> ObjectCipherKey {
        let mut kek = Zeroizing::new([0u8; KEY_LEN]);
        hkdf(master.bytes(), Some(salt), &[INFO_KEY_WRAP], &mut kek[..]);
        ObjectCipherKey::new(&kek)
    }

    fn seal(master: &MasterKey, data_key: &DataKey) -> Wrap {
        let mut salt = [0u8; 16];
        random_bytes(&mut salt);
        let mut nonce = [0u8; 12];
        random_bytes(&mut nonce);
        let mut buf = Zeroizing::new(*data_key.bytes());
        let aad = Wrap::aad(data_key.id(), master.id());
        let tag = Wrap::kek(master, &salt).seal(&nonce, &aad, &mut buf[..]);
        let mut wrapped_key = [0u8; 48];
        wrapped_key[..32].copy_from_slice(&buf[..]);
        wrapped_key[32..].copy_from_slice(&tag);
        Wrap {
            master_key_id: master.id(),
            kdf: master.kdf().cloned(),
            salt,
            nonce,
            wrapped_key,
        }
    }

    /// The data key, if `master` opens this wrap.
    fn open(&self, master: &MasterKey, data_key_id: KeyId) -> Option<DataKey> {
        let mut buf = Zeroizing::new([0u8; KEY_LEN]);
        buf.copy_from_slice(&self.wrapped_key[..32]);
        let tag: [u8; 16] = self.wrapped_key[32..].try_into().expect("16 bytes");
        let aad = Wrap::aad(data_key_id, self.master_key_id);
        Wrap::kek(master, &self.salt)
            .open(&self.nonce, &aad, &mut buf[..], &tag)
            .then(|| DataKey::build(buf))
    }
}

/// The repository's keyring: its data key wrapped under each master key
/// that may open it (one, or two during a rotation). Stored as
/// `keyring.json` ([`Keyring::to_json`]); see the [module docs](self) for
/// the document and [`crate::repository`] for how it is written.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keyring {
    format: String,
    version: u32,
    wrap_algorithm: String,
    data_key_id: KeyId,
    wraps: Vec<Wrap>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("version", &self.version)
            .field("data_key_id", &self.data_key_id)
            .field("master_key_ids", &self.master_key_ids())
            .finish_non_exhaustive()
    }
}

impl Keyring {
    /// A new keyring: a fresh random data key wrapped under `master`.
    pub fn create(master: &MasterKey) -> (Keyring, DataKey) {
        let data_key = DataKey::generate();
        let keyring = Keyring {
            format: KEYRING_FORMAT.into(),
            version: KEYRING_VERSION,
            wrap_algorithm: WRAP_ALGORITHM.into(),
            data_key_id: data_key.id(),
            wraps: vec![Wrap::seal(master, &data_key)],
        };
        (keyring, data_key)
    }

    /// The data key, if `master` opens this keyring; otherwise
    /// [`CryptoError::WrongKey`] ("this key does not open this
    /// repository"). A wrap that names `master` but fails authentication
    /// is [`CryptoError::KeyringInvalid`] (damaged keyring).
    pub fn open(&self, master: &MasterKey) -> Result<DataKey, CryptoError> {
        let Some(wrap) = self.wraps.iter().find(|w| w.master_key_id == master.id()) else {
            return Err(CryptoError::WrongKey {
                detail: format!(
                    "key id {}; the keyring opens with key id {}",
                    master.id(),
                    self.ids_text()
                ),
            });
        };
        let data_key = wrap.open(master, self.data_key_id).ok_or_else(|| CryptoError::KeyringInvalid {
            reason: format!(
                "the wrapped data key for master key id {} failed authentication (keyring damaged or tampered)",
                master.id()
            ),
        })?;
        if data_key.id() != self.data_key_id {
            return Err(CryptoError::KeyringInvalid {
                reason: format!(
                    "the wrapped data key has id {}, the keyring names {}",
                    data_key.id(),
                    self.data_key_id
                ),
            });
        }
        Ok(data_key)
    }

    /// Opens with a passphrase: derives a master key with the Argon2id
    /// parameters of each passphrase wrap in turn (one derivation per such
    /// wrap) and returns the one that opens, with the data key.
    pub fn open_with_passphrase(
        &self,
        passphrase: impl AsRef<[u8]>,
    ) -> Result<(MasterKey, DataKey), CryptoError> {
        let passphrase = passphrase.as_ref();
        let mut any = false;
        for kdf in self.wraps.iter().filter_map(|w| w.kdf.as_ref()) {
            any = true;
            let master = MasterKey::from_passphrase(passphrase, kdf)?;
            if self.wraps.iter().any(|w| w.master_key_id == master.id()) {
                let data_key = self.open(&master)?;
                return Ok((master, data_key));
            }
        }
        Err(CryptoError::WrongKey {
            detail: if any {
                format!(
                    "the passphrase derives none of the keys the keyring opens with ({})",
                    self.ids_text()
                )
            } else {
                format!(
                    "the keyring has no passphrase-derived key, only key id {}: give the key itself",
                    self.ids_text()
                )
            },
        })
    }

    /// A copy of this keyring that `new` opens too: `current` must open
    /// it. Adding a key already present returns an unchanged copy.
    pub fn add_key(&self, current: &MasterKey, new: &MasterKey) -> Result<Keyring, CryptoError> {
        let data_key = self.open(current)?;
        let mut out = self.clone();
        if !out.wraps.iter().any(|w| w.master_key_id == new.id()) {
            out.wraps.push(Wrap::seal(new, &data_key));
        }
        Ok(out)
    }

    /// A copy of this keyring that only `keep` opens: `keep` must open it.
    pub fn retain_only(&self, keep: &MasterKey) -> Result<Keyring, CryptoError> {
        self.open(keep)?;
        let mut out = self.clone();
        out.wraps.retain(|w| w.master_key_id == keep.id());
        Ok(out)
    }

    /// Key rotation in one step: the data key re-wrapped under `new`, and
    /// `old` (and any other key) dropped. No data is re-encrypted: the data
    /// key stays the same. See [`crate::repository`] for writing it back
    /// safely (through a state where both keys open the repository).
    pub fn rewrap(&self, old: &MasterKey, new: &MasterKey) -> Result<Keyring, CryptoError> {
        if old.id() == new.id() {
            return Err(CryptoError::SameKey { key_id: new.id() });
        }
        self.add_key(old, new)?.retain_only(new)
    }

    /// The data key's id.
    pub fn data_key_id(&self) -> KeyId {
        self.data_key_id
    }

    /// Ids of the master keys that open this keyring.
    pub fn master_key_ids(&self) -> Vec<KeyId> {
        self.wraps.iter().map(|w| w.master_key_id).collect()
    }

    /// True if `master` has a wrap here (by id; [`Keyring::open`] checks it).
    pub fn names_key(&self, master: &MasterKey) -> bool {
        self.wraps.iter().any(|w| w.master_key_id == master.id())
    }

    /// The wraps.
    pub fn wraps(&self) -> &[Wrap] {
        &self.wraps
    }

    fn ids_text(&self) -> String {
        self.master_key_ids()
            .iter()
            .map(KeyId::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The document, pretty JSON with a final newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a keyring always serializes");
        v.push(b'\n');
        v
    }

    /// Parses and checks a keyring document: format, version (a newer one
    /// is [`CryptoError::UnsupportedKeyringVersion`]), algorithm, at least
    /// one wrap, distinct key ids, sane Argon2id parameters.
    pub fn from_json(bytes: &[u8]) -> Result<Keyring, CryptoError> {
        #[derive(Deserialize)]
        struct Probe {
            format: String,
            version: u32,
        }
        let invalid = |reason: String| CryptoError::KeyringInvalid { reason };
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|e| invalid(format!("not a keyring document: {e}")))?;
        if probe.format != KEYRING_FORMAT {
            return Err(invalid(format!(
                "format is {:?}, expected {KEYRING_FORMAT:?}",
                probe.format
            )));
        }
        if probe.version != KEYRING_VERSION {
            return Err(CryptoError::UnsupportedKeyringVersion {
                supported: KEYRING_VERSION,
                actual: probe.version,
            });
        }
        let keyring: Keyring = serde_json::from_slice(bytes).map_err(|e| invalid(e.to_string()))?;
        if keyring.wrap_algorithm != WRAP_ALGORITHM {
            return Err(invalid(format!(
                "wrap algorithm {:?}, expected {WRAP_ALGORITHM:?}",
                keyring.wrap_algorithm
            )));
        }
        if keyring.wraps.is_empty() {
            return Err(invalid("no wrapped data key".into()));
        }
        let mut ids = keyring.master_key_ids();
        ids.sort();
        ids.dedup();
        if ids.len() != keyring.wraps.len() {
            return Err(invalid("two wraps for the same master key".into()));
        }
        for kdf in keyring.wraps.iter().filter_map(|w| w.kdf.as_ref()) {
            kdf.validate()?;
        }
        Ok(keyring)
    }
}

/// What the user gave to open an encrypted repository: a key (from a file,
/// text, the environment or a command) or a passphrase, which needs the
/// keyring's Argon2id parameters before it becomes a key.
#[derive(Clone)]
pub enum Credential {
    Key(MasterKey),
    Passphrase(Zeroizing<String>),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Key(k) => f.debug_tuple("Key").field(k).finish(),
            Credential::Passphrase(_) => f.write_str("Passphrase(..)"),
        }
    }
}

impl Credential {
    /// The master key and the data key, if this credential opens `keyring`.
    pub fn open(&self, keyring: &Keyring) -> Result<(MasterKey, DataKey), CryptoError> {
        match self {
            Credential::Key(master) => Ok((master.clone(), keyring.open(master)?)),
            Credential::Passphrase(p) => keyring.open_with_passphrase(p.as_bytes()),
        }
    }

    /// The master key for a *new* wrap (creating a keyring, or the target
    /// of a rotation): the key itself, or the passphrase stretched with
    /// [`KdfParams::recommended`] under a fresh salt.
    pub fn new_master_key(&self) -> Result<MasterKey, CryptoError> {
        match self {
            Credential::Key(master) => Ok(master.clone()),
            Credential::Passphrase(p) => MasterKey::from_passphrase(p.as_bytes(), &KdfParams::recommended()),
        }
    }
}

/// The policy for opening a repository, without storage: `keyring` is the
/// repository's keyring if it has one (it is encrypted), `credential` what
/// the user gave.
///
/// * encrypted, no credential: [`CryptoError::KeyRequired`];
/// * encrypted, a credential that does not open it: [`CryptoError::WrongKey`];
/// * not encrypted, a credential: [`CryptoError::RepositoryNotEncrypted`]
///   (no mixing of encrypted and unencrypted objects);
/// * not encrypted, no credential: `Ok(None)`.
pub fn open_repository(
    keyring: Option<&Keyring>,
    credential: Option<&Credential>,
) -> Result<Option<DataKey>, CryptoError> {
    match (keyring, credential) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(CryptoError::RepositoryNotEncrypted),
        (Some(_), None) => Err(CryptoError::KeyRequired),
        (Some(k), Some(c)) => c.open(k).map(|(_, dk)| Some(dk)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap_kdf() -> KdfParams {
        KdfParams::new(64, 1, 1).unwrap()
    }

    #[test]
    fn create_and_open() {
        let master = MasterKey::generate();
        let (keyring, dk) = Keyring::create(&master);
        assert_eq!(keyring.data_key_id(), dk.id());
        assert_eq!(keyring.master_key_ids(), vec![master.id()]);
        let opened = keyring.open(&master).unwrap();
        assert_eq!(opened.id(), dk.id());
        assert_eq!(opened.bytes(), dk.bytes());
        // A fresh data key each time.
        let (_, dk2) = Keyring::create(&master);
        assert_ne!(dk.id(), dk2.id());
    }

    #[test]
    fn wrong_key_fails_at_once_with_the_documented_message() {
        let (keyring, _) = Keyring::create(&MasterKey::generate());
        let other = MasterKey::generate();
        let err = keyring.open(&other).unwrap_err();
        assert!(matches!(err, CryptoError::WrongKey { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("this key does not open this repository"), "{msg}");
        assert!(msg.contains(&other.id().to_string()), "{msg}");
        assert!(!err.is_integrity());
    }

    #[test]
    fn json_round_trip_and_shape() {
        let master = MasterKey::from_passphrase("pw", &cheap_kdf()).unwrap();
        let (keyring, dk) = Keyring::create(&master);
        let json = keyring.to_json();
        let text = std::str::from_utf8(&json).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(value["format"], "pgark-keyring");
        assert_eq!(value["version"], 1);
        assert_eq!(value["wrap_algorithm"], "aes-256-gcm/hkdf-sha256");
        assert_eq!(value["data_key_id"], dk.id().to_string());
        let wrap = &value["wraps"][0];
        assert_eq!(wrap["master_key_id"], master.id().to_string());
        assert_eq!(wrap["kdf"]["algorithm"], "argon2id");
        assert_eq!(wrap["kdf"]["memory_kib"], 64);
        assert_eq!(wrap["wrapped_key"].as_str().unwrap().len(), 64);
        // Neither key appears in any form.
        for secret in [master.expose_hex().to_string(), hex::encode(dk.bytes())] {
            assert!(!text.contains(&secret));
        }
        let back = Keyring::from_json(&json).unwrap();
        assert_eq!(back, keyring);
        assert_eq!(back.open(&master).unwrap().id(), dk.id());
        // A raw-key keyring has no kdf member at all.
        let (raw, _) = Keyring::create(&MasterKey::generate());
        let value: serde_json::Value = serde_json::from_slice(&raw.to_json()).unwrap();
        assert!(value["wraps"][0].get("kdf").is_none());
        assert!(format!("{raw:?}").contains("master_key_ids"));
    }

    #[test]
    fn malformed_documents_are_refused() {
        let master = MasterKey::generate();
        let (keyring, _) = Keyring::create(&master);
        let good: serde_json::Value = serde_json::from_slice(&keyring.to_json()).unwrap();
        let edit = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = good.clone();
            f(&mut v);
            Keyring::from_json(&serde_json::to_vec(&v).unwrap())
        };
        assert!(matches!(
            edit(&|v| v["version"] = 2.into()),
            Err(CryptoError::UnsupportedKeyringVersion {
                supported: 1,
                actual: 2
            })
        ));
        let invalid: [&dyn Fn(&mut serde_json::Value); 7] = [
            &|v| v["format"] = "other".into(),
            &|v| v["wrap_algorithm"] = "rot13".into(),
            &|v| v["wraps"] = serde_json::json!([]),
            &|v| v["wraps"][0]["nonce"] = "AAAA".into(),
            &|v| v["wraps"][0]["salt"] = "!!".into(),
            &|v| v["extra"] = 1.into(),
            &|v| {
                let w = v["wraps"][0].clone();
                v["wraps"].as_array_mut().unwrap().push(w);
            },
        ];
        for (i, f) in invalid.iter().enumerate() {
            let err = edit(*f).unwrap_err();
            assert!(matches!(err, CryptoError::KeyringInvalid { .. }), "{i}: {err:?}");
        }
        assert!(matches!(
            Keyring::from_json(b"not json"),
            Err(CryptoError::KeyringInvalid { .. })
        ));
        let err = edit(&|v| {
            v["wraps"][0]["kdf"] = serde_json::json!({"algorithm": "argon2id", "version": 19,
                "memory_kib": 999999999, "iterations": 1, "parallelism": 1,
                "salt": "AAAAAAAAAAAAAAAAAAAAAA=="})
        })
        .unwrap_err();
        assert!(matches!(err, CryptoError::KdfParams { .. }), "{err:?}");
    }

    #[test]
    fn tampered_wrap_is_damage_not_wrong_key() {
        let master = MasterKey::generate();
        let (keyring, _) = Keyring::create(&master);
        for field in 0..3 {
            let mut k = keyring.clone();
            match field {
                0 => k.wraps[0].wrapped_key[5] ^= 1,
                1 => k.wraps[0].nonce[0] ^= 1,
                _ => k.wraps[0].salt[15] ^= 0x80,
            }
            let err = k.open(&master).unwrap_err();
            assert!(
                matches!(err, CryptoError::KeyringInvalid { .. }),
                "{field}: {err:?}"
            );
        }
        // The data key id is bound to the wrap.
        let mut k = keyring.clone();
        k.data_key_id.0[0] ^= 1;
        assert!(matches!(k.open(&master), Err(CryptoError::KeyringInvalid { .. })));
        // A wrap relabelled with another key's id does not open for it.
        let other = MasterKey::generate();
        let mut k = keyring.clone();
        k.wraps[0].master_key_id = other.id();
        assert!(matches!(k.open(&other), Err(CryptoError::KeyringInvalid { .. })));
    }

    #[test]
    fn rewrap_moves_to_the_new_key_keeping_the_data_key() {
        let old = MasterKey::generate();
        let new = MasterKey::generate();
        let (keyring, dk) = Keyring::create(&old);
        let both = keyring.add_key(&old, &new).unwrap();
        assert_eq!(both.master_key_ids(), vec![old.id(), new.id()]);
        assert_eq!(both.open(&old).unwrap().id(), dk.id());
        assert_eq!(both.open(&new).unwrap().id(), dk.id());
        assert_eq!(both.add_key(&new, &old).unwrap(), both, "idempotent");

        let rotated = keyring.rewrap(&old, &new).unwrap();
        assert_eq!(rotated.master_key_ids(), vec![new.id()]);
        assert_eq!(rotated.open(&new).unwrap().bytes(), dk.bytes());
        assert!(matches!(rotated.open(&old), Err(CryptoError::WrongKey { .. })));
        assert_eq!(rotated.data_key_id(), keyring.data_key_id());
        // Rotating needs the old key; to itself is refused.
        assert!(matches!(
            keyring.rewrap(&new, &old),
            Err(CryptoError::WrongKey { .. })
        ));
        assert!(matches!(
            keyring.rewrap(&old, &old),
            Err(CryptoError::SameKey { .. })
        ));
        assert!(matches!(
            both.retain_only(&MasterKey::generate()),
            Err(CryptoError::WrongKey { .. })
        ));
    }

    #[test]
    fn passphrase_keyrings_and_rotation_between_kinds() {
        let kdf = cheap_kdf();
        let pass_key = MasterKey::from_passphrase("hunter2", &kdf).unwrap();
        let (keyring, dk) = Keyring::create(&pass_key);
        let (derived, opened) = keyring.open_with_passphrase("hunter2").unwrap();
        assert_eq!(derived.id(), pass_key.id());
        assert_eq!(opened.id(), dk.id());
        let err = keyring.open_with_passphrase("hunter3").unwrap_err();
        assert!(matches!(err, CryptoError::WrongKey { .. }));
        assert!(err.to_string().contains("passphrase derives none"), "{err}");

        // Passphrase -> raw key.
        let raw = MasterKey::generate();
        let to_raw = keyring.rewrap(&pass_key, &raw).unwrap();
        assert_eq!(to_raw.open(&raw).unwrap().id(), dk.id());
        let err = to_raw.open_with_passphrase("hunter2").unwrap_err();
        assert!(err.to_string().contains("no passphrase-derived key"), "{err}");
        // Raw key -> another passphrase (new salt).
        let new_pass = MasterKey::from_passphrase("correct horse", &cheap_kdf()).unwrap();
        let back = to_raw.rewrap(&raw, &new_pass).unwrap();
        assert_eq!(
            back.open_with_passphrase("correct horse").unwrap().1.id(),
            dk.id()
        );
        assert!(back.open_with_passphrase("hunter2").is_err());
    }

    #[test]
    fn repository_policy() {
        let master = MasterKey::generate();
        let (keyring, dk) = Keyring::create(&master);
        let key = Credential::Key(master.clone());
        assert!(open_repository(None, None).unwrap().is_none());
        assert!(matches!(
            open_repository(None, Some(&key)),
            Err(CryptoError::RepositoryNotEncrypted)
        ));
        assert!(matches!(
            open_repository(Some(&keyring), None),
            Err(CryptoError::KeyRequired)
        ));
        assert_eq!(
            open_repository(Some(&keyring), Some(&key)).unwrap().unwrap().id(),
            dk.id()
        );
        let wrong = Credential::Key(MasterKey::generate());
        assert!(matches!(
            open_repository(Some(&keyring), Some(&wrong)),
            Err(CryptoError::WrongKey { .. })
        ));
        let pass = Credential::Passphrase(Zeroizing::new("pw".into()));
        assert_eq!(format!("{pass:?}"), "Passphrase(..)");
        assert!(matches!(
            open_repository(Some(&keyring), Some(&pass)),
            Err(CryptoError::WrongKey { .. })
        ));
    }
}
