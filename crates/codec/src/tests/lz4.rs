//! lz4 bodies decoded by the reference library's frame decoder
//! ([`crate::lz4`]) a block of up to 1 MiB at a time: frames of every
//! setting another writer (or an older pgark) may have used, sizes around
//! the decoder's block, and damage reported where it is.

use std::io::Write;

use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};

use super::*;
use crate::format::{self, HEADER_LEN, TRAILER_LEN};
use crate::frames::FRAME_LEN;
use crate::testdata::{random_bytes, wal_like};
use crate::{encode_to_vec, DigestAlgorithm};

const KIB: usize = 1024;

/// Half WAL-like (compressible, long overlapping matches), half random.
fn mixed(len: usize, seed: u64) -> Vec<u8> {
    let mut data = wal_like(len / 2, seed);
    data.extend(random_bytes(len - len / 2, seed + 1));
    data
}

fn lz4_frame(data: &[u8], info: FrameInfo) -> Vec<u8> {
    let mut enc = FrameEncoder::with_frame_info(info, Vec::new());
    // Writes that do not line up with the blocks.
    for piece in data.chunks(100_000) {
        enc.write_all(piece).unwrap();
    }
    enc.finish().unwrap()
}

/// A stored lz4 object around `body`, whose original bytes are `data`.
fn object(body: &[u8], data: &[u8]) -> Vec<u8> {
    [
        &format::encode_header(Compression::Lz4)[..],
        body,
        &format::encode_trailer(data.len() as u64, &sha256(data)),
    ]
    .concat()
}

fn decodes_with_every_buffer(name: &str, data: &[u8], stored: &[u8]) {
    for buf in [1, 511, 4096, 256 * KIB, FRAME_LEN + 1, 3 * FRAME_LEN] {
        if buf < 4096 && data.len() > 2 * FRAME_LEN {
            continue; // slow in a debug build, and covered by the smaller sizes
        }
        let (out, summary) =
            decode_with_buf(stored, buf).unwrap_or_else(|e| panic!("{name}, reads of {buf}: {e}"));
        assert!(out == data, "{name}, reads of {buf}: decoded bytes differ");
        assert_eq!(summary.original_len, data.len() as u64);
        assert_eq!(summary.stored_len, stored.len() as u64);
    }
    let (out, _) =
        decode_with_buf(Trickle::new(stored), 777).unwrap_or_else(|e| panic!("{name}, trickled: {e}"));
    assert!(out == data, "{name}, trickled: decoded bytes differ");
}

#[test]
fn sizes_around_the_decoders_block() {
    let sizes = [
        0,
        1,
        64 * KIB,
        FRAME_LEN - 1,
        FRAME_LEN,
        FRAME_LEN + 1,
        FRAME_LEN + 64 * KIB,
        2 * FRAME_LEN + 65 * KIB + 3,
    ];
    for size in sizes {
        let data = mixed(size, size as u64);
        for digest in [DigestAlgorithm::Sha256, DigestAlgorithm::Blake3] {
            let spec = CompressionSpec::new(Compression::Lz4, None).unwrap();
            let mut w = ObjectWriter::with_options(Vec::new(), spec, digest, None).unwrap();
            w.write_all(&data).unwrap();
            let (stored, written) = w.finish().unwrap();
            let name = format!("{size} bytes, {digest}");
            decodes_with_every_buffer(&name, &data, &stored);
            assert_eq!(decode_to_vec(&stored).unwrap().1, written, "{name}");
        }
    }
}

#[test]
fn frames_of_every_setting_are_read() {
    // What other writers, the lz4 tool and older pgark versions (64 KiB
    // linked blocks with a content checksum, before 2026-12) write.
    let data = mixed(2 * FRAME_LEN + 300 * KIB + 7, 41);
    let mut n = 0;
    for size in [
        BlockSize::Max64KB,
        BlockSize::Max256KB,
        BlockSize::Max1MB,
        BlockSize::Max4MB,
    ] {
        for mode in [BlockMode::Linked, BlockMode::Independent] {
            for (content_checksum, block_checksums, content_size) in [
                (false, false, false),
                (true, false, false),
                (false, true, true),
                (true, true, true),
            ] {
                let info = FrameInfo::new()
                    .block_size(size)
                    .block_mode(mode)
                    .content_checksum(content_checksum)
                    .block_checksums(block_checksums)
                    .content_size(content_size.then_some(data.len() as u64));
                let stored = object(&lz4_frame(&data, info), &data);
                let name = format!(
                    "{size:?} {mode:?} content checksum {content_checksum} block checksums {block_checksums} \
                     content size {content_size}"
                );
                let (out, summary) = decode_to_vec(&stored).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(out == data, "{name}: decoded bytes differ");
                assert_eq!(summary.stored_len, stored.len() as u64);
                n += 1;
            }
        }
    }
    assert_eq!(n, 32);
    // Reads of every size, and a trickling inner reader, on the settings
    // pgark wrote before (a content checksum) and large independent blocks.
    for info in [
        FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_mode(BlockMode::Linked)
            .content_checksum(true),
        FrameInfo::new()
            .block_size(BlockSize::Max4MB)
            .block_mode(BlockMode::Independent),
    ] {
        let name = format!("{info:?}");
        let stored = object(&lz4_frame(&data, info), &data);
        decodes_with_every_buffer(&name, &data, &stored);
    }
}

