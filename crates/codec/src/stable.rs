//! zstd compression of a whole source of known length from one stable
//! input buffer ([`compress_stable`]), for [`crate::ObjectWriter::finish_from`].
//!
//! zstd's streaming encoder copies its input into an internal buffer of
//! window + block size; each time that buffer wraps, the blocks after it are
//! compressed against the previous data as an "external dictionary", a
//! slower match finder. With `ZSTD_c_stableInBuffer` zstd reads straight from
//! the caller's buffer, which must keep its address for the whole frame (it
//! may grow), so the window is always a plain prefix: no copy, no external
//! dictionary.
//!
//! The buffer is an anonymous mapping of the source's length. It is filled
//! [`STEP`] bytes at a time, each step hashed and given to zstd, and the pages
//! more than a window (plus a step) behind what zstd has consumed are handed
//! back to the kernel (`MADV_DONTNEED`), so the resident part stays about
//! window + 2 steps however long the source is. zstd never reads below its
//! window (its decoder could not follow a match there).
//!
//! The frame is an ordinary zstd frame (no content checksum, the content size
//! in its header, the level's parameters for that size with the window at
//! most 512 KiB), readable by any zstd decoder and by every pgark reader.

use std::io::{self, Read, Write};
use std::ptr::NonNull;

use zstd::zstd_safe::zstd_sys;

use crate::digest::ContentHasher;

/// Bytes read, hashed and handed to zstd at a time.
pub(crate) const STEP: usize = 128 << 10;

/// Sources shorter than this are compressed by the streaming encoder: the
/// stable buffer saves nothing there.
pub(crate) const MIN_LEN: u64 = 4 << 20;

