//! The crate's single error type.
//!
//! Every parser and check in this crate reports through [`PgError`] so that callers (the
//! archiving engine, the command line) can show one message that says *which* file or
//! value was wrong and *what* was found versus what PostgreSQL would have written.

use crate::{Lsn, TimelineId};

/// Everything that can be wrong with a PostgreSQL file name, WAL header or page as seen by
/// this crate.
///
/// Variants carry the offending input (file name, value found) and, where there is one,
/// the value that was expected, so that their `Display` text can be shown to an operator
/// as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PgError {
    /// Text that is not an LSN in PostgreSQL's `X/X` notation (`pg_lsn_in_internal`).
    #[error("invalid LSN {input:?}: {reason}")]
    InvalidLsn {
        /// The text given.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A WAL segment size that `IsValidWalSegSize` rejects.
    #[error("invalid WAL segment size {bytes} bytes: it must be a power of two from 1 MiB to 1 GiB")]
    InvalidWalSegmentSize {
        /// The size given, in bytes.
        bytes: u64,
    },

    /// A name that is not one of the file names PostgreSQL puts in its WAL directory
    /// (`IsXLogFileName`, `IsPartialXLogFileName`, `IsBackupHistoryFileName`,
    /// `IsTLHistoryFileName`).
    #[error("invalid WAL file name {name:?}: {reason}")]
    InvalidFileName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A segment file name whose low part is too large for the segment size
    /// (`XLogFromFileName` would compute a segment number belonging to the next log).
    #[error(
        "WAL file name {name}: segment part {seg:#X} is out of range, with {seg_size}-byte segments \
         each log has only {segments_per_xlogid:#X} segments"
    )]
    SegmentOutOfRange {
        /// The 24-character segment name.
        name: String,
        /// Its last 8 hex digits.
        seg: u32,
        /// The segment size the name was interpreted with.
        seg_size: u32,
        /// `XLogSegmentsPerXLogId` for that size.
        segments_per_xlogid: u64,
    },

    /// A buffer shorter than the structure to be parsed from it.
    #[error("{what}: need {needed} bytes, got {found}")]
    BufferTooShort {
        /// The PostgreSQL structure being parsed.
        what: &'static str,
        /// Bytes the structure occupies.
        needed: usize,
        /// Bytes given.
        found: usize,
    },

    /// The start of a WAL segment is too short to hold its long page header.
    #[error("WAL segment {file}: got {found} bytes, the first page header needs {needed}")]
    SegmentHeaderTooShort {
        /// The segment's file name.
        file: String,
        /// `SizeOfXLogLongPHD`.
        needed: usize,
        /// Bytes given.
        found: usize,
    },

    /// `xlp_magic` is not the `XLOG_PAGE_MAGIC` of any supported PostgreSQL release.
    #[error("WAL segment {file}: unknown WAL page magic {magic:#06X} (not from PostgreSQL 13 to 18)")]
    UnknownWalMagic {
        /// The segment's file name.
        file: String,
        /// The `xlp_magic` found.
        magic: u16,
    },

    /// `xlp_info` has bits outside `XLP_ALL_FLAGS`.
    #[error("WAL segment {file}: invalid info bits {info:#06X} in the first page header")]
    InvalidInfoBits {
        /// The segment's file name.
        file: String,
        /// The `xlp_info` found.
        info: u16,
    },

    /// The first page of a segment lacks `XLP_LONG_HEADER`.
    #[error("WAL segment {file}: first page header is not a long header (xlp_info {info:#06X} lacks XLP_LONG_HEADER)")]
    NotLongHeader {
        /// The segment's file name.
        file: String,
        /// The `xlp_info` found.
        info: u16,
    },

    /// `xlp_seg_size` is not a valid WAL segment size.
    #[error("WAL segment {file}: header gives invalid segment size {seg_size} bytes")]
    InvalidHeaderSegmentSize {
        /// The segment's file name.
        file: String,
        /// The `xlp_seg_size` found.
        seg_size: u32,
    },

    /// The file's length differs from the segment size in its header.
    #[error("WAL segment {file}: file is {file_len} bytes, its header says segments are {seg_size} bytes")]
    SegmentSizeMismatch {
        /// The segment's file name.
        file: String,
        /// The `xlp_seg_size` found.
        seg_size: u32,
        /// The length of the file.
        file_len: u64,
    },

    /// `xlp_xlog_blcksz` is not a WAL block size PostgreSQL can be built with.
    #[error("WAL segment {file}: header gives invalid WAL block size {xlog_blcksz} bytes")]
    InvalidXLogBlockSize {
        /// The segment's file name.
        file: String,
        /// The `xlp_xlog_blcksz` found.
        xlog_blcksz: u32,
    },

    /// `xlp_pageaddr` of the first page is not the start of the segment the name denotes:
    /// the file was renamed, or belongs to another segment size.
    #[error("WAL segment {file}: first page address is {found}, the file name means {expected}")]
    PageAddressMismatch {
        /// The segment's file name.
        file: String,
        /// The `xlp_pageaddr` found.
        found: Lsn,
        /// The start LSN of the segment named `file`.
        expected: Lsn,
    },

    /// `xlp_tli` is greater than the timeline in the file name.
    #[error("WAL segment {file}: first page header is on timeline {header}, later than the file name's timeline {name}")]
    TimelineAhead {
        /// The segment's file name.
        file: String,
        /// The `xlp_tli` found.
        header: TimelineId,
        /// The timeline of the file name.
        name: TimelineId,
    },

    /// A WAL segment handed to a reader out of order: not the segment after the previous
    /// one, or on an earlier timeline.
    #[error("WAL segment {found}: expected segment {expected} next (or its number on a later timeline)")]
    WalSegmentOutOfOrder {
        /// The segment expected.
        expected: String,
        /// The segment given.
        found: String,
    },

    /// A relation page whose length is not a block size PostgreSQL can be built with.
    #[error("invalid page size {len} bytes: BLCKSZ is a power of two from 1 kB to 32 kB")]
    InvalidPageSize {
        /// The length given.
        len: usize,
    },

    /// `pd_checksum` differs from the checksum computed for the page.
    #[error("block {blkno}: page checksum is {found:#06X}, computed {computed:#06X}")]
    PageChecksumMismatch {
        /// The block number the page was checked as.
        blkno: u32,
        /// The `pd_checksum` found.
        found: u16,
        /// The value of `pg_checksum_page`.
        computed: u16,
    },

    /// `pg_control`'s stored CRC differs from the CRC-32C of the bytes before it
    /// (`ReadControlFile`, `get_controlfile`): the file is corrupt, torn, or not a
    /// `pg_control` file.
    #[error(
        "pg_control: CRC mismatch: the file says {expected:#010x}, the CRC-32C of its first {covered} bytes \
         is {actual:#010x} (corrupt, torn or not a pg_control file)"
    )]
    ControlFileCrcMismatch {
        /// The `crc` field stored in the file.
        expected: u32,
        /// The CRC-32C computed over the bytes before it.
        actual: u32,
        /// Bytes covered: `offsetof(ControlFileData, crc)`.
        covered: usize,
    },

    /// A `pg_control_version` that no supported PostgreSQL release (13 to 18) writes.
    #[error(
        "pg_control: unknown pg_control_version {version} (PostgreSQL 13 to 16 write 1300, 17 writes 1700, \
         18 writes 1800){}",
        if version % 65536 == 0 && version / 65536 != 0 { "; the file looks big-endian" } else { "" }
    )]
    UnknownControlFileVersion {
        /// The `pg_control_version` found.
        version: u32,
    },

    /// A `pg_control` field whose value PostgreSQL could never have written.
    #[error("pg_control: invalid {field} {value}")]
    InvalidControlFileField {
        /// The `ControlFileData` field.
        field: &'static str,
        /// The value found.
        value: u64,
    },

    /// A line of a `backup_label` (or backup history file) that is not what
    /// `build_backup_content` writes.
    #[error("backup_label: {reason}: {line:?}")]
    InvalidBackupLabel {
        /// The offending line, without its newline.
        line: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A `backup_label` lacking a line that PostgreSQL 13 to 18 always write.
    #[error("backup_label: no {field} line")]
    MissingBackupLabelField {
        /// The key of the missing line, e.g. `START WAL LOCATION`.
        field: &'static str,
    },

    /// The WAL file named in a `backup_label`'s `START WAL LOCATION` line is not the segment
    /// holding its LSN with the given segment size.
    #[error(
        "backup_label: START WAL LOCATION {start_lsn} is in segment {expected} with {seg_size}-byte segments, \
         the label says {found}"
    )]
    BackupLabelSegmentMismatch {
        /// The start LSN.
        start_lsn: Lsn,
        /// The file name in the label.
        found: String,
        /// The segment holding `start_lsn`.
        expected: String,
        /// The segment size checked against.
        seg_size: u32,
    },

    /// A path added twice to a backup manifest (`pg_verifybackup` rejects such a manifest).
    #[error("backup manifest: duplicate path {path:?}")]
    DuplicateManifestPath {
        /// The path, lossily decoded if it is not UTF-8.
        path: String,
    },

    /// A checksum algorithm name that `pg_checksum_parse_type` does not know.
    #[error("unknown checksum algorithm {name:?} (CRC32C, SHA224, SHA256, SHA384 or SHA512)")]
    UnknownChecksumAlgorithm {
        /// The name given.
        name: String,
    },
}
