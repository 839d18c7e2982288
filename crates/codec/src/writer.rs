//! [`ObjectWriter`]: the streaming encoder.
//!
//! Guarantees:
//! * the header is written by [`ObjectWriter::new`], before any body byte;
//! * every byte accepted by `write` is hashed (SHA-256) and counted exactly
//!   once, so the trailer describes precisely the bytes the caller wrote;
//! * the object is complete only after [`ObjectWriter::finish`] returned
//!   `Ok`: it ends the codec stream, appends the trailer and flushes the
//!   inner writer. An object whose writer was dropped, or failed, has no
//!   valid trailer and every reader rejects it;
//! * after any error the writer refuses further use
//!   ([`CodecError::WriterFailed`]), because the codec's state may no longer
//!   match what was hashed.
//!
//! Encrypted objects ([`ObjectWriter::new_encrypted`]): the header (flag
//! bit 0 set) is followed by a `pgark-crypto` stream ([`EncryptWriter`],
//! bound to the object's name and to the header) whose plaintext is the
//! codec stream *and the trailer*: compress, then encrypt, and the
//! original length and SHA-256 are never stored in clear.
//!
//! Memory: the codec's own buffers and window only (zstd: the 1 MiB block
//! being gathered, its compressed frame and the tables for it, see
//! [`crate::frames`]; LZ4: 64 KiB blocks, ~200 KiB; xz: the preset's
//! dictionary and match finder), plus one 64 KiB chunk when encrypting,
//! and for a codec other than zstd a buffer of at most
//! [`IN_PLACE_MIN_MAX`] once [`ObjectWriter::write_in_place`] is used
//! (zstd lends its block instead). Nothing else is buffered.

use std::io::{self, Read, Write};

use pgark_crypto::{DataKey, EncryptWriter};

use crate::digest::{ContentHasher, DigestAlgorithm};
use crate::error::CodecError;
use crate::format::{encode_header_flags, encode_trailer, HeaderFlags, HEADER_LEN};
use crate::frames::FrameEncoder;
use crate::spec::{Compression, CompressionSpec};
use crate::ObjectSummary;

/// The largest `min` that [`ObjectWriter::write_in_place`] accepts (and
/// the most it lends at a time to a codec without a buffer of its own).
pub const IN_PLACE_MIN_MAX: usize = 256 << 10;

