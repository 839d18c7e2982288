//! The byte layout of format v1: header and trailer frames.
//!
//! Both are zstd/LZ4 *skippable frames* (`u32 LE magic` in
//! `0x184D2A50..=0x184D2A5F`, `u32 LE payload length`, payload), so the
//! standard `zstd` and `lz4` tools skip them. See the crate docs or
//! `FORMAT.md` for the full description.

use crate::digest::DigestAlgorithm;
use crate::error::CodecError;
use crate::spec::Compression;

/// Magic of the header frame (first skippable-frame magic).
pub const HEADER_MAGIC: u32 = 0x184D_2A50;
/// Payload length of the v1 header frame.
pub const HEADER_PAYLOAD_LEN: u32 = 8;
/// Tag at the start of the header payload.
pub const HEADER_TAG: [u8; 5] = *b"PGARK";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Total header size: magic + length + payload.
pub const HEADER_LEN: usize = 8 + HEADER_PAYLOAD_LEN as usize;

/// Flag bit 0: the object is encrypted: after the header comes a
/// `pgark-crypto` encrypted stream whose plaintext is the body and the
/// trailer (see `FORMAT.md`).
pub const FLAG_ENCRYPTED: u8 = 0x01;
/// Flag bit 1: the trailer's digest is BLAKE3 (clear: SHA-256). See
/// [`crate::digest`].
pub const FLAG_BLAKE3: u8 = 0x02;
/// Flag bits this version of the reader accepts.
pub const SUPPORTED_FLAGS: u8 = FLAG_ENCRYPTED | FLAG_BLAKE3;

/// Magic of the trailer frame (another skippable-frame magic).
pub const TRAILER_MAGIC: u32 = 0x184D_2A5E;
/// Payload length of the v1 trailer frame.
pub const TRAILER_PAYLOAD_LEN: u32 = 44;
/// Tag at the start of the trailer payload.
pub const TRAILER_TAG: [u8; 4] = *b"PGAT";
/// Total trailer size: magic + length + payload.
pub const TRAILER_LEN: usize = 8 + TRAILER_PAYLOAD_LEN as usize;

/// The smallest possible stored object: a header and a trailer.
pub const MIN_OBJECT_LEN: usize = HEADER_LEN + TRAILER_LEN;

/// Magic number of a zstd frame.
pub(crate) const ZSTD_FRAME_MAGIC: u32 = 0xFD2F_B528;
/// Magic number of an LZ4 frame.
pub(crate) const LZ4_FRAME_MAGIC: u32 = 0x184D_2204;

/// True for the 16 magic numbers of zstd/LZ4 skippable frames.
#[cfg(test)]
pub(crate) fn is_skippable_magic(magic: u32) -> bool {
    magic & 0xFFFF_FFF0 == 0x184D_2A50
}

pub(crate) fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[..4].try_into().expect("four bytes"))
}

/// The v1 header for an unencrypted object of `codec`.
#[cfg(test)]
pub(crate) fn encode_header(codec: Compression) -> [u8; HEADER_LEN] {
    encode_header_flags(codec, 0)
}

/// The v1 header for `codec` with these flags.
pub(crate) fn encode_header_flags(codec: Compression, flags: u8) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&HEADER_MAGIC.to_le_bytes());
    h[4..8].copy_from_slice(&HEADER_PAYLOAD_LEN.to_le_bytes());
    h[8..13].copy_from_slice(&HEADER_TAG);
    h[13] = FORMAT_VERSION;
    h[14] = codec.id();
    h[15] = flags;
    h
}

/// Checks a header prefix; `bytes` holds what could be read (at most
/// [`HEADER_LEN`] bytes; fewer means the object ended early). Returns the
/// codec (the encrypted flag is dropped: see [`decode_header_full`]).
#[cfg(test)]
pub(crate) fn decode_header(bytes: &[u8]) -> Result<Compression, CodecError> {
    decode_header_full(bytes).map(|(codec, _)| codec)
}

