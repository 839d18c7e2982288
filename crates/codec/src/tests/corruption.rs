//! Damaged objects: every class of damage is detected with the right
//! variant, through `decode_to_vec` and through the streaming reader alike,
//! and nothing panics.

use std::io::Read;

use super::*;
use crate::format::{HEADER_LEN, MIN_OBJECT_LEN, TRAILER_LEN};
use crate::testdata::{random_bytes, wal_like};
use crate::{encode_to_vec, format};

type Check = fn(&CodecError) -> bool;

fn sample(codec: Compression, len: usize) -> (Vec<u8>, Vec<u8>) {
    let data = wal_like(len, 99);
    let (stored, _) = encode_to_vec(&data, CompressionSpec::new(codec, None).unwrap()).unwrap();
    (data, stored)
}

/// Decodes through `decode_to_vec` and through a streaming reader with a
/// trickling inner reader and small reads; both must fail with an
/// integrity error accepted by `check`, and the streaming reader must keep
/// failing afterwards.
fn assert_rejected(name: &str, stored: &[u8], check: Check) {
    let err = decode_err(stored);
    assert!(check(&err), "{name}: decode_to_vec gave {err:?}");
    assert!(err.is_integrity(), "{name}: {err:?} is not an integrity error");
    let _ = err.to_string();

    let streamed = match ObjectReader::new(Trickle::new(stored)) {
        Err(e) => e,
        Ok(mut r) => {
            let mut buf = [0u8; 333];
            let e = loop {
                match r.read(&mut buf) {
                    Ok(0) => panic!("{name}: streaming reader reached EOF"),
                    Ok(_) => {}
                    Err(e) => break e,
                }
            };
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{name}");
            assert!(CodecError::from_io(&e).is_some(), "{name}");
            // Errors are sticky.
            let again = r.read(&mut buf).unwrap_err();
            assert_eq!(again.to_string(), e.to_string(), "{name}");
            assert!(r.summary().is_none());
            e.into()
        }
    };
    assert!(check(&streamed), "{name}: streaming reader gave {streamed:?}");
}

fn flip(stored: &[u8], at: usize, mask: u8) -> Vec<u8> {
    let mut v = stored.to_vec();
    v[at] ^= mask;
    v
}

