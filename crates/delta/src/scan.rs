//! The page scan: which pages of a relation file an increment must store, and checksum
//! verification of every page read.
//!
//! A backup reads a relation file in large buffers (1 to 8 MiB) and hands each buffer to
//! a [`PageScanner`], which classifies every page ([`PageClass`]) and marks the pages to
//! store in a bitmap the [`IncrementWriter`](crate::IncrementWriter) consumes. A page is
//! stored when it is
//!
//! - [`Changed`](PageClass::Changed): `pd_lsn` at or after `since`, the parent backup's
//!   start LSN: PostgreSQL stamps every WAL-logged change with the LSN of its record, so a
//!   page whose LSN is older has not changed since the parent backup copied it;
//! - [`New`](PageClass::New): all zeros (an extended page not yet initialised, which has no
//!   LSN to go by);
//! - [`Unparseable`](PageClass::Unparseable): its header fails the checks PostgreSQL makes
//!   (`PageIsVerified`), or records another page size or layout version, so its LSN means
//!   nothing;
//! - [`Torn`](PageClass::Torn) or [`Corrupt`](PageClass::Corrupt): its checksum failed
//!   (see below);
//! - or at or past the end of the parent's version of the file (`parent_blocks`): a block
//!   the parent did not have is always stored, whatever its LSN, so that every block of
//!   the result has a source in the chain by construction.
//!
//! [`Unchanged`](PageClass::Unchanged) pages are left out.
//!
//! # Checksums
//!
//! With data checksums on, every page read is verified with
//! [`pg_checksum_page`](pgark_pg::pg_checksum_page) and its absolute block number
//! (segment number × `RELSEG_SIZE` + block in the file), except all-zero pages, which carry
//! none. A page whose checksum fails is read again ([`verify_page`], and the scanner's
//! re-read callback): if the bytes changed, the first read caught a write in progress
//! (a torn read): the page was changed after the backup started, so WAL replay rewrites it
//! from its full-page image, and it is [`Torn`](PageClass::Torn), not an error. If the
//! same bytes come back, the page on disk is [`Corrupt`](PageClass::Corrupt) and its block
//! is reported. Both are stored as read (the re-read image, for a torn page), so that the
//! backup is a faithful copy of the file.
//!
//! A page whose `pd_lsn` is at or after the backup's start LSN was written after the
//! backup started, so WAL replay rewrites it (from the full-page image that follows each
//! checkpoint) whatever the copy holds: a checksum failure there is no evidence of
//! corruption, and pg_basebackup does not even verify such pages. The scanner still
//! verifies and records them ([`BadPage::lsn`]); the backup decides with
//! [`checksum_failure_is_corruption`] once it knows where the WAL it needs ends.
//!
//! # Speed
//!
//! The scan reads the 24-byte header of each page and nothing else, except for pages
//! whose `pd_upper` is zero (checked all-zero, 64 bytes at a time) and, when verifying,
//! the checksum, which reads the whole page. It allocates nothing per page: the bitmap
//! and the re-read buffer are kept in the scanner across buffers. Scanners are
//! independent values (`Send`), one per file; scan files in parallel with one scanner each.

use std::io;

use pgark_pg::{pg_checksum_page, Lsn, PageHeader};

use crate::block::{bit_is_set, bitmap_words, set_bits};
use crate::{BlockSize, DeltaError};

/// What the scan found a page to be.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum PageClass {
    /// A valid page whose `pd_lsn` is before `since`: not changed since the parent backup
    /// started. Not stored (unless past the parent's end).
    Unchanged = 0,
    /// A valid page whose `pd_lsn` is at or after `since`. Stored.
    Changed = 1,
    /// All zeros: a new page (`PageIsNew`) never initialised. Stored.
    New = 2,
    /// A header that fails PostgreSQL's checks, a `pd_upper` of zero on a page that is not
    /// all zeros, or a foreign page size or layout version. Stored.
    Unparseable = 3,
    /// Checksum mismatch, and the page read differently the second time: a write in
    /// progress, which WAL replay repairs. Stored (the re-read image).
    Torn = 4,
    /// Checksum mismatch, and the same bytes read twice: corrupt on disk. Stored, and
    /// reported.
    Corrupt = 5,
}

impl PageClass {
    /// Whether an increment stores a page of this class.
    #[inline]
    pub fn is_stored(self) -> bool {
        self != PageClass::Unchanged
    }
}

