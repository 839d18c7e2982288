//! Round trips, tampering of every part, truncation, reordering, moved
//! objects, property tests.

use std::io::{self, Read, Write};

use proptest::prelude::*;

use super::*;

const NAME: &str = "wal/0000000100000000/000000010000000000000001";
/// Small chunks keep the boundary tests fast: 1 KiB.
const SMALL: u8 = MIN_CHUNK_LOG2;
const SMALL_CHUNK: usize = 1 << SMALL;

fn key() -> DataKey {
    DataKey::from_bytes(&[0x42; 32])
}

/// Deterministic, incompressible-looking data.
fn data(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ len as u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn encrypt(plain: &[u8], log2: u8, write_size: usize) -> Vec<u8> {
    let mut w = EncryptWriter::with_params(Vec::new(), &key(), NAME, b"", log2).unwrap();
    for piece in plain.chunks(write_size.max(1)) {
        w.write_all(piece).unwrap();
    }
    assert_eq!(w.plaintext_len(), plain.len() as u64);
    let stored_so_far = w.stored_len();
    let out = w.finish().unwrap();
    assert!(stored_so_far < out.len() as u64);
    out
}

fn decrypt_with(stream: &[u8], name: &str, buf_len: usize) -> Result<Vec<u8>, CryptoError> {
    let mut r = DecryptReader::new(stream, &key(), name)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; buf_len];
    loop {
        match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return Err(e.into()),
        }
    }
    assert!(r.is_done());
    assert_eq!(r.stored_len(), stream.len() as u64);
    assert_eq!(r.plaintext_len(), out.len() as u64);
    assert_eq!(r.read(&mut buf).unwrap(), 0, "EOF is sticky");
    Ok(out)
}

fn decrypt(stream: &[u8]) -> Result<Vec<u8>, CryptoError> {
    decrypt_with(stream, NAME, 4096)
}

/// Expected stored length for `len` plaintext bytes in chunks of `chunk`.
fn stored_len(len: usize, chunk: usize) -> usize {
    let chunks = if len == 0 { 1 } else { len.div_ceil(chunk) };
    STREAM_HEADER_LEN + len + chunks * (CHUNK_LEN_FIELD + TAG_LEN)
}

/// Offset of chunk `i` in a stream of full chunks of `chunk` bytes.
fn chunk_offset(i: usize, chunk: usize) -> usize {
    STREAM_HEADER_LEN + i * (CHUNK_LEN_FIELD + chunk + TAG_LEN)
}

#[test]
fn round_trips_at_chunk_boundaries() {
    let c = SMALL_CHUNK;
    for len in [0, 1, c - 1, c, c + 1, 2 * c - 1, 2 * c, 2 * c + 1, 5 * c + 17] {
        let plain = data(len);
        for write_size in [1, 7, c - 1, c, c + 3, 1 << 20] {
            let stream = encrypt(&plain, SMALL, write_size);
            assert_eq!(stream.len(), stored_len(len, c), "len {len}");
            for buf_len in [1, 13, c, 3 * c + 5] {
                assert_eq!(decrypt_with(&stream, NAME, buf_len).unwrap(), plain, "len {len}");
            }
        }
    }
}

#[test]
fn round_trips_default_chunks_several_mib() {
    let c = 1 << DEFAULT_CHUNK_LOG2;
    for len in [0, 1, c, c + 1, 3 * 1024 * 1024 + 7] {
        let plain = data(len);
        let stream = encrypt_to_vec(&plain, &key(), NAME).unwrap();
        assert_eq!(stream.len(), stored_len(len, c), "len {len}");
        assert_eq!(stream[6], DEFAULT_CHUNK_LOG2);
        assert_eq!(decrypt_to_vec(&stream, &key(), NAME).unwrap(), plain);
        assert_eq!(decrypt_with(&stream, NAME, 128 * 1024).unwrap(), plain);
    }
}

#[test]
fn every_chunk_size_the_reader_accepts() {
    for log2 in MIN_CHUNK_LOG2..=MAX_CHUNK_LOG2 {
        let plain = data((1 << log2) + 5);
        let stream = encrypt(&plain, log2, 1 << 16);
        assert_eq!(decrypt(&stream).unwrap(), plain, "2^{log2}");
    }
    for log2 in [0, MIN_CHUNK_LOG2 - 1, MAX_CHUNK_LOG2 + 1, 63] {
        let err = EncryptWriter::with_params(Vec::new(), &key(), NAME, b"", log2).unwrap_err();
        assert!(matches!(err, CryptoError::UnsupportedStream { .. }), "{err:?}");
    }
}

