use pgark_catalog::CatalogError;
use pgark_codec::CodecError;
use pgark_pg::PgError;
use pgark_store::StoreError;
use std::path::PathBuf;

/// What kind of failure an [`EngineError`] is. The binary maps each class
/// to one documented exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The requested WAL file or backup does not exist in the repository.
    NotFound,
    /// The input was refused: not a WAL file, wrong name, wrong cluster.
    Rejected,
    /// The archive already holds different content under the same name.
    Conflict,
    /// A stored object failed verification (corrupt, truncated, wrong checksum).
    Integrity,
    /// The repository could not be read or written.
    Storage,
    /// A local file could not be read or written.
    LocalIo,
    /// PostgreSQL refused or failed: connection, backup start or stop, WAL
    /// archiving not working.
    Postgres,
    /// A bug or an unexpected state.
    Internal,
    /// The key given does not fit the repository: missing, wrong, or given
    /// for an unencrypted repository; or a key source that cannot be read.
    Configuration,
    /// The command's time limit ran out.
    TimedOut,
    /// There is no repository where the command looked: nothing identifies
    /// one there (its `repository.json` is missing). Only the commands that
    /// write (wal-push, backup-push) create a repository.
    NoRepository,
}

/// Why a command failed. Every variant names the object or file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error("{what} not found in the repository ({key})")]
    NotFound { what: String, key: String },

    /// A reading command found no repository at `url`; `reason` says what
    /// was missing (never a cause that is a failure to read).
    #[error(
        "no pgark repository at {url}: {reason} (a wrong --repo, an unmounted volume, or nothing \
         archived yet?)"
    )]
    NoRepository { url: String, reason: String },

    #[error("refusing {path}: {source}")]
    InvalidWalFile {
        path: PathBuf,
        #[source]
        source: PgError,
    },

    #[error("refusing {path}: {reason}")]
    Rejected { path: PathBuf, reason: String },

    /// A request refused for what the repository holds (deleting a
    /// backup that kept deltas depend on, or a permanent one).
    #[error("refusing to {action}: {reason}")]
    Refused { action: String, reason: String },

    #[error("refusing {path}: {source}")]
    WrongCluster {
        path: PathBuf,
        #[source]
        source: CatalogError,
    },

    #[error(
        "{name} is already archived with different content (archived {archived}, this file \
         {local}); the archive is append-only and was not changed"
    )]
    Conflict {
        name: String,
        archived: String,
        local: String,
    },

    /// A create-only write met an object of its own key with other
    /// content (a retried backup part whose earlier attempt was stored
    /// although it reported failure, from files that changed since).
    #[error(
        "{key} already exists with different content (stored {stored}, this attempt {written}); \
         it was not changed"
    )]
    ObjectConflict {
        key: String,
        stored: String,
        written: String,
    },

    #[error("stored object {key} is damaged: {source}")]
    Integrity {
        key: String,
        #[source]
        source: CodecError,
    },

    #[error("repository metadata is unusable: {source}")]
    Catalog {
        #[source]
        source: CatalogError,
    },

    #[error("{source}")]
    Store {
        #[from]
        source: StoreError,
    },

    #[error("{action} {path}: {source}")]
    LocalIo {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{source}")]
    PgClient {
        #[from]
        source: pgark_pgclient::PgClientError,
    },

    #[error("{what}: {message}")]
    Postgres { what: String, message: String },

    #[error(
        "WAL segment {segment} needed by this backup is not in the repository after {waited:.0?}; {detail}"
    )]
    ArchiveWait {
        segment: String,
        detail: String,
        waited: std::time::Duration,
    },

    /// The backup completed, but pages failed their data checksum (with
    /// `--fail-on-corrupt-pages`).
    #[error(
        "backup {backup} is complete, but {pages} data page(s) in {files} file(s) failed their checksum \
         (first: {first}); see `pgark backup-list --detail`"
    )]
    CorruptPages {
        backup: String,
        pages: usize,
        files: usize,
        first: String,
    },

    #[error("internal error: {0}")]
    Internal(String),

    /// Recovery could not replay the whole archive: WAL missing or invalid
    /// before its end.
    #[error("{0}")]
    IncompleteArchive(String),

    /// The scratch server of a restore test: not found, not started, not
    /// recovered in time.
    #[error("{source}")]
    Server {
        #[from]
        source: pgark_pgserver::ServerError,
    },

    /// An encryption key problem (missing, wrong, unusable) or a damaged
    /// keyring. Never carries key material.
    #[error("{source}")]
    Key {
        #[from]
        source: pgark_crypto::CryptoError,
    },
}

