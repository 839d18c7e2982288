//! The increment format, version 1: the pages of one relation file that changed since the
//! parent backup, and the file's new size.
//!
//! All integers are little-endian.
//!
//! ```text
//! header (32 bytes)
//!    0   8  magic "PGARKINC"
//!    8   2  format version: 1
//!   10   2  flags: 0 (no flag is defined; a reader rejects any)
//!   12   4  block size in bytes: a power of two from 1024 to 32768
//!   16   4  blocks: the file's size in blocks after the change (N)
//!   20   4  parent blocks: the size of the parent's version of the file, in blocks (P)
//!   24   8  since: the LSN pages were compared with (the parent backup's start LSN)
//! groups: ceil(N / 64) of them, group g covering blocks 64g .. 64g+63
//!    0   8  bitmap: bit i (value 1 << i) set when block 64g+i is stored
//!    8   …  the stored blocks' page images, block size bytes each, ascending
//! trailer (12 bytes)
//!    0   4  stored pages: the number of bits set in all the bitmaps
//!    4   4  CRC-32C (Castagnoli) of every byte before this field
//!    8   4  end marker "PGIE"
//! ```
//!
//! Rules a reader enforces (and the writer guarantees):
//!
//! - no bit for a block at or past N;
//! - every block from P to N-1 is stored (a block the parent did not have must come from
//!   this increment; see [`PageScanner`](crate::PageScanner)), so that a chain always has a
//!   source for every block;
//! - the trailer's count equals the bits set, the CRC matches, and nothing follows the
//!   trailer.
//!
//! The CRC makes any damage an error, including a flipped bitmap bit that a later misread
//! happens to compensate; it is checked at the end, so a consumer treats the pages it got
//! as provisional until the reader reports the end (a restore fails as a whole). Stored
//! objects are checksummed again by the repository's codec; this one keeps an increment
//! self-checking wherever it travels.
//!
//! A version-1 reader rejects any other version, any flag and any other magic.
//!
//! # Why a bitmap, in groups
//!
//! Which blocks are stored is recorded explicitly: never inferred from a page's content
//! (an all-zero page is a real page, and a restore must not mistake it for "absent"). A
//! bitmap costs one bit per block (16 KiB per 1 GiB segment of 8 KiB blocks) whatever the
//! number of changes, where a sorted list of 32-bit block numbers costs 32 bits per stored
//! block: smaller only when under 1 block in 32 changed, and both are negligible next to
//! the 8 KiB pages. A bitmap cannot be unsorted or hold duplicates, so a whole class of
//! malformed input does not exist, and membership is a bit test.
//!
//! Splitting it into groups of 64 blocks, each followed by its pages, keeps both ends
//! streaming with bounded memory: the writer holds at most one group's pages (64 pages,
//! 512 KiB at 8 KiB) before it knows the group's bitmap, and the reader holds one 64-bit
//! word. N is in the header so that a restore knows the file's final size before its
//! first page; a backup takes N from the file's size when it starts reading, and pads a
//! file that shrank while being read with zero pages, as `pg_basebackup` does (WAL replay
//! then truncates it again).

use std::io::{self, Read, Write};

use pgark_pg::Lsn;

use crc32c::crc32c_append;

use crate::block::bitmap_words;
use crate::{BlockSize, DeltaError, ScannedChunk};

/// The first 8 bytes of an increment.
pub const MAGIC: [u8; 8] = *b"PGARKINC";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// The end marker of the trailer.
pub const END_MARKER: [u8; 4] = *b"PGIE";
/// Header size in bytes.
pub const HEADER_LEN: usize = 32;
/// Trailer size in bytes.
pub const TRAILER_LEN: usize = 12;
/// Blocks per bitmap group.
pub const GROUP_BLOCKS: u32 = 64;

/// What an increment's header records.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct IncrementHeader {
    /// The cluster's `BLCKSZ`.
    pub block_size: BlockSize,
    /// The file's size in blocks after the change.
    pub blocks: u32,
    /// The parent's version of the file, in blocks; every block from here to
    /// [`blocks`](Self::blocks) is stored.
    pub parent_blocks: u32,
    /// The LSN the pages were compared with: the parent backup's start LSN.
    pub since: Lsn,
}

