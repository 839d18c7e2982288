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
use pgark_pg::ArchivedFile;
use pgark_store::{Key, ObjectStore};
use std::path::Path;
use std::sync::Arc;

/// Settings of [`wal_fetch`].
#[derive(Debug, Clone, Default)]
pub struct WalFetchOptions {
    pub retry: RetryPolicy,
    /// The repository's data key when it is encrypted.
    pub keys: crate::RepoKeys,
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
    Ok(WalFetchOutcome {
        file,
        key,
        original_len: summary.original_len,
        digest: summary.digest,
    })
}
