//! The keys: [`MasterKey`] (the user's), [`DataKey`] (the repository's),
//! [`ObjectCipherKey`] (one object's), their non-secret [`KeyId`]s, and the
//! Argon2id parameters of passphrase-derived master keys ([`KdfParams`]).
//!
//! Every derivation is HKDF-SHA256 with its own `info` string (the
//! `INFO_*` constants), so no two derived values can coincide. Secret bytes
//! live in [`Zeroizing`] buffers (wiped on drop) and no `Debug` impl prints
//! them: only the key id.

use std::fmt;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes256Gcm, KeyInit, Nonce, Tag};
use hkdf::hmac::{Hmac, Mac};
use hkdf::Hkdf;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::CryptoError;

/// Length of every key: master, data and object keys are AES-256 keys.
pub const KEY_LEN: usize = 32;

/// HKDF info of a master key's id.
pub const INFO_MASTER_KEY_ID: &[u8] = b"pgark v1 master key id";
/// HKDF info of the key-encryption key that wraps the data key (salt: the
/// wrap's random salt).
pub const INFO_KEY_WRAP: &[u8] = b"pgark v1 keyring key-encryption key";
/// HKDF info of a data key's id.
pub const INFO_DATA_KEY_ID: &[u8] = b"pgark v1 data key id";
/// HKDF info of the key that authenticates encrypted-stream headers.
pub const INFO_HEADER_MAC: &[u8] = b"pgark v1 stream header mac key";
/// HKDF info of the key that commits a stream to its object name.
pub const INFO_NAME_COMMIT: &[u8] = b"pgark v1 object name commitment key";
/// HKDF info prefix of an object's AES-256-GCM key (the object name
/// follows; salt: the stream's random salt).
pub const INFO_OBJECT_KEY: &[u8] = b"pgark v1 object key ";

/// HKDF-SHA256 `ikm` (with optional `salt`) expanded under the
/// concatenation of `info` into `out`.
pub(crate) fn hkdf(ikm: &[u8], salt: Option<&[u8]>, info: &[&[u8]], out: &mut [u8]) {
    Hkdf::<Sha256>::new(salt, ikm)
        .expand_multi_info(info, out)
        .expect("output lengths used here are far below HKDF-SHA256's limit");
}

/// HMAC-SHA256 of the concatenation of `parts` under `key`, cut to 16
/// bytes.
pub(crate) fn mac16(key: &[u8; KEY_LEN], parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    let full = mac.finalize().into_bytes();
    full[..16].try_into().expect("16 of 32 bytes")
}

/// Fills `out` from the operating system's random source.
pub(crate) fn random_bytes(out: &mut [u8]) {
    rand::rngs::OsRng.fill_bytes(out);
}

/// A non-secret 8-byte fingerprint of a key: HKDF-SHA256 of the key under
/// its own info string. Safe to log and to store; it names a key without
/// revealing anything about it. Displayed as 16 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    fn derive(key: &[u8; KEY_LEN], info: &[u8]) -> KeyId {
        let mut id = [0u8; 8];
        hkdf(key, None, &[info], &mut id);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut id = [0u8; 8];
        hex::decode_to_slice(&s, &mut id)
            .map_err(|_| serde::de::Error::custom(format!("key id {s:?} is not 16 hex digits")))?;
        Ok(KeyId(id))
    }
}

/// The user's key: 32 bytes that open the repository's keyring (they wrap
/// its [`DataKey`]). From a key file, key text, a key command or a
/// passphrase (see the constructors in [`crate::source`]).
///
/// Wiped from memory on drop. `Debug` shows the [`KeyId`] only.
#[derive(Clone)]
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: KeyId,
    /// How the key was derived from a passphrase, if it was; recorded in
    /// the keyring next to the wrap this key opens.
    kdf: Option<KdfParams>,
}

impl MasterKey {
    /// A master key of these 32 bytes.
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> MasterKey {
        MasterKey::build(Zeroizing::new(*bytes), None)
    }

