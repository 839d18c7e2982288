//! [`ObjectReader`]: the streaming decoder.
//!
//! Stages and what each guarantees:
//!
//! 1. **Header** ([`ObjectReader::new`]): exactly 16 bytes are read and every
//!    field is checked (magic, payload length, tag, version, codec, flags).
//!    Nothing else is read from the inner reader yet.
//! 2. **Body**: bytes are pulled from the inner reader through a 64 KiB
//!    buffer that always *holds back the last 52 bytes seen* — the trailer
//!    candidate — so the codec never sees them and the body can be streamed
//!    without knowing its length. The codec's own stream framing decides where
//!    the body ends: zstd and LZ4 frames may be concatenated (as the standard
//!    tools allow), xz is a single stream, `none` runs to the trailer.
//!    Decoded bytes are hashed (SHA-256 or BLAKE3, as the header says) and
//!    counted by the time they are handed out (a block decoded aside is
//!    hashed whole as soon as it is decoded). Bytes handed out are *not yet
//!    verified*: callers must read to EOF
//!    (or use [`crate::decode_to_vec`]) before trusting them.
//! 3. **Trailer**: when the codec stream has ended, the remaining body bytes
//!    are drained and counted (any is [`CodecError::TrailingGarbage`]), the
//!    held-back 52 bytes are checked as the trailer, and the decoded length
//!    and SHA-256 are compared with it. Only then does `read` return `Ok(0)`
//!    and [`ObjectReader::summary`] become `Some`.
//!
//! Whenever the inner reader has hit EOF and something is wrong (the codec
//! failed, or the stream ended early), the trailer framing is checked first:
//! a truncated object, or one with bytes appended, is reported as such
//! ([`CodecError::BadTrailerMagic`], [`CodecError::TooShort`]) rather than as
//! a codec error.
//!
//! **Encrypted objects** (header flag bit 0; [`ObjectReader::new_with_key`]):
//! between the inner reader and the body source sits a `pgark-crypto`
//! [`DecryptReader`] (its header checked in `new_with_key`: data key,
//! object name, outer header). Stage 2 and 3 then run on the decrypted
//! bytes: codec stream, then the trailer. The decrypting stage hands out
//! only authenticated chunks and ends only after the final chunk, so
//! truncation, tampering and objects moved to another name surface as
//! [`CodecError::Crypto`]. Offsets in [`CodecError::Decompress`] and
//! [`CodecError::TrailingGarbage`] then count decrypted bytes (plus the
//! 16-byte header). Without a key an encrypted object is refused in `new`
//! with [`CodecError::EncryptedObjectNeedsKey`].
//!
//! Errors are final: after the first one every `read` returns it again.
//! Integrity problems are `io::Error`s of kind `InvalidData` wrapping the
//! [`CodecError`] ([`CodecError::from_io`] gets it back); I/O errors of the
//! inner reader are returned unchanged (`Interrupted` is retried
//! internally).
//!
//! Memory: the 64 KiB input buffer plus the codec's own state (zstd: a frame
//! of at most 1 MiB with its content size is decoded whole, with the input
//! buffer grown to hold the largest stored frame met so far and a block of
//! the frame's content size; other frames stream
//! through a window up to 128 MiB as zstd allows by default; LZ4: the
//! reference decoder's buffers, ~256 KiB for the 64 KiB linked blocks
//! pgark writes, at most ~8 MiB for 4 MiB blocks, and 64 KiB for small
//! reads; xz: the stream's dictionary, capped at [`XZ_MEMLIMIT`]); one 64 KiB chunk (at
//! most 4 MiB) more when decrypting.

use std::io::{self, BufRead, Read};

use pgark_crypto::{DataKey, DecryptReader};
use zstd::stream::raw::Operation;

use crate::digest::{ContentDigest, ContentHasher};
use crate::error::CodecError;
use crate::format::{
    decode_header_full, decode_trailer, le_u32, HEADER_LEN, LZ4_FRAME_MAGIC, MIN_OBJECT_LEN, TRAILER_LEN,
    ZSTD_FRAME_MAGIC,
};
use crate::frames;
use crate::spec::Compression;
use crate::ObjectSummary;

/// Size of the input buffer between the inner reader and the codec.
const INPUT_BUF: usize = 64 * 1024;

