//! Restoring a file from a chain: a base (the full copy in the oldest backup) and the
//! increments of the backups after it.
//!
//! The newest version of block `b` is in the newest increment that stores it; if none
//! does, in the base. Blocks at or past the newest increment's size are gone (the file
//! shrank), and a block the chain cannot source is an error, never zeros: every
//! increment stores all blocks its parent did not have (see [`crate::format`]), so a
//! valid chain always has a source, and the checks below catch a chain assembled from the
//! wrong pieces (sizes that do not follow from one increment to the next, or `since`
//! LSNs out of order).
//!
//! Two ways to restore, each writing every page of the result exactly once:
//!
//! - [`ChainRestore`], newest first, one increment at a time, then the base, writing pages
//!   at their offsets (a file opened for writing, or any `(block, page)` sink). It keeps a
//!   bitmap of the blocks written (16 KiB per 1 GiB segment of 8 KiB blocks) and needs
//!   only one stream open at a time.
//! - [`merge_chain`], all streams at once, writing the result sequentially (e.g. into a tar
//!   stream): block by block, the newest increment that has the block supplies it and the
//!   others skip it.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU64, Ordering};

use pgark_pg::Lsn;

use crate::block::{bit_is_set, bitmap_words};
use crate::{BlockSize, DeltaError, IncrementHeader, IncrementReader};

/// Where the pages of a restore came from.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct RestoreStats {
    /// The result's size in blocks.
    pub blocks: u32,
    /// Pages written from increments.
    pub from_increments: u64,
    /// Pages written from the base.
    pub from_base: u64,
    /// Pages read from increments and not used: a newer increment had the block, or the
    /// file shrank below it.
    pub superseded: u64,
}

/// A newest-first restore of one file: apply the newest increment, then each older one,
/// then the base; each page of the result is written once, by the newest source that has
/// it. See the [module documentation](self).
///
/// ```
/// use pgark_delta::{BlockSize, ChainRestore, IncrementHeader, IncrementReader, IncrementWriter};
/// use pgark_pg::Lsn;
///
/// let bs = BlockSize::new(1024)?;
/// // The full backup had 2 blocks; the file then grew to 3 and block 0 changed.
/// let base = [vec![1u8; 1024], vec![2u8; 1024]].concat();
/// let header = IncrementHeader { block_size: bs, blocks: 3, parent_blocks: 2, since: Lsn(0x100) };
/// let mut w = IncrementWriter::new(Vec::new(), header)?;
/// w.push_page(0, &[10; 1024])?;
/// w.push_page(2, &[30; 1024])?;
/// let increment = w.finish()?;
///
/// let mut out = vec![0u8; 3 * 1024];
/// let mut write = |block: u32, page: &[u8]| {
///     out[block as usize * 1024..][..1024].copy_from_slice(page);
///     Ok(())
/// };
/// let mut inc = IncrementReader::new(&increment[..])?;
/// let mut restore = ChainRestore::new(inc.header());
/// restore.apply_increment(&mut inc, &mut write)?;
/// restore.apply_base(&base[..], &mut write)?;
/// restore.finish()?;
/// assert_eq!(out, [vec![10u8; 1024], vec![2; 1024], vec![30; 1024]].concat());
/// # Ok::<(), pgark_delta::DeltaError>(())
/// ```
#[derive(Debug)]
pub struct ChainRestore {
    block_size: BlockSize,
    /// The size the next (older) source must rebuild: the last increment's parent size.
    expected_blocks: u32,
    /// `since` of the last increment applied.
    newer_since: Option<Lsn>,
    /// Blocks at or past this are dead in every older source.
    limit: u32,
    written: Vec<u64>,
    remaining: u32,
    page: Vec<u8>,
    stats: RestoreStats,
}

impl ChainRestore {
    /// A restore whose result is the file `newest` (the newest increment's header)
    /// describes.
    pub fn new(newest: &IncrementHeader) -> Self {
        ChainRestore {
            block_size: newest.block_size,
            expected_blocks: newest.blocks,
            newer_since: None,
            limit: newest.blocks,
            written: vec![0; bitmap_words(newest.blocks as usize)],
            remaining: newest.blocks,
            page: vec![0; newest.block_size.bytes()],
            stats: RestoreStats {
                blocks: newest.blocks,
                ..RestoreStats::default()
            },
        }
    }

    /// The result's size in blocks (its length is this times the block size).
    pub fn blocks(&self) -> u32 {
        self.stats.blocks
    }

    /// Blocks of the result not written yet.
    pub fn remaining(&self) -> u32 {
        self.remaining
    }

