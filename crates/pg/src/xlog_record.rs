//! WAL record headers: the fixed `XLogRecord` header and the block-reference and data
//! headers that follow it.
//!
//! A WAL record is an `XLogRecord` (24 bytes), then a run of headers (one per block
//! reference, then optional replication origin and top-level xid, then the main data
//! header), then the data those headers announce, in the same order: each block's image and
//! data, and last the record's "main data". The layouts are those of `access/xlogrecord.h`
//! in PostgreSQL 13 to 18; the decoding follows the rules `DecodeXLogRecord`
//! (`access/transam/xlogreader.c`) applies, so a record this module rejects is one
//! PostgreSQL's reader rejects too.

use crate::le::{u16_at, u32_at, u64_at};
use crate::{Lsn, PgError};

/// `RM_XLOG_ID`: the resource manager of WAL-internal records (checkpoints, switches).
pub const RM_XLOG_ID: u8 = 0;
/// `RM_XACT_ID`: the resource manager of transaction records (commit, abort, ...).
pub const RM_XACT_ID: u8 = 1;
/// `RM_TBLSPC_ID`: the tablespace resource manager (`rmgrlist.h`).
pub const RM_TBLSPC_ID: u8 = 5;
/// `XLOG_TBLSPC_CREATE` (`commands/tablespace.h`), in the info byte's high bits.
pub const XLOG_TBLSPC_CREATE: u8 = 0x00;
/// `XLOG_SWITCH` (`catalog/pg_control.h`): the `RM_XLOG_ID` record that ends a segment
/// early (`pg_switch_wal()`, `archive_timeout`); the rest of its segment is unused.
pub const XLOG_SWITCH: u8 = 0x40;
/// `XLR_INFO_MASK`: the low bits of `xl_info`, reserved for the WAL machinery; the
/// resource manager's own bits are the others.
pub const XLR_INFO_MASK: u8 = 0x0F;

/// `XLR_MAX_BLOCK_ID`: block references are numbered 0 to 32.
pub const XLR_MAX_BLOCK_ID: u8 = 32;
/// `XLR_BLOCK_ID_DATA_SHORT`: main data header with a one-byte length.
pub const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
/// `XLR_BLOCK_ID_DATA_LONG`: main data header with a four-byte (unaligned) length.
pub const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
/// `XLR_BLOCK_ID_ORIGIN`: followed by a two-byte `RepOriginId`.
pub const XLR_BLOCK_ID_ORIGIN: u8 = 253;
/// `XLR_BLOCK_ID_TOPLEVEL_XID`: followed by a four-byte `TransactionId` (PostgreSQL 14
/// and later).
pub const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;

/// `BKPBLOCK_HAS_IMAGE` in `XLogRecordBlockHeader.fork_flags`: a page image follows.
pub const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
/// `BKPBLOCK_HAS_DATA`: `data_length` bytes of block data follow.
pub const BKPBLOCK_HAS_DATA: u8 = 0x20;
/// `BKPBLOCK_SAME_REL`: no `RelFileNode`/`RelFileLocator`, same as the previous block.
pub const BKPBLOCK_SAME_REL: u8 = 0x80;
/// `BKPIMAGE_HAS_HOLE` in `XLogRecordBlockImageHeader.bimg_info`.
pub const BKPIMAGE_HAS_HOLE: u8 = 0x01;
/// `BKPIMAGE_IS_COMPRESSED` of PostgreSQL 13 and 14 (pglz).
pub const BKPIMAGE_IS_COMPRESSED_V13: u8 = 0x02;
/// `BKPIMAGE_COMPRESS_PGLZ | BKPIMAGE_COMPRESS_LZ4 | BKPIMAGE_COMPRESS_ZSTD` of
/// PostgreSQL 15 and later (`BKPIMAGE_COMPRESSED()`); there 0x02 is `BKPIMAGE_APPLY`.
pub const BKPIMAGE_COMPRESSED_V15: u8 = 0x04 | 0x08 | 0x10;

/// `XLogRecordMaxSize` (PostgreSQL 16 and later: 1020 MiB). Earlier versions are bounded by
/// `MaxAllocSize` instead, a little more; no server writes a record this large.
pub const XLOG_RECORD_MAX_SIZE: u32 = 1020 * 1024 * 1024;

/// Bytes of `RelFileNode` (13 to 15) or `RelFileLocator` (16 and later): three `Oid`s.
const REL_FILE_LOCATOR_SIZE: usize = 12;