/// Classifies one page by its header alone, without checksum verification: the rule
/// described in the [module documentation](self). `page` must be `block_size` bytes.
///
/// ```
/// use pgark_delta::{classify_page, BlockSize, PageClass};
/// use pgark_pg::Lsn;
///
/// assert_eq!(classify_page(&[0; 8192], BlockSize::DEFAULT, Lsn(0x100)), PageClass::New);
/// assert_eq!(classify_page(&[0xFF; 8192], BlockSize::DEFAULT, Lsn(0x100)), PageClass::Unparseable);
/// ```
///
/// # Panics
///
/// If `page.len()` is not `block_size`.
#[inline]
pub fn classify_page(page: &[u8], block_size: BlockSize, since: Lsn) -> PageClass {
    assert_eq!(page.len(), block_size.bytes(), "classify_page: page length");
    classify(page, block_size, block_size.pagesize_version(), since)
}

/// The page's LSN: the first 8 bytes, `xlogid` (high half) then `xrecoff` (low half), each
/// little-endian. `page` is at least a header long.
pub fn page_lsn(page: &[u8]) -> Lsn {
    let mut b = [0u8; 8];
    b.copy_from_slice(&page[..8]);
    Lsn(u64::from_le_bytes(b).rotate_left(32))
}

/// `pd_checksum`.
#[inline(always)]
fn page_checksum(page: &[u8]) -> u16 {
    u16::from_le_bytes([page[8], page[9]])
}

#[inline(always)]
fn classify(page: &[u8], block_size: BlockSize, pagesize_version: u16, since: Lsn) -> PageClass {
    let Ok(header) = PageHeader::parse(page) else {
        // Pages are at least 1 KiB: never shorter than a header.
        return PageClass::Unparseable;
    };
    if header.is_new() {
        if is_all_zeros(page) {
            PageClass::New
        } else {
            PageClass::Unparseable
        }
    } else if !header.is_sane(block_size.bytes()) || header.pagesize_version != pagesize_version {
        PageClass::Unparseable
    } else if header.lsn >= since {
        PageClass::Changed
    } else {
        PageClass::Unchanged
    }
}

/// Whether every byte is zero, 64 bytes at a time (vectorised; pages are multiples of 1 KiB).
#[inline]
pub(crate) fn is_all_zeros(page: &[u8]) -> bool {
    let mut chunks = page.chunks_exact(64);
    for chunk in &mut chunks {
        let mut acc = 0u64;
        for word in chunk.chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(word);
            acc |= u64::from_le_bytes(b);
        }
        if acc != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

/// The outcome of checking a page's checksum, re-reading it on a mismatch ([`verify_page`]).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Verification {
    /// The checksum matches, or the page is all zeros (new pages carry no checksum).
    Valid,
    /// The checksum did not match, and the re-read found different bytes (`replaced`: the
    /// re-read image is in the scratch buffer) or no page at all (`replaced` false: the
    /// file has shrunk). A write was in progress: WAL replay rewrites the page.
    Torn {
        /// Whether the scratch buffer holds the re-read page.
        replaced: bool,
    },
    /// The checksum did not match and the re-read returned the same bytes: the page is
    /// corrupt on disk.
    Corrupt {
        /// `pd_checksum` on the page.
        found: u16,
        /// The checksum of its contents.
        computed: u16,
    },
}

/// Verifies the checksum of `page`, block `blkno` of its relation fork (absolute:
/// segment number × `RELSEG_SIZE` + block in the file), and on a mismatch decides between
/// a torn read and corruption by reading the page again.
///
/// `reread` must fill its buffer (`scratch`, one page) with the same page read again from
/// the file, and return `Ok(false)` if the file no longer reaches that page. It is called
/// only on a mismatch. All-zero pages are valid without a checksum, as in PostgreSQL.
///
/// # Panics
///
/// If `page` or `scratch` is not a valid `BLCKSZ` long, or they differ in length.
pub fn verify_page<F>(page: &[u8], blkno: u32, scratch: &mut [u8], reread: F) -> io::Result<Verification>
where
    F: FnOnce(&mut [u8]) -> io::Result<bool>,
{
    assert_eq!(page.len(), scratch.len(), "verify_page: scratch length");
    if is_all_zeros(page) {
        return Ok(Verification::Valid);
    }
    let found = page_checksum(page);
    let computed = pg_checksum_page(page, blkno);
    if found == computed {
        return Ok(Verification::Valid);
    }
    decide_after_mismatch(page, found, computed, scratch, reread)
}

/// The re-read decision for a page whose checksum failed.
fn decide_after_mismatch<F>(
    page: &[u8],
    found: u16,
    computed: u16,
    scratch: &mut [u8],
    reread: F,
) -> io::Result<Verification>
where
    F: FnOnce(&mut [u8]) -> io::Result<bool>,
{
    if !reread(scratch)? {
        return Ok(Verification::Torn { replaced: false });
    }
    if scratch == page {
        Ok(Verification::Corrupt { found, computed })
    } else {
        Ok(Verification::Torn { replaced: true })
    }
}

