use std::path::PathBuf;

/// What kind of failure a [`ServerError`] is; the binary maps each to an
/// exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerErrorKind {
    /// The host cannot run the test as asked: no binaries of the right
    /// version, no such account, a path the account cannot reach.
    Setup,
    /// A local file or process operation failed.
    Io,
    /// PostgreSQL did not start, or stopped before recovery ended.
    Postgres,
    /// Recovery did not end within the time allowed.
    TimedOut,
}

/// Why a scratch server could not be found, started, waited for or
/// checked. Every variant names the program, file or account involved.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "no PostgreSQL {major} server programs found (searched {searched}); install PostgreSQL {major}'s \
         server package on this host or give --pg-bin DIR"
    )]
    NoBinaries { major: u32, searched: String },

    #[error("--pg-bin {dir}: {reason}")]
    BadBinDir { dir: PathBuf, reason: String },

    #[error("{0}")]
    Account(String),

    #[error("{account} cannot reach {path}: {reason}")]
    Unreachable {
        account: String,
        path: PathBuf,
        reason: String,
    },

    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("PostgreSQL {what}; the end of its log ({log}):\n{tail}")]
    Postgres {
        what: String,
        log: PathBuf,
        tail: String,
    },

    #[error("the checks did not finish within {limit:?} (--timeout); the server was stopped")]
    ChecksTimedOut { limit: std::time::Duration },

    #[error("recovery did not end within {limit:?} (--timeout); the end of the server log ({log}):\n{tail}")]
    TimedOut {
        limit: std::time::Duration,
        log: PathBuf,
        tail: String,
    },
}

impl ServerError {
    pub fn kind(&self) -> ServerErrorKind {
        match self {
            ServerError::NoBinaries { .. }
            | ServerError::BadBinDir { .. }
            | ServerError::Account(_)
            | ServerError::Unreachable { .. } => ServerErrorKind::Setup,
            ServerError::Io { .. } => ServerErrorKind::Io,
            ServerError::Postgres { .. } => ServerErrorKind::Postgres,
            ServerError::TimedOut { .. } | ServerError::ChecksTimedOut { .. } => ServerErrorKind::TimedOut,
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ServerError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
