//! The object-store abstraction every pgark repository lives on.
//!
//! A repository is a flat namespace of [`Key`]s holding immutable byte
//! objects. Backends (local filesystem, in-memory for tests, and the cloud
//! stores behind cargo features) implement [`ObjectStore`]; everything above
//! this crate talks to an `Arc<dyn ObjectStore>` and never to a backend.
//!
//! Contracts shared by every backend (checked by the conformance suite in
//! `pgark-testkit`):
//! - Objects are written whole or not at all: no reader ever observes a
//!   partially written object, whatever the writer's fate.
//! - A [`PutMode::Create`] put fails with [`ErrorKind::AlreadyExists`] if the
//!   key exists, and of two racing create-only puts exactly one succeeds.
//! - `delete` of a missing key succeeds (idempotent).
//! - `list` returns every key under the prefix, sorted, whatever pagination
//!   the backend needs underneath.
//! - Errors say whether the object was missing, the failure is worth
//!   retrying, or it is permanent ([`StoreError::is_not_found`],
//!   [`StoreError::is_transient`]).

#[cfg(feature = "azure")]
mod azure;
#[cfg(any(feature = "s3", feature = "azure"))]
mod body;
mod deadline;
mod error;
mod fs;
#[cfg(feature = "gcs")]
mod gcs;
#[cfg(feature = "http")]
// Parts of it only the GCS backend uses.
#[cfg_attr(not(feature = "gcs"), allow(dead_code))]
mod http;
mod key;
mod memory;
#[cfg(feature = "s3")]
mod s3;
mod scratch;
mod upload;

pub use deadline::{format_duration, DeadlineStore};
pub use error::{ErrorKind, Operation, StoreError};
pub use fs::LocalStore;
pub use key::{Key, KeyError};
pub use memory::MemoryStore;
#[cfg(feature = "s3")]
pub use s3::{S3Checksum, S3Credentials, S3Options, S3Sse, S3Store, S3Timeouts};

/// The AWS SDK crates the S3 backend is built on, for
/// [`S3Credentials::Provider`] and [`S3Store::client`].
#[cfg(feature = "s3")]
pub mod aws {
    pub use aws_credential_types as credential_types;
    pub use aws_sdk_s3 as s3;
}
#[cfg(feature = "azure")]
pub use azure::{account_sas, AccountSas, AzureCredentials, AzureOptions, AzureStore};
#[cfg(feature = "gcs")]
pub use gcs::{GcsCredentials, GcsOptions, GcsStore};
pub use upload::{put_stream, UploadOptions};

/// The Blob service REST API version the Azure backend signs account SAS
/// for (`sv`).
#[cfg(feature = "azure")]
pub fn azure_api_version() -> &'static str {
    azure::API_VERSION
}
#[cfg(feature = "http")]
pub use http::{HttpTimeouts, RetryOptions};

/// The prefix part of a `scheme://bucket/prefix` URL as stored: empty, or
/// a valid key followed by `/`.
#[cfg(feature = "http")]
fn http_prefix(url: &str, prefix: &str) -> std::result::Result<String, String> {
    let prefix = prefix.trim_matches('/');
    if prefix.is_empty() {
        return Ok(String::new());
    }
    // The prefix must form valid keys with what follows it.
    Key::new(prefix).map_err(|e| format!("{url:?}: invalid prefix: {}", e.reason))?;
    Ok(format!("{prefix}/"))
}

/// An endpoint URL checked to be `http(s)://host...`, without a trailing
/// `/`; the error says what is wrong with it.
#[cfg(feature = "http")]
fn check_endpoint(endpoint: &str) -> std::result::Result<String, String> {
    let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
    let host = endpoint.split_once("://").map_or("", |(_, rest)| rest);
    if !scheme_ok || host.is_empty() || host.starts_with('/') {
        return Err(format!("{endpoint:?} is not an http:// or https:// URL"));
    }
    Ok(endpoint.trim_end_matches('/').to_owned())
}

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use std::fmt;
use std::time::SystemTime;