/// What a [`PageScanner`] is told about the file it scans.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ScanOptions {
    /// The cluster's `BLCKSZ`.
    pub block_size: BlockSize,
    /// The parent backup's start LSN: pages whose `pd_lsn` is at or after it are stored.
    /// `Lsn(0)` stores every page (a full copy).
    pub since: Lsn,
    /// The parent's version of this file, in blocks (0 when the parent did not have the
    /// file). Blocks from here on are always stored.
    pub parent_blocks: u32,
    /// Verify data checksums (the cluster has them: `ControlFile::data_checksums`).
    pub verify_checksums: bool,
    /// The absolute block number of the file's first block: segment number ×
    /// `RELSEG_SIZE` ([`first_block_no`](crate::first_block_no)). Used for checksums only.
    pub first_block_no: u32,
}

/// Counts of what a scanner has seen, across all its buffers.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
pub struct ScanStats {
    /// Pages scanned.
    pub pages: u64,
    /// [`PageClass::Unchanged`] pages.
    pub unchanged: u64,
    /// [`PageClass::Changed`] pages.
    pub changed: u64,
    /// [`PageClass::New`] pages.
    pub new: u64,
    /// [`PageClass::Unparseable`] pages.
    pub unparseable: u64,
    /// [`PageClass::Torn`] pages.
    pub torn: u64,
    /// [`PageClass::Corrupt`] pages.
    pub corrupt: u64,
    /// Pages at or past the parent's end (stored whatever their class).
    pub past_parent: u64,
    /// Pages marked for storing.
    pub stored: u64,
    /// Pages whose checksum was computed.
    pub checksums_verified: u64,
}

impl ScanStats {
    fn count(&mut self, class: PageClass) {
        match class {
            PageClass::Unchanged => self.unchanged += 1,
            PageClass::Changed => self.changed += 1,
            PageClass::New => self.new += 1,
            PageClass::Unparseable => self.unparseable += 1,
            PageClass::Torn => self.torn += 1,
            PageClass::Corrupt => self.corrupt += 1,
        }
    }
}

/// Whether a page whose checksum failed with the same bytes twice is reported as corrupt,
/// by its `pd_lsn` (as read), the backup's start LSN and the end of the WAL the backup
/// needs (its stop LSN).
///
/// Mirrors pg_basebackup (`verify_page_checksum` in `backup/basebackup.c`) and
/// pgBackRest (its page checksum filter, whose `lsnLimit` is the start LSN): a page whose
/// LSN is at or after the start LSN was written during the backup and WAL replay rewrites
/// it, so it is not reported. Unlike them, a page whose LSN lies beyond the end of that
/// WAL is reported anyway: no WAL record the server had written explains it (a page is
/// written only after the WAL up to its LSN is flushed), so its LSN is itself damage, and
/// skipping it would let a corrupt page with a garbage LSN pass unnoticed.
///
/// ```
/// use pgark_delta::checksum_failure_is_corruption as reported;
/// use pgark_pg::Lsn;
///
/// let (start, end) = (Lsn(0x3000000), Lsn(0x3800000));
/// assert!(reported(Lsn(0x2FFFFFF), start, end)); // older than the backup: corrupt
/// assert!(!reported(Lsn(0x3000000), start, end)); // written during it: left to replay
/// assert!(!reported(Lsn(0x3800000), start, end));
/// assert!(reported(Lsn(0xDEAD_0000_0000), start, end)); // past anything written
/// ```
pub fn checksum_failure_is_corruption(page_lsn: Lsn, backup_start: Lsn, wal_end: Lsn) -> bool {
    page_lsn < backup_start || page_lsn > wal_end
}

/// A page whose checksum failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct BadPage {
    /// Its block number in the file (as `pg_basebackup` reports it); the absolute block
    /// number is [`ScanOptions::first_block_no`] plus this.
    pub block: u32,
    /// `pd_lsn` of the page as first read (see [`checksum_failure_is_corruption`]).
    pub lsn: Lsn,
    /// [`PageClass::Torn`] or [`PageClass::Corrupt`].
    pub class: PageClass,
    /// `pd_checksum` on the page as first read.
    pub found: u16,
    /// The checksum of its contents as first read.
    pub computed: u16,
}

/// One buffer's worth of scan result: which of its pages to store.
#[derive(Clone, Copy, Debug)]
pub struct ScannedChunk<'a> {
    first_block: u32,
    pages: u32,
    stored: &'a [u64],
}