    /// A fresh random master key (for `key generate`-like commands and
    /// tests).
    pub fn generate() -> MasterKey {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        random_bytes(&mut bytes[..]);
        MasterKey::build(bytes, None)
    }

    pub(crate) fn build(bytes: Zeroizing<[u8; KEY_LEN]>, kdf: Option<KdfParams>) -> MasterKey {
        let id = KeyId::derive(&bytes, INFO_MASTER_KEY_ID);
        MasterKey { bytes, id, kdf }
    }

    /// The key's non-secret id (as recorded in the keyring).
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The Argon2id parameters this key was derived with, if it came from a
    /// passphrase.
    pub fn kdf(&self) -> Option<&KdfParams> {
        self.kdf.as_ref()
    }

    /// The key as 64 lowercase hex digits, for showing a freshly generated
    /// key to its owner once. Secret: never log it.
    pub fn expose_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(&self.bytes[..]))
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("from_passphrase", &self.kdf.is_some())
            .finish_non_exhaustive()
    }
}

/// The repository's data key: random, stored only wrapped in the keyring;
/// every object's key is derived from it ([`DataKey::object_key`]).
///
/// Wiped from memory on drop. `Debug` shows the [`KeyId`] only.
#[derive(Clone)]
pub struct DataKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    id: KeyId,
    header_mac_key: Zeroizing<[u8; KEY_LEN]>,
    name_commit_key: Zeroizing<[u8; KEY_LEN]>,
}

impl DataKey {
    /// A fresh random data key.
    pub fn generate() -> DataKey {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        random_bytes(&mut bytes[..]);
        DataKey::build(bytes)
    }

    /// A data key of these 32 bytes. The repository's data key comes from
    /// its keyring ([`crate::Keyring::open`]); this is for tests and tools
    /// (the fuzz target uses a fixed key).
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> DataKey {
        DataKey::build(Zeroizing::new(*bytes))
    }

    pub(crate) fn build(bytes: Zeroizing<[u8; KEY_LEN]>) -> DataKey {
        let id = KeyId::derive(&bytes, INFO_DATA_KEY_ID);
        let mut header_mac_key = Zeroizing::new([0u8; KEY_LEN]);
        hkdf(&bytes[..], None, &[INFO_HEADER_MAC], &mut header_mac_key[..]);
        let mut name_commit_key = Zeroizing::new([0u8; KEY_LEN]);
        hkdf(&bytes[..], None, &[INFO_NAME_COMMIT], &mut name_commit_key[..]);
        DataKey {
            bytes,
            id,
            header_mac_key,
            name_commit_key,
        }
    }

    /// The key's non-secret id (recorded in the keyring and in every
    /// encrypted stream's header).
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// The AES-256-GCM key of one object: HKDF-SHA256 with the object's
    /// random `salt` as salt, this data key as input key material and
    /// `INFO_OBJECT_KEY || object_name` as info.
    pub fn object_key(&self, object_name: &str, salt: &[u8; 16]) -> ObjectCipherKey {
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        hkdf(
            &self.bytes[..],
            Some(salt),
            &[INFO_OBJECT_KEY, object_name.as_bytes()],
            &mut key[..],
        );
        ObjectCipherKey::new(&key)
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.bytes
    }

    pub(crate) fn header_mac_key(&self) -> &[u8; KEY_LEN] {
        &self.header_mac_key
    }