/// Memory limit for the xz decoder: enough for any preset (`-9` needs
/// ~65 MiB); a crafted header asking for more is rejected.
pub const XZ_MEMLIMIT: u64 = 256 * 1024 * 1024;

/// What follows the header: the stored bytes themselves, or their
/// decryption.
enum Source<R: Read> {
    Plain(R),
    Encrypted(Box<DecryptReader<R>>),
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Source::Plain(r) => r.read(buf),
            Source::Encrypted(r) => r.read(buf),
        }
    }
}

/// Reads the inner reader through a buffer, holding back the last
/// [`TRAILER_LEN`] bytes seen: everything before them is body.
struct BodySource<R: Read> {
    inner: Source<R>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The inner reader returned EOF.
    eof: bool,
    /// Bytes read from the source (decrypted bytes for an encrypted
    /// object), header included.
    total_read: u64,
    /// Body bytes consumed by the codec (or drained).
    body_consumed: u64,
    /// A `Read::read` call found the body exhausted. Codecs read through
    /// `Read` only inside a frame, so this means the frame was cut short.
    hit_end: bool,
    /// The last error of the inner reader. Codecs see a stand-in with the
    /// same kind; the real error is taken from here.
    io_error: Option<io::Error>,
}

impl<R: Read> BodySource<R> {
    fn new(inner: Source<R>) -> Self {
        BodySource {
            inner,
            buf: vec![0u8; INPUT_BUF + TRAILER_LEN],
            start: 0,
            end: 0,
            eof: false,
            total_read: HEADER_LEN as u64,
            body_consumed: 0,
            hit_end: false,
            io_error: None,
        }
    }

    fn available(&self) -> usize {
        (self.end - self.start).saturating_sub(TRAILER_LEN)
    }

    /// Makes at least `want` body bytes available, unless the body ends
    /// first. Afterwards [`Self::body`] is empty only at the body's end.
    fn refill(&mut self, want: usize) -> io::Result<()> {
        debug_assert!(want <= self.buf.len() - TRAILER_LEN);
        while self.available() < want && !self.eof {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            match self.inner.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) if n > self.buf.len() - self.end => {
                    let e = io::Error::other("inner reader returned more bytes than asked for");
                    let stand_in = io::Error::new(e.kind(), e.to_string());
                    self.io_error = Some(e);
                    return Err(stand_in);
                }
                Ok(n) => {
                    self.end += n;
                    self.total_read += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let stand_in = io::Error::new(e.kind(), e.to_string());
                    self.io_error = Some(e);
                    return Err(stand_in);
                }
            }
        }
        Ok(())
    }

    /// Lets the buffer hold `want` body bytes at once (it never shrinks).
    fn grow(&mut self, want: usize) {
        if self.buf.len() < want + TRAILER_LEN {
            self.buf.resize(want + TRAILER_LEN, 0);
        }
    }

    /// The body bytes available now.
    fn body(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.available()]
    }

    /// [`Self::refill`] then [`Self::body`], failing with the inner
    /// reader's own error (not the stand-in).
    fn fill_body(&mut self, want: usize) -> io::Result<&[u8]> {
        if let Err(stand_in) = self.refill(want) {
            return Err(self.io_error.take().unwrap_or(stand_in));
        }
        Ok(self.body())
    }

    /// The held-back bytes, once the inner reader is at EOF and the body
    /// is fully consumed. Shorter than [`TRAILER_LEN`] only when the whole
    /// object is too short to hold a trailer.
    fn tail(&self) -> Option<&[u8]> {
        (self.eof && self.available() == 0).then(|| &self.buf[self.start..self.end])
    }

    /// Like [`Self::tail`] but without requiring the body to be consumed:
    /// the last bytes of the object, once the inner reader is at EOF.
    fn last_bytes(&self) -> Option<&[u8]> {
        let held = (self.end - self.start).min(TRAILER_LEN);
        self.eof.then(|| &self.buf[self.end - held..self.end])
    }

    /// Stored offset of the next body byte (for an encrypted object: the
    /// offset among the decrypted bytes, header included).
    fn offset(&self) -> u64 {
        HEADER_LEN as u64 + self.body_consumed
    }

    /// Stored bytes read so far, header included.
    fn stored_len(&self) -> u64 {
        match &self.inner {
            Source::Plain(_) => self.total_read,
            Source::Encrypted(r) => HEADER_LEN as u64 + r.stored_len(),
        }
    }
}

