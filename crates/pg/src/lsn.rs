//! WAL positions.
//!
//! An LSN (`XLogRecPtr` in PostgreSQL) is a byte position in the WAL stream. It is the
//! common currency between file names, page headers, backup labels and timeline
//! history files, and operators read and type it in PostgreSQL's `16/B374D848` notation,
//! so the type, its arithmetic and its text form live here.

use std::fmt;
use std::str::FromStr;

use crate::{PgError, SegmentNo, WalSegmentSize};

/// A position in the WAL: PostgreSQL's `XLogRecPtr` (`access/xlogdefs.h`).
///
/// `Display` and `FromStr` use PostgreSQL's notation (`LSN_FORMAT_ARGS`, `pg_lsn_in`): the
/// high and low 32 bits in upper-case hex without padding, separated by `/`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

/// Most hex digits on either side of the `/` (`MAXPG_LSNCOMPONENT` in `utils/adt/pg_lsn.c`).
const MAX_LSN_COMPONENT: usize = 8;

impl Lsn {
    /// `InvalidXLogRecPtr`: no position.
    pub const INVALID: Lsn = Lsn(0);

    /// Whether this is a real position (`!XLogRecPtrIsInvalid`).
    pub fn is_valid(self) -> bool {
        self != Self::INVALID
    }

    /// The segment holding the byte at this position (`XLByteToSeg`).
    pub fn segment_no(self, size: WalSegmentSize) -> SegmentNo {
        SegmentNo(self.0 / u64::from(size.bytes()))
    }

    /// Offset of this position within its segment (`XLogSegmentOffset`).
    pub fn segment_offset(self, size: WalSegmentSize) -> u32 {
        // The mask is below 1 GiB, so the result fits.
        (self.0 & (u64::from(size.bytes()) - 1)) as u32
    }

    /// `self + bytes`, or `None` past the end of the WAL address space.
    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }
}

impl From<u64> for Lsn {
    fn from(value: u64) -> Self {
        Lsn(value)
    }
}

impl From<Lsn> for u64 {
    fn from(lsn: Lsn) -> Self {
        lsn.0
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 as u32)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

impl FromStr for Lsn {
    type Err = PgError;

    /// Parses `X/X` like `pg_lsn_in_internal`: one to eight hex digits (either case) on each
    /// side of a single `/`, nothing else.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| PgError::InvalidLsn {
            input: s.to_owned(),
            reason,
        };
        let (hi, lo) = s.split_once('/').ok_or_else(|| err("missing '/'"))?;
        let part = |p: &str| -> Result<u64, PgError> {
            if p.is_empty() || p.len() > MAX_LSN_COMPONENT {
                return Err(err("each side of '/' must have 1 to 8 hex digits"));
            }
            if !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err("not a hex digit"));
            }
            u64::from_str_radix(p, 16).map_err(|_| err("not a hex digit"))
        };
        Ok(Lsn((part(hi)? << 32) | part(lo)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn display_matches_postgresql() {
        let cases: &[(u64, &str)] = &[
            (0, "0/0"),
            (0x16_B374_D848, "16/B374D848"),
            (0x0100_0028, "0/1000028"),
            (0x1_0000_0000, "1/0"),
            (u64::MAX, "FFFFFFFF/FFFFFFFF"),
        ];
        for &(value, text) in cases {
            assert_eq!(Lsn(value).to_string(), text);
            assert_eq!(text.parse::<Lsn>().unwrap(), Lsn(value), "{text}");
        }
    }

    #[test]
    fn parse_accepts_what_pg_lsn_in_accepts() {
        let cases: &[(&str, u64)] = &[
            ("16/b374d848", 0x16_B374_D848),
            ("00000016/0000B374", 0x16_0000_B374),
            ("0/0", 0),
            ("a/B", 0xA_0000_000B),
        ];
        for &(text, value) in cases {
            assert_eq!(text.parse::<Lsn>().unwrap(), Lsn(value), "{text}");
        }
    }

    #[test]
    fn parse_rejects_malformed() {
        for text in [
            "",
            "/",
            "0/",
            "/0",
            "16B374D848",
            "16/B374D848/0",
            "123456789/0",
            "0/123456789",
            " 0/0",
            "0/0 ",
            "+1/0",
            "0/-1",
            "G/0",
            "0x16/0",
            "１/0",
        ] {
            let err = text.parse::<Lsn>().unwrap_err();
            assert!(
                matches!(err, PgError::InvalidLsn { ref input, .. } if input == text),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn segment_arithmetic() {
        let size = WalSegmentSize::DEFAULT;
        let lsn = Lsn(0x16_B374_D848);
        assert_eq!(lsn.segment_no(size), SegmentNo(0x16B3));
        assert_eq!(lsn.segment_offset(size), 0x74_D848);
        let small = WalSegmentSize::new(1 << 20).unwrap();
        assert_eq!(lsn.segment_no(small), SegmentNo(0x16_B37));
        assert_eq!(lsn.segment_offset(small), 0x4_D848);
        assert_eq!(Lsn(u64::MAX).checked_add(1), None);
        assert_eq!(Lsn(1).checked_add(1), Some(Lsn(2)));
        assert!(!Lsn::INVALID.is_valid());
        assert!(Lsn(1).is_valid());
        assert_eq!(format!("{:?}", Lsn(0x1_0000_0028)), "Lsn(1/28)");
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(value: u64) {
            let text = Lsn(value).to_string();
            prop_assert_eq!(text.parse::<Lsn>().unwrap(), Lsn(value));
            prop_assert_eq!(text.to_ascii_lowercase().parse::<Lsn>().unwrap(), Lsn(value));
        }

        #[test]
        fn parse_never_panics(text in "\\PC{0,20}") {
            if let Ok(lsn) = text.parse::<Lsn>() {
                prop_assert_eq!(lsn.to_string().parse::<Lsn>().unwrap(), lsn);
            }
        }

        #[test]
        fn ordering_follows_the_number(a: u64, b: u64) {
            prop_assert_eq!(Lsn(a).cmp(&Lsn(b)), a.cmp(&b));
        }
    }
}