/// Table: (name, damage, expected variant), per codec.
#[test]
fn damage_table_per_codec() {
    for codec in Compression::ALL {
        let (data, stored) = sample(codec, 300 * 1024);
        let n = stored.len();
        let t = n - TRAILER_LEN; // trailer start
        let body_mid = HEADER_LEN + (t - HEADER_LEN) / 2;
        let garbage = random_bytes(1000, 1);
        let trailer = stored[t..].to_vec();
        let body_bad: Check = if codec == Compression::None {
            |e| matches!(e, CodecError::ChecksumMismatch { .. })
        } else {
            |e| {
                matches!(
                    e,
                    CodecError::Decompress { .. } | CodecError::ChecksumMismatch { .. }
                )
            }
        };
        let cases: Vec<(&str, Vec<u8>, Check)> = vec![
            // header
            ("header magic", flip(&stored, 0, 0x01), |e| {
                matches!(
                    e,
                    CodecError::BadHeaderMagic {
                        expected: 0x184D2A50,
                        actual: 0x184D2A51
                    }
                )
            }),
            ("header magic high byte", flip(&stored, 3, 0x80), |e| {
                matches!(e, CodecError::BadHeaderMagic { .. })
            }),
            ("header payload length", flip(&stored, 4, 0x01), |e| {
                matches!(
                    e,
                    CodecError::BadHeaderLength {
                        expected: 8,
                        actual: 9
                    }
                )
            }),
            ("header tag", flip(&stored, 10, 0x20), |e| {
                matches!(e, CodecError::BadHeaderTag { .. })
            }),
            ("version", flip(&stored, 13, 0x02), |e| {
                matches!(
                    e,
                    CodecError::UnsupportedVersion {
                        supported: 1,
                        actual: 3
                    }
                )
            }),
            ("codec unknown", flip(&stored, 14, 0x10), |e| {
                matches!(e, CodecError::UnknownCodec { .. })
            }),
            ("flags encrypted", flip(&stored, 15, 0x01), |e| {
                matches!(e, CodecError::EncryptedObjectNeedsKey)
            }),
            // The other digest algorithm over the same bytes cannot match.
            ("flags digest", flip(&stored, 15, 0x02), |e| {
                matches!(e, CodecError::ChecksumMismatch { .. })
            }),
            ("flags unknown", flip(&stored, 15, 0x40), |e| {
                matches!(e, CodecError::UnsupportedFlags { actual: 0x40, .. })
            }),
            // body
            ("body first byte", flip(&stored, HEADER_LEN, 0xFF), body_bad),
            ("body middle byte", flip(&stored, body_mid, 0x10), body_bad),
            ("body last byte", flip(&stored, t - 1, 0x01), body_bad),
            // trailer
            ("trailer magic", flip(&stored, t, 0x01), |e| {
                matches!(
                    e,
                    CodecError::BadTrailerMagic {
                        expected: 0x184D2A5E,
                        actual: 0x184D2A5F
                    }
                )
            }),
            ("trailer payload length", flip(&stored, t + 4, 0x01), |e| {
                matches!(
                    e,
                    CodecError::BadTrailerLength {
                        expected: 44,
                        actual: 45
                    }
                )
            }),
            ("trailer tag", flip(&stored, t + 9, 0x01), |e| {
                matches!(e, CodecError::BadTrailerTag { .. })
            }),
            ("trailer original length", flip(&stored, t + 12, 0x01), |e| {
                matches!(e, CodecError::LengthMismatch { expected, actual }
                    if *expected == (300 * 1024) ^ 1 && *actual == 300 * 1024)
            }),
            (
                "trailer original length high byte",
                flip(&stored, t + 19, 0x80),
                |e| matches!(e, CodecError::LengthMismatch { .. }),
            ),
            ("trailer digest first byte", flip(&stored, t + 20, 0x01), |e| {
                matches!(e, CodecError::ChecksumMismatch { expected, actual }
                    if expected.len() == 71 && actual.len() == 71 && expected != actual)
            }),
            ("trailer digest last byte", flip(&stored, n - 1, 0x80), |e| {
                matches!(e, CodecError::ChecksumMismatch { .. })
            }),
            // truncation
            ("truncated to nothing", stored[..0].to_vec(), |e| {
                matches!(
                    e,
                    CodecError::TruncatedHeader {
                        expected: 16,
                        actual: 0
                    }
                )
            }),
            ("truncated inside header magic", stored[..3].to_vec(), |e| {
                matches!(e, CodecError::TruncatedHeader { actual: 3, .. })
            }),
            ("truncated inside header", stored[..10].to_vec(), |e| {
                matches!(e, CodecError::TruncatedHeader { actual: 10, .. })
            }),
            ("truncated after header", stored[..HEADER_LEN].to_vec(), |e| {
                matches!(
                    e,
                    CodecError::TooShort {
                        minimum: 68,
                        actual: 16
                    }
                )
            }),
            (
                "truncated to 67 bytes",
                stored[..MIN_OBJECT_LEN - 1].to_vec(),
                |e| {
                    matches!(
                        e,
                        CodecError::TooShort {
                            minimum: 68,
                            actual: 67
                        }
                    )
                },
            ),
            ("truncated inside body", stored[..body_mid].to_vec(), |e| {
                matches!(e, CodecError::BadTrailerMagic { .. })
            }),
            ("missing trailer", stored[..t].to_vec(), |e| {
                matches!(e, CodecError::BadTrailerMagic { .. })
            }),
            (
                "truncated inside trailer (1 byte)",
                stored[..t + 1].to_vec(),
                |e| matches!(e, CodecError::BadTrailerMagic { .. }),
            ),
            (
                "truncated inside trailer (half)",
                stored[..t + 26].to_vec(),
                |e| matches!(e, CodecError::BadTrailerMagic { .. }),
            ),
            ("last byte missing", stored[..n - 1].to_vec(), |e| {
                matches!(e, CodecError::BadTrailerMagic { .. })
            }),
            // appended / inserted bytes
            ("one byte appended", [&stored[..], &[0]].concat(), |e| {
                matches!(e, CodecError::BadTrailerMagic { .. })
            }),
            ("garbage appended", [&stored[..], &garbage[..]].concat(), |e| {
                matches!(e, CodecError::BadTrailerMagic { .. })
            }),
            (
                "object appended twice",
                [&stored[..], &stored[..]].concat(),
                |e| {
                    // The second copy's trailer is well framed; the first copy's
                    // trailer and everything after it follow the codec stream.
                    matches!(
                        e,
                        CodecError::TrailingGarbage { .. } | CodecError::LengthMismatch { .. }
                    )
                },
            ),
            ("trailer duplicated", [&stored[..], &trailer[..]].concat(), |e| {
                matches!(
                    e,
                    CodecError::TrailingGarbage { bytes: 52, .. } | CodecError::LengthMismatch { .. }
                )
            }),
            (
                "garbage between body and trailer",
                [&stored[..t], &garbage[..], &trailer[..]].concat(),
                |e| {
                    matches!(
                        e,
                        CodecError::TrailingGarbage { bytes: 1000, .. } | CodecError::LengthMismatch { .. }
                    )
                },
            ),
        ];
        for (name, damaged, check) in cases {
            let name = format!("{codec}: {name}");
            assert_rejected(&name, &damaged, check);
        }
        // Sanity: the undamaged object decodes.
        assert!(decode_to_vec(&stored).unwrap().0 == data);
    }
}

