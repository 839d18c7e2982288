//! zstd bodies written as independent frames of at most 1 MiB, read back
//! whole frame by whole frame, next to bodies of one long frame.

use std::io::Write;

use super::*;
use crate::format::{HEADER_LEN, TRAILER_LEN};
use crate::frames::FRAME_LEN;
use crate::testdata::{random_bytes, wal_like};

/// The zstd frames of a stored (unencrypted) object's body: each frame's
/// stored offset in the object and its content size.
fn frames_of(stored: &[u8]) -> Vec<(usize, Option<u64>)> {
    let body = &stored[HEADER_LEN..stored.len() - TRAILER_LEN];
    let mut at = 0;
    let mut frames = Vec::new();
    while at < body.len() {
        let len = zstd::zstd_safe::find_frame_compressed_size(&body[at..]).unwrap();
        let size = zstd::zstd_safe::get_frame_content_size(&body[at..]).unwrap();
        frames.push((HEADER_LEN + at, size));
        at += len;
    }
    frames
}

fn mixed(len: usize) -> Vec<u8> {
    let mut data = wal_like(len / 2, 7);
    data.extend(random_bytes(len - len / 2, 8));
    data
}

#[test]
fn a_stream_is_cut_into_frames_of_one_mebibyte_with_their_sizes() {
    let data = mixed(3 * FRAME_LEN + 12345);
    // Writes that do not divide a frame, and writes larger than one.
    for chunk in [1000, 256 << 10, 3 * FRAME_LEN] {
        let (stored, written) = encode_chunked(&data, CompressionSpec::default(), chunk);
        let sizes: Vec<Option<u64>> = frames_of(&stored).into_iter().map(|(_, s)| s).collect();
        let f = FRAME_LEN as u64;
        assert_eq!(
            sizes,
            vec![Some(f), Some(f), Some(f), Some(12345)],
            "writes of {chunk}"
        );
        for buf in [1, 4096, 3 * FRAME_LEN] {
            assert_round_trip(
                &data,
                &stored,
                &written,
                decode_with_buf(&stored[..], buf).unwrap(),
            );
        }
        assert_round_trip(
            &data,
            &stored,
            &written,
            decode_with_buf(Trickle::new(&stored), 777).unwrap(),
        );
    }
}

#[test]
fn an_empty_object_has_one_empty_frame_and_a_flush_ends_a_frame() {
    let (stored, written) = encode_chunked(b"", CompressionSpec::default(), 1);
    assert_eq!(frames_of(&stored), vec![(HEADER_LEN, Some(0))]);
    assert_round_trip(b"", &stored, &written, decode_with_buf(&stored[..], 10).unwrap());

    let mut w = ObjectWriter::new(Vec::new(), CompressionSpec::default()).unwrap();
    w.write_all(b"first").unwrap();
    w.flush().unwrap();
    assert!(w.get_ref().len() > HEADER_LEN, "a flush reaches the inner writer");
    w.write_all(b" second").unwrap();
    let (stored, written) = w.finish().unwrap();
    let sizes: Vec<Option<u64>> = frames_of(&stored).into_iter().map(|(_, s)| s).collect();
    assert_eq!(sizes, vec![Some(5), Some(7)]);
    assert_round_trip(
        b"first second",
        &stored,
        &written,
        decode_with_buf(&stored[..], 3).unwrap(),
    );
}

/// A body of one long frame, as written before frames were cut (and as any
/// zstd stream writer makes): read by the streaming decoder.
#[test]
fn one_long_frame_and_frames_without_a_size_still_read() {
    let data = mixed(2 * FRAME_LEN + 99);
    let (framed, written) = encode_chunked(&data, CompressionSpec::default(), 64 << 10);
    let mut long = framed[..HEADER_LEN].to_vec();
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    enc.include_checksum(true).unwrap();
    enc.write_all(&data).unwrap();
    let frame = enc.finish().unwrap();
    assert_eq!(zstd::zstd_safe::get_frame_content_size(&frame).unwrap(), None);
    long.extend_from_slice(&frame);
    // A frame of known size above 1 MiB, then a small one.
    let mut c = zstd::bulk::Compressor::new(3).unwrap();
    long.extend(c.compress(&data[..FRAME_LEN + 1]).unwrap());
    long.extend(c.compress(&data[..10]).unwrap());
    long.extend_from_slice(&framed[framed.len() - TRAILER_LEN..]);
    let mut expected = data.clone();
    expected.extend_from_slice(&data[..FRAME_LEN + 1]);
    expected.extend_from_slice(&data[..10]);
    // The trailer is of `data` alone: the length check must fail, after
    // every frame was decoded.
    match decode_with_buf(&long[..], 4096) {
        Err(CodecError::LengthMismatch { expected: e, actual }) => {
            assert_eq!((e, actual), (data.len() as u64, expected.len() as u64))
        }
        other => panic!("{other:?}"),
    }
    // With the matching trailer it reads.
    let body_end = long.len() - TRAILER_LEN;
    let mut good = long[..body_end].to_vec();
    good.extend(crate::format::encode_trailer(
        expected.len() as u64,
        &sha256(&expected),
    ));
    let (out, summary) = decode_with_buf(&good[..], 100_000).unwrap();
    assert!(out == expected);
    assert_eq!(summary.original_len, expected.len() as u64);
    assert_eq!(written.original_len, data.len() as u64);
}

