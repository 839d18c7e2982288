//! WAL page headers and the WAL format version they carry.
//!
//! Every `XLOG_BLCKSZ` page of a WAL segment starts with an `XLogPageHeaderData`, and the
//! first page of each segment with the longer `XLogLongPageHeaderData` that names the
//! cluster (system identifier) and the sizes it was built with. These headers are the only
//! thing in a segment that can be checked without decoding records, so the archiver reads
//! them to make sure a file is what its name claims before storing it.
//!
//! Layouts are those of 64-bit little-endian builds (`MAXIMUM_ALIGNOF` 8), the only ones
//! pgark supports: x86-64 and AArch64 Linux.

use crate::le::{u16_at, u32_at, u64_at};
use crate::{Lsn, PgError, TimelineId};

/// `XLOG_PAGE_MAGIC` of each supported PostgreSQL major version, oldest first.
///
/// Values: `#define XLOG_PAGE_MAGIC` in `src/include/access/xlog_internal.h` as each major
/// version was released (the value is fixed once a major version ships; it may change
/// between its betas, so beta WAL is not recognised). Checked against that header as
/// shipped in PostgreSQL 15.20's server headers and in the 18.3 source, and for every
/// version by reading `xlp_magic` back from the first WAL segment that `initdb` of released
/// binaries wrote: 13.23 (0xD106), 14.23 (0xD10D), 15.20 (0xD110), 16.14 (0xD113),
/// 17.10 (0xD116), 18.4 (0xD118).
pub const XLOG_PAGE_MAGICS: [(u32, u16); 6] = [
    (13, 0xD106),
    (14, 0xD10D),
    (15, 0xD110),
    (16, 0xD113),
    (17, 0xD116),
    (18, 0xD118),
];

/// The PostgreSQL major version whose WAL pages carry `magic` as `xlp_magic`; `None` for
/// a value that no supported version (13 to 18) writes.
pub fn pg_version_for_wal_magic(magic: u16) -> Option<u32> {
    XLOG_PAGE_MAGICS
        .iter()
        .find(|&&(_, m)| m == magic)
        .map(|&(version, _)| version)
}

/// The `XLOG_PAGE_MAGIC` of PostgreSQL major version `version`; `None` if unsupported.
pub fn wal_magic_for_pg_version(version: u32) -> Option<u16> {
    XLOG_PAGE_MAGICS
        .iter()
        .find(|&&(v, _)| v == version)
        .map(|&(_, magic)| magic)
}

/// `xlp_info` flag `XLP_FIRST_IS_CONTRECORD`: the page starts with the continuation of a
/// record begun on an earlier page (`xlp_rem_len` bytes of it remain).
pub const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
/// `xlp_info` flag `XLP_LONG_HEADER`: the header is an `XLogLongPageHeaderData` (first page
/// of a segment).
pub const XLP_LONG_HEADER: u16 = 0x0002;
/// `xlp_info` flag `XLP_BKP_REMOVABLE`: full-page images starting on this page may be
/// dropped by archive compression tools (set while no backup is running).
pub const XLP_BKP_REMOVABLE: u16 = 0x0004;
/// `xlp_info` flag `XLP_FIRST_IS_OVERWRITE_CONTRECORD`: the page replaces a missing
/// continuation record (`CreateOverwriteContrecordRecord`; PostgreSQL 14.1, 13.5 and
/// later).
pub const XLP_FIRST_IS_OVERWRITE_CONTRECORD: u16 = 0x0008;
/// `XLP_ALL_FLAGS`: every flag bit defined in PostgreSQL 13 to 18; any other bit makes a
/// header invalid (`XLogReaderValidatePageHeader`).
pub const XLP_ALL_FLAGS: u16 =
    XLP_FIRST_IS_CONTRECORD | XLP_LONG_HEADER | XLP_BKP_REMOVABLE | XLP_FIRST_IS_OVERWRITE_CONTRECORD;