/// The most header bytes a valid record can have after its `XLogRecord`: 33 block
/// references each at their largest (`MaxSizeOfXLogRecordBlockHeader` plus the block
/// number's place), an origin, a top-level xid and a long main data header.
pub const MAX_RECORD_HEADERS_LEN: usize = (XLR_MAX_BLOCK_ID as usize + 1) * (4 + 5 + 2 + 12 + 4) + 3 + 5 + 5;

/// The fixed header of every WAL record: `XLogRecord` (`access/xlogrecord.h`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct XLogRecordHeader {
    /// `xl_tot_len`: the length of the whole record, this header included.
    pub tot_len: u32,
    /// `xl_xid`: the transaction that wrote the record (0 if none).
    pub xid: u32,
    /// `xl_prev`: the start of the previous record.
    pub prev: Lsn,
    /// `xl_info`: flag bits; the high four belong to the resource manager.
    pub info: u8,
    /// `xl_rmid`: the resource manager.
    pub rmid: u8,
    /// `xl_crc`: the CRC-32C of the record, see [`record_crc`].
    pub crc: u32,
}

impl XLogRecordHeader {
    /// `SizeOfXLogRecord`: 24 bytes.
    pub const SIZE: usize = 24;
    /// `offsetof(XLogRecord, xl_crc)`: the header bytes the CRC covers.
    pub const CRC_OFFSET: usize = 20;

    /// Reads the header from the start of `buf` (at least [`Self::SIZE`] bytes). Values are
    /// not checked.
    pub fn parse(buf: &[u8]) -> Result<Self, PgError> {
        if buf.len() < Self::SIZE {
            return Err(PgError::BufferTooShort {
                what: "XLogRecord",
                needed: Self::SIZE,
                found: buf.len(),
            });
        }
        Ok(XLogRecordHeader {
            tot_len: u32_at(buf, 0),
            xid: u32_at(buf, 4),
            prev: Lsn(u64_at(buf, 8)),
            info: buf[16],
            rmid: buf[17],
            crc: u32_at(buf, 20),
        })
    }

    /// The resource manager's bits of `xl_info` (`XLogRecGetInfo(r) & ~XLR_INFO_MASK`).
    pub fn rmgr_info(&self) -> u8 {
        self.info & !XLR_INFO_MASK
    }

    /// Whether this is an `XLOG_SWITCH` record.
    pub fn is_switch(&self) -> bool {
        self.rmid == RM_XLOG_ID && self.rmgr_info() == XLOG_SWITCH
    }
}

/// The CRC-32C PostgreSQL stores in `xl_crc`: over the record's bytes after the header
/// (`body`, `xl_tot_len - 24` bytes), then over the header up to `xl_crc`
/// (`XLogRecordAssemble`, `ValidXLogRecord`). `body_crc` is [`crc32c::crc32c`] of the body,
/// which a reader can compute piece by piece with [`crc32c::crc32c_append`].
pub fn record_crc(body_crc: u32, header: &[u8; XLogRecordHeader::SIZE]) -> u32 {
    crc32c::crc32c_append(body_crc, &header[..XLogRecordHeader::CRC_OFFSET])
}

/// Where a record's parts lie after its `XLogRecord`, as told by its headers.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RecordLayout {
    /// Bytes of block reference, origin, top-level xid and main data headers.
    pub headers_len: usize,
    /// Block references.
    pub blocks: usize,
    /// Bytes of the main data, the last bytes of the record.
    pub main_data_len: u32,
    /// `XLR_BLOCK_ID_TOPLEVEL_XID`'s transaction id, if present.
    pub toplevel_xid: Option<u32>,
}

impl RecordLayout {
    /// Offset of the main data from the end of the `XLogRecord` header.
    pub fn main_data_offset(&self, body_len: u32) -> u32 {
        body_len - self.main_data_len
    }
}