/// Damage in a frame is found whatever the size of the reads: smaller
/// than a frame, a frame, or more.
#[test]
fn damage_in_a_middle_frame_is_reported_at_that_frame() {
    let data = wal_like(3 * FRAME_LEN, 9);
    let (stored, _) = encode_chunked(&data, CompressionSpec::default(), 256 << 10);
    let frames = frames_of(&stored);
    assert_eq!(frames.len(), 3);
    let (second, _) = frames[1];
    let third = frames[2].0;
    // SAFETY: a valid slice; zstd reads at most its length.
    let header = unsafe {
        zstd::zstd_safe::zstd_sys::ZSTD_frameHeaderSize(stored[second..].as_ptr().cast(), third - second)
    };
    for buf in [64 << 10, FRAME_LEN, 2 * FRAME_LEN] {
        // The second frame's first block header made of the reserved block
        // type: zstd itself refuses it, and the error names the frame's
        // first byte.
        let mut bad = stored.clone();
        bad[second + header] |= 0b110;
        match decode_with_buf(&bad[..], buf) {
            Err(CodecError::Decompress { offset, .. }) => assert_eq!(offset, second as u64, "reads of {buf}"),
            other => panic!("reads of {buf}: {other:?}"),
        }
        // A byte flipped inside the compressed data: whatever zstd makes
        // of it, the trailer's digest or zstd refuses the object.
        let mut flipped = stored.clone();
        flipped[(second + third) / 2] ^= 0x55;
        assert!(decode_with_buf(&flipped[..], buf).is_err(), "reads of {buf}");
        // Cut inside the second frame: never accepted.
        let mut cut = stored[..(second + third) / 2].to_vec();
        cut.extend_from_slice(&stored[stored.len() - TRAILER_LEN..]);
        assert!(decode_with_buf(&cut[..], buf).is_err(), "reads of {buf}");
    }
}

/// A frame whose header claims another content size than its blocks hold
/// (more, less) is refused at that frame, whatever the size of the reads.
#[test]
fn a_frame_size_that_lies_is_refused() {
    let data = mixed(FRAME_LEN / 2);
    let body = zstd::bulk::Compressor::new(3).unwrap().compress(&data).unwrap();
    // zstd writes a 4-byte content size for this length after the magic
    // and the descriptor (single segment: no window byte).
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&body).unwrap(),
        Some(data.len() as u64)
    );
    assert_eq!(body[4] >> 6, 2, "4-byte content size field");
    for claim in [data.len() - 1, data.len() + 1, 1000] {
        let mut lying = body.clone();
        lying[5..9].copy_from_slice(&(claim as u32).to_le_bytes());
        let mut object = Vec::new();
        object.extend_from_slice(&encode_chunked(b"", CompressionSpec::default(), 1).0[..HEADER_LEN]);
        object.extend_from_slice(&lying);
        object.extend(crate::format::encode_trailer(data.len() as u64, &sha256(&data)));
        for buf in [4096, data.len() - 1, data.len(), data.len() + 1, FRAME_LEN] {
            match decode_with_buf(&object[..], buf) {
                Err(CodecError::Decompress { offset, .. }) => {
                    assert_eq!(offset, HEADER_LEN as u64, "claim {claim}, reads of {buf}")
                }
                other => panic!("claim {claim}, reads of {buf}: {other:?}"),
            }
        }
    }
}