/// Smallest `XLOG_BLCKSZ` PostgreSQL can be built with (`--with-wal-blocksize=1`).
pub const MIN_XLOG_BLCKSZ: u32 = 1024;
/// Largest `XLOG_BLCKSZ` PostgreSQL can be built with (`--with-wal-blocksize=64`).
pub const MAX_XLOG_BLCKSZ: u32 = 64 * 1024;
/// `XLOG_BLCKSZ` of standard builds.
pub const DEFAULT_XLOG_BLCKSZ: u32 = 8192;

/// Whether `size` is an `XLOG_BLCKSZ` PostgreSQL can be built with: a power of two from
/// 1 kB to 64 kB.
pub fn is_valid_xlog_blcksz(size: u32) -> bool {
    size.is_power_of_two() && (MIN_XLOG_BLCKSZ..=MAX_XLOG_BLCKSZ).contains(&size)
}

// Byte offsets of XLogPageHeaderData's fields.
const XLP_MAGIC_OFF: usize = 0; // uint16 xlp_magic
const XLP_INFO_OFF: usize = 2; // uint16 xlp_info
const XLP_TLI_OFF: usize = 4; // TimeLineID xlp_tli
const XLP_PAGEADDR_OFF: usize = 8; // XLogRecPtr xlp_pageaddr (8-byte aligned)
const XLP_REM_LEN_OFF: usize = 16; // uint32 xlp_rem_len, then 4 bytes of padding
                                   // Byte offsets of the fields XLogLongPageHeaderData adds after the (padded) short header.
const XLP_SYSID_OFF: usize = 24; // uint64 xlp_sysid
const XLP_SEG_SIZE_OFF: usize = 32; // uint32 xlp_seg_size
const XLP_XLOG_BLCKSZ_OFF: usize = 36; // uint32 xlp_xlog_blcksz

/// The header at the start of every WAL page: `XLogPageHeaderData`
/// (`access/xlog_internal.h`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct XLogPageHeader {
    /// `xlp_magic`: the WAL format version, see [`pg_version_for_wal_magic`].
    pub magic: u16,
    /// `xlp_info`: `XLP_*` flag bits.
    pub info: u16,
    /// `xlp_tli`: timeline of the first record on the page.
    pub timeline: TimelineId,
    /// `xlp_pageaddr`: the LSN of the page's first byte.
    pub page_addr: Lsn,
    /// `xlp_rem_len`: bytes of a record continued from the previous page.
    pub rem_len: u32,
}

impl XLogPageHeader {
    /// `SizeOfXLogShortPHD`: `MAXALIGN(sizeof(XLogPageHeaderData))`, 24 bytes.
    pub const SIZE: usize = 24;

    /// Reads the header from the start of `buf` (at least [`Self::SIZE`] bytes). Values are
    /// not checked.
    pub fn parse(buf: &[u8]) -> Result<Self, PgError> {
        if buf.len() < Self::SIZE {
            return Err(PgError::BufferTooShort {
                what: "XLogPageHeaderData",
                needed: Self::SIZE,
                found: buf.len(),
            });
        }
        Ok(XLogPageHeader {
            magic: u16_at(buf, XLP_MAGIC_OFF),
            info: u16_at(buf, XLP_INFO_OFF),
            timeline: TimelineId(u32_at(buf, XLP_TLI_OFF)),
            page_addr: Lsn(u64_at(buf, XLP_PAGEADDR_OFF)),
            rem_len: u32_at(buf, XLP_REM_LEN_OFF),
        })
    }

    /// Whether `XLP_LONG_HEADER` is set, i.e. the page starts with an
    /// `XLogLongPageHeaderData`.
    pub fn is_long(&self) -> bool {
        self.info & XLP_LONG_HEADER != 0
    }

    /// Bytes the header occupies on the page (`XLogPageHeaderSize`).
    pub fn header_size(&self) -> usize {
        if self.is_long() {
            XLogLongPageHeader::SIZE
        } else {
            Self::SIZE
        }
    }
}

