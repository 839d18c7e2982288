//! zstd bodies as a sequence of independent frames of at most
//! [`FRAME_LEN`] original bytes each: the writer's [`FrameEncoder`] and the
//! reader's [`decode_whole_frame`].
//!
//! zstd's streaming encoder copies its input into an internal buffer of
//! window + block size and, once that buffer wraps, compresses every later
//! block against the older data as an "external dictionary", a slower match
//! finder (most of a backup's CPU time went there). A frame compressed in
//! one call from one contiguous block only ever sees a plain prefix, and its
//! header records the content size. Its window is the block itself (at most
//! 1 MiB): on PostgreSQL relation files the stored size is the same or a
//! little smaller than one long frame's, since zstd picks the level's
//! parameters for the block's size.
//!
//! On the way back, a whole frame whose content size is known and at most
//! [`FRAME_LEN`] is decoded in one call into a block of that size (no
//! window buffer; the block is then copied to the caller's buffer), and a
//! frame of another writer (or of an older pgark: one long frame) is
//! decoded by the streaming decoder as before.
//!
//! Every frame is an ordinary zstd frame (without a content checksum: the
//! trailer's digest covers the original bytes), so a body of several frames
//! decompresses with `zstd -d` like one.

use std::io::{self, Write};

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx};

/// Original bytes per frame.
pub(crate) const FRAME_LEN: usize = 1 << 20;

/// The longest frame header zstd writes (magic, descriptor, window,
/// dictionary id, content size).
pub(crate) const MAX_FRAME_HEADER: usize = 18;

/// The most stored bytes a frame of at most [`FRAME_LEN`] original bytes
/// can take (incompressible blocks stored raw, block headers, checksum).
pub(crate) fn max_stored_frame() -> usize {
    zstd_safe::compress_bound(FRAME_LEN) + MAX_FRAME_HEADER + 4
}

fn zstd_error(code: usize) -> io::Error {
    io::Error::other(format!("zstd: {}", zstd_safe::get_error_name(code)))
}

/// Compresses what is written to it into frames of [`FRAME_LEN`] original
/// bytes (the last one shorter), each written to the inner writer as soon
/// as it is complete. Memory: one block of [`FRAME_LEN`], its compressed
/// frame, and zstd's tables for a 1 MiB source.
pub(crate) struct FrameEncoder<W: Write> {
    out: W,
    cctx: CCtx<'static>,
    /// The frame being gathered: `block[..used]`. Allocated (and zeroed)
    /// once, at the first write that needs it.
    block: Box<[u8]>,
    used: usize,
    frame: Vec<u8>,
    frames: u64,
}

impl<W: Write> FrameEncoder<W> {
    pub(crate) fn new(out: W, level: i32) -> io::Result<Self> {
        let mut cctx = CCtx::try_create().ok_or_else(|| io::Error::other("zstd: cannot create a context"))?;
        cctx.set_parameter(CParameter::CompressionLevel(level))
            .map_err(zstd_error)?;
        // No frame checksum: the object's trailer records the digest of
        // the original bytes, which every reader checks; a second digest
        // of the same bytes would cost a pass over them both ways.
        cctx.set_parameter(CParameter::ChecksumFlag(false))
            .map_err(zstd_error)?;
        Ok(FrameEncoder {
            out,
            cctx,
            block: Box::default(),
            used: 0,
            frame: Vec::new(),
            frames: 0,
        })
    }

    /// Compresses `src` (at most [`FRAME_LEN`] bytes) as one frame and
    /// writes it out.
    fn emit(&mut self, src: &[u8]) -> io::Result<()> {
        debug_assert!(src.len() <= FRAME_LEN);
        self.frame.clear();
        self.frame.reserve(zstd_safe::compress_bound(src.len()));
        self.cctx.compress2(&mut self.frame, src).map_err(zstd_error)?;
        self.out.write_all(&self.frame)?;
        self.frames += 1;
        Ok(())
    }

    /// Compresses the block gathered so far, if any.
    fn emit_block(&mut self) -> io::Result<()> {
        if self.used == 0 {
            return Ok(());
        }
        let block = std::mem::take(&mut self.block);
        let done = self.emit(&block[..self.used]);
        self.block = block;
        self.used = 0;
        done
    }

