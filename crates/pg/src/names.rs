//! Character-level rules shared by the WAL file name parsers.
//!
//! PostgreSQL recognises its file names with `strspn(fname, "0123456789ABCDEF")` and
//! writes their numbers with `%08X`; the helpers here are that rule, kept in one place so
//! that every parser accepts exactly the same digits.

/// `XLOG_FNAME_LEN`: characters in a WAL segment file name.
pub(crate) const XLOG_FNAME_LEN: usize = 24;

/// Whether `b` is one of `0123456789ABCDEF`, the set PostgreSQL's `IsXLogFileName` family
/// passes to `strspn`.
pub(crate) fn is_upper_hex_digit(b: u8) -> bool {
    b.is_ascii_digit() || (b'A'..=b'F').contains(&b)
}

/// Parses exactly eight upper-case hex digits (one `%08X` field of a file name).
pub(crate) fn parse_hex8(s: &str) -> Option<u32> {
    if s.len() != 8 || !s.bytes().all(is_upper_hex_digit) {
        return None;
    }
    u32::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digit_set() {
        let accepted: Vec<u8> = (0..=255u8).filter(|&b| is_upper_hex_digit(b)).collect();
        assert_eq!(accepted, b"0123456789ABCDEF");
    }

    #[test]
    fn hex8() {
        assert_eq!(parse_hex8("0000001A"), Some(0x1A));
        assert_eq!(parse_hex8("FFFFFFFF"), Some(u32::MAX));
        for bad in [
            "",
            "0000001",
            "000000001",
            "0000001a",
            "+0000001",
            "-0000001",
            "0000 001",
        ] {
            assert_eq!(parse_hex8(bad), None, "{bad:?}");
        }
    }
}
