//! Tests of [`WalReader`] against the WAL of real PostgreSQL 13 to 18 servers
//! (fixtures/xact, see its README) and what the servers and `pg_waldump` said about it.

use super::*;
use crate::{PgTimestamp, XLP_FIRST_IS_CONTRECORD};
use proptest::prelude::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/xact");
const MAJORS: [u32; 6] = [13, 14, 15, 16, 17, 18];
const SEG: usize = 1024 * 1024;

fn seg_size() -> WalSegmentSize {
    WalSegmentSize::new(SEG as u64).unwrap()
}

fn read(path: &str) -> Vec<u8> {
    let full = format!("{FIXTURES}/{path}");
    std::fs::read(&full).unwrap_or_else(|e| panic!("reading {full}: {e}"))
}

/// The segments of a major's fixture, in order, from its MANIFEST.
fn segments(major: u32) -> Vec<(WalSegmentName, Vec<u8>)> {
    let manifest = String::from_utf8(read(&format!("pg{major}/MANIFEST"))).unwrap();
    let line = manifest
        .lines()
        .find_map(|l| l.strip_prefix("segments: "))
        .expect("a segments line");
    line.split_whitespace()
        .map(|name| {
            let data = read(&format!("pg{major}/{name}"));
            assert_eq!(data.len(), SEG, "{major}/{name}");
            (WalSegmentName::parse(name).unwrap(), data)
        })
        .collect()
}

fn scan(segs: &[(WalSegmentName, Vec<u8>)]) -> WalScan {
    let mut reader = WalReader::new(seg_size());
    for (name, data) in segs {
        reader.push_segment(name, data).unwrap();
    }
    reader.finish()
}

/// A commit or abort line of pg_waldump.txt: (lsn, kind, xid, tx, time without " UTC").
type Dumped = (Lsn, XactKind, u32, u32, String);

fn waldump(major: u32) -> Option<Vec<Dumped>> {
    let path = format!("{FIXTURES}/pg{major}/pg_waldump.txt");
    let text = std::fs::read_to_string(path).ok()?;
    let field = |line: &str, key: &str| -> String {
        let start = line.find(key).unwrap() + key.len();
        line[start..].split(',').next().unwrap().trim().to_owned()
    };
    let mut out = Vec::new();
    for line in text.lines() {
        let desc = &line[line.find("desc: ").unwrap() + 6..];
        let desc = desc.split(';').next().unwrap();
        let (name, rest) = desc.split_once(' ').unwrap();
        let kind = match name {
            "COMMIT" => XactKind::Commit,
            "ABORT" => XactKind::Abort,
            "COMMIT_PREPARED" => XactKind::CommitPrepared,
            "ABORT_PREPARED" => XactKind::AbortPrepared,
            _ => continue,
        };
        let tx: u32 = field(line, "tx:").parse().unwrap();
        let lsn: Lsn = field(line, "lsn:").parse().unwrap();
        let (xid, time) = match rest.split_once(": ") {
            Some((xid, time)) if kind.is_prepared() => (xid.parse().unwrap(), time),
            _ => (tx, rest),
        };
        let time = time.strip_suffix(" UTC").expect("pg_waldump ran with TZ=UTC");
        out.push((lsn, kind, xid, tx, time.to_owned()));
    }
    Some(out)
}

/// sql.txt: (kind, xid, clock before, clock after, pg_xact_commit_timestamp).
fn sql(major: u32) -> Vec<(XactKind, u32, String, String, Option<String>)> {
    let text = String::from_utf8(read(&format!("pg{major}/sql.txt"))).unwrap();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert!(f.len() == 8 || (f.len() == 7 && f[6] == "-"), "{l}");
            let kind = match f[0] {
                "commit" => XactKind::Commit,
                "abort" => XactKind::Abort,
                "commit_prepared" => XactKind::CommitPrepared,
                "abort_prepared" => XactKind::AbortPrepared,
                other => panic!("kind {other}"),
            };
            let ts = (f.len() == 8).then(|| format!("{} {}", f[6], f[7]));
            (
                kind,
                f[1].parse().unwrap(),
                format!("{} {}", f[2], f[3]),
                format!("{} {}", f[4], f[5]),
                ts,
            )
        })
        .collect()
}

fn utc(t: PgTimestamp) -> String {
    t.to_string().strip_suffix(" UTC").unwrap().to_owned()
}

