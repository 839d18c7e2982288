//! Walking the records of archived WAL segments to find commit and abort records.
//!
//! [`WalReader`] is handed whole WAL segments, in order, and reads the records in them the
//! way PostgreSQL's `xlogreader.c` does: every page header is checked (`xlp_magic`,
//! `xlp_info`, `xlp_pageaddr`, `xlp_rem_len`), records are reassembled across page and
//! segment boundaries, each record's `xl_prev` must point at the record before and its
//! CRC-32C must match. The first check that fails marks the end of valid WAL, as it does
//! for recovery; the reader says which check and where ([`WalStop`]). Of the records, it
//! keeps only the commits and aborts ([`XactRecord`]).
//!
//! Memory does not depend on record sizes: a record's bytes are never gathered. Its CRC is
//! computed as its bytes stream past, the first [`MAX_RECORD_HEADERS_LEN`] bytes after its
//! header are kept to decode its block and data headers, and the main data of commit and
//! abort records is read field by field ([`XactMainData`]).

use crate::xact::XactMainData;
use crate::xlog_page::{
    is_valid_xlog_blcksz, XLP_ALL_FLAGS, XLP_FIRST_IS_CONTRECORD, XLP_FIRST_IS_OVERWRITE_CONTRECORD,
};
use crate::xlog_record::{
    decode_record_headers, record_crc, RecordLayout, MAX_RECORD_HEADERS_LEN, RM_TBLSPC_ID, RM_XACT_ID,
    XLOG_RECORD_MAX_SIZE, XLOG_TBLSPC_CREATE,
};
use crate::{
    Lsn, PgError, SegmentNo, TimelineId, WalSegmentName, WalSegmentSize, XLogLongPageHeader, XLogPageHeader,
    XLogRecordHeader, XactKind, XactRecord,
};
use crate::{WalScan, WalStop};

/// `RM_MAX_ID` of PostgreSQL 13 and 14 (`RM_LOGICALMSG_ID`); 15 and later accept every id
/// (custom resource managers take 128 to 255).
const RM_MAX_ID_V13: u8 = 21;

/// A record being read.
#[derive(Debug)]
struct Partial {
    lsn: Lsn,
    header: [u8; XLogRecordHeader::SIZE],
    header_got: usize,
    /// `xl_tot_len`, once its four bytes are in.
    tot_len: u32,
    parsed: Option<XLogRecordHeader>,
    /// Body bytes (after the header) read.
    body_got: u32,
    body_crc: u32,
    /// The first body bytes, to decode the block and data headers.
    head: Vec<u8>,
    layout: Option<Result<RecordLayout, &'static str>>,
    xact: Option<XactMainData>,
}

impl Partial {
    fn new(lsn: Lsn) -> Self {
        Partial {
            lsn,
            header: [0; XLogRecordHeader::SIZE],
            header_got: 0,
            tot_len: 0,
            parsed: None,
            body_got: 0,
            body_crc: 0,
            head: Vec::new(),
            layout: None,
            xact: None,
        }
    }

    /// Bytes of the record not read yet (once `xl_tot_len` is known).
    fn remaining(&self) -> u32 {
        self.tot_len - self.header_got as u32 - self.body_got
    }
}

#[derive(Debug)]
enum State {
    /// Skipping the end of a record begun before the first segment given.
    SkipContinuation { remaining: u32 },
    /// At `pos`, where the next record starts (after the page header if at a page start).
    BetweenRecords,
    /// Inside a record.
    InRecord(Box<Partial>),
}

