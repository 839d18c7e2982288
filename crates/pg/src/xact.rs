//! Transaction commit and abort records, and the time they carry.
//!
//! Every transaction that got an xid ends with an `RM_XACT_ID` record: `XLOG_XACT_COMMIT`
//! or `XLOG_XACT_ABORT`, or for a prepared transaction `XLOG_XACT_COMMIT_PREPARED` or
//! `XLOG_XACT_ABORT_PREPARED`. Their main data starts with `xact_time`, the time of the
//! commit or abort, which is what `recovery_target_time` is compared with: the time of the
//! last such record in a WAL archive is how far a point-in-time recovery can reach. The
//! layouts are `xl_xact_commit` and `xl_xact_abort` and what follows them, in
//! `access/xact.h`, as `ParseCommitRecord` and `ParseAbortRecord`
//! (`access/rmgrdesc/xactdesc.c`) read them.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Lsn;

/// `XLOG_XACT_OPMASK`: the bits of `xl_info` that say which xact record this is.
pub const XLOG_XACT_OPMASK: u8 = 0x70;
/// `XLOG_XACT_HAS_INFO`: an `xl_xact_xinfo` follows `xact_time`.
pub const XLOG_XACT_HAS_INFO: u8 = 0x80;
/// `XLOG_XACT_COMMIT`.
pub const XLOG_XACT_COMMIT: u8 = 0x00;
/// `XLOG_XACT_ABORT`.
pub const XLOG_XACT_ABORT: u8 = 0x20;
/// `XLOG_XACT_COMMIT_PREPARED`.
pub const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
/// `XLOG_XACT_ABORT_PREPARED`.
pub const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;

const XACT_XINFO_HAS_DBINFO: u32 = 1 << 0;
const XACT_XINFO_HAS_SUBXACTS: u32 = 1 << 1;
const XACT_XINFO_HAS_RELFILENODES: u32 = 1 << 2;
const XACT_XINFO_HAS_INVALS: u32 = 1 << 3;
const XACT_XINFO_HAS_TWOPHASE: u32 = 1 << 4;
/// PostgreSQL 15 and later.
const XACT_XINFO_HAS_DROPPED_STATS: u32 = 1 << 8;

/// A PostgreSQL `TimestampTz`: microseconds since 2000-01-01 00:00:00 UTC
/// (`POSTGRES_EPOCH_JDATE`), as `int64` (`datatype/timestamp.h`).
///
/// `Display` prints it as PostgreSQL's `timestamptz_to_str` does in the UTC zone, the form
/// `pg_waldump` shows with `TZ=UTC`: `2026-01-02 03:04:05.678901 UTC`; and the two special
/// values `DT_NOBEGIN` / `DT_NOEND` as `-infinity` / `infinity`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct PgTimestamp(pub i64);

impl PgTimestamp {
    /// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
    pub const POSTGRES_EPOCH_UNIX_SECS: i64 = 946_684_800;
    /// `DT_NOBEGIN`: `-infinity`.
    pub const NOBEGIN: PgTimestamp = PgTimestamp(i64::MIN);
    /// `DT_NOEND`: `infinity`.
    pub const NOEND: PgTimestamp = PgTimestamp(i64::MAX);

    /// Whether this is `-infinity` or `infinity` (`TIMESTAMP_NOT_FINITE`).
    pub fn is_finite(self) -> bool {
        self != Self::NOBEGIN && self != Self::NOEND
    }

    /// Microseconds since the Unix epoch; `None` if infinite or out of `i64` range.
    pub fn unix_micros(self) -> Option<i64> {
        if !self.is_finite() {
            return None;
        }
        self.0.checked_add(Self::POSTGRES_EPOCH_UNIX_SECS * 1_000_000)
    }

    /// Whole seconds since the Unix epoch (rounded down); `None` like [`Self::unix_micros`].
    pub fn unix_seconds(self) -> Option<i64> {
        self.unix_micros().map(|us| us.div_euclid(1_000_000))
    }

    /// The same instant as a [`SystemTime`]; `None` if infinite or not representable.
    pub fn to_system_time(self) -> Option<SystemTime> {
        let us = self.unix_micros()?;
        let magnitude = Duration::from_micros(us.unsigned_abs());
        if us >= 0 {
            UNIX_EPOCH.checked_add(magnitude)
        } else {
            UNIX_EPOCH.checked_sub(magnitude)
        }
    }