#[test]
fn finds_exactly_what_pg_waldump_lists() {
    for major in MAJORS {
        let segs = segments(major);
        let s = scan(&segs);
        assert_eq!(s.pg_version, major);
        // The workload ends with pg_switch_wal(): valid WAL runs to the end of the last
        // segment, and the next record would start the next one.
        let next = segs.last().unwrap().0.start_lsn(seg_size()).unwrap().0 + SEG as u64;
        assert_eq!(
            s.stop,
            WalStop::EndOfInput {
                next: Lsn(next),
                incomplete_record: None
            },
            "pg{major}"
        );
        assert_eq!(s.end_of_valid_wal, Some(Lsn(next)), "pg{major}");
        assert!(s.records > 1000, "pg{major}: {} records", s.records);
        let Some(dumped) = waldump(major) else {
            assert_eq!(major, 13, "only 13 lacks pg_waldump");
            continue;
        };
        let found: Vec<Dumped> = s
            .xacts
            .iter()
            .map(|x| (x.lsn, x.kind, x.xid, x.record_xid, utc(x.time)))
            .collect();
        assert_eq!(found, dumped, "pg{major}");
        assert_eq!(found.len(), 21, "pg{major}");
        for x in &s.xacts {
            assert!(x.end_lsn > x.lsn && x.end_lsn.0 % 8 == 0, "pg{major}: {x:?}");
        }
    }
}

#[test]
fn agrees_with_the_server() {
    for major in MAJORS {
        let s = scan(&segments(major));
        let rows = sql(major);
        assert_eq!(rows.len(), 8, "pg{major}");
        for (kind, xid, before, after, commit_ts) in &rows {
            let x = s
                .xacts
                .iter()
                .find(|x| x.xid == *xid)
                .unwrap_or_else(|| panic!("pg{major}: no record for xid {xid}"));
            assert_eq!(x.kind, *kind, "pg{major} xid {xid}");
            let time = utc(x.time);
            assert!(
                before <= &time && &time <= after,
                "pg{major} xid {xid}: {before} <= {time} <= {after}"
            );
            if let Some(ts) = commit_ts {
                assert_eq!(&time, ts, "pg{major} xid {xid}: pg_xact_commit_timestamp");
            }
            assert_eq!(x.record_xid == 0, kind.is_prepared(), "pg{major} xid {xid}");
        }
        // The last transaction of the workload is a plain commit, and only the oracle's own
        // insert commits after it.
        let last = rows.last().unwrap();
        let tail: Vec<_> = s.xacts.iter().skip_while(|x| x.xid != last.1).collect();
        assert_eq!(tail.len(), 2, "pg{major}");
        assert_eq!(s.last_xact(), Some(tail[1]));
        assert_eq!(s.last_commit(), Some(tail[1]));
        assert!(utc(tail[1].time) >= last.3, "pg{major}");
        let secs = tail[1].time.unix_seconds().unwrap();
        let system = tail[1].time.to_system_time().unwrap();
        assert_eq!(
            system.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64,
            secs
        );
    }
}

#[test]
fn records_across_page_and_segment_boundaries() {
    for major in MAJORS {
        let segs = segments(major);
        let s = scan(&segs);
        // The 2500-subtransaction commit (10 kB) is longer than a page.
        let long: Vec<_> = s.xacts.iter().filter(|x| x.end_lsn.0 - x.lsn.0 > 8192).collect();
        assert_eq!(long.len(), 1, "pg{major}");
        let across: Vec<_> = s
            .xacts
            .iter()
            .filter(|x| x.lsn.0 / 8192 != (x.end_lsn.0 - 1) / 8192)
            .collect();
        assert!(!across.is_empty(), "pg{major}");
        // Each later segment starts with the end of a record begun in the one before.
        for (name, data) in &segs[1..] {
            let h = XLogLongPageHeader::parse(data).unwrap();
            assert!(
                h.info & XLP_FIRST_IS_CONTRECORD != 0 && h.rem_len > 0,
                "pg{major} {name}: {h:?}"
            );
        }
    }
}