/// Decodes the headers that follow a record's `XLogRecord`: `head` is the start of the
/// record's body (the bytes after the 24-byte header; at least
/// `min(body_len, MAX_RECORD_HEADERS_LEN)` of them), `body_len` is `xl_tot_len - 24`, and
/// `pg_version` the major version that wrote it (block image flags and
/// `XLR_BLOCK_ID_TOPLEVEL_XID` depend on it).
///
/// Fails, with the reason `DecodeXLogRecord` would report, when a block id is out of order
/// or unknown, a block's `BKPBLOCK_HAS_DATA` disagrees with its `data_length`, a
/// `BKPBLOCK_SAME_REL` block has no previous relation, or the lengths announced do not add
/// up to `body_len`.
pub fn decode_record_headers(
    head: &[u8],
    body_len: u32,
    pg_version: u32,
) -> Result<RecordLayout, &'static str> {
    let body_len_us = body_len as usize;
    let mut pos = 0usize;
    let mut data_total: u64 = 0;
    let mut last_block: Option<u8> = None;
    let mut have_rel = false;
    let mut layout = RecordLayout {
        headers_len: 0,
        blocks: 0,
        main_data_len: 0,
        toplevel_xid: None,
    };
    // Bytes not yet accounted for by headers must still hold the data announced.
    let take = |pos: &mut usize, n: usize| -> Result<usize, &'static str> {
        if *pos + n > body_len_us || *pos + n > head.len() {
            return Err("record headers run past the record");
        }
        let at = *pos;
        *pos += n;
        Ok(at)
    };
    while ((body_len_us - pos) as u64) > data_total {
        let id = head[take(&mut pos, 1)?];
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                let len = u32::from(head[take(&mut pos, 1)?]);
                layout.main_data_len = len;
                data_total += u64::from(len);
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                let len = u32_at(head, take(&mut pos, 4)?);
                layout.main_data_len = len;
                data_total += u64::from(len);
                break;
            }
            XLR_BLOCK_ID_ORIGIN => {
                take(&mut pos, 2)?;
            }
            XLR_BLOCK_ID_TOPLEVEL_XID if pg_version >= 14 => {
                layout.toplevel_xid = Some(u32_at(head, take(&mut pos, 4)?));
            }
            id if id <= XLR_MAX_BLOCK_ID => {
                if last_block.is_some_and(|last| id <= last) {
                    return Err("out-of-order block_id");
                }
                last_block = Some(id);
                layout.blocks += 1;
                let at = take(&mut pos, 3)?;
                let fork_flags = head[at];
                let data_length = u16_at(head, at + 1);
                let has_data = fork_flags & BKPBLOCK_HAS_DATA != 0;
                if has_data != (data_length != 0) {
                    return Err("BKPBLOCK_HAS_DATA disagrees with the block's data_length");
                }
                data_total += u64::from(data_length);
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    // XLogRecordBlockImageHeader: length, hole_offset, bimg_info.
                    let at = take(&mut pos, 5)?;
                    let bimg_len = u16_at(head, at);
                    let bimg_info = head[at + 4];
                    let compressed = if pg_version >= 15 {
                        bimg_info & BKPIMAGE_COMPRESSED_V15 != 0
                    } else {
                        bimg_info & BKPIMAGE_IS_COMPRESSED_V13 != 0
                    };
                    if bimg_info & BKPIMAGE_HAS_HOLE != 0 && compressed {
                        // XLogRecordBlockCompressHeader: hole_length.
                        take(&mut pos, 2)?;
                    }
                    data_total += u64::from(bimg_len);
                }
                if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    take(&mut pos, REL_FILE_LOCATOR_SIZE)?;
                    have_rel = true;
                } else if !have_rel {
                    return Err("BKPBLOCK_SAME_REL set but no previous rel");
                }
                // BlockNumber.
                take(&mut pos, 4)?;
            }
            _ => return Err("invalid block_id"),
        }
    }
    if (body_len_us - pos) as u64 != data_total {
        return Err("record lengths do not add up");
    }
    layout.headers_len = pos;
    Ok(layout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_offsets() {
        let mut buf = [0u8; 24];
        buf[0..4].copy_from_slice(&0x0102_0304u32.to_le_bytes());
        buf[4..8].copy_from_slice(&0x0506_0708u32.to_le_bytes());
        buf[8..16].copy_from_slice(&0x1112_1314_1516_1718u64.to_le_bytes());
        buf[16] = 0x8A;
        buf[17] = RM_XACT_ID;
        buf[20..24].copy_from_slice(&0xA1A2_A3A4u32.to_le_bytes());
        let h = XLogRecordHeader::parse(&buf).unwrap();
        assert_eq!(
            h,
            XLogRecordHeader {
                tot_len: 0x0102_0304,
                xid: 0x0506_0708,
                prev: Lsn(0x1112_1314_1516_1718),
                info: 0x8A,
                rmid: RM_XACT_ID,
                crc: 0xA1A2_A3A4,
            }
        );
        assert_eq!(h.rmgr_info(), 0x80);
        assert!(!h.is_switch());
        assert!(matches!(
            XLogRecordHeader::parse(&buf[..23]),
            Err(PgError::BufferTooShort {
                needed: 24,
                found: 23,
                ..
            })
        ));
    }

    #[test]
    fn decode_main_data_only() {
        // A commit record's body: short main data header of 8 bytes, then the data.
        let mut body = vec![XLR_BLOCK_ID_DATA_SHORT, 8];
        body.extend_from_slice(&[0; 8]);
        let l = decode_record_headers(&body, 10, 15).unwrap();
        assert_eq!(l.headers_len, 2);
        assert_eq!(l.main_data_len, 8);
        assert_eq!(l.main_data_offset(10), 2);
        // Long form.
        let mut body = vec![XLR_BLOCK_ID_DATA_LONG];
        body.extend_from_slice(&300u32.to_le_bytes());
        body.resize(5 + 300, 0);
        let l = decode_record_headers(&body, 305, 13).unwrap();
        assert_eq!((l.headers_len, l.main_data_len), (5, 300));
        // No data at all.
        assert_eq!(decode_record_headers(&[], 0, 18).unwrap().headers_len, 0);
    }

    #[test]
    fn decode_blocks() {
        // Block 0 with an image with a hole (compressed, so a hole length follows) and
        // data; block 1 of the same relation with data; origin; top-level xid; main data.
        let mut h = vec![0u8, BKPBLOCK_HAS_IMAGE | BKPBLOCK_HAS_DATA, 3, 0];
        h.extend_from_slice(&100u16.to_le_bytes()); // bimg_len
        h.extend_from_slice(&40u16.to_le_bytes()); // hole_offset
        h.push(BKPIMAGE_HAS_HOLE | 0x04); // PGLZ on 15+
        h.extend_from_slice(&8000u16.to_le_bytes()); // hole_length
        h.extend_from_slice(&[1; 12]); // RelFileLocator
        h.extend_from_slice(&7u32.to_le_bytes()); // block number
        h.extend_from_slice(&[1, BKPBLOCK_HAS_DATA | BKPBLOCK_SAME_REL, 2, 0]);
        h.extend_from_slice(&8u32.to_le_bytes());
        h.extend_from_slice(&[XLR_BLOCK_ID_ORIGIN, 1, 0]);
        h.push(XLR_BLOCK_ID_TOPLEVEL_XID);
        h.extend_from_slice(&1234u32.to_le_bytes());
        h.extend_from_slice(&[XLR_BLOCK_ID_DATA_SHORT, 5]);
        let headers_len = h.len();
        let body_len = (headers_len + 100 + 3 + 2 + 5) as u32;
        h.resize(body_len as usize, 0xEE);
        let l = decode_record_headers(&h, body_len, 15).unwrap();
        assert_eq!(
            l,
            RecordLayout {
                headers_len,
                blocks: 2,
                main_data_len: 5,
                toplevel_xid: Some(1234)
            }
        );
        // On 14, 0x04 is BKPIMAGE_APPLY: no hole length, so the headers are misread.
        assert!(decode_record_headers(&h, body_len, 14).is_err());
        // Nor on 13, which moreover has no XLR_BLOCK_ID_TOPLEVEL_XID.
        assert!(decode_record_headers(&h, body_len, 13).is_err());
        // Out of order, missing previous relation, inconsistent data flag, wrong totals.
        let mut bad = h.clone();
        bad[0] = 2;
        assert_eq!(
            decode_record_headers(&bad, body_len, 15),
            Err("out-of-order block_id")
        );
        let mut bad = h.clone();
        bad[1] |= BKPBLOCK_SAME_REL;
        assert!(decode_record_headers(&bad, body_len, 15).is_err());
        let mut bad = h.clone();
        bad[2] = 0;
        assert!(decode_record_headers(&bad, body_len, 15).is_err());
        assert!(decode_record_headers(&h, body_len + 1, 15).is_err());
        assert!(decode_record_headers(&h, body_len - 1, 15).is_err());
        assert_eq!(decode_record_headers(&[40], 1, 15), Err("invalid block_id"));
    }

    #[test]
    fn max_headers_len() {
        assert_eq!(MAX_RECORD_HEADERS_LEN, 904);
    }

    #[test]
    fn crc_order() {
        let mut header = [0u8; 24];
        header[0..4].copy_from_slice(&26u32.to_le_bytes());
        let body = [XLR_BLOCK_ID_DATA_SHORT, 0];
        let whole: Vec<u8> = body.iter().chain(&header[..20]).copied().collect();
        assert_eq!(record_crc(crc32c::crc32c(&body), &header), crc32c::crc32c(&whole));
    }
}