impl<R: Read> Read for BodySource<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.refill(1)?;
        if self.available() == 0 && !out.is_empty() {
            self.hit_end = true;
        }
        let avail = self.body();
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl<R: Read> BufRead for BodySource<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.refill(1)?;
        Ok(self.body())
    }

    fn consume(&mut self, amt: usize) {
        assert!(amt <= self.available(), "consumed more than available");
        self.start += amt;
        self.body_consumed += amt as u64;
    }
}

/// A problem met while decoding the body, before it is classified.
enum BodyError {
    /// The inner reader failed (or a stand-in for it passed through a codec).
    Io(io::Error),
    /// The codec rejected its input, or the body ended mid-stream.
    Codec(String),
}

/// Decodes the zstd frame at the start of `src`'s body into `block` in one
/// call, when its header gives a content size of at most
/// [`frames::FRAME_LEN`] and the whole frame fits the input buffer.
/// `Ok(false)` leaves it to the streaming decoder (which also reports what
/// is wrong with a frame whose end cannot be found).
fn decode_whole<R: Read>(
    src: &mut BodySource<R>,
    dctx: &mut Option<zstd::zstd_safe::DCtx<'static>>,
    block: &mut Vec<u8>,
) -> Result<bool, BodyError> {
    let head = src.fill_body(frames::MAX_FRAME_HEADER).map_err(BodyError::Io)?;
    let frames::FrameSize::Small(size) = frames::frame_size(head) else {
        return Ok(false);
    };
    let most =
        frames::max_stored_frame().min(zstd::zstd_safe::compress_bound(size) + frames::MAX_FRAME_HEADER + 4);
    // Read on only while the frame's end is not in the buffer: what is
    // already there is moved to the buffer's start at most once. The
    // buffer grows only as far as the frames met so far need (a frame of
    // relation pages stores a tenth to a half of its 1 MiB), not to the
    // most a frame could take.
    let stored = loop {
        if let Some(stored) = frames::stored_len(src.body()) {
            break stored;
        }
        let have = src.body().len();
        if have >= most || src.eof {
            return Ok(false);
        }
        let want = (have + INPUT_BUF).min(most);
        src.grow(want);
        src.fill_body(want).map_err(BodyError::Io)?;
    };
    let body = src.body();
    let dctx = match dctx {
        Some(d) => d,
        None => dctx.insert(
            zstd::zstd_safe::DCtx::try_create()
                .ok_or_else(|| BodyError::Codec("cannot create a zstd decoder".into()))?,
        ),
    };
    frames::decode_whole_frame(dctx, &body[..stored], size, block).map_err(BodyError::Codec)?;
    src.consume(stored);
    Ok(true)
}

/// Why a body that should start with a `kind` frame does not.
fn not_a_frame(kind: &str, start: &[u8]) -> String {
    match start.len() {
        0 => format!("empty body: no {kind} frame"),
        1..=3 => format!("body too short for a {kind} frame: {} bytes", start.len()),
        _ => format!(
            "body does not start with a {kind} frame: magic {:#010x}",
            le_u32(start)
        ),
    }
}

/// Reads of at least this many bytes (one block of the LZ4 frames pgark
/// writes) are decoded straight into the caller's buffer: the decoder puts
/// each block there directly when it has room for one. Smaller reads (a
/// tar header, a small file) are served from this many bytes decoded
/// aside.
const LZ4_DIRECT_MIN: usize = 64 << 10;

/// Decodes the current LZ4 frame into `dst` until `dst` is full or the
/// frame ends (then `in_frame` is cleared). Returns the bytes decoded.
fn lz4_fill<R: Read>(
    src: &mut BodySource<R>,
    dec: &mut crate::lz4::Decoder,
    in_frame: &mut bool,
    dst: &mut [u8],
) -> Result<usize, BodyError> {
    let mut produced = 0;
    while *in_frame && produced < dst.len() {
        let input = src.fill_body(1).map_err(BodyError::Io)?;
        if input.is_empty() {
            return Err(BodyError::Codec("body ended inside an LZ4 frame".into()));
        }
        let step = dec
            .decode(input, &mut dst[produced..])
            .map_err(BodyError::Codec)?;
        src.consume(step.consumed);
        produced += step.produced;
        if step.frame_end {
            *in_frame = false;
        } else if step.consumed == 0 && step.produced == 0 {
            return Err(BodyError::Codec("LZ4 decoder made no progress".into()));
        }
    }
    Ok(produced)
}

