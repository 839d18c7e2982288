//! What reading WAL found: the commit and abort records, and where valid WAL ended.
//!
//! [`WalReader`](crate::WalReader) reports through these types; they hold no reading state.

use crate::{Lsn, XactRecord};

/// Why reading stopped: where the valid WAL the reader was given ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum WalStop {
    /// The bytes given ran out: after the last segment pushed (a record may continue in
    /// the next one: `incomplete_record` is its start), or at the end of a segment shorter
    /// than the segment size. `next` is the first position not given.
    EndOfInput {
        /// The first WAL position past the bytes given.
        next: Lsn,
        /// The start of a record begun but not finished in the bytes given.
        incomplete_record: Option<Lsn>,
    },
    /// `xl_tot_len` is 0 where a record should start: space never written (zero-filled
    /// tail of the segment being written when it was copied).
    ZeroLength {
        /// Where the next record would have started.
        lsn: Lsn,
    },
    /// A page whose `xlp_pageaddr` is not its position: a recycled segment's old contents,
    /// not yet overwritten.
    RecycledPage {
        /// The page's position.
        page: Lsn,
        /// The `xlp_pageaddr` found.
        found: Lsn,
    },
    /// A page header that is not valid for its place (wrong magic, unknown flag bits, a
    /// long header where a short one belongs or the reverse, a timeline going back, a
    /// segment or block size other than the first page's).
    InvalidPageHeader {
        /// The page's position.
        page: Lsn,
        /// What is wrong.
        reason: &'static str,
    },
    /// `xl_prev` does not point at the previous record (`incorrect prev-link`).
    BrokenPrevLink {
        /// The record's start.
        lsn: Lsn,
        /// The previous record's start.
        expected: Lsn,
        /// The `xl_prev` found.
        found: Lsn,
    },
    /// The record's CRC-32C differs from `xl_crc` (a torn or corrupted record).
    CrcMismatch {
        /// The record's start.
        lsn: Lsn,
        /// `xl_crc`.
        stored: u32,
        /// The CRC computed over the record.
        computed: u32,
    },
    /// A record that cannot be valid: a length below 24 bytes or above the maximum, an
    /// unknown resource manager, a continuation page without `XLP_FIRST_IS_CONTRECORD` or
    /// with the wrong `xlp_rem_len`, or block headers that do not decode.
    InvalidRecord {
        /// The record's start.
        lsn: Lsn,
        /// What is wrong.
        reason: &'static str,
    },
}

impl WalStop {
    /// Whether reading stopped only because the bytes given ran out, i.e. more WAL (the
    /// next segment) may continue it.
    pub fn is_end_of_input(&self) -> bool {
        matches!(self, WalStop::EndOfInput { .. })
    }
}

/// What [`WalReader`](crate::WalReader) found.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WalScan {
    /// The PostgreSQL major version that wrote the WAL (from `xlp_magic`).
    pub pg_version: u32,
    /// The commit and abort records, in WAL order.
    pub xacts: Vec<XactRecord>,
    /// The start of every `XLOG_TBLSPC_CREATE` record (a `CREATE TABLESPACE`,
    /// whose replay links the tablespace's original location), in WAL order.
    pub tablespace_creates: Vec<Lsn>,
    /// Valid records read (all resource managers).
    pub records: u64,
    /// The start of the first valid record.
    pub first_record: Option<Lsn>,
    /// The start of the last valid record.
    pub last_record: Option<Lsn>,
    /// Where the last valid record ends (`EndRecPtr`: rounded up to 8 bytes, or the end of
    /// its segment for an `XLOG_SWITCH` record).
    pub end_of_valid_wal: Option<Lsn>,
    /// Why reading stopped.
    pub stop: WalStop,
}

impl WalScan {
    /// The last commit or abort record.
    pub fn last_xact(&self) -> Option<&XactRecord> {
        self.xacts.last()
    }

    /// The last commit record (plain or prepared).
    pub fn last_commit(&self) -> Option<&XactRecord> {
        self.xacts.iter().rev().find(|x| x.kind.is_commit())
    }
}
