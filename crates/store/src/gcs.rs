//! Repositories in Google Cloud Storage, [`GcsStore`] (cargo feature
//! `gcs`).
//!
//! # Layout
//!
//! The repository `gs://bucket/some/prefix` keeps the object under key `a/b`
//! as the GCS object `some/prefix/a/b` in `bucket`; `gs://bucket` uses the
//! whole bucket. Objects whose names are not valid [`Key`]s are ignored by
//! `list`.
//!
//! # Two ways to the same bucket
//!
//! Objects are read and written with Google's `google-cloud-storage` crate
//! (its `Storage` client: `read_object`, `write_object`), which sends them
//! over the GCS JSON API's media, multipart and resumable endpoints. What
//! that client cannot do over HTTP is sent here as documented GCS JSON API
//! requests through the shared reqwest client of [`crate::http`]:
//! `objects.list`, `objects.delete`, `objects.get` for metadata (`head`)
//! and `buckets.get` (is the bucket there after a 404?). In
//! `google-cloud-storage` 1.21 those calls exist only in the
//! `StorageControl` client, whose transport is gRPC, which the local
//! emulator (fake-gcs-server) does not speak. Both paths share one set of
//! credentials from `google-cloud-auth` (one token cache), one bucket check
//! and one error vocabulary.
//!
//! Time limits: the crate's HTTP calls have retry and backoff policies but
//! no per-attempt timeout (the `Storage` builder offers none; its read and
//! upload retry loops ignore the remaining time, see "TODO(#2044)" in its
//! `perform_upload/unbuffered.rs`) and its reqwest client has no connect
//! timeout. Each call into the crate is therefore bounded here as a whole
//! (see [`GcsStore::call_limit`]), each chunk of a streamed read by the idle
//! limit, and the crate's policies are set from [`RetryOptions`]: transient
//! failures only (408, 429, 5xx, I/O and connection errors), at most
//! `attempts` attempts, none started after `total`, exponential backoff from
//! `base_backoff`.
//!
//! The crate sends every request with a `Host` header without the port of
//! an endpoint override (`gaxi::host::header` keeps only the host name).
//! Real GCS does not mind; fake-gcs-server 1.54 builds the session URI of a
//! resumable upload from `Host` rather than from its `-external-url` (asked
//! on port 45111 with `Host: 127.0.0.1` it answers `Location:
//! http://127.0.0.1/upload/storage/v1/b/…&upload_id=…`), so the crate then
//! sends the upload's data to port 80. With an emulator, multipart uploads
//! therefore work only on the scheme's default port: the tests run
//! fake-gcs-server on port 80, and errors of resumable uploads through an
//! endpoint with another port say why. No builder option of the crate sets
//! `Host` (custom headers cannot override it).
//!
//! # Guarantees and how they are kept
//!
//! - **Atomic puts.** A GCS object appears only once its upload (single
//!   request, or the last request of a resumable upload) has completed.
//! - **Create-only puts** send `ifGenerationMatch=0`
//!   (`set_if_generation_match(0)`), which GCS checks atomically when the
//!   object would be created (`412 Precondition Failed`, reported as
//!   [`ErrorKind::AlreadyExists`]); of racing create-only puts exactly one
//!   wins. Single-request puts are multipart (`uploadType=multipart`)
//!   uploads carrying their CRC32C in the metadata part, which GCS checks
//!   (left to the crate, the checksum would travel in a third part, which
//!   fake-gcs-server stores as part of the object). A create-only
//!   resumable upload also looks for the object just
//!   before its last request: fake-gcs-server, the emulator the tests use,
//!   checks the precondition on multipart uploads but ignores it on
//!   resumable ones, where only that look (not atomic) protects it.
//! - **Multipart uploads** are resumable uploads fed part by part: the
//!   chunk size is the first part's size cut to GCS's 256 KiB granularity;
//!   each `put_part` hands the crate its whole chunks and returns once GCS
//!   has persisted them, the remainder waits for the next part, so an
//!   upload holds about one part in memory. A chunk whose request fails
//!   transiently is re-sent by the crate from its buffer from the offset
//!   GCS reports. An object that fits in one part is sent with a single
//!   request instead. Abort and drop stop the upload without finishing it;
//!   the crate does not expose the session URI to cancel, so GCS discards
//!   the unfinished session after a week (it is never visible).
//!   fake-gcs-server finishes a resumable upload when its status is
//!   queried, which the crate does only after a failed chunk.
//! - **Deletes** are idempotent (a 404 from a delete is success once the
//!   bucket is known to exist).
//! - **Reads** stream the object; the crate checks the CRC32C of a whole
//!   read and resumes an interrupted one from its offset, and a stream that
//!   ends before the object's size is an error here, never a short object.
//!   The crate takes the size from `x-goog-stored-content-length`, which
//!   fake-gcs-server does not send; a size of 0 is therefore checked with
//!   `objects.get` (same generation) before the read goes on.
//!
//! # Errors
//!
//! 404 is [`ErrorKind::NotFound`] for objects; whether the bucket exists is
//! asked once after the first 404, and a missing bucket is a permanent
//! error naming it. 412 is [`ErrorKind::AlreadyExists`]; 408, 429 and 5xx,
//! timeouts and connection failures are transient; 401, 403 and missing or
//! unusable credentials are permanent. Messages name the bucket, the JSON
//! API call, the HTTP status and GCS's message, and where the credentials
//! came from (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's application
//! default credentials file, or the metadata server).
//!
//! # Requests
//!
//! Every JSON API request has the time limits of [`HttpTimeouts`] and is
//! retried per [`RetryOptions`] (exponential backoff with jitter, bounded
//! attempts and total time); what still fails after that is reported as
//! transient so that callers may retry the whole operation.

use crate::http::{encode_component, error_body, Chunks, HttpClient, SendError};
use crate::{
    ErrorKind, GetResult, HttpTimeouts, Key, MultipartUpload, ObjectMeta, ObjectStore, Operation, PutMode,
    Result, RetryOptions, StoreError,
};
use async_trait::async_trait;
use bytes::Bytes;
use google_cloud_auth::credentials::{AccessTokenCredentials, Credentials};
use google_cloud_gax::retry_policy::RetryPolicyExt;
use google_cloud_storage::client::Storage;
use google_cloud_storage::read_resume_policy::{ReadResumePolicyExt, Recommended};
use google_cloud_storage::streaming_source::{Seek, SizeHint, StreamingSource};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use std::time::SystemTime;
use tokio::sync::{mpsc, watch, OnceCell};

