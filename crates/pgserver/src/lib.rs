//! A scratch PostgreSQL server on a data directory pgark restored: the
//! part of `pgark restore-test` that runs PostgreSQL.
//!
//! - [`bins`] finds the programs of the backup's major version.
//! - [`account`] resolves the unprivileged account PostgreSQL runs as when
//!   pgark runs as root, and checks it can reach what it needs.
//! - [`server`] starts `postgres` on the directory, listening on a Unix
//!   socket in a private directory only, waits until recovery has ended,
//!   and stops it; it never leaves the server running (see its docs).
//! - [`checks`] runs the checks on the recovered server.
//!
//! Nothing here touches a repository: the server's `restore_command` is
//! given by the caller.

pub mod account;
pub mod bins;
pub mod checks;
mod error;
pub mod server;

pub use account::Account;
pub use bins::PgBinaries;
pub use checks::{parse_check_sql, Check, CheckStatus, SqlCheck};
pub use error::{ServerError, ServerErrorKind};
pub use server::{Recovered, Server, ServerSpec, PROTECTED_SETTINGS};