/// Result type of every store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What a put does when the key already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PutMode {
    /// Replace an existing object atomically.
    #[default]
    Overwrite,
    /// Fail with [`ErrorKind::AlreadyExists`] if the key exists. Used for the
    /// append-only WAL archive and for duplicate detection.
    Create,
}

/// What a store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: Key,
    /// Size of the stored object in bytes.
    pub size: u64,
    /// When the object was last written, as the store reports it (the
    /// store's clock, not this host's).
    ///
    /// [`ObjectStore::list`] and [`ObjectStore::head`] fill it on every
    /// backend that reports a modification time (all of this crate's:
    /// local directory, memory, S3, GCS and Azure). [`ObjectStore::put`],
    /// [`MultipartUpload::complete`] and [`ObjectStore::get`] may leave it
    /// `None`; wrappers and test doubles that know nothing leave it `None`.
    pub modified: Option<SystemTime>,
}

/// A stream of an object's bytes, in order. The stream ends after the last
/// byte; an error item means the object could not be read whole.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// An object opened for reading.
pub struct GetResult {
    pub meta: ObjectMeta,
    pub stream: ByteStream,
}

impl fmt::Debug for GetResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetResult")
            .field("meta", &self.meta)
            .finish_non_exhaustive()
    }
}

/// A repository backend.
///
/// Usable as `dyn ObjectStore`. No method holds a whole large object in
/// memory: large objects go through [`ObjectStore::put_multipart`] and are
/// read as a [`ByteStream`].
#[async_trait]
pub trait ObjectStore: Send + Sync + fmt::Debug + fmt::Display + 'static {
    /// Stores `data` under `key` in one request.
    ///
    /// Atomic: readers see the old object (or none) until the new one is
    /// complete and durable; a failure leaves the previous state. With
    /// [`PutMode::Create`] it fails with [`ErrorKind::AlreadyExists`] if the
    /// key exists, without touching it. Returns only once the object is
    /// durable.
    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<ObjectMeta>;

    /// Starts an upload in parts, for objects too large to hold in memory.
    ///
    /// Nothing is visible under `key` until [`MultipartUpload::complete`]
    /// succeeds. Dropping or aborting the upload leaves nothing behind under
    /// `key` (a backend may leave invisible scratch data that a later abort
    /// or its own cleanup removes).
    async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn MultipartUpload>>;

    /// Opens `key` for reading. Fails with [`ErrorKind::NotFound`] if the key
    /// does not exist. Read-only, idempotent.
    async fn get(&self, key: &Key) -> Result<GetResult>;

    /// Size of `key`, or [`ErrorKind::NotFound`]. Read-only, idempotent.
    async fn head(&self, key: &Key) -> Result<ObjectMeta>;

    /// Every object whose key starts with `prefix` (plain string prefix, so
    /// `"wal/"` lists the WAL archive), sorted by key. An empty result is not
    /// an error. Read-only, idempotent; not a snapshot if others write
    /// concurrently.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Removes `key`. Idempotent: deleting a missing key succeeds. A failure
    /// leaves the object present or absent, never partial.
    async fn delete(&self, key: &Key) -> Result<()>;

    /// Removes every key of `keys`, as few requests as the backend allows
    /// (S3: `DeleteObjects`, 1000 keys a request); the default sends
    /// [`DELETE_CONCURRENCY`] single deletes at a time. Idempotent: missing
    /// keys are not errors. Not atomic: a failure leaves each key present
    /// or absent, never partial, and the first error is returned.
    async fn delete_many(&self, keys: &[Key]) -> Result<()> {
        use futures::{StreamExt, TryStreamExt};
        // Made up front: a closure in the stream trips the compiler's
        // higher-ranked lifetime check under async_trait's Send bound.
        for chunk in keys.chunks(1000) {
            let deletes: Vec<_> = chunk.iter().map(|k| self.delete(k)).collect();
            futures::stream::iter(deletes)
                .buffer_unordered(DELETE_CONCURRENCY)
                .try_collect::<Vec<()>>()
                .await?;
        }
        Ok(())
    }

    /// What uploads that never finished left in the store, started before
    /// `before`: scratch data no key shows and `list` never returns (a
    /// local repository's `*.pgark-tmp` files, S3's incomplete multipart
    /// uploads). Backends whose service discards such data itself (GCS
    /// resumable sessions and Azure uncommitted blocks, after a week)
    /// return none. Read-only.
    async fn leftovers(&self, before: std::time::SystemTime) -> Result<Vec<Leftover>> {
        let _ = before;
        Ok(Vec::new())
    }

    /// The part size an upload of unknown length should use when its
    /// caller has no reason to pick one: `Some` for a backend where a part
    /// costs no more than a single put (a local directory: parts are writes
    /// to one temporary file), so [`put_stream`] need not hold a whole
    /// object in memory to send it in one request. `None`: the caller's
    /// choice ([`UploadOptions`]'s default).
    fn streaming_part_size(&self) -> Option<usize> {
        None
    }

    /// Removes one leftover found by [`ObjectStore::leftovers`].
    /// Idempotent: one already gone is not an error.
    async fn remove_leftover(&self, leftover: &Leftover) -> Result<()> {
        let _ = leftover;
        Ok(())
    }
}