/// Reads the records of consecutive WAL segments, keeping the commit and abort records.
///
/// Contract:
/// - Segments are given whole, from their first byte, in order with consecutive segment
///   numbers ([`WalReader::push_segment`]); the timeline in their names may only grow (the
///   first segment of a new timeline continues the old one's WAL). A segment shorter than
///   the segment size is taken as truncated: reading stops at its end.
/// - The first segment is read from its first record: the end of a record begun in the
///   previous segment (`xlp_rem_len` bytes, maybe over several pages or segments) is
///   skipped, and that first record's `xl_prev` cannot be checked.
/// - A record that continues into the next segment is completed by the next push; after the
///   last push, [`WalReader::finish`] reports it as [`WalStop::EndOfInput`] with
///   `incomplete_record`.
/// - Once valid WAL ended, further pushes are ignored: the scan already says where it
///   stopped.
/// - Errors ([`PgError`]) are for input that is not what the contract says: a first page
///   that is not a WAL segment's long header from PostgreSQL 13 to 18, a segment out of
///   order or longer than the segment size. A recycled first segment (its `xlp_pageaddr`
///   is not the name's start) is not an error but an immediate [`WalStop::RecycledPage`].
#[derive(Debug)]
pub struct WalReader {
    seg_size: WalSegmentSize,
    /// From the first segment's long header.
    pg_version: u32,
    magic: u16,
    blcksz: u32,
    /// The segment expected next; `None` before the first push.
    next_segment: Option<(SegmentNo, TimelineId)>,
    /// The WAL position of the next byte to read.
    pos: u64,
    state: State,
    /// The timeline of the last page read (`xlp_tli` may not go back).
    last_tli: TimelineId,
    /// The start of the last valid record, to check `xl_prev` (`None`: not checkable).
    prev: Option<Lsn>,
    records: u64,
    last_record: Option<Lsn>,
    first_record: Option<Lsn>,
    end_of_valid_wal: Option<Lsn>,
    xacts: Vec<XactRecord>,
    tablespace_creates: Vec<Lsn>,
    stop: Option<WalStop>,
}

fn maxalign(x: u64) -> u64 {
    (x + 7) & !7
}

impl WalReader {
    /// A reader for segments of `seg_size` bytes.
    pub fn new(seg_size: WalSegmentSize) -> Self {
        WalReader {
            seg_size,
            pg_version: 0,
            magic: 0,
            blcksz: 0,
            next_segment: None,
            pos: 0,
            state: State::BetweenRecords,
            last_tli: TimelineId(0),
            prev: None,
            records: 0,
            last_record: None,
            first_record: None,
            end_of_valid_wal: None,
            xacts: Vec::new(),
            tablespace_creates: Vec::new(),
            stop: None,
        }
    }

    /// Whether valid WAL has ended: further segments would be ignored.
    pub fn is_stopped(&self) -> bool {
        self.stop.is_some()
    }

    /// Reads the segment `name`, whose bytes are `bytes` (see the type's contract).
    pub fn push_segment(&mut self, name: &WalSegmentName, bytes: &[u8]) -> Result<(), PgError> {
        if self.stop.is_some() {
            return Ok(());
        }
        let file = || name.to_string();
        let seg_bytes = self.seg_size.bytes();
        if bytes.len() as u64 > u64::from(seg_bytes) {
            return Err(PgError::SegmentSizeMismatch {
                file: file(),
                seg_size: seg_bytes,
                file_len: bytes.len() as u64,
            });
        }
        let segno = name.segment_no(self.seg_size)?;
        let seg_start = name.start_lsn(self.seg_size)?.0;
        match self.next_segment {
            Some((expected, tli)) if expected != segno || name.timeline < tli => {
                return Err(PgError::WalSegmentOutOfOrder {
                    expected: WalSegmentName::from_segment_no(tli, expected, self.seg_size).to_string(),
                    found: file(),
                });
            }
            Some(_) => {}
            None => {
                if self.first_segment(name, bytes)? {
                    return Ok(());
                }
            }
        }
        self.next_segment = Some((segno.next(), name.timeline));
        self.read_segment(seg_start, bytes);
        if self.stop.is_none() && bytes.len() < seg_bytes as usize {
            self.stop = Some(self.end_of_input(seg_start + bytes.len() as u64));
        }
        Ok(())
    }

    /// Checks the first segment's long header and sets up the reader; `true` if reading
    /// stops right there (a recycled segment).
    fn first_segment(&mut self, name: &WalSegmentName, bytes: &[u8]) -> Result<bool, PgError> {
        let file = || name.to_string();
        let (header, pg_version, seg_size) = crate::validate::check_long_header(name, bytes)?;
        if seg_size != self.seg_size {
            return Err(PgError::InvalidHeaderSegmentSize {
                file: file(),
                seg_size: header.seg_size,
            });
        }
        if !is_valid_xlog_blcksz(header.xlog_blcksz) {
            return Err(PgError::InvalidXLogBlockSize {
                file: file(),
                xlog_blcksz: header.xlog_blcksz,
            });
        }
        if header.timeline > name.timeline {
            return Err(PgError::TimelineAhead {
                file: file(),
                header: header.timeline,
                name: name.timeline,
            });
        }
        self.pg_version = pg_version;
        self.magic = header.magic;
        self.blcksz = header.xlog_blcksz;
        let start = name.start_lsn(self.seg_size)?;
        self.pos = start.0;
        if header.page_addr != start {
            self.stop = Some(WalStop::RecycledPage {
                page: start,
                found: header.page_addr,
            });
            return Ok(true);
        }
        self.state = if header.info & XLP_FIRST_IS_CONTRECORD != 0 {
            State::SkipContinuation {
                remaining: header.rem_len,
            }
        } else {
            State::BetweenRecords
        };
        Ok(false)
    }

