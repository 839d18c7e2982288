//! lz4 bodies on the way back: the reference LZ4 library's frame decoder
//! (`LZ4F_decompress`, bundled C source). The reader has it decode a large
//! read straight into the caller's buffer, a small one into 64 KiB aside.
//!
//! The bodies are unchanged (pgark still writes them with `lz4_flex`: one
//! LZ4 frame of 64 KiB linked blocks, readable with `lz4 -d`). What
//! changed is the decoder: `lz4_flex` copies a match that overlaps its own
//! output one byte at a time, and PostgreSQL relation files are full of
//! such matches (runs of zeros in free space, padded text), so it spent
//! most of an lz4 restore's user time there; the C decoder copies them
//! eight or more bytes at a time.
//!
//! `LZ4F_decompress` decodes a whole LZ4 block straight into the output
//! when the output has room for one, and keeps the 64 KiB of history a
//! linked block needs itself (one 64 KiB copy per call). It accepts every
//! LZ4 frame: linked or independent blocks of any size, with or without
//! content size, block and content checksums (checked when present, as
//! before: objects written before 2026-12 carry a content checksum).
//! It stops at the end of a frame without reading past it. Its errors are
//! found somewhere in the input it was given: the reader gives it what its
//! 64 KiB input buffer holds, so damage is reported at most that far before
//! the damaged block.

use std::ffi::CStr;

use lz4_sys::{
    LZ4FDecompressOptions, LZ4FDecompressionContext, LZ4F_createDecompressionContext, LZ4F_decompress,
    LZ4F_freeDecompressionContext, LZ4F_getErrorName, LZ4F_isError, LZ4F_VERSION,
};

/// An `LZ4F` decompression context, freed on drop.
pub(crate) struct Decoder {
    ctx: LZ4FDecompressionContext,
}

/// One call's progress.
pub(crate) struct Step {
    /// Input bytes consumed.
    pub(crate) consumed: usize,
    /// Bytes decoded into the destination, from its start.
    pub(crate) produced: usize,
    /// The frame ended (its end mark and checksum, if any, consumed).
    pub(crate) frame_end: bool,
}

fn error_name(code: usize) -> String {
    // SAFETY: LZ4F_getErrorName returns a static NUL-terminated string for
    // any code.
    let name = unsafe { CStr::from_ptr(LZ4F_getErrorName(code)) };
    format!("lz4: {}", name.to_string_lossy())
}

impl Decoder {
    pub(crate) fn new() -> Result<Self, String> {
        let mut ctx = LZ4FDecompressionContext(std::ptr::null_mut());
        // SAFETY: `ctx` is written by the call; checked below.
        let code = unsafe { LZ4F_createDecompressionContext(&mut ctx, LZ4F_VERSION) };
        // SAFETY: plain function of the code.
        if unsafe { LZ4F_isError(code) } != 0 || ctx.0.is_null() {
            return Err(format!("cannot create an LZ4 decoder: {}", error_name(code)));
        }
        Ok(Decoder { ctx })
    }

    /// Decodes what it can of `src` (the rest of the current frame, or the
    /// start of a new one) into `dst`. Stops when `dst` is full, `src` is
    /// used up or the frame ends.
    pub(crate) fn decode(&mut self, src: &[u8], dst: &mut [u8]) -> Result<Step, String> {
        let mut dst_size = dst.len();
        let mut src_size = src.len();
        let opts = LZ4FDecompressOptions {
            stable_dst: 0,
            reserved: [0; 3],
        };
        // SAFETY: `dst` is `dst_size` writable bytes, `src` `src_size`
        // readable ones; the call writes at most `dst_size` bytes, reads at
        // most `src_size`, and reports how many of each.
        let code = unsafe {
            LZ4F_decompress(
                self.ctx,
                dst.as_mut_ptr(),
                &mut dst_size,
                src.as_ptr(),
                &mut src_size,
                &opts,
            )
        };
        // SAFETY: plain function of the code.
        if unsafe { LZ4F_isError(code) } != 0 {
            return Err(error_name(code));
        }
        debug_assert!(dst_size <= dst.len() && src_size <= src.len());
        Ok(Step {
            consumed: src_size,
            produced: dst_size,
            frame_end: code == 0,
        })
    }
}

impl Drop for Decoder {
    fn drop(&mut self) {
        // SAFETY: made by LZ4F_createDecompressionContext, freed once.
        unsafe { LZ4F_freeDecompressionContext(self.ctx) };
    }
}
