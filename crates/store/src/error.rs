use std::fmt;

/// What kind of failure a [`StoreError`] is; decides retry and exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The object (or container) does not exist.
    NotFound,
    /// A create-only put met an existing object.
    AlreadyExists,
    /// Worth retrying: timeouts, throttling, 5xx, connection resets.
    Transient,
    /// Retrying will not help: permissions, bad credentials, bad requests,
    /// full disks, corrupt local state.
    Permanent,
    /// The command's time limit ran out (see [`crate::DeadlineStore`]); not
    /// retried.
    DeadlineExceeded,
}

/// The store operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Operation {
    Put,
    PutPart,
    Complete,
    Abort,
    Get,
    Read,
    Head,
    List,
    Delete,
    Open,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Operation::Put => "put",
            Operation::PutPart => "upload part",
            Operation::Complete => "complete upload",
            Operation::Abort => "abort upload",
            Operation::Get => "get",
            Operation::Read => "read",
            Operation::Head => "head",
            Operation::List => "list",
            Operation::Delete => "delete",
            Operation::Open => "open repository",
        };
        f.write_str(s)
    }
}

/// A failed store operation: what was attempted, on which object, in which
/// store, and why.
#[derive(Debug, thiserror::Error)]
#[error("{op} {target} in {store}: {message}")]
pub struct StoreError {
    kind: ErrorKind,
    op: Operation,
    target: String,
    store: String,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// A new error. `store` is the store's display form (`file:///repo`),
    /// `target` the key or prefix involved.
    pub fn new(
        kind: ErrorKind,
        op: Operation,
        store: impl fmt::Display,
        target: impl fmt::Display,
        message: impl Into<String>,
    ) -> Self {
        StoreError {
            kind,
            op,
            target: target.to_string(),
            store: store.to_string(),
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Classifies an I/O error from a local filesystem operation.
    pub fn from_io(
        op: Operation,
        store: impl fmt::Display,
        target: impl fmt::Display,
        err: std::io::Error,
    ) -> Self {
        use std::io::ErrorKind as K;
        let kind = match err.kind() {
            K::NotFound => ErrorKind::NotFound,
            K::AlreadyExists => ErrorKind::AlreadyExists,
            K::Interrupted | K::TimedOut | K::WouldBlock | K::ConnectionReset | K::ConnectionAborted => {
                ErrorKind::Transient
            }
            _ => ErrorKind::Permanent,
        };
        let message = err.to_string();
        StoreError::new(kind, op, store, target, message).with_source(err)
    }

    /// What went wrong, without the operation and the target.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn operation(&self) -> Operation {
        self.op
    }
    /// The key or prefix the operation was about.
    pub fn target(&self) -> &str {
        &self.target
    }
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
    pub fn is_already_exists(&self) -> bool {
        self.kind == ErrorKind::AlreadyExists
    }
    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}
