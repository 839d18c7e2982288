//! Backups in the repository: names, keys and the manifest.
//!
//! ```text
//! backups/<name>/part_00001.tar    a pgark object whose content is a tar stream of files
//! backups/<name>/part_0000N.tar    ... the last part holds only global/pg_control
//! backups/<name>/manifest          the manifest (a pgark object of JSON): written last
//! backups/<name>/summary           what listing needs (a pgark object of JSON): written after it
//! backups/<name>/permanent         optional, empty: the backup is never expired
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
/// Manifest format this pgark writes and reads. 2: files may be split
/// into pieces ([`FileEntry::pieces`]), part digests name their algorithm.
pub const MANIFEST_FORMAT: u32 = 2;
/// What a piece's tar entry name adds to its file's path.
pub const PIECE_SUFFIX: &str = ".pgark-piece.";

/// The tar entry name of piece `number` (0-based) of the file at `path`:
/// `<path>.pgark-piece.<6 digits>`, so that a shell glob lists the pieces
/// in order and `cat` joins them.
pub fn piece_entry_name(path: &str, number: usize) -> String {
    format!("{path}{PIECE_SUFFIX}{number:06}")
}

/// The tar entry name of the increment of the file at `path` in a delta
/// backup (see `pgark-delta`'s format).
pub fn delta_entry_name(path: &str) -> String {
    format!("{path}.pgark-delta")
}
const MANIFEST_FILE: &str = "manifest";
const SUMMARY_FILE: &str = "summary";
const PERMANENT_FILE: &str = "permanent";
const DELETING_FILE: &str = "deleting";

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

    /// Key of the backup's summary (see [`BackupSummary`]).
    pub fn summary_key(&self) -> Key {
        Key::new(format!("{BACKUPS_PREFIX}{}/{SUMMARY_FILE}", self.0)).expect("backup names form valid keys")
    }

    /// The backup a summary key belongs to.
    pub fn from_summary_key(key: &Key) -> Option<BackupName> {
        let rest = key.as_str().strip_prefix(BACKUPS_PREFIX)?;
        let (name, file) = rest.split_once('/')?;
        (file == SUMMARY_FILE)
            .then(|| BackupName::parse(name).ok())
            .flatten()
    }

    /// Every object of the backup has a key starting with this prefix
    /// (`backups/<name>/`), and no other object does.
    pub fn prefix(&self) -> String {
        format!("{BACKUPS_PREFIX}{}/", self.0)
    }

    /// The start time a name made by [`BackupName::new`] carries; `None`
    /// for other names.
    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        let time = self.0.get(30..)?;
        chrono::NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%SZ")
            .ok()
            .map(|t| t.and_utc())
    }

    /// Key of the permanent mark: an empty object whose presence keeps the
    /// backup from ever being expired.
    pub fn permanent_key(&self) -> Key {
        Key::new(format!("{BACKUPS_PREFIX}{}/{PERMANENT_FILE}", self.0))
            .expect("backup names form valid keys")
    }

    /// Key of the deletion mark: an empty object `pgark delete` writes
    /// before it removes the backup's manifest, so that what a killed
    /// delete leaves (objects without a manifest) is known to be garbage
    /// at once, not only after the garbage age.
    pub fn deleting_key(&self) -> Key {
        Key::new(format!("{BACKUPS_PREFIX}{}/{DELETING_FILE}", self.0)).expect("backup names form valid keys")
    }

    /// The backup a key under `backups/` belongs to, and the key's file
    /// name within it.
    pub fn from_key(key: &Key) -> Option<(BackupName, &str)> {
        let rest = key.as_str().strip_prefix(BACKUPS_PREFIX)?;
        let (name, file) = rest.split_once('/')?;
        Some((BackupName::parse(name).ok()?, file))
    }

    /// Whether `file` (as [`BackupName::from_key`] returns it) is the
    /// manifest, or the permanent mark.
    pub fn is_manifest_file(file: &str) -> bool {
        file == MANIFEST_FILE
    }
    pub fn is_permanent_file(file: &str) -> bool {
        file == PERMANENT_FILE
    }
    /// Whether `file` is the deletion mark ([`BackupName::deleting_key`]).
    pub fn is_deleting_file(file: &str) -> bool {
        file == DELETING_FILE
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

/// What listing and choosing a backup need, without its file list: a
/// small object written beside the manifest, after it, so that listing
/// thousands of backups reads a few hundred bytes each instead of every
/// manifest. The manifest stays the completion marker and the reference:
/// a backup without a summary (taken before summaries, or killed between
/// the two writes) is listed from its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    pub name: BackupName,
    #[serde(with = "crate::u64_string")]
    pub system_identifier: u64,
    pub pg_version_num: u32,
    pub timeline: u32,
    pub start_lsn: String,
    pub stop_lsn: String,
    pub start_wal_segment: String,
    pub stop_wal_segment: String,
    pub backup_from: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_stop_time: Option<DateTime<Utc>>,
    pub original_size: u64,
    pub stored_size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<BackupName>,
    #[serde(default)]
    pub delta_depth: u32,
}