#[test]
fn trailing_garbage_inside_body_is_reported_with_offsets() {
    for codec in [Compression::Zstd, Compression::Lz4, Compression::Lzma] {
        let (data, stored) = sample(codec, 10_000);
        let t = stored.len() - TRAILER_LEN;
        for extra in [&b"x"[..], b"\0\0\0\0", b"0123456789", &random_bytes(100_000, 5)] {
            let damaged = [&stored[..t], extra, &stored[t..]].concat();
            let err = decode_err(&damaged);
            match err {
                CodecError::TrailingGarbage {
                    codec: c,
                    offset,
                    bytes,
                } => {
                    assert_eq!(c, codec);
                    assert_eq!(offset, t as u64);
                    assert_eq!(bytes, extra.len() as u64);
                }
                other => panic!("{codec} +{}: {other:?}", extra.len()),
            }
        }
        assert!(decode_to_vec(&stored).unwrap().0 == data);
    }
}

#[test]
fn none_codec_counts_extra_body_bytes_as_data() {
    // With no codec framing the body runs to the trailer; the trailer's
    // length and checksum catch any change.
    let (_, stored) = sample(Compression::None, 1000);
    let t = stored.len() - TRAILER_LEN;
    let damaged = [&stored[..t], b"extra", &stored[t..]].concat();
    assert!(matches!(
        decode_err(&damaged),
        CodecError::LengthMismatch {
            expected: 1000,
            actual: 1005
        }
    ));
}

#[test]
fn codec_byte_swapped_to_another_valid_codec() {
    for from in Compression::ALL {
        let (_, stored) = sample(from, 50_000);
        for to in Compression::ALL {
            if to == from {
                continue;
            }
            let mut damaged = stored.clone();
            damaged[14] = format::encode_header(to)[14];
            let name = format!("{from} read as {to}");
            assert_rejected(&name, &damaged, |e| {
                matches!(
                    e,
                    CodecError::Decompress { .. }
                        | CodecError::ChecksumMismatch { .. }
                        | CodecError::LengthMismatch { .. }
                        | CodecError::TrailingGarbage { .. }
                )
            });
        }
    }
}

#[test]
fn truncated_codec_stream_with_intact_trailer() {
    // The body was cut but a trailer re-attached: the codec notices.
    for codec in [Compression::Zstd, Compression::Lz4, Compression::Lzma] {
        let (_, stored) = sample(codec, 200_000);
        let t = stored.len() - TRAILER_LEN;
        for cut in [1, 5, 100, (t - HEADER_LEN) / 2] {
            let damaged = [&stored[..t - cut], &stored[t..]].concat();
            let name = format!("{codec} body cut by {cut}");
            assert_rejected(&name, &damaged, |e| {
                matches!(
                    e,
                    CodecError::Decompress { .. } | CodecError::LengthMismatch { .. }
                )
            });
        }
        // No body at all.
        let damaged = [&stored[..HEADER_LEN], &stored[t..]].concat();
        assert_rejected(&format!("{codec} empty body"), &damaged, |e| {
            matches!(e, CodecError::Decompress { .. })
        });
    }
}

