//! The repository's layout and its versioned metadata formats.
//!
//! Everything that decides *where* an object lives in a repository, or how
//! a small metadata document is encoded, lives here, so that one crate
//! answers "what is this key?" for every command. Keys are deterministic:
//! a command never probes several keys to find an object.
//!
//! Layout (format 1):
//! ```text
//! repository.json                                  RepositoryMeta: format, cluster identity
//! wal/<TLI><LOG>/<segment>                         WAL segments (24 hex digits), grouped by
//! wal/<TLI><LOG>/<segment>.partial                 timeline and log id (256 per group at 16 MiB)
//! wal/<TLI><LOG>/<segment>.<offset>.backup         backup history files
//! wal/<TLI>.history                                timeline history files
//! backups/<name>/part_NNNNN.tar, backups/<name>/manifest   base backups (see [`BackupName`])
//! backups/<name>/summary                           a backup's summary, for listing (see [`BackupSummary`])
//! verify/latest                                    the last `pgark verify` run (see [`VerifyRecord`])
//! restore-test/latest                              the last `pgark restore-test` run (see [`RestoreTestRecord`])
//! ```
//! Every object under `wal/` is a self-describing pgark object (see the
//! codec crate): no extension says how it is compressed.

mod backup;
mod error;
mod repository;
mod restore_test_record;
mod verify_record;

pub use backup::{
    delta_entry_name, piece_entry_name, BackupManifest, BackupName, BackupSummary, CorruptPages, DeltaEntry,
    DirEntry, FileEntry, PartEntry, PieceEntry, TablespaceEntry, BACKUPS_PREFIX, MANIFEST_FORMAT,
    PIECE_SUFFIX,
};
pub use error::CatalogError;
pub use repository::{RepositoryMeta, REPOSITORY_FORMAT};
pub use restore_test_record::{
    restore_test_record_key, CheckOutcome, CheckResult, RestoreTestOutcome, RestoreTestRecord,
    RestoreTestStage, RESTORE_TEST_PREFIX, RESTORE_TEST_RECORD_KEY,
};
pub use verify_record::{
    verify_record_key, VerifiedBackup, VerifyOutcome, VerifyRecord, VERIFY_PREFIX, VERIFY_RECORD_KEY,
};

use pgark_pg::ArchivedFile;
use pgark_store::Key;

/// Key of the repository metadata document.
pub const REPOSITORY_META_KEY: &str = "repository.json";

/// Prefix under which the WAL archive lives.
pub const WAL_PREFIX: &str = "wal/";

/// The one key an archived WAL file is stored under.
pub fn wal_key(file: &ArchivedFile) -> Key {
    let name = file.file_name();
    let key = match file {
        ArchivedFile::Segment(seg)
        | ArchivedFile::Partial(seg)
        | ArchivedFile::BackupHistory { segment: seg, .. } => {
            format!("{WAL_PREFIX}{}{:08X}/{name}", seg.timeline.hex(), seg.log)
        }
        ArchivedFile::TimelineHistory(_) => format!("{WAL_PREFIX}{name}"),
    };
    // File names are validated hex and fixed suffixes, so the key is valid.
    Key::new(key).expect("WAL file names always form valid keys")
}

/// The archived WAL file a key names, if it is a WAL archive key.
pub fn parse_wal_key(key: &Key) -> Option<ArchivedFile> {
    let rest = key.as_str().strip_prefix(WAL_PREFIX)?;
    let name = rest.rsplit('/').next()?;
    let file = ArchivedFile::parse(name).ok()?;
    (wal_key(&file) == *key).then_some(file)
}

/// System identifiers exceed 2^53: JSON carries them as strings.
pub(crate) mod u64_string {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_keys_are_deterministic_and_round_trip() {
        let cases = [
            (
                "000000010000000000000001",
                "wal/0000000100000000/000000010000000000000001",
            ),
            (
                "0000000A000000FF000000FE",
                "wal/0000000A000000FF/0000000A000000FF000000FE",
            ),
            (
                "000000010000000000000002.partial",
                "wal/0000000100000000/000000010000000000000002.partial",
            ),
            (
                "000000010000000000000002.00000028.backup",
                "wal/0000000100000000/000000010000000000000002.00000028.backup",
            ),
            ("00000002.history", "wal/00000002.history"),
        ];
        for (name, key) in cases {
            let file = ArchivedFile::parse(name).unwrap();
            assert_eq!(wal_key(&file).as_str(), key, "{name}");
            assert_eq!(parse_wal_key(&Key::new(key).unwrap()), Some(file), "{key}");
        }
    }

    #[test]
    fn non_wal_keys_are_not_parsed() {
        for key in [
            "repository.json",
            "wal/x",
            "wal/0000000100000001/000000010000000000000001",
            "base/a",
        ] {
            assert_eq!(parse_wal_key(&Key::new(key).unwrap()), None, "{key}");
        }
    }
}