#[test]
fn one_segment_at_a_time() {
    for major in MAJORS {
        let segs = segments(major);
        let all = scan(&segs);
        for (i, (name, data)) in segs.iter().enumerate() {
            let start = name.start_lsn(seg_size()).unwrap();
            let end = Lsn(start.0 + SEG as u64);
            let s = read_xact_records(name, seg_size(), data).unwrap();
            // The records that start in this segment and end in it.
            let expected: Vec<_> = all
                .xacts
                .iter()
                .filter(|x| x.lsn >= start && x.end_lsn <= end)
                .copied()
                .collect();
            assert_eq!(s.xacts, expected, "pg{major} {name}");
            let first = s.first_record.unwrap();
            if i > 0 {
                // The continuation was skipped: the first record starts after it.
                let h = XLogLongPageHeader::parse(data).unwrap();
                assert!(first.0 >= start.0 + 40 + u64::from(h.rem_len), "pg{major} {name}");
            }
            if i + 1 < segs.len() {
                // The last record continues into the next segment.
                let WalStop::EndOfInput {
                    next,
                    incomplete_record: Some(lsn),
                } = s.stop
                else {
                    panic!("pg{major} {name}: {:?}", s.stop);
                };
                assert_eq!(next, end);
                assert!(lsn < end && Some(lsn) > s.last_record);
                assert_eq!(s.end_of_valid_wal, Some(lsn), "pg{major} {name}");
            } else {
                assert_eq!(s.stop, all.stop);
            }
        }
    }
}

/// The fixture's long commit record and the segment holding it (index, lsn, end).
fn long_commit(major: u32, segs: &[(WalSegmentName, Vec<u8>)]) -> (usize, XactRecord, usize) {
    let all = scan(segs);
    let x = *all
        .xacts
        .iter()
        .find(|x| x.kind == XactKind::Commit && x.end_lsn.0 - x.lsn.0 > 8192)
        .unwrap();
    let i = segs
        .iter()
        .position(|(n, _)| n.start_lsn(seg_size()).unwrap().0 / SEG as u64 == x.lsn.0 / SEG as u64)
        .unwrap();
    assert_eq!(
        x.end_lsn.0 / SEG as u64,
        x.lsn.0 / SEG as u64,
        "pg{major}: fixture assumption"
    );
    (i, x, all.xacts.iter().position(|y| *y == x).unwrap())
}

#[test]
fn corruption_stops_at_the_previous_record() {
    for major in MAJORS {
        let segs = segments(major);
        let all = scan(&segs);
        let (i, x, index) = long_commit(major, &segs);
        let off = |lsn: Lsn| (lsn.0 % SEG as u64) as usize;

        // A flipped byte in the middle of the record's subtransaction list: CRC mismatch.
        let mut bad = segs[..=i].to_vec();
        bad[i].1[off(x.lsn) + 5000] ^= 0x01;
        let s = scan(&bad);
        assert!(
            matches!(s.stop, WalStop::CrcMismatch { lsn, .. } if lsn == x.lsn),
            "pg{major}: {:?}",
            s.stop
        );
        assert_eq!(s.xacts, all.xacts[..index], "pg{major}");
        assert!(s.end_of_valid_wal.unwrap() <= x.lsn);

        // A broken xl_prev.
        let mut bad = segs[..=i].to_vec();
        bad[i].1[off(x.lsn) + 8] ^= 0x08;
        let s = scan(&bad);
        assert!(
            matches!(s.stop, WalStop::BrokenPrevLink { lsn, .. } if lsn == x.lsn),
            "pg{major}: {:?}",
            s.stop
        );
        assert_eq!(s.xacts, all.xacts[..index]);

        // Truncated in the middle of the record.
        let mut cut = segs[..=i].to_vec();
        cut[i].1.truncate(off(x.lsn) + 3000);
        let s = scan(&cut);
        assert_eq!(
            s.stop,
            WalStop::EndOfInput {
                next: Lsn(x.lsn.0 + 3000),
                incomplete_record: Some(x.lsn)
            },
            "pg{major}"
        );
        assert_eq!(s.xacts, all.xacts[..index]);
        // Pushing more after a truncated segment changes nothing.
        let mut reader = WalReader::new(seg_size());
        for (name, data) in &cut {
            reader.push_segment(name, data).unwrap();
        }
        assert!(reader.is_stopped());
        if let Some(next) = segs.get(i + 1) {
            reader.push_segment(&next.0, &next.1).unwrap();
        }
        assert_eq!(reader.finish(), s);
    }
}

