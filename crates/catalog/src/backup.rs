//! Backups in the repository: names, keys and the manifest.
//!
//! ```text
//! backups/<name>/part_00001.tar    a pgark object whose content is a tar stream of files
//! backups/<name>/part_0000N.tar    ... the last part holds only global/pg_control
//! backups/<name>/manifest          the manifest (a pgark object of JSON): written last
//! ```
//! The manifest is the completion marker: a backup without one does not
//! exist for any command, and its parts are leftovers of an interrupted
//! run that nothing reads.

use crate::CatalogError;
use chrono::{DateTime, Utc};
use pgark_store::Key;
use serde::{Deserialize, Serialize};

/// Prefix under which backups live.
pub const BACKUPS_PREFIX: &str = "backups/";
/// Manifest format this pgark writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;
const MANIFEST_FILE: &str = "manifest";

/// A backup's name: `base_<start WAL segment>_<start time>`, e.g.
/// `base_000000010000000000000002_20261122T031500Z`. Names sort by
/// timeline, WAL position, then time, and two backups starting in the same
/// segment differ by their start time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BackupName(String);

impl BackupName {
    pub fn new(start_segment: &str, started_at: DateTime<Utc>) -> BackupName {
        BackupName(format!(
            "base_{start_segment}_{}",
            started_at.format("%Y%m%dT%H%M%SZ")
        ))
    }

    /// Accepts any name of the form `base_<24 hex>[_<suffix>]` made of
    /// characters valid in a key segment.
    pub fn parse(s: &str) -> Result<BackupName, CatalogError> {
        let bad = |reason: &str| CatalogError::BadBackupName {
            name: s.to_string(),
            reason: reason.to_string(),
        };
        let rest = s
            .strip_prefix("base_")
            .ok_or_else(|| bad("backup names start with base_"))?;
        let seg = rest
            .get(..24)
            .ok_or_else(|| bad("base_ is followed by a 24-digit WAL segment name"))?;
        if !seg.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("base_ is followed by a 24-digit WAL segment name"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(bad("only letters, digits, '_' and '-' are allowed"));
        }
        Ok(BackupName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn manifest_key(&self) -> Key {
        Key::new(format!("{BACKUPS_PREFIX}{}/{MANIFEST_FILE}", self.0)).expect("backup names form valid keys")
    }

    /// Key of data part `index` (1-based).
    pub fn part_key(&self, index: u32) -> Key {
        Key::new(format!("{BACKUPS_PREFIX}{}/part_{index:05}.tar", self.0))
            .expect("backup names form valid keys")
    }

    /// The backup a manifest key belongs to.
    pub fn from_manifest_key(key: &Key) -> Option<BackupName> {
        let rest = key.as_str().strip_prefix(BACKUPS_PREFIX)?;
        let (name, file) = rest.split_once('/')?;
        (file == MANIFEST_FILE)
            .then(|| BackupName::parse(name).ok())
            .flatten()
    }
}

impl std::fmt::Display for BackupName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One regular file of the backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the data directory, `/`-separated; files of
    /// tablespace OID n are under `pg_tblspc/<n>/`.
    pub path: String,
    /// Bytes stored (the size when the copy started; a file that shrank
    /// while being copied is padded with zeros, as WAL replay rewrites it).
    pub size: u64,
    /// Permission bits (e.g. 0o600).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// CRC-32C of the stored content, 8 hex digits (the value, big-endian).
    /// Cheap enough to compute on every byte at memory speed; each part's
    /// digest (in its object trailer) covers the same bytes strongly.
    pub crc32c: String,
    /// The data part holding the file (1-based).
    pub part: u32,
}

/// A directory to recreate, even when empty (pg_wal, pg_stat_tmp, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirEntry {
    pub path: String,
    pub mode: u32,
}

/// A tablespace: its OID, name and location on the backed-up server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TablespaceEntry {
    pub oid: u32,
    pub name: String,
    pub location: String,
}

