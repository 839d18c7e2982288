//! The record of the last `pgark restore-test` run: `restore-test/latest`.
//!
//! Written after every run that reached a verdict on a backup: it restored
//! and every check passed, a check failed, PostgreSQL did not recover the
//! restored cluster, the restore found a damaged object, or the time limit
//! ran out. Not written when the test could not run at all (a usage error,
//! no PostgreSQL binaries for the backup's version, an unreachable
//! repository, too little free space): the previous record stays. Stored
//! like verify's record: a pgark object of JSON, encrypted under the data
//! key in an encrypted repository, replaced whole by each run.

use crate::CatalogError;
use chrono::{DateTime, Utc};
use pgark_store::Key;
use serde::{Deserialize, Serialize};

/// Key of the record of the last restore test.
pub const RESTORE_TEST_RECORD_KEY: &str = "restore-test/latest";

/// Prefix of restore-test's records (nothing else lives there).
pub const RESTORE_TEST_PREFIX: &str = "restore-test/";

/// The key of [`RESTORE_TEST_RECORD_KEY`].
pub fn restore_test_record_key() -> Key {
    Key::new(RESTORE_TEST_RECORD_KEY).expect("a valid key")
}

/// A restore test's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreTestOutcome {
    /// Restored, recovered, promoted, and every check passed.
    Passed,
    /// A stage failed (see [`RestoreTestRecord::failed_stage`]).
    Failed,
}

/// Where a failed restore test stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestoreTestStage {
    /// Restoring the backup's files (a damaged or missing object).
    Restore,
    /// Starting PostgreSQL on them and recovering to the target.
    Recovery,
    /// The checks on the recovered cluster.
    Checks,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckOutcome {
    Passed,
    Failed,
    /// Not run; the detail says why (no such program for this version,
    /// no data checksums).
    Skipped,
}

/// One check a restore test ran (or skipped).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// `connect <db>`, `pg_amcheck`, `check-sql <n>: <statement>`, `pg_checksums`.
    pub name: String,
    pub outcome: CheckOutcome,
    /// What failed, or why it was skipped (empty when it passed).
    #[serde(default)]
    pub detail: String,
}

/// What the last `pgark restore-test` run restored, how long each stage
/// took, and what it found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreTestRecord {
    /// When the run ended (RFC 3339, UTC).
    pub time: DateTime<Utc>,
    /// The backup restored.
    pub backup: String,
    /// The recovery target, in words (`end of the archived WAL`,
    /// `time 2026-11-22 10:30:00+00`, ...).
    pub target: String,
    pub outcome: RestoreTestOutcome,
    /// The stage that failed (absent when passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_stage: Option<RestoreTestStage>,
    /// Why the stage failed (absent when passed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds spent restoring the files.
    pub restore_seconds: f64,
    /// Seconds from starting PostgreSQL to the end of recovery (absent when
    /// the restore failed).
    #[serde(default)]
    pub recovery_seconds: Option<f64>,
    /// Seconds spent on the checks, the shutdown before pg_checksums included.
    #[serde(default)]
    pub checks_seconds: Option<f64>,
    /// Bytes of WAL replayed: from the backup's start LSN to the last
    /// record replayed.
    #[serde(default)]
    pub wal_replayed_bytes: Option<u64>,
    /// The last WAL location replayed (X/X).
    #[serde(default)]
    pub recovered_to_lsn: Option<String>,
    /// Commit time of the last transaction replayed: the data is as of then.
    #[serde(default)]
    pub last_replayed_commit: Option<DateTime<Utc>>,
    /// The timeline the restored cluster promoted onto (it is never archived).
    #[serde(default)]
    pub timeline: Option<u32>,
    /// `server_version` of the PostgreSQL that ran the test.
    #[serde(default)]
    pub server_version: Option<String>,
    pub checks: Vec<CheckResult>,
    /// The pgark version that ran.
    pub pgark_version: String,
}

impl RestoreTestRecord {
    pub fn passed(&self) -> bool {
        self.outcome == RestoreTestOutcome::Passed
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("restore-test records always serialize")
    }

    pub fn from_json(bytes: &[u8]) -> Result<RestoreTestRecord, CatalogError> {
        serde_json::from_slice(bytes).map_err(|source| CatalogError::Decode {
            what: "restore-test record",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_the_documented_field_names() {
        let record = RestoreTestRecord {
            time: "2026-01-02T03:04:05Z".parse().unwrap(),
            backup: "base_000000010000000000000002_20260102T030000Z".into(),
            target: "end of the archived WAL".into(),
            outcome: RestoreTestOutcome::Failed,
            failed_stage: Some(RestoreTestStage::Checks),
            error: Some("check-sql 1 failed".into()),
            restore_seconds: 1.5,
            recovery_seconds: Some(2.0),
            checks_seconds: Some(0.5),
            wal_replayed_bytes: Some(16 << 20),
            recovered_to_lsn: Some("0/3000060".into()),
            last_replayed_commit: Some("2026-01-02T03:00:00Z".parse().unwrap()),
            timeline: Some(2),
            server_version: Some("15.18".into()),
            checks: vec![CheckResult {
                name: "check-sql 1: select false".into(),
                outcome: CheckOutcome::Failed,
                detail: "returned false".into(),
            }],
            pgark_version: "0.1.0".into(),
        };
        let json: serde_json::Value = serde_json::from_slice(&record.to_json()).unwrap();
        assert_eq!(json["outcome"], "failed");
        assert_eq!(json["failed_stage"], "checks");
        assert_eq!(json["checks"][0]["outcome"], "failed");
        assert_eq!(json["wal_replayed_bytes"], 16 << 20);
        assert_eq!(RestoreTestRecord::from_json(&record.to_json()).unwrap(), record);
        assert!(!record.passed());
        assert!(RestoreTestRecord::from_json(b"{").is_err());
        assert_eq!(restore_test_record_key().as_str(), RESTORE_TEST_RECORD_KEY);
        assert!(RESTORE_TEST_RECORD_KEY.starts_with(RESTORE_TEST_PREFIX));
    }
}
