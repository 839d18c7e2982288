//! Encryption for pgark repositories.
//!
//! # Keys (envelope encryption)
//!
//! ```text
//! master key (user's: key file | key text | key command | passphrase + Argon2id)
//!    └─ wraps (AES-256-GCM under an HKDF-derived key-encryption key) ─┐
//! data key (repository's, random, stored wrapped in keyring.json)  <──┘
//!    └─ HKDF-SHA256(salt = per-object random salt, info = object name)
//! object key (one per stored object) → chunked AES-256-GCM stream
//! ```
//!
//! * [`MasterKey`]: 32 bytes from [`MasterKey::from_file`],
//!   [`MasterKey::from_text`] / [`MasterKey::from_env`]
//!   (`PGARK_ENCRYPTION_KEY`), [`MasterKey::from_command`] or
//!   [`MasterKey::from_passphrase`] (Argon2id, [`KdfParams`]).
//! * [`Keyring`]: the `keyring.json` document — the data key wrapped under
//!   each master key allowed to open it; the wrap's GCM tag is the key
//!   check (a wrong key fails at once, before any data is read).
//!   [`Keyring::rewrap`] rotates the master key without re-encrypting data;
//!   [`repository`] writes it back so that an interrupted rotation leaves
//!   the old or the new key working, never neither.
//! * [`DataKey`]: the repository's key; [`DataKey::object_key`] derives
//!   each object's key.
//! * [`EncryptWriter`] / [`DecryptReader`]: the streaming AEAD, 64 KiB
//!   chunks, each with its own nonce (chunk counter + last-chunk flag),
//!   the object name in the associated data. Truncation, reordering, chunk
//!   swaps, appended bytes and objects moved to another name are all
//!   detected, each with its own [`CryptoError`] variant. Memory: one chunk
//!   each way. See [`stream`] for the byte layout.
//!
//! Pipeline order (in `pgark-codec`): compress, then encrypt.
//!
//! # What stays readable without a key
//!
//! * keyring: its format and version, the non-secret [`KeyId`]s (HKDF
//!   fingerprints) of the data key and of each master key, the Argon2id
//!   costs and salts;
//! * each encrypted stream: its format version, algorithm, chunk size,
//!   data key id and length (hence roughly the plaintext's length).
//!
//! Nothing else: not the object's content, checksum or exact length (the
//! codec's trailer is inside the encryption).
//!
//! # Secrets
//!
//! Key bytes live in zeroizing buffers and are wiped on drop; no `Debug`
//! impl prints them (only the [`KeyId`]); no error message contains key
//! bytes, key text, a passphrase or a key command's stdout.

mod b64;
pub mod error;
pub mod keyring;
pub mod keys;
pub mod repository;
pub mod source;
pub mod stream;

pub use error::CryptoError;
pub use keyring::{open_repository, Credential, Keyring, Wrap};
pub use keys::{DataKey, KdfAlgorithm, KdfParams, KeyId, MasterKey, ObjectCipherKey, KEY_LEN};
pub use source::{DEFAULT_COMMAND_TIMEOUT, KEY_ENV};
pub use stream::{decrypt_to_vec, encrypt_to_vec, DecryptReader, EncryptWriter};