impl IncrementHeader {
    /// The 32 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        // 10..12: flags, 0.
        b[12..16].copy_from_slice(&self.block_size.get().to_le_bytes());
        b[16..20].copy_from_slice(&self.blocks.to_le_bytes());
        b[20..24].copy_from_slice(&self.parent_blocks.to_le_bytes());
        b[24..32].copy_from_slice(&self.since.0.to_le_bytes());
        b
    }

    /// Parses and checks the 32 header bytes.
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Self, DeltaError> {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&b[0..8]);
        if magic != MAGIC {
            return Err(DeltaError::BadMagic { found: magic });
        }
        let version = u16_at(8);
        if version != FORMAT_VERSION {
            return Err(DeltaError::UnsupportedVersion(version));
        }
        let flags = u16_at(10);
        if flags != 0 {
            return Err(DeltaError::UnsupportedFlags(flags));
        }
        let mut since = [0u8; 8];
        since.copy_from_slice(&b[24..32]);
        Ok(IncrementHeader {
            block_size: BlockSize::new(u32_at(12))?,
            blocks: u32_at(16),
            parent_blocks: u32_at(20),
            since: Lsn(u64::from_le_bytes(since)),
        })
    }

    /// Groups in the body.
    fn groups(&self) -> u32 {
        self.blocks.div_ceil(GROUP_BLOCKS)
    }

    /// The bits group `g` must have set: blocks in `[parent_blocks, blocks)`.
    fn required_bits(&self, g: u32) -> u64 {
        let base = u64::from(g) * u64::from(GROUP_BLOCKS);
        let from = u64::from(self.parent_blocks).max(base);
        let to = u64::from(self.blocks).min(base + u64::from(GROUP_BLOCKS));
        if from >= to {
            0
        } else {
            range_mask((from - base) as u32, (to - base) as u32)
        }
    }

    /// The bits group `g` may have set: blocks below `blocks`.
    fn allowed_bits(&self, g: u32) -> u64 {
        let base = u64::from(g) * u64::from(GROUP_BLOCKS);
        let span = (u64::from(self.blocks) - base).min(u64::from(GROUP_BLOCKS)) as u32;
        range_mask(0, span)
    }
}

/// Bits `from..to` (0 ≤ from ≤ to ≤ 64).
fn range_mask(from: u32, to: u32) -> u64 {
    let upto = |n: u32| if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
    upto(to) & !upto(from)
}

/// Checks a group's bitmap against the header's rules.
fn check_group(header: &IncrementHeader, g: u32, bitmap: u64) -> Result<(), DeltaError> {
    let base = g * GROUP_BLOCKS;
    let past_end = bitmap & !header.allowed_bits(g);
    if past_end != 0 {
        return Err(DeltaError::BlockPastEnd {
            block: u64::from(base) + u64::from(past_end.trailing_zeros()),
            blocks: header.blocks,
        });
    }
    let missing = header.required_bits(g) & !bitmap;
    if missing != 0 {
        return Err(DeltaError::MissingNewBlock {
            block: base + missing.trailing_zeros(),
            parent_blocks: header.parent_blocks,
        });
    }
    Ok(())
}

/// Writes an increment as a stream: the header at once, then each group of 64 blocks as
/// soon as the pages pushed have passed it, then the trailer on [`finish`](Self::finish).
/// Holds at most one group's pages. After an error, drop it: the output is incomplete.
///
/// ```
/// use pgark_delta::{BlockSize, IncrementHeader, IncrementReader, IncrementWriter};
/// use pgark_pg::Lsn;
///
/// let header = IncrementHeader {
///     block_size: BlockSize::new(1024)?,
///     blocks: 3,
///     parent_blocks: 2,
///     since: Lsn(0x100),
/// };
/// let mut w = IncrementWriter::new(Vec::new(), header)?;
/// w.push_page(0, &[7; 1024])?;
/// w.push_page(2, &[0; 1024])?; // block 2 is new: it must be stored
/// let bytes = w.finish()?;
///
/// let mut r = IncrementReader::new(&bytes[..])?;
/// assert_eq!(*r.header(), header);
/// let mut page = [0u8; 1024];
/// assert_eq!(r.next_page(&mut page)?, Some(0));
/// assert_eq!(page, [7; 1024]);
/// assert_eq!(r.next_page(&mut page)?, Some(2));
/// assert_eq!(r.next_page(&mut page)?, None); // trailer checked
/// # Ok::<(), pgark_delta::DeltaError>(())
/// ```
#[derive(Debug)]
pub struct IncrementWriter<W: Write> {
    inner: W,
    header: IncrementHeader,
    /// The group being filled.
    group: u32,
    bits: u64,
    pending: Vec<u8>,
    /// The smallest block that may be pushed next.
    next: u32,
    stored: u32,
    crc: u32,
}

