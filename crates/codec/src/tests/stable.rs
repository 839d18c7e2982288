//! `ObjectWriter::finish_from`: the whole-source zstd path (stable input
//! buffer) against the streaming writer and the reader.

use std::io::{Read, Write};

use super::*;
use crate::testdata::{random_bytes, wal_like};

const MIB: usize = 1024 * 1024;

fn zstd_spec(level: Option<i32>) -> CompressionSpec {
    CompressionSpec::new(Compression::Zstd, level).unwrap()
}

/// A 16 MiB segment-like source: WAL-like records with an incompressible
/// stretch, so matches reach back across steps and windows.
fn segment() -> Vec<u8> {
    let mut data = wal_like(16 * MIB, 7);
    data[5 * MIB..5 * MIB + 300_000].copy_from_slice(&random_bytes(300_000, 3));
    // A repeat from far back (beyond a 2 MiB window) and from near.
    let (far, near) = (
        data[MIB..MIB + 100_000].to_vec(),
        data[9 * MIB..9 * MIB + 50_000].to_vec(),
    );
    data[12 * MIB..12 * MIB + 100_000].copy_from_slice(&far);
    data[9 * MIB + 600_000..9 * MIB + 650_000].copy_from_slice(&near);
    data
}

/// The window size a zstd frame's header declares.
fn window_of(frame: &[u8]) -> u64 {
    use zstd::zstd_safe::zstd_sys;
    let mut header = std::mem::MaybeUninit::<zstd_sys::ZSTD_FrameHeader>::zeroed();
    // SAFETY: `frame` is readable for its length; the header is written by
    // zstd when it returns 0.
    let rc =
        unsafe { zstd_sys::ZSTD_getFrameHeader(header.as_mut_ptr(), frame.as_ptr().cast(), frame.len()) };
    assert_eq!(rc, 0, "not a whole zstd frame header");
    // SAFETY: initialised above.
    unsafe { header.assume_init() }.windowSize
}

#[test]
fn whole_source_objects_decode_like_streamed_ones() {
    let data = segment();
    for level in [None, Some(1), Some(9), Some(19)] {
        let spec = zstd_spec(level);
        let w = ObjectWriter::new(Vec::new(), spec).unwrap();
        let (stored, summary) = w.finish_from(&mut &data[..], data.len() as u64).unwrap();
        let decoded = decode_with_buf(&stored[..], 100_000).unwrap();
        assert_round_trip(&data, &stored, &summary, decoded);
        // The streaming writer (the path older objects were written by)
        // records the same digest and length.
        let (streamed, streamed_summary) = encode_chunked(&data, spec, 256 << 10);
        assert_eq!(streamed_summary.digest, summary.digest);
        assert_eq!(streamed_summary.original_len, summary.original_len);
        let decoded = decode_with_buf(&streamed[..], 100_000).unwrap();
        assert_round_trip(&data, &streamed, &streamed_summary, decoded);
        // One standard zstd frame between header and trailer: the zstd
        // library alone decodes the body (what `zstd -d` does by hand).
        let body = &stored[crate::format::HEADER_LEN..stored.len() - 52];
        assert_eq!(zstd::decode_all(body).unwrap(), data, "level {level:?}");
        // Its window is at most 512 KiB, what a reader holds of it.
        assert!(
            window_of(body) <= 512 << 10,
            "level {level:?}: window {}",
            window_of(body)
        );
        assert!(
            stored.len() <= streamed.len() + streamed.len() / 50,
            "level {level:?}: {} bytes whole, {} streamed",
            stored.len(),
            streamed.len()
        );
    }
}

