//! One file (or piece of a file) of a base backup as an entry of a part's
//! tar stream, read straight into the compressor's buffer.
//!
//! The tar crate writes the entry's header (with a GNU long-name entry
//! before it when the name needs one); the data is then read from the file
//! in place into the object writer's buffer
//! ([`ObjectWriter::write_in_place`]: for zstd, the frame being gathered),
//! where its pages' checksums are verified and it is checksummed
//! (CRC-32C) and hashed while it is in the cache. For zstd no copy of the
//! data is made between the kernel's and the compressor's (a torn page is
//! replaced by its re-read); the other codecs copy it once from a 256 KiB
//! buffer, as they would anyway. Increments of delta backups are read from
//! their own buffer into the frame the same way ([`append_read`]: one copy,
//! in large slices). The bytes are exactly those
//! `tar::Builder::append_data` would write (a test holds it to that).

use crate::delta_push;
use crate::EngineError;
use pgark_codec::ObjectWriter;
use pgark_delta::BlockSize;
use pgark_pg::Lsn;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The most read from a file at a time: small enough that what was read
/// is still in the cache when it is verified, checksummed and hashed.
const READ_CHUNK: usize = 256 << 10;

/// Tar's record: every entry's data is padded with zeros to a multiple.
const RECORD: u64 = 512;

/// Yields exactly `remaining` bytes of a file from `offset`, a file that
/// may change while it is read (an online backup): bytes past the starting
/// size are left for WAL replay, and a file that shrank (or vanished:
/// `file` is `None`) is padded with zeros, as pg_basebackup does. With
/// `verify`, checks the data checksum of every page (re-reading a page
/// that fails: a changed page was a torn read, stored as re-read; the same
/// bytes again are a corrupt page, reported). Checksums what it yields
/// (CRC-32C).
pub(crate) struct FileSource<'a> {
    pub file: Option<&'a std::fs::File>,
    pub path: &'a Path,
    pub offset: u64,
    pub remaining: u64,
    /// The block size, when pages are verified (`offset` must then be a
    /// multiple of it).
    pub verify: Option<BlockSize>,
    /// The absolute block number of the file's first block.
    pub first_block_no: u32,
    /// Blocks (in the file) that failed their checksum twice alike, with
    /// their `pd_lsn`.
    pub corrupt: Vec<(u32, Lsn)>,
    pub crc: u32,
    /// One page, for re-reads.
    scratch: Vec<u8>,
}