impl<W: Write> IncrementWriter<W> {
    /// Writes the header and returns the writer.
    pub fn new(mut inner: W, header: IncrementHeader) -> Result<Self, DeltaError> {
        let encoded = header.encode();
        inner.write_all(&encoded)?;
        let group_bytes = (GROUP_BLOCKS as usize) * header.block_size.bytes();
        let pending_cap = group_bytes.min(header.blocks as usize * header.block_size.bytes());
        Ok(IncrementWriter {
            inner,
            header,
            group: 0,
            bits: 0,
            pending: Vec::with_capacity(pending_cap),
            next: 0,
            stored: 0,
            crc: crc32c_append(0, &encoded),
        })
    }

    /// The header written.
    pub fn header(&self) -> &IncrementHeader {
        &self.header
    }

    /// Pages stored so far.
    pub fn stored(&self) -> u32 {
        self.stored
    }

    /// Stores the image of block `block`. Blocks must come in ascending order, below the
    /// header's `blocks`; those never pushed are not stored.
    pub fn push_page(&mut self, block: u32, page: &[u8]) -> Result<(), DeltaError> {
        if page.len() != self.header.block_size.bytes() {
            return Err(DeltaError::WrongPageLength {
                len: page.len(),
                block_size: self.header.block_size.get(),
            });
        }
        if block < self.next || block >= self.header.blocks {
            return Err(DeltaError::BlockOutOfOrder {
                block,
                next: self.next,
                blocks: self.header.blocks,
            });
        }
        let g = block / GROUP_BLOCKS;
        while self.group < g {
            self.flush_group()?;
        }
        self.bits |= 1 << (block % GROUP_BLOCKS);
        self.pending.extend_from_slice(page);
        self.next = block + 1;
        self.stored += 1;
        Ok(())
    }

    /// Stores the pages a [`PageScanner`](crate::PageScanner) marked in `chunk`; `data` is
    /// the buffer it scanned.
    pub fn write_chunk(&mut self, data: &[u8], chunk: &ScannedChunk<'_>) -> Result<(), DeltaError> {
        let bs = self.header.block_size.bytes();
        if data.len() != chunk.pages() as usize * bs {
            return Err(DeltaError::PartialPage {
                len: data.len(),
                block_size: self.header.block_size.get(),
            });
        }
        for i in chunk.stored_pages() {
            let off = i as usize * bs;
            self.push_page(chunk.first_block() + i, &data[off..off + bs])?;
        }
        Ok(())
    }

    /// Writes the current group and moves to the next.
    fn flush_group(&mut self) -> Result<(), DeltaError> {
        check_group(&self.header, self.group, self.bits)?;
        let bitmap = self.bits.to_le_bytes();
        self.inner.write_all(&bitmap)?;
        self.inner.write_all(&self.pending)?;
        self.crc = crc32c_append(self.crc, &bitmap);
        self.crc = crc32c_append(self.crc, &self.pending);
        self.pending.clear();
        self.bits = 0;
        self.group += 1;
        Ok(())
    }

