//! The crate's error type.

use std::io;

use pgark_pg::Lsn;

/// Everything that can go wrong scanning pages, writing or reading an increment, or
/// restoring a file from a chain.
///
/// Decoding errors name what was found and what the format requires, so that a damaged or
/// mismatched increment is reported precisely instead of being restored as garbage.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeltaError {
    /// Reading or writing failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// A block size PostgreSQL cannot be built with (a power of two from 1 KiB to 32 KiB).
    #[error("invalid block size {0}: it must be a power of two from 1024 to 32768 bytes")]
    InvalidBlockSize(u32),

    /// A buffer that is not a whole number of pages.
    #[error("{len} bytes is not a whole number of {block_size}-byte pages")]
    PartialPage {
        /// The buffer's length.
        len: usize,
        /// The block size.
        block_size: u32,
    },

    /// A block number past what a relation file can have (the absolute block number
    /// overflows 32 bits).
    #[error("block number overflow: block {block} of a file starting at block {first_block_no}")]
    BlockNumberOverflow {
        /// The block in the file.
        block: u64,
        /// The absolute number of the file's block 0.
        first_block_no: u32,
    },

    /// The stream does not start with the increment magic.
    #[error("not a pgark increment: magic {found:02X?}")]
    BadMagic {
        /// The first 8 bytes.
        found: [u8; 8],
    },

    /// An increment of a format version this build cannot read.
    #[error("unsupported increment format version {0} (this build reads version 1)")]
    UnsupportedVersion(u16),

    /// Flag bits this version does not define.
    #[error("unsupported increment flags {0:#06x}")]
    UnsupportedFlags(u16),

    /// A reserved header field that is not zero.
    #[error("increment header: reserved field is {0:#x}, not 0")]
    ReservedNotZero(u32),

    /// The stream ended inside the increment.
    #[error("increment truncated: stream ended in the {0}")]
    Truncated(&'static str),

    /// A group's bitmap marks a block at or past the file's size.
    #[error("increment bitmap marks block {block}, past the file's {blocks} blocks")]
    BlockPastEnd {
        /// The block marked.
        block: u64,
        /// The file's size in blocks.
        blocks: u32,
    },

    /// A block the parent version did not have is not stored: the increment could not
    /// rebuild it.
    #[error("block {block} is not stored although the parent had only {parent_blocks} blocks")]
    MissingNewBlock {
        /// The block left out.
        block: u32,
        /// The parent version's size in blocks.
        parent_blocks: u32,
    },

    /// The trailer's page count disagrees with the bitmaps.
    #[error("increment trailer says {trailer} stored pages, the bitmaps mark {bitmaps}")]
    StoredCountMismatch {
        /// The count in the trailer.
        trailer: u32,
        /// The pages the bitmaps marked.
        bitmaps: u32,
    },

    /// The trailer's end marker is wrong.
    #[error("increment trailer: bad end marker {found:02X?}")]
    BadTrailer {
        /// The bytes found.
        found: [u8; 4],
    },

    /// The trailer's CRC-32C does not match the increment's bytes: it was damaged.
    #[error("increment damaged: CRC-32C {computed:#010x} of its contents, trailer says {stored:#010x}")]
    CrcMismatch {
        /// The CRC in the trailer.
        stored: u32,
        /// The CRC of the bytes read.
        computed: u32,
    },

    /// Bytes after the trailer.
    #[error("trailing data after the increment")]
    TrailingData,

    /// A page pushed to the writer out of order or outside the file.
    #[error(
        "block {block} pushed out of order or past the end (next allowed {next}, file has {blocks} blocks)"
    )]
    BlockOutOfOrder {
        /// The block pushed.
        block: u32,
        /// The smallest block that may be pushed next.
        next: u32,
        /// The file's size in blocks.
        blocks: u32,
    },

    /// A page of the wrong length given to the writer or reader.
    #[error("page buffer of {len} bytes for {block_size}-byte blocks")]
    WrongPageLength {
        /// The buffer's length.
        len: usize,
        /// The block size.
        block_size: u32,
    },

    /// `read_page` or `skip_page` called with no page left.
    #[error("no stored page left in the increment")]
    NoPageLeft,

    /// An increment that does not follow the previous one in the chain: it was made
    /// against another version of the file.
    #[error(
        "increment does not fit the chain: it rebuilds a file of {found} blocks where the newer \
         increment's parent had {expected}"
    )]
    ChainSizeMismatch {
        /// The parent size the newer increment recorded.
        expected: u32,
        /// The size this increment (or the base) produces.
        found: u32,
    },

    /// Increments applied out of order: an older one starts after a newer one.
    #[error("increment since {older} is newer than the next increment's since {newer}: chain out of order")]
    ChainOrder {
        /// The `since` of the increment being applied (supposedly older).
        older: Lsn,
        /// The `since` of the increment applied before it (supposedly newer).
        newer: Lsn,
    },

    /// Increments of a chain with different block sizes.
    #[error("block size {found} in a chain of {expected}-byte blocks")]
    ChainBlockSize {
        /// The chain's block size.
        expected: u32,
        /// The increment's.
        found: u32,
    },

    /// The base (full) file has a size that is not what the oldest increment's parent had.
    #[error("base file has {found} bytes, the chain needs {expected_blocks} blocks of {block_size} bytes")]
    BaseSizeMismatch {
        /// Bytes read from the base.
        found: u64,
        /// Blocks the chain expects.
        expected_blocks: u32,
        /// The block size.
        block_size: u32,
    },

    /// Two pieces of the base both hold a block.
    #[error("block {block} of the base arrived twice")]
    BaseOverlap {
        /// The block.
        block: u32,
    },

    /// After the whole chain, a block of the result has no source.
    #[error("block {block} has no source in the chain")]
    ChainGap {
        /// The block.
        block: u32,
    },
}