impl FileSource<'_> {
    /// A source with nothing verified or found yet.
    pub(crate) fn new<'a>(
        file: Option<&'a std::fs::File>,
        path: &'a Path,
        offset: u64,
        len: u64,
        verify: Option<BlockSize>,
        first_block_no: u32,
    ) -> FileSource<'a> {
        FileSource {
            file,
            path,
            offset,
            remaining: len,
            verify,
            first_block_no,
            corrupt: Vec::new(),
            crc: 0,
            scratch: Vec::new(),
        }
    }

    /// Fills the start of `out` with the next bytes and returns how many:
    /// all of `out` or all that is left, whichever is less, rounded down to
    /// whole pages when verifying (`out` must then hold a page, or all that
    /// is left).
    fn read_into(&mut self, out: &mut [u8]) -> Result<usize, EngineError> {
        let mut want = out
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if let Some(bs) = self.verify {
            if (want as u64) < self.remaining {
                want -= want % bs.bytes();
            }
        }
        if want == 0 {
            return Ok(0);
        }
        let data = &mut out[..want];
        match self.file {
            Some(file) => delta_push::read_full_at(file, self.path, data, self.offset)?,
            None => data.fill(0),
        }
        if let (Some(bs), Some(file)) = (self.verify, self.file) {
            self.verify_pages(data, bs, file)?;
        }
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.offset += want as u64;
        self.remaining -= want as u64;
        Ok(want)
    }

    /// Verifies the whole pages of `data`, read from `self.offset`.
    fn verify_pages(
        &mut self,
        data: &mut [u8],
        bs: BlockSize,
        file: &std::fs::File,
    ) -> Result<(), EngineError> {
        let bsz = bs.bytes();
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.resize(bsz, 0);
        let verified = self.verify_each(data, bsz, file, &mut scratch);
        self.scratch = scratch;
        verified
    }

    fn verify_each(
        &mut self,
        data: &mut [u8],
        bsz: usize,
        file: &std::fs::File,
        scratch: &mut [u8],
    ) -> Result<(), EngineError> {
        for (i, page) in data.chunks_exact_mut(bsz).enumerate() {
            let at = self.offset + (i * bsz) as u64;
            let block = (at / bsz as u64) as u32;
            let blkno = self.first_block_no.wrapping_add(block);
            let verdict = pgark_delta::verify_page(page, blkno, scratch, |s| {
                let mut got = 0;
                while got < s.len() {
                    match file.read_at(&mut s[got..], at + got as u64) {
                        Ok(0) => return Ok(false),
                        Ok(n) => got += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(true)
            })
            .map_err(|e| EngineError::local_io("cannot read", self.path, e))?;
            match verdict {
                pgark_delta::Verification::Valid => {}
                pgark_delta::Verification::Torn { replaced } => {
                    if replaced {
                        page.copy_from_slice(scratch);
                    }
                }
                pgark_delta::Verification::Corrupt { .. } => {
                    self.corrupt.push((block, pgark_delta::page_lsn(page)))
                }
            }
        }
        Ok(())
    }
}

/// Appends an entry named `name` whose data is all `source` yields
/// (`header`'s size must be `source.remaining`). A failure of the source
/// is returned as it came; one of the writer as `broken` makes it. Either
/// way the part is unusable and must be discarded.
pub(crate) fn append_file<W: Write>(
    tar: &mut tar::Builder<ObjectWriter<W>>,
    header: &mut tar::Header,
    name: &str,
    source: &mut FileSource<'_>,
    broken: impl Fn(io::Error) -> EngineError,
) -> Result<(), EngineError> {
    let len = source.remaining;
    let min = source.verify.map_or(1, |bs| bs.bytes());
    let mut failed = None;
    let done = append_entry(tar, header, name, len, min, |out| {
        source.read_into(out).map_err(|e| {
            let message = e.to_string();
            failed = Some(e);
            io::Error::other(message)
        })
    });
    match (failed, done) {
        (Some(e), _) => Err(e),
        (None, done) => done.map_err(broken),
    }
}

/// Appends an entry named `name` of `len` bytes read from `source` (in
/// place into the codec's buffer, as [`append_file`] does), which must
/// then be at its end: fails if the source ends early or has more (the
/// entry is then cut short or its bytes do not all fit: the part must be
/// discarded).
pub(crate) fn append_read<W: Write>(
    tar: &mut tar::Builder<ObjectWriter<W>>,
    header: &mut tar::Header,
    name: &str,
    len: u64,
    source: &mut impl io::Read,
) -> io::Result<()> {
    let mut read = |out: &mut [u8]| loop {
        match source.read(out) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    };
    append_entry(tar, header, name, len, 1, &mut read)?;
    // The source's own end (an increment checks there that it produced
    // what it announced).
    match read(&mut [0u8; 1])? {
        0 => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name}: the data goes on past the {len} bytes announced"),
        )),
    }
}

