//! [`CodecError`]: everything that can go wrong while configuring, writing or
//! reading a stored object.

use std::io;

use crate::spec::Compression;

/// An error from this crate.
///
/// Three families, told apart with [`CodecError::is_integrity`]:
///
/// * **integrity errors** — the stored bytes are not a valid object for this
///   reader (not a pgark object, unsupported version, damaged header, body or
///   trailer, wrong length or checksum). Retrying will not help; every one of
///   them names what was expected and what was found.
/// * **I/O errors** ([`CodecError::Io`]) — the inner reader or writer failed.
///   The object itself may be fine; retrying may help.
/// * **usage errors** — a bad [`crate::CompressionSpec`] or codec name, or a
///   writer used after it already failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    // ---- configuration -------------------------------------------------
    /// `FromStr` for [`Compression`] met a name it does not know.
    #[error("unknown compression {name:?}: valid names are none, zstd, lz4, lzma")]
    UnknownCompression { name: String },

    /// A level outside the codec's range.
    #[error("invalid {codec} compression level {level}: valid levels are {min}..={max}")]
    InvalidLevel {
        codec: Compression,
        level: i32,
        min: i32,
        max: i32,
    },

    /// A level was given for a codec that has none (`none`, `lz4`).
    #[error("{codec} has no compression levels (got level {level})")]
    LevelNotSupported { codec: Compression, level: i32 },

    // ---- header --------------------------------------------------------
    /// The object ended before its 16-byte header was complete.
    #[error("truncated header: expected {expected} bytes, got {actual}")]
    TruncatedHeader { expected: usize, actual: usize },

    /// The first four bytes are not the pgark header magic.
    #[error("not a pgark object: header magic is {actual:#010x}, expected {expected:#010x}")]
    BadHeaderMagic { expected: u32, actual: u32 },

    /// The header frame's payload length is not the one of this format.
    #[error("not a pgark object: header payload length is {actual}, expected {expected}")]
    BadHeaderLength { expected: u32, actual: u32 },

    /// The header frame does not carry the `PGARK` tag (some other
    /// skippable frame).
    #[error("not a pgark object: header tag is {actual} (hex), expected {expected} (hex)")]
    BadHeaderTag { expected: String, actual: String },

    /// The object was written in a format version this reader does not know.
    #[error("unsupported object format version {actual}: this reader supports version {supported}")]
    UnsupportedVersion { supported: u8, actual: u8 },

    /// The codec byte names no known codec.
    #[error("unknown codec id {actual} in header: known ids are 0 (none), 1 (zstd), 2 (lz4), 3 (lzma)")]
    UnknownCodec { actual: u8 },

    /// Flag bits this reader does not support are set (bit 0, the
    /// encrypted flag, is supported).
    #[error(
        "unsupported header flags {actual:#04x}: this reader supports {supported:#04x} \
         (bit 0 = encrypted body)"
    )]
    UnsupportedFlags { supported: u8, actual: u8 },

    // ---- encryption ----------------------------------------------------
    /// The object is encrypted (header flag bit 0) and no data key was
    /// given to the reader.
    #[error("this object is encrypted: a key is needed to read it")]
    EncryptedObjectNeedsKey,

    /// The encrypted stream of an encrypted object was rejected: tampered,
    /// truncated, moved to another name, encrypted under another data key
    /// (see [`pgark_crypto::CryptoError`]).
    #[error("encrypted object: {0}")]
    Crypto(pgark_crypto::CryptoError),

    // ---- whole object --------------------------------------------------
    /// Too short to hold even a header and a trailer.
    #[error("object too short: {actual} bytes, a stored object has at least {minimum}")]
    TooShort { minimum: u64, actual: u64 },

    // ---- body ----------------------------------------------------------
    /// The codec rejected the body, or the body ended before the codec
    /// stream was complete.
    #[error("{codec} body is corrupt near stored offset {offset}: {message}")]
    Decompress {
        codec: Compression,
        offset: u64,
        message: String,
    },

    /// The codec stream ended before the body did.
    #[error(
        "{bytes} unexpected bytes after the end of the {codec} stream at stored offset {offset} \
         (expected 0)"
    )]
    TrailingGarbage {
        codec: Compression,
        offset: u64,
        bytes: u64,
    },

    // ---- trailer -------------------------------------------------------
    /// The last 52 bytes do not start with the trailer magic: the object
    /// was truncated or had data appended.
    #[error(
        "trailer magic is {actual:#010x}, expected {expected:#010x} \
         (object truncated or data appended?)"
    )]
    BadTrailerMagic { expected: u32, actual: u32 },

    /// The trailer frame's payload length is not the one of this format.
    #[error("trailer payload length is {actual}, expected {expected}")]
    BadTrailerLength { expected: u32, actual: u32 },

    /// The trailer frame does not carry the `PGAT` tag.
    #[error("trailer tag is {actual} (hex), expected {expected} (hex)")]
    BadTrailerTag { expected: String, actual: String },

    /// The body decoded to a different number of bytes than the trailer
    /// records.
    #[error("length mismatch: trailer records {expected} original bytes, body decoded to {actual}")]
    LengthMismatch { expected: u64, actual: u64 },

    /// The body decoded to bytes whose SHA-256 differs from the trailer's.
    #[error("checksum mismatch: trailer records {expected}, body decoded to {actual}")]
    ChecksumMismatch { expected: String, actual: String },

    // ---- plumbing ------------------------------------------------------
    /// The inner reader or writer failed.
    #[error(transparent)]
    Io(io::Error),

    /// An [`crate::ObjectWriter`] was used after one of its writes failed;
    /// the object it was writing is incomplete and must be discarded.
    #[error("object writer is unusable after an earlier error: {first_error}")]
    WriterFailed { first_error: String },
}