/// What the header's flags say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeaderFlags {
    pub encrypted: bool,
    pub digest: DigestAlgorithm,
}

impl HeaderFlags {
    pub(crate) fn bits(self) -> u8 {
        let mut bits = 0;
        if self.encrypted {
            bits |= FLAG_ENCRYPTED;
        }
        if self.digest == DigestAlgorithm::Blake3 {
            bits |= FLAG_BLAKE3;
        }
        bits
    }
}

/// [`decode_header`], also returning the flags.
pub(crate) fn decode_header_full(bytes: &[u8]) -> Result<(Compression, HeaderFlags), CodecError> {
    // A wrong magic says more than "truncated", so check it first when the
    // magic is all there.
    if bytes.len() >= 4 {
        let magic = le_u32(&bytes[0..4]);
        if magic != HEADER_MAGIC {
            return Err(CodecError::BadHeaderMagic {
                expected: HEADER_MAGIC,
                actual: magic,
            });
        }
    }
    if bytes.len() < HEADER_LEN {
        return Err(CodecError::TruncatedHeader {
            expected: HEADER_LEN,
            actual: bytes.len(),
        });
    }
    if bytes[8..13] != HEADER_TAG {
        return Err(CodecError::BadHeaderTag {
            expected: hex::encode(HEADER_TAG),
            actual: hex::encode(&bytes[8..13]),
        });
    }
    let version = bytes[13];
    if version != FORMAT_VERSION {
        return Err(CodecError::UnsupportedVersion {
            supported: FORMAT_VERSION,
            actual: version,
        });
    }
    let payload_len = le_u32(&bytes[4..8]);
    if payload_len != HEADER_PAYLOAD_LEN {
        return Err(CodecError::BadHeaderLength {
            expected: HEADER_PAYLOAD_LEN,
            actual: payload_len,
        });
    }
    let codec = Compression::from_id(bytes[14]).ok_or(CodecError::UnknownCodec { actual: bytes[14] })?;
    let flags = bytes[15];
    if flags & !SUPPORTED_FLAGS != 0 {
        return Err(CodecError::UnsupportedFlags {
            supported: SUPPORTED_FLAGS,
            actual: flags,
        });
    }
    let digest = if flags & FLAG_BLAKE3 != 0 {
        DigestAlgorithm::Blake3
    } else {
        DigestAlgorithm::Sha256
    };
    Ok((
        codec,
        HeaderFlags {
            encrypted: flags & FLAG_ENCRYPTED != 0,
            digest,
        },
    ))
}

/// The v1 trailer.
pub(crate) fn encode_trailer(original_len: u64, digest: &[u8; 32]) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[0..4].copy_from_slice(&TRAILER_MAGIC.to_le_bytes());
    t[4..8].copy_from_slice(&TRAILER_PAYLOAD_LEN.to_le_bytes());
    t[8..12].copy_from_slice(&TRAILER_TAG);
    t[12..20].copy_from_slice(&original_len.to_le_bytes());
    t[20..52].copy_from_slice(digest);
    t
}

/// The fields of a well-framed trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Trailer {
    pub original_len: u64,
    /// SHA-256 or BLAKE3, as the header's flags say.
    pub digest: [u8; 32],
}