impl BackupSummary {
    pub fn of(m: &BackupManifest) -> BackupSummary {
        BackupSummary {
            name: m.name.clone(),
            system_identifier: m.system_identifier,
            pg_version_num: m.pg_version_num,
            timeline: m.timeline,
            start_lsn: m.start_lsn.clone(),
            stop_lsn: m.stop_lsn.clone(),
            start_wal_segment: m.start_wal_segment.clone(),
            stop_wal_segment: m.stop_wal_segment.clone(),
            backup_from: m.backup_from.clone(),
            started_at: m.started_at,
            finished_at: m.finished_at,
            server_stop_time: m.server_stop_time,
            original_size: m.original_size,
            stored_size: m.stored_size,
            parent: m.parent.clone(),
            delta_depth: m.delta_depth,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("summaries always serialize")
    }

    pub fn from_json(bytes: &[u8]) -> Result<BackupSummary, CatalogError> {
        serde_json::from_slice(bytes).map_err(|source| CatalogError::Decode {
            what: "backup summary",
            source,
        })
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
    /// digest (in its object trailer) covers the same bytes strongly. For a
    /// delta entry: of the file as the delta's scan read it (its kept pages
    /// are read again to be stored, so a restore does not compare with it).
    pub crc32c: String,
    /// The data part holding the file (1-based); for a file split into
    /// pieces, the part of its first piece.
    pub part: u32,
    /// A file larger than a part is split into pieces, stored in
    /// different parts as the tar entries [`piece_entry_name`] so that they
    /// are compressed and restored in parallel; in offset order, covering
    /// the file exactly. Empty: the file is one tar entry under its own
    /// path in `part`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<PieceEntry>,
    /// In a delta backup, a relation file diffed against the parent's copy:
    /// its pages changed since the parent started, as an increment (the
    /// tar entry [`delta_entry_name`] in `part`), or nothing at all when
    /// no page changed (`part` is then 0). `None`: the whole content is in
    /// this backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaEntry>,
}

impl FileEntry {
    /// Whether this backup holds any bytes of the file (a delta entry of
    /// an unchanged file holds none).
    pub fn has_content(&self) -> bool {
        self.delta.as_ref().is_none_or(|d| !d.unchanged)
    }
}

/// How a delta backup stores a relation file (see [`FileEntry::delta`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeltaEntry {
    /// No page changed and the size is the parent's: nothing is stored,
    /// the file is the parent's.
    #[serde(default)]
    pub unchanged: bool,
    /// The file's size in blocks when it was read.
    pub blocks: u32,
    /// The size of the parent's copy, in blocks.
    pub parent_blocks: u32,
    /// Pages the increment stores.
    pub stored_pages: u32,
    /// Size of the increment (the tar entry).
    pub size: u64,
    /// CRC-32C of the increment, 8 hex digits.
    pub crc32c: String,
}

/// Pages whose data checksum failed when read twice (corrupt on disk),
/// per file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorruptPages {
    pub path: String,
    /// Block numbers within the file (as pg_basebackup and pg_checksums
    /// report them).
    pub blocks: Vec<u32>,
}