    /// Writes the remaining groups and the trailer, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W, DeltaError> {
        while self.group < self.header.groups() {
            self.flush_group()?;
        }
        let mut trailer = [0u8; TRAILER_LEN];
        trailer[0..4].copy_from_slice(&self.stored.to_le_bytes());
        let crc = crc32c_append(self.crc, &trailer[0..4]);
        trailer[4..8].copy_from_slice(&crc.to_le_bytes());
        trailer[8..12].copy_from_slice(&END_MARKER);
        self.inner.write_all(&trailer)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

/// Reads an increment as a stream, checking every rule of the format; memory use is
/// constant (no allocation). Give it a buffered reader.
///
/// Walk it with [`peek_block`](Self::peek_block) then [`read_page`](Self::read_page) or
/// [`skip_page`](Self::skip_page), or with [`next_page`](Self::next_page). `None` from
/// either means the trailer has been read and checked and the stream has ended.
#[derive(Debug)]
pub struct IncrementReader<R: Read> {
    inner: R,
    header: IncrementHeader,
    /// Groups read so far.
    groups_read: u32,
    /// Blocks of the current group not yet read or skipped.
    bits: u64,
    /// The current group's first block.
    group_base: u32,
    stored_seen: u32,
    finished: bool,
    crc: u32,
}

impl<R: Read> IncrementReader<R> {
    /// Reads and checks the header.
    pub fn new(mut inner: R) -> Result<Self, DeltaError> {
        let mut b = [0u8; HEADER_LEN];
        read_exact(&mut inner, &mut b, "header")?;
        let header = IncrementHeader::decode(&b)?;
        Ok(IncrementReader {
            inner,
            header,
            groups_read: 0,
            bits: 0,
            group_base: 0,
            stored_seen: 0,
            finished: false,
            crc: crc32c_append(0, &b),
        })
    }

    /// The header.
    pub fn header(&self) -> &IncrementHeader {
        &self.header
    }

    /// Pages read or skipped so far.
    pub fn pages_seen(&self) -> u32 {
        self.stored_seen
    }

    /// Whether the trailer has been read and checked.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    /// The block of the next stored page, or `None` at the end (after checking the trailer
    /// and that no data follows it).
    pub fn peek_block(&mut self) -> Result<Option<u32>, DeltaError> {
        loop {
            if self.bits != 0 {
                return Ok(Some(self.group_base + self.bits.trailing_zeros()));
            }
            if self.finished {
                return Ok(None);
            }
            if self.groups_read == self.header.groups() {
                self.read_trailer()?;
                self.finished = true;
                return Ok(None);
            }
            let mut b = [0u8; 8];
            read_exact(&mut self.inner, &mut b, "group bitmap")?;
            self.crc = crc32c_append(self.crc, &b);
            let bitmap = u64::from_le_bytes(b);
            check_group(&self.header, self.groups_read, bitmap)?;
            self.group_base = self.groups_read * GROUP_BLOCKS;
            self.bits = bitmap;
            self.groups_read += 1;
        }
    }

    /// Reads the next stored page into `page` (one block) and returns its block.
    pub fn read_page(&mut self, page: &mut [u8]) -> Result<u32, DeltaError> {
        if page.len() != self.header.block_size.bytes() {
            return Err(DeltaError::WrongPageLength {
                len: page.len(),
                block_size: self.header.block_size.get(),
            });
        }
        let block = self.peek_block()?.ok_or(DeltaError::NoPageLeft)?;
        read_exact(&mut self.inner, page, "page image")?;
        self.crc = crc32c_append(self.crc, page);
        self.consume();
        Ok(block)
    }

    /// Skips the next stored page and returns its block.
    pub fn skip_page(&mut self) -> Result<u32, DeltaError> {
        let block = self.peek_block()?.ok_or(DeltaError::NoPageLeft)?;
        // Read through a small stack buffer: the bytes still go into the CRC.
        let mut buf = [0u8; 4096];
        let mut left = self.header.block_size.bytes();
        while left > 0 {
            let n = left.min(buf.len());
            read_exact(&mut self.inner, &mut buf[..n], "page image")?;
            self.crc = crc32c_append(self.crc, &buf[..n]);
            left -= n;
        }
        self.consume();
        Ok(block)
    }

    /// Reads the next stored page, or returns `None` at the checked end.
    pub fn next_page(&mut self, page: &mut [u8]) -> Result<Option<u32>, DeltaError> {
        match self.peek_block()? {
            Some(_) => self.read_page(page).map(Some),
            None => Ok(None),
        }
    }

    /// Skips every remaining page and checks the trailer.
    pub fn skip_to_end(&mut self) -> Result<(), DeltaError> {
        while self.peek_block()?.is_some() {
            self.skip_page()?;
        }
        Ok(())
    }

    fn consume(&mut self) {
        self.bits &= self.bits - 1;
        self.stored_seen += 1;
    }

