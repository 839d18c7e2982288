//! Checking that a WAL segment file is what its name says.
//!
//! `archive_command` hands pgark a path and a name. Before the file is stored, its first
//! page header must agree with the name (same start position, a timeline no later than the
//! name's), come from a PostgreSQL version pgark understands, and describe a segment as long
//! as the file. Storing a mislabelled or truncated segment would surface only during a
//! restore, when it is too late, so the check is strict and its errors say exactly what
//! disagrees. The checks follow `XLogReaderValidatePageHeader` (`access/transam/xlogreader.c`)
//! for the first page of a segment.

use crate::xlog_page::{is_valid_xlog_blcksz, XLP_ALL_FLAGS, XLP_LONG_HEADER};
use crate::{pg_version_for_wal_magic, PgError, WalSegmentName, WalSegmentSize, XLogLongPageHeader};

/// What the first page of a valid segment says about the cluster that wrote it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SegmentInfo {
    /// `xlp_sysid`: the cluster's system identifier.
    pub system_identifier: u64,
    /// PostgreSQL major version, from `xlp_magic`.
    pub pg_version: u32,
    /// `xlp_seg_size`: the cluster's WAL segment size.
    pub seg_size: WalSegmentSize,
    /// The whole first page header.
    pub header: XLogLongPageHeader,
}

/// Checks that `first_page` (the start of the file, at least [`XLogLongPageHeader::SIZE`]
/// bytes) is the first page of the WAL segment `name`, written by PostgreSQL 13 to 18, and
/// that `file_len` is the segment size. Used for complete segments and for `.partial`
/// ones alike (PostgreSQL writes `.partial` files at full segment length too).
///
/// In order, it fails with:
/// - [`PgError::SegmentHeaderTooShort`]: `first_page` is shorter than the long header;
/// - [`PgError::UnknownWalMagic`]: `xlp_magic` is not from a supported version;
/// - [`PgError::InvalidInfoBits`]: `xlp_info` has bits outside `XLP_ALL_FLAGS`;
/// - [`PgError::NotLongHeader`]: `XLP_LONG_HEADER` is not set;
/// - [`PgError::InvalidHeaderSegmentSize`]: `xlp_seg_size` fails `IsValidWalSegSize`;
/// - [`PgError::SegmentSizeMismatch`]: `file_len` differs from `xlp_seg_size`;
/// - [`PgError::InvalidXLogBlockSize`]: `xlp_xlog_blcksz` is not a possible `XLOG_BLCKSZ`;
/// - [`PgError::SegmentOutOfRange`]: the name's segment part is impossible for that size;
/// - [`PgError::PageAddressMismatch`]: `xlp_pageaddr` is not the name's start LSN;
/// - [`PgError::TimelineAhead`]: `xlp_tli` is greater than the name's timeline. A smaller
///   one is accepted: the first segment of a new timeline begins as a copy of the old
///   timeline's segment, header included.
pub fn validate_segment(
    name: &WalSegmentName,
    first_page: &[u8],
    file_len: u64,
) -> Result<SegmentInfo, PgError> {
    let file = || name.to_string();
    let (header, pg_version, seg_size) = check_long_header(name, first_page)?;
    if file_len != u64::from(seg_size.bytes()) {
        return Err(PgError::SegmentSizeMismatch {
            file: file(),
            seg_size: header.seg_size,
            file_len,
        });
    }
    if !is_valid_xlog_blcksz(header.xlog_blcksz) {
        return Err(PgError::InvalidXLogBlockSize {
            file: file(),
            xlog_blcksz: header.xlog_blcksz,
        });
    }
    let expected = name.start_lsn(seg_size)?;
    if header.page_addr != expected {
        return Err(PgError::PageAddressMismatch {
            file: file(),
            found: header.page_addr,
            expected,
        });
    }
    if header.timeline > name.timeline {
        return Err(PgError::TimelineAhead {
            file: file(),
            header: header.timeline,
            name: name.timeline,
        });
    }
    Ok(SegmentInfo {
        system_identifier: header.system_identifier,
        pg_version,
        seg_size,
        header,
    })
}

