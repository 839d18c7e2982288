//! Self-describing stored objects for pgark.
//!
//! Every object pgark stores (WAL segments, base-backup files, manifests) is
//! written through this crate: a small versioned **header** records the
//! format version and the codec, the **body** is the codec's standard
//! stream, and a **trailer** records the length and digest (SHA-256, or
//! BLAKE3 when header flag bit 1 is set: [`digest`]) of the *original*
//! bytes. A reader never infers anything from an object's name.
//!
//! The header and trailer are zstd/LZ4 *skippable frames*, so an
//! unencrypted zstd or LZ4 object decompresses directly with the standard
//! `zstd -d` / `lz4 -d` tools; for `lzma` and `none` the header and trailer
//! are stripped with `tail`/`head` (see `FORMAT.md` beside this crate).
//!
//! # Format v1, byte by byte
//!
//! All integers are little-endian.
//!
//! **Header** — 16 bytes, a skippable frame:
//!
//! | offset | size | field | value |
//! |-------:|-----:|-------|-------|
//! | 0  | 4 | frame magic      | `0x184D2A50` (bytes `50 2A 4D 18`) |
//! | 4  | 4 | payload length   | `8` |
//! | 8  | 5 | tag              | `PGARK` (`50 47 41 52 4B`) |
//! | 13 | 1 | format version   | `1` |
//! | 14 | 1 | codec            | `0` none, `1` zstd, `2` lz4, `3` lzma |
//! | 15 | 1 | flags            | bit 0 = encrypted (see below); bit 1 = BLAKE3 digest (else SHA-256); other bits must be 0 |
//!
//! **Body** — the codec's standard stream, nothing added:
//!
//! | codec | body |
//! |-------|------|
//! | none  | the original bytes |
//! | zstd  | one or more zstd frames and nothing else (written: independent frames of at most 1 MiB of original bytes, each with its content size; one frame when written by [`ObjectWriter::finish_from`]; no frame checksums: the trailer's digest is the check) |
//! | lz4   | one or more LZ4 frames (LZ4 frame format) and nothing else (written: one frame, 64 KiB linked blocks, no content checksum) |
//! | lzma  | exactly one xz stream (LZMA2, CRC64 check) |
//!
//! **Trailer** — 52 bytes, a skippable frame, always the last 52 bytes:
//!
//! | offset | size | field | value |
//! |-------:|-----:|-------|-------|
//! | 0  | 4  | frame magic     | `0x184D2A5E` (bytes `5E 2A 4D 18`) |
//! | 4  | 4  | payload length  | `44` |
//! | 8  | 4  | tag             | `PGAT` (`50 47 41 54`) |
//! | 12 | 8  | original length | u64, bytes before compression |
//! | 20 | 32 | digest          | SHA-256 or BLAKE3 of the original bytes |
//!
//! The codec stream must end exactly where the trailer begins; skippable
//! frames are not allowed inside the body.
//!
//! A stored object is therefore at least 68 bytes. Readers hold back the
//! last 52 bytes of the stream, so the body is streamed without knowing its
//! length.
//!
//! # What a reader rejects
//!
//! Each with its own [`CodecError`] variant carrying expected and actual
//! values: a bad header magic or another skippable frame
//! ([`CodecError::BadHeaderMagic`], [`CodecError::BadHeaderLength`],
//! [`CodecError::BadHeaderTag`]), an unknown format version, codec or flags,
//! a truncated header, an object shorter than header + trailer, a wrong
//! trailer frame (truncated objects and objects with data appended land
//! here), codec errors, bytes after the end of the codec stream inside the
//! body, and a length or checksum that differs from the trailer's.
//!
//! # Stages and guarantees
//!
//! * [`ObjectWriter`] ([`writer`]): header first, then every accepted byte is
//!   hashed and compressed; only a successful [`ObjectWriter::finish`]
//!   produces a complete object.
//! * [`ObjectReader`] ([`reader`]): header checked in `new`; body decoded and
//!   hashed as it streams; `read` returns EOF only after the trailer, the
//!   length and the digest all matched. Bytes handed out before EOF are
//!   unverified.
//! * [`encode_to_vec`] / [`decode_to_vec`]: the same for small in-memory
//!   objects; `decode_to_vec` returns data only when fully verified.
//!
//! Memory is bounded in both directions: a 64 KiB input buffer plus the
//! codec's own buffers and window; no object is ever held whole.
//!
//! # Encrypted objects
//!
//! Flag bit 0 set: after the 16-byte header comes a `pgark-crypto`
//! encrypted stream (chunked AES-256-GCM, see [`pgark_crypto::stream`])
//! whose plaintext is exactly what an unencrypted object has after its
//! header — the codec stream and the 52-byte trailer. So the pipeline is
//! compress, then encrypt, and the original length and digest are not
//! readable without the key. The stream is bound to the object's name
//! (its key in the repository) and to the 16-byte header, so a moved
//! object, a changed codec byte or a cleared flag is detected.
//!
//! * [`ObjectWriter::new_encrypted`] / [`encode_to_vec_encrypted`] write one;
//! * [`ObjectReader::new_with_key`] / [`decode_to_vec_with_key`] read
//!   encrypted and unencrypted objects alike (policy on mixing is the
//!   caller's: [`ObjectReader::is_encrypted`]);
//! * [`ObjectReader::new`] refuses an encrypted object with
//!   [`CodecError::EncryptedObjectNeedsKey`];
//! * damage to the encrypted stream is [`CodecError::Crypto`].