    fn read_trailer(&mut self) -> Result<(), DeltaError> {
        let mut t = [0u8; TRAILER_LEN];
        read_exact(&mut self.inner, &mut t, "trailer")?;
        let mut end = [0u8; 4];
        end.copy_from_slice(&t[8..12]);
        if end != END_MARKER {
            return Err(DeltaError::BadTrailer { found: end });
        }
        let count = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        if count != self.stored_seen {
            return Err(DeltaError::StoredCountMismatch {
                trailer: count,
                bitmaps: self.stored_seen,
            });
        }
        let stored_crc = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        let computed = crc32c_append(self.crc, &t[0..4]);
        if stored_crc != computed {
            return Err(DeltaError::CrcMismatch {
                stored: stored_crc,
                computed,
            });
        }
        let mut one = [0u8; 1];
        loop {
            match self.inner.read(&mut one) {
                Ok(0) => return Ok(()),
                Ok(_) => return Err(DeltaError::TrailingData),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// `read_exact`, with the end of the stream reported as a truncated increment.
fn read_exact<R: Read>(r: &mut R, buf: &mut [u8], what: &'static str) -> Result<(), DeltaError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            DeltaError::Truncated(what)
        } else {
            DeltaError::Io(e)
        }
    })
}

/// The size in bytes of an increment with `stored` pages (for planning and tests).
pub fn encoded_len(header: &IncrementHeader, stored: u32) -> u64 {
    HEADER_LEN as u64
        + bitmap_words(header.blocks as usize) as u64 * 8
        + u64::from(stored) * u64::from(header.block_size.get())
        + TRAILER_LEN as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(blocks: u32, parent_blocks: u32) -> IncrementHeader {
        IncrementHeader {
            block_size: BlockSize::new(1024).unwrap(),
            blocks,
            parent_blocks,
            since: Lsn(0x1_0000_0028),
        }
    }

    fn page(block: u32) -> Vec<u8> {
        vec![(block % 251) as u8 + 1; 1024]
    }

    fn encode(h: IncrementHeader, blocks: &[u32]) -> Vec<u8> {
        let mut w = IncrementWriter::new(Vec::new(), h).unwrap();
        for &b in blocks {
            w.push_page(b, &page(b)).unwrap();
        }
        w.finish().unwrap()
    }

    type Decoded = (IncrementHeader, Vec<(u32, Vec<u8>)>);

    fn decode(bytes: &[u8]) -> Result<Decoded, DeltaError> {
        let mut r = IncrementReader::new(bytes)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; r.header().block_size.bytes()];
        while let Some(b) = r.next_page(&mut buf)? {
            out.push((b, buf.clone()));
        }
        Ok((*r.header(), out))
    }

    #[test]
    fn layout_is_as_documented() {
        let h = header(130, 129);
        let bytes = encode(h, &[1, 64, 129]);
        assert_eq!(bytes.len() as u64, encoded_len(&h, 3));
        assert_eq!(&bytes[0..8], b"PGARKINC");
        assert_eq!(&bytes[8..10], &[1, 0]);
        assert_eq!(&bytes[10..12], &[0, 0]);
        assert_eq!(&bytes[12..16], &1024u32.to_le_bytes());
        assert_eq!(&bytes[16..20], &130u32.to_le_bytes());
        assert_eq!(&bytes[20..24], &129u32.to_le_bytes());
        assert_eq!(&bytes[24..32], &0x1_0000_0028u64.to_le_bytes());
        // Group 0: block 1.
        assert_eq!(&bytes[32..40], &2u64.to_le_bytes());
        assert_eq!(&bytes[40..1064], &page(1)[..]);
        // Group 1: block 64.
        assert_eq!(&bytes[1064..1072], &1u64.to_le_bytes());
        // Group 2: block 129 (blocks 128, 129 exist).
        let g2 = 1072 + 1024;
        assert_eq!(&bytes[g2..g2 + 8], &2u64.to_le_bytes());
        let t = g2 + 8 + 1024;
        assert_eq!(&bytes[t..t + 4], &3u32.to_le_bytes());
        assert_eq!(
            &bytes[t + 4..t + 8],
            &crc32c::crc32c(&bytes[..t + 4]).to_le_bytes()
        );
        assert_eq!(&bytes[t + 8..], b"PGIE");
        let (got, pages) = decode(&bytes).unwrap();
        assert_eq!(got, h);
        let blocks: Vec<u32> = pages.iter().map(|p| p.0).collect();
        assert_eq!(blocks, [1, 64, 129]);
        assert!(pages.iter().all(|(b, p)| *p == page(*b)));
    }

