use std::fmt;

/// A validated object name inside a repository: `/`-separated segments of
/// printable ASCII, no empty, `.` or `..` segment, no leading or trailing
/// slash, at most 1024 bytes. Every backend can store every valid key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

/// Why a string is not a valid [`Key`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object key {key:?}: {reason}")]
pub struct KeyError {
    pub key: String,
    pub reason: &'static str,
}

impl Key {
    /// Longest key accepted (S3's limit).
    pub const MAX_LEN: usize = 1024;

    pub fn new(s: impl Into<String>) -> Result<Self, KeyError> {
        let s = s.into();
        let err = |reason| {
            Err(KeyError {
                key: s.clone(),
                reason,
            })
        };
        if s.is_empty() {
            return err("empty");
        }
        if s.len() > Self::MAX_LEN {
            return err("longer than 1024 bytes");
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return err("only printable ASCII without spaces is allowed");
        }
        for seg in s.split('/') {
            match seg {
                "" => return err("empty path segment (leading, trailing or double slash)"),
                "." | ".." => return err("'.' and '..' segments are not allowed"),
                _ => {}
            }
        }
        if s.ends_with(".pgark-tmp") || s.contains(".pgark-tmp.") {
            return err("the suffix .pgark-tmp is reserved for temporary files");
        }
        Ok(Key(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// This key with `/child` appended.
    pub fn join(&self, child: &str) -> Result<Key, KeyError> {
        Key::new(format!("{}/{}", self.0, child))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Key {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for Key {
    type Error = KeyError;
    fn try_from(s: &str) -> Result<Self, KeyError> {
        Key::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_keys() {
        for ok in ["a", "wal/0000000100000000/000000010000000000000001", "x.y-z_1"] {
            assert!(Key::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/./b",
            "../a",
            "a b",
            "a\nb",
            "é",
            "a.pgark-tmp",
        ] {
            assert!(Key::new(bad).is_err(), "{bad:?}");
        }
        assert!(Key::new("a".repeat(1025)).is_err());
        assert!(Key::new("a".repeat(1024)).is_ok());
    }
}