impl ScannedChunk<'_> {
    /// The block number (in the file) of the buffer's first page.
    pub fn first_block(&self) -> u32 {
        self.first_block
    }

    /// Pages in the buffer.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// Whether page `i` of the buffer is to be stored.
    pub fn is_stored(&self, i: u32) -> bool {
        i < self.pages && bit_is_set(self.stored, i as usize)
    }

    /// The indexes (within the buffer) of the pages to store, ascending.
    pub fn stored_pages(&self) -> impl Iterator<Item = u32> + '_ {
        set_bits(self.stored).map(|i| i as u32)
    }

    /// How many pages to store.
    pub fn stored_count(&self) -> u32 {
        self.stored.iter().map(|w| w.count_ones()).sum()
    }

    /// The bitmap: bit `i` (word `i / 64`, bit `i % 64`) for page `i` of the buffer.
    pub fn bitmap(&self) -> &[u64] {
        self.stored
    }
}

/// Scans one relation file, buffer after buffer, in block order. See the
/// [module documentation](self).
///
/// ```
/// use pgark_delta::{BlockSize, PageScanner, ScanOptions};
/// use pgark_pg::Lsn;
///
/// let mut scanner = PageScanner::new(ScanOptions {
///     block_size: BlockSize::DEFAULT,
///     since: Lsn(0x0100_0000),
///     parent_blocks: 2,
///     verify_checksums: false,
///     first_block_no: 0,
/// });
/// let mut buf = vec![0u8; 2 * 8192]; // two new pages
/// let chunk = scanner.scan_in_memory(&mut buf)?;
/// assert_eq!(chunk.stored_pages().collect::<Vec<_>>(), [0, 1]);
/// assert_eq!(scanner.stats().new, 2);
/// # Ok::<(), pgark_delta::DeltaError>(())
/// ```
#[derive(Debug)]
pub struct PageScanner {
    opts: ScanOptions,
    pagesize_version: u16,
    next_block: u32,
    stored: Vec<u64>,
    stats: ScanStats,
    bad_pages: Vec<BadPage>,
    scratch: Vec<u8>,
}

impl PageScanner {
    /// A scanner for a file whose first buffer starts at block 0.
    pub fn new(opts: ScanOptions) -> Self {
        PageScanner {
            opts,
            pagesize_version: opts.block_size.pagesize_version(),
            next_block: 0,
            stored: Vec::new(),
            stats: ScanStats::default(),
            bad_pages: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// The options it was made with.
    pub fn options(&self) -> &ScanOptions {
        &self.opts
    }

    /// The block number (in the file) the next buffer starts at: blocks scanned so far.
    pub fn next_block(&self) -> u32 {
        self.next_block
    }

    /// Counts so far.
    pub fn stats(&self) -> &ScanStats {
        &self.stats
    }

    /// Pages whose checksum failed so far, torn or corrupt, in block order.
    pub fn bad_pages(&self) -> &[BadPage] {
        &self.bad_pages
    }

    /// The blocks (in the file) found corrupt so far.
    pub fn corrupt_blocks(&self) -> impl Iterator<Item = u32> + '_ {
        self.bad_pages
            .iter()
            .filter(|p| p.class == PageClass::Corrupt)
            .map(|p| p.block)
    }

    /// Scans the next buffer of whole pages, which continues where the previous one ended.
    ///
    /// With checksum verification on, a page whose checksum fails is read again through
    /// `reread(block_in_file, buf)` (see [`verify_page`]); a torn page's re-read image
    /// replaces it in `data`. Without verification `reread` is never called.
    pub fn scan<F>(&mut self, data: &mut [u8], reread: F) -> Result<ScannedChunk<'_>, DeltaError>
    where
        F: FnMut(u32, &mut [u8]) -> io::Result<bool>,
    {
        self.scan_with(data, Some(reread))
    }

    /// [`scan`](Self::scan) for data that cannot be read again (already in memory, e.g.
    /// when checking a stored copy): a re-read would return the same bytes, so a checksum
    /// mismatch is reported as corrupt.
    pub fn scan_in_memory(&mut self, data: &mut [u8]) -> Result<ScannedChunk<'_>, DeltaError> {
        self.scan_with(data, None::<fn(u32, &mut [u8]) -> io::Result<bool>>)
    }