#[test]
fn header_layout_is_as_documented() {
    let stream = encrypt(b"", SMALL, 1);
    assert_eq!(&stream[0..4], b"PGAE");
    assert_eq!(stream[4], 1, "version");
    assert_eq!(stream[5], 1, "algorithm");
    assert_eq!(stream[6], SMALL);
    assert_eq!(stream[7], 0);
    assert_eq!(&stream[8..16], &key().id().0);
    // The empty stream: header and one empty last chunk.
    assert_eq!(stream.len(), 64 + 4 + 16);
    assert_eq!(&stream[64..68], &[0, 0, 0, 0x80]);
    // Full non-last chunk length field: the chunk size, no last bit.
    let stream = encrypt(&data(SMALL_CHUNK + 1), SMALL, 99);
    assert_eq!(&stream[64..68], &(SMALL_CHUNK as u32).to_le_bytes());
    let last = chunk_offset(1, SMALL_CHUNK);
    assert_eq!(&stream[last..last + 4], &[1, 0, 0, 0x80]);
}

#[test]
fn fresh_salt_every_stream_and_no_plaintext_in_clear() {
    let plain = b"the same plaintext, twice; the same plaintext, twice".repeat(40);
    let a = encrypt(&plain, SMALL, 100);
    let b = encrypt(&plain, SMALL, 100);
    assert_ne!(a[16..32], b[16..32], "salt");
    assert_ne!(a[64..], b[64..]);
    assert!(!a.windows(16).any(|w| w == &plain[..16]));
}

/// Flips one bit at `at` and returns the error, with the plaintext handed
/// out before it.
fn tamper(stream: &[u8], at: usize, mask: u8) -> (Vec<u8>, CryptoError) {
    let mut bad = stream.to_vec();
    bad[at] ^= mask;
    read_until_error(&bad, NAME)
}

fn read_until_error(stream: &[u8], name: &str) -> (Vec<u8>, CryptoError) {
    let mut r = match DecryptReader::new(stream, &key(), name) {
        Ok(r) => r,
        Err(e) => return (Vec::new(), e),
    };
    let mut out = Vec::new();
    let mut buf = [0u8; 300];
    loop {
        match r.read(&mut buf) {
            Ok(0) => panic!("damaged stream read to EOF"),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => {
                // Errors are final.
                let again = r.read(&mut buf).unwrap_err();
                assert_eq!(again.to_string(), e.to_string());
                let err = CryptoError::from(e);
                assert!(err.is_integrity(), "{err:?}");
                return (out, err);
            }
        }
    }
}

#[test]
fn tampered_header_fields() {
    let plain = data(3 * SMALL_CHUNK + 10);
    let stream = encrypt(&plain, SMALL, 500);
    type Check = fn(&CryptoError) -> bool;
    let cases: Vec<(&str, usize, u8, Check)> = vec![
        ("magic", 0, 0x01, |e| {
            matches!(e, CryptoError::NotEncryptedStream { .. })
        }),
        ("magic last", 3, 0x80, |e| {
            matches!(e, CryptoError::NotEncryptedStream { .. })
        }),
        ("version", 4, 0x02, |e| {
            matches!(
                e,
                CryptoError::UnsupportedStreamVersion {
                    supported: 1,
                    actual: 3
                }
            )
        }),
        ("algorithm", 5, 0x04, |e| {
            matches!(e, CryptoError::UnsupportedStream { .. })
        }),
        ("chunk size out of range", 6, 0x40, |e| {
            matches!(e, CryptoError::UnsupportedStream { .. })
        }),
        ("chunk size in range", 6, 0x01, |e| {
            matches!(e, CryptoError::TamperedHeader)
        }),
        ("reserved", 7, 0x01, |e| {
            matches!(e, CryptoError::UnsupportedStream { .. })
        }),
        ("data key id", 8, 0x01, |e| {
            matches!(e, CryptoError::WrongDataKey { .. })
        }),
        ("data key id last", 15, 0x10, |e| {
            matches!(e, CryptoError::WrongDataKey { .. })
        }),
        ("salt first", 16, 0x01, |e| {
            matches!(e, CryptoError::TamperedHeader)
        }),
        ("salt last", 31, 0x80, |e| {
            matches!(e, CryptoError::TamperedHeader)
        }),
        ("name commitment", 40, 0x08, |e| {
            matches!(e, CryptoError::TamperedHeader)
        }),
        ("header tag first", 48, 0x01, |e| {
            matches!(e, CryptoError::TamperedHeader)
        }),
        ("header tag last", 63, 0x01, |e| {
            matches!(e, CryptoError::TamperedHeader)
        }),
    ];
    for (what, at, mask, check) in cases {
        let (out, err) = tamper(&stream, at, mask);
        assert!(check(&err), "{what}: {err:?}");
        assert!(out.is_empty(), "{what}");
    }
}