/// Writes `header` (named `name`, of size `len`) with the tar crate, then
/// `len` bytes that `fill` writes in place (given at least `min` bytes of
/// room at a time, or what is left), then the padding to a whole record.
fn append_entry<W: Write>(
    tar: &mut tar::Builder<ObjectWriter<W>>,
    header: &mut tar::Header,
    name: &str,
    len: u64,
    min: usize,
    mut fill: impl FnMut(&mut [u8]) -> io::Result<usize>,
) -> io::Result<()> {
    if header.size()? != len {
        return Err(io::Error::other(format!(
            "{name}: a tar header of {} bytes for an entry of {len}",
            header.size()?
        )));
    }
    // The header (and a long-name entry) only: with no data, the tar crate
    // writes no padding either. The data and its padding follow.
    tar.append_data(header, name, io::empty())?;
    let object = tar.get_mut();
    let mut left = len;
    while left > 0 {
        let max = usize::try_from(left).unwrap_or(usize::MAX).min(READ_CHUNK);
        let n = object.write_in_place(max, min, &mut fill)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{name}: the data ended after {} of {len} bytes", len - left),
            ));
        }
        left -= n as u64;
    }
    let pad = (RECORD - len % RECORD) % RECORD;
    object.write_all(&[0u8; RECORD as usize][..pad as usize])
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgark_codec::{Compression, CompressionSpec, ObjectReader};
    use std::io::Read;

    fn internal(e: io::Error) -> EngineError {
        EngineError::Internal(e.to_string())
    }

    fn header(len: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o600);
        h.set_size(len);
        h.set_mtime(1_700_000_000);
        h
    }

    fn decoded(stored: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        ObjectReader::new(stored).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    /// The entries written in place are byte for byte those of
    /// `tar::Builder::append_data`, at every codec, for lengths around a
    /// record, a read chunk and a zstd frame, for a piece from an offset,
    /// and for a name that needs a GNU long-name entry.
    #[test]
    fn entries_are_those_of_the_tar_crate() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..3_300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let path = dir.path().join("f");
        std::fs::write(&path, &content).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let long = format!("pg_tblspc/16400/{}/16384/16385", "d".repeat(120));
        let entries: Vec<(String, u64, u64)> = vec![
            ("base/1/1".into(), 0, 0),
            ("base/1/2".into(), 0, 1),
            ("base/1/3".into(), 5, 511),
            ("base/1/4".into(), 0, 512),
            ("base/1/5".into(), 3, 513),
            (long, 100, (256 << 10) + 3),
            ("base/1/6".into(), 0, 1 << 20),
            ("base/1/7".into(), 1000, 3_000_000),
        ];
        for codec in [Compression::Zstd, Compression::Lz4, Compression::None] {
            let spec = CompressionSpec::new(codec, None).unwrap();
            let mut expected = tar::Builder::new(Vec::new());
            let mut ours = tar::Builder::new(ObjectWriter::new(Vec::new(), spec).unwrap());
            for (name, offset, len) in &entries {
                let (o, l) = (*offset as usize, *len as usize);
                expected
                    .append_data(&mut header(*len), name, &content[o..o + l])
                    .unwrap();
                let mut source = FileSource::new(Some(&file), &path, *offset, *len, None, 0);
                append_file(&mut ours, &mut header(*len), name, &mut source, internal).unwrap();
                assert_eq!(source.crc, crc32c::crc32c(&content[o..o + l]), "{codec:?} {name}");
            }
            let expected = expected.into_inner().unwrap();
            let (stored, summary) = ours.into_inner().unwrap().finish().unwrap();
            assert_eq!(summary.original_len, expected.len() as u64, "{codec:?}");
            assert!(decoded(&stored) == expected, "{codec:?}: the tar stream differs");
        }
    }

    /// A file that shrank after it was listed is padded with zeros, and a
    /// vanished one (no file) is all zeros, when pages are verified too.
    #[test]
    fn a_shrunken_or_vanished_file_is_padded_with_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        // Three pages are left of a file listed at 40 pages and 100 bytes;
        // all-zero pages pass verification.
        let left = 3 * 8192;
        let bs = BlockSize::new(8192).unwrap();
        for (fill, vanished, verify) in [
            (0x11u8, false, None),
            (0, false, Some(bs)),
            (0x11, true, None),
            (0, true, Some(bs)),
        ] {
            std::fs::write(&path, vec![fill; left]).unwrap();
            let file = std::fs::File::open(&path).unwrap();
            let len = 40 * 8192 + 100;
            let mut tar =
                tar::Builder::new(ObjectWriter::new(Vec::new(), CompressionSpec::default()).unwrap());
            // More than a frame of other bytes first: the frame's buffer
            // is then reused and holds them where the file is read.
            let before = 3 * (1 << 20) / 2;
            tar.append_data(
                &mut header(before),
                "base/1/big",
                &vec![0xAB; before as usize][..],
            )
            .unwrap();
            let f = (!vanished).then_some(&file);
            let mut source = FileSource::new(f, &path, 0, len, verify, 0);
            append_file(&mut tar, &mut header(len), "base/1/1", &mut source, internal).unwrap();
            assert!(source.corrupt.is_empty());
            let (stored, _) = tar.into_inner().unwrap().finish().unwrap();
            let tarball = decoded(&stored);
            let mut archive = tar::Archive::new(&tarball[..]);
            let mut entries = archive.entries().unwrap();
            entries.next().unwrap().unwrap();
            let mut data = Vec::new();
            entries.next().unwrap().unwrap().read_to_end(&mut data).unwrap();
            let mut expected = vec![0u8; len as usize];
            if !vanished {
                expected[..left].fill(fill);
            }
            assert!(
                data == expected,
                "fill {fill:#x}, vanished {vanished}: the stored data differs"
            );
        }
    }

    /// Pages with data checksums, read as a piece from an offset after a
    /// small entry (so zstd ends frames early): every page is checked under
    /// its absolute block number, the one damaged page is reported under
    /// its block in the file with its LSN, and every byte is stored as read.
    #[test]
    fn pages_are_verified_under_their_block_numbers() {
        let bs = BlockSize::new(8192).unwrap();
        let first_block_no = 131_072; // segment 1 of a 1 GiB relation
        let pages = 400usize;
        let mut content = vec![0u8; pages * 8192];
        for (i, page) in content.chunks_exact_mut(8192).enumerate() {
            let lsn = 0x1_0000_0000u64 + i as u64 * 0x100;
            page[..8].copy_from_slice(&lsn.rotate_left(32).to_le_bytes());
            for (j, b) in page[24..].iter_mut().enumerate() {
                *b = ((i * 31 + j * 7) % 253) as u8;
            }
            let sum = pgark_pg::pg_checksum_page(page, first_block_no + i as u32);
            page[8..10].copy_from_slice(&sum.to_le_bytes());
        }
        let damaged = 300usize;
        content[damaged * 8192 + 5000] ^= 0x40;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("16385.1");
        std::fs::write(&path, &content).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let (offset, len) = (7 * 8192u64, 350 * 8192u64);
        let mut tar = tar::Builder::new(ObjectWriter::new(Vec::new(), CompressionSpec::default()).unwrap());
        tar.append_data(&mut header(3), "PG_VERSION", &b"15\n"[..])
            .unwrap();
        let mut source = FileSource::new(Some(&file), &path, offset, len, Some(bs), first_block_no);
        append_file(
            &mut tar,
            &mut header(len),
            "base/1/16385.1",
            &mut source,
            internal,
        )
        .unwrap();
        let lsn = pgark_delta::page_lsn(&content[damaged * 8192..]);
        assert_eq!(source.corrupt, vec![(damaged as u32, lsn)]);
        let stored_range = &content[offset as usize..(offset + len) as usize];
        assert_eq!(source.crc, crc32c::crc32c(stored_range));
        let (stored, _) = tar.into_inner().unwrap().finish().unwrap();
        let tarball = decoded(&stored);
        let mut archive = tar::Archive::new(&tarball[..]);
        let mut entries = archive.entries().unwrap();
        entries.next().unwrap().unwrap();
        let mut data = Vec::new();
        entries.next().unwrap().unwrap().read_to_end(&mut data).unwrap();
        assert!(data == stored_range, "the stored pages differ from the file's");
    }

    /// An increment's reader that ends early or goes on past the length
    /// announced fails the entry; one that reports more than it was given
    /// is refused.
    #[test]
    fn a_short_or_lying_source_fails_the_entry() {
        let mut tar = tar::Builder::new(ObjectWriter::new(Vec::new(), CompressionSpec::default()).unwrap());
        let e = append_read(
            &mut tar,
            &mut header(1000),
            "base/1/1.delta",
            1000,
            &mut &[7u8; 600][..],
        )
        .unwrap_err();
        assert!(e.to_string().contains("ended after 600 of 1000 bytes"), "{e}");
        struct Liar;
        impl io::Read for Liar {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                Ok(out.len() + 1)
            }
        }
        for codec in [Compression::Zstd, Compression::Lz4] {
            let spec = CompressionSpec::new(codec, None).unwrap();
            let mut tar = tar::Builder::new(ObjectWriter::new(Vec::new(), spec).unwrap());
            let e = append_read(&mut tar, &mut header(10), "x", 10, &mut Liar).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        }
        let mut tar = tar::Builder::new(ObjectWriter::new(Vec::new(), CompressionSpec::default()).unwrap());
        let e = append_read(&mut tar, &mut header(10), "x", 10, &mut &[0u8; 11][..]).unwrap_err();
        assert!(e.to_string().contains("goes on past the 10 bytes"), "{e}");
        let mut tar = tar::Builder::new(ObjectWriter::new(Vec::new(), CompressionSpec::default()).unwrap());
        append_read(&mut tar, &mut header(10), "x", 10, &mut &[0u8; 10][..]).unwrap();
        let e = append_read(&mut tar, &mut header(10), "x", 11, &mut &[0u8; 11][..]).unwrap_err();
        assert!(e.to_string().contains("a tar header of 10 bytes"), "{e}");
    }
}