impl CodecError {
    /// True when the stored bytes are bad (or of a format this reader does
    /// not support): retrying the same object will not help. False for I/O
    /// errors of the inner reader/writer and for usage errors.
    ///
    /// [`CodecError::EncryptedObjectNeedsKey`] counts as one (an object this
    /// reader, without a key, cannot read; retrying will not help; it may
    /// also be an unencrypted object whose flag byte was damaged);
    /// [`CodecError::Crypto`] is one when the crypto error is
    /// ([`pgark_crypto::CryptoError::is_integrity`]).
    pub fn is_integrity(&self) -> bool {
        match self {
            CodecError::Crypto(e) => e.is_integrity(),
            _ => !matches!(
                self,
                CodecError::Io(_)
                    | CodecError::WriterFailed { .. }
                    | CodecError::UnknownCompression { .. }
                    | CodecError::InvalidLevel { .. }
                    | CodecError::LevelNotSupported { .. }
            ),
        }
    }

    /// A crypto error as a codec error: I/O errors stay I/O errors.
    pub(crate) fn from_crypto(err: pgark_crypto::CryptoError) -> CodecError {
        match err {
            pgark_crypto::CryptoError::Io(e) => CodecError::Io(e),
            other => CodecError::Crypto(other),
        }
    }

    /// The [`CodecError`] carried by an `io::Error` that
    /// [`crate::ObjectReader`]'s `read` returned, if it carries one.
    ///
    /// Integrity problems come back from `read` as `io::Error`s of kind
    /// `InvalidData` wrapping a `CodecError`; plain I/O errors of the inner
    /// reader come back unchanged (and this returns `None` for them).
    pub fn from_io(err: &io::Error) -> Option<&CodecError> {
        err.get_ref().and_then(|inner| inner.downcast_ref::<CodecError>())
    }

    /// Wraps this error in an `io::Error` for `Read`/`Write` impls: plain
    /// I/O errors are returned as they are, everything else as kind
    /// `InvalidData` carrying `self`.
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            CodecError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }

    /// A copy of this error (`io::Error` is not `Clone`; its copy keeps the
    /// kind and the message).
    pub(crate) fn duplicate(&self) -> CodecError {
        use CodecError::*;
        match self {
            UnknownCompression { name } => UnknownCompression { name: name.clone() },
            InvalidLevel {
                codec,
                level,
                min,
                max,
            } => InvalidLevel {
                codec: *codec,
                level: *level,
                min: *min,
                max: *max,
            },
            LevelNotSupported { codec, level } => LevelNotSupported {
                codec: *codec,
                level: *level,
            },
            TruncatedHeader { expected, actual } => TruncatedHeader {
                expected: *expected,
                actual: *actual,
            },
            BadHeaderMagic { expected, actual } => BadHeaderMagic {
                expected: *expected,
                actual: *actual,
            },
            BadHeaderLength { expected, actual } => BadHeaderLength {
                expected: *expected,
                actual: *actual,
            },
            BadHeaderTag { expected, actual } => BadHeaderTag {
                expected: expected.clone(),
                actual: actual.clone(),
            },
            UnsupportedVersion { supported, actual } => UnsupportedVersion {
                supported: *supported,
                actual: *actual,
            },
            UnknownCodec { actual } => UnknownCodec { actual: *actual },
            UnsupportedFlags { supported, actual } => UnsupportedFlags {
                supported: *supported,
                actual: *actual,
            },
            EncryptedObjectNeedsKey => EncryptedObjectNeedsKey,
            Crypto(e) => Crypto(e.duplicate()),
            TooShort { minimum, actual } => TooShort {
                minimum: *minimum,
                actual: *actual,
            },
            Decompress {
                codec,
                offset,
                message,
            } => Decompress {
                codec: *codec,
                offset: *offset,
                message: message.clone(),
            },
            TrailingGarbage { codec, offset, bytes } => TrailingGarbage {
                codec: *codec,
                offset: *offset,
                bytes: *bytes,
            },
            BadTrailerMagic { expected, actual } => BadTrailerMagic {
                expected: *expected,
                actual: *actual,
            },
            BadTrailerLength { expected, actual } => BadTrailerLength {
                expected: *expected,
                actual: *actual,
            },
            BadTrailerTag { expected, actual } => BadTrailerTag {
                expected: expected.clone(),
                actual: actual.clone(),
            },
            LengthMismatch { expected, actual } => LengthMismatch {
                expected: *expected,
                actual: *actual,
            },
            ChecksumMismatch { expected, actual } => ChecksumMismatch {
                expected: expected.clone(),
                actual: actual.clone(),
            },
            Io(e) => Io(io::Error::new(e.kind(), e.to_string())),
            WriterFailed { first_error } => WriterFailed {
                first_error: first_error.clone(),
            },
        }
    }
}