/// The GCS JSON API endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// Resumable upload chunks must be multiples of this (except the last).
pub const CHUNK_GRANULARITY: usize = 256 << 10;

/// The OAuth scope requests are authorised for.
const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

/// Where requests get their credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum GcsCredentials {
    /// Application default credentials: the JSON file named by
    /// `GOOGLE_APPLICATION_CREDENTIALS` (service account key, workload
    /// identity federation, impersonation, user credentials), else gcloud's
    /// `~/.config/gcloud/application_default_credentials.json`, else the
    /// metadata server (Compute Engine, GKE workload identity, Cloud Run).
    #[default]
    Default,
    /// No credentials at all: for emulators such as fake-gcs-server.
    Anonymous,
}

/// Everything a [`GcsStore`] needs to know.
#[derive(Debug, Clone)]
pub struct GcsOptions {
    pub bucket: String,
    /// Prefix of every object name: empty, or ending with `/`.
    pub prefix: String,
    /// Base URL of the JSON API (`http://127.0.0.1:4443` for an emulator);
    /// `None` for [`DEFAULT_ENDPOINT`].
    pub endpoint: Option<String>,
    pub credentials: GcsCredentials,
    pub timeouts: HttpTimeouts,
    pub retry: RetryOptions,
    /// Objects asked for per `objects.list` page (GCS allows up to 1000).
    pub list_page_size: u32,
}

impl GcsOptions {
    /// Options for the repository URL `gs://bucket[/prefix]`, with defaults
    /// for everything else.
    pub fn from_url(url: &str) -> Result<GcsOptions, String> {
        let rest = url
            .strip_prefix("gs://")
            .ok_or_else(|| format!("{url:?} is not a gs://bucket/prefix URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url:?} names no bucket (gs://bucket/prefix)"));
        }
        let valid_bucket = (3..=222).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        if !valid_bucket {
            return Err(format!("{url:?}: {bucket:?} is not a valid bucket name"));
        }
        Ok(GcsOptions {
            bucket: bucket.to_owned(),
            prefix: crate::http_prefix(url, prefix)?,
            endpoint: None,
            credentials: GcsCredentials::Default,
            timeouts: HttpTimeouts::default(),
            retry: RetryOptions::default(),
            list_page_size: 1000,
        })
    }
}

/// A repository in a GCS bucket. Cheap to clone; clones share one client.
///
/// Credentials are looked up on the first request, so [`GcsStore::new`]
/// does no I/O.
#[derive(Clone)]
pub struct GcsStore {
    inner: Arc<Inner>,
}

struct Inner {
    opts: GcsOptions,
    url: String,
    endpoint: String,
    http: HttpClient,
    credentials: OnceCell<Result<Option<AccessTokenCredentials>, String>>,
    /// The `google-cloud-storage` client, made on first use.
    client: OnceCell<Storage>,
    /// The bucket answered a request: a 404 is a missing object.
    bucket_seen: AtomicBool,
}

impl GcsStore {
    /// A store for `opts`. Fails with a permanent [`Operation::Open`] error
    /// if an option is invalid.
    pub fn new(opts: GcsOptions) -> Result<GcsStore> {
        let url = if opts.prefix.is_empty() {
            format!("gs://{}", opts.bucket)
        } else {
            format!("gs://{}/{}", opts.bucket, opts.prefix.trim_end_matches('/'))
        };
        let invalid =
            |message: String| StoreError::new(ErrorKind::Permanent, Operation::Open, &url, "", message);
        let endpoint = match &opts.endpoint {
            Some(e) => crate::check_endpoint(e).map_err(|m| invalid(format!("the GCS endpoint {m}")))?,
            None => DEFAULT_ENDPOINT.to_owned(),
        };
        if opts.retry.attempts == 0 {
            return Err(invalid("attempts per request must be at least 1".into()));
        }
        if !opts.prefix.is_empty() && !opts.prefix.ends_with('/') {
            return Err(invalid(format!("the prefix {:?} must end with '/'", opts.prefix)));
        }
        let http = HttpClient::new(opts.timeouts, opts.retry).map_err(invalid)?;
        Ok(GcsStore {
            inner: Arc::new(Inner {
                url,
                endpoint,
                http,
                credentials: OnceCell::new(),
                client: OnceCell::new(),
                bucket_seen: AtomicBool::new(false),
                opts,
            }),
        })
    }

    pub fn options(&self) -> &GcsOptions {
        &self.inner.opts
    }

    fn bucket(&self) -> &str {
        &self.inner.opts.bucket
    }

    /// The GCS object name of `key`.
    fn object_name(&self, key: &Key) -> String {
        format!("{}{}", self.inner.opts.prefix, key.as_str())
    }