    fn scan_with<F>(&mut self, data: &mut [u8], mut reread: Option<F>) -> Result<ScannedChunk<'_>, DeltaError>
    where
        F: FnMut(u32, &mut [u8]) -> io::Result<bool>,
    {
        let bs = self.opts.block_size.bytes();
        if data.len() % bs != 0 {
            return Err(DeltaError::PartialPage {
                len: data.len(),
                block_size: self.opts.block_size.get(),
            });
        }
        let first = self.next_block;
        let pages = data.len() / bs;
        let end = u64::from(first) + pages as u64;
        if end > u64::from(u32::MAX)
            || (self.opts.verify_checksums
                && pages > 0
                && u64::from(self.opts.first_block_no) + end - 1 > u64::from(u32::MAX))
        {
            return Err(DeltaError::BlockNumberOverflow {
                block: end,
                first_block_no: self.opts.first_block_no,
            });
        }
        let pages = pages as u32;
        self.stored.clear();
        self.stored.resize(bitmap_words(pages as usize), 0);
        if self.opts.verify_checksums {
            self.scan_verified(data, first, &mut reread)?;
        } else {
            self.scan_header_only(data);
        }
        self.mark_past_parent(first, pages);
        let stored: u32 = self.stored.iter().map(|w| w.count_ones()).sum();
        self.stats.stored += u64::from(stored);
        self.stats.pages += u64::from(pages);
        self.next_block = first + pages;
        Ok(ScannedChunk {
            first_block: first,
            pages,
            stored: &self.stored,
        })
    }

    /// The hot loop without checksums: headers only.
    fn scan_header_only(&mut self, data: &[u8]) {
        let bs = self.opts.block_size;
        let (psv, since) = (self.pagesize_version, self.opts.since);
        let mut counts = [0u64; 6];
        for (word, group) in self.stored.iter_mut().zip(data.chunks(64 * bs.bytes())) {
            let mut bits = 0u64;
            for (i, page) in group.chunks_exact(bs.bytes()).enumerate() {
                let class = classify(page, bs, psv, since);
                counts[class as usize] += 1;
                bits |= u64::from(class.is_stored()) << i;
            }
            *word = bits;
        }
        self.stats.unchanged += counts[PageClass::Unchanged as usize];
        self.stats.changed += counts[PageClass::Changed as usize];
        self.stats.new += counts[PageClass::New as usize];
        self.stats.unparseable += counts[PageClass::Unparseable as usize];
    }

    /// The loop with checksum verification and re-reads.
    fn scan_verified<F>(
        &mut self,
        data: &mut [u8],
        first: u32,
        reread: &mut Option<F>,
    ) -> Result<(), DeltaError>
    where
        F: FnMut(u32, &mut [u8]) -> io::Result<bool>,
    {
        let bs = self.opts.block_size;
        let (psv, since) = (self.pagesize_version, self.opts.since);
        if self.scratch.len() != bs.bytes() {
            self.scratch = vec![0; bs.bytes()];
        }
        for (i, page) in data.chunks_exact_mut(bs.bytes()).enumerate() {
            let block = first + i as u32;
            let mut class = classify(page, bs, psv, since);
            if class != PageClass::New {
                self.stats.checksums_verified += 1;
                let blkno = self.opts.first_block_no + block;
                let found = page_checksum(page);
                let computed = pg_checksum_page(page, blkno);
                if found != computed {
                    let verdict = match reread.as_mut() {
                        Some(reread) => {
                            decide_after_mismatch(page, found, computed, &mut self.scratch, |buf| {
                                reread(block, buf)
                            })?
                        }
                        None => Verification::Corrupt { found, computed },
                    };
                    class = match verdict {
                        Verification::Valid => unreachable!("a mismatch is never valid"),
                        Verification::Torn { replaced } => {
                            if replaced {
                                page.copy_from_slice(&self.scratch);
                            }
                            PageClass::Torn
                        }
                        Verification::Corrupt { .. } => PageClass::Corrupt,
                    };
                    self.bad_pages.push(BadPage {
                        block,
                        lsn: page_lsn(page),
                        class,
                        found,
                        computed,
                    });
                }
            }
            self.stats.count(class);
            if class.is_stored() {
                self.stored[i / 64] |= 1 << (i % 64);
            }
        }
        Ok(())
    }