    /// The timestamp of `micros` microseconds since the Unix epoch; `None` on overflow.
    pub fn from_unix_micros(micros: i64) -> Option<PgTimestamp> {
        micros
            .checked_sub(Self::POSTGRES_EPOCH_UNIX_SECS * 1_000_000)
            .map(PgTimestamp)
    }
}

/// Civil date (proleptic Gregorian) of `days` since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Count in 400-year eras starting on 0000-03-01, where leap days fall at era ends.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1
    let mp = (5 * doy + 2) / 153; // month from March, 0..11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for PgTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(us) = self.unix_micros() else {
            return f.write_str(if *self == Self::NOBEGIN {
                "-infinity"
            } else {
                "infinity"
            });
        };
        let secs = us.div_euclid(1_000_000);
        let frac = us.rem_euclid(1_000_000);
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        write!(
            f,
            "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{frac:06} UTC",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )
    }
}

/// Which end of a transaction an xact record is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum XactKind {
    /// `XLOG_XACT_COMMIT`.
    Commit,
    /// `XLOG_XACT_ABORT`.
    Abort,
    /// `XLOG_XACT_COMMIT_PREPARED`: `COMMIT PREPARED` of a two-phase transaction.
    CommitPrepared,
    /// `XLOG_XACT_ABORT_PREPARED`: `ROLLBACK PREPARED` of a two-phase transaction.
    AbortPrepared,
}

impl XactKind {
    /// The kind of an `RM_XACT_ID` record with `xl_info` `info`; `None` for the other xact
    /// records (`XLOG_XACT_PREPARE`, `XLOG_XACT_ASSIGNMENT`, `XLOG_XACT_INVALIDATIONS`).
    pub fn from_info(info: u8) -> Option<XactKind> {
        match info & XLOG_XACT_OPMASK {
            XLOG_XACT_COMMIT => Some(XactKind::Commit),
            XLOG_XACT_ABORT => Some(XactKind::Abort),
            XLOG_XACT_COMMIT_PREPARED => Some(XactKind::CommitPrepared),
            XLOG_XACT_ABORT_PREPARED => Some(XactKind::AbortPrepared),
            _ => None,
        }
    }

    /// Whether the transaction committed.
    pub fn is_commit(self) -> bool {
        matches!(self, XactKind::Commit | XactKind::CommitPrepared)
    }

    /// Whether the record ends a prepared transaction.
    pub fn is_prepared(self) -> bool {
        matches!(self, XactKind::CommitPrepared | XactKind::AbortPrepared)
    }

    /// The name `pg_waldump` shows (`xact_identify`): `COMMIT`, `ABORT`,
    /// `COMMIT_PREPARED`, `ABORT_PREPARED`.
    pub fn name(self) -> &'static str {
        match self {
            XactKind::Commit => "COMMIT",
            XactKind::Abort => "ABORT",
            XactKind::CommitPrepared => "COMMIT_PREPARED",
            XactKind::AbortPrepared => "ABORT_PREPARED",
        }
    }
}

/// A commit or abort record found in the WAL.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct XactRecord {
    /// Where the record starts.
    pub lsn: Lsn,
    /// Where it ends, rounded up to 8 bytes (`EndRecPtr` of PostgreSQL's reader): the
    /// position recovery has replayed up to once it applied this record.
    pub end_lsn: Lsn,
    /// Commit or abort, plain or prepared.
    pub kind: XactKind,
    /// The transaction that ended: `xl_xid` for a plain commit or abort, the prepared
    /// transaction's xid (`xl_xact_twophase`) for the prepared kinds.
    pub xid: u32,
    /// `xl_xid` of the record: 0 for the prepared kinds, written by a session with no xid.
    pub record_xid: u32,
    /// `xact_time`: when the transaction committed or aborted.
    pub time: PgTimestamp,
}

/// Size of the array elements that follow each count in xact main data.
const SUBXACT_SIZE: u64 = 4; // TransactionId
const REL_SIZE: u64 = 12; // RelFileNode / RelFileLocator
const INVAL_SIZE: u64 = 16; // SharedInvalidationMessage