    /// `…/storage/v1/b/<bucket>/o/<object>`.
    fn object_url(&self, key: &Key) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.inner.endpoint,
            encode_component(self.bucket()),
            encode_component(&self.object_name(key))
        )
    }

    /// The bucket as the `google-cloud-storage` crate names it.
    fn bucket_path(&self) -> String {
        format!("projects/_/buckets/{}", self.bucket())
    }

    /// Where the credentials come from, for messages.
    fn credentials_source(&self) -> String {
        match self.inner.opts.credentials {
            GcsCredentials::Anonymous => "nowhere (anonymous requests)".into(),
            GcsCredentials::Default => match std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS") {
                Some(p) if !p.is_empty() => {
                    format!("GOOGLE_APPLICATION_CREDENTIALS ({})", PathBuf::from(p).display())
                }
                _ => match well_known_adc_file() {
                    Some(p) if p.is_file() => {
                        format!("gcloud's application default credentials ({})", p.display())
                    }
                    _ => "the metadata server (no GOOGLE_APPLICATION_CREDENTIALS, no gcloud application \
                          default credentials file)"
                        .into(),
                },
            },
        }
    }

    fn endpoint_note(&self) -> String {
        match &self.inner.opts.endpoint {
            Some(e) => format!(" (endpoint {e})"),
            None => String::new(),
        }
    }

    /// The `Authorization` header value, or `None` for anonymous requests.
    async fn authorization(
        &self,
        op: Operation,
        target: &(dyn fmt::Display + Sync),
    ) -> Result<Option<String>> {
        let creds = self
            .inner
            .credentials
            .get_or_init(|| async {
                match self.inner.opts.credentials {
                    GcsCredentials::Anonymous => Ok(None),
                    GcsCredentials::Default => google_cloud_auth::credentials::Builder::default()
                        .with_scopes([SCOPE])
                        // Known, so that making the storage client does not
                        // ask the metadata server for it.
                        .with_universe_domain("googleapis.com")
                        .build_access_token_credentials()
                        .map(Some)
                        .map_err(|e| crate::http::error_chain(&e)),
                }
            })
            .await;
        let no_credentials = |detail: String| {
            StoreError::new(
                ErrorKind::Permanent,
                op,
                self,
                target,
                format!(
                    "no usable Google Cloud credentials for bucket {:?}: {detail}; credentials from {}; set \
                     GOOGLE_APPLICATION_CREDENTIALS to a credentials file, run on Google Cloud with a \
                     service account, or use --gcs-no-auth for an emulator",
                    self.bucket(),
                    self.credentials_source()
                ),
            )
        };
        match creds {
            Ok(None) => Ok(None),
            Ok(Some(c)) => {
                let limit = self.inner.http.timeouts.first_byte;
                match tokio::time::timeout(limit, c.access_token()).await {
                    Ok(Ok(token)) => Ok(Some(format!("Bearer {}", token.token))),
                    Ok(Err(e)) if e.is_transient() => Err(StoreError::new(
                        ErrorKind::Transient,
                        op,
                        self,
                        target,
                        format!(
                            "getting an access token for bucket {:?} failed: {}; credentials from {} (set \
                             GOOGLE_APPLICATION_CREDENTIALS, run on Google Cloud with a service account, or \
                             use --gcs-no-auth for an emulator)",
                            self.bucket(),
                            crate::http::error_chain(&e),
                            self.credentials_source()
                        ),
                    )),
                    Ok(Err(e)) => Err(no_credentials(crate::http::error_chain(&e))),
                    Err(_) => Err(StoreError::new(
                        ErrorKind::Transient,
                        op,
                        self,
                        target,
                        format!(
                            "no access token for bucket {:?} within {limit:?}; credentials from {}",
                            self.bucket(),
                            self.credentials_source()
                        ),
                    )),
                }
            }
            Err(detail) => Err(no_credentials(detail.clone())),
        }
    }

    /// Sends what `make` builds with the credentials, retrying transient
    /// failures.
    async fn send(
        &self,
        op: Operation,
        api: &'static str,
        target: &(dyn fmt::Display + Sync),
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let auth = self.authorization(op, target).await?;
        self.inner
            .http
            .send(|| {
                let req = make();
                match &auth {
                    Some(a) => req.header("authorization", a),
                    None => req,
                }
            })
            .await
            .map_err(|e| self.send_error(op, api, target, e))
    }

    fn send_error(
        &self,
        op: Operation,
        api: &str,
        target: &(dyn fmt::Display + Sync),
        err: SendError,
    ) -> StoreError {
        StoreError::new(
            ErrorKind::Transient,
            op,
            self,
            target,
            format!(
                "{api} on bucket {:?} failed: {err}{}",
                self.bucket(),
                self.endpoint_note()
            ),
        )
        .with_source(err)
    }

    /// The error for a response that is not a success (404 and 412 are
    /// handled by the callers that expect them).
    async fn status_error(
        &self,
        op: Operation,
        api: &str,
        target: &(dyn fmt::Display + Sync),
        resp: reqwest::Response,
    ) -> StoreError {
        let status = resp.status().as_u16();
        let body = error_body(resp).await;
        let (kind, message) = self.status_message(api, status, &body);
        StoreError::new(kind, op, self, target, message)
    }

    /// What an HTTP status (with its body) from `api` means.
    fn status_message(&self, api: &str, status: u16, body: &str) -> (ErrorKind, String) {
        let detail = gcs_message(body);
        let bucket = self.bucket();
        match status {
            404 => (
                ErrorKind::Permanent,
                format!("{api}: bucket {bucket:?} does not exist{}", self.endpoint_note()),
            ),
            412 => (ErrorKind::AlreadyExists, "object already exists".to_owned()),
            401 | 403 => (
                ErrorKind::Permanent,
                format!(
                    "{api}: access to bucket {bucket:?} denied (HTTP {status}{detail}); credentials from {}",
                    self.credentials_source()
                ),
            ),
            s if crate::http::is_transient_status(s) => (
                ErrorKind::Transient,
                format!(
                    "{api} on bucket {bucket:?} failed: HTTP {s}{detail}{}",
                    self.endpoint_note()
                ),
            ),
            s => (
                ErrorKind::Permanent,
                format!(
                    "{api} on bucket {bucket:?} failed: HTTP {s}{detail}{}; credentials from {}",
                    self.endpoint_note(),
                    self.credentials_source()
                ),
            ),
        }
    }

    /// The `google-cloud-storage` client, made on first use with the
    /// credentials of the JSON API requests (after checking that they give
    /// a token, so that credential failures read the same on both paths).
    async fn client(&self, op: Operation, target: &(dyn fmt::Display + Sync)) -> Result<Storage> {
        self.authorization(op, target).await?;
        let limit = self.call_limit();
        let client = self
            .inner
            .client
            .get_or_try_init(|| async {
                let credentials: Credentials = match self.inner.credentials.get() {
                    Some(Ok(Some(c))) => c.clone().into(),
                    _ => google_cloud_auth::credentials::anonymous::Builder::new().build(),
                };
                let retry = self.inner.http.retry;
                let backoff = google_cloud_gax::exponential_backoff::ExponentialBackoffBuilder::new()
                    .with_initial_delay(retry.base_backoff)
                    .with_maximum_delay(Duration::from_secs(16))
                    .with_scaling(2.0)
                    .clamp();
                let build = Storage::builder()
                    .with_endpoint(self.inner.endpoint.clone())
                    .with_credentials(credentials)
                    // Transient failures only, as in `crate::http`.
                    .with_retry_policy(
                        google_cloud_storage::retry_policy::RetryableErrors
                            .with_attempt_limit(retry.attempts)
                            .with_time_limit(retry.total),
                    )
                    .with_backoff_policy(backoff)
                    .with_read_resume_policy(Recommended.with_attempt_limit(retry.attempts))
                    .build();
                let failed = |kind, detail: String| {
                    StoreError::new(
                        kind,
                        op,
                        self,
                        target,
                        format!(
                            "cannot make a storage client for bucket {:?}: {detail}; credentials from {}",
                            self.bucket(),
                            self.credentials_source()
                        ),
                    )
                };
                match tokio::time::timeout(limit, build).await {
                    Ok(Ok(c)) => Ok(c),
                    Ok(Err(e)) => Err(failed(ErrorKind::Permanent, crate::http::error_chain(&e))),
                    Err(_) => Err(failed(
                        ErrorKind::Transient,
                        format!("no client within {limit:?}"),
                    )),
                }
            })
            .await?;
        Ok(client.clone())
    }

    /// How long one call into the `google-cloud-storage` crate (a read's
    /// response, a single-request upload, one chunk of a resumable upload,
    /// retries included) may take: every attempt its first-byte limit
    /// (which includes connecting, as in [`crate::http`]) plus the largest
    /// backoffs, and no more than a last attempt started at the end of the
    /// total retry time. The crate has no per-attempt limit of its own, so
    /// an attempt that hangs uses up the whole call.
    fn call_limit(&self) -> Duration {
        let retry = self.inner.http.retry;
        let attempt = self.inner.http.timeouts.first_byte;
        let mut every = attempt;
        for a in 1..retry.attempts.max(1) {
            let ceiling = retry
                .base_backoff
                .saturating_mul(1 << (a - 1).min(6))
                .min(Duration::from_secs(16));
            every += ceiling + attempt;
        }
        every.min(retry.total + attempt)
    }

    /// The error for a call into the crate that took more than `limit`.
    fn too_slow(
        &self,
        op: Operation,
        api: &str,
        target: &(dyn fmt::Display + Sync),
        limit: Duration,
    ) -> StoreError {
        StoreError::new(
            ErrorKind::Transient,
            op,
            self,
            target,
            format!(
                "{api} on bucket {:?} failed: no response within {limit:?}{}{}",
                self.bucket(),
                self.endpoint_note(),
                self.hint_for(api)
            ),
        )
    }

    /// The error for a failed call into the `google-cloud-storage` crate
    /// (callers handle the 404 and 412 they expect first).
    fn crate_error(
        &self,
        op: Operation,
        api: &str,
        target: &(dyn fmt::Display + Sync),
        err: google_cloud_storage::Error,
    ) -> StoreError {
        let cause = root_cause(&err);
        if let Some(status) = cause.http_status_code() {
            let body = cause
                .http_payload()
                .map(|b| String::from_utf8_lossy(&b[..b.len().min(2048)]).trim().to_owned())
                .unwrap_or_default();
            let (kind, message) = self.status_message(api, status, &body);
            return StoreError::new(kind, op, self, target, message).with_source(err);
        }
        let detail = crate::http::error_chain(&err);
        if cause.is_authentication() {
            let transient = std::error::Error::source(cause)
                .and_then(|s| s.downcast_ref::<google_cloud_gax::error::CredentialsError>())
                .is_some_and(|c| c.is_transient());
            let kind = if transient {
                ErrorKind::Transient
            } else {
                ErrorKind::Permanent
            };
            return StoreError::new(
                kind,
                op,
                self,
                target,
                format!(
                    "getting an access token for bucket {:?} failed: {detail}; credentials from {}",
                    self.bucket(),
                    self.credentials_source()
                ),
            )
            .with_source(err);
        }
        // A request the crate could not even build is a bug or a bad
        // option, not a passing failure; everything else (no response,
        // a cut connection, an unreadable or mismatching response) is
        // worth another try.
        let kind = if cause.is_binding() {
            ErrorKind::Permanent
        } else {
            ErrorKind::Transient
        };
        StoreError::new(
            kind,
            op,
            self,
            target,
            format!(
                "{api} on bucket {:?} failed: {detail}{}{}",
                self.bucket(),
                self.endpoint_note(),
                self.hint_for(api)
            ),
        )
        .with_source(err)
    }

    /// [`GcsStore::port_hint`] for the calls of resumable uploads.
    fn hint_for(&self, api: &str) -> &'static str {
        if api.contains("resumable") {
            self.port_hint()
        } else {
            ""
        }
    }

    /// After a 404: is the bucket there at all? Asked once; afterwards a 404
    /// means "no such object".
    async fn check_bucket_after_404(&self, op: Operation, target: &(dyn fmt::Display + Sync)) -> Result<()> {
        if self.inner.bucket_seen.load(Ordering::Relaxed) {
            return Ok(());
        }
        let url = format!(
            "{}/storage/v1/b/{}?fields=name",
            self.inner.endpoint,
            encode_component(self.bucket())
        );
        let http = self.inner.http.inner();
        let resp = self.send(op, "buckets.get", target, || http.get(&url)).await?;
        match resp.status().as_u16() {
            // The bucket exists (403: it does, but reading its metadata is
            // not allowed).
            200 | 403 => {
                self.seen_bucket();
                Ok(())
            }
            _ => Err(self.status_error(op, "buckets.get", target, resp).await),
        }
    }

    fn seen_bucket(&self) {
        self.inner.bucket_seen.store(true, Ordering::Relaxed);
    }

    /// Sends `chunks` as one multipart upload (metadata and data in one
    /// request: fake-gcs-server checks `ifGenerationMatch` on these, not on
    /// plain media uploads).
    async fn put_chunks(&self, key: &Key, chunks: Vec<Bytes>, mode: PutMode) -> Result<ObjectMeta> {
        let size: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        // Given up front, the checksum travels in the metadata part, which
        // GCS checks; computed while sending, the crate would add a third
        // part that fake-gcs-server stores as part of the object.
        let crc = chunks.iter().fold(0, |crc, c| crc32c::crc32c_append(crc, c));
        let client = self.client(Operation::Put, key).await?;
        let mut write = client
            .write_object(
                self.bucket_path(),
                self.object_name(key),
                PartsSource::new(chunks),
            )
            .set_content_type("application/octet-stream")
            .with_known_crc32c(crc)
            // Never a resumable upload: the data is all here.
            .with_resumable_upload_threshold(usize::MAX)
            // An overwrite with the same name and bytes is safe to repeat.
            .with_idempotency(true);
        if mode == PutMode::Create {
            write = write.set_if_generation_match(0);
        }
        let limit = self.call_limit();
        match tokio::time::timeout(limit, write.send_unbuffered()).await {
            Err(_) => Err(self.too_slow(Operation::Put, "objects.insert", key, limit)),
            Ok(Ok(_)) => {
                self.seen_bucket();
                Ok(ObjectMeta {
                    key: key.clone(),
                    size,
                    modified: None,
                })
            }
            Ok(Err(e)) => Err(self.write_error(Operation::Put, "objects.insert", key, e).await),
        }
    }

    /// The error for a failed upload: 412 is "already exists", a 404 a
    /// missing bucket.
    async fn write_error(
        &self,
        op: Operation,
        api: &str,
        key: &Key,
        err: google_cloud_storage::Error,
    ) -> StoreError {
        match root_cause(&err).http_status_code() {
            Some(412) => exists(self, op, key),
            Some(404) => match self.check_bucket_after_404(op, key).await {
                Err(e) => e,
                Ok(()) => self.crate_error(op, api, key, err),
            },
            _ => self.crate_error(op, api, key, err),
        }
    }
}

