//! pgark's commands as library functions.
//!
//! Each public function here is one command (`wal_push`, `wal_fetch`, ...)
//! taking an `Arc<dyn ObjectStore>` and an options struct. The binary is thin
//! glue over these; tests call them directly with an in-memory or local
//! store. CPU work (compression, hashing) runs on tokio's blocking pool;
//! I/O stays on the runtime; every queue between them is bounded.

mod archive_ahead;
mod backup_push;
mod delta_push;
mod error;
mod keys;
mod manifest_io;
mod part_file;
mod pipe;
mod prefetch;
mod repository;
mod restore;
mod restore_test;
mod retention;
mod retry;
mod scan;
mod spool_lock;
mod status;
mod timelines;
mod verify;
mod verify_wal;
mod wal_fetch;
mod wal_index;
mod wal_push;

pub use archive_ahead::{
    adopt_archiver_lock, archived_ahead, pg_wal_of, run_archiver, wal_push_ahead, ArchiveAhead,
    StartArchiver, ARCHIVER_IDLE, SPOOL_DIR,
};
pub use backup_push::{backup_push, BackupPushOptions, ProgressSink};
pub use delta_push::{DeltaFrom, DeltaOptions};
pub use error::{EngineError, ErrorClass};
pub use keys::RepoKeys;
pub use manifest_io::{
    list_backups, list_backups_detailed, list_backups_marked, load_manifest, permanent_marks, ListedBackup,
};
pub use pgark_catalog::{
    CheckOutcome, CheckResult, RestoreTestOutcome, RestoreTestRecord, RestoreTestStage, VerifiedBackup,
    VerifyOutcome, VerifyRecord,
};
pub use pgark_pgserver::{parse_check_sql, SqlCheck, PROTECTED_SETTINGS};
pub use prefetch::{run_prefetcher, FetchSpool, PREFETCH_DIR, PREFETCH_IDLE};
pub use repository::{ensure_repository_meta, load_repository_meta, require_repository};
pub use restore::{
    backup_fetch, parse_target_time, select_backup, ArchiveMode, BackupFetchOptions, BackupFetchOutcome,
    BackupSelector, RecoveryOptions, RecoveryTarget,
};
pub use restore_test::{
    describe_target, last_restore_test, record_restore_test, restore_test, RestoreTestOptions,
    RestoreTestReport,
};
pub use retention::{
    apply_plan, apply_wal_plan, backup_inventory, cutoff_backup, delete_garbage, format_age, garbage,
    mark_permanent, plan_delete_backup, plan_delete_one, plan_retention, plan_wal_deletion,
    remove_unfinished_uploads, started_in, unfinished_uploads, wal_file_expires, BackupInventory,
    DeleteOutcome, DeleteRefusal, ExpireReason, Expired, KeepReason, Kept, RetentionCandidate, RetentionPlan,
    RetentionPolicy, WalCutoff, WalPlan, DEFAULT_GARBAGE_AGE, DELETE_CONCURRENCY,
};
pub use retry::RetryPolicy;
pub use spool_lock::INHERITED_LOCK_FD;
pub use status::{status, ArchivedSegment, ArchiverView, LastTransaction, Status, COMMIT_SEARCH_SEGMENTS};
pub use timelines::{diverged_timelines, Divergence};
pub use verify::{
    last_verify, record_verify, verify, verify_record, BackupVerdict, VerifyOptions, VerifyTarget,
};
pub use wal_fetch::{wal_fetch, WalFetchOptions, WalFetchOutcome};
pub use wal_push::{wal_push, WalPushOptions, WalPushOutcome, WalPushStatus};