#[test]
fn whole_source_encrypted_and_blake3() {
    let data = segment();
    let key = pgark_crypto::DataKey::generate();
    for (digest, encrypt) in [
        (crate::DigestAlgorithm::Sha256, true),
        (crate::DigestAlgorithm::Blake3, false),
    ] {
        let w = ObjectWriter::with_options(
            Vec::new(),
            zstd_spec(None),
            digest,
            encrypt.then_some((&key, "wal/x")),
        )
        .unwrap();
        let (stored, summary) = w.finish_from(&mut &data[..], data.len() as u64).unwrap();
        let (out, read) = crate::decode_to_vec_with_key(&stored, Some(&key), "wal/x").unwrap();
        assert!(out == data);
        assert_eq!(read, summary);
        assert_eq!(summary.digest, crate::ContentDigest::of(digest, &data));
    }
}

/// Short reads and `Interrupted` from the source, other codecs and small
/// sources (the streaming path), data written before `finish_from`.
#[test]
fn any_source_codec_and_length() {
    let big = segment();
    for spec in all_specs() {
        for data in [&big[..], &big[..3 * MIB + 5], &big[..0]] {
            let w = ObjectWriter::new(Vec::new(), spec).unwrap();
            let (stored, summary) = if spec.codec == Compression::Zstd && data.len() == big.len() {
                let mut source = Trickle::new(data);
                let mut bulk = TrickleBig(&mut source);
                w.finish_from(&mut bulk, data.len() as u64).unwrap()
            } else {
                w.finish_from(&mut &data[..], data.len() as u64).unwrap()
            };
            let decoded = decode_with_buf(&stored[..], 65536).unwrap();
            assert_round_trip(data, &stored, &summary, decoded);
        }
    }
    let mut w = ObjectWriter::new(Vec::new(), zstd_spec(None)).unwrap();
    w.write_all(&big[..1000]).unwrap();
    let (stored, _) = w
        .finish_from(&mut &big[1000..], (big.len() - 1000) as u64)
        .unwrap();
    assert!(decode_to_vec(&stored).unwrap().0 == big);
}

/// Trickle hands out at most 7 bytes a call: far too slow for 16 MiB.
/// This one hands out odd-sized pieces and sometimes `Interrupted`.
struct TrickleBig<'a, 'b>(&'a mut Trickle<'b>);

impl Read for TrickleBig<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let t = &mut *self.0;
        t.calls += 1;
        if t.calls % 5 == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::Interrupted, "signal"));
        }
        let n = (t.calls * 40_009 % 300_007)
            .min(buf.len())
            .min(t.data.len() - t.pos);
        buf[..n].copy_from_slice(&t.data[t.pos..t.pos + n]);
        t.pos += n;
        Ok(n)
    }
}

#[test]
fn a_source_of_another_length_is_refused() {
    let data = segment();
    for spec in [
        zstd_spec(None),
        CompressionSpec::new(Compression::Lz4, None).unwrap(),
    ] {
        for (given, claimed, kind) in [
            (data.len() - 1, data.len(), std::io::ErrorKind::UnexpectedEof),
            (8 * MIB, data.len(), std::io::ErrorKind::UnexpectedEof),
            (data.len(), data.len() - 1, std::io::ErrorKind::InvalidData),
            (data.len(), 5 * MIB, std::io::ErrorKind::InvalidData),
        ] {
            let w = ObjectWriter::new(Vec::new(), spec).unwrap();
            let err = w
                .finish_from(&mut &data[..given], claimed as u64)
                .expect_err("a wrong length is refused");
            match err {
                CodecError::Io(e) => assert_eq!(e.kind(), kind, "{spec:?} {given} {claimed}: {e}"),
                other => panic!("{spec:?} {given} {claimed}: {other}"),
            }
        }
    }
}

/// A read error half-way comes back as it was.
#[test]
fn a_read_error_is_returned() {
    struct Failing(usize);
    impl Read for Failing {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("injected"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(1);
            self.0 -= n;
            Ok(n)
        }
    }
    let w = ObjectWriter::new(Vec::new(), zstd_spec(None)).unwrap();
    let err = w.finish_from(&mut Failing(6 * MIB), 16 * MIB as u64).unwrap_err();
    assert!(err.to_string().contains("injected"), "{err}");
}