    /// The free room of the frame being gathered, for the caller to write
    /// original bytes into in place ([`FrameEncoder::commit`] then takes
    /// them): at most `max` bytes, and at least `min` (at most
    /// [`FRAME_LEN`]). When less than `min` is left, the frame gathered so
    /// far is compressed first, shorter than [`FRAME_LEN`].
    pub(crate) fn room(&mut self, max: usize, min: usize) -> io::Result<&mut [u8]> {
        debug_assert!(min <= FRAME_LEN && min <= max.max(1));
        if self.block.is_empty() {
            self.block = vec![0u8; FRAME_LEN].into_boxed_slice();
        }
        if FRAME_LEN - self.used < min {
            self.emit_block()?;
        }
        let end = self.used + max.min(FRAME_LEN - self.used);
        Ok(&mut self.block[self.used..end])
    }

    /// Takes the first `n` bytes of the room last given by
    /// [`FrameEncoder::room`] as written, and compresses the frame once it
    /// is full.
    pub(crate) fn commit(&mut self, n: usize) -> io::Result<()> {
        debug_assert!(self.used + n <= FRAME_LEN);
        self.used += n;
        if self.used == FRAME_LEN {
            self.emit_block()?;
        }
        Ok(())
    }

    pub(crate) fn get_ref(&self) -> &W {
        &self.out
    }

    /// The inner writer, when nothing has been written yet (no frame
    /// begun, nothing gathered).
    pub(crate) fn into_unused(self) -> Result<W, Self> {
        if self.frames == 0 && self.used == 0 {
            Ok(self.out)
        } else {
            Err(self)
        }
    }

    /// Writes the last frame (an empty one when nothing was written: a
    /// body holds at least one frame) and returns the inner writer.
    pub(crate) fn finish(mut self) -> io::Result<W> {
        if self.frames == 0 || self.used > 0 {
            let block = std::mem::take(&mut self.block);
            self.emit(&block[..self.used])?;
        }
        Ok(self.out)
    }
}

impl<W: Write> Write for FrameEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.used == 0 && buf.len() >= FRAME_LEN {
            // A whole frame's worth in the caller's buffer: no copy.
            self.emit(&buf[..FRAME_LEN])?;
            return Ok(FRAME_LEN);
        }
        let room = self.room(buf.len(), 1)?;
        let n = room.len();
        room.copy_from_slice(&buf[..n]);
        self.commit(n)?;
        Ok(n)
    }

    /// Ends the current frame early (what was written is then decodable
    /// from the inner writer) and flushes the inner writer. Each flush
    /// costs compression ratio.
    fn flush(&mut self) -> io::Result<()> {
        self.emit_block()?;
        self.out.flush()
    }
}

/// A frame's size, known from its first bytes.
pub(crate) enum FrameSize {
    /// Content size in the header, at most [`FRAME_LEN`]: decode it whole
    /// with [`decode_whole_frame`] once [`stored_len`] finds its end.
    Small(usize),
    /// Unknown, larger, or not readable from these bytes: the streaming
    /// decoder's job.
    Other,
}

/// What the frame header at the start of `head` (at least
/// [`MAX_FRAME_HEADER`] bytes, or all there is) says of its size.
pub(crate) fn frame_size(head: &[u8]) -> FrameSize {
    match zstd_safe::get_frame_content_size(head) {
        Ok(Some(n)) if n <= FRAME_LEN as u64 => FrameSize::Small(n as usize),
        _ => FrameSize::Other,
    }
}

/// The stored length of the frame at the start of `body`, if `body` holds
/// all of it.
pub(crate) fn stored_len(body: &[u8]) -> Option<usize> {
    zstd_safe::find_frame_compressed_size(body)
        .ok()
        .filter(|&n| n <= body.len())
}

/// Decodes the whole frame `frame` (its content size, `size`, read from
/// its header) into `out`, which is cleared first. Fails if the frame is
/// damaged, its checksum differs, or it holds another size.
pub(crate) fn decode_whole_frame(
    dctx: &mut DCtx<'static>,
    frame: &[u8],
    size: usize,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    out.clear();
    out.reserve(size.max(1));
    let n = dctx
        .decompress(out, frame)
        .map_err(|code| zstd_safe::get_error_name(code).to_string())?;
    if n != size {
        return Err(format!("zstd frame holds {n} bytes, its header says {size}"));
    }
    Ok(())
}
