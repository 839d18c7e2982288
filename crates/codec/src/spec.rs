//! Codec choice ([`Compression`]) and validated codec settings
//! ([`CompressionSpec`]).

use std::fmt;
use std::str::FromStr;

use crate::error::CodecError;

/// The codec of a stored object's body.
///
/// The header records it as one byte (see [`crate::format`]); the names used
/// in configuration are `none`, `zstd`, `lz4` and `lzma`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Body is the original bytes.
    None,
    /// Body is one or more zstd frames.
    Zstd,
    /// Body is one or more LZ4 frames (LZ4 frame format).
    Lz4,
    /// Body is one xz stream (LZMA2).
    Lzma,
}

impl Compression {
    /// Every codec, in header-id order.
    pub const ALL: [Compression; 4] = [
        Compression::None,
        Compression::Zstd,
        Compression::Lz4,
        Compression::Lzma,
    ];

    /// The configuration name: `none`, `zstd`, `lz4` or `lzma`.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
            Compression::Lzma => "lzma",
        }
    }

    /// The codec byte written in the header.
    pub(crate) fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
            Compression::Lz4 => 2,
            Compression::Lzma => 3,
        }
    }

    /// The codec for a header codec byte.
    pub(crate) fn from_id(id: u8) -> Option<Compression> {
        Compression::ALL.into_iter().find(|c| c.id() == id)
    }

    /// The valid level range, for codecs that have levels.
    pub fn level_range(self) -> Option<(i32, i32)> {
        match self {
            Compression::Zstd => Some((1, 22)),
            Compression::Lzma => Some((0, 9)),
            Compression::None | Compression::Lz4 => None,
        }
    }

    /// The level used when none is given, for codecs that have levels.
    pub fn default_level(self) -> Option<i32> {
        match self {
            Compression::Zstd => Some(3),
            Compression::Lzma => Some(6),
            Compression::None | Compression::Lz4 => None,
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Compression {
    type Err = CodecError;

    /// Parses `none`, `zstd`, `lz4` or `lzma` (ASCII case ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| CodecError::UnknownCompression { name: s.to_owned() })
    }
}

impl<'de> serde::Deserialize<'de> for Compression {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Compression {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// A codec and, for codecs that have them, a level.
///
/// Build it with [`CompressionSpec::new`], which validates the level; the
/// writer validates again, so a hand-built spec with a bad level is refused
/// there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressionSpec {
    pub codec: Compression,
    /// `None` means the codec's default level.
    pub level: Option<i32>,
}

impl CompressionSpec {
    /// Validates `level` for `codec`: zstd takes 1..=22 (default 3), lzma
    /// 0..=9 (default 6); lz4 and none take no level.
    pub fn new(codec: Compression, level: Option<i32>) -> Result<Self, CodecError> {
        if let Some(level) = level {
            match codec.level_range() {
                None => return Err(CodecError::LevelNotSupported { codec, level }),
                Some((min, max)) if !(min..=max).contains(&level) => {
                    return Err(CodecError::InvalidLevel {
                        codec,
                        level,
                        min,
                        max,
                    })
                }
                Some(_) => {}
            }
        }
        Ok(CompressionSpec { codec, level })
    }

    /// The level the encoder will use: the given one or the codec's
    /// default; `None` for codecs without levels.
    pub fn effective_level(&self) -> Option<i32> {
        self.codec.level_range()?;
        self.level.or(self.codec.default_level())
    }
}

impl Default for CompressionSpec {
    /// zstd at level 3.
    fn default() -> Self {
        CompressionSpec {
            codec: Compression::Zstd,
            level: Some(3),
        }
    }
}

impl fmt::Display for CompressionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.effective_level() {
            Some(level) => write!(f, "{} level {}", self.codec, level),
            None => write!(f, "{}", self.codec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in Compression::ALL {
            assert_eq!(c.to_string().parse::<Compression>().unwrap(), c);
            assert_eq!(Compression::from_id(c.id()), Some(c));
        }
        assert_eq!("ZSTD".parse::<Compression>().unwrap(), Compression::Zstd);
        assert_eq!(Compression::from_id(4), None);
        assert_eq!(Compression::from_id(255), None);
    }

    #[test]
    fn from_str_rejects_unknown_and_lists_valid_names() {
        for bad in ["", "gzip", "xz", "zstd ", " lz4", "lzma2", "zst"] {
            let err = bad.parse::<Compression>().unwrap_err();
            assert!(matches!(&err, CodecError::UnknownCompression { name } if name == bad));
            let msg = err.to_string();
            for name in ["none", "zstd", "lz4", "lzma"] {
                assert!(msg.contains(name), "{msg}");
            }
            assert!(!err.is_integrity());
        }
    }

    #[test]
    fn serde_uses_the_names() {
        // serde's own value deserializers stand in for a config format.
        use serde::de::value::{Error as DeError, StrDeserializer};
        use serde::de::IntoDeserializer;
        for c in Compression::ALL {
            let de: StrDeserializer<'_, DeError> = c.name().into_deserializer();
            assert_eq!(<Compression as serde::Deserialize>::deserialize(de).unwrap(), c);
        }
        let de: StrDeserializer<'_, DeError> = "brotli".into_deserializer();
        let err = <Compression as serde::Deserialize>::deserialize(de)
            .unwrap_err()
            .to_string();
        assert!(err.contains("brotli") && err.contains("lzma"), "{err}");
    }

    #[test]
    fn level_validation_table() {
        use Compression::{Lz4, Lzma, Zstd};
        const NONE: Compression = Compression::None;
        // (codec, level, Ok(effective) or Err(kind))
        let ok: &[(Compression, Option<i32>, Option<i32>)] = &[
            (Zstd, None, Some(3)),
            (Zstd, Some(1), Some(1)),
            (Zstd, Some(19), Some(19)),
            (Zstd, Some(22), Some(22)),
            (Lzma, None, Some(6)),
            (Lzma, Some(0), Some(0)),
            (Lzma, Some(9), Some(9)),
            (Lz4, None, None),
            (NONE, None, None),
        ];
        for &(codec, level, eff) in ok {
            let spec = CompressionSpec::new(codec, level).unwrap();
            assert_eq!(spec.effective_level(), eff, "{codec} {level:?}");
        }
        let bad_range: &[(Compression, i32)] = &[
            (Zstd, 0),
            (Zstd, 23),
            (Zstd, -1),
            (Zstd, i32::MIN),
            (Lzma, -1),
            (Lzma, 10),
            (Lzma, i32::MAX),
        ];
        for &(codec, level) in bad_range {
            let err = CompressionSpec::new(codec, Some(level)).unwrap_err();
            assert!(
                matches!(err, CodecError::InvalidLevel { codec: c, level: l, .. }
                    if c == codec && l == level),
                "{err}"
            );
        }
        for codec in [Lz4, NONE] {
            for level in [0, 1, 3] {
                let err = CompressionSpec::new(codec, Some(level)).unwrap_err();
                let msg = err.to_string();
                assert!(matches!(err, CodecError::LevelNotSupported { .. }));
                assert!(
                    msg.contains(codec.name()) && msg.contains("no compression levels"),
                    "{msg}"
                );
            }
        }
    }

    #[test]
    fn default_is_zstd_3() {
        let d = CompressionSpec::default();
        assert_eq!(d.codec, Compression::Zstd);
        assert_eq!(d.effective_level(), Some(3));
        assert_eq!(d.to_string(), "zstd level 3");
        assert_eq!(
            CompressionSpec::new(Compression::Lz4, Option::None)
                .unwrap()
                .to_string(),
            "lz4"
        );
    }
}