    #[test]
    fn empty_and_zero_length_files() {
        for (blocks, parent) in [(0, 0), (0, 1000), (64, 64), (65, 100)] {
            let h = header(blocks, parent);
            let bytes = encode(h, &[]);
            assert_eq!(bytes.len() as u64, encoded_len(&h, 0));
            assert_eq!(decode(&bytes).unwrap(), (h, vec![]));
        }
    }

    #[test]
    fn writer_rejects_misuse() {
        let mut w = IncrementWriter::new(Vec::new(), header(10, 5)).unwrap();
        w.push_page(3, &page(3)).unwrap();
        assert!(matches!(
            w.push_page(3, &page(3)),
            Err(DeltaError::BlockOutOfOrder {
                block: 3,
                next: 4,
                blocks: 10
            })
        ));
        assert!(matches!(
            w.push_page(10, &page(10)),
            Err(DeltaError::BlockOutOfOrder { .. })
        ));
        assert!(matches!(
            w.push_page(4, &[0; 100]),
            Err(DeltaError::WrongPageLength { len: 100, .. })
        ));
        // Blocks 5..9 are past the parent's end: leaving them out is refused.
        w.push_page(5, &page(5)).unwrap();
        assert!(matches!(
            w.finish(),
            Err(DeltaError::MissingNewBlock {
                block: 6,
                parent_blocks: 5
            })
        ));
    }

    #[test]
    fn reader_api() {
        let bytes = encode(header(200, 200), &[0, 5, 63, 64, 199]);
        let mut r = IncrementReader::new(&bytes[..]).unwrap();
        let mut buf = vec![0u8; 1024];
        assert_eq!(r.peek_block().unwrap(), Some(0));
        assert_eq!(r.peek_block().unwrap(), Some(0));
        assert_eq!(r.skip_page().unwrap(), 0);
        assert_eq!(r.read_page(&mut buf).unwrap(), 5);
        assert_eq!(buf, page(5));
        assert!(matches!(
            r.read_page(&mut [0; 10]),
            Err(DeltaError::WrongPageLength { .. })
        ));
        assert_eq!(r.skip_page().unwrap(), 63);
        assert_eq!(r.peek_block().unwrap(), Some(64));
        r.skip_to_end().unwrap();
        assert!(r.is_finished());
        assert_eq!(r.pages_seen(), 5);
        assert_eq!(r.peek_block().unwrap(), None);
        assert!(matches!(r.skip_page(), Err(DeltaError::NoPageLeft)));
        assert!(matches!(r.read_page(&mut buf), Err(DeltaError::NoPageLeft)));
        assert!(r.into_inner().is_empty());
    }