impl GcsStore {
    /// The size, generation and modification time of `key` (`objects.get`
    /// for metadata).
    async fn object_resource(
        &self,
        op: Operation,
        key: &Key,
    ) -> Result<(u64, Option<i64>, Option<SystemTime>)> {
        let url = format!("{}?fields=name,size,generation,updated", self.object_url(key));
        let http = self.inner.http.inner();
        let resp = self.send(op, "objects.get", key, || http.get(&url)).await?;
        match resp.status().as_u16() {
            200 => {}
            404 => {
                self.check_bucket_after_404(op, key).await?;
                return Err(StoreError::new(
                    ErrorKind::NotFound,
                    op,
                    self,
                    key,
                    "no such object",
                ));
            }
            _ => return Err(self.status_error(op, "objects.get", key, resp).await),
        }
        self.seen_bucket();
        let bad = |m: String| StoreError::new(ErrorKind::Transient, op, self, key, m);
        let body = crate::http::read_body(resp, self.inner.http.timeouts.idle)
            .await
            .map_err(|e| bad(format!("reading the objects.get response failed: {e}")))?;
        let obj: ObjectResource = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("the objects.get response is not an object resource: {e}")))?;
        let size = obj
            .size
            .parse()
            .map_err(|_| bad(format!("objects.get: size {:?} is not a number", obj.size)))?;
        let modified = obj.modified();
        Ok((size, obj.generation.and_then(|g| g.parse().ok()), modified))
    }

    /// For errors of resumable uploads through an endpoint with a port of
    /// its own: why they may fail there.
    fn port_hint(&self) -> &'static str {
        let Some(endpoint) = &self.inner.opts.endpoint else {
            return "";
        };
        let (scheme, rest) = endpoint.split_once("://").unwrap_or(("", endpoint));
        let authority = rest.split('/').next().unwrap_or("");
        let port = authority
            .rsplit_once(':')
            .map(|(_, p)| p)
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
        let default = if scheme == "https" { "443" } else { "80" };
        match port {
            Some(p) if p != default => {
                "; note: google-cloud-storage sends resumable upload requests with a Host header \
                 without the endpoint's port, and an emulator that builds upload URLs from Host \
                 (fake-gcs-server) must then listen on the scheme's default port (80)"
            }
            _ => "",
        }
    }
}

