//! `repository.json`: the repository's format version and the identity of
//! the PostgreSQL cluster it belongs to. Written once, create-only, by the
//! first command that learns the cluster's identity; never rewritten.

use crate::CatalogError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The repository format this pgark writes and reads.
pub const REPOSITORY_FORMAT: u32 = 1;

/// Mirrors nothing in PostgreSQL: pgark's own record of whose repository
/// this is. System identifiers are JSON strings (they exceed 2^53).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepositoryMeta {
    /// Repository format version; readers refuse newer formats.
    pub format: u32,
    /// pg_control's system_identifier (ControlFileData.system_identifier).
    #[serde(with = "crate::u64_string")]
    pub system_identifier: u64,
    /// PostgreSQL major version when the repository was created.
    pub pg_version: u32,
    /// WAL segment size in bytes (`wal_segment_size`).
    pub wal_segment_size: u32,
    pub created_at: DateTime<Utc>,
    /// The pgark version that created the repository.
    pub created_by: String,
}

impl RepositoryMeta {
    pub fn new(system_identifier: u64, pg_version: u32, wal_segment_size: u32) -> Self {
        RepositoryMeta {
            format: REPOSITORY_FORMAT,
            system_identifier,
            pg_version,
            wal_segment_size,
            created_at: Utc::now(),
            created_by: format!("pgark {}", env!("CARGO_PKG_VERSION")),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("RepositoryMeta always serializes");
        v.push(b'\n');
        v
    }

    /// Parses and checks the format version.
    pub fn from_json(bytes: &[u8]) -> Result<Self, CatalogError> {
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let what = "repository metadata (repository.json)";
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|source| CatalogError::Decode { what, source })?;
        if probe.format > REPOSITORY_FORMAT {
            return Err(CatalogError::UnsupportedFormat {
                what,
                found: probe.format,
                supported: REPOSITORY_FORMAT,
            });
        }
        serde_json::from_slice(bytes).map_err(|source| CatalogError::Decode { what, source })
    }

    /// Refuses WAL or backups of another cluster.
    pub fn check_system_identifier(&self, found: u64) -> Result<(), CatalogError> {
        if self.system_identifier == found {
            Ok(())
        } else {
            Err(CatalogError::WrongCluster {
                repository: self.system_identifier,
                found,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_large_identifiers() {
        let m = RepositoryMeta::new(7_301_234_567_890_123_456, 15, 16 << 20);
        let json = m.to_json();
        assert!(String::from_utf8_lossy(&json).contains("\"7301234567890123456\""));
        assert_eq!(RepositoryMeta::from_json(&json).unwrap(), m);
    }

    #[test]
    fn rejects_newer_format_and_garbage() {
        let newer = br#"{"format": 2, "anything": true}"#;
        assert!(matches!(
            RepositoryMeta::from_json(newer),
            Err(CatalogError::UnsupportedFormat { found: 2, .. })
        ));
        assert!(matches!(
            RepositoryMeta::from_json(b"not json"),
            Err(CatalogError::Decode { .. })
        ));
        let missing = br#"{"format": 1}"#;
        assert!(matches!(
            RepositoryMeta::from_json(missing),
            Err(CatalogError::Decode { .. })
        ));
    }

    #[test]
    fn wrong_cluster_is_refused() {
        let m = RepositoryMeta::new(1, 15, 16 << 20);
        assert!(m.check_system_identifier(1).is_ok());
        let err = m.check_system_identifier(2).unwrap_err().to_string();
        assert!(
            err.contains("system identifier 1") && err.contains("system identifier 2"),
            "{err}"
        );
    }
}
