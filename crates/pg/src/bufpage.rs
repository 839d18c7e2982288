//! Relation page headers.
//!
//! Base backups copy relation files page by page, and a torn or corrupt page is only worth
//! reporting if it can be told apart from a page PostgreSQL is still writing or has just
//! extended. The page header (`PageHeaderData`, `storage/bufpage.h`) carries what that
//! takes: the LSN of the last change, the checksum and the bounds of free space.

use crate::le::{u16_at, u32_at};
use crate::{Lsn, PgError};

/// `pd_flags` bit `PD_HAS_FREE_LINES`: there are unused line pointers before `pd_lower`.
pub const PD_HAS_FREE_LINES: u16 = 0x0001;
/// `pd_flags` bit `PD_PAGE_FULL`: an `UPDATE` found no room for a new tuple version.
pub const PD_PAGE_FULL: u16 = 0x0002;
/// `pd_flags` bit `PD_ALL_VISIBLE`: every tuple on the page is visible to everyone.
pub const PD_ALL_VISIBLE: u16 = 0x0004;
/// `PD_VALID_FLAG_BITS`: every defined `pd_flags` bit.
pub const PD_VALID_FLAG_BITS: u16 = 0x0007;
/// `PG_PAGE_LAYOUT_VERSION`: the page layout of PostgreSQL 8.3 and later.
pub const PG_PAGE_LAYOUT_VERSION: u8 = 4;

/// `MAXIMUM_ALIGNOF` of the supported 64-bit platforms.
const MAXIMUM_ALIGNOF: u16 = 8;

// Byte offsets of PageHeaderData's fields.
const PD_LSN_XLOGID_OFF: usize = 0; // PageXLogRecPtr pd_lsn: uint32 xlogid (high half)
const PD_LSN_XRECOFF_OFF: usize = 4; // ... uint32 xrecoff (low half)
const PD_CHECKSUM_OFF: usize = 8; // uint16 pd_checksum
const PD_FLAGS_OFF: usize = 10; // uint16 pd_flags
const PD_LOWER_OFF: usize = 12; // LocationIndex pd_lower
const PD_UPPER_OFF: usize = 14; // LocationIndex pd_upper
const PD_SPECIAL_OFF: usize = 16; // LocationIndex pd_special
const PD_PAGESIZE_VERSION_OFF: usize = 18; // uint16 pd_pagesize_version
const PD_PRUNE_XID_OFF: usize = 20; // TransactionId pd_prune_xid

/// The header at the start of every page of a relation file: `PageHeaderData`
/// (`storage/bufpage.h`), without the line pointer array that follows it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct PageHeader {
    /// `pd_lsn`: the end of the WAL record of the page's last change. On disk it is a
    /// `PageXLogRecPtr`, two `uint32` halves, high half first.
    pub lsn: Lsn,
    /// `pd_checksum`: the page checksum, when the cluster has data checksums.
    pub checksum: u16,
    /// `pd_flags`: `PD_*` bits.
    pub flags: u16,
    /// `pd_lower`: offset of the start of free space.
    pub lower: u16,
    /// `pd_upper`: offset of the end of free space.
    pub upper: u16,
    /// `pd_special`: offset of the start of the access method's special space.
    pub special: u16,
    /// `pd_pagesize_version`: page size (high byte's bits) and layout version (low byte).
    pub pagesize_version: u16,
    /// `pd_prune_xid`: oldest transaction that may have left prunable tuples, or 0.
    pub prune_xid: u32,
}

impl PageHeader {
    /// `SizeOfPageHeaderData`: 24 bytes.
    pub const SIZE: usize = 24;

    /// Reads the header from the start of `page` (at least [`Self::SIZE`] bytes). Values
    /// are not checked; see [`PageHeader::is_sane`].
    pub fn parse(page: &[u8]) -> Result<Self, PgError> {
        if page.len() < Self::SIZE {
            return Err(PgError::BufferTooShort {
                what: "PageHeaderData",
                needed: Self::SIZE,
                found: page.len(),
            });
        }
        let xlogid = u64::from(u32_at(page, PD_LSN_XLOGID_OFF));
        let xrecoff = u64::from(u32_at(page, PD_LSN_XRECOFF_OFF));
        Ok(PageHeader {
            lsn: Lsn((xlogid << 32) | xrecoff),
            checksum: u16_at(page, PD_CHECKSUM_OFF),
            flags: u16_at(page, PD_FLAGS_OFF),
            lower: u16_at(page, PD_LOWER_OFF),
            upper: u16_at(page, PD_UPPER_OFF),
            special: u16_at(page, PD_SPECIAL_OFF),
            pagesize_version: u16_at(page, PD_PAGESIZE_VERSION_OFF),
            prune_xid: u32_at(page, PD_PRUNE_XID_OFF),
        })
    }

