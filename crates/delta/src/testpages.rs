//! Synthetic relation pages for the tests.

use pgark_pg::{pg_checksum_page, Lsn};

/// A small deterministic generator (xorshift64*).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0 | 1;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A valid heap-like page of `size` bytes with LSN `lsn`: a sane header, line pointers,
/// tuple bytes derived from `seed`, no checksum.
pub(crate) fn heap_page(size: usize, lsn: Lsn, seed: u32) -> Vec<u8> {
    let mut page = vec![0u8; size];
    let mut rng = Rng(u64::from(seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ lsn.0);
    let items = 1 + (rng.next() % 8) as usize;
    let lower = 24 + 4 * items;
    let upper = size - 64 * items;
    page[0..4].copy_from_slice(&((lsn.0 >> 32) as u32).to_le_bytes());
    page[4..8].copy_from_slice(&(lsn.0 as u32).to_le_bytes());
    page[10..12].copy_from_slice(&pgark_pg::PD_ALL_VISIBLE.to_le_bytes());
    page[12..14].copy_from_slice(&(lower as u16).to_le_bytes());
    page[14..16].copy_from_slice(&(upper as u16).to_le_bytes());
    page[16..18].copy_from_slice(&(size as u16).to_le_bytes());
    page[18..20].copy_from_slice(&((size as u16) | 4).to_le_bytes());
    for b in &mut page[24..lower] {
        *b = rng.next() as u8;
    }
    for b in &mut page[upper..] {
        *b = rng.next() as u8;
    }
    page
}

/// Stores the checksum of block `blkno` in the page.
pub(crate) fn set_checksum(page: &mut [u8], blkno: u32) {
    let sum = pg_checksum_page(page, blkno);
    page[8..10].copy_from_slice(&sum.to_le_bytes());
}