/// Counts what reaches the inner writer and retries `Interrupted` itself,
/// so the codecs never see it.
struct CountingWriter<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match self.inner.write(buf) {
                Ok(n) => {
                    self.written += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        loop {
            match self.inner.flush() {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

/// Where the codec stream (and then the trailer) goes: straight into the
/// stored object, or through the encryption stage.
enum Sink<W: Write> {
    Plain(CountingWriter<W>),
    Encrypted(Box<EncryptWriter<CountingWriter<W>>>),
}

impl<W: Write> Sink<W> {
    fn get_ref(&self) -> &W {
        match self {
            Sink::Plain(w) => &w.inner,
            Sink::Encrypted(w) => &w.get_ref().inner,
        }
    }

    /// Ends the encrypted stream (seals its final chunk), if any.
    fn finish(self) -> Result<CountingWriter<W>, CodecError> {
        match self {
            Sink::Plain(w) => Ok(w),
            Sink::Encrypted(w) => w.finish().map_err(CodecError::from_crypto),
        }
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Encrypted(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Encrypted(w) => w.flush(),
        }
    }
}

enum Encoder<W: Write> {
    None(Sink<W>),
    /// Independent frames of at most 1 MiB ([`crate::frames`]).
    Zstd(Box<FrameEncoder<Sink<W>>>),
    Lz4(lz4_flex::frame::FrameEncoder<Sink<W>>),
    Lzma(xz2::write::XzEncoder<Sink<W>>),
}

impl<W: Write> Encoder<W> {
    fn new(out: Sink<W>, spec: &CompressionSpec) -> Result<Self, CodecError> {
        let level = spec.effective_level();
        Ok(match spec.codec {
            Compression::None => Encoder::None(out),
            Compression::Zstd => Encoder::Zstd(Box::new(FrameEncoder::new(out, level.unwrap_or(3))?)),
            Compression::Lz4 => {
                let info = lz4_flex::frame::FrameInfo::new()
                    .block_size(lz4_flex::frame::BlockSize::Max64KB)
                    .block_mode(lz4_flex::frame::BlockMode::Linked)
                    // No content checksum: the trailer's digest covers
                    // the original bytes (see `crate::frames`).
                    .content_checksum(false);
                Encoder::Lz4(lz4_flex::frame::FrameEncoder::with_frame_info(info, out))
            }
            Compression::Lzma => {
                let preset = level.unwrap_or(6) as u32;
                let stream = xz2::stream::Stream::new_easy_encoder(preset, xz2::stream::Check::Crc64)
                    .map_err(|e| CodecError::Io(io::Error::other(format!("xz encoder setup: {e}"))))?;
                Encoder::Lzma(xz2::write::XzEncoder::new_stream(out, stream))
            }
        })
    }

    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::None(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
            Encoder::Lz4(w) => w.write(buf),
            Encoder::Lzma(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::None(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
            Encoder::Lz4(w) => {
                w.flush()?;
                w.get_mut().flush()
            }
            Encoder::Lzma(w) => w.flush(),
        }
    }

    fn get_ref(&self) -> &Sink<W> {
        match self {
            Encoder::None(w) => w,
            Encoder::Zstd(w) => w.get_ref(),
            Encoder::Lz4(w) => w.get_ref(),
            Encoder::Lzma(w) => w.get_ref(),
        }
    }

    /// Ends the codec stream and returns the inner writer.
    fn finish(self) -> io::Result<Sink<W>> {
        match self {
            Encoder::None(w) => Ok(w),
            Encoder::Zstd(w) => w.finish(),
            Encoder::Lz4(w) => w.finish().map_err(io::Error::from),
            Encoder::Lzma(w) => w.finish(),
        }
    }
}

/// Streaming encoder: write the original bytes into it; it writes the
/// stored object (header, compressed body, trailer) into `inner`.
///
/// ```
/// use std::io::Write;
/// use pgark_codec::{CompressionSpec, ObjectWriter};
///
/// let mut w = ObjectWriter::new(Vec::new(), CompressionSpec::default())?;
/// w.write_all(b"some WAL bytes")?;
/// let (stored, summary) = w.finish()?;
/// assert_eq!(summary.original_len, 14);
/// assert_eq!(summary.stored_len, stored.len() as u64);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ObjectWriter<W: Write> {
    encoder: Encoder<W>,
    codec: Compression,
    /// The codec's level as used (zstd: for `finish_from`).
    level: Option<i32>,
    encrypted: bool,
    hasher: ContentHasher,
    original_len: u64,
    /// Where [`ObjectWriter::write_in_place`] has the caller write for a
    /// codec without a buffer of its own to lend (all but zstd).
    scratch: Vec<u8>,
    /// Message of the first error; once set the writer refuses further use.
    failed: Option<String>,
}

impl<W: Write> ObjectWriter<W> {
    /// Validates `spec` and writes the header to `inner`.
    pub fn new(inner: W, spec: CompressionSpec) -> Result<Self, CodecError> {
        ObjectWriter::with_options(inner, spec, DigestAlgorithm::Sha256, None)
    }

    /// An encrypted object, stored under `object_name` (its key in the
    /// repository): validates `spec`, writes the header (flag bit 0 set)
    /// and the encrypted stream's header to `inner`. Everything after the
    /// header, the trailer included, is encrypted under an object key
    /// derived from `key` and `object_name`; a reader must give the same
    /// name ([`crate::ObjectReader::new_with_key`]).
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use pgark_codec::{CompressionSpec, ObjectReader, ObjectWriter};
    /// use pgark_crypto::DataKey;
    ///
    /// let key = DataKey::generate();
    /// let mut w = ObjectWriter::new_encrypted(Vec::new(), CompressionSpec::default(), &key, "wal/x")?;
    /// w.write_all(b"some WAL bytes")?;
    /// let (stored, _) = w.finish()?;
    ///
    /// let mut r = ObjectReader::new_with_key(&stored[..], Some(&key), "wal/x")?;
    /// let mut out = Vec::new();
    /// r.read_to_end(&mut out)?;
    /// assert_eq!(out, b"some WAL bytes");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new_encrypted(
        inner: W,
        spec: CompressionSpec,
        key: &DataKey,
        object_name: &str,
    ) -> Result<Self, CodecError> {
        ObjectWriter::with_options(inner, spec, DigestAlgorithm::Sha256, Some((key, object_name)))
    }

    /// The general constructor: the trailer's digest is `digest` (header
    /// flag bit 1 for BLAKE3), and `encrypt` is `(data key, object name)`
    /// for an encrypted object ([`ObjectWriter::new_encrypted`]).
    pub fn with_options(
        inner: W,
        spec: CompressionSpec,
        digest: DigestAlgorithm,
        encrypt: Option<(&DataKey, &str)>,
    ) -> Result<Self, CodecError> {
        let spec = CompressionSpec::new(spec.codec, spec.level)?;
        let mut out = CountingWriter { inner, written: 0 };
        let flags = HeaderFlags {
            encrypted: encrypt.is_some(),
            digest,
        };
        let header = encode_header_flags(spec.codec, flags.bits());
        out.write_all(&header)?;
        debug_assert_eq!(out.written, HEADER_LEN as u64);
        let sink = match encrypt {
            None => Sink::Plain(out),
            Some((key, name)) => Sink::Encrypted(Box::new(
                EncryptWriter::with_params(out, key, name, &header, pgark_crypto::stream::DEFAULT_CHUNK_LOG2)
                    .map_err(CodecError::from_crypto)?,
            )),
        };
        Ok(ObjectWriter {
            encoder: Encoder::new(sink, &spec)?,
            codec: spec.codec,
            level: spec.effective_level(),
            encrypted: encrypt.is_some(),
            hasher: ContentHasher::new(digest),
            original_len: 0,
            scratch: Vec::new(),
            failed: None,
        })
    }

    /// The length of the writes this writer takes best: a frame's worth
    /// for zstd (compressed straight from the caller's buffer, without a
    /// copy, when nothing is gathered), else 256 KiB.
    pub fn preferred_write_len(&self) -> usize {
        match self.encoder {
            Encoder::Zstd(_) => crate::frames::FRAME_LEN,
            _ => 256 << 10,
        }
    }

    /// Accepts original bytes that `fill` writes in place, into the
    /// codec's own buffer where it has one (zstd: the frame being
    /// gathered), which saves the copy `write` makes of the caller's bytes.
    /// `fill` is given a buffer of at most `max` bytes and of at least
    /// `min` (at most [`IN_PLACE_MIN_MAX`]; zstd then ends its current
    /// frame early when less is left in it), writes at its start and
    /// returns how many bytes it wrote (0: it has no more). The buffer is
    /// not cleared: it may hold earlier bytes, and every byte of the
    /// count returned must have been written by `fill`. Those bytes are
    /// then counted and hashed as `write` would, and the same object
    /// results as if they had been written with `write`, except that zstd
    /// may end a frame earlier.
    ///
    /// An error of `fill` is returned as it came and the writer stays
    /// usable (nothing was taken); so is a count larger than the buffer
    /// (`InvalidData`). An error of the codec or the inner writer fails the
    /// writer, as for `write`.
    ///
    /// ```
    /// use std::io::Read;
    /// use pgark_codec::{CompressionSpec, ObjectReader, ObjectWriter};
    ///
    /// let mut w = ObjectWriter::new(Vec::new(), CompressionSpec::default())?;
    /// let mut source: &[u8] = b"some relation pages";
    /// while w.write_in_place(8, 1, |buf| source.read(buf))? > 0 {}
    /// let (stored, summary) = w.finish()?;
    /// assert_eq!(summary.original_len, 19);
    /// let mut back = Vec::new();
    /// ObjectReader::new(&stored[..])?.read_to_end(&mut back)?;
    /// assert_eq!(back, b"some relation pages");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn write_in_place(
        &mut self,
        max: usize,
        min: usize,
        fill: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.check_usable().map_err(CodecError::into_io)?;
        let min = min.min(max);
        if min > IN_PLACE_MIN_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("write_in_place: a buffer of at least {min} bytes asked for, at most {IN_PLACE_MIN_MAX} can be given"),
            ));
        }
        if let Encoder::Zstd(frames) = &mut self.encoder {
            let room = match frames.room(max, min) {
                Ok(room) => room,
                Err(e) => return Err(self.fail(e)),
            };
            let n = fill(room)?;
            if n > room.len() {
                return Err(overfilled(n, room.len()));
            }
            self.hasher.update(&room[..n]);
            self.original_len += n as u64;
            return match frames.commit(n) {
                Ok(()) => Ok(n),
                Err(e) => Err(self.fail(e)),
            };
        }
        let len = max.min(IN_PLACE_MIN_MAX);
        if self.scratch.len() < len {
            self.scratch.resize(len, 0);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let done = match fill(&mut scratch[..len]) {
            Ok(n) if n > len => Err(overfilled(n, len)),
            Ok(n) => self.write_all(&scratch[..n]).map(|()| n),
            Err(e) => Err(e),
        };
        self.scratch = scratch;
        done
    }

