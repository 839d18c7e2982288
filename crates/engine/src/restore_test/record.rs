//! Reading and writing `restore-test/latest` (see
//! [`pgark_catalog::RestoreTestRecord`]).

use crate::manifest_io::{get_record, put_record};
use crate::{EngineError, RepoKeys};
use pgark_catalog::{restore_test_record_key, RestoreTestRecord};
use pgark_store::ObjectStore;

/// Writes `record` as `restore-test/latest`, replacing the last run's: one
/// put, so a reader sees the old record or the new one.
pub async fn record_restore_test(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
    record: &RestoreTestRecord,
) -> Result<(), EngineError> {
    put_record(store, keys, &restore_test_record_key(), &record.to_json()).await
}

/// The record of the last restore test (`None`: never tested). A record
/// that does not decode or parse is an integrity error.
pub async fn last_restore_test(
    store: &dyn ObjectStore,
    keys: &RepoKeys,
) -> Result<Option<RestoreTestRecord>, EngineError> {
    get_record(
        store,
        keys,
        &restore_test_record_key(),
        RestoreTestRecord::from_json,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgark_catalog::{CheckOutcome, CheckResult, RestoreTestOutcome};

    #[tokio::test]
    async fn the_last_test_is_recorded_and_read_back_plain_and_encrypted() {
        for keys in [
            RepoKeys::default(),
            RepoKeys {
                data_key: Some(pgark_crypto::DataKey::generate()),
            },
        ] {
            let store = pgark_store::MemoryStore::new();
            assert!(last_restore_test(&store, &keys).await.unwrap().is_none());
            let record = RestoreTestRecord {
                time: "2026-01-02T03:04:05Z".parse().unwrap(),
                backup: "base_000000010000000000000002_20260102T030000Z".into(),
                target: "end of the archived WAL".into(),
                outcome: RestoreTestOutcome::Passed,
                failed_stage: None,
                error: None,
                restore_seconds: 1.0,
                recovery_seconds: Some(2.0),
                checks_seconds: Some(3.0),
                wal_replayed_bytes: Some(42),
                recovered_to_lsn: Some("0/3000060".into()),
                last_replayed_commit: None,
                timeline: Some(2),
                server_version: Some("15.18".into()),
                checks: vec![CheckResult {
                    name: "connect postgres".into(),
                    outcome: CheckOutcome::Passed,
                    detail: String::new(),
                }],
                pgark_version: "0.1.0".into(),
            };
            record_restore_test(&store, &keys, &record).await.unwrap();
            assert_eq!(last_restore_test(&store, &keys).await.unwrap(), Some(record));
            if keys.data_key.is_some() {
                let err = last_restore_test(&store, &RepoKeys::default()).await.unwrap_err();
                assert_eq!(err.class(), crate::ErrorClass::Integrity, "{err}");
            }
        }
    }
}