/// A stored data part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartEntry {
    pub index: u32,
    /// Size of the tar stream it holds.
    pub original_size: u64,
    /// Size of the stored object.
    pub stored_size: u64,
    /// Digest of the tar stream as recorded in the object's trailer:
    /// `blake3:<hex>` or `sha256:<hex>` (format 1 wrote bare SHA-256 hex,
    /// under the name `sha256`).
    #[serde(alias = "sha256")]
    pub digest: String,
}

/// Everything known about one completed backup. Written last; its presence
/// is what makes the backup exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupManifest {
    pub format: u32,
    pub name: BackupName,
    /// The pgark version that took the backup.
    pub tool_version: String,
    #[serde(with = "crate::u64_string")]
    pub system_identifier: u64,
    /// server_version_num, e.g. 150018.
    pub pg_version_num: u32,
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub start_wal_segment: String,
    pub stop_wal_segment: String,
    pub wal_segment_size: u32,
    /// "primary" or "standby".
    pub backup_from: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// Sum of file sizes.
    pub original_size: u64,
    /// Sum of stored part sizes.
    pub stored_size: u64,
    pub compression: String,
    pub backup_label: String,
    pub tablespace_map: String,
    pub tablespaces: Vec<TablespaceEntry>,
    pub parts: Vec<PartEntry>,
    pub directories: Vec<DirEntry>,
    pub files: Vec<FileEntry>,
}

impl BackupManifest {
    pub fn pg_major(&self) -> u32 {
        self.pg_version_num / 10000
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("manifests always serialize")
    }

    /// Parses and checks the format version and internal consistency.
    pub fn from_json(bytes: &[u8]) -> Result<BackupManifest, CatalogError> {
        #[derive(Deserialize)]
        struct Probe {
            format: u32,
        }
        let what = "backup manifest";
        let probe: Probe =
            serde_json::from_slice(bytes).map_err(|source| CatalogError::Decode { what, source })?;
        if probe.format > MANIFEST_FORMAT {
            return Err(CatalogError::UnsupportedFormat {
                what,
                found: probe.format,
                supported: MANIFEST_FORMAT,
            });
        }
        let m: BackupManifest =
            serde_json::from_slice(bytes).map_err(|source| CatalogError::Decode { what, source })?;
        let parts = m.parts.len() as u32;
        if let Some(f) = m.files.iter().find(|f| f.part == 0 || f.part > parts) {
            return Err(CatalogError::Inconsistent {
                what,
                detail: format!("{} names part {} of {parts}", f.path, f.part),
            });
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_sort_by_position_then_time() {
        let t1 = DateTime::parse_from_rfc3339("2026-11-22T03:15:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let t2 = DateTime::parse_from_rfc3339("2026-11-22T03:15:01Z")
            .unwrap()
            .with_timezone(&Utc);
        let a = BackupName::new("000000010000000000000002", t1);
        let b = BackupName::new("000000010000000000000002", t2);
        let c = BackupName::new("000000010000000000000003", t1);
        assert_eq!(a.as_str(), "base_000000010000000000000002_20261122T031500Z");
        assert!(a < b && b < c);
        assert_ne!(a, b, "same segment, different start: distinct names");
        assert_eq!(BackupName::parse(a.as_str()).unwrap(), a);
        assert!(BackupName::parse("base_000000010000000000000002").is_ok());
        for bad in [
            "LATEST",
            "base_",
            "base_00000001",
            "base_zzzzzzzzzzzzzzzzzzzzzzzz",
            "base_000000010000000000000002/x",
        ] {
            assert!(BackupName::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            a.manifest_key().as_str(),
            "backups/base_000000010000000000000002_20261122T031500Z/manifest"
        );
        assert_eq!(BackupName::from_manifest_key(&a.manifest_key()), Some(a.clone()));
        assert_eq!(BackupName::from_manifest_key(&a.part_key(1)), None);
    }
}