#[test]
fn tampered_chunks_fail_with_their_index() {
    let c = SMALL_CHUNK;
    let plain = data(3 * c + 10);
    let stream = encrypt(&plain, SMALL, 500);
    let last_at = chunk_offset(3, c);
    let cases = [
        ("chunk 0 first ciphertext byte", chunk_offset(0, c) + 4, 0),
        ("chunk 0 last ciphertext byte", chunk_offset(0, c) + 4 + c - 1, 0),
        ("chunk 0 tag", chunk_offset(0, c) + 4 + c, 0),
        ("chunk 1 middle", chunk_offset(1, c) + 4 + c / 2, 1),
        ("chunk 2 tag last byte", chunk_offset(3, c) - 1, 2),
        ("chunk 1 length field", chunk_offset(1, c), 1),
        ("chunk 2 last bit", chunk_offset(2, c) + 3, 2),
        ("last chunk body", last_at + 4 + 3, 3),
        ("last chunk tag", stream.len() - 1, 3),
        ("last chunk length field high byte", last_at + 3, 3),
    ];
    for (what, at, chunk) in cases {
        for mask in [0x01, 0x80] {
            let (out, err) = tamper(&stream, at, mask);
            match err {
                CryptoError::AuthFailed { chunk: got } => assert_eq!(got, chunk as u64, "{what}"),
                // A changed length of the last chunk can make the reader
                // wait for bytes that never come.
                CryptoError::Truncated { chunk: got } if what.starts_with("last chunk length") => {
                    assert_eq!(got, 3)
                }
                other => panic!("{what} ^ {mask:#x}: {other:?}"),
            }
            // Only the authenticated chunks before it were handed out.
            assert_eq!(out, plain[..chunk * c], "{what}");
        }
    }
}

#[test]
fn truncation_is_detected_everywhere() {
    let c = SMALL_CHUNK;
    let plain = data(3 * c + 10);
    let stream = encrypt(&plain, SMALL, 500);
    // Inside the header.
    for cut in [0, 1, 4, 63] {
        let (_, err) = read_until_error(&stream[..cut], NAME);
        assert!(
            matches!(err, CryptoError::TruncatedHeader { expected: 64, actual } if actual == cut),
            "{cut}: {err:?}"
        );
    }
    // At every chunk boundary: the reader wants another chunk.
    for i in 0..=3 {
        let cut = chunk_offset(i, c);
        let (out, err) = read_until_error(&stream[..cut], NAME);
        assert!(
            matches!(err, CryptoError::Truncated { chunk } if chunk == i as u64),
            "{i}: {err:?}"
        );
        assert_eq!(out, plain[..i * c]);
    }
    // Inside a chunk: in the length field, the body, the tag.
    for (cut, chunk) in [
        (chunk_offset(1, c) + 2, 1),
        (chunk_offset(1, c) + 100, 1),
        (chunk_offset(2, c) - 1, 1),
        (stream.len() - 1, 3),
        (stream.len() - 16, 3),
    ] {
        let (_, err) = read_until_error(&stream[..cut], NAME);
        assert!(
            matches!(err, CryptoError::Truncated { chunk: got } if got == chunk),
            "{cut}: {err:?}"
        );
    }
}

#[test]
fn reordered_dropped_and_duplicated_chunks() {
    let c = SMALL_CHUNK;
    let plain = data(4 * c + 1);
    let stream = encrypt(&plain, SMALL, 500);
    let chunk = |i: usize| stream[chunk_offset(i, c)..chunk_offset(i + 1, c)].to_vec();
    let header = &stream[..STREAM_HEADER_LEN];
    let last = &stream[chunk_offset(4, c)..];
    let assemble = |order: &[usize]| {
        let mut s = header.to_vec();
        for &i in order {
            s.extend_from_slice(&chunk(i));
        }
        s.extend_from_slice(last);
        s
    };
    assert_eq!(decrypt(&assemble(&[0, 1, 2, 3])).unwrap(), plain);
    for (order, failing) in [
        (vec![1, 0, 2, 3], 0),
        (vec![0, 2, 1, 3], 1),
        (vec![0, 1, 3], 2),
        (vec![0, 1, 1, 2, 3], 2),
        (vec![0, 1, 2, 3, 3], 4),
    ] {
        let (_, err) = read_until_error(&assemble(&order), NAME);
        assert!(
            matches!(err, CryptoError::AuthFailed { chunk } if chunk == failing),
            "{order:?}: {err:?}"
        );
    }
    // The last chunk moved to the front.
    let mut s = header.to_vec();
    s.extend_from_slice(last);
    let (_, err) = read_until_error(&s, NAME);
    assert!(matches!(err, CryptoError::AuthFailed { chunk: 0 }), "{err:?}");
}

