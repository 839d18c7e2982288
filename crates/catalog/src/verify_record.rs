//! The record of the last `pgark verify` run: `verify/latest`.
//!
//! Written after every verify run that reached a verdict (whole or damaged), replacing the
//! one before; not when the repository itself failed. Stored like a backup's summary: a
//! pgark object of JSON, encrypted under the data key in an encrypted repository. Listing
//! (`backup-list --detail`) reads it to say which backups the last run checked.

use crate::CatalogError;
use chrono::{DateTime, Utc};
use pgark_store::Key;
use serde::{Deserialize, Serialize};

/// Key of the record of the last verify run.
pub const VERIFY_RECORD_KEY: &str = "verify/latest";

/// Prefix of verify's records (nothing else lives there).
pub const VERIFY_PREFIX: &str = "verify/";

/// The key of [`VERIFY_RECORD_KEY`].
pub fn verify_record_key() -> Key {
    Key::new(VERIFY_RECORD_KEY).expect("a valid key")
}

/// A verify run's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyOutcome {
    /// Every backup checked is whole.
    Whole,
    /// At least one backup checked is damaged or incomplete.
    Damaged,
}

/// One backup a verify run checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifiedBackup {
    pub name: String,
    pub whole: bool,
    /// What was damaged or missing (empty when whole).
    #[serde(default)]
    pub problems: Vec<String>,
}

/// What the last `pgark verify` run checked and found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyRecord {
    /// When the run ended (RFC 3339, UTC).
    pub time: DateTime<Utc>,
    /// `all`, `latest`, or the backup name given.
    pub target: String,
    /// Whether the run read every WAL segment of each backup (`verify --wal`).
    pub wal_level: bool,
    pub backups: Vec<VerifiedBackup>,
    pub outcome: VerifyOutcome,
    /// The pgark version that ran.
    pub pgark_version: String,
}

impl VerifyRecord {
    /// The entry of `name`, if the run checked it.
    pub fn backup(&self, name: &str) -> Option<&VerifiedBackup> {
        self.backups.iter().find(|b| b.name == name)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("verify records always serialize")
    }

    pub fn from_json(bytes: &[u8]) -> Result<VerifyRecord, CatalogError> {
        serde_json::from_slice(bytes).map_err(|source| CatalogError::Decode {
            what: "verify record",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_the_documented_field_names() {
        let record = VerifyRecord {
            time: "2026-01-02T03:04:05Z".parse().unwrap(),
            target: "latest".into(),
            wal_level: true,
            backups: vec![VerifiedBackup {
                name: "base_000000010000000000000002_20260102T030000Z".into(),
                whole: false,
                problems: vec!["wal/x: damaged".into()],
            }],
            outcome: VerifyOutcome::Damaged,
            pgark_version: "0.1.0".into(),
        };
        let json: serde_json::Value = serde_json::from_slice(&record.to_json()).unwrap();
        assert_eq!(json["time"], "2026-01-02T03:04:05Z");
        assert_eq!(json["outcome"], "damaged");
        assert_eq!(json["wal_level"], true);
        assert_eq!(json["backups"][0]["whole"], false);
        assert_eq!(VerifyRecord::from_json(&record.to_json()).unwrap(), record);
        assert!(VerifyRecord::from_json(b"{").is_err());
        assert_eq!(verify_record_key().as_str(), VERIFY_RECORD_KEY);
        assert!(VERIFY_RECORD_KEY.starts_with(VERIFY_PREFIX));
    }
}