/// The header of the first page of every WAL segment: `XLogLongPageHeaderData`
/// (`access/xlog_internal.h`), the short header followed by fields that identify the
/// cluster and its build.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct XLogLongPageHeader {
    /// `std.xlp_magic`: the WAL format version, see [`pg_version_for_wal_magic`].
    pub magic: u16,
    /// `std.xlp_info`: `XLP_*` flag bits; `XLP_LONG_HEADER` is set in a valid one.
    pub info: u16,
    /// `std.xlp_tli`: timeline of the first record on the page.
    pub timeline: TimelineId,
    /// `std.xlp_pageaddr`: the LSN of the page's first byte, the start of the segment.
    pub page_addr: Lsn,
    /// `std.xlp_rem_len`: bytes of a record continued from the previous segment.
    pub rem_len: u32,
    /// `xlp_sysid`: the cluster's system identifier, as in `pg_control`.
    pub system_identifier: u64,
    /// `xlp_seg_size`: the cluster's WAL segment size in bytes.
    pub seg_size: u32,
    /// `xlp_xlog_blcksz`: the build's `XLOG_BLCKSZ`.
    pub xlog_blcksz: u32,
}

impl XLogLongPageHeader {
    /// `SizeOfXLogLongPHD`: `MAXALIGN(sizeof(XLogLongPageHeaderData))`, 40 bytes.
    pub const SIZE: usize = 40;

    /// Reads the header from the start of `buf` (at least [`Self::SIZE`] bytes). Values are
    /// not checked; see [`crate::validate_segment`].
    pub fn parse(buf: &[u8]) -> Result<Self, PgError> {
        if buf.len() < Self::SIZE {
            return Err(PgError::BufferTooShort {
                what: "XLogLongPageHeaderData",
                needed: Self::SIZE,
                found: buf.len(),
            });
        }
        let std = XLogPageHeader::parse(buf)?;
        Ok(XLogLongPageHeader {
            magic: std.magic,
            info: std.info,
            timeline: std.timeline,
            page_addr: std.page_addr,
            rem_len: std.rem_len,
            system_identifier: u64_at(buf, XLP_SYSID_OFF),
            seg_size: u32_at(buf, XLP_SEG_SIZE_OFF),
            xlog_blcksz: u32_at(buf, XLP_XLOG_BLCKSZ_OFF),
        })
    }

