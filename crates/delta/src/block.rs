//! Block sizes and the bitmap of stored blocks.

use crate::DeltaError;

/// A relation page size (`BLCKSZ`): a power of two from 1 KiB to 32 KiB, as PostgreSQL can
/// be built with (`--with-blocksize`). Read it from `pg_control` (`ControlFile::blcksz`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct BlockSize(u32);

impl BlockSize {
    /// PostgreSQL's default, 8 KiB.
    pub const DEFAULT: BlockSize = BlockSize(8192);
    /// Smallest `BLCKSZ`.
    pub const MIN: u32 = 1024;
    /// Largest `BLCKSZ`.
    pub const MAX: u32 = 32 * 1024;

    /// `bytes` as a block size, if PostgreSQL can be built with it.
    pub fn new(bytes: u32) -> Result<BlockSize, DeltaError> {
        if bytes.is_power_of_two() && (Self::MIN..=Self::MAX).contains(&bytes) {
            Ok(BlockSize(bytes))
        } else {
            Err(DeltaError::InvalidBlockSize(bytes))
        }
    }

    /// The size in bytes.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The size in bytes, as a `usize`.
    pub fn bytes(self) -> usize {
        self.0 as usize
    }

    /// `pd_pagesize_version` of a page of this size with layout version 4
    /// (`PageSetPageSizeAndVersion`).
    pub(crate) fn pagesize_version(self) -> u16 {
        // The size is at most 32 KiB, so it fits; its low byte is zero.
        (self.0 as u16) | u16::from(pgark_pg::PG_PAGE_LAYOUT_VERSION)
    }
}

impl Default for BlockSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Words of a bitmap of `bits` bits.
pub(crate) fn bitmap_words(bits: usize) -> usize {
    bits.div_ceil(64)
}

/// Whether bit `i` is set.
#[inline]
pub(crate) fn bit_is_set(bitmap: &[u64], i: usize) -> bool {
    bitmap[i / 64] & (1 << (i % 64)) != 0
}

/// The positions of the set bits of `bitmap`, ascending.
pub(crate) fn set_bits(bitmap: &[u64]) -> impl Iterator<Item = usize> + '_ {
    bitmap.iter().enumerate().flat_map(|(w, &word)| {
        let mut bits = word;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let bit = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(w * 64 + bit)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes() {
        for ok in [1024, 2048, 4096, 8192, 16384, 32768] {
            let bs = BlockSize::new(ok).unwrap();
            assert_eq!(bs.get(), ok);
            assert_eq!(bs.bytes(), ok as usize);
            assert_eq!(bs.pagesize_version(), ok as u16 | 4);
        }
        for bad in [0, 1, 512, 1000, 8191, 8193, 65536, u32::MAX] {
            assert!(matches!(BlockSize::new(bad), Err(DeltaError::InvalidBlockSize(b)) if b == bad));
        }
        assert_eq!(BlockSize::default().get(), 8192);
    }

    #[test]
    fn bitmaps() {
        let map = [0b1010_0001u64, 0, 1 << 63];
        let bits: Vec<usize> = set_bits(&map).collect();
        assert_eq!(bits, [0, 5, 7, 191]);
        assert!(bit_is_set(&map, 191));
        assert!(!bit_is_set(&map, 190));
        assert_eq!(bitmap_words(0), 0);
        assert_eq!(bitmap_words(64), 1);
        assert_eq!(bitmap_words(65), 2);
    }
}