    /// The stop for running out of input at `next`.
    fn end_of_input(&self, next: u64) -> WalStop {
        WalStop::EndOfInput {
            next: Lsn(next),
            incomplete_record: match &self.state {
                State::InRecord(p) => Some(p.lsn),
                _ => None,
            },
        }
    }

    /// Reads the pages of one segment starting at WAL position `seg_start`.
    fn read_segment(&mut self, seg_start: u64, bytes: &[u8]) {
        let blcksz = self.blcksz as usize;
        let seg_end = seg_start + u64::from(self.seg_size.bytes());
        for page_off in (0..bytes.len()).step_by(blcksz) {
            let page_lsn = seg_start + page_off as u64;
            let page = &bytes[page_off..(page_off + blcksz).min(bytes.len())];
            let first_of_segment = page_off == 0;
            let needed = if first_of_segment {
                XLogLongPageHeader::SIZE
            } else {
                XLogPageHeader::SIZE
            };
            if page.len() < needed {
                // Truncated inside a page header: push_segment reports the end of input.
                return;
            }
            let Some(header) = self.check_page(page, page_lsn, first_of_segment) else {
                return;
            };
            self.pos = page_lsn + header.header_size() as u64;
            if !self.start_page(header.info, header.rem_len) {
                return;
            }
            let mut off = header.header_size();
            while off < page.len() {
                off += self.consume(&page[off..], page_lsn + off as u64);
                if self.stop.is_some() {
                    return;
                }
                if let State::BetweenRecords = self.state {
                    // The next record starts 8-byte aligned, or in the next segment after an
                    // XLOG_SWITCH record.
                    if self.pos >= seg_end {
                        return;
                    }
                    off = (self.pos - page_lsn) as usize;
                }
            }
        }
    }

    /// Checks a page header (the page holds at least the header); the header, or `None`
    /// if reading stops there.
    fn check_page(&mut self, page: &[u8], page_lsn: u64, first_of_segment: bool) -> Option<XLogPageHeader> {
        let stop = |reason| WalStop::InvalidPageHeader {
            page: Lsn(page_lsn),
            reason,
        };
        let header = XLogPageHeader::parse(page).ok()?;
        let problem = if header.magic != self.magic {
            Some(stop("wrong xlp_magic"))
        } else if header.info & !XLP_ALL_FLAGS != 0 {
            Some(stop("invalid xlp_info bits"))
        } else if header.is_long() != first_of_segment {
            Some(stop(if first_of_segment {
                "first page of a segment without XLP_LONG_HEADER"
            } else {
                "XLP_LONG_HEADER on a page that does not start a segment"
            }))
        } else if header.page_addr != Lsn(page_lsn) {
            Some(WalStop::RecycledPage {
                page: Lsn(page_lsn),
                found: header.page_addr,
            })
        } else if header.timeline < self.last_tli {
            Some(stop("out-of-sequence timeline"))
        } else if first_of_segment
            && XLogLongPageHeader::parse(page)
                .is_ok_and(|l| l.seg_size != self.seg_size.bytes() || l.xlog_blcksz != self.blcksz)
        {
            Some(stop("segment or block size differs from the first segment's"))
        } else {
            None
        };
        if let Some(problem) = problem {
            self.stop = Some(problem);
            return None;
        }
        self.last_tli = header.timeline;
        Some(header)
    }

    /// Checks the page's continuation flags against the state; `false` if reading stops.
    fn start_page(&mut self, info: u16, rem_len: u32) -> bool {
        let contrecord = info & XLP_FIRST_IS_CONTRECORD != 0;
        let overwritten = info & XLP_FIRST_IS_OVERWRITE_CONTRECORD != 0;
        let expected = match &self.state {
            State::SkipContinuation { remaining } => Some((*remaining, None)),
            State::InRecord(p) => Some((p.remaining(), Some(p.lsn))),
            State::BetweenRecords => None,
        };
        match expected {
            Some(_) if !contrecord && overwritten => {
                // The record in progress was never finished: PostgreSQL wrote new WAL over
                // its missing end (XLOG_OVERWRITE_CONTRECORD). Read on from this page; the
                // first record's xl_prev points at an unknown record.
                self.state = State::BetweenRecords;
                self.prev = None;
                true
            }
            Some((remaining, lsn)) if !contrecord || rem_len != remaining => {
                self.stop = Some(WalStop::InvalidRecord {
                    lsn: lsn.unwrap_or(Lsn(self.pos)),
                    reason: if contrecord {
                        "xlp_rem_len differs from the bytes the record still needs"
                    } else {
                        "continuation page without XLP_FIRST_IS_CONTRECORD"
                    },
                });
                false
            }
            Some(_) => true,
            None if contrecord => {
                self.stop = Some(WalStop::InvalidRecord {
                    lsn: Lsn(self.pos),
                    reason: "XLP_FIRST_IS_CONTRECORD where a record should start",
                });
                false
            }
            None => true,
        }
    }

