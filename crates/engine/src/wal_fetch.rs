//! `wal-fetch`: restore one archived WAL file (PostgreSQL's
//! `restore_command`).
//!
//! Contract with PostgreSQL: the destination appears whole and verified, or
//! not at all. A file missing from the archive is [`EngineError::NotFound`]
//! (PostgreSQL asks for files that do not exist as a matter of course);
//! every other failure is a distinct error so the caller can tell "not
//! there" from "could not get it".

use crate::pipe::download_to_file;
use crate::{EngineError, RetryPolicy};
use pgark_catalog::wal_key;
use pgark_pg::{ArchivedFile, WalSegmentName};
use pgark_store::{Key, ObjectStore};
use std::path::Path;
use std::sync::Arc;

/// Settings of [`wal_fetch`].
#[derive(Debug, Clone, Default)]
pub struct WalFetchOptions {
    pub retry: RetryPolicy,
    /// The repository's data key when it is encrypted.
    pub keys: crate::RepoKeys,
    /// The last segment to hand out: a later segment (by number, on any
    /// timeline) is "not found" without asking the repository, so that
    /// recovery ends there (restore-test's end of the archive, fixed when
    /// it starts, however fast the primary goes on archiving).
    pub until: Option<WalSegmentName>,
    /// Refuse a segment holding a `CREATE TABLESPACE` record: its replay
    /// would link the tablespace's original location (restore-test, whose
    /// tablespaces must stay inside its scratch directory).
    pub refuse_tablespace_create: bool,
}

#[derive(Debug, Clone)]
pub struct WalFetchOutcome {
    pub file: ArchivedFile,
    pub key: Key,
    pub original_len: u64,
    pub digest: pgark_codec::ContentDigest,
}

/// Fetches the archived file `name` (as PostgreSQL's `%f`) into `dest`
/// (`%p`, relative to the working directory).
///
/// Idempotent. On failure `dest` is untouched and no temporary file is
/// left beside it.
pub async fn wal_fetch(
    store: Arc<dyn ObjectStore>,
    name: &str,
    dest: &Path,
    opts: &WalFetchOptions,
) -> Result<WalFetchOutcome, EngineError> {
    let file = ArchivedFile::parse(name).map_err(|source| EngineError::InvalidWalFile {
        path: name.into(),
        source,
    })?;
    check_until(&file, name, opts)?;
    let key = wal_key(&file);
    let summary = opts
        .retry
        .run("wal-fetch", || async {
            download_to_file(&*store, &key, dest, opts.keys.data_key.as_ref())
                .await
                .map_err(|e| match e {
                    EngineError::Store { source } if source.is_not_found() => EngineError::NotFound {
                        what: format!("WAL file {name}"),
                        key: key.to_string(),
                    },
                    other => other,
                })
        })
        .await?;
    if opts.refuse_tablespace_create {
        if let ArchivedFile::Segment(seg) = &file {
            if let Err(e) = refuse_tablespace_create(seg, dest) {
                let _ = std::fs::remove_file(dest);
                return Err(e);
            }
        }
    }
    Ok(WalFetchOutcome {
        file,
        key,
        original_len: summary.original_len,
        digest: summary.digest,
    })
}

/// "Not found" for a segment after [`WalFetchOptions::until`].
pub(crate) fn check_until(
    file: &ArchivedFile,
    name: &str,
    opts: &WalFetchOptions,
) -> Result<(), EngineError> {
    if let (Some(until), ArchivedFile::Segment(seg)) = (&opts.until, file) {
        if seg.log > until.log || (seg.log == until.log && seg.seg > until.seg) {
            return Err(EngineError::NotFound {
                what: format!("WAL file {name} (after {until}, where this recovery ends)"),
                key: wal_key(file).to_string(),
            });
        }
    }
    Ok(())
}

/// Reads the segment just restored and refuses it when it creates a
/// tablespace (see [`WalFetchOptions::refuse_tablespace_create`]).
pub(crate) fn refuse_tablespace_create(seg: &WalSegmentName, dest: &Path) -> Result<(), EngineError> {
    let bytes = std::fs::read(dest).map_err(|e| EngineError::local_io("cannot read", dest, e))?;
    let Ok(size) = pgark_pg::WalSegmentSize::new(bytes.len() as u64) else {
        return Ok(());
    };
    let mut reader = pgark_pg::WalReader::new(size);
    if reader.push_segment(seg, &bytes).is_err() {
        return Ok(());
    }
    let scan = reader.finish();
    match scan.tablespace_creates.first() {
        None => Ok(()),
        Some(lsn) => Err(EngineError::Rejected {
            path: seg.to_string().into(),
            reason: format!(
                "it creates a tablespace (CREATE TABLESPACE at {lsn}), made after the backup: replaying it would \
                 use the tablespace's original directory, outside restore-test's scratch directory, and a live \
                 server's files there; test a backup taken after the tablespace was created"
            ),
        }),
    }
}