/// The codec state, owning the body source.
enum Body<R: Read> {
    None(BodySource<R>),
    Zstd {
        src: BodySource<R>,
        dec: zstd::stream::raw::Decoder<'static>,
        /// The streaming decoder has been used since its last reset.
        dec_used: bool,
        /// For frames decoded whole ([`crate::frames`]), made when first
        /// needed.
        whole: Option<zstd::zstd_safe::DCtx<'static>>,
        /// The last frame decoded whole, handed out from `pos`.
        block: Vec<u8>,
        pos: usize,
        /// At a frame boundary: before the first frame, or the current
        /// frame is complete (including its flushed output).
        frame_done: bool,
        frames: u64,
    },
    Lz4 {
        src: BodySource<R>,
        /// Made when the first frame starts ([`crate::lz4`]); it starts
        /// each later frame afresh by itself.
        dec: Option<crate::lz4::Decoder>,
        /// Where a block is decoded when the caller's buffer is small:
        /// [`LZ4_DIRECT_MIN`] bytes once needed, its first `filled`
        /// decoded, handed out from `pos`.
        block: Vec<u8>,
        filled: usize,
        pos: usize,
        /// A frame has been started and not yet seen to end.
        in_frame: bool,
        frames: u64,
    },
    Lzma {
        src: BodySource<R>,
        dec: xz2::stream::Stream,
        done: bool,
    },
}

impl<R: Read> Body<R> {
    fn new(codec: Compression, src: BodySource<R>) -> Result<Self, CodecError> {
        Ok(match codec {
            Compression::None => Body::None(src),
            Compression::Zstd => Body::Zstd {
                src,
                dec: zstd::stream::raw::Decoder::new()?,
                dec_used: false,
                whole: None,
                block: Vec::new(),
                pos: 0,
                frame_done: true,
                frames: 0,
            },
            Compression::Lz4 => Body::Lz4 {
                src,
                dec: None,
                block: Vec::new(),
                filled: 0,
                pos: 0,
                in_frame: false,
                frames: 0,
            },
            Compression::Lzma => {
                let dec = xz2::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
                    .map_err(|e| CodecError::Io(io::Error::other(format!("xz decoder setup: {e}"))))?;
                Body::Lzma {
                    src,
                    dec,
                    done: false,
                }
            }
        })
    }

    fn src(&self) -> &BodySource<R> {
        match self {
            Body::None(src) | Body::Zstd { src, .. } | Body::Lz4 { src, .. } | Body::Lzma { src, .. } => src,
        }
    }

    fn src_mut(&mut self) -> &mut BodySource<R> {
        match self {
            Body::None(src) | Body::Zstd { src, .. } | Body::Lz4 { src, .. } | Body::Lzma { src, .. } => src,
        }
    }

    /// Decodes into `out` (non-empty). `Ok(Some(n))` with `n > 0`, or
    /// `Ok(None)` when the codec stream has ended (the body may still hold
    /// trailing bytes).
    ///
    /// Every decoded byte goes through `hasher` once, in order, by the
    /// time it is handed out, in slices as large as decoding gives: a zstd
    /// frame decoded whole (up to 1 MiB) as soon as it is decoded, an lz4
    /// block decoded aside (64 KiB) likewise, what is decoded straight
    /// into `out` or streamed once it is there. Hashing the slices a tar
    /// reader hands back (512-byte headers, then the file's data, which
    /// starts 512 bytes into a BLAKE3 chunk) would keep BLAKE3 from hashing
    /// many of its 1 KiB chunks at once.
    fn decode(&mut self, out: &mut [u8], hasher: &mut ContentHasher) -> Result<Option<usize>, BodyError> {
        match self {
            Body::None(src) => {
                let avail = src.fill_body(1).map_err(BodyError::Io)?;
                if avail.is_empty() {
                    return Ok(None);
                }
                let n = avail.len().min(out.len());
                out[..n].copy_from_slice(&avail[..n]);
                src.consume(n);
                hasher.update(&out[..n]);
                Ok(Some(n))
            }
            Body::Zstd { .. } => self.decode_zstd(out, hasher),
            Body::Lz4 { .. } => self.decode_lz4(out, hasher),
            Body::Lzma { .. } => {
                let n = self.decode_xz(out)?;
                if let Some(n) = n {
                    hasher.update(&out[..n]);
                }
                Ok(n)
            }
        }
    }

