//! Encrypted objects: round trips for every codec, no key, wrong key or
//! name, and damage to every part of the encrypted stream.

use std::io::{Read, Write};

use pgark_crypto::stream::{CHUNK_LEN_FIELD, STREAM_HEADER_LEN, TAG_LEN};
use pgark_crypto::{CryptoError, DataKey};
use proptest::prelude::*;

use super::*;
use crate::format::{self, FLAG_ENCRYPTED, HEADER_LEN, TRAILER_LEN};
use crate::testdata::wal_like;
use crate::{decode_to_vec_with_key, encode_to_vec, encode_to_vec_encrypted};

const NAME: &str = "wal/0000000100000000/000000010000000000000001";
const CHUNK: usize = 64 * 1024;

fn key() -> DataKey {
    DataKey::from_bytes(&[0x5A; 32])
}

fn encode_enc(data: &[u8], spec: CompressionSpec, write: usize) -> (Vec<u8>, ObjectSummary) {
    let mut w = ObjectWriter::new_encrypted(Vec::new(), spec, &key(), NAME).unwrap();
    assert!(w.is_encrypted());
    for piece in data.chunks(write.max(1)) {
        w.write_all(piece).unwrap();
    }
    w.finish().unwrap()
}

fn decode_enc<R: Read>(inner: R, name: &str, buf_len: usize) -> Result<(Vec<u8>, ObjectSummary), CodecError> {
    let mut r = ObjectReader::new_with_key(inner, Some(&key()), name)?;
    assert!(r.is_encrypted());
    let mut out = Vec::new();
    let mut buf = vec![0u8; buf_len];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e.into()),
        }
    }
    let summary = *r.summary().expect("summary after EOF");
    assert_eq!(r.read(&mut buf).unwrap(), 0);
    Ok((out, summary))
}

#[test]
fn round_trips_every_codec_and_size() {
    for spec in all_specs() {
        for len in [0, 1, 1000, CHUNK - 52, CHUNK, CHUNK + 1, 300 * 1024 + 7] {
            let data = wal_like(len, len as u64);
            for write in [7, 8192, 1 << 20] {
                let (stored, written) = encode_enc(&data, spec, write);
                assert_eq!(stored[15], FLAG_ENCRYPTED, "{spec:?}");
                assert_eq!(&stored[..15], &format::encode_header(spec.codec)[..15]);
                let decoded = decode_enc(Trickle::new(&stored), NAME, 1000).unwrap();
                assert_round_trip(&data, &stored, &written, decoded);
            }
            let (stored, written) = encode_to_vec_encrypted(&data, spec, &key(), NAME).unwrap();
            let decoded = decode_to_vec_with_key(&stored, Some(&key()), NAME).unwrap();
            assert_round_trip(&data, &stored, &written, decoded);
        }
    }
}

#[test]
fn writing_through_a_trickling_inner_writer() {
    let data = wal_like(200 * 1024, 3);
    let spec = CompressionSpec::default();
    let mut w = ObjectWriter::new_encrypted(
        TrickleWriter {
            out: Vec::new(),
            calls: 0,
        },
        spec,
        &key(),
        NAME,
    )
    .unwrap();
    w.write_all(&data).unwrap();
    let (inner, written) = w.finish().unwrap();
    assert_eq!(written.stored_len, inner.out.len() as u64);
    let decoded = decode_enc(&inner.out[..], NAME, 4096).unwrap();
    assert_round_trip(&data, &inner.out, &written, decoded);
}

#[test]
fn nothing_but_the_header_is_in_clear() {
    let data = b"SELECT 'plaintext that must not show' FROM pg_class; ".repeat(50);
    let spec = CompressionSpec::new(Compression::None, None).unwrap();
    let (stored, summary) = encode_to_vec_encrypted(&data, spec, &key(), NAME).unwrap();
    assert!(!stored.windows(20).any(|w| w == &data[..20]), "plaintext visible");
    // Neither the trailer frame nor the checksum nor the length is visible.
    assert!(
        !stored.windows(32).any(|w| w == summary.digest.bytes),
        "sha256 visible"
    );
    assert!(!stored
        .windows(4)
        .any(|w| w == format::TRAILER_MAGIC.to_le_bytes()));
    assert!(!stored.windows(8).any(|w| w == (data.len() as u64).to_le_bytes()));
    // Layout: header, crypto header, one chunk of body + trailer.
    assert_eq!(
        stored.len(),
        HEADER_LEN + STREAM_HEADER_LEN + CHUNK_LEN_FIELD + data.len() + TRAILER_LEN + TAG_LEN
    );
    assert_eq!(&stored[HEADER_LEN..HEADER_LEN + 4], b"PGAE");
}

