//! Data page checksums.
//!
//! With data checksums on (`initdb -k`, the default from PostgreSQL 18), every page
//! PostgreSQL writes carries a 16-bit checksum of its contents and block number. A base
//! backup that recomputes it can report a corrupt page while the original is still
//! around. This is the algorithm of `storage/checksum_impl.h`: 32 interleaved FNV-1a-like
//! hashes over the page read as `uint32` words, folded together.

use crate::{PageHeader, PgError};

/// `N_SUMS`: parallel hashes, one per `uint32` column of a 128-byte row.
const N_SUMS: usize = 32;
/// `FNV_PRIME`: the 32-bit FNV prime.
const FNV_PRIME: u32 = 16_777_619;
/// Bytes per row of the page seen as `uint32 data[BLCKSZ / 128][N_SUMS]`.
const ROW_BYTES: usize = N_SUMS * 4;
/// The `uint32` column holding `pd_checksum` (bytes 8 and 9 of the page), and the mask
/// that clears it: on a little-endian machine those bytes are the word's low half.
const CHECKSUM_WORD: usize = 2;
const CHECKSUM_WORD_MASK: u32 = 0xFFFF_0000;

/// `checksumBaseOffsets`: the starting value of each of the 32 hashes.
const CHECKSUM_BASE_OFFSETS: [u32; N_SUMS] = [
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
    0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
    0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
    0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E, 0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
];

/// Smallest `BLCKSZ` PostgreSQL can be built with (`--with-blocksize=1`).
const MIN_BLCKSZ: usize = 1024;
/// Largest `BLCKSZ` PostgreSQL can be built with (`--with-blocksize=32`).
const MAX_BLCKSZ: usize = 32 * 1024;

fn is_valid_blcksz(len: usize) -> bool {
    len.is_power_of_two() && (MIN_BLCKSZ..=MAX_BLCKSZ).contains(&len)
}

/// One step of one hash (`CHECKSUM_COMP`).
fn checksum_comp(sum: u32, value: u32) -> u32 {
    let tmp = sum ^ value;
    tmp.wrapping_mul(FNV_PRIME) ^ (tmp >> 17)
}

/// `pg_checksum_block` over `page` with its `pd_checksum` read as zero.
fn checksum_block_without_checksum_field(page: &[u8]) -> u32 {
    let mut sums = CHECKSUM_BASE_OFFSETS;
    for (row_no, row) in page.chunks_exact(ROW_BYTES).enumerate() {
        for (j, (sum, word)) in sums.iter_mut().zip(row.chunks_exact(4)).enumerate() {
            let mut value = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
            if row_no == 0 && j == CHECKSUM_WORD {
                value &= CHECKSUM_WORD_MASK;
            }
            *sum = checksum_comp(*sum, value);
        }
    }
    // Two rounds of zeros for extra mixing, then fold.
    for _ in 0..2 {
        for sum in &mut sums {
            *sum = checksum_comp(*sum, 0);
        }
    }
    sums.iter().fold(0, |acc, &s| acc ^ s)
}

/// The checksum PostgreSQL stores in `pd_checksum` of block `blkno` (`pg_checksum_page`,
/// `storage/checksum_impl.h`). The page's own `pd_checksum` is ignored (read as zero).
///
/// `blkno` is the block's number within its relation fork, counting across 1 GiB segment
/// files: block `n` of segment file `.s` is `s * RELSEG_SIZE + n`.
///
/// PostgreSQL never checksums new (all-zero) pages; see [`PageHeader::is_new`].
///
/// # Panics
///
/// If `page.len()` is not a `BLCKSZ` PostgreSQL can be built with (a power of two from
/// 1 kB to 32 kB); [`verify_page_checksum`] checks the length instead.
pub fn pg_checksum_page(page: &[u8], blkno: u32) -> u16 {
    assert!(
        is_valid_blcksz(page.len()),
        "pg_checksum_page: {} bytes is not a valid BLCKSZ",
        page.len()
    );
    let checksum = checksum_block_without_checksum_field(page) ^ blkno;
    // Reduce to 16 bits, offset by one so that a checksum is never zero.
    ((checksum % 65535) + 1) as u16
}