/// The error a retry loop gave up on, if `err` wraps it.
fn root_cause(err: &google_cloud_storage::Error) -> &google_cloud_storage::Error {
    let mut cause = err;
    while cause.is_exhausted() {
        match std::error::Error::source(cause).and_then(|s| s.downcast_ref::<google_cloud_storage::Error>()) {
            Some(inner) => cause = inner,
            None => break,
        }
    }
    cause
}

fn exists(store: &GcsStore, op: Operation, key: &Key) -> StoreError {
    StoreError::new(ErrorKind::AlreadyExists, op, store, key, "object already exists")
}

/// gcloud's application default credentials file.
fn well_known_adc_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".config/gcloud/application_default_credentials.json"))
}

/// `, message` from a GCS JSON error body (`{"error": {"message": ...}}`),
/// or the body itself if it is not one.
fn gcs_message(body: &str) -> String {
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(300).collect());
    if message.is_empty() {
        String::new()
    } else {
        format!(", {message}")
    }
}

impl fmt::Debug for GcsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsStore")
            .field("url", &self.inner.url)
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for GcsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.url)
    }
}

#[derive(serde::Deserialize)]
struct ObjectResource {
    name: String,
    /// A decimal string, as the JSON API sends 64-bit numbers.
    size: String,
    #[serde(default)]
    generation: Option<String>,
    /// When the object (its metadata included) was last written, RFC 3339.
    #[serde(default)]
    updated: Option<String>,
}

impl ObjectResource {
    /// `updated` as a [`SystemTime`]; `None` if absent or unreadable (the
    /// time is informational, not worth failing a listing over).
    fn modified(&self) -> Option<SystemTime> {
        let updated = self.updated.as_deref()?;
        chrono::DateTime::parse_from_rfc3339(updated)
            .ok()
            .map(SystemTime::from)
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectList {
    #[serde(default)]
    items: Vec<ObjectResource>,
    next_page_token: Option<String>,
}

#[async_trait]
impl ObjectStore for GcsStore {
    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<ObjectMeta> {
        self.put_chunks(key, vec![data], mode).await
    }

    async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(GcsUpload {
            store: self.clone(),
            key: key.clone(),
            mode,
            pending: Chunks::default(),
            writer: None,
            stopped: false,
        }))
    }