#[test]
fn missing_key_is_its_own_error() {
    let (stored, _) = encode_to_vec_encrypted(b"wal", CompressionSpec::default(), &key(), NAME).unwrap();
    for err in [
        ObjectReader::new(&stored[..]).unwrap_err(),
        ObjectReader::new_with_key(&stored[..], None, NAME).unwrap_err(),
        decode_to_vec(&stored).unwrap_err(),
    ] {
        assert!(matches!(err, CodecError::EncryptedObjectNeedsKey), "{err:?}");
        assert!(err.is_integrity(), "retrying without a key will not help");
        assert_eq!(
            err.to_string(),
            "this object is encrypted: a key is needed to read it"
        );
    }
}

#[test]
fn unencrypted_objects_read_with_a_key() {
    let data = wal_like(5000, 1);
    let (stored, written) = encode_to_vec(&data, CompressionSpec::default()).unwrap();
    let mut r = ObjectReader::new_with_key(&stored[..], Some(&key()), NAME).unwrap();
    assert!(!r.is_encrypted());
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    assert_eq!(out, data);
    assert_eq!(r.summary().unwrap(), &written);
}

/// Reads `stored` under `name` and returns the crypto error inside the
/// codec error, checking the streaming reader agrees with the in-memory
/// one and keeps failing.
fn crypto_err(stored: &[u8], name: &str) -> CryptoError {
    let in_memory = match decode_to_vec_with_key(stored, Some(&key()), name) {
        Ok(_) => panic!("damaged object decoded"),
        Err(e) => e,
    };
    assert!(in_memory.is_integrity(), "{in_memory:?}");
    let streamed = match ObjectReader::new_with_key(Trickle::new(stored), Some(&key()), name) {
        Err(e) => e,
        Ok(mut r) => {
            let mut buf = [0u8; 4096];
            let e = loop {
                match r.read(&mut buf) {
                    Ok(0) => panic!("streaming reader reached EOF"),
                    Ok(_) => {}
                    Err(e) => break e,
                }
            };
            assert_eq!(e.kind(), io::ErrorKind::InvalidData);
            assert!(
                matches!(CodecError::from_io(&e), Some(CodecError::Crypto(_))),
                "{e:?}"
            );
            assert_eq!(r.read(&mut buf).unwrap_err().to_string(), e.to_string());
            assert!(r.summary().is_none());
            e.into()
        }
    };
    assert_eq!(in_memory.to_string(), streamed.to_string());
    match in_memory {
        CodecError::Crypto(e) => e,
        other => panic!("not a crypto error: {other:?}"),
    }
}

#[test]
fn damage_to_every_part() {
    let data = wal_like(300 * 1024, 5);
    // `none`: the stream has several chunks.
    let spec = CompressionSpec::new(Compression::None, None).unwrap();
    let (stored, _) = encode_to_vec_encrypted(&data, spec, &key(), NAME).unwrap();
    let flip = |at: usize| {
        let mut v = stored.clone();
        v[at] ^= 0x01;
        v
    };
    let crypto = HEADER_LEN; // start of the crypto stream
    let chunk0 = crypto + STREAM_HEADER_LEN;
    let chunk_len = CHUNK_LEN_FIELD + CHUNK + TAG_LEN;
    let chunks = (data.len() + TRAILER_LEN).div_ceil(CHUNK);
    let last = chunks as u64 - 1;

    type Check = fn(&CryptoError) -> bool;
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        (
            "codec byte",
            {
                let mut v = stored.clone();
                v[14] = Compression::Zstd.id();
                v
            },
            |e| matches!(e, CryptoError::TamperedHeader),
        ),
        ("stream salt", flip(crypto + 20), |e| {
            matches!(e, CryptoError::TamperedHeader)
        }),
        ("stream data key id", flip(crypto + 8), |e| {
            matches!(e, CryptoError::WrongDataKey { .. })
        }),
        ("stream header tag", flip(chunk0 - 1), |e| {
            matches!(e, CryptoError::TamperedHeader)
        }),
        ("chunk 0 body", flip(chunk0 + 100), |e| {
            matches!(e, CryptoError::AuthFailed { chunk: 0 })
        }),
        ("chunk 1 tag", flip(chunk0 + 2 * chunk_len - 1), |e| {
            matches!(e, CryptoError::AuthFailed { chunk: 1 })
        }),
        (
            "last chunk tag (where the trailer was)",
            flip(stored.len() - 1),
            |e| matches!(e, CryptoError::AuthFailed { .. }),
        ),
        (
            "truncated at a chunk boundary",
            stored[..chunk0 + 2 * chunk_len].to_vec(),
            |e| matches!(e, CryptoError::Truncated { chunk: 2 }),
        ),
        (
            "truncated by a trailer's length",
            stored[..stored.len() - TRAILER_LEN].to_vec(),
            |e| matches!(e, CryptoError::Truncated { .. }),
        ),
        (
            "truncated after the crypto header",
            stored[..chunk0].to_vec(),
            |e| matches!(e, CryptoError::Truncated { chunk: 0 }),
        ),
        (
            "truncated inside the crypto header",
            stored[..chunk0 - 1].to_vec(),
            |e| matches!(e, CryptoError::TruncatedHeader { .. }),
        ),
        ("garbage appended", [&stored[..], b"garbage"].concat(), |e| {
            matches!(e, CryptoError::TrailingData { .. })
        }),
        (
            "chunks swapped",
            {
                let mut v = stored.clone();
                let (a, b) = (chunk0, chunk0 + chunk_len);
                let first = v[a..b].to_vec();
                v.copy_within(b..b + chunk_len, a);
                v[b..b + chunk_len].copy_from_slice(&first);
                v
            },
            |e| matches!(e, CryptoError::AuthFailed { chunk: 0 }),
        ),
    ];
    assert!(last >= 4);
    for (what, damaged, check) in cases {
        let err = crypto_err(&damaged, NAME);
        assert!(check(&err), "{what}: {err:?}");
    }
}