/// Checks `pd_checksum` of block `blkno` against [`pg_checksum_page`], as PostgreSQL does
/// when it reads a page with data checksums on. New pages (`pd_upper == 0`) carry no
/// checksum and pass, as in `pg_checksums`.
pub fn verify_page_checksum(page: &[u8], blkno: u32) -> Result<(), PgError> {
    if !is_valid_blcksz(page.len()) {
        return Err(PgError::InvalidPageSize { len: page.len() });
    }
    let header = PageHeader::parse(page)?;
    if header.is_new() {
        return Ok(());
    }
    let computed = pg_checksum_page(page, blkno);
    if computed == header.checksum {
        Ok(())
    } else {
        Err(PgError::PageChecksumMismatch {
            blkno,
            found: header.checksum,
            computed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAP_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/wal/heap");
    const BLCKSZ: usize = 8192;

    fn relation(name: &str) -> Vec<u8> {
        let path = format!("{HEAP_FIXTURES}/{name}");
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        assert_eq!(data.len() % BLCKSZ, 0, "{path}");
        data
    }

    /// Every page of every fork of a real table and its index, written by PostgreSQL 15
    /// with data checksums on, carries exactly the checksum computed here.
    #[test]
    fn real_relation_pages() {
        let mut checked = 0;
        for name in [
            "checksum_fixture",
            "checksum_fixture_fsm",
            "checksum_fixture_vm",
            "checksum_fixture_pkey",
        ] {
            let data = relation(name);
            for (blkno, page) in data.chunks_exact(BLCKSZ).enumerate() {
                let blkno = blkno as u32;
                let header = PageHeader::parse(page).unwrap();
                if header.is_new() {
                    assert!(crate::page_is_all_zeros(page), "{name} block {blkno}");
                    continue;
                }
                assert!(header.is_sane(BLCKSZ), "{name} block {blkno}: {header:?}");
                assert_eq!(header.page_size(), BLCKSZ);
                assert_eq!(
                    pg_checksum_page(page, blkno),
                    header.checksum,
                    "{name} block {blkno}"
                );
                assert_eq!(verify_page_checksum(page, blkno), Ok(()));
                checked += 1;
            }
        }
        assert!(checked >= 40, "only {checked} pages checked");
    }

    #[test]
    fn damage_is_detected() {
        let data = relation("checksum_fixture");
        let page = &data[BLCKSZ..2 * BLCKSZ];
        let stored = PageHeader::parse(page).unwrap().checksum;
        // The same page as another block: the block number is part of the checksum.
        let moved = pg_checksum_page(page, 7);
        assert_ne!(moved, stored);
        assert_eq!(
            verify_page_checksum(page, 7),
            Err(PgError::PageChecksumMismatch {
                blkno: 7,
                found: stored,
                computed: moved
            })
        );
        // One flipped bit anywhere, header or data.
        for offset in [0, 8, 10, 12, 23, 24, 100, 4000, BLCKSZ - 1] {
            let mut bad = page.to_vec();
            bad[offset] ^= 0x10;
            assert!(
                matches!(
                    verify_page_checksum(&bad, 1),
                    Err(PgError::PageChecksumMismatch { blkno: 1, .. })
                ),
                "flip at {offset}"
            );
        }
        // The checksum field itself does not take part.
        let mut other = page.to_vec();
        other[8..10].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(pg_checksum_page(&other, 1), stored);
    }

    #[test]
    fn new_and_odd_pages() {
        let zeros = vec![0u8; BLCKSZ];
        assert_eq!(verify_page_checksum(&zeros, 0), Ok(()));
        // Never zero: the result is offset by one.
        assert!(pg_checksum_page(&zeros, 0) != 0);
        // Block sizes PostgreSQL can be built with.
        for len in [1024, 2048, 4096, 16384, 32768] {
            let page = vec![0x5Au8; len];
            let _ = pg_checksum_page(&page, 3);
        }
        for len in [0, 23, 24, 1000, 8191, 8193, 65536] {
            assert_eq!(
                verify_page_checksum(&vec![0; len], 0),
                Err(PgError::InvalidPageSize { len }),
                "{len}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "not a valid BLCKSZ")]
    fn checksum_of_odd_length_panics() {
        pg_checksum_page(&[0; 100], 0);
    }

    #[test]
    fn comp_step() {
        // tmp = 1: 1 * FNV_PRIME ^ 0.
        assert_eq!(checksum_comp(0, 1), FNV_PRIME);
        // tmp = 0x20000: wraps and mixes the high half back in.
        assert_eq!(checksum_comp(0x20000, 0), 0x20000u32.wrapping_mul(FNV_PRIME) ^ 1);
    }
}
