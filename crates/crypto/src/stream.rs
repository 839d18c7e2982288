//! Chunked streaming AEAD: [`EncryptWriter`] and [`DecryptReader`].
//!
//! # Stream format, version 1
//!
//! All integers little-endian unless said otherwise.
//!
//! **Header**, 64 bytes:
//!
//! | offset | size | field | value |
//! |-------:|-----:|-------|-------|
//! | 0  | 4  | magic             | `PGAE` (`50 47 41 45`) |
//! | 4  | 1  | version           | `1` |
//! | 5  | 1  | algorithm         | `1`: AES-256-GCM, object keys by HKDF-SHA256 |
//! | 6  | 1  | chunk size        | log2 of the plaintext chunk size, `10..=22` (pgark writes `16`: 64 KiB) |
//! | 7  | 1  | reserved          | `0` |
//! | 8  | 8  | data key id       | [`crate::KeyId`] of the data key |
//! | 16 | 16 | salt              | random, fresh for every stream |
//! | 32 | 16 | name commitment   | `HMAC-SHA256(K_name, salt ‖ object name)[..16]` |
//! | 48 | 16 | header tag        | `HMAC-SHA256(K_hdr, header[0..48] ‖ context)[..16]` |
//!
//! `K_name` and `K_hdr` are HKDF-SHA256 of the data key under their own
//! info strings; `context` is bytes the caller binds to the stream (the
//! codec passes its 16-byte object header; empty by default).
//!
//! **Chunks**, one after the other, the last one marked:
//!
//! | size | field |
//! |-----:|-------|
//! | 4    | `u32`: bit 31 = last chunk, bits 0–30 = plaintext length `n` |
//! | n    | ciphertext |
//! | 16   | GCM tag |
//!
//! Every chunk but the last holds exactly the chunk size; the last holds
//! `0..=chunk size` bytes (0 only for an empty stream). Chunk `i` (from 0)
//! is sealed with AES-256-GCM under the object key
//! `HKDF-SHA256(salt = header salt, ikm = data key, info = "pgark v1 object
//! key " ‖ object name)` ([`crate::DataKey::object_key`]), with
//!
//! * nonce = `i` as u64 **big-endian** ‖ `00 00 00 L` (`L` = 1 for the
//!   last chunk, else 0) — unique, because the key is unique per stream
//!   (random 128-bit salt) and `i` never repeats within it;
//! * associated data = the chunk's 4-byte length field ‖ the 64-byte
//!   header ‖ the object name.
//!
//! Overhead: 64 bytes plus 20 per chunk (0.03 % at 64 KiB).
//!
//! # What is detected, and how it is reported
//!
//! | damage | error |
//! |--------|-------|
//! | not this format / shorter than a header | [`CryptoError::NotEncryptedStream`] / [`CryptoError::TruncatedHeader`] |
//! | another repository's data key | [`CryptoError::WrongDataKey`] (key ids differ) |
//! | any header byte changed (salt, commitment, tag, context) | [`CryptoError::TamperedHeader`] |
//! | the stream of another object name (moved, swapped) | [`CryptoError::WrongObject`] |
//! | a chunk's length field, ciphertext or tag changed; chunks swapped, reordered, or taken from another stream | [`CryptoError::AuthFailed`] with the chunk index |
//! | cut anywhere after the header (at a chunk boundary or inside a chunk) | [`CryptoError::Truncated`] |
//! | bytes after the last chunk | [`CryptoError::TrailingData`] |
//!
//! Readable without the data key: the format version, algorithm, chunk
//! size, the data key id, and the plaintext length (to within nothing:
//! the chunk lengths are in clear, as the object size would tell anyway).
//!
//! # Memory
//!
//! One chunk buffer each way (chunk size + 20 bytes: 64 KiB by default, at
//! most 4 MiB for the largest chunk size a reader accepts), whatever the
//! stream's length.

use std::io::{self, Read, Write};

use crate::error::CryptoError;
use crate::keys::{mac16, random_bytes, DataKey, KeyId, ObjectCipherKey};