    /// Consumes bytes at `at` (all within one page, after its header) for the current
    /// state; returns how many were used. Leaves `pos` at the next unread position.
    fn consume(&mut self, data: &[u8], at: u64) -> usize {
        match &mut self.state {
            State::SkipContinuation { remaining } => {
                let n = (*remaining as usize).min(data.len());
                *remaining -= n as u32;
                self.pos = at + n as u64;
                if *remaining == 0 {
                    self.pos = maxalign(self.pos);
                    self.state = State::BetweenRecords;
                }
                n
            }
            State::BetweenRecords => {
                self.state = State::InRecord(Box::new(Partial::new(Lsn(at))));
                0
            }
            State::InRecord(_) => self.record_bytes(data, at),
        }
    }

    /// Feeds bytes to the record in progress.
    fn record_bytes(&mut self, mut data: &[u8], at: u64) -> usize {
        let State::InRecord(p) = &mut self.state else {
            return 0;
        };
        let mut used = 0;
        if p.header_got < XLogRecordHeader::SIZE {
            let n = (XLogRecordHeader::SIZE - p.header_got).min(data.len());
            p.header[p.header_got..p.header_got + n].copy_from_slice(&data[..n]);
            p.header_got += n;
            used += n;
            data = &data[n..];
            if p.header_got >= 4 && p.tot_len == 0 {
                p.tot_len = u32::from_le_bytes([p.header[0], p.header[1], p.header[2], p.header[3]]);
                if let Some(stop) = check_tot_len(p.tot_len, p.lsn) {
                    self.stop = Some(stop);
                    return used;
                }
            }
            if p.header_got < XLogRecordHeader::SIZE {
                self.pos = at + used as u64;
                return used;
            }
            let Ok(h) = XLogRecordHeader::parse(&p.header) else {
                return used;
            };
            if self.pg_version < 15 && h.rmid > RM_MAX_ID_V13 {
                self.stop = Some(WalStop::InvalidRecord {
                    lsn: p.lsn,
                    reason: "invalid resource manager ID",
                });
                return used;
            }
            if let Some(expected) = self.prev {
                if h.prev != expected {
                    self.stop = Some(WalStop::BrokenPrevLink {
                        lsn: p.lsn,
                        expected,
                        found: h.prev,
                    });
                    return used;
                }
            }
            if h.rmid == RM_TBLSPC_ID && h.rmgr_info() == XLOG_TBLSPC_CREATE {
                self.tablespace_creates.push(p.lsn);
            }
            if h.rmid == RM_XACT_ID {
                if let Some(kind) = XactKind::from_info(h.info) {
                    p.xact = Some(XactMainData::new(kind, h.info, self.pg_version));
                }
            }
            p.parsed = Some(h);
        }
        let body_len = p.tot_len - XLogRecordHeader::SIZE as u32;
        let n = (body_len - p.body_got).min(data.len() as u32) as usize;
        let chunk = &data[..n];
        p.body_crc = crc32c::crc32c_append(p.body_crc, chunk);
        let head_len = (body_len as usize).min(MAX_RECORD_HEADERS_LEN);
        let mut rest = chunk;
        let mut rest_off = p.body_got; // body offset of rest[0]
        if p.layout.is_none() {
            let take = (head_len - p.head.len()).min(rest.len());
            p.head.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            rest_off += take as u32;
            if p.head.len() == head_len {
                let layout = decode_record_headers(&p.head, body_len, self.pg_version);
                if let (Ok(l), Some(x)) = (&layout, &mut p.xact) {
                    let main = l.main_data_offset(body_len) as usize;
                    if main < p.head.len() {
                        x.feed(&p.head[main..]);
                    }
                }
                p.layout = Some(layout);
                p.head = Vec::new();
            }
        }
        if let (Some(Ok(l)), Some(x)) = (&p.layout, &mut p.xact) {
            let main = l.main_data_offset(body_len);
            let end = rest_off + rest.len() as u32;
            if end > main {
                let from = main.saturating_sub(rest_off) as usize;
                x.feed(&rest[from..]);
            }
        }
        p.body_got += n as u32;
        used += n;
        self.pos = at + used as u64;
        if p.body_got == body_len {
            self.finish_record();
        }
        used
    }