    async fn get(&self, key: &Key) -> Result<GetResult> {
        let client = self.client(Operation::Get, key).await?;
        let read = client
            .read_object(self.bucket_path(), self.object_name(key))
            .send();
        let limit = self.call_limit();
        let resp = match tokio::time::timeout(limit, read).await {
            Err(_) => return Err(self.too_slow(Operation::Get, "objects.get", key, limit)),
            Ok(Ok(resp)) => resp,
            Ok(Err(e)) if root_cause(&e).http_status_code() == Some(404) => {
                self.check_bucket_after_404(Operation::Get, key).await?;
                return Err(StoreError::new(
                    ErrorKind::NotFound,
                    Operation::Get,
                    self,
                    key,
                    "no such object",
                ));
            }
            Ok(Err(e)) => return Err(self.crate_error(Operation::Get, "objects.get", key, e)),
        };
        self.seen_bucket();
        let object = resp.object();
        let mut size = u64::try_from(object.size).unwrap_or(0);
        // The read response carries no modification time; only the
        // metadata request below does (`get` may leave it `None`).
        let mut modified = None;
        if size == 0 {
            // The crate takes the size from `x-goog-stored-content-length`,
            // which fake-gcs-server does not send: ask for the metadata of
            // the generation being read.
            let (meta_size, generation, meta_modified) = self.object_resource(Operation::Get, key).await?;
            if generation.is_some_and(|g| g != object.generation) {
                return Err(StoreError::new(
                    ErrorKind::Transient,
                    Operation::Get,
                    self,
                    key,
                    "the object was replaced while it was opened",
                ));
            }
            size = meta_size;
            modified = meta_modified;
        }
        Ok(GetResult {
            meta: ObjectMeta {
                key: key.clone(),
                size,
                modified,
            },
            stream: crate::body::checked_body(
                futures::stream::unfold(resp, |mut r| async move { r.next().await.map(|item| (item, r)) }),
                crate::body::BodyOf {
                    store: self.to_string(),
                    key: key.to_string(),
                    api: "objects.get",
                    size,
                    idle: Some(self.inner.http.timeouts.idle),
                },
                |e| crate::http::error_chain(e),
            ),
        })
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let (size, _, modified) = self.object_resource(Operation::Head, key).await?;
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            modified,
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let full_prefix = format!("{}{prefix}", self.inner.opts.prefix);
        let base = format!(
            "{}/storage/v1/b/{}/o?prefix={}&maxResults={}&fields=items(name,size,updated),nextPageToken",
            self.inner.endpoint,
            encode_component(self.bucket()),
            encode_component(&full_prefix),
            self.inner.opts.list_page_size.clamp(1, 1000)
        );
        let http = self.inner.http.inner();
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let url = match &token {
                Some(t) => format!("{base}&pageToken={}", encode_component(t)),
                None => base.clone(),
            };
            let resp = self
                .send(Operation::List, "objects.list", &prefix, || http.get(&url))
                .await?;
            if resp.status().as_u16() != 200 {
                return Err(self
                    .status_error(Operation::List, "objects.list", &prefix, resp)
                    .await);
            }
            self.seen_bucket();
            let bad = |m: String| StoreError::new(ErrorKind::Transient, Operation::List, self, prefix, m);
            let body = crate::http::read_body(resp, self.inner.http.timeouts.idle)
                .await
                .map_err(|e| bad(format!("reading the objects.list response failed: {e}")))?;
            let page: ObjectList = serde_json::from_slice(&body)
                .map_err(|e| bad(format!("the objects.list response is not an object list: {e}")))?;
            for item in page.items {
                let Some(name) = item.name.strip_prefix(&self.inner.opts.prefix) else {
                    continue;
                };
                let Ok(key) = Key::new(name) else { continue };
                let size = item
                    .size
                    .parse()
                    .map_err(|_| bad(format!("objects.list: size {:?} is not a number", item.size)))?;
                let modified = item.modified();
                out.push(ObjectMeta { key, size, modified });
            }
            match page.next_page_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => break,
            }
        }
        out.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        let url = self.object_url(key);
        let http = self.inner.http.inner();
        let resp = self
            .send(Operation::Delete, "objects.delete", key, || http.delete(&url))
            .await?;
        match resp.status().as_u16() {
            200 | 204 => {
                self.seen_bucket();
                Ok(())
            }
            404 => self.check_bucket_after_404(Operation::Delete, key).await,
            _ => Err(self
                .status_error(Operation::Delete, "objects.delete", key, resp)
                .await),
        }
    }
}

/// The data of a single-request upload, sent again from `seek`'s offset
/// for each attempt, without copying.
struct PartsSource {
    parts: Vec<Bytes>,
    queue: std::collections::VecDeque<Bytes>,
}

impl PartsSource {
    fn new(parts: Vec<Bytes>) -> PartsSource {
        PartsSource {
            queue: parts.iter().cloned().collect(),
            parts,
        }
    }
}

impl StreamingSource for PartsSource {
    type Error = std::io::Error;

    async fn next(&mut self) -> Option<std::result::Result<Bytes, Self::Error>> {
        self.queue.pop_front().map(Ok)
    }

    async fn size_hint(&self) -> std::result::Result<SizeHint, Self::Error> {
        Ok(SizeHint::with_exact(
            self.parts.iter().map(|p| p.len() as u64).sum(),
        ))
    }
}

impl Seek for PartsSource {
    type Error = std::io::Error;

    async fn seek(&mut self, offset: u64) -> std::result::Result<(), Self::Error> {
        let mut skip = offset;
        self.queue.clear();
        for part in &self.parts {
            let len = part.len() as u64;
            if skip >= len {
                skip -= len;
            } else {
                self.queue.push_back(part.slice(skip as usize..));
                skip = 0;
            }
        }
        Ok(())
    }
}

/// A multipart upload: a resumable upload of the `google-cloud-storage`
/// crate, started once the first whole chunk is there, fed through a
/// [`Feeder`].
struct GcsUpload {
    store: GcsStore,
    key: Key,
    mode: PutMode,
    /// Received and not yet handed to the crate: less than one chunk once a
    /// part has been handled.
    pending: Chunks,
    writer: Option<Writer>,
    /// The resumable upload was started and has stopped: nothing more can
    /// be added or completed.
    stopped: bool,
}

/// A resumable upload running in the crate.
struct Writer {
    feed: mpsc::UnboundedSender<Feed>,
    /// How many times the crate asked its source for the next piece.
    asked: watch::Receiver<u64>,
    /// Pieces handed to the crate.
    handed: u64,
    /// Bytes handed to the crate.
    size: u64,
    /// Bytes per request: a multiple of [`CHUNK_GRANULARITY`].
    chunk: usize,
    task: tokio::task::JoinHandle<google_cloud_storage::Result<google_cloud_storage::model::Object>>,
}

enum Feed {
    Data(Bytes),
    End,
}

/// The data source of a resumable upload: the pieces `put_part` hands
/// over, then the end that `complete` sends. Dropped without an end, the
/// upload fails rather than finishing with what it has.
///
/// The crate asks for the next piece only when it needs more for its
/// current chunk, or once the previous chunk has been persisted; with
/// pieces handed in whole chunks, an ask beyond the last piece handed
/// means everything so far is stored.
struct Feeder {
    feed: mpsc::UnboundedReceiver<Feed>,
    asked: watch::Sender<u64>,
    ended: bool,
}

impl StreamingSource for Feeder {
    type Error = std::io::Error;