/// Single deletes in flight at once in [`ObjectStore::delete_many`]'s
/// default implementation.
pub const DELETE_CONCURRENCY: usize = 16;

/// Scratch data of an upload that never finished (see
/// [`ObjectStore::leftovers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leftover {
    /// What it is, for people: the file's path, or the object name and
    /// upload id of an S3 multipart upload.
    pub name: String,
    /// When the upload started (S3) or the file was last written.
    pub since: std::time::SystemTime,
    /// Bytes it holds, when known without further requests.
    pub size: Option<u64>,
    /// The key the upload was for, when the backend tells it (S3).
    pub key: Option<Key>,
    /// What the backend needs to remove it.
    pub(crate) handle: LeftoverHandle,
}

/// How a backend finds a [`Leftover`] again to remove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LeftoverHandle {
    /// A scratch file of a local repository.
    File(std::path::PathBuf),
    /// An incomplete S3 multipart upload: object name and upload id.
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    Multipart { object: String, upload_id: String },
}

/// An upload in progress, created by [`ObjectStore::put_multipart`].
///
/// Parts are appended in order. Parts may have any non-zero size; backends
/// with minimum part sizes buffer internally as needed.
#[async_trait]
pub trait MultipartUpload: Send {
    /// Appends the next part. On error the upload should be aborted.
    async fn put_part(&mut self, data: Bytes) -> Result<()>;

    /// Makes the object visible atomically and durably under its key. With
    /// [`PutMode::Create`], fails with [`ErrorKind::AlreadyExists`] if the key
    /// appeared meanwhile; the upload is then discarded.
    async fn complete(self: Box<Self>) -> Result<ObjectMeta>;

    /// Discards everything uploaded so far. Idempotent.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// Convenience reads built on [`ObjectStore`].
#[async_trait]
pub trait ObjectStoreExt: ObjectStore {
    /// Reads a whole (small) object into memory. Use only for objects known
    /// to be small: manifests, repository metadata.
    async fn get_bytes(&self, key: &Key) -> Result<Bytes> {
        use futures::TryStreamExt;
        let got = self.get(key).await?;
        let chunks: Vec<Bytes> = got.stream.try_collect().await?;
        let mut out = Vec::with_capacity(chunks.iter().map(Bytes::len).sum());
        for c in chunks {
            out.extend_from_slice(&c);
        }
        Ok(Bytes::from(out))
    }

    /// True if `key` exists.
    async fn exists(&self, key: &Key) -> Result<bool> {
        match self.head(key).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl<T: ObjectStore + ?Sized> ObjectStoreExt for T {}