    fn decode_zstd(
        &mut self,
        out: &mut [u8],
        hasher: &mut ContentHasher,
    ) -> Result<Option<usize>, BodyError> {
        let Body::Zstd {
            src,
            dec,
            dec_used,
            whole,
            block,
            pos,
            frame_done,
            frames,
        } = self
        else {
            unreachable!()
        };
        loop {
            if *pos < block.len() {
                let n = (block.len() - *pos).min(out.len());
                out[..n].copy_from_slice(&block[*pos..*pos + n]);
                *pos += n;
                return Ok(Some(n));
            }
            if *frame_done {
                // At a frame boundary: another zstd frame may follow;
                // anything else ends the codec stream (and is trailing
                // garbage). Skippable frames are not part of a pgark body.
                let next = src.fill_body(4).map_err(BodyError::Io)?;
                let is_frame = next.len() >= 4 && le_u32(next) == ZSTD_FRAME_MAGIC;
                if *frames == 0 && !is_frame {
                    return Err(BodyError::Codec(not_a_frame("zstd", next)));
                }
                if !is_frame {
                    return Ok(None);
                }
                *frames += 1;
                if decode_whole(src, whole, block)? {
                    hasher.update(block);
                    *pos = 0;
                    continue;
                }
                if *dec_used {
                    dec.reinit().map_err(|e| BodyError::Codec(e.to_string()))?;
                }
                *dec_used = true;
                *frame_done = false;
            }
            let input = src.fill_body(1).map_err(BodyError::Io)?;
            let input_was_empty = input.is_empty();
            let status = dec
                .run_on_buffers(input, out)
                .map_err(|e| BodyError::Codec(e.to_string()))?;
            src.consume(status.bytes_read);
            if status.remaining == 0 {
                *frame_done = true;
            }
            if status.bytes_written > 0 {
                hasher.update(&out[..status.bytes_written]);
                return Ok(Some(status.bytes_written));
            }
            if *frame_done {
                continue;
            }
            if input_was_empty {
                return Err(BodyError::Codec("body ended inside a zstd frame".into()));
            }
            if status.bytes_read == 0 {
                return Err(BodyError::Codec("zstd decoder made no progress".into()));
            }
        }
    }

    fn decode_lz4(&mut self, out: &mut [u8], hasher: &mut ContentHasher) -> Result<Option<usize>, BodyError> {
        let Body::Lz4 {
            src,
            dec,
            block,
            filled,
            pos,
            in_frame,
            frames: frame_count,
        } = self
        else {
            unreachable!()
        };
        loop {
            if *pos < *filled {
                let n = (*filled - *pos).min(out.len());
                out[..n].copy_from_slice(&block[*pos..*pos + n]);
                *pos += n;
                return Ok(Some(n));
            }
            if !*in_frame {
                // At a frame boundary: another LZ4 frame may follow;
                // anything else ends the codec stream (and is trailing
                // garbage). Skippable frames are not part of a pgark body.
                let next = src.fill_body(4).map_err(BodyError::Io)?;
                let is_frame = next.len() >= 4 && le_u32(next) == LZ4_FRAME_MAGIC;
                if *frame_count == 0 && !is_frame {
                    return Err(BodyError::Codec(not_a_frame("LZ4", next)));
                }
                if !is_frame {
                    return Ok(None);
                }
                *in_frame = true;
                *frame_count += 1;
            }
            let dec = match dec {
                Some(d) => d,
                None => dec.insert(crate::lz4::Decoder::new().map_err(BodyError::Codec)?),
            };
            // A large read is decoded straight into the caller's buffer;
            // a small one (a tar header) from a block decoded aside. Either
            // is hashed whole once decoded.
            if out.len() >= LZ4_DIRECT_MIN {
                let n = lz4_fill(src, dec, in_frame, out)?;
                hasher.update(&out[..n]);
                if n > 0 {
                    return Ok(Some(n));
                }
                continue;
            }
            if block.is_empty() {
                block.resize(LZ4_DIRECT_MIN, 0);
            }
            *filled = lz4_fill(src, dec, in_frame, block)?;
            *pos = 0;
            hasher.update(&block[..*filled]);
        }
    }