#[test]
fn zero_filled_tail_and_recycled_pages_end_cleanly() {
    for major in MAJORS {
        let segs = segments(major);
        let all = scan(&segs);
        let (i, x, index) = long_commit(major, &segs);
        let off = (x.lsn.0 % SEG as u64) as usize;

        // Never written from the record on: the rest of its page and every later page zero.
        let mut zeroed = segs[..=i].to_vec();
        zeroed[i].1[off..].fill(0);
        let s = scan(&zeroed);
        assert_eq!(s.stop, WalStop::ZeroLength { lsn: x.lsn }, "pg{major}");
        assert_eq!(s.xacts, all.xacts[..index]);

        // The pages from the one after the record's start on hold an older segment's WAL
        // (a recycled segment being overwritten).
        let page = (off / 8192 + 1) * 8192;
        let mut recycled = segs[..=i].to_vec();
        let old = segs[0].1[page..].to_vec();
        let seg_start = segs[i].0.start_lsn(seg_size()).unwrap().0;
        if i > 0 {
            recycled[i].1[page..].copy_from_slice(&old);
            let s = scan(&recycled);
            assert_eq!(
                s.stop,
                WalStop::RecycledPage {
                    page: Lsn(seg_start + page as u64),
                    found: Lsn(segs[0].0.start_lsn(seg_size()).unwrap().0 + page as u64)
                },
                "pg{major}"
            );
            assert_eq!(s.xacts, all.xacts[..index]);
        }

        // A whole recycled segment: its first page is for another position.
        let (name, _) = &segs[segs.len() - 1];
        let s = read_xact_records(name, seg_size(), &segs[0].1).unwrap();
        assert!(matches!(s.stop, WalStop::RecycledPage { .. }), "pg{major}");
        assert_eq!((s.records, s.xacts.len(), s.end_of_valid_wal), (0, 0, None));
    }
}

#[test]
fn input_errors() {
    let segs = segments(16);
    let mut reader = WalReader::new(seg_size());
    reader.push_segment(&segs[0].0, &segs[0].1).unwrap();
    // Pushing the same segment again, or skipping one.
    let err = reader.push_segment(&segs[0].0, &segs[0].1).unwrap_err();
    assert!(matches!(err, PgError::WalSegmentOutOfOrder { .. }), "{err}");
    let mut too_long = segs[1].1.clone();
    too_long.push(0);
    assert!(matches!(
        reader.push_segment(&segs[1].0, &too_long),
        Err(PgError::SegmentSizeMismatch { .. })
    ));
    // Wrong segment size, not WAL, too short.
    let sixteen = WalSegmentSize::DEFAULT;
    let name16 = WalSegmentName::from_segment_no(TimelineId(1), SegmentNo(0), sixteen);
    assert!(matches!(
        read_xact_records(&name16, sixteen, &segs[0].1),
        Err(PgError::InvalidHeaderSegmentSize { .. })
    ));
    assert!(matches!(
        read_xact_records(&segs[0].0, seg_size(), &[0; 8192]),
        Err(PgError::UnknownWalMagic { .. })
    ));
    assert!(matches!(
        read_xact_records(&segs[0].0, seg_size(), &segs[0].1[..39]),
        Err(PgError::SegmentHeaderTooShort { .. })
    ));
    // Nothing pushed at all.
    let s = WalReader::new(seg_size()).finish();
    assert_eq!((s.records, s.first_record), (0, None));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A real first page header followed by random bytes, of random length.
    #[test]
    fn random_bytes_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..40_000), contrecord: bool) {
        let segs = segments(17);
        let mut data = segs[0].1[..40].to_vec();
        if contrecord {
            data[2] |= XLP_FIRST_IS_CONTRECORD as u8;
        }
        data.extend_from_slice(&tail);
        let _ = read_xact_records(&segs[0].0, seg_size(), &data);
    }

    /// A real segment pair with bytes overwritten at random places: reading stops somewhere
    /// or reads on, and never panics.
    #[test]
    fn damaged_segments_never_panic(
        hits in proptest::collection::vec((0usize..2 * SEG, any::<u8>()), 1..8),
        major in proptest::sample::select(MAJORS.to_vec()),
    ) {
        let mut segs = segments(major);
        segs.truncate(2);
        for (at, byte) in hits {
            segs[at / SEG].1[at % SEG] = byte;
        }
        let mut reader = WalReader::new(seg_size());
        for (name, data) in &segs {
            let _ = reader.push_segment(name, data);
        }
        let s = reader.finish();
        prop_assert!(s.xacts.windows(2).all(|w| w[0].lsn < w[1].lsn));
    }
}