    /// The standard header fields (`std`).
    pub fn std(&self) -> XLogPageHeader {
        XLogPageHeader {
            magic: self.magic,
            info: self.info,
            timeline: self.timeline,
            page_addr: self.page_addr,
            rem_len: self.rem_len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first 40 bytes of fixtures/wal/000000010000000000000005 (PostgreSQL 15).
    const REAL_LONG_HEADER: [u8; 40] = [
        0x10, 0xd1, 0x07, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x60,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xcd, 0x49, 0x18, 0xb2, 0x61, 0x37, 0x02, 0x6b, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x20, 0x00, 0x00,
    ];

    #[test]
    fn magic_table() {
        let cases: &[(u16, Option<u32>)] = &[
            (0xD106, Some(13)),
            (0xD10D, Some(14)),
            (0xD110, Some(15)),
            (0xD113, Some(16)),
            (0xD116, Some(17)),
            (0xD118, Some(18)),
            // PostgreSQL 12, a 19 development value, byte-swapped 15, nothing.
            (0xD101, None),
            (0xD120, None),
            (0x10D1, None),
            (0x0000, None),
            (0xFFFF, None),
        ];
        for &(magic, version) in cases {
            assert_eq!(pg_version_for_wal_magic(magic), version, "{magic:#06X}");
            if let Some(v) = version {
                assert_eq!(wal_magic_for_pg_version(v), Some(magic));
            }
        }
        assert_eq!(wal_magic_for_pg_version(12), None);
        assert_eq!(wal_magic_for_pg_version(19), None);
        // Strictly increasing: PostgreSQL only ever bumps the value.
        assert!(XLOG_PAGE_MAGICS
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
    }

    #[test]
    fn flags() {
        assert_eq!(XLP_ALL_FLAGS, 0x000F);
        assert_eq!(
            XLogPageHeader::parse(&REAL_LONG_HEADER).unwrap().header_size(),
            40
        );
        let mut short = REAL_LONG_HEADER;
        short[XLP_INFO_OFF] = XLP_FIRST_IS_CONTRECORD as u8;
        let header = XLogPageHeader::parse(&short).unwrap();
        assert!(!header.is_long());
        assert_eq!(header.header_size(), XLogPageHeader::SIZE);
    }

    #[test]
    fn parse_real_long_header() {
        let h = XLogLongPageHeader::parse(&REAL_LONG_HEADER).unwrap();
        assert_eq!(
            h,
            XLogLongPageHeader {
                magic: 0xD110,
                info: XLP_LONG_HEADER | XLP_FIRST_IS_CONTRECORD | XLP_BKP_REMOVABLE,
                timeline: TimelineId(1),
                page_addr: Lsn(0x500_0000),
                rem_len: 0x60,
                system_identifier: 7710786404751002061,
                seg_size: 16 * 1024 * 1024,
                xlog_blcksz: 8192,
            }
        );
        assert_eq!(XLogPageHeader::parse(&REAL_LONG_HEADER).unwrap(), h.std());
        // Bytes past the header do not matter.
        let mut longer = REAL_LONG_HEADER.to_vec();
        longer.extend_from_slice(&[0xAA; 100]);
        assert_eq!(XLogLongPageHeader::parse(&longer).unwrap(), h);
    }

    #[test]
    fn parse_field_offsets() {
        // Each field filled with a distinct pattern at its documented offset.
        let mut buf = [0u8; 40];
        buf[0..2].copy_from_slice(&0x1122u16.to_le_bytes());
        buf[2..4].copy_from_slice(&0x3344u16.to_le_bytes());
        buf[4..8].copy_from_slice(&0x5566_7788u32.to_le_bytes());
        buf[8..16].copy_from_slice(&0x99AA_BBCC_DDEE_FF00u64.to_le_bytes());
        buf[16..20].copy_from_slice(&0x0102_0304u32.to_le_bytes());
        buf[20..24].copy_from_slice(&[0xEE; 4]); // padding, ignored
        buf[24..32].copy_from_slice(&0x0506_0708_090A_0B0Cu64.to_le_bytes());
        buf[32..36].copy_from_slice(&0x0D0E_0F10u32.to_le_bytes());
        buf[36..40].copy_from_slice(&0x1112_1314u32.to_le_bytes());
        let h = XLogLongPageHeader::parse(&buf).unwrap();
        assert_eq!(h.magic, 0x1122);
        assert_eq!(h.info, 0x3344);
        assert_eq!(h.timeline, TimelineId(0x5566_7788));
        assert_eq!(h.page_addr, Lsn(0x99AA_BBCC_DDEE_FF00));
        assert_eq!(h.rem_len, 0x0102_0304);
        assert_eq!(h.system_identifier, 0x0506_0708_090A_0B0C);
        assert_eq!(h.seg_size, 0x0D0E_0F10);
        assert_eq!(h.xlog_blcksz, 0x1112_1314);
    }

    #[test]
    fn parse_short_buffers() {
        for len in [0, 1, 23] {
            assert_eq!(
                XLogPageHeader::parse(&REAL_LONG_HEADER[..len]),
                Err(PgError::BufferTooShort {
                    what: "XLogPageHeaderData",
                    needed: 24,
                    found: len
                })
            );
        }
        assert!(XLogPageHeader::parse(&REAL_LONG_HEADER[..24]).is_ok());
        for len in [0, 24, 39] {
            assert_eq!(
                XLogLongPageHeader::parse(&REAL_LONG_HEADER[..len]),
                Err(PgError::BufferTooShort {
                    what: "XLogLongPageHeaderData",
                    needed: 40,
                    found: len
                })
            );
        }
    }

    #[test]
    fn xlog_block_sizes() {
        for ok in [1024, 2048, 4096, 8192, 16384, 32768, 65536] {
            assert!(is_valid_xlog_blcksz(ok), "{ok}");
        }
        for bad in [0, 1, 512, 1000, 8191, 8193, 12288, 131072, u32::MAX] {
            assert!(!is_valid_xlog_blcksz(bad), "{bad}");
        }
        assert!(is_valid_xlog_blcksz(DEFAULT_XLOG_BLCKSZ));
    }
}
