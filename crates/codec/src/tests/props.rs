//! Property tests: random data, random codec and level, random write and
//! read sizes round trip; random and mutated inputs never panic and never
//! decode to wrong data.

use std::io::Write;

use proptest::collection::vec;
use proptest::prelude::*;

use super::*;
use crate::testdata::wal_like;
use crate::{encode_to_vec, format};

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..20_000),
        // Low-entropy: long repeats, compresses well.
        vec(0u8..3, 0..100_000),
        (0usize..200_000, any::<u64>()).prop_map(|(len, seed)| wal_like(len, seed)),
    ]
}

/// A random codec with a random valid level (or none). Levels are capped
/// where the unoptimised test build would make them slow.
fn spec() -> impl Strategy<Value = CompressionSpec> {
    prop_oneof![
        Just(CompressionSpec::new(Compression::None, None).unwrap()),
        Just(CompressionSpec::new(Compression::Lz4, None).unwrap()),
        proptest::option::of(1i32..=12).prop_map(|l| CompressionSpec::new(Compression::Zstd, l).unwrap()),
        proptest::option::of(0i32..=3).prop_map(|l| CompressionSpec::new(Compression::Lzma, l).unwrap()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn decode_of_encode_is_identity(
        data in data(),
        spec in spec(),
        write_chunk in 1usize..70_000,
        read_buf in 1usize..70_000,
        blake3 in any::<bool>(),
    ) {
        let algorithm = if blake3 { crate::DigestAlgorithm::Blake3 } else { crate::DigestAlgorithm::Sha256 };
        let mut w = ObjectWriter::with_options(Vec::new(), spec, algorithm, None).unwrap();
        for piece in data.chunks(write_chunk) {
            w.write_all(piece).unwrap();
        }
        let (stored, written) = w.finish().unwrap();
        prop_assert_eq!(written.codec, spec.codec);
        prop_assert_eq!(written.original_len, data.len() as u64);
        prop_assert_eq!(written.stored_len, stored.len() as u64);
        prop_assert_eq!(written.digest, crate::ContentDigest::of(algorithm, &data));
        if !blake3 {
            prop_assert_eq!(written.digest.bytes, sha256(&data));
        }

        let (out, read) = decode_with_buf(&stored[..], read_buf).unwrap();
        prop_assert!(out == data);
        prop_assert_eq!(read, written);
        let (out2, read2) = decode_to_vec(&stored).unwrap();
        prop_assert!(out2 == data);
        prop_assert_eq!(read2, written);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..400)) {
        prop_assert!(decode_to_vec(&bytes).is_err());
    }

    #[test]
    fn valid_header_then_arbitrary_bytes_never_panic(
        codec in prop::sample::select(Compression::ALL.to_vec()),
        rest in vec(any::<u8>(), 0..2000),
    ) {
        let stored = [&format::encode_header(codec)[..], &rest].concat();
        if let Ok((out, summary)) = decode_to_vec(&stored) {
            // Only possible if `rest` happens to be a valid body + trailer.
            prop_assert_eq!(summary.digest.bytes, sha256(&out));
        }
    }

    #[test]
    fn mutations_are_detected_or_harmless(
        data in data(),
        spec in spec(),
        edits in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let (stored, _) = encode_to_vec(&data, spec).unwrap();
        let mut damaged = stored.clone();
        for (at, value) in edits {
            let i = at.index(damaged.len());
            damaged[i] = value;
        }
        if let Some(cut) = cut {
            damaged.truncate(cut.index(damaged.len()));
        }
        match decode_to_vec(&damaged) {
            Ok((out, _)) => prop_assert!(out == data, "damaged object decoded to different data"),
            Err(e) => prop_assert!(e.is_integrity(), "{:?}", e),
        }
    }
}