/// The parts of `xl_xact_commit` / `xl_xact_abort` read in order after `xl_xact_xinfo`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Part {
    Subxacts,
    Rels,
    Stats,
    Invals,
    Twophase,
}

const PARTS: [Part; 5] = [
    Part::Subxacts,
    Part::Rels,
    Part::Stats,
    Part::Invals,
    Part::Twophase,
];

/// The next field the parser waits for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Want {
    Time,
    Xinfo,
    /// The `int` count of a part's array.
    Count(Part),
    TwophaseXid,
}

/// Reads `xact_time` and the prepared transaction's xid from the main data of a commit or
/// abort record as it streams past, without keeping the data: only the few fields needed
/// are copied, the arrays between them (subtransactions, relations, dropped statistics,
/// invalidation messages) are skipped by their counts. Memory does not grow with the
/// record's size.
#[derive(Clone, Debug)]
pub(crate) struct XactMainData {
    kind: XactKind,
    has_info: bool,
    pg_version: u32,
    /// Main data bytes seen so far.
    pos: u64,
    /// The field awaited and its offset in the main data; `None` once done or failed.
    want: Option<(Want, u64)>,
    acc: [u8; 8],
    got: usize,
    xinfo: u32,
    time: Option<i64>,
    twophase_xid: Option<u32>,
    failed: bool,
}

impl XactMainData {
    /// A parser for the main data of a record of `kind` with `xl_info` `info`.
    pub(crate) fn new(kind: XactKind, info: u8, pg_version: u32) -> Self {
        XactMainData {
            kind,
            has_info: info & XLOG_XACT_HAS_INFO != 0,
            pg_version,
            pos: 0,
            want: Some((Want::Time, 0)),
            acc: [0; 8],
            got: 0,
            xinfo: 0,
            time: None,
            twophase_xid: None,
            failed: false,
        }
    }

