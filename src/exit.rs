//! Exit codes: the one place they are decided. docs/09-exit-codes.md
//! mirrors this file; tests check each code.

use pgark_engine::{EngineError, ErrorClass};
use std::process::ExitCode;

/// pgark's exit codes. PostgreSQL reads them: `archive_command` retries on
/// any non-zero code; `restore_command` treats a code up to 125 as "file not
/// available" and a code above 125 as fatal (recovery aborts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// The requested WAL file or backup is not in the repository.
    NotFound = 1,
    /// Bad command line, environment or configuration file; an encryption
    /// key that is missing, wrong, unreadable, or given for an unencrypted
    /// repository.
    Usage = 2,
    /// Input refused: not a WAL file, a name that does not match the
    /// content, WAL of another cluster.
    Rejected = 3,
    /// The archive already holds different content under this name.
    Conflict = 4,
    /// A stored object is damaged: checksum mismatch, truncation, bad format;
    /// an encrypted object or keyring that fails authentication (tampered);
    /// backup-list: a backup's manifest is damaged (after listing them all).
    Integrity = 5,
    /// The repository could not be read or written (after retries).
    Storage = 6,
    /// A local file could not be read or written.
    LocalIo = 7,
    /// PostgreSQL failed or refused: connection, authentication, backup
    /// start or stop, WAL archiving not working.
    Postgres = 8,
    /// Anything else: a bug.
    Internal = 9,
    /// The command did not finish within its time limit
    /// (`--command-timeout`).
    TimedOut = 10,
    /// No repository where `--repo` points (no `repository.json`: a wrong
    /// path or prefix, an unmounted volume, nothing archived yet). Only
    /// wal-push and backup-push create a repository. Not "not found": in
    /// abort mode it is fatal, so recovery does not end at a wrong URL.
    NoRepository = 11,
    /// `status`: the repository was read, and it is not healthy (the
    /// reasons are printed).
    Unhealthy = 12,
    /// `restore-test`: the backup restored and recovered, and a check
    /// failed (each is named).
    CheckFailed = 13,
}

/// With `--abort-on-error`, failures other than "not found" exit with
/// this offset added, so PostgreSQL aborts recovery instead of ending it.
pub const FATAL_OFFSET: u8 = 128;

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

impl Exit {
    /// Every exit code, in order: the help's table is built from this.
    pub const ALL: [Exit; 13] = [
        Exit::NotFound,
        Exit::Usage,
        Exit::Rejected,
        Exit::Conflict,
        Exit::Integrity,
        Exit::Storage,
        Exit::LocalIo,
        Exit::Postgres,
        Exit::Internal,
        Exit::TimedOut,
        Exit::NoRepository,
        Exit::Unhealthy,
        Exit::CheckFailed,
    ];

    /// What the code means, in a few words (the help's exit-code table;
    /// docs/09-exit-codes.md says more).
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::NotFound => "not found: the requested WAL file or backup is not in the repository",
            Exit::Usage => {
                "usage or configuration error: bad flag, environment or configuration file, no \
                 repository given; an encryption key missing, wrong, unreadable or given for an \
                 unencrypted repository"
            }
            Exit::Rejected => {
                "input refused: not a WAL file, a name that does not match the content, WAL of \
                 another cluster, a destination that must not be overwritten"
            }
            Exit::Conflict => "archive conflict: different content is already stored under this name",
            Exit::Integrity => {
                "damaged object: checksum mismatch, truncation, bad format, failed authentication \
                 (tampered)"
            }
            Exit::Storage => {
                "repository failure: the repository could not be read or written (after retries)"
            }
            Exit::LocalIo => "local file failure: a local file could not be read or written",
            Exit::Postgres => {
                "PostgreSQL failed or refused: connection, authentication, backup start or stop, WAL \
                 archiving"
            }
            Exit::Internal => "internal error (a bug)",
            Exit::TimedOut => "timed out: the command did not finish within --command-timeout",
            Exit::NoRepository => {
                "no repository at --repo (no repository.json there); only wal-push and backup-push \
                 create one"
            }
            Exit::Unhealthy => "status: the repository was read and is not healthy",
            Exit::CheckFailed => "restore-test (and backup-push --test): a check failed",
        }
    }

    pub fn for_class(class: ErrorClass) -> Exit {
        match class {
            ErrorClass::NotFound => Exit::NotFound,
            ErrorClass::Rejected => Exit::Rejected,
            ErrorClass::Conflict => Exit::Conflict,
            ErrorClass::Integrity => Exit::Integrity,
            ErrorClass::Storage => Exit::Storage,
            ErrorClass::LocalIo => Exit::LocalIo,
            ErrorClass::Postgres => Exit::Postgres,
            ErrorClass::Configuration => Exit::Usage,
            ErrorClass::TimedOut => Exit::TimedOut,
            ErrorClass::NoRepository => Exit::NoRepository,
            _ => Exit::Internal,
        }
    }

    /// The process exit status, raised above 125 in abort mode.
    pub fn code(self, abort_on_error: bool) -> u8 {
        if abort_on_error && self != Exit::NotFound {
            FATAL_OFFSET + self as u8
        } else {
            self as u8
        }
    }
}