    fn decode_xz(&mut self, out: &mut [u8]) -> Result<Option<usize>, BodyError> {
        let Body::Lzma { src, dec, done } = self else {
            unreachable!()
        };
        if *done {
            return Ok(None);
        }
        loop {
            let input = src.fill_body(1).map_err(BodyError::Io)?;
            let input_was_empty = input.is_empty();
            let (in_before, out_before) = (dec.total_in(), dec.total_out());
            let status = dec
                .process(input, out, xz2::stream::Action::Run)
                .map_err(|e| BodyError::Codec(e.to_string()));
            let consumed = (dec.total_in() - in_before) as usize;
            let produced = (dec.total_out() - out_before) as usize;
            src.consume(consumed);
            if status? == xz2::stream::Status::StreamEnd {
                *done = true;
                return Ok((produced > 0).then_some(produced));
            }
            if produced > 0 {
                return Ok(Some(produced));
            }
            if input_was_empty {
                return Err(BodyError::Codec(
                    "body ended before the end of the xz stream".into(),
                ));
            }
            if consumed == 0 {
                return Err(BodyError::Codec("xz decoder made no progress".into()));
            }
        }
    }
}

enum State {
    Reading,
    Done(ObjectSummary),
    Failed(CodecError),
}

/// Streaming decoder: reads a stored object from `inner` and yields the
/// original bytes.
///
/// `read` returns `Ok(0)` only after the trailer was checked (length and
/// SHA-256). See the [module docs](self) for the stages and guarantees.
///
/// ```
/// use std::io::Read;
/// use pgark_codec::{encode_to_vec, CompressionSpec, ObjectReader};
///
/// let (stored, _) = encode_to_vec(b"hello", CompressionSpec::default())?;
/// let mut r = ObjectReader::new(&stored[..])?;
/// let mut out = Vec::new();
/// r.read_to_end(&mut out)?;
/// assert_eq!(out, b"hello");
/// assert_eq!(r.summary().unwrap().original_len, 5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ObjectReader<R: Read> {
    codec: Compression,
    encrypted: bool,
    body: Body<R>,
    hasher: ContentHasher,
    original_len: u64,
    state: State,
}

impl<R: Read> ObjectReader<R> {
    /// Reads and checks the 16-byte header; reads nothing more. An
    /// encrypted object is refused with
    /// [`CodecError::EncryptedObjectNeedsKey`].
    pub fn new(inner: R) -> Result<Self, CodecError> {
        ObjectReader::new_with_key(inner, None, "")
    }

