//! Serde helpers: fixed-size byte arrays as standard padded base64 text.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serializer};

pub fn serialize<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&STANDARD.encode(bytes))
}

pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
    let text = String::deserialize(d)?;
    let bytes = STANDARD
        .decode(&text)
        .map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))?;
    bytes.as_slice().try_into().map_err(|_| {
        serde::de::Error::custom(format!("expected base64 of {N} bytes, got {} bytes", bytes.len()))
    })
}