    /// The codec of the body being written.
    pub fn codec(&self) -> Compression {
        self.codec
    }

    /// Original bytes accepted so far.
    pub fn original_len(&self) -> u64 {
        self.original_len
    }

    /// True for an encrypted object ([`ObjectWriter::new_encrypted`]).
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        self.encoder.get_ref().get_ref()
    }

    /// Ends the codec stream, writes the trailer (inside the encryption for
    /// an encrypted object, whose final chunk is then sealed) and flushes
    /// the inner writer. Returns the inner writer and what was stored.
    pub fn finish(mut self) -> Result<(W, ObjectSummary), CodecError> {
        self.check_usable()?;
        let mut sink = self.encoder.finish()?;
        let digest = self.hasher.finalize();
        sink.write_all(&encode_trailer(self.original_len, &digest.bytes))?;
        let mut out = sink.finish()?;
        out.flush()?;
        let summary = ObjectSummary {
            codec: self.codec,
            original_len: self.original_len,
            stored_len: out.written,
            digest,
        };
        Ok((out.inner, summary))
    }

    /// Writes everything `source` holds, which must be exactly `len`
    /// bytes, then finishes the object as [`ObjectWriter::finish`] does.
    /// The same object as `io::copy` and `finish` would make (same codec,
    /// level and digest), but cheaper for a large source given to a fresh
    /// zstd writer: it is compressed from one stable buffer, without zstd's
    /// internal copy and its slower external-dictionary match finder, and
    /// the frame header records the content size. Memory stays about
    /// zstd's window plus about 1 MiB.
    ///
    /// A source that ends before `len` bytes or has more fails with
    /// [`CodecError::Io`] (`UnexpectedEof` / `InvalidData`) and the object
    /// is left incomplete; so does a read error, which is returned as it
    /// came.
    pub fn finish_from<R: Read + ?Sized>(
        mut self,
        source: &mut R,
        len: u64,
    ) -> Result<(W, ObjectSummary), CodecError> {
        self.check_usable()?;
        let stable = self.original_len == 0 && len >= crate::stable::MIN_LEN;
        let unused = match self.encoder {
            Encoder::Zstd(w) if stable => w.into_unused().map_err(|w| Encoder::Zstd(Box::new(w))),
            other => Err(other),
        };
        let encoder = match unused {
            Ok(mut sink) => {
                // Nothing was written: no frame begun.
                let level = self.level.unwrap_or(3);
                match crate::stable::compress_stable(source, len, level, &mut self.hasher, &mut sink)? {
                    crate::stable::Stable::Done => {}
                    crate::stable::Stable::WrongLength(read) => return Err(wrong_length(len, read).into()),
                }
                self.original_len = len;
                Encoder::None(sink)
            }
            Err(other) => {
                self.encoder = other;
                let mut buf = vec![0u8; 256 << 10];
                let start = self.original_len;
                loop {
                    let n = match source.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e.into()),
                    };
                    if self.original_len - start + n as u64 > len {
                        return Err(wrong_length(len, None).into());
                    }
                    self.write_all(&buf[..n])?;
                }
                let read = self.original_len - start;
                if read != len {
                    return Err(wrong_length(len, Some(read)).into());
                }
                return self.finish();
            }
        };
        // The zstd frame is complete: only the trailer is left.
        self.encoder = encoder;
        self.finish()
    }

    fn check_usable(&mut self) -> Result<(), CodecError> {
        match &self.failed {
            Some(first_error) => Err(CodecError::WriterFailed {
                first_error: first_error.clone(),
            }),
            None => Ok(()),
        }
    }

    fn fail(&mut self, err: io::Error) -> io::Error {
        self.failed = Some(err.to_string());
        err
    }
}

fn overfilled(said: usize, room: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("write_in_place: the fill says it wrote {said} bytes into a buffer of {room}"),
    )
}

fn wrong_length(expected: u64, read: Option<u64>) -> io::Error {
    match read {
        Some(read) => io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the source ended after {read} of {expected} bytes"),
        ),
        None => io::Error::new(
            io::ErrorKind::InvalidData,
            format!("the source has more than {expected} bytes"),
        ),
    }
}

impl<W: Write> Write for ObjectWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.check_usable().map_err(CodecError::into_io)?;
        match self.encoder.write(buf) {
            Ok(n) => {
                self.hasher.update(&buf[..n]);
                self.original_len += n as u64;
                Ok(n)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Pushes everything written so far through the codec to the inner
    /// writer. Each flush ends a codec block early, so flushing often costs
    /// compression ratio; it is never needed before [`ObjectWriter::finish`].
    fn flush(&mut self) -> io::Result<()> {
        self.check_usable().map_err(CodecError::into_io)?;
        self.encoder.flush().map_err(|e| self.fail(e))
    }
}
