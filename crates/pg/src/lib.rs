//! PostgreSQL on-disk formats, as pgark needs them.
//!
//! Everything pgark knows about PostgreSQL's files lives in this crate: LSNs and timelines,
//! WAL segment sizes and file names, the names `archive_command` is handed, WAL page
//! headers and the PostgreSQL version they reveal, relation page headers and checksums,
//! the control file, `backup_label`, what a base backup copies ([`layout`]) and the
//! `backup_manifest` that `pg_verifybackup` checks, and the WAL records themselves as far as
//! finding commit and abort records and their times ([`WalReader`]).
//! Keeping that knowledge in one place, with no I/O, lets the rest of pgark treat files as
//! bytes and ask this crate what they mean.
//!
//! Each item mirrors a PostgreSQL C definition and its documentation names it, so that it
//! can be checked against PostgreSQL's source. Supported servers are PostgreSQL 13 to 18.
//!
//! All parsers take byte slices, check their lengths, and report through [`PgError`].
//! Multi-byte fields are read as **little-endian**: PostgreSQL writes its files in the
//! byte order of the machine, and pgark supports only little-endian 64-bit platforms
//! (x86-64 and AArch64), whose struct layouts (`MAXIMUM_ALIGNOF` 8) the offsets here
//! follow.
//!
//! ```
//! use pgark_pg::{validate_segment, ArchivedFile, Lsn, WalSegmentSize};
//!
//! // What archive_command was given as %f.
//! let file = ArchivedFile::parse("000000010000000000000005.partial")?;
//! let name = file.wal_segment().expect("a WAL segment");
//! assert_eq!(name.start_lsn(WalSegmentSize::DEFAULT)?, "0/5000000".parse::<Lsn>()?);
//!
//! // Not a WAL segment: the error names the file and the magic found.
//! let err = validate_segment(&name, &[0; 8192], 16 << 20).unwrap_err();
//! assert!(err.to_string().contains("000000010000000000000005"));
//! # Ok::<(), pgark_pg::PgError>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod archive;
mod backup_label;
mod bufpage;
mod checksum;
mod control;
mod error;
pub mod layout;
mod le;
mod lsn;
mod manifest;
mod names;
mod segment;
mod timeline;
mod validate;
mod wal_reader;
mod wal_scan;
mod xact;
mod xlog_page;
mod xlog_record;

pub use archive::ArchivedFile;
pub use backup_label::{BackupFrom, BackupLabel, BackupStop, IncrementalFrom};
pub use bufpage::{
    page_is_all_zeros, PageHeader, PD_ALL_VISIBLE, PD_HAS_FREE_LINES, PD_PAGE_FULL, PD_VALID_FLAG_BITS,
    PG_PAGE_LAYOUT_VERSION,
};
pub use checksum::{pg_checksum_page, verify_page_checksum};
pub use control::{CheckPoint, ControlFile, DbState, CATALOG_VERSIONS};
pub use error::PgError;
pub use lsn::Lsn;
pub use manifest::{
    BackupManifestWriter, ChecksumAlgorithm, ChecksumContext, FileChecksum, ManifestVersion, WalRange,
};
pub use segment::{SegmentNo, WalSegmentName, WalSegmentSize};
pub use timeline::TimelineId;
pub use validate::{validate_segment, SegmentInfo};
pub use wal_reader::{read_xact_records, WalReader};
pub use wal_scan::{WalScan, WalStop};
pub use xact::{
    PgTimestamp, XactKind, XactRecord, XLOG_XACT_ABORT, XLOG_XACT_ABORT_PREPARED, XLOG_XACT_COMMIT,
    XLOG_XACT_COMMIT_PREPARED, XLOG_XACT_HAS_INFO, XLOG_XACT_OPMASK,
};
pub use xlog_page::{
    is_valid_xlog_blcksz, pg_version_for_wal_magic, wal_magic_for_pg_version, XLogLongPageHeader,
    XLogPageHeader, DEFAULT_XLOG_BLCKSZ, MAX_XLOG_BLCKSZ, MIN_XLOG_BLCKSZ, XLOG_PAGE_MAGICS, XLP_ALL_FLAGS,
    XLP_BKP_REMOVABLE, XLP_FIRST_IS_CONTRECORD, XLP_FIRST_IS_OVERWRITE_CONTRECORD, XLP_LONG_HEADER,
};
pub use xlog_record::{
    decode_record_headers, record_crc, RecordLayout, XLogRecordHeader, BKPBLOCK_HAS_DATA, BKPBLOCK_HAS_IMAGE,
    BKPBLOCK_SAME_REL, BKPIMAGE_COMPRESSED_V15, BKPIMAGE_HAS_HOLE, BKPIMAGE_IS_COMPRESSED_V13,
    MAX_RECORD_HEADERS_LEN, RM_XACT_ID, RM_XLOG_ID, XLOG_RECORD_MAX_SIZE, XLOG_SWITCH,
    XLR_BLOCK_ID_DATA_LONG, XLR_BLOCK_ID_DATA_SHORT, XLR_BLOCK_ID_ORIGIN, XLR_BLOCK_ID_TOPLEVEL_XID,
    XLR_INFO_MASK, XLR_MAX_BLOCK_ID,
};