pub mod digest;
pub mod error;
pub mod format;
mod frames;
mod lz4;
pub mod reader;
pub mod spec;
mod stable;
pub mod writer;

use std::io::{Read, Write};

pub use digest::{ContentDigest, ContentHasher, DigestAlgorithm};
pub use error::CodecError;
pub use pgark_crypto::DataKey;
pub use reader::ObjectReader;
pub use spec::{Compression, CompressionSpec};
pub use writer::{ObjectWriter, IN_PLACE_MIN_MAX};

/// What a stored object holds, as recorded by the writer or verified by the
/// reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectSummary {
    /// Codec of the body.
    pub codec: Compression,
    /// Length of the original (uncompressed) bytes.
    pub original_len: u64,
    /// Length of the whole stored object: header, body and trailer.
    pub stored_len: u64,
    /// Digest of the original bytes (SHA-256 or BLAKE3).
    pub digest: ContentDigest,
}

/// Encodes `data` into a complete stored object in memory.
pub fn encode_to_vec(data: &[u8], spec: CompressionSpec) -> Result<(Vec<u8>, ObjectSummary), CodecError> {
    let capacity = match spec.codec {
        Compression::None => data.len() + format::MIN_OBJECT_LEN,
        _ => data.len() / 2 + format::MIN_OBJECT_LEN + 64,
    };
    let mut writer = ObjectWriter::new(Vec::with_capacity(capacity), spec)?;
    writer.write_all(data)?;
    writer.finish()
}

/// Encodes `data` into a complete encrypted stored object in memory, for
/// the name `object_name`.
pub fn encode_to_vec_encrypted(
    data: &[u8],
    spec: CompressionSpec,
    key: &DataKey,
    object_name: &str,
) -> Result<(Vec<u8>, ObjectSummary), CodecError> {
    let capacity = match spec.codec {
        Compression::None => data.len() + data.len() / 1000 + 256,
        _ => data.len() / 2 + 256,
    };
    let mut writer = ObjectWriter::new_encrypted(Vec::with_capacity(capacity), spec, key, object_name)?;
    writer.write_all(data)?;
    writer.finish()
}

/// Decodes and fully verifies a stored object held in memory.
pub fn decode_to_vec(stored: &[u8]) -> Result<(Vec<u8>, ObjectSummary), CodecError> {
    decode_to_vec_with_key(stored, None, "")
}

/// Decodes and fully verifies a stored object held in memory, encrypted
/// (under `key`, written as `object_name`) or not.
pub fn decode_to_vec_with_key(
    stored: &[u8],
    key: Option<&DataKey>,
    object_name: &str,
) -> Result<(Vec<u8>, ObjectSummary), CodecError> {
    let mut reader = ObjectReader::new_with_key(stored, key, object_name)?;
    let mut data = Vec::new();
    reader.read_to_end(&mut data)?;
    let summary = *reader.summary().expect("EOF is returned only after verification");
    Ok((data, summary))
}

#[cfg(test)]
mod testdata;
#[cfg(test)]
mod tests;
