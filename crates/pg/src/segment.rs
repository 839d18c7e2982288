//! WAL segments: their size, their numbers and their 24-digit file names.
//!
//! PostgreSQL cuts the WAL stream into files of one fixed size chosen at `initdb`, and
//! names each after its timeline and position. Archiving and restoring WAL is mostly
//! translating between those names, segment numbers and LSNs, which this module does
//! exactly as `access/xlog_internal.h` does.

use std::fmt;
use std::str::FromStr;

use crate::names::{is_upper_hex_digit, parse_hex8, XLOG_FNAME_LEN};
use crate::{Lsn, PgError, TimelineId};

/// The size of every WAL segment of a cluster: `wal_segment_size`, a power of two from
/// 1 MiB to 1 GiB (`IsValidWalSegSize`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct WalSegmentSize(u32);

impl WalSegmentSize {
    /// `WalSegMinSize`: 1 MiB.
    pub const MIN_BYTES: u32 = 1024 * 1024;
    /// `WalSegMaxSize`: 1 GiB.
    pub const MAX_BYTES: u32 = 1024 * 1024 * 1024;
    /// `DEFAULT_XLOG_SEG_SIZE`: 16 MiB, what `initdb` uses without `--wal-segsize`.
    pub const DEFAULT: WalSegmentSize = WalSegmentSize(16 * 1024 * 1024);

    /// Accepts `bytes` when `IsValidWalSegSize` does: a power of two from 1 MiB to 1 GiB.
    pub fn new(bytes: u64) -> Result<Self, PgError> {
        if bytes.is_power_of_two()
            && (u64::from(Self::MIN_BYTES)..=u64::from(Self::MAX_BYTES)).contains(&bytes)
        {
            Ok(WalSegmentSize(bytes as u32))
        } else {
            Err(PgError::InvalidWalSegmentSize { bytes })
        }
    }

    /// The size in bytes.
    pub fn bytes(self) -> u32 {
        self.0
    }

    /// Segments per 4 GiB "log" (`XLogSegmentsPerXLogId`): the modulus of the last eight
    /// digits of a segment file name.
    pub fn segments_per_xlogid(self) -> u64 {
        0x1_0000_0000 / u64::from(self.0)
    }
}

impl Default for WalSegmentSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A segment's position in the WAL stream counted in segments: PostgreSQL's `XLogSegNo`.
///
/// The same number names a segment on every timeline; only the file name adds the timeline.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct SegmentNo(pub u64);

impl SegmentNo {
    /// The LSN of the segment's first byte (`XLogSegNoOffsetToRecPtr(segno, 0, ...)`), or
    /// `None` if it lies beyond the 64-bit WAL address space.
    pub fn start_lsn(self, size: WalSegmentSize) -> Option<Lsn> {
        self.0.checked_mul(u64::from(size.bytes())).map(Lsn)
    }

    /// The segment after this one.
    pub fn next(self) -> SegmentNo {
        SegmentNo(self.0 + 1)
    }
}

/// The name of a WAL segment file: timeline, "log" and "seg" as 24 upper-case hex digits,
/// e.g. `000000010000000000000001` (`XLogFileName`, `XLogFileNameById`).
///
/// The name alone does not say where the segment starts: that needs the segment size
/// (see [`WalSegmentName::segment_no`]).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct WalSegmentName {
    /// The first eight digits.
    pub timeline: TimelineId,
    /// The middle eight digits: the segment number divided by `XLogSegmentsPerXLogId`.
    pub log: u32,
    /// The last eight digits: the segment number modulo `XLogSegmentsPerXLogId`.
    pub seg: u32,
}

impl WalSegmentName {
    /// Parses a segment file name as `IsXLogFileName` accepts it: exactly 24 characters,
    /// all of `0123456789ABCDEF` (PostgreSQL never writes lower case, and does not take
    /// it).
    pub fn parse(s: &str) -> Result<Self, PgError> {
        let err = |reason| PgError::InvalidFileName {
            name: s.to_owned(),
            reason,
        };
        if s.len() != XLOG_FNAME_LEN {
            return Err(err("a WAL segment name has exactly 24 characters"));
        }
        if !s.bytes().all(is_upper_hex_digit) {
            return Err(err("a WAL segment name has only the characters 0-9 and A-F"));
        }
        // All ASCII now, so the slices fall on character boundaries, and each part is eight
        // valid digits.
        match (
            parse_hex8(&s[0..8]),
            parse_hex8(&s[8..16]),
            parse_hex8(&s[16..24]),
        ) {
            (Some(tli), Some(log), Some(seg)) => Ok(WalSegmentName {
                timeline: TimelineId(tli),
                log,
                seg,
            }),
            _ => Err(err("a WAL segment name has only the characters 0-9 and A-F")),
        }
    }