/// Magic at the start of every encrypted stream.
pub const STREAM_MAGIC: [u8; 4] = *b"PGAE";
/// The stream format version written and read.
pub const STREAM_VERSION: u8 = 1;
/// Algorithm 1: AES-256-GCM chunks, per-object keys by HKDF-SHA256.
pub const ALGORITHM_AES256GCM_HKDF: u8 = 1;
/// Length of the stream header.
pub const STREAM_HEADER_LEN: usize = 64;
/// log2 of the chunk size pgark writes: 64 KiB.
pub const DEFAULT_CHUNK_LOG2: u8 = 16;
/// Smallest chunk size a reader accepts (log2): 1 KiB.
pub const MIN_CHUNK_LOG2: u8 = 10;
/// Largest chunk size a reader accepts (log2): 4 MiB, the memory bound.
pub const MAX_CHUNK_LOG2: u8 = 22;
/// Length of a chunk's length field.
pub const CHUNK_LEN_FIELD: usize = 4;
/// Length of a GCM tag.
pub const TAG_LEN: usize = 16;
/// Bit of the length field marking the last chunk.
const LAST_BIT: u32 = 0x8000_0000;

fn nonce(counter: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..8].copy_from_slice(&counter.to_be_bytes());
    n[11] = last as u8;
    n
}

/// Fills the associated data prefix (length field) and returns the whole
/// associated data.
fn aad_with_len_field(aad: &mut [u8], field: u32) -> &[u8] {
    aad[..CHUNK_LEN_FIELD].copy_from_slice(&field.to_le_bytes());
    aad
}

fn header_tag(key: &DataKey, header48: &[u8], context: &[u8]) -> [u8; 16] {
    mac16(key.header_mac_key(), &[header48, context])
}

fn name_commitment(key: &DataKey, salt: &[u8; 16], object_name: &str) -> [u8; 16] {
    mac16(key.name_commit_key(), &[salt, object_name.as_bytes()])
}

/// Reads until `buf` is full or EOF; returns the bytes read. Retries
/// `Interrupted`.
fn read_full<R: Read>(inner: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match inner.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n.min(buf.len() - got),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn check_chunk_log2(log2: u8) -> Result<usize, CryptoError> {
    if (MIN_CHUNK_LOG2..=MAX_CHUNK_LOG2).contains(&log2) {
        Ok(1usize << log2)
    } else {
        Err(CryptoError::UnsupportedStream {
            reason: format!("chunk size 2^{log2} (supported: 2^{MIN_CHUNK_LOG2}..=2^{MAX_CHUNK_LOG2})"),
        })
    }
}

/// Encrypting writer: write plaintext into it; it writes the encrypted
/// stream (header, then sealed chunks) into `inner`. Only
/// [`EncryptWriter::finish`] writes the final chunk: a stream whose writer
/// was dropped unfinished is reported as truncated by every reader.
///
/// ```
/// use std::io::{Read, Write};
/// use pgark_crypto::{DataKey, DecryptReader, EncryptWriter};
///
/// let key = DataKey::generate();
/// let mut w = EncryptWriter::new(Vec::new(), &key, "wal/000000010000000000000001")?;
/// w.write_all(b"secret WAL")?;
/// let stored = w.finish()?;
///
/// let mut r = DecryptReader::new(&stored[..], &key, "wal/000000010000000000000001")?;
/// let mut out = Vec::new();
/// r.read_to_end(&mut out)?;
/// assert_eq!(out, b"secret WAL");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct EncryptWriter<W: Write> {
    inner: W,
    cipher: ObjectCipherKey,
    /// Length field ‖ header ‖ object name; the length field is rewritten
    /// per chunk.
    aad: Vec<u8>,
    /// Length field ‖ plaintext (sealed in place) ‖ tag space.
    buf: Vec<u8>,
    /// Plaintext bytes in `buf`.
    filled: usize,
    chunk_size: usize,
    counter: u64,
    plaintext_len: u64,
    stored_len: u64,
    failed: Option<String>,
}

impl<W: Write> EncryptWriter<W> {
    /// Starts a stream for the object `object_name` under `key` with 64 KiB
    /// chunks; writes the 64-byte header to `inner`.
    pub fn new(inner: W, key: &DataKey, object_name: &str) -> Result<Self, CryptoError> {
        EncryptWriter::with_params(inner, key, object_name, &[], DEFAULT_CHUNK_LOG2)
    }