    /// The record in progress is complete: checks its CRC and layout, keeps it if it is a
    /// commit or abort, and moves to the next record.
    fn finish_record(&mut self) {
        let State::InRecord(p) = std::mem::replace(&mut self.state, State::BetweenRecords) else {
            return;
        };
        let Some(h) = p.parsed else {
            return;
        };
        let computed = record_crc(p.body_crc, &p.header);
        if computed != h.crc {
            self.stop = Some(WalStop::CrcMismatch {
                lsn: p.lsn,
                stored: h.crc,
                computed,
            });
            return;
        }
        if let Some(Err(reason)) = p.layout {
            self.stop = Some(WalStop::InvalidRecord { lsn: p.lsn, reason });
            return;
        }
        let seg = u64::from(self.seg_size.bytes());
        let end = if h.is_switch() {
            // The rest of the segment is unused: the next record starts the next segment.
            self.pos.div_ceil(seg) * seg
        } else {
            maxalign(self.pos)
        };
        if let Some(record) = p.xact.as_ref().and_then(|x| x.finish(p.lsn, Lsn(end), h.xid)) {
            self.xacts.push(record);
        }
        self.records += 1;
        self.first_record.get_or_insert(p.lsn);
        self.prev = Some(p.lsn);
        self.last_record = Some(p.lsn);
        self.end_of_valid_wal = Some(Lsn(end));
        self.pos = end;
    }

    /// The result, once every segment was pushed.
    pub fn finish(self) -> WalScan {
        let stop = match self.stop {
            Some(stop) => stop,
            None => {
                let next = match self.next_segment {
                    Some((segno, _)) => segno.start_lsn(self.seg_size).map_or(u64::MAX, |l| l.0),
                    None => self.pos,
                };
                self.end_of_input(next)
            }
        };
        WalScan {
            pg_version: self.pg_version,
            xacts: self.xacts,
            tablespace_creates: self.tablespace_creates,
            records: self.records,
            first_record: self.first_record,
            last_record: self.last_record,
            end_of_valid_wal: self.end_of_valid_wal,
            stop,
        }
    }
}

/// `xl_tot_len` checks made as soon as it is read (`ValidXLogRecordHeader`).
fn check_tot_len(tot_len: u32, lsn: Lsn) -> Option<WalStop> {
    if tot_len == 0 {
        Some(WalStop::ZeroLength { lsn })
    } else if (tot_len as usize) < XLogRecordHeader::SIZE {
        Some(WalStop::InvalidRecord {
            lsn,
            reason: "record length below SizeOfXLogRecord",
        })
    } else if tot_len > XLOG_RECORD_MAX_SIZE {
        Some(WalStop::InvalidRecord {
            lsn,
            reason: "record length above XLogRecordMaxSize",
        })
    } else {
        None
    }
}

/// Reads the commit and abort records of one segment: [`WalReader`] given `segment` alone.
/// A record continuing into the next segment ends the scan as
/// [`WalStop::EndOfInput`] with `incomplete_record`.
///
/// ```
/// use pgark_pg::{read_xact_records, WalSegmentName, WalSegmentSize, WalStop};
///
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/xact/pg16");
/// let name = WalSegmentName::parse("000000010000000000000007")?;
/// let bytes = std::fs::read(format!("{dir}/{name}")).unwrap();
/// let scan = read_xact_records(&name, WalSegmentSize::new(1 << 20)?, &bytes)?;
/// let last = scan.last_commit().expect("commits");
/// assert!(last.time.unix_seconds().unwrap() > 1_700_000_000);
/// // The segment ends with pg_switch_wal()'s record: nothing continues past it.
/// assert!(matches!(scan.stop, WalStop::EndOfInput { incomplete_record: None, .. }));
/// # Ok::<(), pgark_pg::PgError>(())
/// ```
pub fn read_xact_records(
    name: &WalSegmentName,
    seg_size: WalSegmentSize,
    segment: &[u8],
) -> Result<WalScan, PgError> {
    let mut reader = WalReader::new(seg_size);
    reader.push_segment(name, segment)?;
    Ok(reader.finish())
}

#[cfg(test)]
#[path = "wal_reader_tests.rs"]
mod tests;