/// Unwraps a `CodecError` carried inside an `io::Error` (see
/// [`CodecError::from_io`]); a [`pgark_crypto::CryptoError`] carried the same
/// way (by the decrypting stage) becomes [`CodecError::Crypto`]; any other
/// `io::Error` becomes [`CodecError::Io`].
impl From<io::Error> for CodecError {
    fn from(err: io::Error) -> Self {
        if pgark_crypto::CryptoError::from_io(&err).is_some() {
            return CodecError::from_crypto(pgark_crypto::CryptoError::from(err));
        }
        if CodecError::from_io(&err).is_some() {
            let inner = err
                .into_inner()
                .expect("checked above that a CodecError is inside");
            match inner.downcast::<CodecError>() {
                Ok(codec_err) => *codec_err,
                Err(_) => unreachable!("checked above that the inner error is a CodecError"),
            }
        } else {
            CodecError::Io(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_round_trip_keeps_the_variant() {
        let e = CodecError::LengthMismatch {
            expected: 3,
            actual: 4,
        };
        let io = e.into_io();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
        assert!(matches!(
            CodecError::from_io(&io),
            Some(CodecError::LengthMismatch {
                expected: 3,
                actual: 4
            })
        ));
        let back = CodecError::from(io);
        assert!(matches!(
            back,
            CodecError::LengthMismatch {
                expected: 3,
                actual: 4
            }
        ));
    }

    #[test]
    fn plain_io_errors_stay_plain() {
        let io = CodecError::Io(io::Error::new(io::ErrorKind::TimedOut, "slow disk")).into_io();
        assert_eq!(io.kind(), io::ErrorKind::TimedOut);
        assert!(CodecError::from_io(&io).is_none());
        let back = CodecError::from(io);
        assert!(matches!(&back, CodecError::Io(e) if e.kind() == io::ErrorKind::TimedOut));
        assert!(!back.is_integrity());
    }

    #[test]
    fn other_wrapped_errors_are_io() {
        let io = io::Error::new(io::ErrorKind::InvalidData, "something else");
        assert!(CodecError::from_io(&io).is_none());
        assert!(matches!(CodecError::from(io), CodecError::Io(_)));
    }

    #[test]
    fn integrity_classification() {
        let integrity = [
            CodecError::BadHeaderMagic {
                expected: 1,
                actual: 2,
            },
            CodecError::UnsupportedVersion {
                supported: 1,
                actual: 2,
            },
            CodecError::TooShort {
                minimum: 68,
                actual: 3,
            },
            CodecError::ChecksumMismatch {
                expected: "aa".into(),
                actual: "bb".into(),
            },
            CodecError::TrailingGarbage {
                codec: Compression::Zstd,
                offset: 9,
                bytes: 1,
            },
        ];
        for e in &integrity {
            assert!(e.is_integrity(), "{e}");
            assert!(e.duplicate().is_integrity());
            assert_eq!(e.to_string(), e.duplicate().to_string());
        }
        let not = [
            CodecError::Io(io::Error::other("x")),
            CodecError::InvalidLevel {
                codec: Compression::Zstd,
                level: 0,
                min: 1,
                max: 22,
            },
            CodecError::WriterFailed {
                first_error: "x".into(),
            },
        ];
        for e in &not {
            assert!(!e.is_integrity(), "{e}");
            assert_eq!(e.to_string(), e.duplicate().to_string());
        }
    }
}