#[test]
fn frames_of_several_settings_in_one_body() {
    let parts = [
        mixed(FRAME_LEN + 3, 50),
        Vec::new(),
        wal_like(70 * KIB, 51),
        mixed(5 * KIB, 52),
    ];
    let infos = [
        FrameInfo::new().block_size(BlockSize::Max4MB),
        FrameInfo::new(),
        FrameInfo::new()
            .block_size(BlockSize::Max64KB)
            .block_mode(BlockMode::Linked)
            .content_checksum(true),
        FrameInfo::new()
            .block_size(BlockSize::Max256KB)
            .block_checksums(true),
    ];
    let body: Vec<u8> = parts
        .iter()
        .zip(infos)
        .flat_map(|(part, info)| lz4_frame(part, info))
        .collect();
    let whole = parts.concat();
    decodes_with_every_buffer("four frames", &whole, &object(&body, &whole));
}

/// Where each block of the one frame pgark writes starts in `stored`
/// (frame descriptor without content size or dictionary id: 7 bytes).
fn blocks_of(stored: &[u8]) -> Vec<usize> {
    let body = &stored[HEADER_LEN..stored.len() - TRAILER_LEN];
    assert_eq!(body[4] & 0x09, 0, "no content size, no dictionary id");
    let mut at = 7;
    let mut blocks = Vec::new();
    loop {
        let size = u32::from_le_bytes(body[at..at + 4].try_into().unwrap());
        if size == 0 {
            return blocks;
        }
        blocks.push(HEADER_LEN + at);
        at += 4 + (size & 0x7FFF_FFFF) as usize;
    }
}

#[test]
fn damage_in_a_middle_block_is_reported_near_it() {
    let data = mixed(3 * FRAME_LEN + 12345, 60);
    let (stored, _) = encode_to_vec(&data, CompressionSpec::new(Compression::Lz4, None).unwrap()).unwrap();
    let blocks = blocks_of(&stored);
    assert!(blocks.len() > 40, "{} blocks", blocks.len());
    for &at in [
        &blocks[1],
        &blocks[17],
        &blocks[blocks.len() / 2],
        blocks.last().unwrap(),
    ] {
        // A block size larger than the frame's 64 KiB blocks allow.
        let mut damaged = stored.clone();
        damaged[at..at + 4].copy_from_slice(&0x0100_0000u32.to_le_bytes());
        match decode_err(&damaged) {
            CodecError::Decompress {
                codec,
                offset,
                message,
            } => {
                assert_eq!(codec, Compression::Lz4);
                // The decoder is given what the 64 KiB input buffer holds:
                // the offset is where that began, at most that far before.
                assert!(
                    offset <= at as u64 && offset + (64 * KIB) as u64 >= at as u64,
                    "block at {at}: reported at {offset} ({message})"
                );
                assert!(message.contains("lz4"), "{message}");
            }
            other => panic!("block at {at}: {other:?}"),
        }
    }
    // A match reaching back before the frame's start: the first
    // sequence's match offset set to 65535, a few bytes into the output.
    let first = blocks[0];
    let mut damaged = stored.clone();
    assert_eq!(damaged[first + 3] & 0x80, 0, "the first block is compressed");
    let mut at = first + 4;
    let token = damaged[at];
    at += 1;
    if token >> 4 == 15 {
        while damaged[at] == 255 {
            at += 1;
        }
        at += 1;
    }
    let mut literals = (token >> 4) as usize;
    if literals == 15 {
        let mut i = first + 5;
        while damaged[i] == 255 {
            literals += 255;
            i += 1;
        }
        literals += damaged[i] as usize;
    }
    assert!(literals < 1000, "{literals} literals");
    let offset_at = at + literals;
    damaged[offset_at..offset_at + 2].copy_from_slice(&[0xFF, 0xFF]);
    assert!(matches!(
        decode_err(&damaged),
        CodecError::Decompress { offset, .. } if offset <= first as u64
    ));
}

#[test]
fn a_cut_body_is_reported_where_it_ends() {
    let data = mixed(2 * FRAME_LEN, 70);
    let (stored, _) = encode_to_vec(&data, CompressionSpec::new(Compression::Lz4, None).unwrap()).unwrap();
    let t = stored.len() - TRAILER_LEN;
    let blocks = blocks_of(&stored);
    // Inside a block, just after a block header, at a block boundary,
    // inside the frame descriptor and the end mark.
    for end in [
        blocks[10] + 100,
        blocks[10] + 4,
        blocks[10],
        HEADER_LEN + 5,
        t - 2,
    ] {
        let damaged = [&stored[..end], &stored[t..]].concat();
        match decode_err(&damaged) {
            CodecError::Decompress { offset, message, .. } => {
                assert_eq!(offset, end as u64, "cut at {end}: {message}");
                assert!(message.contains("ended inside an LZ4 frame"), "{message}");
            }
            other => panic!("cut at {end}: {other:?}"),
        }
    }
}

#[test]
fn a_damaged_content_checksum_of_an_older_object_is_refused() {
    let data = mixed(300 * KIB, 80);
    let info = FrameInfo::new()
        .block_size(BlockSize::Max64KB)
        .block_mode(BlockMode::Linked)
        .content_checksum(true);
    let stored = object(&lz4_frame(&data, info), &data);
    assert!(decode_to_vec(&stored).unwrap().0 == data);
    let at = stored.len() - TRAILER_LEN - 2;
    let mut damaged = stored.clone();
    damaged[at] ^= 0x10;
    assert!(matches!(
        decode_err(&damaged),
        CodecError::Decompress { codec: Compression::Lz4, message, .. } if message.contains("lz4")
    ));
}