    /// [`EncryptWriter::new`] binding `context` (bytes the reader must
    /// present too, such as an outer header) and with chunks of
    /// 2^`chunk_log2` bytes ([`MIN_CHUNK_LOG2`]..=[`MAX_CHUNK_LOG2`]).
    pub fn with_params(
        mut inner: W,
        key: &DataKey,
        object_name: &str,
        context: &[u8],
        chunk_log2: u8,
    ) -> Result<Self, CryptoError> {
        let chunk_size = check_chunk_log2(chunk_log2)?;
        let mut salt = [0u8; 16];
        random_bytes(&mut salt);
        let mut header = [0u8; STREAM_HEADER_LEN];
        header[0..4].copy_from_slice(&STREAM_MAGIC);
        header[4] = STREAM_VERSION;
        header[5] = ALGORITHM_AES256GCM_HKDF;
        header[6] = chunk_log2;
        header[7] = 0;
        header[8..16].copy_from_slice(&key.id().0);
        header[16..32].copy_from_slice(&salt);
        header[32..48].copy_from_slice(&name_commitment(key, &salt, object_name));
        let tag = header_tag(key, &header[..48], context);
        header[48..64].copy_from_slice(&tag);
        inner.write_all(&header).map_err(CryptoError::Io)?;

        let mut aad = Vec::with_capacity(CHUNK_LEN_FIELD + STREAM_HEADER_LEN + object_name.len());
        aad.extend_from_slice(&[0; CHUNK_LEN_FIELD]);
        aad.extend_from_slice(&header);
        aad.extend_from_slice(object_name.as_bytes());
        Ok(EncryptWriter {
            inner,
            cipher: key.object_key(object_name, &salt),
            aad,
            buf: vec![0u8; CHUNK_LEN_FIELD + chunk_size + TAG_LEN],
            filled: 0,
            chunk_size,
            counter: 0,
            plaintext_len: 0,
            stored_len: STREAM_HEADER_LEN as u64,
            failed: None,
        })
    }

