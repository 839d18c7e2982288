//! The codec's `ObjectReader` with a data key: header parsing, the
//! encrypted/unencrypted switch, the decrypting stage and the codecs
//! behind it.
//!
//! The first input byte picks the mode:
//! * even: the rest, as a stored object. Never a panic; nothing decodes
//!   as an *encrypted* object (that would be a forgery).
//! * odd: a recipe. The next bytes pick a codec, a plaintext length and
//!   edits (bit flips, cuts, insertions) applied to a genuine encrypted
//!   object of that plaintext. Never a panic; the object either fails or,
//!   if the edits changed nothing, decodes to exactly the plaintext.

#![no_main]

use std::io::Read;

use libfuzzer_sys::fuzz_target;
use pgark_codec::{encode_to_vec_encrypted, Compression, CompressionSpec, ObjectReader};
use pgark_crypto::DataKey;

const NAME: &str = "base/1/1259";

fn key() -> DataKey {
    DataKey::from_bytes(&[0x42; 32])
}

/// Decodes to the verified end: the data and whether it was encrypted, or
/// `None` on error.
fn decode(stored: &[u8]) -> Option<(Vec<u8>, bool)> {
    let mut r = ObjectReader::new_with_key(stored, Some(&key()), NAME).ok()?;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Some((out, r.is_encrypted())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => {
                assert!(r.read(&mut buf).is_err(), "error not sticky");
                return None;
            }
        }
    }
}

fn recipe(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let codec = Compression::ALL[data[0] as usize % Compression::ALL.len()];
    let len = u16::from_le_bytes([data[1], data[2]]) as usize % 3000;
    let plain: Vec<u8> = (0..len).map(|i| (i / 7 % 13) as u8).collect();
    let spec = CompressionSpec::new(codec, None).unwrap();
    let (genuine, _) = encode_to_vec_encrypted(&plain, spec, &key(), NAME).unwrap();
    let mut stored = genuine.clone();
    for edit in data[3..].chunks_exact(4) {
        let at = u16::from_le_bytes([edit[1], edit[2]]) as usize;
        match edit[0] % 3 {
            0 if !stored.is_empty() => {
                let i = at % stored.len();
                stored[i] ^= edit[3];
            }
            1 => stored.truncate(at % (stored.len() + 1)),
            _ => {
                let i = at % (stored.len() + 1);
                stored.insert(i, edit[3]);
            }
        }
    }
    match decode(&stored) {
        Some((out, encrypted)) => {
            assert!(encrypted, "the encrypted flag was lost");
            assert!(stored == genuine, "a changed object decoded");
            assert!(out == plain, "decoded to different data");
        }
        None => assert!(stored != genuine, "a genuine object failed"),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        if let Some((_, encrypted)) = decode(rest) {
            assert!(!encrypted, "arbitrary bytes decoded as an encrypted object");
        }
    } else {
        recipe(rest);
    }
});