    /// The segment number (`XLogFromFileName`): `log * XLogSegmentsPerXLogId + seg`.
    ///
    /// Fails when `seg` is not below `XLogSegmentsPerXLogId(size)`: PostgreSQL never
    /// writes such a name, and the computed number would belong to another "log".
    pub fn segment_no(&self, size: WalSegmentSize) -> Result<SegmentNo, PgError> {
        let per = size.segments_per_xlogid();
        if u64::from(self.seg) >= per {
            return Err(PgError::SegmentOutOfRange {
                name: self.to_string(),
                seg: self.seg,
                seg_size: size.bytes(),
                segments_per_xlogid: per,
            });
        }
        // log < 2^32 and per <= 2^12, so this cannot overflow.
        Ok(SegmentNo(u64::from(self.log) * per + u64::from(self.seg)))
    }

    /// The LSN of the segment's first byte (`XLogSegNoOffsetToRecPtr(segno, 0, ...)`).
    pub fn start_lsn(&self, size: WalSegmentSize) -> Result<Lsn, PgError> {
        // With seg < per, segno < 2^32 * per = 2^64 / size, so segno * size fits in a u64.
        Ok(Lsn(self.segment_no(size)?.0 * u64::from(size.bytes())))
    }

    /// The name PostgreSQL gives segment `segno` of timeline `tli` (`XLogFileName`).
    ///
    /// Like the C code's `(uint32)` cast, a `segno` beyond the last segment of the WAL
    /// address space (one whose start LSN does not fit in 64 bits) wraps in the `log` part.
    pub fn from_segment_no(tli: TimelineId, segno: SegmentNo, size: WalSegmentSize) -> Self {
        let per = size.segments_per_xlogid();
        WalSegmentName {
            timeline: tli,
            log: (segno.0 / per) as u32,
            seg: (segno.0 % per) as u32,
        }
    }
}

impl fmt::Display for WalSegmentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}{:08X}{:08X}", self.timeline.0, self.log, self.seg)
    }
}

impl FromStr for WalSegmentName {
    type Err = PgError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn segment_sizes() {
        for bytes in [MIB, 2 * MIB, 16 * MIB, 64 * MIB, 1024 * MIB] {
            assert_eq!(u64::from(WalSegmentSize::new(bytes).unwrap().bytes()), bytes);
        }
        for bytes in [
            0,
            1,
            MIB / 2,
            MIB + 1,
            3 * MIB,
            16 * MIB - 1,
            2048 * MIB,
            u64::MAX,
            1 << 40,
        ] {
            assert_eq!(
                WalSegmentSize::new(bytes),
                Err(PgError::InvalidWalSegmentSize { bytes }),
                "{bytes}"
            );
        }
        assert_eq!(WalSegmentSize::default(), WalSegmentSize::DEFAULT);
        assert_eq!(WalSegmentSize::DEFAULT.bytes(), 16 * 1024 * 1024);
        assert_eq!(WalSegmentSize::DEFAULT.segments_per_xlogid(), 256);
        assert_eq!(WalSegmentSize::new(MIB).unwrap().segments_per_xlogid(), 4096);
        assert_eq!(WalSegmentSize::new(1024 * MIB).unwrap().segments_per_xlogid(), 4);
    }

    #[test]
    fn parse_valid_names() {
        let cases: &[(&str, u32, u32, u32)] = &[
            ("000000010000000000000001", 1, 0, 1),
            ("0000000100000016000000B3", 1, 0x16, 0xB3),
            ("FFFFFFFFFFFFFFFFFFFFFFFF", u32::MAX, u32::MAX, u32::MAX),
            ("000000000000000000000000", 0, 0, 0),
        ];
        for &(text, tli, log, seg) in cases {
            let name = WalSegmentName::parse(text).unwrap();
            assert_eq!(
                name,
                WalSegmentName {
                    timeline: TimelineId(tli),
                    log,
                    seg
                }
            );
            assert_eq!(name.to_string(), text);
            assert_eq!(text.parse::<WalSegmentName>().unwrap(), name);
        }
    }

    #[test]
    fn parse_rejects_what_is_xlog_file_name_rejects() {
        for text in [
            "",
            "00000001000000000000001",
            "0000000100000000000000010",
            "00000001000000000000000a",
            "00000001000000000000000G",
            "000000010000000000000001.partial",
            "00000001.history",
            " 00000001000000000000001",
            "+00000010000000000000001",
            "0000000100000000000000é1",
            "0000000100000000000000é",
            "0000000é000000000000001",
        ] {
            let err = WalSegmentName::parse(text).unwrap_err();
            assert!(
                matches!(err, PgError::InvalidFileName { ref name, .. } if name == text),
                "{text:?}: {err}"
            );
        }
    }