    async fn next(&mut self) -> Option<std::result::Result<Bytes, Self::Error>> {
        if self.ended {
            return None;
        }
        self.asked.send_modify(|n| *n += 1);
        match self.feed.recv().await {
            Some(Feed::Data(data)) => Some(Ok(data)),
            Some(Feed::End) => {
                self.ended = true;
                None
            }
            None => Some(Err(std::io::Error::other("the upload was abandoned"))),
        }
    }
}

impl GcsUpload {
    /// Fails if the resumable upload failed earlier (it cannot go on).
    fn check_running(&self, op: Operation) -> Result<()> {
        if self.stopped {
            return Err(StoreError::new(
                ErrorKind::Transient,
                op,
                &self.store,
                &self.key,
                "the resumable upload failed earlier; start the upload again",
            ));
        }
        Ok(())
    }

    /// Starts the crate's resumable upload with chunks of `chunk` bytes.
    async fn start(&mut self, chunk: usize) -> Result<()> {
        let store = &self.store;
        let client = store.client(Operation::PutPart, &self.key).await?;
        let (feed, feed_rx) = mpsc::unbounded_channel();
        let (asked_tx, asked) = watch::channel(0);
        let source = Feeder {
            feed: feed_rx,
            asked: asked_tx,
            ended: false,
        };
        let mut write = client
            .write_object(store.bucket_path(), store.object_name(&self.key), source)
            .set_content_type("application/octet-stream")
            .with_resumable_upload_threshold(0_usize)
            .with_resumable_upload_buffer_size(chunk)
            // Chunks are re-sent from the offset GCS reports, never twice.
            .with_idempotency(true);
        if self.mode == PutMode::Create {
            write = write.set_if_generation_match(0);
        }
        let task = tokio::spawn(write.send_buffered());
        self.writer = Some(Writer {
            feed,
            asked,
            handed: 0,
            size: 0,
            chunk,
            task,
        });
        Ok(())
    }

    /// Hands `data` to the running upload.
    fn hand(&mut self, data: Vec<Bytes>) {
        if let Some(w) = &mut self.writer {
            for piece in data {
                w.size += piece.len() as u64;
                w.handed += 1;
                // A send fails only if the upload ended; `wait` reports why.
                let _ = w.feed.send(Feed::Data(piece));
            }
        }
    }

    /// Waits until the crate has stored everything handed to it.
    async fn wait(&mut self, op: Operation) -> Result<()> {
        let limit = self.store.call_limit();
        let Some(w) = &mut self.writer else {
            return Ok(());
        };
        let handed = w.handed;
        let waited = tokio::time::timeout(limit, w.asked.wait_for(|&asked| asked > handed))
            .await
            .map(|r| r.is_ok());
        match waited {
            Ok(true) => Ok(()),
            // The upload ended: it failed.
            Ok(false) => Err(self.finish(op).await.err().unwrap_or_else(|| {
                StoreError::new(
                    ErrorKind::Transient,
                    op,
                    &self.store,
                    &self.key,
                    "the resumable upload finished before its end was sent",
                )
            })),
            Err(_) => {
                self.stop();
                Err(self.store.too_slow(op, "resumable upload", &self.key, limit))
            }
        }
    }

    /// The result of the crate's upload, once it ended.
    async fn finish(&mut self, op: Operation) -> Result<google_cloud_storage::model::Object> {
        self.stopped = true;
        let Some(w) = self.writer.take() else {
            return Err(StoreError::new(
                ErrorKind::Permanent,
                op,
                &self.store,
                &self.key,
                "the upload is not running",
            ));
        };
        let limit = self.store.call_limit();
        let mut task = w.task;
        match tokio::time::timeout(limit, &mut task).await {
            Ok(Ok(Ok(object))) => {
                self.store.seen_bucket();
                Ok(object)
            }
            Ok(Ok(Err(e))) => Err(self
                .store
                .write_error(op, "objects.insert (resumable)", &self.key, e)
                .await),
            Ok(Err(e)) => Err(StoreError::new(
                ErrorKind::Transient,
                op,
                &self.store,
                &self.key,
                format!("the resumable upload stopped: {e}"),
            )),
            Err(_) => {
                task.abort();
                Err(self.store.too_slow(op, "resumable upload", &self.key, limit))
            }
        }
    }

    /// Stops the upload without finishing it.
    fn stop(&mut self) {
        if let Some(w) = self.writer.take() {
            self.stopped = true;
            // Aborted before its source can see the channel close: an
            // abandoned upload is never finished.
            w.task.abort();
        }
    }
}

#[async_trait]
impl MultipartUpload for GcsUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        self.check_running(Operation::PutPart)?;
        self.pending.push(data);
        if self.writer.is_none() {
            let chunk = self.pending.len() / CHUNK_GRANULARITY * CHUNK_GRANULARITY;
            if chunk == 0 {
                return Ok(());
            }
            self.start(chunk).await?;
        }
        let chunk = self.writer.as_ref().map_or(usize::MAX, |w| w.chunk);
        while self.pending.len() >= chunk {
            let pieces = self.pending.take(chunk);
            self.hand(pieces);
            if let Err(e) = self.wait(Operation::PutPart).await {
                self.stop();
                return Err(e);
            }
        }
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta> {
        self.check_running(Operation::Complete)?;
        let rest = self.pending.take(self.pending.len());
        if self.writer.is_none() {
            return self.store.put_chunks(&self.key, rest, self.mode).await;
        }
        // GCS checks `ifGenerationMatch=0` atomically when the upload
        // finishes; this look first is for emulators that ignore it there.
        if self.mode == PutMode::Create {
            match self.store.head(&self.key).await {
                Ok(_) => {
                    self.stop();
                    return Err(exists(&self.store, Operation::Complete, &self.key));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    self.stop();
                    return Err(e);
                }
            }
        }
        self.hand(rest);
        let size = match &self.writer {
            Some(w) => {
                let _ = w.feed.send(Feed::End);
                w.size
            }
            None => 0,
        };
        let object = self.finish(Operation::Complete).await?;
        if u64::try_from(object.size).ok() != Some(size) {
            return Err(StoreError::new(
                ErrorKind::Transient,
                Operation::Complete,
                &self.store,
                &self.key,
                format!(
                    "the resumable upload stored {} bytes, not the {size} sent",
                    object.size
                ),
            ));
        }
        Ok(ObjectMeta {
            key: self.key.clone(),
            size,
            modified: None,
        })
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.stop();
        Ok(())
    }
}