/// An anonymous private mapping, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned a null mapping"),
            len,
        })
    }

    fn slice(&self, range: std::ops::Range<usize>) -> &[u8] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds of the mapping, which lives as long as `self`;
        // anonymous memory is always initialised (zeros until written).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(range.start), range.end - range.start) }
    }

    fn slice_mut(&mut self, range: std::ops::Range<usize>) -> &mut [u8] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: as in `slice`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(range.start), range.end - range.start) }
    }

    /// Gives the whole pages inside `range` back to the kernel (they read
    /// as zeros afterwards).
    fn discard(&mut self, range: std::ops::Range<usize>) {
        let page = page_size();
        let start = range.start.div_ceil(page) * page;
        let end = (range.end / page) * page;
        if end > start {
            // SAFETY: whole pages inside our own mapping; nothing refers to
            // their contents any more (the caller's contract). Advice only:
            // a failure leaves the pages resident, which is harmless.
            unsafe {
                libc::madvise(
                    self.ptr.as_ptr().add(start).cast(),
                    end - start,
                    libc::MADV_DONTNEED,
                );
            }
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

// SAFETY: the mapping is plain memory owned by this value.
unsafe impl Send for Mapping {}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// A zstd compression context, freed on drop.
struct Cctx(NonNull<zstd_sys::ZSTD_CCtx>);

impl Drop for Cctx {
    fn drop(&mut self) {
        // SAFETY: created by ZSTD_createCCtx, freed once.
        unsafe {
            zstd_sys::ZSTD_freeCCtx(self.0.as_ptr());
        }
    }
}

fn check(code: usize, what: &str) -> io::Result<usize> {
    // SAFETY: ZSTD_isError / ZSTD_getErrorName take any value.
    if unsafe { zstd_sys::ZSTD_isError(code) } != 0 {
        let name = unsafe { std::ffi::CStr::from_ptr(zstd_sys::ZSTD_getErrorName(code)) };
        return Err(io::Error::other(format!(
            "zstd {what}: {}",
            name.to_string_lossy()
        )));
    }
    Ok(code)
}

impl Cctx {
    fn new(level: i32, len: u64) -> io::Result<Cctx> {
        // SAFETY: no preconditions; null means out of memory.
        let ptr = unsafe { zstd_sys::ZSTD_createCCtx() };
        let cctx = Cctx(NonNull::new(ptr).ok_or_else(|| io::Error::other("zstd: cannot create a context"))?);
        use zstd_sys::ZSTD_cParameter::*;
        for (param, value, what) in [
            (ZSTD_c_compressionLevel, level, "level"),
            // No frame checksum: the trailer's digest covers the bytes
            // (see `crate::frames`).
            (ZSTD_c_checksumFlag, 0, "checksum flag"),
            // The input buffer keeps its address for the whole frame
            // (see `compress_stable`).
            (ZSTD_c_experimentalParam9, 1, "stable input buffer"),
            (ZSTD_c_windowLog, window_log(level, len) as i32, "window"),
        ] {
            // SAFETY: a valid context; parameters are checked by zstd.
            check(
                unsafe { zstd_sys::ZSTD_CCtx_setParameter(cctx.0.as_ptr(), param, value) },
                what,
            )?;
        }
        // SAFETY: as above.
        check(
            unsafe { zstd_sys::ZSTD_CCtx_setPledgedSrcSize(cctx.0.as_ptr(), len as _) },
            "pledged size",
        )?;
        Ok(cctx)
    }
}

/// The largest window this path uses, as a power of two: 512 KiB. WAL, its
/// only input, has little to match farther back: on real segments (pgbench,
/// bulk inserts) the default 2 MiB of level 3 saves 0.2 %, 8 MiB at level 9
/// nothing, while each MiB of window is a MiB of memory in wal-push (the
/// buffer kept behind zstd) and in every reader (the decoder's window).
const MAX_WINDOW_LOG: u32 = 19;

/// The window log used at `level` for a source of `len` bytes: the level's
/// own, at most [`MAX_WINDOW_LOG`].
fn window_log(level: i32, len: u64) -> u32 {
    // SAFETY: a pure function of its arguments.
    let params = unsafe { zstd_sys::ZSTD_getCParams(level, len as _, 0) };
    params.windowLog.min(MAX_WINDOW_LOG)
}

/// The window zstd uses at `level` for a source of `len` bytes.
fn window_size(level: i32, len: u64) -> usize {
    1usize << window_log(level, len)
}

/// How [`compress_stable`] ended when the source was not `len` bytes.
pub(crate) enum Stable {
    /// The whole frame was written; `len` bytes were read.
    Done,
    /// The source ended early (after this many bytes) or had more than
    /// `len` (`None`): nothing useful was written.
    WrongLength(Option<u64>),
}

/// Compresses exactly `len` bytes read from `source` into one zstd frame
/// written to `out`, hashing them into `hasher`.
pub(crate) fn compress_stable<R: Read + ?Sized, W: Write>(
    source: &mut R,
    len: u64,
    level: i32,
    hasher: &mut ContentHasher,
    out: &mut W,
) -> io::Result<Stable> {
    let total = usize::try_from(len).map_err(|_| io::Error::other("source too large to map"))?;
    let mut buf = Mapping::new(total.max(1))?;
    let cctx = Cctx::new(level, len)?;
    // Pages below `consumed - keep` are never read by zstd again.
    let keep = window_size(level, len) + STEP;
    let mut output = vec![0u8; zstd::zstd_safe::CCtx::out_size()];
    let mut filled = 0usize;
    let mut discarded = 0usize;
    let mut input = zstd_sys::ZSTD_inBuffer {
        src: buf.ptr.as_ptr().cast(),
        size: 0,
        pos: 0,
    };
    loop {
        // Fill the next step.
        let end = (filled + STEP).min(total);
        let start = filled;
        while filled < end {
            match source.read(buf.slice_mut(filled..end)) {
                Ok(0) => return Ok(Stable::WrongLength(Some(filled as u64))),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        hasher.update(buf.slice(start..filled));
        let last = filled == total;
        if last && !at_end(source)? {
            return Ok(Stable::WrongLength(None));
        }
        let directive = if last {
            zstd_sys::ZSTD_EndDirective::ZSTD_e_end
        } else {
            zstd_sys::ZSTD_EndDirective::ZSTD_e_continue
        };
        // Same `src`, grown `size`: what ZSTD_c_stableInBuffer allows.
        input.size = filled;
        loop {
            let mut o = zstd_sys::ZSTD_outBuffer {
                dst: output.as_mut_ptr().cast(),
                size: output.len(),
                pos: 0,
            };
            // SAFETY: `input.src` points into `buf`, alive and unmoved until
            // after `cctx` is dropped (declared later, dropped first);
            // `input.size` never exceeds what was filled; `o` is our buffer.
            let remaining = check(
                unsafe { zstd_sys::ZSTD_compressStream2(cctx.0.as_ptr(), &mut o, &mut input, directive) },
                "compression",
            )?;
            out.write_all(&output[..o.pos])?;
            let done = if last {
                remaining == 0
            } else {
                input.pos == input.size && o.pos < o.size
            };
            if done {
                break;
            }
        }
        if last {
            return Ok(Stable::Done);
        }
        let behind = input.pos.saturating_sub(keep);
        if behind >= discarded + STEP {
            buf.discard(discarded..behind);
            discarded = behind;
        }
    }
}

/// True when `source` has nothing more.
fn at_end<R: Read + ?Sized>(source: &mut R) -> io::Result<bool> {
    let mut probe = [0u8; 1];
    loop {
        match source.read(&mut probe) {
            Ok(0) => return Ok(true),
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