    /// Applies the next increment, newest first: writes through `target(block, page)` each
    /// of its pages that no newer increment had, reads the rest through to the checked
    /// trailer, and returns the number of pages written.
    ///
    /// A call that fails (a read broken off halfway, say) leaves the restore ready to
    /// take the same increment again from its start: the pages it wrote are kept (they
    /// hold this increment's version) and the others are written then.
    pub fn apply_increment<R, T>(
        &mut self,
        inc: &mut IncrementReader<R>,
        target: &mut T,
    ) -> Result<u32, DeltaError>
    where
        R: Read,
        T: FnMut(u32, &[u8]) -> io::Result<()>,
    {
        let h = *inc.header();
        if h.block_size != self.block_size {
            return Err(DeltaError::ChainBlockSize {
                expected: self.block_size.get(),
                found: h.block_size.get(),
            });
        }
        if h.blocks != self.expected_blocks {
            return Err(DeltaError::ChainSizeMismatch {
                expected: self.expected_blocks,
                found: h.blocks,
            });
        }
        if let Some(newer) = self.newer_since {
            if h.since > newer {
                return Err(DeltaError::ChainOrder {
                    older: h.since,
                    newer,
                });
            }
        }
        let mut written = 0;
        while let Some(block) = inc.peek_block()? {
            if self.wanted(block) {
                inc.read_page(&mut self.page)?;
                target(block, &self.page)?;
                self.mark(block);
                // Counted as written, so that a failed call's pages stay counted.
                self.stats.from_increments += 1;
                written += 1;
            } else {
                inc.skip_page()?;
                self.stats.superseded += 1;
            }
        }
        self.limit = self.limit.min(h.parent_blocks);
        self.expected_blocks = h.parent_blocks;
        self.newer_since = Some(h.since);
        Ok(written)
    }

    /// Applies the base, the full copy of the file in the oldest backup of the chain: reads
    /// it sequentially to its end, writes the blocks nothing newer had, and checks that it
    /// has the size the oldest increment's parent had. Returns the pages written.
    pub fn apply_base<R, T>(&mut self, mut base: R, target: &mut T) -> Result<u32, DeltaError>
    where
        R: Read,
        T: FnMut(u32, &[u8]) -> io::Result<()>,
    {
        let bs = self.block_size.bytes();
        let mut block: u64 = 0;
        let mut written = 0;
        loop {
            let n = read_full(&mut base, &mut self.page)?;
            if n == 0 {
                break;
            }
            if n < bs || block >= u64::from(self.expected_blocks) {
                let found = block * bs as u64 + n as u64 + drain(&mut base)?;
                return Err(self.base_mismatch(found));
            }
            let b = block as u32;
            if self.wanted(b) {
                target(b, &self.page)?;
                self.mark(b);
                written += 1;
            }
            block += 1;
        }
        if block != u64::from(self.expected_blocks) {
            return Err(self.base_mismatch(block * bs as u64));
        }
        self.stats.from_base += u64::from(written);
        self.expected_blocks = 0;
        self.limit = 0;
        Ok(written)
    }

    /// Ends the increments: what the base still has to fill, as a value several threads
    /// can use at once, for a base that comes in pieces ([`BaseFill`]).
    pub fn into_base_fill(self) -> BaseFill {
        BaseFill {
            block_size: self.block_size,
            base_blocks: self.expected_blocks,
            limit: self.limit,
            written: self.written,
            from_base: (0..bitmap_words(self.stats.blocks as usize))
                .map(|_| AtomicU64::new(0))
                .collect(),
            stats: self.stats,
        }
    }

    fn base_mismatch(&self, found: u64) -> DeltaError {
        DeltaError::BaseSizeMismatch {
            found,
            expected_blocks: self.expected_blocks,
            block_size: self.block_size.get(),
        }
    }

    /// Checks that every block of the result was written.
    pub fn finish(self) -> Result<RestoreStats, DeltaError> {
        if self.remaining != 0 {
            let block = (0..self.stats.blocks)
                .find(|&b| !bit_is_set(&self.written, b as usize))
                .unwrap_or(0);
            return Err(DeltaError::ChainGap { block });
        }
        Ok(self.stats)
    }

    fn wanted(&self, block: u32) -> bool {
        block < self.limit && !bit_is_set(&self.written, block as usize)
    }

    fn mark(&mut self, block: u32) {
        self.written[block as usize / 64] |= 1 << (block % 64);
        self.remaining -= 1;
    }
}