impl Drop for GcsUpload {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = GcsOptions::from_url("gs://bucket/a/b/").unwrap();
        assert_eq!((o.bucket.as_str(), o.prefix.as_str()), ("bucket", "a/b/"));
        let o = GcsOptions::from_url("gs://my.bucket_1").unwrap();
        assert_eq!((o.bucket.as_str(), o.prefix.as_str()), ("my.bucket_1", ""));
        for bad in [
            "gs://",
            "gs:///x",
            "gs://b c/x",
            "gs://Upper/x",
            "s3://b/x",
            "gs://bb/a//b",
            "gs://bb",
        ] {
            assert!(GcsOptions::from_url(bad).is_err(), "{bad}");
        }
        let store = GcsStore::new(GcsOptions::from_url("gs://bucket/a/b/").unwrap()).unwrap();
        assert_eq!(store.to_string(), "gs://bucket/a/b");
        let k = Key::new("wal/x+y").unwrap();
        assert_eq!(store.object_name(&k), "a/b/wal/x+y");
        assert_eq!(
            store.object_url(&k),
            "https://storage.googleapis.com/storage/v1/b/bucket/o/a%2Fb%2Fwal%2Fx%2By"
        );
        assert_eq!(store.bucket_path(), "projects/_/buckets/bucket");
    }

    #[test]
    fn options_are_checked() {
        let mut o = GcsOptions::from_url("gs://bucket/p").unwrap();
        o.endpoint = Some("127.0.0.1:4443".into());
        let err = GcsStore::new(o.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert!(err.to_string().contains("127.0.0.1:4443"), "{err}");
        o.endpoint = Some("http://127.0.0.1:4443/".into());
        let store = GcsStore::new(o.clone()).unwrap();
        assert!(store
            .object_url(&Key::new("k").unwrap())
            .starts_with("http://127.0.0.1:4443/storage/v1/b/"));
        o.retry.attempts = 0;
        assert!(GcsStore::new(o).is_err());
    }

    #[test]
    fn limits_of_calls_into_the_crate() {
        let mut o = GcsOptions::from_url("gs://bucket/p").unwrap();
        // 2 minutes of retries and one more attempt of 300 s.
        assert_eq!(
            GcsStore::new(o.clone()).unwrap().call_limit(),
            Duration::from_secs(420)
        );
        o.timeouts.first_byte = Duration::from_secs(1);
        o.retry.attempts = 2;
        assert_eq!(
            GcsStore::new(o.clone()).unwrap().call_limit(),
            Duration::from_millis(2250)
        );
        o.retry.attempts = 1;
        assert_eq!(GcsStore::new(o).unwrap().call_limit(), Duration::from_secs(1));
    }

    #[test]
    fn resumable_upload_errors_explain_emulator_ports() {
        let with = |endpoint: Option<&str>| {
            let mut o = GcsOptions::from_url("gs://bucket/p").unwrap();
            o.endpoint = endpoint.map(str::to_owned);
            GcsStore::new(o).unwrap()
        };
        assert!(with(Some("http://127.0.0.1:4443")).port_hint().contains("port"));
        assert!(with(Some("https://[::1]:8443/")).port_hint().contains("port"));
        for quiet in [
            None,
            Some("http://127.0.0.1:80"),
            Some("http://127.0.0.1"),
            Some("https://gcs.example:443"),
            Some("http://[::1]"),
        ] {
            assert_eq!(with(quiet).port_hint(), "", "{quiet:?}");
        }
        let store = with(Some("http://127.0.0.1:4443"));
        assert_eq!(store.hint_for("objects.get"), "");
        assert!(!store.hint_for("objects.insert (resumable)").is_empty());
    }

    fn response(status: u16, body: &str) -> reqwest::Response {
        reqwest::Response::from(
            http::Response::builder()
                .status(status)
                .body(body.to_owned())
                .unwrap(),
        )
    }

    #[tokio::test]
    async fn statuses_are_classified() {
        let store = GcsStore::new(GcsOptions::from_url("gs://my-bucket/repo").unwrap()).unwrap();
        let k = Key::new("wal/x").unwrap();
        let denied =
            r#"{"error":{"code":403,"message":"sa@p.iam does not have storage.objects.create access"}}"#;
        let cases: &[(u16, &str, ErrorKind, &[&str])] = &[
            (
                403,
                denied,
                ErrorKind::Permanent,
                &[
                    "objects.insert",
                    "\"my-bucket\" denied",
                    "HTTP 403",
                    "storage.objects.create",
                    "credentials from",
                ],
            ),
            (
                401,
                "",
                ErrorKind::Permanent,
                &["denied (HTTP 401)", "credentials from"],
            ),
            (
                404,
                "Not Found",
                ErrorKind::Permanent,
                &["\"my-bucket\" does not exist"],
            ),
            (412, "", ErrorKind::AlreadyExists, &["already exists"]),
            (429, "", ErrorKind::Transient, &["HTTP 429"]),
            (
                503,
                "backend error",
                ErrorKind::Transient,
                &["HTTP 503, backend error"],
            ),
            (
                400,
                "bad name",
                ErrorKind::Permanent,
                &["HTTP 400, bad name", "credentials from"],
            ),
        ];
        for (status, body, kind, needles) in cases {
            let e = store
                .status_error(Operation::Put, "objects.insert", &k, response(*status, body))
                .await;
            assert_eq!(e.kind(), *kind, "{status}: {e}");
            let msg = e.to_string();
            assert!(msg.contains("put wal/x in gs://my-bucket/repo"), "{msg}");
            for needle in *needles {
                assert!(msg.contains(needle), "{status}: {needle:?} missing in {msg}");
            }
        }
        let anonymous = GcsStore::new(GcsOptions {
            credentials: GcsCredentials::Anonymous,
            ..GcsOptions::from_url("gs://my-bucket").unwrap()
        })
        .unwrap();
        let e = anonymous
            .status_error(Operation::Get, "objects.get", &k, response(401, ""))
            .await;
        assert!(e.to_string().contains("anonymous requests"), "{e}");
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            gcs_message(
                r#"{"error":{"code":403,"message":"pgark@x.iam does not have storage.objects.get access"}}"#
            ),
            ", pgark@x.iam does not have storage.objects.get access"
        );
        assert_eq!(gcs_message("Not Found"), ", Not Found");
        assert_eq!(gcs_message(""), "");
    }
}