/// Reads as a tar reader makes them: a 512-byte header, then a file's data
/// in reads of a frame or of whatever is left of the file, sizes that end
/// in the middle of a frame, land on its end, or fall one byte short of a
/// whole frame; the bytes and the digest are the same as read any other
/// way.
#[test]
fn reads_of_changing_sizes_around_a_frame() {
    let data = mixed(5 * FRAME_LEN + 777);
    let (stored, written) = encode_chunked(&data, CompressionSpec::default(), 256 << 10);
    let patterns: [&[usize]; 4] = [
        &[512, FRAME_LEN],
        &[512, FRAME_LEN - 1, FRAME_LEN, 3],
        &[FRAME_LEN - 512, FRAME_LEN, 512],
        &[FRAME_LEN + 1, 100, 2 * FRAME_LEN],
    ];
    for sizes in patterns {
        let mut r = ObjectReader::new(&stored[..]).unwrap();
        let mut out = Vec::new();
        let mut buf = vec![0u8; 2 * FRAME_LEN];
        for &size in sizes.iter().cycle() {
            let n = r.read(&mut buf[..size]).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        assert!(out == data, "reads of {sizes:?}: decoded bytes differ");
        assert_eq!(r.summary(), Some(&written), "reads of {sizes:?}");
    }
}

/// Bytes written in place make the object `write` would make, at every
/// codec, encrypted or not; zstd ends a frame early only when the room
/// left in it is below what was asked for.
#[test]
fn bytes_written_in_place_make_the_same_object() {
    let data = mixed(2 * FRAME_LEN + 70_000);
    let key = crate::DataKey::generate();
    for spec in all_specs() {
        for encrypted in [false, true] {
            let new = || match encrypted {
                false => ObjectWriter::new(Vec::new(), spec).unwrap(),
                true => ObjectWriter::new_encrypted(Vec::new(), spec, &key, "o").unwrap(),
            };
            let mut w = new();
            // A small write first, so that zstd's frames are not aligned
            // with the fills.
            w.write_all(&data[..100]).unwrap();
            let mut at = 100;
            while at < data.len() {
                let n = w
                    .write_in_place(100_000, 8192, |buf| {
                        // Whole pages of 8192 bytes but for the tail, as
                        // a backup's verified relation files.
                        let left = data.len() - at;
                        let n = if buf.len() < left {
                            buf.len() - buf.len() % 8192
                        } else {
                            left
                        };
                        buf[..n].copy_from_slice(&data[at..at + n]);
                        Ok(n)
                    })
                    .unwrap();
                assert!(n > 0);
                at += n;
            }
            assert_eq!(w.write_in_place(10, 1, |_| Ok(0)).unwrap(), 0);
            let (stored, written) = w.finish().unwrap();
            let mut reference = new();
            reference.write_all(&data).unwrap();
            let (reference_stored, expected) = reference.finish().unwrap();
            assert_eq!(written.digest, expected.digest, "{spec:?}");
            if spec.codec != Compression::Zstd && !encrypted {
                assert!(stored == reference_stored, "{spec:?}: the stored object differs");
            }
            assert_eq!(written.original_len, data.len() as u64);
            let back = match encrypted {
                false => decode_to_vec(&stored).unwrap().0,
                true => {
                    let mut r = ObjectReader::new_with_key(&stored[..], Some(&key), "o").unwrap();
                    let mut out = Vec::new();
                    r.read_to_end(&mut out).unwrap();
                    out
                }
            };
            assert!(
                back == data,
                "{spec:?} encrypted {encrypted}: decoded bytes differ"
            );
            if spec.codec == Compression::Zstd && !encrypted {
                // The first frame, 100 bytes and whole pages, ends where
                // less than a page of room is left; the later ones are
                // whole.
                let sizes: Vec<u64> = frames_of(&stored).into_iter().map(|(_, s)| s.unwrap()).collect();
                assert_eq!(sizes.iter().sum::<u64>(), data.len() as u64);
                let f = FRAME_LEN as u64;
                assert_eq!(sizes[0], 100 + (f - 100) / 8192 * 8192, "{sizes:?}");
                assert!(sizes[1..sizes.len() - 1].iter().all(|&s| s == f), "{sizes:?}");
            }
        }
    }
}

/// A fill that fails leaves the writer usable and takes nothing; a `min`
/// above what can be lent is refused.
#[test]
fn a_failed_fill_takes_nothing() {
    for spec in all_specs() {
        let mut w = ObjectWriter::new(Vec::new(), spec).unwrap();
        w.write_all(b"abc").unwrap();
        let e = w
            .write_in_place(1000, 1, |buf| {
                buf[0] = b'x';
                Err(io::Error::other("the file is gone"))
            })
            .unwrap_err();
        assert_eq!(e.to_string(), "the file is gone");
        assert!(w.write_in_place(1 << 20, (256 << 10) + 1, |_| Ok(0)).is_err());
        w.write_all(b"def").unwrap();
        let (stored, written) = w.finish().unwrap();
        assert_eq!(written.original_len, 6);
        assert_eq!(decode_to_vec(&stored).unwrap().0, b"abcdef");
    }
}