    /// Marks the pages at or past the parent's end.
    fn mark_past_parent(&mut self, first: u32, pages: u32) {
        let from = self.opts.parent_blocks.saturating_sub(first);
        if from >= pages {
            return;
        }
        self.stats.past_parent += u64::from(pages - from);
        for i in from as usize..pages as usize {
            self.stored[i / 64] |= 1 << (i % 64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testpages::*;

    const BS: BlockSize = BlockSize::DEFAULT;

    #[test]
    fn lsn_matches_the_page_header() {
        let page = heap_page(8192, Lsn(0x16_B374_D848), 7);
        assert_eq!(page_lsn(&page), Lsn(0x16_B374_D848));
        assert_eq!(PageHeader::parse(&page).unwrap().lsn, page_lsn(&page));
    }

    #[test]
    fn classification_table() {
        let since = Lsn(0x2_0000_0000);
        let valid = |lsn| heap_page(8192, Lsn(lsn), 1);
        let with = |mut page: Vec<u8>, off: usize, bytes: &[u8]| {
            page[off..off + bytes.len()].copy_from_slice(bytes);
            page
        };
        let mut zero_but_one = vec![0u8; 8192];
        zero_but_one[8191] = 1;
        let cases: Vec<(&str, Vec<u8>, PageClass)> = vec![
            ("older LSN", valid(0x1_FFFF_FFFF), PageClass::Unchanged),
            ("LSN equal to since", valid(0x2_0000_0000), PageClass::Changed),
            ("newer LSN", valid(0x2_0000_0001), PageClass::Changed),
            ("newer xlogid only", valid(0x3_0000_0000), PageClass::Changed),
            ("LSN 0", valid(0), PageClass::Unchanged),
            ("all zeros", vec![0; 8192], PageClass::New),
            ("pd_upper 0, not all zeros", zero_but_one, PageClass::Unparseable),
            ("all ones", vec![0xFF; 8192], PageClass::Unparseable),
            (
                "undefined flag bit",
                with(valid(1), 10, &0x0008u16.to_le_bytes()),
                PageClass::Unparseable,
            ),
            (
                "pd_lower above pd_upper",
                with(valid(1), 12, &9000u16.to_le_bytes()),
                PageClass::Unparseable,
            ),
            (
                "pd_special past the page",
                with(valid(1), 16, &8200u16.to_le_bytes()),
                PageClass::Unparseable,
            ),
            (
                "4 KiB page size in an 8 KiB cluster",
                with(valid(1), 18, &(0x1000u16 | 4).to_le_bytes()),
                PageClass::Unparseable,
            ),
            (
                "layout version 3",
                with(valid(1), 18, &(0x2000u16 | 3).to_le_bytes()),
                PageClass::Unparseable,
            ),
            (
                "garbage header, new LSN",
                with(with(vec![0xFF; 8192], 0, &[0; 4]), 4, &[0xFF; 4]),
                PageClass::Unparseable,
            ),
        ];
        for (what, page, class) in &cases {
            assert_eq!(classify_page(page, BS, since), *class, "{what}");
        }
        // The scanner agrees, one buffer for all of them.
        let mut data: Vec<u8> = cases.iter().flat_map(|(_, p, _)| p.clone()).collect();
        let mut scanner = PageScanner::new(ScanOptions {
            block_size: BS,
            since,
            parent_blocks: u32::MAX,
            verify_checksums: false,
            first_block_no: 0,
        });
        let chunk = scanner.scan_in_memory(&mut data).unwrap();
        for (i, (what, _, class)) in cases.iter().enumerate() {
            assert_eq!(chunk.is_stored(i as u32), class.is_stored(), "{what}");
        }
        let stats = *scanner.stats();
        assert_eq!(stats.pages, cases.len() as u64);
        assert_eq!(stats.unchanged, 2);
        assert_eq!(stats.changed, 3);
        assert_eq!(stats.new, 1);
        assert_eq!(stats.unparseable, 8);
        assert_eq!(stats.stored, 12);
        assert_eq!(stats.checksums_verified, 0);
    }

    #[test]
    fn other_block_sizes() {
        for bytes in [1024u32, 2048, 4096, 16384, 32768] {
            let bs = BlockSize::new(bytes).unwrap();
            let page = heap_page(bytes as usize, Lsn(50), 3);
            assert_eq!(classify_page(&page, bs, Lsn(50)), PageClass::Changed);
            assert_eq!(classify_page(&page, bs, Lsn(51)), PageClass::Unchanged);
            // An 8 KiB header in another cluster is foreign.
            if bytes != 8192 {
                let mut foreign = page.clone();
                foreign[18..20].copy_from_slice(&(0x2000u16 | 4).to_le_bytes());
                assert_eq!(classify_page(&foreign, bs, Lsn(0)), PageClass::Unparseable);
            }
        }
    }

    #[test]
    fn buffers_continue_and_the_parents_end_is_stored() {
        let since = Lsn(1000);
        let mut file = Vec::new();
        for b in 0..200u32 {
            let lsn = if b % 10 == 0 { 2000 } else { 10 };
            file.extend(heap_page(8192, Lsn(lsn), b));
        }
        let mut scanner = PageScanner::new(ScanOptions {
            block_size: BS,
            since,
            parent_blocks: 150,
            verify_checksums: false,
            first_block_no: 0,
        });
        let mut stored = Vec::new();
        // Buffers of odd sizes: 7, 70, 123 pages.
        for range in [0..7usize, 7..77, 77..200] {
            let mut buf = file[range.start * 8192..range.end * 8192].to_vec();
            let chunk = scanner.scan_in_memory(&mut buf).unwrap();
            assert_eq!(chunk.first_block() as usize, range.start);
            assert_eq!(chunk.pages() as usize, range.len());
            assert_eq!(chunk.stored_count() as usize, chunk.stored_pages().count());
            stored.extend(chunk.stored_pages().map(|i| chunk.first_block() + i));
        }
        let want: Vec<u32> = (0..200).filter(|b| b % 10 == 0 || *b >= 150).collect();
        assert_eq!(stored, want);
        assert_eq!(scanner.next_block(), 200);
        assert_eq!(scanner.stats().past_parent, 50);
        assert_eq!(scanner.stats().changed, 20);
        assert_eq!(scanner.stats().stored, want.len() as u64);
        let mut odd = vec![0u8; 8191];
        assert!(matches!(
            scanner.scan_in_memory(&mut odd),
            Err(DeltaError::PartialPage { len: 8191, .. })
        ));
    }

    fn checksummed_file(first_block_no: u32, blocks: u32) -> Vec<u8> {
        let mut file = Vec::new();
        for b in 0..blocks {
            if b == 3 {
                // New pages carry no checksum.
                file.extend(vec![0; 8192]);
                continue;
            }
            let mut page = heap_page(8192, Lsn(u64::from(b) * 100), b);
            set_checksum(&mut page, first_block_no + b);
            file.extend(page);
        }
        file
    }

    #[test]
    fn checksums_use_the_absolute_block_number() {
        // Segment 2 of a relation with 1 GiB segments.
        let first = 2 * 131_072;
        let file = checksummed_file(first, 8);
        let opts = ScanOptions {
            block_size: BS,
            since: Lsn(450),
            parent_blocks: 8,
            verify_checksums: true,
            first_block_no: first,
        };
        let mut scanner = PageScanner::new(opts);
        let mut buf = file.clone();
        let chunk = scanner
            .scan(&mut buf, |_, _| panic!("no mismatch expected"))
            .unwrap();
        // Blocks 5, 6, 7 have LSN >= 450; block 3 is new.
        assert_eq!(chunk.stored_pages().collect::<Vec<_>>(), [3, 5, 6, 7]);
        assert_eq!(scanner.stats().checksums_verified, 7);
        assert!(scanner.bad_pages().is_empty());
        // The same bytes as segment 0: every non-new page fails, and reads the same twice.
        let mut scanner = PageScanner::new(ScanOptions {
            first_block_no: 0,
            ..opts
        });
        let mut buf = file.clone();
        let chunk = scanner.scan_in_memory(&mut buf).unwrap();
        assert_eq!(chunk.stored_count(), 8);
        assert_eq!(scanner.stats().corrupt, 7);
        assert_eq!(
            scanner.corrupt_blocks().collect::<Vec<_>>(),
            [0, 1, 2, 4, 5, 6, 7]
        );
    }

    #[test]
    fn torn_and_corrupt_pages() {
        let file = checksummed_file(0, 6);
        let mut data = file.clone();
        // Block 1: torn read, the second read gives the page as now written (valid).
        data[8192 + 5000] ^= 0xFF;
        // Block 2: corrupt on disk: the same bad bytes twice.
        data[2 * 8192 + 100] ^= 0x01;
        // Block 4: torn, and the file has shrunk by the time of the re-read.
        data[4 * 8192 + 8000] ^= 0x10;
        let bad_block2 = data[2 * 8192..3 * 8192].to_vec();
        let mut scanner = PageScanner::new(ScanOptions {
            block_size: BS,
            since: Lsn(10_000),
            parent_blocks: 6,
            verify_checksums: true,
            first_block_no: 0,
        });
        let mut rereads = Vec::new();
        let chunk = scanner
            .scan(&mut data, |block, buf| {
                rereads.push(block);
                match block {
                    1 => buf.copy_from_slice(&file[8192..2 * 8192]),
                    2 => buf.copy_from_slice(&bad_block2),
                    4 => return Ok(false),
                    _ => unreachable!(),
                }
                Ok(true)
            })
            .unwrap();
        // Only the failed pages and the new one are stored (all LSNs are older than since).
        assert_eq!(chunk.stored_pages().collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(rereads, [1, 2, 4]);
        let classes: Vec<(u32, PageClass)> = scanner.bad_pages().iter().map(|p| (p.block, p.class)).collect();
        assert_eq!(
            classes,
            [
                (1, PageClass::Torn),
                (2, PageClass::Corrupt),
                (4, PageClass::Torn)
            ]
        );
        assert_eq!(scanner.corrupt_blocks().collect::<Vec<_>>(), [2]);
        let bad = scanner.bad_pages()[1];
        assert_eq!(bad.computed, pg_checksum_page(&bad_block2, 2));
        assert_eq!(bad.found, page_checksum(&bad_block2));
        // The torn page was replaced by its re-read; the corrupt one kept as read.
        assert_eq!(&data[8192..2 * 8192], &file[8192..2 * 8192]);
        assert_eq!(&data[2 * 8192..3 * 8192], &bad_block2[..]);
        assert_eq!(scanner.stats().torn, 2);
        assert_eq!(scanner.stats().corrupt, 1);
        // A re-read error is the caller's I/O error.
        let mut scanner = PageScanner::new(*scanner.options());
        let mut data = file.clone();
        data[100] ^= 1;
        let err = scanner
            .scan(&mut data, |_, _| Err(io::Error::other("disk gone")))
            .unwrap_err();
        assert!(
            matches!(err, DeltaError::Io(ref e) if e.to_string() == "disk gone"),
            "{err}"
        );
    }

    /// Issue 12, item 6: a checksum failure on a page written during the
    /// backup (LSN from its start to its stop) is WAL replay's to repair;
    /// before the start, or past the end of the WAL the server wrote, it is
    /// corruption.
    #[test]
    fn checksum_failures_are_corruption_outside_the_backup_s_wal() {
        let (start, stop) = (Lsn(0x5_0000_0028), Lsn(0x5_0200_0000));
        let cases = [
            (Lsn(0), true),
            (Lsn(0x4_FFFF_FFFF), true),
            (Lsn(0x5_0000_0027), true),
            (start, false),
            (Lsn(0x5_0100_0000), false),
            (stop, false),
            (Lsn(0x5_0200_0001), true),
            (Lsn(u64::MAX), true),
        ];
        for (lsn, reported) in cases {
            assert_eq!(
                checksum_failure_is_corruption(lsn, start, stop),
                reported,
                "{lsn}"
            );
        }
        // The scanner records the LSN of each bad page for that decision.
        let mut data = checksummed_file(0, 3);
        data[8192 + 100] ^= 1;
        let mut scanner = PageScanner::new(ScanOptions {
            block_size: BS,
            since: Lsn(0),
            parent_blocks: 0,
            verify_checksums: true,
            first_block_no: 0,
        });
        scanner.scan_in_memory(&mut data).unwrap();
        let bad = scanner.bad_pages();
        assert_eq!(bad.len(), 1);
        assert_eq!((bad[0].block, bad[0].lsn), (1, page_lsn(&data[8192..2 * 8192])));
    }

    #[test]
    fn verify_page_decisions() {
        let mut page = heap_page(8192, Lsn(5), 9);
        set_checksum(&mut page, 77);
        let mut scratch = vec![0u8; 8192];
        let never = |_: &mut [u8]| -> io::Result<bool> { panic!("no re-read for a valid page") };
        assert_eq!(
            verify_page(&page, 77, &mut scratch, never).unwrap(),
            Verification::Valid
        );
        assert_eq!(
            verify_page(&[0; 8192], 77, &mut scratch, never).unwrap(),
            Verification::Valid
        );
        let stored = page_checksum(&page);
        let computed = pg_checksum_page(&page, 78);
        let same = page.clone();
        assert_eq!(
            verify_page(&page, 78, &mut scratch, |b| {
                b.copy_from_slice(&same);
                Ok(true)
            })
            .unwrap(),
            Verification::Corrupt {
                found: stored,
                computed
            }
        );
        assert_eq!(
            verify_page(&page, 78, &mut scratch, |b| {
                b.fill(0);
                Ok(true)
            })
            .unwrap(),
            Verification::Torn { replaced: true }
        );
        assert_eq!(
            verify_page(&page, 78, &mut scratch, |_| Ok(false)).unwrap(),
            Verification::Torn { replaced: false }
        );
    }

    #[test]
    fn block_number_overflow() {
        let mut scanner = PageScanner::new(ScanOptions {
            block_size: BS,
            since: Lsn(0),
            parent_blocks: 0,
            verify_checksums: true,
            first_block_no: u32::MAX - 1,
        });
        let mut two = vec![0u8; 2 * 8192];
        assert!(scanner.scan_in_memory(&mut two.clone()[..8192]).is_ok());
        assert!(matches!(
            scanner.scan_in_memory(&mut two),
            Err(DeltaError::BlockNumberOverflow { .. })
        ));
    }

    #[test]
    fn zero_check() {
        let mut page = vec![0u8; 1024];
        assert!(is_all_zeros(&page));
        for i in [0, 63, 64, 500, 1023] {
            page[i] = 1;
            assert!(!is_all_zeros(&page), "{i}");
            page[i] = 0;
        }
        assert!(is_all_zeros(&[0; 70]));
        let mut tail = [0u8; 66];
        tail[65] = 9;
        assert!(!is_all_zeros(&tail));
    }
}