/// The checks of a segment's first page that do not depend on the file
/// (the first five of [`validate_segment`], in its order): the long
/// header parses, its magic is a supported version's, its info bits are
/// known, `XLP_LONG_HEADER` is set, and `xlp_seg_size` is a valid size.
/// Returns the header, the PostgreSQL version (`PG_VERSION_NUM / 100`,
/// as [`pg_version_for_wal_magic`]) and the segment size.
pub(crate) fn check_long_header(
    name: &WalSegmentName,
    first_page: &[u8],
) -> Result<(XLogLongPageHeader, u32, WalSegmentSize), PgError> {
    let file = || name.to_string();
    let header = XLogLongPageHeader::parse(first_page).map_err(|_| PgError::SegmentHeaderTooShort {
        file: file(),
        needed: XLogLongPageHeader::SIZE,
        found: first_page.len(),
    })?;
    let pg_version = pg_version_for_wal_magic(header.magic).ok_or_else(|| PgError::UnknownWalMagic {
        file: file(),
        magic: header.magic,
    })?;
    if header.info & !XLP_ALL_FLAGS != 0 {
        return Err(PgError::InvalidInfoBits {
            file: file(),
            info: header.info,
        });
    }
    if header.info & XLP_LONG_HEADER == 0 {
        return Err(PgError::NotLongHeader {
            file: file(),
            info: header.info,
        });
    }
    let seg_size =
        WalSegmentSize::new(u64::from(header.seg_size)).map_err(|_| PgError::InvalidHeaderSegmentSize {
            file: file(),
            seg_size: header.seg_size,
        })?;
    Ok((header, pg_version, seg_size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xlog_page::{XLP_BKP_REMOVABLE, XLP_FIRST_IS_CONTRECORD};
    use crate::{ArchivedFile, Lsn, TimelineId};

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/wal");
    const MIB: u64 = 1024 * 1024;

    fn read_fixture(path: &str) -> Vec<u8> {
        let full = format!("{FIXTURES}/{path}");
        std::fs::read(&full).unwrap_or_else(|e| panic!("reading {full}: {e}"))
    }

    /// (path, system identifier) of every fixture file, from fixtures/wal/MANIFEST.
    fn manifest() -> Vec<(String, u64)> {
        let text = String::from_utf8(read_fixture("MANIFEST")).unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(f.len(), 4, "MANIFEST line {l:?}");
                assert_eq!(
                    f[1].parse::<usize>().unwrap(),
                    read_fixture(f[0]).len(),
                    "size of {}",
                    f[0]
                );
                (f[0].to_owned(), f[3].parse().unwrap())
            })
            .collect()
    }

    /// Every WAL segment fixture (complete or partial): (path, name, kind, system identifier).
    fn segment_fixtures() -> Vec<(String, WalSegmentName, ArchivedFile, u64)> {
        manifest()
            .into_iter()
            .filter(|(path, _)| !path.starts_with("heap/"))
            .filter_map(|(path, sysid)| {
                let file_name = path.rsplit('/').next().unwrap();
                let kind = ArchivedFile::parse(file_name).unwrap();
                kind.wal_segment().map(|name| (path, name, kind, sysid))
            })
            .collect()
    }

    fn one_segment(name: &str) -> (WalSegmentName, Vec<u8>) {
        (WalSegmentName::parse(name).unwrap(), read_fixture(name))
    }

    /// A 16 MiB timeline-1 segment every fixture set has.
    const TL1_SEGMENT: &str = "000000010000000000000005";

    #[test]
    fn all_fixture_segments_validate() {
        let segments = segment_fixtures();
        // Two full timeline-1 segments, one .partial, one timeline-2 segment, two 1 MiB.
        assert_eq!(segments.len(), 6, "{segments:?}");
        for (path, name, kind, sysid) in &segments {
            let data = read_fixture(path);
            let info = validate_segment(name, &data, data.len() as u64)
                .unwrap_or_else(|e| panic!("{path} should validate: {e}"));
            let expected_size = if path.starts_with("1mib/") { MIB } else { 16 * MIB };
            assert_eq!(u64::from(info.seg_size.bytes()), expected_size, "{path}");
            assert_eq!(info.pg_version, 15, "{path}");
            assert_eq!(info.system_identifier, *sysid, "{path}");
            assert_eq!(info.header.xlog_blcksz, 8192, "{path}");
            assert!(info.header.info & XLP_LONG_HEADER != 0);
            assert_eq!(
                info.header.page_addr,
                name.start_lsn(info.seg_size).unwrap(),
                "{path}"
            );
            // Only the first page is needed.
            assert_eq!(
                validate_segment(name, &data[..8192], data.len() as u64),
                Ok(info),
                "{path}"
            );
            assert_eq!(
                validate_segment(name, &data[..40], data.len() as u64),
                Ok(info),
                "{path}"
            );
            if matches!(kind, ArchivedFile::Partial(_)) {
                assert_eq!(name.timeline, TimelineId(1));
            }
        }
    }

    #[test]
    fn first_segment_of_new_timeline_carries_old_timeline() {
        // Timeline 2 forked inside segment 6: PostgreSQL copied timeline 1's segment 6,
        // header and all, so the header says timeline 1 while the name says 2.
        let (name, data) = one_segment("000000020000000000000006");
        let info = validate_segment(&name, &data, data.len() as u64).unwrap();
        assert_eq!(info.header.timeline, TimelineId(1));
        assert_eq!(name.timeline, TimelineId(2));
        // ... and the same bytes are not acceptable as a timeline-0 file.
        let tl0 = WalSegmentName {
            timeline: TimelineId(0),
            ..name
        };
        assert_eq!(
            validate_segment(&tl0, &data, data.len() as u64),
            Err(PgError::TimelineAhead {
                file: "000000000000000000000006".into(),
                header: TimelineId(1),
                name: TimelineId(0),
            })
        );
        // The history file says where timeline 2 starts: inside segment 6.
        let history = String::from_utf8(read_fixture("00000002.history")).unwrap();
        let switch: Lsn = history.split('\t').nth(1).unwrap().parse().unwrap();
        assert_eq!(
            switch.segment_no(info.seg_size),
            name.segment_no(info.seg_size).unwrap()
        );
    }

    #[test]
    fn real_headers_flags() {
        // Segment 4 begins with a record; segment 5 with the rest of one from segment 4.
        let (_, four) = one_segment("000000010000000000000004");
        let (_, five) = one_segment(TL1_SEGMENT);
        let four = XLogLongPageHeader::parse(&four).unwrap();
        let five = XLogLongPageHeader::parse(&five).unwrap();
        assert_eq!(four.info, XLP_LONG_HEADER | XLP_BKP_REMOVABLE);
        assert_eq!(four.rem_len, 0);
        assert_eq!(
            five.info,
            XLP_LONG_HEADER | XLP_BKP_REMOVABLE | XLP_FIRST_IS_CONTRECORD
        );
        assert!(five.rem_len > 0);
    }

    #[test]
    fn other_fixture_files_are_not_segments() {
        let cases: &[(&str, ArchivedFile)] = &[
            (
                "000000010000000000000003.00000028.backup",
                ArchivedFile::BackupHistory {
                    segment: WalSegmentName {
                        timeline: TimelineId(1),
                        log: 0,
                        seg: 3,
                    },
                    offset: 0x28,
                },
            ),
            ("00000002.history", ArchivedFile::TimelineHistory(TimelineId(2))),
        ];
        for (path, kind) in cases {
            assert_eq!(&ArchivedFile::parse(path).unwrap(), kind);
            assert!(kind.wal_segment().is_none());
            assert!(!read_fixture(path).is_empty());
        }
        // The backup history file's START WAL LOCATION agrees with its name.
        let backup = String::from_utf8(read_fixture(cases[0].0)).unwrap();
        assert!(
            backup.starts_with("START WAL LOCATION: 0/3000028 (file 000000010000000000000003)"),
            "{backup}"
        );
    }

    #[test]
    fn renamed_segment_has_wrong_page_address() {
        let (_, data) = one_segment(TL1_SEGMENT);
        let cases: &[(&str, Lsn)] = &[
            ("000000010000000000000004", Lsn(0x400_0000)),
            ("000000010000000000000006", Lsn(0x600_0000)),
            ("000000010000000100000005", Lsn(0x1_0500_0000)),
        ];
        for &(other, expected) in cases {
            let name = WalSegmentName::parse(other).unwrap();
            assert_eq!(
                validate_segment(&name, &data, data.len() as u64),
                Err(PgError::PageAddressMismatch {
                    file: other.into(),
                    found: Lsn(0x500_0000),
                    expected
                })
            );
        }
        // A later timeline with the same position is fine (it could be a copy at a fork).
        let later = WalSegmentName::parse("000000030000000000000005").unwrap();
        assert!(validate_segment(&later, &data, data.len() as u64).is_ok());
    }

    #[test]
    fn one_mib_segment_under_wrong_names() {
        // 1mib/000000010000000000000009 starts at 0/900000. The expected address comes from
        // the name read with the header's segment size (1 MiB): ...90 would start at 0/9000000.
        let data = read_fixture("1mib/000000010000000000000009");
        let name = WalSegmentName::parse("000000010000000000000090").unwrap();
        assert_eq!(
            validate_segment(&name, &data, data.len() as u64),
            Err(PgError::PageAddressMismatch {
                file: name.to_string(),
                found: Lsn(0x90_0000),
                expected: Lsn(0x900_0000),
            })
        );
        // With 1 MiB segments each log has 0x1000 of them: a last part of 0x1000 is impossible.
        let name = WalSegmentName::parse("000000010000000000001000").unwrap();
        assert_eq!(
            validate_segment(&name, &data, data.len() as u64),
            Err(PgError::SegmentOutOfRange {
                name: name.to_string(),
                seg: 0x1000,
                seg_size: 1 << 20,
                segments_per_xlogid: 0x1000,
            })
        );
    }

    #[test]
    fn truncated_copies_fail() {
        let (name, data) = one_segment(TL1_SEGMENT);
        // (bytes kept, expected error): the file length disagrees with xlp_seg_size, or the
        // header itself is cut.
        let cases: Vec<(usize, PgError)> = vec![
            (
                8 * 1024 * 1024,
                PgError::SegmentSizeMismatch {
                    file: TL1_SEGMENT.into(),
                    seg_size: 16 << 20,
                    file_len: 8 << 20,
                },
            ),
            (
                data.len() - 1,
                PgError::SegmentSizeMismatch {
                    file: TL1_SEGMENT.into(),
                    seg_size: 16 << 20,
                    file_len: (16 << 20) - 1,
                },
            ),
            (
                8192,
                PgError::SegmentSizeMismatch {
                    file: TL1_SEGMENT.into(),
                    seg_size: 16 << 20,
                    file_len: 8192,
                },
            ),
            (
                39,
                PgError::SegmentHeaderTooShort {
                    file: TL1_SEGMENT.into(),
                    needed: 40,
                    found: 39,
                },
            ),
            (
                0,
                PgError::SegmentHeaderTooShort {
                    file: TL1_SEGMENT.into(),
                    needed: 40,
                    found: 0,
                },
            ),
        ];
        for (keep, expected) in cases {
            let truncated = &data[..keep];
            assert_eq!(
                validate_segment(&name, truncated, keep as u64),
                Err(expected),
                "{keep} bytes"
            );
        }
        // A file longer than its segment size is no better.
        assert!(matches!(
            validate_segment(&name, &data, data.len() as u64 + 1),
            Err(PgError::SegmentSizeMismatch { .. })
        ));
    }

    /// Deterministic pseudo-random bytes (xorshift64).
    fn noise(len: usize, mut state: u64) -> Vec<u8> {
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn random_buffer_has_unknown_magic() {
        let name = WalSegmentName::parse(TL1_SEGMENT).unwrap();
        for seed in [1, 2, 0x5EED, 0xDEAD_BEEF] {
            let data = noise(8192, seed);
            let magic = u16::from_le_bytes([data[0], data[1]]);
            assert_eq!(pg_version_for_wal_magic(magic), None, "seed {seed}");
            assert_eq!(
                validate_segment(&name, &data, 16 * MIB),
                Err(PgError::UnknownWalMagic {
                    file: TL1_SEGMENT.into(),
                    magic
                })
            );
        }
        // All zeros: a preallocated segment that was never written.
        assert_eq!(
            validate_segment(&name, &[0; 8192], 16 * MIB),
            Err(PgError::UnknownWalMagic {
                file: TL1_SEGMENT.into(),
                magic: 0
            })
        );
    }

    /// The real header of segment 5 with `edit` applied.
    fn edited_header(edit: impl FnOnce(&mut [u8])) -> Vec<u8> {
        static FIRST_PAGE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        let mut page = FIRST_PAGE
            .get_or_init(|| read_fixture(TL1_SEGMENT)[..8192].to_vec())
            .clone();
        edit(&mut page);
        page
    }

    #[test]
    fn edited_headers_fail_with_the_field_that_disagrees() {
        let name = WalSegmentName::parse(TL1_SEGMENT).unwrap();
        let file = || TL1_SEGMENT.to_owned();
        let cases: Vec<(&str, Vec<u8>, PgError)> = vec![
            (
                // PostgreSQL 12's XLOG_PAGE_MAGIC.
                "unknown magic",
                edited_header(|p| p[0..2].copy_from_slice(&0xD101u16.to_le_bytes())),
                PgError::UnknownWalMagic {
                    file: file(),
                    magic: 0xD101,
                },
            ),
            (
                // A 16-bit value with the bytes swapped, as a big-endian machine would write.
                "byte-swapped magic",
                edited_header(|p| p.swap(0, 1)),
                PgError::UnknownWalMagic {
                    file: file(),
                    magic: 0x10D1,
                },
            ),
            (
                "undefined info bit",
                edited_header(|p| p[2] |= 0x10),
                PgError::InvalidInfoBits {
                    file: file(),
                    info: 0x0017,
                },
            ),
            (
                "short header on the first page",
                edited_header(|p| p[2] &= !(XLP_LONG_HEADER as u8)),
                PgError::NotLongHeader {
                    file: file(),
                    info: 0x0005,
                },
            ),
            (
                "segment size not a power of two",
                edited_header(|p| p[32..36].copy_from_slice(&3_000_000u32.to_le_bytes())),
                PgError::InvalidHeaderSegmentSize {
                    file: file(),
                    seg_size: 3_000_000,
                },
            ),
            (
                "segment size too small",
                edited_header(|p| p[32..36].copy_from_slice(&(512 * 1024u32).to_le_bytes())),
                PgError::InvalidHeaderSegmentSize {
                    file: file(),
                    seg_size: 512 * 1024,
                },
            ),
            (
                "segment size valid but not the file's",
                edited_header(|p| p[32..36].copy_from_slice(&(64u32 << 20).to_le_bytes())),
                PgError::SegmentSizeMismatch {
                    file: file(),
                    seg_size: 64 << 20,
                    file_len: 16 << 20,
                },
            ),
            (
                "WAL block size",
                edited_header(|p| p[36..40].copy_from_slice(&3000u32.to_le_bytes())),
                PgError::InvalidXLogBlockSize {
                    file: file(),
                    xlog_blcksz: 3000,
                },
            ),
            (
                "page address",
                edited_header(|p| p[8..16].copy_from_slice(&0x600_0000u64.to_le_bytes())),
                PgError::PageAddressMismatch {
                    file: file(),
                    found: Lsn(0x600_0000),
                    expected: Lsn(0x500_0000),
                },
            ),
            (
                "timeline ahead of the name",
                edited_header(|p| p[4..8].copy_from_slice(&2u32.to_le_bytes())),
                PgError::TimelineAhead {
                    file: file(),
                    header: TimelineId(2),
                    name: TimelineId(1),
                },
            ),
        ];
        for (what, page, expected) in cases {
            assert_eq!(validate_segment(&name, &page, 16 * MIB), Err(expected), "{what}");
        }
        // Each supported version's magic is accepted and reported.
        for (version, magic) in crate::XLOG_PAGE_MAGICS {
            let page = edited_header(|p| p[0..2].copy_from_slice(&magic.to_le_bytes()));
            assert_eq!(
                validate_segment(&name, &page, 16 * MIB).unwrap().pg_version,
                version
            );
        }
    }

    #[test]
    fn error_messages_name_the_file_and_values() {
        let name = WalSegmentName::parse(TL1_SEGMENT).unwrap();
        let page = edited_header(|p| p[0..2].copy_from_slice(&0xD101u16.to_le_bytes()));
        let msg = validate_segment(&name, &page, 16 * MIB).unwrap_err().to_string();
        assert!(msg.contains(TL1_SEGMENT) && msg.contains("0xD101"), "{msg}");

        let other = WalSegmentName::parse("000000010000000000000004").unwrap();
        let page = read_fixture(TL1_SEGMENT);
        let msg = validate_segment(&other, &page, 16 * MIB).unwrap_err().to_string();
        assert!(msg.contains("000000010000000000000004"), "{msg}");
        assert!(msg.contains("0/5000000") && msg.contains("0/4000000"), "{msg}");
    }

    proptest::proptest! {
        /// Arbitrary bytes never panic, and whatever passes agrees with the name.
        #[test]
        fn arbitrary_first_pages(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            file_len in proptest::prelude::any::<u64>(),
            seg in 0u32..0x200,
        ) {
            let name = WalSegmentName { timeline: TimelineId(1), log: 0, seg };
            if let Ok(info) = validate_segment(&name, &bytes, file_len) {
                proptest::prop_assert_eq!(info.header.page_addr, name.start_lsn(info.seg_size).unwrap());
                proptest::prop_assert_eq!(u64::from(info.seg_size.bytes()), file_len);
            }
        }

        /// A real header with one field replaced by an arbitrary value either still passes
        /// (the value is acceptable) or fails with an error, never a panic.
        #[test]
        fn mutated_real_header(offset in 0usize..40, value in proptest::prelude::any::<u8>()) {
            let name = WalSegmentName::parse(TL1_SEGMENT).unwrap();
            let page = edited_header(|p| p[offset] = value);
            let original = edited_header(|_| ());
            match validate_segment(&name, &page, 16 * MIB) {
                Ok(info) => proptest::prop_assert_eq!(info.header.page_addr, Lsn(0x500_0000)),
                Err(e) => proptest::prop_assert!(page != original, "{e}"),
            }
        }
    }
}
