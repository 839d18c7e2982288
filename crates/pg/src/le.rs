//! Little-endian integer reads at fixed offsets.
//!
//! PostgreSQL writes its on-disk structures in the byte order of the machine it runs on;
//! pgark supports only little-endian machines (x86-64, AArch64), so every multi-byte
//! field is read as little-endian. Callers check the buffer length against the structure's
//! size first; these helpers then index within it.

/// The `u16` at `buf[off..off + 2]`.
pub(crate) fn u16_at(buf: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([buf[off], buf[off + 1]])
}

/// The `u32` at `buf[off..off + 4]`.
pub(crate) fn u32_at(buf: &[u8], off: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&buf[off..off + 4]);
    u32::from_le_bytes(b)
}

/// The `u64` at `buf[off..off + 8]`.
pub(crate) fn u64_at(buf: &[u8], off: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&buf[off..off + 8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian() {
        let buf = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09];
        assert_eq!(u16_at(&buf, 0), 0x0201);
        assert_eq!(u16_at(&buf, 7), 0x0908);
        assert_eq!(u32_at(&buf, 1), 0x0504_0302);
        assert_eq!(u64_at(&buf, 1), 0x0908_0706_0504_0302);
    }
}