    /// Like [`ObjectReader::new`], able to read encrypted objects too: for
    /// one (header flag bit 0) `key` must be the repository's data key
    /// (else [`CodecError::EncryptedObjectNeedsKey`]) and `object_name` the
    /// name it was written under; the encrypted stream's header is read and
    /// checked here as well ([`CodecError::Crypto`] if it is damaged, of
    /// another data key or of another name). An unencrypted object is read
    /// as [`ObjectReader::new`] would, key or not: whether that is
    /// acceptable is the caller's policy ([`ObjectReader::is_encrypted`]).
    pub fn new_with_key(mut inner: R, key: Option<&DataKey>, object_name: &str) -> Result<Self, CodecError> {
        let mut header = [0u8; HEADER_LEN];
        let mut got = 0;
        while got < HEADER_LEN {
            match inner.read(&mut header[got..]) {
                Ok(0) => break,
                Ok(n) => got += n.min(HEADER_LEN - got),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CodecError::Io(e)),
            }
        }
        let (codec, flags) = decode_header_full(&header[..got])?;
        let encrypted = flags.encrypted;
        let source = if encrypted {
            let key = key.ok_or(CodecError::EncryptedObjectNeedsKey)?;
            Source::Encrypted(Box::new(
                DecryptReader::with_context(inner, key, object_name, &header)
                    .map_err(CodecError::from_crypto)?,
            ))
        } else {
            Source::Plain(inner)
        };
        Ok(ObjectReader {
            codec,
            encrypted,
            body: Body::new(codec, BodySource::new(source))?,
            hasher: ContentHasher::new(flags.digest),
            original_len: 0,
            state: State::Reading,
        })
    }

    /// The codec named in the header.
    pub fn codec(&self) -> Compression {
        self.codec
    }

    /// True if the object is encrypted (header flag bit 0).
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// What was read, once EOF was reached and the trailer verified.
    pub fn summary(&self) -> Option<&ObjectSummary> {
        match &self.state {
            State::Done(summary) => Some(summary),
            _ => None,
        }
    }

    /// Original bytes handed out so far (not yet verified before EOF).
    pub fn original_len(&self) -> u64 {
        self.original_len
    }

    /// Checks the held-back bytes as a trailer's framing (once the inner
    /// reader is at EOF).
    fn check_tail(&self, tail: &[u8]) -> Result<crate::format::Trailer, CodecError> {
        if tail.len() < TRAILER_LEN {
            return Err(CodecError::TooShort {
                minimum: MIN_OBJECT_LEN as u64,
                actual: self.body.src().total_read,
            });
        }
        decode_trailer(tail)
    }

    /// Turns a body problem into the error to report: if the inner reader
    /// is at EOF and the object's last bytes are not a trailer, that is the
    /// real problem (truncation, appended bytes).
    fn classify(&self, err: BodyError) -> CodecError {
        match err {
            BodyError::Io(e) => CodecError::from(e),
            BodyError::Codec(message) => {
                if let Some(last) = self.body.src().last_bytes() {
                    if let Err(trailer_err) = self.check_tail(last) {
                        return trailer_err;
                    }
                }
                CodecError::Decompress {
                    codec: self.codec,
                    offset: self.body.src().offset(),
                    message,
                }
            }
        }
    }

    /// The codec stream ended: drain and count what is left of the body,
    /// then check the trailer, the length and the checksum.
    fn verify(&mut self) -> Result<ObjectSummary, CodecError> {
        let src = self.body.src_mut();
        let stream_end = src.offset();
        let mut trailing = 0u64;
        loop {
            let n = src.fill_body(1).map_err(CodecError::from)?.len();
            if n == 0 {
                break;
            }
            src.consume(n);
            trailing += n as u64;
        }
        let tail = self.body.src().tail().expect("body drained to EOF");
        let trailer = self.check_tail(tail)?;
        if trailing > 0 {
            return Err(CodecError::TrailingGarbage {
                codec: self.codec,
                offset: stream_end,
                bytes: trailing,
            });
        }
        if trailer.original_len != self.original_len {
            return Err(CodecError::LengthMismatch {
                expected: trailer.original_len,
                actual: self.original_len,
            });
        }
        let algorithm = self.hasher.algorithm();
        let hasher = std::mem::replace(&mut self.hasher, ContentHasher::new(algorithm));
        let digest = hasher.finalize();
        if trailer.digest != digest.bytes {
            let recorded = ContentDigest {
                algorithm,
                bytes: trailer.digest,
            };
            return Err(CodecError::ChecksumMismatch {
                expected: recorded.to_string(),
                actual: digest.to_string(),
            });
        }
        Ok(ObjectSummary {
            codec: self.codec,
            original_len: self.original_len,
            stored_len: self.body.src().stored_len(),
            digest,
        })
    }

    /// Remembers the failure (later reads repeat a copy of it) and returns
    /// the original, so that an error of the underlying reader keeps its
    /// type (a repository failure stays one, and is not taken for damage).
    fn fail(&mut self, err: CodecError) -> io::Error {
        self.state = State::Failed(err.duplicate());
        err.into_io()
    }
}

impl<R: Read> Read for ObjectReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.state {
            State::Reading => {}
            State::Done(_) => return Ok(0),
            State::Failed(err) => return Err(err.duplicate().into_io()),
        }
        if buf.is_empty() {
            return Ok(0);
        }
        match self.body.decode(buf, &mut self.hasher) {
            Ok(Some(n)) => {
                self.original_len += n as u64;
                Ok(n)
            }
            Ok(None) => match self.verify() {
                Ok(summary) => {
                    self.state = State::Done(summary);
                    Ok(0)
                }
                Err(err) => Err(self.fail(err)),
            },
            Err(body_err) => {
                let err = self.classify(body_err);
                Err(self.fail(err))
            }
        }
    }
}

impl<R: Read> std::fmt::Debug for ObjectReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("codec", &self.codec)
            .field("encrypted", &self.encrypted)
            .field("original_len", &self.original_len)
            .field("stored_offset", &self.body.src().offset())
            .finish_non_exhaustive()
    }
}