#[test]
fn objects_swapped_between_names_or_repositories() {
    let (a, _) = encode_to_vec_encrypted(b"segment A", CompressionSpec::default(), &key(), NAME).unwrap();
    let other_name = "wal/0000000100000000/000000010000000000000002";
    let err = crypto_err(&a, other_name);
    assert!(
        matches!(&err, CryptoError::WrongObject { expected } if expected == other_name),
        "{err:?}"
    );
    // Another repository's data key.
    let other_key = DataKey::from_bytes(&[0x11; 32]);
    let err = ObjectReader::new_with_key(&a[..], Some(&other_key), NAME).unwrap_err();
    assert!(
        matches!(err, CodecError::Crypto(CryptoError::WrongDataKey { .. })),
        "{err:?}"
    );
    assert!(err.is_integrity());
}

#[test]
fn clearing_the_encrypted_flag_is_detected() {
    let (stored, _) =
        encode_to_vec_encrypted(&wal_like(10_000, 2), CompressionSpec::default(), &key(), NAME).unwrap();
    let mut cleared = stored.clone();
    cleared[15] = 0;
    let err = decode_to_vec_with_key(&cleared, Some(&key()), NAME).unwrap_err();
    assert!(err.is_integrity(), "{err:?}");
    let err = decode_to_vec(&cleared).unwrap_err();
    assert!(err.is_integrity(), "{err:?}");
    // Setting it on an unencrypted object: it now wants a key, and with one
    // the "stream" is not an encrypted stream.
    let (plain, _) = encode_to_vec(&wal_like(10_000, 2), CompressionSpec::default()).unwrap();
    let mut set = plain.clone();
    set[15] |= FLAG_ENCRYPTED;
    assert!(matches!(
        decode_to_vec(&set),
        Err(CodecError::EncryptedObjectNeedsKey)
    ));
    let err = crypto_err(&set, NAME);
    assert!(matches!(err, CryptoError::NotEncryptedStream { .. }), "{err:?}");
}

#[test]
fn unfinished_writer_leaves_an_unreadable_object() {
    let mut out = Vec::new();
    {
        let mut w = ObjectWriter::new_encrypted(&mut out, CompressionSpec::default(), &key(), NAME).unwrap();
        w.write_all(&wal_like(500 * 1024, 9)).unwrap();
        w.flush().unwrap();
    }
    let err = crypto_err(&out, NAME);
    assert!(matches!(err, CryptoError::Truncated { .. }), "{err:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn prop_encrypted_round_trip(
        data in prop::collection::vec(any::<u8>(), 0..20_000),
        codec in prop::sample::select(Compression::ALL.to_vec()),
        write in 1usize..5000,
        read in 1usize..5000,
    ) {
        let spec = CompressionSpec::new(codec, None).unwrap();
        let (stored, written) = encode_enc(&data, spec, write);
        let decoded = decode_enc(&stored[..], NAME, read).unwrap();
        assert_round_trip(&data, &stored, &written, decoded);
    }

    #[test]
    fn prop_encrypted_bit_flips_are_detected(len in 0usize..5000, pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let (stored, _) = encode_to_vec_encrypted(&wal_like(len, 4), CompressionSpec::default(), &key(), NAME).unwrap();
        let at = pos.index(stored.len());
        let mut bad = stored.clone();
        bad[at] ^= 1 << bit;
        prop_assert!(decode_to_vec_with_key(&bad, Some(&key()), NAME).is_err());
    }
}