#[test]
fn objects_swapped_or_moved() {
    let a = encrypt(&data(2000), SMALL, 100);
    // Object A's bytes read under another name.
    for other in ["wal/0000000100000000/000000010000000000000002", "", "wal"] {
        let (out, err) = read_until_error(&a, other);
        assert!(
            matches!(&err, CryptoError::WrongObject { expected } if expected == other),
            "{other:?}: {err:?}"
        );
        assert!(out.is_empty());
        assert!(err.to_string().contains("moved"));
    }
    // Chunks spliced from another stream of the same name and key: the
    // salts differ, so do the object keys.
    let b = encrypt(&data(2000), SMALL, 100);
    let mut spliced = a[..STREAM_HEADER_LEN].to_vec();
    spliced.extend_from_slice(&b[STREAM_HEADER_LEN..]);
    let (_, err) = read_until_error(&spliced, NAME);
    assert!(matches!(err, CryptoError::AuthFailed { chunk: 0 }), "{err:?}");
}

#[test]
fn wrong_data_key_and_context() {
    let stream = encrypt(&data(100), SMALL, 100);
    let other = DataKey::from_bytes(&[0x43; 32]);
    let err = DecryptReader::new(&stream[..], &other, NAME).unwrap_err();
    match err {
        CryptoError::WrongDataKey { expected, actual } => {
            assert_eq!(expected, other.id());
            assert_eq!(actual, key().id());
        }
        e => panic!("{e:?}"),
    }
    let mut w = EncryptWriter::with_params(Vec::new(), &key(), NAME, b"outer header", SMALL).unwrap();
    w.write_all(b"x").unwrap();
    let with_ctx = w.finish().unwrap();
    let mut r = DecryptReader::with_context(&with_ctx[..], &key(), NAME, b"outer header").unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"x");
    for ctx in [&b""[..], b"outer headeR"] {
        let err = DecryptReader::with_context(&with_ctx[..], &key(), NAME, ctx).unwrap_err();
        assert!(matches!(err, CryptoError::TamperedHeader), "{err:?}");
    }
}

#[test]
fn appended_bytes_are_refused() {
    let plain = data(SMALL_CHUNK + 5);
    let stream = encrypt(&plain, SMALL, 100);
    for extra in [&[0u8][..], b"garbage", &stream[STREAM_HEADER_LEN..]] {
        let mut s = stream.clone();
        s.extend_from_slice(extra);
        let (out, err) = read_until_error(&s, NAME);
        assert!(matches!(err, CryptoError::TrailingData { chunk: 1 }), "{err:?}");
        // The last chunk is withheld until the end is confirmed.
        assert_eq!(out, plain[..SMALL_CHUNK]);
    }
    // A whole stream appended to another.
    let mut s = stream.clone();
    s.extend_from_slice(&stream);
    assert!(matches!(
        read_until_error(&s, NAME).1,
        CryptoError::TrailingData { .. }
    ));
}

#[test]
fn unfinished_writer_leaves_a_truncated_stream() {
    let mut sink = Vec::new();
    {
        let mut w = EncryptWriter::with_params(&mut sink, &key(), NAME, b"", SMALL).unwrap();
        w.write_all(&data(3 * SMALL_CHUNK)).unwrap();
        w.flush().unwrap();
        // Dropped without finish.
    }
    let (_, err) = read_until_error(&sink, NAME);
    assert!(matches!(err, CryptoError::Truncated { .. }), "{err:?}");
}