    /// Whether the page was never initialised (`PageIsNew`: `pd_upper == 0`). PostgreSQL
    /// leaves newly extended pages all zeros, and neither checksums nor checks them beyond
    /// that (see [`page_is_all_zeros`]).
    pub fn is_new(&self) -> bool {
        self.upper == 0
    }

    /// The page size recorded in the header (`PageGetPageSize`).
    pub fn page_size(&self) -> usize {
        usize::from(self.pagesize_version & 0xFF00)
    }

    /// The page layout version (`PageGetPageLayoutVersion`); 4 for every supported release.
    pub fn layout_version(&self) -> u8 {
        (self.pagesize_version & 0x00FF) as u8
    }

    /// Whether the header passes the sanity checks `PageIsVerified` makes on an initialised
    /// page of `block_size` bytes: only defined flag bits, `pd_lower <= pd_upper <=
    /// pd_special <= block_size`, and a `MAXALIGN`ed `pd_special`.
    pub fn is_sane(&self, block_size: usize) -> bool {
        self.flags & !PD_VALID_FLAG_BITS == 0
            && self.lower <= self.upper
            && self.upper <= self.special
            && usize::from(self.special) <= block_size
            && self.special % MAXIMUM_ALIGNOF == 0
    }
}

/// Whether every byte of `page` is zero: the only acceptable content of a new page
/// (`PageIsVerified`'s `pg_memory_is_all_zeros` check).
pub fn page_is_all_zeros(page: &[u8]) -> bool {
    page.iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_field_offsets() {
        let mut page = [0u8; 8192];
        page[0..4].copy_from_slice(&0x16u32.to_le_bytes()); // xlogid
        page[4..8].copy_from_slice(&0xB374_D848u32.to_le_bytes()); // xrecoff
        page[8..10].copy_from_slice(&0xBEEFu16.to_le_bytes());
        page[10..12].copy_from_slice(&PD_ALL_VISIBLE.to_le_bytes());
        page[12..14].copy_from_slice(&40u16.to_le_bytes());
        page[14..16].copy_from_slice(&8000u16.to_le_bytes());
        page[16..18].copy_from_slice(&8176u16.to_le_bytes());
        page[18..20].copy_from_slice(&(0x2000u16 | 4).to_le_bytes());
        page[20..24].copy_from_slice(&12345u32.to_le_bytes());
        let h = PageHeader::parse(&page).unwrap();
        assert_eq!(
            h,
            PageHeader {
                lsn: "16/B374D848".parse().unwrap(),
                checksum: 0xBEEF,
                flags: PD_ALL_VISIBLE,
                lower: 40,
                upper: 8000,
                special: 8176,
                pagesize_version: 0x2004,
                prune_xid: 12345,
            }
        );
        assert_eq!(h.page_size(), 8192);
        assert_eq!(h.layout_version(), PG_PAGE_LAYOUT_VERSION);
        assert!(!h.is_new());
        assert!(h.is_sane(8192));
        assert!(!page_is_all_zeros(&page));
    }

    #[test]
    fn new_pages() {
        let zeros = [0u8; 8192];
        let h = PageHeader::parse(&zeros).unwrap();
        assert!(h.is_new());
        assert!(page_is_all_zeros(&zeros));
        assert!(page_is_all_zeros(&[]));
        let mut almost = zeros;
        almost[8191] = 1;
        assert!(PageHeader::parse(&almost).unwrap().is_new());
        assert!(!page_is_all_zeros(&almost));
    }

    #[test]
    fn sanity_checks() {
        let good = PageHeader {
            lsn: Lsn(0),
            checksum: 0,
            flags: PD_HAS_FREE_LINES | PD_PAGE_FULL | PD_ALL_VISIBLE,
            lower: 28,
            upper: 8192,
            special: 8192,
            pagesize_version: 0x2004,
            prune_xid: 0,
        };
        assert!(good.is_sane(8192));
        let cases: &[(&str, PageHeader, usize)] = &[
            (
                "undefined flag",
                PageHeader {
                    flags: 0x0008,
                    ..good
                },
                8192,
            ),
            (
                "lower above upper",
                PageHeader {
                    lower: 300,
                    upper: 200,
                    ..good
                },
                8192,
            ),
            (
                "upper above special",
                PageHeader {
                    upper: 8192,
                    special: 8176,
                    ..good
                },
                8192,
            ),
            ("special past the page", good, 4096),
            (
                "special not aligned",
                PageHeader {
                    upper: 8000,
                    special: 8004,
                    ..good
                },
                8192,
            ),
        ];
        for (what, header, block_size) in cases {
            assert!(!header.is_sane(*block_size), "{what}");
        }
    }

    #[test]
    fn short_buffers() {
        for len in [0, 8, 23] {
            assert_eq!(
                PageHeader::parse(&[0; 24][..len]),
                Err(PgError::BufferTooShort {
                    what: "PageHeaderData",
                    needed: 24,
                    found: len
                })
            );
        }
    }
}
