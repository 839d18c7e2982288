//! `pgark restore-test`: restore a backup into a scratch directory, run
//! PostgreSQL on it until recovery ends, check it, stop it, remove it, and
//! record the result as `restore-test/latest`.

mod record;

pub use record::{last_restore_test, record_restore_test};