impl EngineError {
    /// The error `--fail-on-corrupt-pages` reports for a completed backup
    /// that found corrupt pages; `None` when it found none.
    pub fn corrupt_pages(manifest: &pgark_catalog::BackupManifest) -> Option<EngineError> {
        let first = manifest.corrupt_pages.first()?;
        Some(EngineError::CorruptPages {
            backup: manifest.name.to_string(),
            pages: manifest.corrupt_pages.iter().map(|c| c.blocks.len()).sum(),
            files: manifest.corrupt_pages.len(),
            first: format!(
                "{} block {}",
                first.path,
                first.blocks.first().copied().unwrap_or(0)
            ),
        })
    }

    pub fn class(&self) -> ErrorClass {
        match self {
            EngineError::NotFound { .. } => ErrorClass::NotFound,
            EngineError::NoRepository { .. } => ErrorClass::NoRepository,
            EngineError::InvalidWalFile { .. }
            | EngineError::Rejected { .. }
            | EngineError::WrongCluster { .. }
            | EngineError::Refused { .. } => ErrorClass::Rejected,
            EngineError::Conflict { .. } | EngineError::ObjectConflict { .. } => ErrorClass::Conflict,
            EngineError::Integrity { .. }
            | EngineError::Catalog { .. }
            | EngineError::CorruptPages { .. }
            | EngineError::IncompleteArchive(_) => ErrorClass::Integrity,
            EngineError::Store { source } if source.kind() == pgark_store::ErrorKind::DeadlineExceeded => {
                ErrorClass::TimedOut
            }
            EngineError::Store { .. } => ErrorClass::Storage,
            EngineError::LocalIo { .. } => ErrorClass::LocalIo,
            EngineError::PgClient { .. } | EngineError::Postgres { .. } | EngineError::ArchiveWait { .. } => {
                ErrorClass::Postgres
            }
            EngineError::Internal(_) => ErrorClass::Internal,
            EngineError::Server { source } => match source.kind() {
                pgark_pgserver::ServerErrorKind::Setup => ErrorClass::Configuration,
                pgark_pgserver::ServerErrorKind::Io => ErrorClass::LocalIo,
                pgark_pgserver::ServerErrorKind::Postgres => ErrorClass::Postgres,
                pgark_pgserver::ServerErrorKind::TimedOut => ErrorClass::TimedOut,
            },
            EngineError::Key { source } => match source {
                pgark_crypto::CryptoError::Store(s)
                    if s.kind() == pgark_store::ErrorKind::DeadlineExceeded =>
                {
                    ErrorClass::TimedOut
                }
                pgark_crypto::CryptoError::Store(_) => ErrorClass::Storage,
                pgark_crypto::CryptoError::Io(_) => ErrorClass::LocalIo,
                e if e.is_integrity() => ErrorClass::Integrity,
                _ => ErrorClass::Configuration,
            },
        }
    }

    /// Worth running the whole operation again.
    pub fn is_transient(&self) -> bool {
        match self {
            EngineError::Store { source } => source.is_transient(),
            EngineError::Key {
                source: pgark_crypto::CryptoError::Store(source),
            } => source.is_transient(),
            _ => false,
        }
    }

    pub(crate) fn local_io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::LocalIo {
            action,
            path: path.into(),
            source,
        }
    }
}