    pub(crate) fn name_commit_key(&self) -> &[u8; KEY_LEN] {
        &self.name_commit_key
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// One object's AES-256-GCM key (its expanded key schedule is wiped on
/// drop). Made by [`DataKey::object_key`]; used by the stream
/// writer/reader.
pub struct ObjectCipherKey {
    cipher: Aes256Gcm,
}

impl ObjectCipherKey {
    pub(crate) fn new(key: &[u8; KEY_LEN]) -> ObjectCipherKey {
        ObjectCipherKey {
            cipher: Aes256Gcm::new_from_slice(key).expect("32-byte key"),
        }
    }

    /// Encrypts `buf` in place; returns the 16-byte tag.
    pub(crate) fn seal(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8]) -> [u8; 16] {
        self.cipher
            .encrypt_in_place_detached(Nonce::from_slice(nonce), aad, buf)
            .expect("chunks are far below AES-GCM's per-message limit")
            .into()
    }

    /// Decrypts `buf` in place if `tag` authenticates it; `false` (and
    /// `buf` unspecified) otherwise.
    pub(crate) fn open(&self, nonce: &[u8; 12], aad: &[u8], buf: &mut [u8], tag: &[u8; 16]) -> bool {
        self.cipher
            .decrypt_in_place_detached(Nonce::from_slice(nonce), aad, buf, Tag::from_slice(tag))
            .is_ok()
    }
}

impl fmt::Debug for ObjectCipherKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ObjectCipherKey(..)")
    }
}

/// The only key-derivation function: Argon2id (RFC 9106), version 0x13.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KdfAlgorithm {
    #[serde(rename = "argon2id")]
    Argon2id,
}

/// How a passphrase is stretched into a master key: Argon2id with these
/// costs and this salt. Not secret; stored in the repository's keyring
/// next to the wrap the derived key opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    pub algorithm: KdfAlgorithm,
    /// Argon2 version: 19 (0x13).
    pub version: u32,
    /// Memory cost in KiB.
    pub memory_kib: u32,
    /// Time cost (passes).
    pub iterations: u32,
    /// Lanes.
    pub parallelism: u32,
    /// 16 random bytes, base64 in JSON.
    #[serde(with = "crate::b64")]
    pub salt: [u8; 16],
}

impl KdfParams {
    /// Argon2 version 0x13.
    pub const ARGON2_VERSION: u32 = 0x13;
    /// Largest memory cost a keyring may ask for (4 GiB): a bound on what
    /// a damaged or hostile keyring can make pgark allocate.
    pub const MAX_MEMORY_KIB: u32 = 4 * 1024 * 1024;
    /// Largest time cost accepted.
    pub const MAX_ITERATIONS: u32 = 64;
    /// Largest parallelism accepted.
    pub const MAX_PARALLELISM: u32 = 16;

    /// RFC 9106's second recommended setting (64 MiB, 3 passes, 4 lanes)
    /// with a fresh random salt. About a quarter of a second per derivation
    /// on one core.
    pub fn recommended() -> KdfParams {
        KdfParams::new(64 * 1024, 3, 4).expect("recommended parameters are valid")
    }

    /// These costs with a fresh random salt.
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<KdfParams, CryptoError> {
        let mut salt = [0u8; 16];
        random_bytes(&mut salt);
        let params = KdfParams {
            algorithm: KdfAlgorithm::Argon2id,
            version: Self::ARGON2_VERSION,
            memory_kib,
            iterations,
            parallelism,
            salt,
        };
        params.validate()?;
        Ok(params)
    }

    /// Checks the parameters are within Argon2's rules and pgark's bounds.
    pub fn validate(&self) -> Result<(), CryptoError> {
        let bad = |reason: String| Err(CryptoError::KdfParams { reason });
        if self.version != Self::ARGON2_VERSION {
            return bad(format!("argon2 version {} (only 19 is supported)", self.version));
        }
        if !(1..=Self::MAX_PARALLELISM).contains(&self.parallelism) {
            return bad(format!(
                "parallelism {} (1..={})",
                self.parallelism,
                Self::MAX_PARALLELISM
            ));
        }
        if !(1..=Self::MAX_ITERATIONS).contains(&self.iterations) {
            return bad(format!(
                "iterations {} (1..={})",
                self.iterations,
                Self::MAX_ITERATIONS
            ));
        }
        let min_memory = 8 * self.parallelism;
        if !(min_memory..=Self::MAX_MEMORY_KIB).contains(&self.memory_kib) {
            return bad(format!(
                "memory {} KiB ({min_memory}..={} KiB for {} lanes)",
                self.memory_kib,
                Self::MAX_MEMORY_KIB,
                self.parallelism
            ));
        }
        Ok(())
    }