/// The base step of a [`ChainRestore`] ([`ChainRestore::into_base_fill`]) for a base
/// stored in pieces (ranges of whole blocks), applied in any order, from several threads
/// at once: each piece writes the blocks of its range that no increment wrote, and
/// [`BaseFill::finish`] checks that the pieces covered the base exactly and that every
/// block of the result was written exactly once.
#[derive(Debug)]
pub struct BaseFill {
    block_size: BlockSize,
    base_blocks: u32,
    limit: u32,
    /// Blocks written from increments (read-only here).
    written: Vec<u64>,
    /// Blocks of the base seen (written or not), one bit each.
    from_base: Vec<AtomicU64>,
    stats: RestoreStats,
}

impl BaseFill {
    /// The size, in blocks, the base must have (the oldest increment's parent size).
    pub fn base_blocks(&self) -> u32 {
        self.base_blocks
    }

    /// The result's size in blocks.
    pub fn blocks(&self) -> u32 {
        self.stats.blocks
    }

    /// Applies the piece of the base that starts at block `first_block`: reads it to its
    /// end and writes through `target(block, page)` the blocks the increments did not.
    /// Returns the pages written.
    ///
    /// A call that fails (a read broken off halfway, say) forgets the blocks it saw, so
    /// the same piece can be applied again from its start; the pages it already wrote
    /// are written again with the same content.
    pub fn apply_range<R, T>(&self, first_block: u32, data: R, target: &mut T) -> Result<u32, DeltaError>
    where
        R: Read,
        T: FnMut(u32, &[u8]) -> io::Result<()>,
    {
        let mut seen_end = first_block;
        let result = self.apply_range_inner(first_block, data, target, &mut seen_end);
        if result.is_err() {
            for b in first_block..seen_end.min(self.stats.blocks) {
                let bit = 1u64 << (b % 64);
                self.from_base[b as usize / 64].fetch_and(!bit, Ordering::Relaxed);
            }
        }
        result
    }

    /// [`BaseFill::apply_range`]; `seen_end` ends past the last block whose bit this call
    /// set.
    fn apply_range_inner<R, T>(
        &self,
        first_block: u32,
        mut data: R,
        target: &mut T,
        seen_end: &mut u32,
    ) -> Result<u32, DeltaError>
    where
        R: Read,
        T: FnMut(u32, &[u8]) -> io::Result<()>,
    {
        let bs = self.block_size.bytes();
        let mut page = vec![0u8; bs];
        let mut block = u64::from(first_block);
        let mut written = 0;
        loop {
            let n = read_full(&mut data, &mut page)?;
            if n == 0 {
                break;
            }
            if n < bs || block >= u64::from(self.base_blocks) {
                let found = block * bs as u64 + n as u64 + drain(&mut data)?;
                return Err(DeltaError::BaseSizeMismatch {
                    found,
                    expected_blocks: self.base_blocks,
                    block_size: self.block_size.get(),
                });
            }
            let b = block as u32;
            let bit = 1u64 << (b % 64);
            if b < self.stats.blocks {
                if self.from_base[b as usize / 64].fetch_or(bit, Ordering::Relaxed) & bit != 0 {
                    return Err(DeltaError::BaseOverlap { block: b });
                }
                *seen_end = b + 1;
                if b < self.limit && !bit_is_set(&self.written, b as usize) {
                    target(b, &page)?;
                    written += 1;
                }
            }
            block += 1;
        }
        Ok(written)
    }

    /// Checks that every block of the result was written (by an increment or the base)
    /// and returns where the pages came from.
    pub fn finish(self) -> Result<RestoreStats, DeltaError> {
        let mut stats = self.stats;
        for b in 0..stats.blocks {
            let i = b as usize;
            let from_increment = bit_is_set(&self.written, i);
            let from_base =
                b < self.limit && self.from_base[i / 64].load(Ordering::Relaxed) & (1 << (i % 64)) != 0;
            if !from_increment && !from_base {
                return Err(DeltaError::ChainGap { block: b });
            }
            if !from_increment {
                stats.from_base += 1;
            }
        }
        Ok(stats)
    }
}

/// A page sink for [`ChainRestore`] that writes block `b` at offset `b × block size` of
/// `file` (a new, empty file: every block of the result is written, so it ends with the
/// right length).
pub fn seek_target<W: Write + Seek>(
    file: &mut W,
    block_size: BlockSize,
) -> impl FnMut(u32, &[u8]) -> io::Result<()> + '_ {
    let bs = block_size.get() as u64;
    move |block, page| {
        file.seek(SeekFrom::Start(u64::from(block) * bs))?;
        file.write_all(page)
    }
}