    /// Plaintext bytes accepted so far.
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Bytes written to the inner writer so far (header and sealed chunks).
    pub fn stored_len(&self) -> u64 {
        self.stored_len
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Seals the buffered plaintext as chunk `counter` and writes it.
    fn seal_chunk(&mut self, last: bool) -> io::Result<()> {
        let n = self.filled;
        debug_assert!(n == self.chunk_size || (last && n <= self.chunk_size));
        let field = n as u32 | if last { LAST_BIT } else { 0 };
        let aad = aad_with_len_field(&mut self.aad, field);
        let (head, rest) = self.buf.split_at_mut(CHUNK_LEN_FIELD);
        head.copy_from_slice(&field.to_le_bytes());
        let tag = self.cipher.seal(&nonce(self.counter, last), aad, &mut rest[..n]);
        rest[n..n + TAG_LEN].copy_from_slice(&tag);
        let total = CHUNK_LEN_FIELD + n + TAG_LEN;
        self.inner.write_all(&self.buf[..total])?;
        self.stored_len += total as u64;
        self.filled = 0;
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or_else(|| io::Error::other("more than 2^64 chunks in one stream"))?;
        Ok(())
    }

    fn check_usable(&self) -> Result<(), CryptoError> {
        match &self.failed {
            Some(first_error) => Err(CryptoError::WriterFailed {
                first_error: first_error.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Seals the final chunk (whatever is buffered, possibly nothing),
    /// flushes the inner writer and returns it. Only now is the stream
    /// complete.
    pub fn finish(mut self) -> Result<W, CryptoError> {
        self.check_usable()?;
        self.seal_chunk(true).map_err(CryptoError::Io)?;
        self.inner.flush().map_err(CryptoError::Io)?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.check_usable().map_err(CryptoError::into_io)?;
        let mut rest = data;
        while !rest.is_empty() {
            // A full buffer is sealed only once more data comes, so the
            // final chunk (sealed by `finish`) is never empty unless the
            // whole stream is.
            if self.filled == self.chunk_size {
                if let Err(e) = self.seal_chunk(false) {
                    self.failed = Some(e.to_string());
                    return Err(e);
                }
            }
            let take = rest.len().min(self.chunk_size - self.filled);
            let at = CHUNK_LEN_FIELD + self.filled;
            self.buf[at..at + take].copy_from_slice(&rest[..take]);
            self.filled += take;
            self.plaintext_len += take as u64;
            rest = &rest[take..];
        }
        Ok(data.len())
    }

    /// Flushes the inner writer. Buffered plaintext (less than a chunk)
    /// stays buffered: chunks other than the last are always full.
    fn flush(&mut self) -> io::Result<()> {
        self.check_usable().map_err(CryptoError::into_io)?;
        self.inner.flush()
    }
}

impl<W: Write> std::fmt::Debug for EncryptWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptWriter")
            .field("chunk_size", &self.chunk_size)
            .field("chunks_sealed", &self.counter)
            .field("plaintext_len", &self.plaintext_len)
            .finish_non_exhaustive()
    }
}

enum State {
    Reading,
    /// The last chunk was verified and no byte follows.
    Done,
    Failed(CryptoError),
}

/// Decrypting reader: reads an encrypted stream from `inner` and yields
/// the plaintext of authenticated chunks only. `read` returns `Ok(0)` only
/// after the last chunk was authenticated and the inner reader ended right
/// after it. Errors are `io::Error`s of kind `InvalidData` carrying a
/// [`CryptoError`] ([`CryptoError::from_io`]); errors of the inner reader
/// pass through unchanged. After an error every `read` fails again.
pub struct DecryptReader<R: Read> {
    inner: R,
    cipher: ObjectCipherKey,
    aad: Vec<u8>,
    buf: Vec<u8>,
    /// Plaintext not yet handed out: `buf[pos..end]`.
    pos: usize,
    end: usize,
    chunk_size: usize,
    counter: u64,
    plaintext_len: u64,
    stored_len: u64,
    state: State,
}

impl<R: Read> DecryptReader<R> {
    /// Reads and checks the 64-byte header for object `object_name` under
    /// `key`: magic, version, algorithm, chunk size, data key id, header
    /// tag, name commitment, in that order. Reads nothing more.
    pub fn new(inner: R, key: &DataKey, object_name: &str) -> Result<Self, CryptoError> {
        DecryptReader::with_context(inner, key, object_name, &[])
    }

    /// [`DecryptReader::new`] for a stream written with this `context`.
    pub fn with_context(
        mut inner: R,
        key: &DataKey,
        object_name: &str,
        context: &[u8],
    ) -> Result<Self, CryptoError> {
        let mut header = [0u8; STREAM_HEADER_LEN];
        let got = read_full(&mut inner, &mut header).map_err(CryptoError::Io)?;
        if got >= 4 && header[0..4] != STREAM_MAGIC {
            return Err(CryptoError::NotEncryptedStream {
                reason: format!(
                    "magic is {} (hex), expected {} (hex)",
                    hex::encode(&header[0..4]),
                    hex::encode(STREAM_MAGIC)
                ),
            });
        }
        if got < STREAM_HEADER_LEN {
            return Err(CryptoError::TruncatedHeader {
                expected: STREAM_HEADER_LEN,
                actual: got,
            });
        }
        if header[4] != STREAM_VERSION {
            return Err(CryptoError::UnsupportedStreamVersion {
                supported: STREAM_VERSION,
                actual: header[4],
            });
        }
        if header[5] != ALGORITHM_AES256GCM_HKDF {
            return Err(CryptoError::UnsupportedStream {
                reason: format!("algorithm {} (supported: 1, AES-256-GCM)", header[5]),
            });
        }
        let chunk_size = check_chunk_log2(header[6])?;
        if header[7] != 0 {
            return Err(CryptoError::UnsupportedStream {
                reason: format!("reserved byte is {:#04x}, expected 0", header[7]),
            });
        }
        let stream_key_id = KeyId(header[8..16].try_into().expect("8 bytes"));
        if stream_key_id != key.id() {
            return Err(CryptoError::WrongDataKey {
                expected: key.id(),
                actual: stream_key_id,
            });
        }
        if header_tag(key, &header[..48], context) != header[48..64] {
            return Err(CryptoError::TamperedHeader);
        }
        let salt: [u8; 16] = header[16..32].try_into().expect("16 bytes");
        if name_commitment(key, &salt, object_name) != header[32..48] {
            return Err(CryptoError::WrongObject {
                expected: object_name.to_string(),
            });
        }
        let mut aad = Vec::with_capacity(CHUNK_LEN_FIELD + STREAM_HEADER_LEN + object_name.len());
        aad.extend_from_slice(&[0; CHUNK_LEN_FIELD]);
        aad.extend_from_slice(&header);
        aad.extend_from_slice(object_name.as_bytes());
        Ok(DecryptReader {
            inner,
            cipher: key.object_key(object_name, &salt),
            aad,
            buf: vec![0u8; chunk_size + TAG_LEN],
            pos: 0,
            end: 0,
            chunk_size,
            counter: 0,
            plaintext_len: 0,
            stored_len: STREAM_HEADER_LEN as u64,
            state: State::Reading,
        })
    }

    /// Plaintext bytes handed out so far (all authenticated).
    pub fn plaintext_len(&self) -> u64 {
        self.plaintext_len
    }

    /// Stream bytes read from the inner reader so far.
    pub fn stored_len(&self) -> u64 {
        self.stored_len
    }

    /// True once the last chunk was verified and the stream ended after it.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Reads, authenticates and decrypts the next chunk into `buf`.
    /// `Ok(true)` when it was the last one (and nothing followed it).
    fn next_chunk(&mut self) -> Result<bool, CryptoError> {
        let index = self.counter;
        let mut field = [0u8; CHUNK_LEN_FIELD];
        let got = read_full(&mut self.inner, &mut field).map_err(CryptoError::Io)?;
        self.stored_len += got as u64;
        if got < CHUNK_LEN_FIELD {
            return Err(CryptoError::Truncated { chunk: index });
        }
        let field_value = u32::from_le_bytes(field);
        let last = field_value & LAST_BIT != 0;
        let len = (field_value & !LAST_BIT) as usize;
        // Non-last chunks are full; the length field is authenticated, so
        // any other value is damage.
        if (last && len > self.chunk_size) || (!last && len != self.chunk_size) {
            return Err(CryptoError::AuthFailed { chunk: index });
        }
        let got = read_full(&mut self.inner, &mut self.buf[..len + TAG_LEN]).map_err(CryptoError::Io)?;
        self.stored_len += got as u64;
        if got < len + TAG_LEN {
            return Err(CryptoError::Truncated { chunk: index });
        }
        let (data, tag) = self.buf[..len + TAG_LEN].split_at_mut(len);
        let tag: &[u8; TAG_LEN] = (&*tag).try_into().expect("16 bytes");
        let aad = aad_with_len_field(&mut self.aad, field_value);
        if !self.cipher.open(&nonce(index, last), aad, data, tag) {
            return Err(CryptoError::AuthFailed { chunk: index });
        }
        self.counter += 1;
        if last {
            let mut probe = [0u8; 1];
            if read_full(&mut self.inner, &mut probe).map_err(CryptoError::Io)? != 0 {
                return Err(CryptoError::TrailingData { chunk: index });
            }
        }
        self.pos = 0;
        self.end = len;
        Ok(last)
    }

    /// Every error is final, an inner reader's I/O error included (the
    /// position inside the stream is lost): it is returned as it is the
    /// first time, and a copy of it by every later `read`.
    fn fail(&mut self, err: CryptoError) -> io::Error {
        let copy = err.duplicate();
        self.state = State::Failed(copy);
        err.into_io()
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pos < self.end {
                let n = (self.end - self.pos).min(out.len());
                out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
                self.pos += n;
                self.plaintext_len += n as u64;
                return Ok(n);
            }
            match &self.state {
                State::Done => return Ok(0),
                State::Failed(err) => return Err(err.duplicate().into_io()),
                State::Reading => {}
            }
            match self.next_chunk() {
                Ok(true) => self.state = State::Done,
                Ok(false) => {}
                Err(err) => return Err(self.fail(err)),
            }
        }
    }
}

impl<R: Read> std::fmt::Debug for DecryptReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptReader")
            .field("chunk_size", &self.chunk_size)
            .field("chunks_read", &self.counter)
            .field("plaintext_len", &self.plaintext_len)
            .finish_non_exhaustive()
    }
}

/// Encrypts `data` into a complete stream in memory (64 KiB chunks).
pub fn encrypt_to_vec(data: &[u8], key: &DataKey, object_name: &str) -> Result<Vec<u8>, CryptoError> {
    let chunks = data.len() / (1 << DEFAULT_CHUNK_LOG2) + 1;
    let capacity = STREAM_HEADER_LEN + data.len() + chunks * (CHUNK_LEN_FIELD + TAG_LEN);
    let mut w = EncryptWriter::new(Vec::with_capacity(capacity), key, object_name)?;
    w.write_all(data).map_err(CryptoError::from)?;
    w.finish()
}

/// Decrypts a complete stream held in memory; returns data only when every
/// chunk was authenticated and the stream ended properly.
pub fn decrypt_to_vec(stream: &[u8], key: &DataKey, object_name: &str) -> Result<Vec<u8>, CryptoError> {
    let mut r = DecryptReader::new(stream, key, object_name)?;
    let mut out = Vec::with_capacity(stream.len());
    r.read_to_end(&mut out).map_err(CryptoError::from)?;
    Ok(out)
}

#[cfg(test)]
mod tests;