/// Checks the framing of a trailer (magic, payload length, tag) and
/// returns its fields. `bytes` must be exactly [`TRAILER_LEN`] long.
pub(crate) fn decode_trailer(bytes: &[u8]) -> Result<Trailer, CodecError> {
    debug_assert_eq!(bytes.len(), TRAILER_LEN);
    let magic = le_u32(&bytes[0..4]);
    if magic != TRAILER_MAGIC {
        return Err(CodecError::BadTrailerMagic {
            expected: TRAILER_MAGIC,
            actual: magic,
        });
    }
    let payload_len = le_u32(&bytes[4..8]);
    if payload_len != TRAILER_PAYLOAD_LEN {
        return Err(CodecError::BadTrailerLength {
            expected: TRAILER_PAYLOAD_LEN,
            actual: payload_len,
        });
    }
    if bytes[8..12] != TRAILER_TAG {
        return Err(CodecError::BadTrailerTag {
            expected: hex::encode(TRAILER_TAG),
            actual: hex::encode(&bytes[8..12]),
        });
    }
    Ok(Trailer {
        original_len: u64::from_le_bytes(bytes[12..20].try_into().expect("eight bytes")),
        digest: bytes[20..52].try_into().expect("32 bytes"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_bytes_are_as_documented() {
        let h = encode_header(Compression::Lz4);
        assert_eq!(
            h,
            [0x50, 0x2A, 0x4D, 0x18, 8, 0, 0, 0, b'P', b'G', b'A', b'R', b'K', 1, 2, 0],
            "header layout changed: update FORMAT.md and bump the version"
        );
        assert_eq!(decode_header(&h).unwrap(), Compression::Lz4);
        for c in Compression::ALL {
            assert_eq!(decode_header(&encode_header(c)).unwrap(), c);
        }
    }

    #[test]
    fn trailer_bytes_are_as_documented() {
        let sha = [0xAB; 32];
        let t = encode_trailer(0x0102_0304_0506_0708, &sha);
        assert_eq!(
            &t[..20],
            &[0x5E, 0x2A, 0x4D, 0x18, 44, 0, 0, 0, b'P', b'G', b'A', b'T', 8, 7, 6, 5, 4, 3, 2, 1]
        );
        assert_eq!(&t[20..], &sha);
        let parsed = decode_trailer(&t).unwrap();
        assert_eq!(
            parsed,
            Trailer {
                original_len: 0x0102_0304_0506_0708,
                digest: sha
            }
        );
    }

    #[test]
    fn magics_are_skippable() {
        assert!(is_skippable_magic(HEADER_MAGIC));
        assert!(is_skippable_magic(TRAILER_MAGIC));
        assert!(is_skippable_magic(0x184D2A5F));
        assert!(!is_skippable_magic(0x184D2A60));
        assert!(!is_skippable_magic(0x184D2A4F));
        assert!(!is_skippable_magic(ZSTD_FRAME_MAGIC));
        assert!(!is_skippable_magic(LZ4_FRAME_MAGIC));
    }

    /// Table of malformed headers and the error each must give.
    #[test]
    fn header_rejections() {
        let good = encode_header(Compression::Zstd);
        let with = |i: usize, v: u8| {
            let mut h = good;
            h[i] = v;
            h.to_vec()
        };
        type Check = fn(&CodecError) -> bool;
        let cases: Vec<(&str, Vec<u8>, Check)> = vec![
            ("empty", vec![], |e| {
                matches!(
                    e,
                    CodecError::TruncatedHeader {
                        expected: 16,
                        actual: 0
                    }
                )
            }),
            ("3 bytes", good[..3].to_vec(), |e| {
                matches!(e, CodecError::TruncatedHeader { actual: 3, .. })
            }),
            ("magic only", good[..4].to_vec(), |e| {
                matches!(e, CodecError::TruncatedHeader { actual: 4, .. })
            }),
            ("15 bytes", good[..15].to_vec(), |e| {
                matches!(e, CodecError::TruncatedHeader { actual: 15, .. })
            }),
            ("garbage 4 bytes", b"\x7fELF".to_vec(), |e| {
                matches!(e, CodecError::BadHeaderMagic { .. })
            }),
            ("zstd frame", with(0, 0x28)[..].to_vec(), |e| {
                matches!(e, CodecError::BadHeaderMagic { .. })
            }),
            ("other skippable magic", with(0, 0x51), |e| {
                matches!(
                    e,
                    CodecError::BadHeaderMagic {
                        expected: 0x184D2A50,
                        actual: 0x184D2A51
                    }
                )
            }),
            ("payload len", with(4, 9), |e| {
                matches!(
                    e,
                    CodecError::BadHeaderLength {
                        expected: 8,
                        actual: 9
                    }
                )
            }),
            ("payload len high byte", with(7, 1), |e| {
                matches!(e, CodecError::BadHeaderLength { .. })
            }),
            ("tag", with(8, b'Q'), |e| {
                matches!(e, CodecError::BadHeaderTag { expected, actual }
                    if expected == "504741524b" && actual == "514741524b")
            }),
            ("tag last byte", with(12, 0), |e| {
                matches!(e, CodecError::BadHeaderTag { .. })
            }),
            ("version 0", with(13, 0), |e| {
                matches!(
                    e,
                    CodecError::UnsupportedVersion {
                        supported: 1,
                        actual: 0
                    }
                )
            }),
            ("version 2", with(13, 2), |e| {
                matches!(e, CodecError::UnsupportedVersion { actual: 2, .. })
            }),
            ("version 255", with(13, 255), |e| {
                matches!(e, CodecError::UnsupportedVersion { actual: 255, .. })
            }),
            ("codec 4", with(14, 4), |e| {
                matches!(e, CodecError::UnknownCodec { actual: 4 })
            }),
            ("codec 255", with(14, 255), |e| {
                matches!(e, CodecError::UnknownCodec { actual: 255 })
            }),
            ("unknown flag", with(15, 0x80), |e| {
                matches!(
                    e,
                    CodecError::UnsupportedFlags {
                        supported: 3,
                        actual: 0x80
                    }
                )
            }),
            (
                "unknown flag with encrypted",
                with(15, 0x80 | FLAG_ENCRYPTED),
                |e| matches!(e, CodecError::UnsupportedFlags { actual: 0x81, .. }),
            ),
            ("all flags", with(15, 0xFF), |e| {
                matches!(e, CodecError::UnsupportedFlags { actual: 0xFF, .. })
            }),
        ];
        for (name, bytes, check) in cases {
            let err = decode_header(&bytes).expect_err(name);
            assert!(check(&err), "{name}: got {err:?}");
            assert!(err.is_integrity(), "{name}");
        }
    }

    #[test]
    fn encrypted_flag_is_bit_0() {
        let h = encode_header_flags(Compression::Zstd, FLAG_ENCRYPTED);
        assert_eq!(h[15], 0x01);
        assert_eq!(&h[..15], &encode_header(Compression::Zstd)[..15]);
        assert_eq!(decode_header_full(&h).unwrap().0, Compression::Zstd);
        assert!(decode_header_full(&h).unwrap().1.encrypted);
        assert_eq!(
            decode_header_full(&encode_header(Compression::Zstd)).unwrap(),
            (
                Compression::Zstd,
                HeaderFlags {
                    encrypted: false,
                    digest: DigestAlgorithm::Sha256
                }
            )
        );
    }

    #[test]
    fn blake3_flag_is_bit_1() {
        let flags = HeaderFlags {
            encrypted: true,
            digest: DigestAlgorithm::Blake3,
        };
        assert_eq!(flags.bits(), 0x03);
        let h = encode_header_flags(Compression::Lz4, flags.bits());
        assert_eq!(decode_header_full(&h).unwrap(), (Compression::Lz4, flags));
    }

    #[test]
    fn trailer_rejections() {
        let good = encode_trailer(42, &[7; 32]);
        let with = |i: usize, v: u8| {
            let mut t = good;
            t[i] = v;
            t
        };
        assert!(matches!(
            decode_trailer(&with(0, 0x50)),
            Err(CodecError::BadTrailerMagic {
                expected: 0x184D2A5E,
                actual: 0x184D2A50
            })
        ));
        assert!(matches!(
            decode_trailer(&with(4, 45)),
            Err(CodecError::BadTrailerLength {
                expected: 44,
                actual: 45
            })
        ));
        assert!(matches!(
            decode_trailer(&with(11, b'X')),
            Err(CodecError::BadTrailerTag { .. })
        ));
        // Length and hash are data, not framing: they parse, and the reader
        // compares them.
        assert_eq!(decode_trailer(&with(12, 43)).unwrap().original_len, 43);
        assert_eq!(decode_trailer(&with(51, 0)).unwrap().digest[31], 0);
    }
}
