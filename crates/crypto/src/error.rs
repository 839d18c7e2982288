//! [`CryptoError`]: everything that can go wrong with keys, the keyring and
//! encrypted streams.
//!
//! No message ever carries secret material: key bytes, key text, a
//! passphrase or a key command's stdout. Paths, sizes, key *ids* (see
//! [`crate::KeyId`]), object names, chunk indexes and a key command's stderr
//! are not secret and are named where they help.

use std::io;
use std::path::PathBuf;

use crate::keys::KeyId;

/// An error from this crate.
///
/// Told apart with [`CryptoError::is_integrity`]: integrity errors mean the
/// stored bytes are not what was written under this key and name (tampered,
/// corrupted, truncated, moved, another repository's); retrying will not
/// help. Everything else is a key or usage problem, or plain I/O.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    // ---- key sources ---------------------------------------------------
    /// A key file could not be opened or read.
    #[error("cannot read key file {path}: {source}")]
    KeyFileRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A key file that does not hold exactly 32 bytes.
    #[error(
        "key file {path} holds {size} bytes: a key file must hold exactly 32 raw bytes \
         (make one with: head -c 32 /dev/urandom > FILE)"
    )]
    KeyFileSize { path: PathBuf, size: u64 },

    /// Key text that is neither 64 hex digits nor the base64 of 32 bytes.
    /// `reason` describes the text's shape (its length, what it decoded
    /// to), never its content.
    #[error("the key text is not a key: {reason} (a key is 64 hex digits or the base64 of 32 bytes)")]
    KeyText { reason: String },

    /// The key command could not be started.
    #[error("cannot run the key command with sh -c: {source}")]
    KeyCommandSpawn {
        #[source]
        source: io::Error,
    },

    /// The key command exited unsuccessfully.
    #[error("the key command failed ({status}); its stderr: {stderr:?}")]
    KeyCommandFailed { status: String, stderr: String },

    /// The key command did not exit in time; it was killed.
    #[error("the key command did not finish within {seconds} s and was killed")]
    KeyCommandTimeout { seconds: u64 },

    /// The key command's stdout is not a key. `reason` describes its shape,
    /// never its content.
    #[error(
        "the key command's output is not a key: {reason} (expected on stdout: 32 raw bytes, \
         64 hex digits or the base64 of 32 bytes)"
    )]
    KeyCommandOutput { reason: String },

    /// An unusable passphrase (empty).
    #[error("unusable passphrase: {reason}")]
    Passphrase { reason: &'static str },

    /// Argon2id parameters out of range (in a keyring, or given).
    #[error("invalid key-derivation parameters: {reason}")]
    KdfParams { reason: String },

    // ---- repository and keyring ----------------------------------------
    /// The master key does not open the repository's keyring.
    #[error("this key does not open this repository ({detail})")]
    WrongKey { detail: String },

    /// The repository is encrypted and no key was given.
    #[error(
        "this repository is encrypted: give a key with PGARK_ENCRYPTION_KEY (64 hex digits or \
         base64), a key file, a key command or a passphrase"
    )]
    KeyRequired,

    /// A key was given for a repository that is not encrypted.
    #[error(
        "a key was given but this repository is not encrypted: pgark does not mix encrypted \
         and unencrypted objects in one repository"
    )]
    RepositoryNotEncrypted,

    /// An encrypted repository was to be set up where one already is.
    #[error("this repository is already encrypted (it has a keyring)")]
    AlreadyEncrypted,

    /// A keyring document that cannot be used: malformed, inconsistent or
    /// damaged.
    #[error("invalid keyring: {reason}")]
    KeyringInvalid { reason: String },

    /// A keyring document of a version this reader does not know.
    #[error("unsupported keyring version {actual}: this pgark reads version {supported}")]
    UnsupportedKeyringVersion { supported: u32, actual: u32 },

    /// Rotation from a key to itself.
    #[error("the new key is the key already in use (key id {key_id})")]
    SameKey { key_id: KeyId },

    /// Another key rotation is under way, or one was interrupted with keys
    /// other than the ones given.
    #[error("a key rotation is in progress or was interrupted: {detail}")]
    RotationInProgress { detail: String },

    // ---- encrypted streams ---------------------------------------------
    /// The stream does not start with the encrypted-stream magic.
    #[error("not an encrypted pgark stream: {reason}")]
    NotEncryptedStream { reason: String },

    /// The stream ended inside its 64-byte header.
    #[error("encrypted stream truncated in its header: expected {expected} bytes, got {actual}")]
    TruncatedHeader { expected: usize, actual: usize },

    /// A stream format version this reader does not know.
    #[error("unsupported encrypted stream version {actual}: this reader supports version {supported}")]
    UnsupportedStreamVersion { supported: u8, actual: u8 },

    /// Algorithm, chunk size or reserved bits this reader does not support.
    #[error("unsupported encrypted stream parameters: {reason}")]
    UnsupportedStream { reason: String },

    /// The object was encrypted under another data key (another
    /// repository's, or one this keyring does not hold).
    #[error("object was encrypted under data key {actual}, not under this repository's data key {expected}")]
    WrongDataKey { expected: KeyId, actual: KeyId },

    /// The stream header failed authentication: tampered or corrupted.
    #[error("encrypted stream header failed authentication (tampered or corrupted)")]
    TamperedHeader,

    /// The object was encrypted for another name: moved, copied or swapped.
    #[error("encrypted object was not written under the name {expected:?} (moved, copied or swapped)")]
    WrongObject { expected: String },

    /// The stream ended before its final chunk: truncated.
    #[error("encrypted stream truncated: it ends in or before chunk {chunk}, without a final chunk")]
    Truncated { chunk: u64 },

    /// A chunk failed authentication.
    #[error(
        "chunk {chunk} of the encrypted stream failed authentication \
         (tampered, corrupted, reordered or from another object)"
    )]
    AuthFailed { chunk: u64 },

    /// Bytes follow the final chunk.
    #[error("unexpected data after the final chunk {chunk} of the encrypted stream")]
    TrailingData { chunk: u64 },

    // ---- plumbing ------------------------------------------------------
    /// The inner reader or writer failed.
    #[error(transparent)]
    Io(io::Error),

    /// The repository's store failed.
    #[error(transparent)]
    Store(#[from] pgark_store::StoreError),

    /// An [`crate::EncryptWriter`] used after one of its writes failed.
    #[error("encrypting writer is unusable after an earlier error: {first_error}")]
    WriterFailed { first_error: String },
}