    /// Argon2id of `passphrase` under these parameters: 32 bytes.
    pub(crate) fn derive(&self, passphrase: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
        self.validate()?;
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, Some(KEY_LEN))
            .map_err(|e| CryptoError::KdfParams {
            reason: e.to_string(),
        })?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        argon
            .hash_password_into(passphrase, &self.salt, &mut out[..])
            .map_err(|e| CryptoError::KdfParams {
                reason: e.to_string(),
            })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_key_bytes() {
        let bytes = [0xA5u8; 32];
        let mk = MasterKey::from_bytes(&bytes);
        let dk = DataKey::from_bytes(&bytes);
        for shown in [format!("{mk:?}"), format!("{dk:?}"), format!("{mk:#?}")] {
            assert!(!shown.contains("a5a5"), "{shown}");
            assert!(!shown.contains("165"), "{shown}");
            assert!(shown.contains(&mk.id().to_string()) || shown.contains(&dk.id().to_string()));
        }
        assert_eq!(
            format!("{:?}", dk.object_key("x", &[0; 16])),
            "ObjectCipherKey(..)"
        );
    }

    #[test]
    fn ids_are_stable_distinct_and_not_the_key() {
        let bytes = [7u8; 32];
        let mk = MasterKey::from_bytes(&bytes);
        let dk = DataKey::from_bytes(&bytes);
        // Same bytes, different roles: different ids.
        assert_ne!(mk.id(), dk.id());
        assert_eq!(mk.id(), MasterKey::from_bytes(&bytes).id());
        assert_ne!(mk.id(), MasterKey::from_bytes(&[8u8; 32]).id());
        assert_ne!(&mk.id().0[..], &bytes[..8]);
        assert_eq!(mk.id().to_string().len(), 16);
        let json = serde_json::to_string(&mk.id()).unwrap();
        assert_eq!(serde_json::from_str::<KeyId>(&json).unwrap(), mk.id());
        assert!(serde_json::from_str::<KeyId>("\"xyz\"").is_err());
    }

    #[test]
    fn object_keys_depend_on_name_and_salt() {
        let dk = DataKey::from_bytes(&[1u8; 32]);
        let nonce = [0u8; 12];
        let seal = |name: &str, salt: [u8; 16]| {
            let mut buf = *b"sixteen byte msg";
            let tag = dk.object_key(name, &salt).seal(&nonce, b"", &mut buf);
            (buf, tag)
        };
        let base = seal("wal/a", [0; 16]);
        assert_eq!(base, seal("wal/a", [0; 16]));
        assert_ne!(base, seal("wal/b", [0; 16]));
        assert_ne!(base, seal("wal/a", [1; 16]));
        let (mut buf, tag) = base;
        let key = dk.object_key("wal/a", &[0; 16]);
        assert!(!key.open(&nonce, b"x", &mut buf.clone(), &tag));
        assert!(key.open(&nonce, b"", &mut buf, &tag));
        assert_eq!(&buf, b"sixteen byte msg");
    }

    #[test]
    fn kdf_params_bounds() {
        assert!(KdfParams::new(64, 1, 1).is_ok());
        assert!(KdfParams::new(7, 1, 1).is_err());
        assert!(KdfParams::new(64, 0, 1).is_err());
        assert!(KdfParams::new(64, 1, 0).is_err());
        assert!(
            KdfParams::new(64, 1, 9).is_err(),
            "64 KiB is below 8 KiB x 9 lanes"
        );
        assert!(KdfParams::new(KdfParams::MAX_MEMORY_KIB + 1, 1, 1).is_err());
        let mut p = KdfParams::new(64, 1, 1).unwrap();
        p.version = 0x10;
        assert!(matches!(p.validate(), Err(CryptoError::KdfParams { .. })));
        let r = KdfParams::recommended();
        assert_eq!((r.memory_kib, r.iterations, r.parallelism), (65536, 3, 4));
        assert_ne!(r.salt, KdfParams::recommended().salt);
    }
}