    #[test]
    fn segment_numbers_and_lsns() {
        let size16 = WalSegmentSize::DEFAULT;
        let size1 = WalSegmentSize::new(MIB).unwrap();
        let size1g = WalSegmentSize::new(1024 * MIB).unwrap();
        // (name, size, segno, start LSN)
        let cases: &[(&str, WalSegmentSize, u64, u64)] = &[
            ("000000010000000000000001", size16, 1, 0x100_0000),
            ("0000000100000016000000B3", size16, 0x16B3, 0x16_B300_0000),
            ("0000000100000000000000FF", size16, 0xFF, 0xFF00_0000),
            ("000000010000000100000000", size16, 0x100, 0x1_0000_0000),
            ("000000010000000000000FFF", size1, 0xFFF, 0xFFF0_0000),
            ("000000020000000000000009", size1, 9, 0x90_0000),
            ("000000010000000000000003", size1g, 3, 0xC000_0000),
            (
                "00000001FFFFFFFF000000FF",
                size16,
                0xFF_FFFF_FFFF,
                0xFFFF_FFFF_FF00_0000,
            ),
        ];
        for &(text, size, segno, lsn) in cases {
            let name = WalSegmentName::parse(text).unwrap();
            assert_eq!(name.segment_no(size).unwrap(), SegmentNo(segno), "{text}");
            assert_eq!(name.start_lsn(size).unwrap(), Lsn(lsn), "{text}");
            assert_eq!(SegmentNo(segno).start_lsn(size), Some(Lsn(lsn)), "{text}");
            assert_eq!(Lsn(lsn).segment_no(size), SegmentNo(segno), "{text}");
            assert_eq!(
                WalSegmentName::from_segment_no(name.timeline, SegmentNo(segno), size),
                name,
                "{text}"
            );
        }
    }

    #[test]
    fn segment_part_out_of_range() {
        // (name, size): the last eight digits reach XLogSegmentsPerXLogId.
        let cases: &[(&str, u64)] = &[
            ("000000010000000000000100", 16 * MIB),
            ("0000000100000000FFFFFFFF", 16 * MIB),
            ("000000010000000000001000", MIB),
            ("000000010000000000000004", 1024 * MIB),
        ];
        for &(text, bytes) in cases {
            let size = WalSegmentSize::new(bytes).unwrap();
            let name = WalSegmentName::parse(text).unwrap();
            let err = name.segment_no(size).unwrap_err();
            assert_eq!(
                err,
                PgError::SegmentOutOfRange {
                    name: text.to_owned(),
                    seg: name.seg,
                    seg_size: size.bytes(),
                    segments_per_xlogid: size.segments_per_xlogid(),
                }
            );
            assert_eq!(name.start_lsn(size).unwrap_err(), err);
        }
    }

    #[test]
    fn segment_no_beyond_the_address_space() {
        assert_eq!(SegmentNo(u64::MAX).start_lsn(WalSegmentSize::DEFAULT), None);
        assert_eq!(SegmentNo(7).next(), SegmentNo(8));
    }

    fn any_size() -> impl Strategy<Value = WalSegmentSize> {
        (20u32..=30).prop_map(|shift| WalSegmentSize::new(1 << shift).unwrap())
    }

    proptest! {
        #[test]
        fn from_segment_no_round_trips(tli: u32, lsn: u64, size in any_size()) {
            // Every segment number that holds some LSN.
            let segno = Lsn(lsn).segment_no(size);
            let name = WalSegmentName::from_segment_no(TimelineId(tli), segno, size);
            prop_assert_eq!(name.segment_no(size).unwrap(), segno);
            prop_assert_eq!(name.start_lsn(size).unwrap(), segno.start_lsn(size).unwrap());
            prop_assert!(name.start_lsn(size).unwrap() <= Lsn(lsn));
            prop_assert_eq!(WalSegmentName::parse(&name.to_string()).unwrap(), name);
        }

        #[test]
        fn parse_display_round_trips(tli: u32, log: u32, seg: u32) {
            let name = WalSegmentName { timeline: TimelineId(tli), log, seg };
            let text = name.to_string();
            prop_assert_eq!(text.len(), 24);
            prop_assert_eq!(WalSegmentName::parse(&text).unwrap(), name);
        }
    }
}