impl CryptoError {
    /// True when stored bytes (an encrypted stream or a keyring) are not
    /// what was written under this key and name: tampered, corrupted,
    /// truncated, moved, or of an unsupported format. Retrying will not
    /// help. False for key, usage, store and I/O problems.
    pub fn is_integrity(&self) -> bool {
        use CryptoError::*;
        matches!(
            self,
            KeyringInvalid { .. }
                | UnsupportedKeyringVersion { .. }
                | NotEncryptedStream { .. }
                | TruncatedHeader { .. }
                | UnsupportedStreamVersion { .. }
                | UnsupportedStream { .. }
                | WrongDataKey { .. }
                | TamperedHeader
                | WrongObject { .. }
                | Truncated { .. }
                | AuthFailed { .. }
                | TrailingData { .. }
        )
    }

    /// The [`CryptoError`] carried by an `io::Error` that a
    /// [`crate::DecryptReader`] or [`crate::EncryptWriter`] returned, if it
    /// carries one (integrity errors do, as kind `InvalidData`).
    pub fn from_io(err: &io::Error) -> Option<&CryptoError> {
        err.get_ref()
            .and_then(|inner| inner.downcast_ref::<CryptoError>())
    }

    /// Wraps this error for `Read`/`Write` impls: plain I/O errors as they
    /// are, everything else as kind `InvalidData` carrying `self`.
    pub fn into_io(self) -> io::Error {
        match self {
            CryptoError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }

    /// A copy of this error. `io::Error` and the store's error are not
    /// `Clone`: their copies keep the kind and the message.
    pub fn duplicate(&self) -> CryptoError {
        use CryptoError::*;
        let io_copy = |e: &io::Error| io::Error::new(e.kind(), e.to_string());
        match self {
            KeyFileRead { path, source } => KeyFileRead {
                path: path.clone(),
                source: io_copy(source),
            },
            KeyFileSize { path, size } => KeyFileSize {
                path: path.clone(),
                size: *size,
            },
            KeyText { reason } => KeyText {
                reason: reason.clone(),
            },
            KeyCommandSpawn { source } => KeyCommandSpawn {
                source: io_copy(source),
            },
            KeyCommandFailed { status, stderr } => KeyCommandFailed {
                status: status.clone(),
                stderr: stderr.clone(),
            },
            KeyCommandTimeout { seconds } => KeyCommandTimeout { seconds: *seconds },
            KeyCommandOutput { reason } => KeyCommandOutput {
                reason: reason.clone(),
            },
            Passphrase { reason } => Passphrase { reason },
            KdfParams { reason } => KdfParams {
                reason: reason.clone(),
            },
            WrongKey { detail } => WrongKey {
                detail: detail.clone(),
            },
            KeyRequired => KeyRequired,
            RepositoryNotEncrypted => RepositoryNotEncrypted,
            AlreadyEncrypted => AlreadyEncrypted,
            KeyringInvalid { reason } => KeyringInvalid {
                reason: reason.clone(),
            },
            UnsupportedKeyringVersion { supported, actual } => UnsupportedKeyringVersion {
                supported: *supported,
                actual: *actual,
            },
            SameKey { key_id } => SameKey { key_id: *key_id },
            RotationInProgress { detail } => RotationInProgress {
                detail: detail.clone(),
            },
            NotEncryptedStream { reason } => NotEncryptedStream {
                reason: reason.clone(),
            },
            TruncatedHeader { expected, actual } => TruncatedHeader {
                expected: *expected,
                actual: *actual,
            },
            UnsupportedStreamVersion { supported, actual } => UnsupportedStreamVersion {
                supported: *supported,
                actual: *actual,
            },
            UnsupportedStream { reason } => UnsupportedStream {
                reason: reason.clone(),
            },
            WrongDataKey { expected, actual } => WrongDataKey {
                expected: *expected,
                actual: *actual,
            },
            TamperedHeader => TamperedHeader,
            WrongObject { expected } => WrongObject {
                expected: expected.clone(),
            },
            Truncated { chunk } => Truncated { chunk: *chunk },
            AuthFailed { chunk } => AuthFailed { chunk: *chunk },
            TrailingData { chunk } => TrailingData { chunk: *chunk },
            Io(e) => Io(io_copy(e)),
            Store(e) => Io(io::Error::other(e.to_string())),
            WriterFailed { first_error } => WriterFailed {
                first_error: first_error.clone(),
            },
        }
    }
}

/// Unwraps a `CryptoError` carried inside an `io::Error` (see
/// [`CryptoError::from_io`]); any other `io::Error` becomes
/// [`CryptoError::Io`].
impl From<io::Error> for CryptoError {
    fn from(err: io::Error) -> Self {
        if CryptoError::from_io(&err).is_some() {
            match err.into_inner().map(|inner| inner.downcast::<CryptoError>()) {
                Some(Ok(crypto)) => *crypto,
                _ => unreachable!("checked above that a CryptoError is inside"),
            }
        } else {
            CryptoError::Io(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_round_trip_keeps_the_variant() {
        let io = CryptoError::AuthFailed { chunk: 7 }.into_io();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        assert!(matches!(
            CryptoError::from_io(&io),
            Some(CryptoError::AuthFailed { chunk: 7 })
        ));
        assert!(matches!(
            CryptoError::from(io),
            CryptoError::AuthFailed { chunk: 7 }
        ));
        let plain = CryptoError::Io(io::Error::new(io::ErrorKind::TimedOut, "slow")).into_io();
        assert_eq!(plain.kind(), io::ErrorKind::TimedOut);
        assert!(matches!(CryptoError::from(plain), CryptoError::Io(_)));
    }

    #[test]
    fn classification_and_duplicates() {
        let integrity = [
            CryptoError::AuthFailed { chunk: 1 },
            CryptoError::Truncated { chunk: 2 },
            CryptoError::TrailingData { chunk: 3 },
            CryptoError::TamperedHeader,
            CryptoError::WrongObject {
                expected: "wal/x".into(),
            },
        ];
        for e in &integrity {
            assert!(e.is_integrity(), "{e}");
            assert_eq!(e.to_string(), e.duplicate().to_string());
        }
        let not = [
            CryptoError::KeyRequired,
            CryptoError::WrongKey { detail: "x".into() },
            CryptoError::Io(io::Error::other("disk")),
            CryptoError::KeyText {
                reason: "3 characters".into(),
            },
        ];
        for e in &not {
            assert!(!e.is_integrity(), "{e}");
            assert_eq!(e.to_string(), e.duplicate().to_string());
        }
    }

    #[test]
    fn missing_key_message_says_how_to_give_one() {
        let msg = CryptoError::KeyRequired.to_string();
        assert!(
            msg.starts_with("this repository is encrypted: give a key with"),
            "{msg}"
        );
        let msg = CryptoError::WrongKey {
            detail: "key id 0011223344556677".into(),
        }
        .to_string();
        assert!(msg.starts_with("this key does not open this repository"), "{msg}");
    }
}