#[test]
fn not_objects_at_all() {
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        (
            "plain zstd stream",
            zstd::encode_all(&b"hello"[..], 3).unwrap(),
            |e| {
                matches!(
                    e,
                    CodecError::BadHeaderMagic {
                        actual: 0xFD2FB528,
                        ..
                    }
                )
            },
        ),
        ("text", b"this is not a pgark object at all".to_vec(), |e| {
            matches!(e, CodecError::BadHeaderMagic { .. })
        }),
        ("zeros", vec![0; 4096], |e| {
            matches!(e, CodecError::BadHeaderMagic { actual: 0, .. })
        }),
        (
            "foreign skippable frame",
            [&[0x50, 0x2A, 0x4D, 0x18, 8, 0, 0, 0][..], b"OTHER\x01\x01\x00"].concat(),
            |e| matches!(e, CodecError::BadHeaderTag { .. }),
        ),
        (
            "header only",
            format::encode_header(Compression::Zstd).to_vec(),
            |e| matches!(e, CodecError::TooShort { .. }),
        ),
        (
            "header and trailer, no zstd frame",
            [
                &format::encode_header(Compression::Zstd)[..],
                &format::encode_trailer(0, &sha256(b"")),
            ]
            .concat(),
            |e| matches!(e, CodecError::Decompress { .. }),
        ),
        (
            "header and trailer, no lz4 frame",
            [
                &format::encode_header(Compression::Lz4)[..],
                &format::encode_trailer(0, &sha256(b"")),
            ]
            .concat(),
            |e| matches!(e, CodecError::Decompress { .. }),
        ),
        (
            "header and trailer, no xz stream",
            [
                &format::encode_header(Compression::Lzma)[..],
                &format::encode_trailer(0, &sha256(b"")),
            ]
            .concat(),
            |e| matches!(e, CodecError::Decompress { .. }),
        ),
    ];
    for (name, bytes, check) in cases {
        assert_rejected(name, &bytes, check);
    }
}

/// Skippable frames are not part of a pgark body: inside it they are
/// trailing garbage (or, first, not a codec stream).
#[test]
fn skippable_frames_inside_the_body() {
    let a = wal_like(50_000, 1);
    let skippable = [0x53, 0x2A, 0x4D, 0x18, 3, 0, 0, 0, 1, 2, 3];
    let trailer = format::encode_trailer(a.len() as u64, &sha256(&a));
    let frame = zstd::encode_all(&a[..], 3).unwrap();
    let header = format::encode_header(Compression::Zstd);
    let after = [&header[..], &frame, &skippable, &trailer].concat();
    assert_rejected("zstd + skippable", &after, |e| {
        matches!(e, CodecError::TrailingGarbage { bytes: 11, .. })
    });
    let before = [&header[..], &skippable, &frame, &trailer].concat();
    assert_rejected("skippable + zstd", &before, |e| {
        matches!(e, CodecError::Decompress { .. })
    });
}

/// Every single-byte change anywhere in a small object of each codec:
/// decoding fails, or (for bytes the codec does not depend on, such as a
/// zstd window size larger than needed) yields exactly the original data —
/// never different data, never a panic.
#[test]
fn exhaustive_single_byte_damage() {
    for codec in Compression::ALL {
        let data = wal_like(3000, 5);
        let (stored, _) = encode_to_vec(&data, CompressionSpec::new(codec, None).unwrap()).unwrap();
        let mut harmless = 0;
        for at in 0..stored.len() {
            for mask in [0x01, 0x80, 0xFF] {
                match decode_to_vec(&flip(&stored, at, mask)) {
                    Ok((out, _)) => {
                        assert!(
                            out == data,
                            "{codec}: byte {at} ^ {mask:#x} decoded to different data"
                        );
                        harmless += 1;
                    }
                    Err(e) => assert!(e.is_integrity(), "{codec}: {e:?}"),
                }
            }
        }
        // Header and trailer bytes are all checked.
        assert!(harmless < 3 * 4, "{codec}: {harmless} changes went unnoticed");
    }
}

/// Every truncation of a small object is rejected.
#[test]
fn every_truncation_and_extension() {
    for codec in Compression::ALL {
        let (_, stored) = sample(codec, 2000);
        for len in 0..stored.len() {
            let err = decode_err(&stored[..len]);
            assert!(err.is_integrity());
            let expect_ok = match len {
                0..HEADER_LEN => matches!(err, CodecError::TruncatedHeader { .. }),
                HEADER_LEN..MIN_OBJECT_LEN => matches!(err, CodecError::TooShort { .. }),
                _ => matches!(err, CodecError::BadTrailerMagic { .. }),
            };
            assert!(expect_ok, "{codec} truncated to {len}: {err:?}");
        }
        for extra in 1..=60 {
            let longer = [&stored[..], &vec![0xA5; extra]].concat();
            assert!(
                matches!(decode_err(&longer), CodecError::BadTrailerMagic { .. }),
                "{codec} +{extra}"
            );
        }
    }
}

