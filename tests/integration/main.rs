//! pgark's integration tests, as one test binary: the `pgark` executable
//! driven from outside, against fixtures and against real PostgreSQL
//! servers started by `pgark_testkit::pg`.

mod archive_ahead;
mod azure;
mod backup;
mod backup_faults;
mod backup_topology;
mod common;
mod delta;
mod encryption;
mod gcs;
mod help;
mod kills;
mod prefetch;
mod restore_safety;
mod restore_test;
mod retention;
mod s3;
mod status;
mod tls;
mod verify;
mod versions;
mod wal_archive;
mod wal_cli;
