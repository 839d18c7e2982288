//! The content digest recorded in an object's trailer.
//!
//! Two algorithms, both 32 bytes, chosen by the writer and named by header
//! flag bit 1 ([`crate::format::FLAG_BLAKE3`]):
//!
//! * SHA-256 (flag clear): what `sha256sum` prints, so an object's
//!   content can be checked by hand with the tools on every system. The
//!   default, used for WAL segments and small documents.
//! * BLAKE3 (flag set): as strong, and several times faster (SIMD over
//!   1 KiB chunks: about 3x SHA-256 with the CPU's SHA extensions, 10x
//!   without). Used for base-backup parts, where hashing every byte with
//!   SHA-256 cost a third of a backup's CPU time. `b3sum` checks it by
//!   hand.

use std::fmt;

/// Which hash a trailer records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DigestAlgorithm {
    #[default]
    Sha256,
    Blake3,
}

impl DigestAlgorithm {
    /// The name used in manifests and messages: `sha256` or `blake3`.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlgorithm::Sha256 => "sha256",
            DigestAlgorithm::Blake3 => "blake3",
        }
    }

    pub(crate) fn hasher(self) -> ContentHasher {
        match self {
            DigestAlgorithm::Sha256 => ContentHasher::Sha256(<sha2::Sha256 as sha2::Digest>::new()),
            DigestAlgorithm::Blake3 => ContentHasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }
}

impl fmt::Display for DigestAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A digest of an object's original bytes, with its algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ContentDigest {
    pub algorithm: DigestAlgorithm,
    pub bytes: [u8; 32],
}

impl ContentDigest {
    /// The digest as 64 lowercase hex digits (as `sha256sum` and `b3sum`
    /// print it).
    pub fn hex(&self) -> String {
        hex::encode(self.bytes)
    }

    /// The digest of `data` by `algorithm`.
    pub fn of(algorithm: DigestAlgorithm, data: &[u8]) -> ContentDigest {
        let mut h = algorithm.hasher();
        h.update(data);
        h.finalize()
    }
}

/// `<algorithm>:<hex>`, e.g. `blake3:af13...`.
impl fmt::Display for ContentDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm, self.hex())
    }
}

/// An incremental hasher of either algorithm.
#[derive(Clone)]
pub enum ContentHasher {
    Sha256(sha2::Sha256),
    // Boxed: the BLAKE3 state is about 1.9 KiB.
    Blake3(Box<blake3::Hasher>),
}

impl ContentHasher {
    pub fn new(algorithm: DigestAlgorithm) -> ContentHasher {
        algorithm.hasher()
    }

    pub fn algorithm(&self) -> DigestAlgorithm {
        match self {
            ContentHasher::Sha256(_) => DigestAlgorithm::Sha256,
            ContentHasher::Blake3(_) => DigestAlgorithm::Blake3,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        match self {
            ContentHasher::Sha256(h) => sha2::Digest::update(h, data),
            ContentHasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    pub fn finalize(self) -> ContentDigest {
        let algorithm = self.algorithm();
        let bytes: [u8; 32] = match self {
            ContentHasher::Sha256(h) => sha2::Digest::finalize(h).into(),
            ContentHasher::Blake3(h) => *h.finalize().as_bytes(),
        };
        ContentDigest { algorithm, bytes }
    }
}

impl fmt::Debug for ContentHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ContentHasher").field(&self.algorithm()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        // sha256sum and b3sum of "abc".
        assert_eq!(
            ContentDigest::of(DigestAlgorithm::Sha256, b"abc").hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            ContentDigest::of(DigestAlgorithm::Blake3, b"abc").hex(),
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
        assert_eq!(
            ContentDigest::of(DigestAlgorithm::Blake3, b"").to_string(),
            "blake3:af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn incremental_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for alg in [DigestAlgorithm::Sha256, DigestAlgorithm::Blake3] {
            let mut h = ContentHasher::new(alg);
            for chunk in data.chunks(977) {
                h.update(chunk);
            }
            assert_eq!(h.finalize(), ContentDigest::of(alg, &data));
        }
    }
}