/// An inner writer that fails after `ok` bytes.
struct FailingWriter {
    ok: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > self.ok {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
        }
        self.ok -= buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn writer_errors_are_final() {
    let err = EncryptWriter::new(FailingWriter { ok: 10 }, &key(), NAME).unwrap_err();
    assert!(matches!(&err, CryptoError::Io(e) if e.kind() == io::ErrorKind::StorageFull));
    let mut w = EncryptWriter::with_params(FailingWriter { ok: 64 }, &key(), NAME, b"", SMALL).unwrap();
    w.write_all(&data(SMALL_CHUNK)).unwrap(); // buffered
    let e = w.write(b"x").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::StorageFull);
    let e = w.write(b"x").unwrap_err();
    assert!(
        matches!(CryptoError::from_io(&e), Some(CryptoError::WriterFailed { .. })),
        "{e:?}"
    );
    assert!(matches!(w.finish(), Err(CryptoError::WriterFailed { .. })));
}

/// Reads one byte at a time, with `Interrupted` in between.
struct Trickle<'a> {
    data: &'a [u8],
    calls: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.calls += 1;
        if self.calls % 3 == 0 {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "signal"));
        }
        let n = buf.len().min(self.data.len()).min(1 + self.calls % 5);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn trickling_inner_reader() {
    let plain = data(2 * SMALL_CHUNK + 3);
    let stream = encrypt(&plain, SMALL, 77);
    let mut r = DecryptReader::new(
        Trickle {
            data: &stream,
            calls: 0,
        },
        &key(),
        NAME,
    )
    .unwrap();
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    assert_eq!(out, plain);
}

#[test]
fn inner_io_errors_pass_through() {
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"))
        }
    }
    let err = DecryptReader::new(Broken, &key(), NAME).unwrap_err();
    assert!(matches!(&err, CryptoError::Io(e) if e.kind() == io::ErrorKind::ConnectionReset));
    assert!(!err.is_integrity());
    let stream = encrypt(b"abc", SMALL, 1);
    let mut r = DecryptReader::new(stream[..64].chain(Broken), &key(), NAME).unwrap();
    let e = r.read(&mut [0u8; 10]).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
    assert!(CryptoError::from_io(&e).is_none());
}

#[test]
fn memory_is_one_chunk_whatever_the_length() {
    /// Counts the bytes pulled from the stream.
    struct Counting<'a> {
        data: &'a [u8],
        pulled: usize,
    }
    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.data.len().min(buf.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            self.pulled += n;
            Ok(n)
        }
    }
    let stream = encrypt(&data(40 * SMALL_CHUNK), SMALL, 4096);
    let mut r = DecryptReader::new(
        Counting {
            data: &stream,
            pulled: 0,
        },
        &key(),
        NAME,
    )
    .unwrap();
    let mut one = [0u8; 1];
    r.read_exact(&mut one).unwrap();
    // Header and the first chunk only: nothing is read ahead.
    assert_eq!(r.inner.pulled, chunk_offset(1, SMALL_CHUNK));
    assert_eq!(r.buf.len(), SMALL_CHUNK + TAG_LEN);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn prop_round_trip(
        len in 0usize..6000,
        log2 in MIN_CHUNK_LOG2..=12,
        write_size in 1usize..3000,
        buf_len in 1usize..5000,
    ) {
        let plain = data(len);
        let stream = encrypt(&plain, log2, write_size);
        prop_assert_eq!(stream.len(), stored_len(len, 1 << log2));
        prop_assert_eq!(decrypt_with(&stream, NAME, buf_len).unwrap(), plain);
    }

    #[test]
    fn prop_any_single_bit_flip_is_detected(len in 0usize..3000, pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let stream = encrypt(&data(len), MIN_CHUNK_LOG2, 1000);
        let at = pos.index(stream.len());
        let mut bad = stream.clone();
        bad[at] ^= 1 << bit;
        prop_assert!(decrypt(&bad).is_err());
    }

    #[test]
    fn prop_any_truncation_is_detected(len in 0usize..3000, cut in any::<prop::sample::Index>()) {
        let stream = encrypt(&data(len), MIN_CHUNK_LOG2, 1000);
        let cut = cut.index(stream.len());
        let err = decrypt(&stream[..cut]).unwrap_err();
        prop_assert!(
            matches!(err, CryptoError::Truncated { .. } | CryptoError::TruncatedHeader { .. }),
            "{:?}", err
        );
    }

    #[test]
    fn prop_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = decrypt(&bytes);
        // Also with a valid header in front.
        let mut s = encrypt(b"", MIN_CHUNK_LOG2, 1)[..STREAM_HEADER_LEN].to_vec();
        s.extend_from_slice(&bytes);
        prop_assert!(decrypt(&s).is_err());
    }
}