    /// Every rule of the format, broken one at a time.
    #[test]
    fn reader_rejects_each_violation() {
        let h = header(100, 90);
        let good = encode(h, &(90..100).chain([3]).collect::<Vec<_>>().tap_sort());
        decode(&good).unwrap();
        let set = |mut b: Vec<u8>, off: usize, bytes: &[u8]| {
            b[off..off + bytes.len()].copy_from_slice(bytes);
            b
        };
        let group1 = 32 + 8 + 1024; // group 0 holds block 3
        type Check = fn(&DeltaError) -> bool;
        let cases: Vec<(&str, Vec<u8>, Check)> = vec![
            ("empty", vec![], |e| matches!(e, DeltaError::Truncated("header"))),
            ("short header", good[..31].to_vec(), |e| {
                matches!(e, DeltaError::Truncated("header"))
            }),
            ("magic", set(good.clone(), 0, b"PGARKINX"), |e| {
                matches!(e, DeltaError::BadMagic { .. })
            }),
            ("version 2", set(good.clone(), 8, &[2, 0]), |e| {
                matches!(e, DeltaError::UnsupportedVersion(2))
            }),
            ("version 0", set(good.clone(), 8, &[0, 0]), |e| {
                matches!(e, DeltaError::UnsupportedVersion(0))
            }),
            ("flags", set(good.clone(), 10, &[1, 0]), |e| {
                matches!(e, DeltaError::UnsupportedFlags(1))
            }),
            (
                "block size 1000",
                set(good.clone(), 12, &1000u32.to_le_bytes()),
                |e| matches!(e, DeltaError::InvalidBlockSize(1000)),
            ),
            (
                "block size 64 KiB",
                set(good.clone(), 12, &65536u32.to_le_bytes()),
                |e| matches!(e, DeltaError::InvalidBlockSize(65536)),
            ),
            (
                "block size 512",
                set(good.clone(), 12, &512u32.to_le_bytes()),
                |e| matches!(e, DeltaError::InvalidBlockSize(512)),
            ),
            // 99 blocks: block 99 (group 1, bit 35) is past the end.
            (
                "bit past the end",
                set(good.clone(), 16, &99u32.to_le_bytes()),
                |e| {
                    matches!(
                        e,
                        DeltaError::BlockPastEnd {
                            block: 99,
                            blocks: 99
                        }
                    )
                },
            ),
            (
                "new block missing",
                set(good.clone(), 20, &2u32.to_le_bytes()),
                |e| {
                    matches!(
                        e,
                        DeltaError::MissingNewBlock {
                            block: 2,
                            parent_blocks: 2
                        }
                    )
                },
            ),
            (
                "bitmap with an extra bit",
                set(good.clone(), 32, &9u64.to_le_bytes()),
                |e| {
                    // The extra page shifts everything: some later check fails.
                    !matches!(e, DeltaError::Io(_))
                },
            ),
            (
                "bitmap missing a bit",
                set(good.clone(), group1, &0u64.to_le_bytes()),
                |e| matches!(e, DeltaError::MissingNewBlock { block: 90, .. }),
            ),
            ("truncated in a page", good[..good.len() - 20].to_vec(), |e| {
                matches!(e, DeltaError::Truncated("page image"))
            }),
            ("truncated in the trailer", good[..good.len() - 3].to_vec(), |e| {
                matches!(e, DeltaError::Truncated("trailer"))
            }),
            ("no trailer", good[..good.len() - 12].to_vec(), |e| {
                matches!(e, DeltaError::Truncated("trailer"))
            }),
            (
                "count",
                set(good.clone(), good.len() - 12, &10u32.to_le_bytes()),
                |e| {
                    matches!(
                        e,
                        DeltaError::StoredCountMismatch {
                            trailer: 10,
                            bitmaps: 11
                        }
                    )
                },
            ),
            ("end marker", set(good.clone(), good.len() - 4, b"PGIF"), |e| {
                matches!(e, DeltaError::BadTrailer { .. })
            }),
            ("CRC", set(good.clone(), good.len() - 8, &[0; 4]), |e| {
                matches!(e, DeltaError::CrcMismatch { .. })
            }),
            ("a page byte", set(good.clone(), 32 + 8 + 7, &[0xEE]), |e| {
                matches!(e, DeltaError::CrcMismatch { .. })
            }),
            ("since", set(good.clone(), 24, &[0xEE]), |e| {
                matches!(e, DeltaError::CrcMismatch { .. })
            }),
            ("trailing byte", [good.clone(), vec![0]].concat(), |e| {
                matches!(e, DeltaError::TrailingData)
            }),
        ];
        for (what, bytes, check) in cases {
            let err = decode(&bytes).expect_err(what);
            assert!(check(&err), "{what}: {err}");
            // Every error has a message.
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn truncated_at_every_length() {
        let good = encode(header(70, 68), &[0, 68, 69]);
        for len in 0..good.len() {
            assert!(decode(&good[..len]).is_err(), "length {len}");
        }
    }

    #[test]
    fn largest_header_values() {
        let h = IncrementHeader {
            block_size: BlockSize::new(32768).unwrap(),
            blocks: u32::MAX,
            parent_blocks: u32::MAX,
            since: Lsn(u64::MAX),
        };
        assert_eq!(IncrementHeader::decode(&h.encode()).unwrap(), h);
        assert_eq!(h.groups(), u32::MAX.div_ceil(64));
        // The last group covers blocks up to u32::MAX - 1.
        let last = h.groups() - 1;
        assert_eq!(h.allowed_bits(last), (1u64 << 63) - 1);
        assert_eq!(h.required_bits(last), 0);
        assert_eq!(range_mask(0, 64), u64::MAX);
        assert_eq!(range_mask(3, 5), 0b11000);
        assert_eq!(range_mask(64, 64), 0);
    }

    trait TapSort {
        fn tap_sort(self) -> Self;
    }
    impl TapSort for Vec<u32> {
        fn tap_sort(mut self) -> Self {
            self.sort_unstable();
            self
        }
    }
}