/// One piece of a file split across parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PieceEntry {
    /// The data part holding the piece (1-based).
    pub part: u32,
    /// Where the piece starts in the file.
    pub offset: u64,
    /// Its length.
    pub size: u64,
    /// CRC-32C of the piece, 8 hex digits. The file's own `crc32c` is the
    /// CRC-32C of the pieces joined (CRC-32C combines without re-reading).
    pub crc32c: String,
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
    /// pgark's clock when the backup began and when it finished.
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// The server's own clock when `pg_backup_stop` returned (its
    /// `clock_timestamp()`): the clock of commit timestamps, by which a
    /// restore to a target time chooses its backup. `None` in backups
    /// taken before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_stop_time: Option<DateTime<Utc>>,
    /// Sum of file sizes.
    pub original_size: u64,
    /// Sum of stored part sizes.
    pub stored_size: u64,
    pub compression: String,
    pub backup_label: String,
    pub tablespace_map: String,
    pub tablespaces: Vec<TablespaceEntry>,
    /// The backup this one is a delta of; `None` for a full backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<BackupName>,
    /// Deltas between this backup and its full backup: 0 for a full one.
    #[serde(default)]
    pub delta_depth: u32,
    /// The parent's start LSN, from which changed pages were kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_since_lsn: Option<String>,
    /// The cluster has data checksums (pg_control), so every page read
    /// was verified.
    #[serde(default)]
    pub data_checksums: bool,
    /// BLCKSZ of the cluster.
    #[serde(default = "default_block_size")]
    pub block_size: u32,
    /// Pages found corrupt (checksum failed twice with the same bytes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub corrupt_pages: Vec<CorruptPages>,
    pub parts: Vec<PartEntry>,
    pub directories: Vec<DirEntry>,
    pub files: Vec<FileEntry>,
}

fn default_block_size() -> u32 {
    8192
}