/// A failed command, ready to be reported once.
#[derive(Debug)]
pub struct Failure {
    pub exit: Exit,
    pub abort_on_error: bool,
    /// Print nothing (a WAL file PostgreSQL asked for that does not exist).
    pub quiet: bool,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn from_anyhow(error: anyhow::Error) -> Failure {
        let quiet = error.downcast_ref::<Quiet>().is_some();
        let engine = error
            .downcast_ref::<EngineError>()
            .or_else(|| error.downcast_ref::<Quiet>().map(|q| &q.0));
        let exit = match engine {
            Some(e) => Exit::for_class(e.class()),
            None => match error.downcast_ref::<pgark_store::StoreError>() {
                Some(e) if e.kind() == pgark_store::ErrorKind::DeadlineExceeded => Exit::TimedOut,
                Some(_) => Exit::Storage,
                None if error.downcast_ref::<Unhealthy>().is_some() => Exit::Unhealthy,
                None if error.downcast_ref::<CheckFailed>().is_some() => Exit::CheckFailed,
                None if error.downcast_ref::<crate::config::ConfigError>().is_some() => Exit::Usage,
                None if error.downcast_ref::<crate::cli::help::WriteError>().is_some() => Exit::LocalIo,
                None if error.downcast_ref::<pgark_catalog::CatalogError>().is_some() => Exit::Usage,
                None => Exit::Internal,
            },
        };
        Failure {
            exit,
            abort_on_error: false,
            quiet,
            error,
        }
    }

    /// Prints one line naming the command and the cause; returns the code.
    pub fn report(self, command: &str) -> ExitCode {
        if let Some(Interrupted(signal)) = self.error.downcast_ref::<Interrupted>() {
            eprintln!("pgark {command}: {}", self.error);
            return ExitCode::from(FATAL_OFFSET.saturating_add(*signal as u8));
        }
        if !self.quiet {
            // Engine errors already carry their causes in their message.
            if self.error.is::<EngineError>() || self.error.is::<pgark_store::StoreError>() {
                eprintln!("pgark {command}: {}", self.error);
            } else {
                eprintln!("pgark {command}: {:#}", self.error);
            }
        }
        ExitCode::from(self.exit.code(self.abort_on_error))
    }
}

/// An engine error to report by exit code alone, printing nothing (a WAL
/// file PostgreSQL asked for that is not in the archive).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct Quiet(pub EngineError);

/// A panic is a bug; report it like any failure, with the internal-error
/// code (raised in abort mode, so recovery never ends early on a bug).
pub fn install_panic_hook(command: &'static str, abort_on_error: bool, background: bool) {
    std::panic::set_hook(Box::new(move |info| {
        eprintln!("pgark {command}: internal error: {info}");
        // A background process exits 0 (see cli::is_background).
        let code = if background {
            0
        } else {
            i32::from(Exit::Internal.code(abort_on_error))
        };
        std::process::exit(code);
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_and_abort_mode_is_fatal_for_postgres() {
        let table = [
            (Exit::NotFound, 1, 1),
            (Exit::Usage, 2, 130),
            (Exit::Rejected, 3, 131),
            (Exit::Conflict, 4, 132),
            (Exit::Integrity, 5, 133),
            (Exit::Storage, 6, 134),
            (Exit::LocalIo, 7, 135),
            (Exit::Postgres, 8, 136),
            (Exit::Internal, 9, 137),
            (Exit::TimedOut, 10, 138),
            (Exit::NoRepository, 11, 139),
            (Exit::Unhealthy, 12, 140),
            (Exit::CheckFailed, 13, 141),
        ];
        for (exit, normal, abort) in table {
            assert_eq!(exit.code(false), normal, "{exit:?}");
            assert_eq!(exit.code(true), abort, "{exit:?}");
            // PostgreSQL aborts recovery on exit statuses above 125.
            assert!(exit == Exit::NotFound || exit.code(true) > 125);
            assert!(exit.code(false) <= 125);
        }
    }

    #[test]
    fn no_repository_is_its_own_code_and_not_quiet() {
        let error = pgark_engine::EngineError::NoRepository {
            url: "s3://bucket/prefix".into(),
            reason: "repository.json is missing".into(),
        };
        let failure = Failure::from_anyhow(error.into());
        assert_eq!(failure.exit, Exit::NoRepository);
        assert!(!failure.quiet);
        assert_ne!(failure.exit, Exit::NotFound);
    }
}

/// `status` found the repository not healthy: exit 12, the message says
/// why.
#[derive(Debug, thiserror::Error)]
#[error("not healthy: {0}")]
pub struct Unhealthy(pub String);

/// `restore-test`: a check failed on the recovered cluster: exit 13.
#[derive(Debug, thiserror::Error)]
#[error("a check failed: {0}")]
pub struct CheckFailed(pub String);

/// The command was interrupted by a signal (its number); it exits
/// 128 + that number, as a shell reports it, after cleaning up.
#[derive(Debug, thiserror::Error)]
#[error("interrupted by signal {0}; the scratch server, if started, was stopped")]
pub struct Interrupted(pub i32);