    /// Takes the next main data bytes.
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        while let Some((want, at)) = self.want {
            if self.pos < at {
                let skip = (at - self.pos).min(data.len() as u64) as usize;
                self.pos += skip as u64;
                data = &data[skip..];
                if self.pos < at {
                    return;
                }
            }
            let width = if want == Want::Time { 8 } else { 4 };
            let take = (width - self.got).min(data.len());
            self.acc[self.got..self.got + take].copy_from_slice(&data[..take]);
            self.got += take;
            self.pos += take as u64;
            data = &data[take..];
            if self.got < width {
                return;
            }
            self.got = 0;
            self.field(want, at + width as u64);
        }
    }

    fn field(&mut self, want: Want, after: u64) {
        let value32 = u32::from_le_bytes([self.acc[0], self.acc[1], self.acc[2], self.acc[3]]);
        match want {
            Want::Time => {
                self.time = Some(i64::from_le_bytes(self.acc));
                self.want = if self.has_info {
                    Some((Want::Xinfo, after))
                } else {
                    None
                };
            }
            Want::Xinfo => {
                self.xinfo = value32;
                let at = if value32 & XACT_XINFO_HAS_DBINFO != 0 {
                    after + 8
                } else {
                    after
                };
                self.next_part(0, at);
            }
            Want::Count(part) => {
                let count = value32 as i32;
                if count < 0 {
                    self.failed = true;
                    self.want = None;
                    return;
                }
                let size = match part {
                    Part::Subxacts => SUBXACT_SIZE,
                    Part::Rels => REL_SIZE,
                    Part::Invals => INVAL_SIZE,
                    // xl_xact_stats_item: kind, dboid, objoid; 18 splits a 64-bit objid.
                    Part::Stats if self.pg_version >= 18 => 16,
                    Part::Stats => 12,
                    Part::Twophase => 0,
                };
                let index = PARTS.iter().position(|&p| p == part).unwrap_or(PARTS.len());
                self.next_part(index + 1, after + count as u64 * size);
            }
            Want::TwophaseXid => {
                self.twophase_xid = Some(value32);
                self.want = None;
            }
        }
    }

    /// Waits for the first part from `PARTS[from..]` that `xinfo` says is present, at `at`.
    fn next_part(&mut self, from: usize, at: u64) {
        self.want = None;
        for &part in PARTS.iter().skip(from) {
            let present = match part {
                Part::Subxacts => self.xinfo & XACT_XINFO_HAS_SUBXACTS != 0,
                Part::Rels => self.xinfo & XACT_XINFO_HAS_RELFILENODES != 0,
                Part::Stats => self.pg_version >= 15 && self.xinfo & XACT_XINFO_HAS_DROPPED_STATS != 0,
                // Abort records carry no invalidation messages.
                Part::Invals => self.kind.is_commit() && self.xinfo & XACT_XINFO_HAS_INVALS != 0,
                Part::Twophase => self.xinfo & XACT_XINFO_HAS_TWOPHASE != 0,
            };
            if present {
                let want = if part == Part::Twophase {
                    Want::TwophaseXid
                } else {
                    Want::Count(part)
                };
                self.want = Some((want, at));
                return;
            }
        }
    }

    /// The record, once all its main data was fed; `None` if the main data ended before
    /// the fields it announces (PostgreSQL would read past it; such a record is not
    /// reported).
    pub(crate) fn finish(&self, lsn: Lsn, end_lsn: Lsn, record_xid: u32) -> Option<XactRecord> {
        if self.failed || self.want.is_some() {
            return None;
        }
        let xid = if self.kind.is_prepared() {
            self.twophase_xid.unwrap_or(record_xid)
        } else {
            record_xid
        };
        Some(XactRecord {
            lsn,
            end_lsn,
            kind: self.kind,
            xid,
            record_xid,
            time: PgTimestamp(self.time?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamps() {
        let t = PgTimestamp(0);
        assert_eq!(t.to_string(), "2000-01-01 00:00:00.000000 UTC");
        assert_eq!(t.unix_seconds(), Some(946_684_800));
        assert_eq!(
            t.to_system_time(),
            Some(UNIX_EPOCH + Duration::from_secs(946_684_800))
        );
        // 2024-02-29 12:34:56.789012 UTC (a leap day).
        let leap = PgTimestamp::from_unix_micros(1_709_210_096_789_012).unwrap();
        assert_eq!(leap.to_string(), "2024-02-29 12:34:56.789012 UTC");
        assert_eq!(leap.unix_micros(), Some(1_709_210_096_789_012));
        assert_eq!(leap.unix_seconds(), Some(1_709_210_096));
        // Before both epochs.
        let old = PgTimestamp::from_unix_micros(-1).unwrap();
        assert_eq!(old.to_string(), "1969-12-31 23:59:59.999999 UTC");
        assert_eq!(old.unix_seconds(), Some(-1));
        assert_eq!(old.to_system_time(), Some(UNIX_EPOCH - Duration::from_micros(1)));
        assert_eq!(PgTimestamp::NOEND.to_string(), "infinity");
        assert_eq!(PgTimestamp::NOBEGIN.to_string(), "-infinity");
        assert_eq!(PgTimestamp::NOEND.to_system_time(), None);
        assert_eq!(PgTimestamp(i64::MAX - 1).unix_micros(), None);
    }

    #[test]
    fn kinds() {
        assert_eq!(XactKind::from_info(0x00), Some(XactKind::Commit));
        assert_eq!(XactKind::from_info(0x80), Some(XactKind::Commit));
        assert_eq!(XactKind::from_info(0xA0), Some(XactKind::Abort));
        assert_eq!(XactKind::from_info(0x30), Some(XactKind::CommitPrepared));
        assert_eq!(XactKind::from_info(0xC0), Some(XactKind::AbortPrepared));
        for other in [0x10, 0x50, 0x60, 0x70, 0x90] {
            assert_eq!(XactKind::from_info(other), None, "{other:#x}");
        }
        assert!(XactKind::CommitPrepared.is_commit() && XactKind::CommitPrepared.is_prepared());
        assert!(!XactKind::Abort.is_commit() && !XactKind::Abort.is_prepared());
        assert_eq!(XactKind::AbortPrepared.name(), "ABORT_PREPARED");
    }

    /// Main data of a commit prepared record with every part before the two-phase xid.
    fn commit_prepared_main(pg_version: u32) -> Vec<u8> {
        let mut d = 123_456_789i64.to_le_bytes().to_vec();
        let xinfo = XACT_XINFO_HAS_DBINFO
            | XACT_XINFO_HAS_SUBXACTS
            | XACT_XINFO_HAS_RELFILENODES
            | XACT_XINFO_HAS_DROPPED_STATS
            | XACT_XINFO_HAS_INVALS
            | XACT_XINFO_HAS_TWOPHASE
            | (1 << 7);
        d.extend_from_slice(&xinfo.to_le_bytes());
        d.extend_from_slice(&[0xDB; 8]);
        d.extend_from_slice(&2i32.to_le_bytes());
        d.extend_from_slice(&[0x5B; 8]);
        d.extend_from_slice(&1i32.to_le_bytes());
        d.extend_from_slice(&[0x4E; 12]);
        d.extend_from_slice(&3i32.to_le_bytes());
        d.resize(d.len() + 3 * if pg_version >= 18 { 16 } else { 12 }, 0x57);
        d.extend_from_slice(&2i32.to_le_bytes());
        d.extend_from_slice(&[0x1A; 32]);
        d.extend_from_slice(&777u32.to_le_bytes());
        d.extend_from_slice(b"gid\0");
        d
    }

    #[test]
    fn main_data_all_parts_any_chunking() {
        for version in [15, 17, 18] {
            let main = commit_prepared_main(version);
            for chunk in [1, 3, 7, 8, 64, main.len()] {
                let mut p = XactMainData::new(XactKind::CommitPrepared, 0xB0, version);
                for c in main.chunks(chunk) {
                    p.feed(c);
                }
                let r = p.finish(Lsn(1), Lsn(2), 0).unwrap();
                assert_eq!((r.xid, r.record_xid, r.time), (777, 0, PgTimestamp(123_456_789)));
            }
            // Cut short before the two-phase xid: not a record.
            let mut p = XactMainData::new(XactKind::CommitPrepared, 0xB0, version);
            p.feed(&main[..main.len() - 6]);
            assert_eq!(p.finish(Lsn(1), Lsn(2), 0), None);
        }
    }

    #[test]
    fn main_data_without_info() {
        let mut p = XactMainData::new(XactKind::Commit, 0x00, 13);
        p.feed(&42i64.to_le_bytes());
        let r = p.finish(Lsn(8), Lsn(48), 900).unwrap();
        assert_eq!((r.kind, r.xid, r.time), (XactKind::Commit, 900, PgTimestamp(42)));
        let mut p = XactMainData::new(XactKind::Commit, 0x00, 13);
        p.feed(&[1, 2, 3]);
        assert_eq!(p.finish(Lsn(8), Lsn(48), 900), None);
        // A negative count.
        let mut p = XactMainData::new(XactKind::Abort, 0x80, 16);
        p.feed(&0i64.to_le_bytes());
        p.feed(&XACT_XINFO_HAS_SUBXACTS.to_le_bytes());
        p.feed(&(-1i32).to_le_bytes());
        assert_eq!(p.finish(Lsn(8), Lsn(48), 900), None);
    }

    proptest! {
        #[test]
        fn display_matches_civil_arithmetic(secs in -5_000_000_000i64..20_000_000_000, us in 0i64..1_000_000) {
            let t = PgTimestamp::from_unix_micros(secs * 1_000_000 + us).unwrap();
            let text = t.to_string();
            prop_assert!(text.ends_with(" UTC"));
            prop_assert_eq!(t.unix_seconds(), Some(secs));
            // Days since 1970 by counting back from the printed date.
            let (y, m, d): (i64, i64, i64) = (
                text[..4].parse().unwrap(), text[5..7].parse().unwrap(), text[8..10].parse().unwrap());
            let a = i64::from(m <= 2);
            let (y2, m2) = (y - a, m + 12 * a - 3);
            let days = 365 * y2 + y2.div_euclid(4) - y2.div_euclid(100) + y2.div_euclid(400)
                + (153 * m2 + 2) / 5 + d - 1 - 719_468;
            prop_assert_eq!(days, secs.div_euclid(86_400));
        }

        #[test]
        fn main_data_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), info: u8, v in 13u32..=18) {
            if let Some(kind) = XactKind::from_info(info) {
                let mut p = XactMainData::new(kind, info, v);
                p.feed(&data);
                let _ = p.finish(Lsn(0), Lsn(0), 0);
            }
        }
    }
}