impl BackupManifest {
    /// Whether this is a delta backup (it has a parent).
    pub fn is_delta(&self) -> bool {
        self.parent.is_some()
    }

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
        let bad_part = |p: u32| p == 0 || p > parts;
        if let Some(f) = m.files.iter().find(|f| {
            if f.has_content() {
                bad_part(f.part)
            } else {
                f.part != 0 || !f.pieces.is_empty()
            }
        }) {
            return Err(CatalogError::Inconsistent {
                what,
                detail: format!("{} names part {} of {parts}", f.path, f.part),
            });
        }
        for f in m.files.iter().filter(|f| !f.pieces.is_empty()) {
            let mut next = 0u64;
            for p in &f.pieces {
                if bad_part(p.part) || p.offset != next || p.size == 0 {
                    return Err(CatalogError::Inconsistent {
                        what,
                        detail: format!(
                            "{}: piece at offset {} ({} bytes, part {}) does not follow the previous one",
                            f.path, p.offset, p.size, p.part
                        ),
                    });
                }
                next += p.size;
            }
            if next != f.size {
                return Err(CatalogError::Inconsistent {
                    what,
                    detail: format!("{}: pieces cover {next} of {} bytes", f.path, f.size),
                });
            }
        }
        if m.parent.is_none() != (m.delta_depth == 0)
            || (m.parent.is_none() && m.files.iter().any(|f| f.delta.is_some()))
        {
            return Err(CatalogError::Inconsistent {
                what,
                detail: "delta entries, parent and delta depth disagree".into(),
            });
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_keys_belong_to_their_backup_only() {
        let name = BackupName::parse("base_000000010000000000000002_a").unwrap();
        assert_eq!(name.prefix(), "backups/base_000000010000000000000002_a/");
        assert_eq!(
            name.permanent_key().as_str(),
            "backups/base_000000010000000000000002_a/permanent"
        );
        for key in [name.manifest_key(), name.permanent_key(), name.part_key(3)] {
            assert!(key.as_str().starts_with(&name.prefix()));
            assert_eq!(BackupName::from_key(&key).map(|(n, _)| n), Some(name.clone()));
        }
        assert_eq!(name.started_at(), None);
        let at = DateTime::parse_from_rfc3339("2026-11-22T03:15:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            BackupName::new("000000010000000000000002", at).started_at(),
            Some(at)
        );
        let mark = name.permanent_key();
        let (_, file) = BackupName::from_key(&mark).unwrap();
        assert!(BackupName::is_permanent_file(file) && !BackupName::is_manifest_file(file));
        for key in [
            "backups/x/manifest",
            "backups/base_000000010000000000000002_a",
            "wal/a/b",
        ] {
            let key = Key::new(key).unwrap();
            assert_eq!(BackupName::from_key(&key), None, "{key}");
        }
    }

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

    fn manifest(files: Vec<FileEntry>) -> BackupManifest {
        let t = DateTime::parse_from_rfc3339("2026-11-22T03:15:00Z")
            .unwrap()
            .with_timezone(&Utc);
        BackupManifest {
            format: MANIFEST_FORMAT,
            name: BackupName::new("000000010000000000000002", t),
            tool_version: "0".into(),
            system_identifier: 1,
            pg_version_num: 170000,
            timeline: 1,
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/2000100".into(),
            start_wal_segment: "000000010000000000000002".into(),
            stop_wal_segment: "000000010000000000000002".into(),
            wal_segment_size: 16 << 20,
            backup_from: "primary".into(),
            started_at: t,
            finished_at: t,
            server_stop_time: None,
            original_size: 0,
            stored_size: 0,
            compression: "zstd".into(),
            backup_label: String::new(),
            tablespace_map: String::new(),
            tablespaces: vec![],
            parent: None,
            delta_depth: 0,
            delta_since_lsn: None,
            data_checksums: true,
            block_size: 8192,
            corrupt_pages: vec![],
            parts: (1..=3)
                .map(|index| PartEntry {
                    index,
                    original_size: 0,
                    stored_size: 0,
                    digest: String::new(),
                })
                .collect(),
            directories: vec![],
            files,
        }
    }

    fn split_file(pieces: &[(u32, u64, u64)], size: u64) -> FileEntry {
        FileEntry {
            path: "base/5/16396".into(),
            size,
            mode: 0o600,
            mtime: 0,
            crc32c: "00000000".into(),
            part: pieces[0].0,
            pieces: pieces
                .iter()
                .map(|&(part, offset, size)| PieceEntry {
                    part,
                    offset,
                    size,
                    crc32c: "00000000".into(),
                })
                .collect(),
            delta: None,
        }
    }

    #[test]
    fn pieces_must_cover_their_file_in_order() {
        let good = manifest(vec![split_file(&[(2, 0, 10), (1, 10, 5)], 15)]);
        assert_eq!(BackupManifest::from_json(&good.to_json()).unwrap(), good);
        for (what, bad) in [
            ("gap", split_file(&[(2, 0, 10), (1, 11, 4)], 15)),
            ("short", split_file(&[(2, 0, 10)], 15)),
            ("long", split_file(&[(2, 0, 10), (1, 10, 6)], 15)),
            ("empty piece", split_file(&[(2, 0, 15), (1, 15, 0)], 15)),
            ("no such part", split_file(&[(2, 0, 10), (4, 10, 5)], 15)),
        ] {
            let m = manifest(vec![bad]);
            assert!(
                matches!(
                    BackupManifest::from_json(&m.to_json()),
                    Err(CatalogError::Inconsistent { .. })
                ),
                "{what}"
            );
        }
    }

    #[test]
    fn format_1_manifests_still_read() {
        let mut m = manifest(vec![]);
        m.format = 1;
        m.data_checksums = false;
        let json = String::from_utf8(m.to_json())
            .unwrap()
            .replace("\"digest\"", "\"sha256\"");
        assert!(json.contains("\"sha256\""));
        assert_eq!(BackupManifest::from_json(json.as_bytes()).unwrap(), m);
    }
}