/// I/O errors of the inner reader are reported as I/O errors, not as
/// damage, wherever they happen.
#[test]
fn inner_read_errors_stay_io_errors() {
    struct FailAt<'a> {
        data: &'a [u8],
        pos: usize,
        fail_at: usize,
        kind: io::ErrorKind,
    }
    impl Read for FailAt<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.pos >= self.fail_at {
                return Err(io::Error::new(self.kind, "disk on fire"));
            }
            let n = buf.len().min(self.fail_at - self.pos).min(1000);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }
    for codec in Compression::ALL {
        let (_, stored) = sample(codec, 100_000);
        for fail_at in [
            0,
            5,
            16,
            17,
            100,
            5000,
            stored.len() - 52,
            stored.len() - 1,
            stored.len(),
        ] {
            // UnexpectedEof is what some codecs use internally: make sure it
            // is not mistaken for the end of a frame either.
            for kind in [io::ErrorKind::TimedOut, io::ErrorKind::UnexpectedEof] {
                let inner = FailAt {
                    data: &stored,
                    pos: 0,
                    fail_at,
                    kind,
                };
                let result = ObjectReader::new(inner).and_then(|mut r| {
                    let mut sink = Vec::new();
                    r.read_to_end(&mut sink).map_err(|e| {
                        assert!(
                            CodecError::from_io(&e).is_none(),
                            "{codec} {fail_at}: wrapped {e:?}"
                        );
                        assert_eq!(e.kind(), kind);
                        CodecError::from(e)
                    })
                });
                match result {
                    Err(CodecError::Io(e)) => {
                        assert_eq!(e.kind(), kind);
                        assert!(e.to_string().contains("disk on fire"));
                    }
                    other => panic!("{codec} fail at {fail_at} ({kind:?}): {other:?}"),
                }
            }
        }
    }
}

/// A failing inner writer poisons the writer.
#[test]
fn inner_write_errors_poison_the_writer() {
    struct FailAfter {
        left: usize,
    }
    impl Write for FailAfter {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "no space"));
            }
            let n = buf.len().min(self.left);
            self.left -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    // Fails while writing the header.
    match ObjectWriter::new(FailAfter { left: 3 }, CompressionSpec::default()) {
        Err(CodecError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::StorageFull),
        other => panic!("{:?}", other.map(|_| ())),
    }
    let data = random_bytes(2_000_000, 3);
    for spec in all_specs() {
        let mut w = ObjectWriter::new(FailAfter { left: 100 }, spec).unwrap();
        // Codecs keep output in their own buffers until a later write.
        let err = data
            .chunks(64 * 1024)
            .try_for_each(|c| w.write_all(c))
            .expect_err(&spec.to_string());
        assert_eq!(err.kind(), io::ErrorKind::StorageFull, "{spec}");
        let again = w.write(b"more").unwrap_err();
        assert!(
            matches!(CodecError::from_io(&again), Some(CodecError::WriterFailed { .. })),
            "{spec}"
        );
        match w.finish() {
            Err(e @ CodecError::WriterFailed { .. }) => assert!(!e.is_integrity()),
            other => panic!("{spec}: {:?}", other.map(|_| ())),
        }
    }
    // Fails only when finishing (trailer).
    for spec in all_specs() {
        let (full, _) = encode_to_vec(b"tiny", spec).unwrap();
        let mut w = ObjectWriter::new(
            FailAfter {
                left: full.len() - 10,
            },
            spec,
        )
        .unwrap();
        w.write_all(b"tiny").unwrap();
        assert!(matches!(w.finish(), Err(CodecError::Io(_))), "{spec}");
    }
}

/// A writer dropped without `finish` leaves an object every reader
/// rejects.
#[test]
fn unfinished_objects_are_rejected() {
    let data = wal_like(200_000, 8);
    for spec in all_specs() {
        let mut out = Vec::new();
        {
            let mut w = ObjectWriter::new(&mut out, spec).unwrap();
            w.write_all(&data).unwrap();
            w.flush().unwrap();
        }
        let err = decode_err(&out);
        assert!(
            matches!(
                err,
                CodecError::BadTrailerMagic { .. } | CodecError::TooShort { .. }
            ),
            "{spec}: {err:?}"
        );
    }
}
