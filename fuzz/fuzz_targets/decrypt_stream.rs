//! Arbitrary bytes into `DecryptReader` under a fixed key and object name.
//!
//! Two properties, checked on every input:
//! 1. the input read as an encrypted stream: never a panic, and never a
//!    successful read (that would be a forged stream);
//! 2. the input read as a recipe — a plaintext length and a list of edits
//!    applied to a genuine stream of that plaintext (bit flips, cuts,
//!    insertions, chunk swaps): never a panic, and the reader either fails
//!    or returns exactly the original plaintext (only when the edits
//!    changed nothing).

#![no_main]

use std::io::{Read, Write};

use libfuzzer_sys::fuzz_target;
use pgark_crypto::stream::MIN_CHUNK_LOG2;
use pgark_crypto::{DataKey, DecryptReader, EncryptWriter};

const NAME: &str = "wal/0000000100000000/000000010000000000000001";

fn key() -> DataKey {
    DataKey::from_bytes(&[0x42; 32])
}

/// Reads to EOF with a small buffer; the plaintext, or `None` on error.
fn decrypt(stream: &[u8]) -> Option<Vec<u8>> {
    let mut r = DecryptReader::new(stream, &key(), NAME).ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 777];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Some(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => {
                // Errors are final.
                assert!(r.read(&mut buf).is_err(), "error not sticky: {e}");
                return None;
            }
        }
    }
}

fn recipe(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let len = u16::from_le_bytes([data[0], data[1]]) as usize % 5000;
    let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    let mut w = EncryptWriter::with_params(Vec::new(), &key(), NAME, b"", MIN_CHUNK_LOG2).unwrap();
    w.write_all(&plain).unwrap();
    let genuine = w.finish().unwrap();
    let mut stream = genuine.clone();
    for edit in data[2..].chunks_exact(4) {
        let at = u16::from_le_bytes([edit[1], edit[2]]) as usize;
        match edit[0] % 5 {
            0 if !stream.is_empty() => {
                let i = at % stream.len();
                stream[i] ^= edit[3];
            }
            1 => stream.truncate(at % (stream.len() + 1)),
            2 => {
                let i = at % (stream.len() + 1);
                stream.insert(i, edit[3]);
            }
            3 => {
                // Swap two 1 KiB + 20 chunk-sized ranges after the header.
                let unit = (1 << MIN_CHUNK_LOG2) + 20;
                let (a, b) = (64 + (at % 8) * unit, 64 + (edit[3] as usize % 8) * unit);
                if a != b && a.max(b) + unit <= stream.len() {
                    let (lo, hi) = (a.min(b), a.max(b));
                    let first = stream[lo..lo + unit].to_vec();
                    stream.copy_within(hi..hi + unit, lo);
                    stream[hi..hi + unit].copy_from_slice(&first);
                }
            }
            _ => stream.extend_from_slice(&edit[1..]),
        }
    }
    match decrypt(&stream) {
        Some(out) => {
            assert!(stream == genuine, "a changed stream decrypted");
            assert!(out == plain, "decrypted to different data");
        }
        None => assert!(stream != genuine, "a genuine stream failed"),
    }
}

fuzz_target!(|data: &[u8]| {
    assert!(decrypt(data).is_none(), "arbitrary bytes decrypted");
    recipe(data);
});