/// Restores a file in one sequential pass: `base` (the full copy in the oldest backup, or
/// `None` if the oldest increment's parent had no such file) and `increments`, **oldest
/// first**, merged block by block into `out`, each page written once. Every stream is
/// read to its end and checked (a restore that stops early would miss a damaged tail).
/// With no increments, the base is copied as it is (and the statistics count nothing).
pub fn merge_chain<B, R, W>(
    base: Option<B>,
    increments: &mut [IncrementReader<R>],
    out: &mut W,
) -> Result<RestoreStats, DeltaError>
where
    B: Read,
    R: Read,
    W: Write,
{
    let Some(newest) = increments.last().map(|i| *i.header()) else {
        if let Some(mut base) = base {
            io::copy(&mut base, out)?;
        }
        return Ok(RestoreStats::default());
    };
    let bs = newest.block_size;
    let mut min_blocks = u32::MAX;
    for (j, inc) in increments.iter().enumerate() {
        let h = inc.header();
        if h.block_size != bs {
            return Err(DeltaError::ChainBlockSize {
                expected: bs.get(),
                found: h.block_size.get(),
            });
        }
        min_blocks = min_blocks.min(h.blocks);
        if let Some(newer) = increments.get(j + 1).map(|n| *n.header()) {
            if newer.parent_blocks != h.blocks {
                return Err(DeltaError::ChainSizeMismatch {
                    expected: newer.parent_blocks,
                    found: h.blocks,
                });
            }
            if h.since > newer.since {
                return Err(DeltaError::ChainOrder {
                    older: h.since,
                    newer: newer.since,
                });
            }
        }
    }
    let base_blocks = increments[0].header().parent_blocks;
    let mut base = BaseStream {
        inner: base,
        block_size: bs,
        expected: base_blocks,
        read: 0,
    };
    let mut page = vec![0u8; bs.bytes()];
    let mut discard = vec![0u8; bs.bytes()];
    let mut stats = RestoreStats {
        blocks: newest.blocks,
        ..RestoreStats::default()
    };
    for block in 0..newest.blocks {
        let mut found = false;
        for inc in increments.iter_mut().rev() {
            if inc.peek_block()? == Some(block) {
                if found {
                    inc.skip_page()?;
                    stats.superseded += 1;
                } else {
                    inc.read_page(&mut page)?;
                    found = true;
                }
            }
        }
        if block < base_blocks {
            base.read_page(if found { &mut discard } else { &mut page })?;
        }
        if found {
            stats.from_increments += 1;
        } else if block < min_blocks && block < base_blocks {
            // Every version had the block and no increment changed it.
            stats.from_base += 1;
        } else {
            return Err(DeltaError::ChainGap { block });
        }
        out.write_all(&page)?;
    }
    for inc in increments.iter_mut() {
        while inc.peek_block()?.is_some() {
            inc.skip_page()?;
            stats.superseded += 1;
        }
    }
    base.finish(&mut discard)?;
    Ok(stats)
}

/// The base file of [`merge_chain`], read page by page and checked for its size.
struct BaseStream<B> {
    inner: Option<B>,
    block_size: BlockSize,
    expected: u32,
    read: u32,
}

impl<B: Read> BaseStream<B> {
    fn mismatch(&self, found: u64) -> DeltaError {
        DeltaError::BaseSizeMismatch {
            found,
            expected_blocks: self.expected,
            block_size: self.block_size.get(),
        }
    }

    fn read_page(&mut self, page: &mut [u8]) -> Result<(), DeltaError> {
        let done = u64::from(self.read) * self.block_size.get() as u64;
        let Some(inner) = self.inner.as_mut() else {
            return Err(self.mismatch(0));
        };
        let n = read_full(inner, page)?;
        if n < page.len() {
            return Err(self.mismatch(done + n as u64));
        }
        self.read += 1;
        Ok(())
    }

    /// Reads the rest of the base (blocks the file no longer has) and checks its size.
    fn finish(&mut self, page: &mut [u8]) -> Result<(), DeltaError> {
        while self.read < self.expected {
            self.read_page(page)?;
        }
        let done = u64::from(self.read) * self.block_size.get() as u64;
        if let Some(inner) = self.inner.as_mut() {
            let extra = drain(inner)?;
            if extra != 0 {
                return Err(self.mismatch(done + extra));
            }
        }
        Ok(())
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads a stream to its end; returns the bytes read.
fn drain<R: Read>(r: &mut R) -> io::Result<u64> {
    io::copy(r, &mut io::sink())
}
