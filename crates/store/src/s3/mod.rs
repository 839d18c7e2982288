//! Repositories in Amazon S3 and S3-compatible object stores, [`S3Store`]
//! (cargo feature `s3`).
//!
//! # Layout
//!
//! The repository `s3://bucket/some/prefix` keeps the object under key `a/b`
//! as the S3 object `some/prefix/a/b` in `bucket`; `s3://bucket` uses the
//! whole bucket. Objects whose names are not valid [`Key`]s (written by
//! something else) are ignored by `list`.
//!
//! # Guarantees and how they are kept
//!
//! - **Atomic puts.** S3 makes an object visible only once its `PutObject` or
//!   `CompleteMultipartUpload` succeeded; readers see the old object or the
//!   new one.
//! - **Create-only puts** send `If-None-Match: *` with `PutObject` and with
//!   `CompleteMultipartUpload`; S3 refuses with `412 Precondition Failed`
//!   (reported as [`ErrorKind::AlreadyExists`]) if the key exists, atomically,
//!   so of racing create-only puts exactly one wins. S3-compatible stores must
//!   support conditional writes for this guarantee (AWS S3 since August 2024);
//!   a store that ignores the header silently overwrites. A
//!   `409 ConditionalRequestConflict` (a concurrent write of the same key)
//!   is retried here a few times and then reported as transient.
//! - **Multipart uploads** buffer the parts given to
//!   [`MultipartUpload::put_part`] up to S3's 5 MiB minimum part size (the
//!   minimum grows by 5 MiB every 1000 parts, so that S3's 10,000-part limit
//!   allows objects of more than 250 GiB), send up to
//!   [`S3Options::parts_in_flight`] parts at once, and abort the upload on
//!   any failure. An upload that is dropped unfinished spawns its own abort
//!   on the current Tokio runtime. An object that fits in one part is sent
//!   with a single `PutObject` instead. If the process dies mid-upload S3
//!   keeps the uploaded parts (invisible, but billed) until a bucket
//!   lifecycle rule `AbortIncompleteMultipartUpload` removes them.
//! - **Deletes** are idempotent (S3's `DeleteObject` of a missing key
//!   succeeds); many keys go 1000 to a `DeleteObjects` request (see
//!   `cleanup`), and the garbage collector finds and aborts multipart
//!   uploads a killed process left.
//! - **Reads** stream the response body; a body that ends before its
//!   `Content-Length` is an error, never a short object.
//!
//! # Errors
//!
//! `404 NoSuchKey` is [`ErrorKind::NotFound`]; `404 NoSuchBucket` is
//! permanent and says the bucket does not exist (a `HeadObject` 404 carries no
//! error code, so the first one is told apart with a `HeadBucket`). `412` is
//! [`ErrorKind::AlreadyExists`]. 5xx, 429, `SlowDown` and other throttling,
//! `RequestTimeout`, timeouts and connection failures are transient. 403
//! (`AccessDenied`, `InvalidAccessKeyId`, `SignatureDoesNotMatch`, expired
//! tokens), a bucket in another region (`301 PermanentRedirect`,
//! `AuthorizationHeaderMalformed`) and missing credentials are permanent.
//! Messages name the bucket, the S3 operation, the HTTP status and S3's
//! error code, and where the credentials came from (the SDK's provider name,
//! such as `EnvironmentVariable`, `ProfileFile`, `WebIdentityToken`,
//! `EcsContainer` or `IMDSv2`).
//!
//! # Requests
//!
//! Every request has a connect timeout, a timeout per attempt and a stall
//! timeout on response and request bodies ([`S3Timeouts`]). The SDK retries
//! transient failures itself in its standard retry mode (exponential backoff
//! with jitter, at most [`S3Options::max_attempts`] attempts per request);
//! what is still failing after that is reported as transient so that callers
//! may retry the whole operation.

mod cleanup;

use crate::{
    ErrorKind, GetResult, Key, MultipartUpload, ObjectMeta, ObjectStore, Operation, PutMode, Result,
    StoreError,
};
use async_trait::async_trait;
use aws_sdk_s3::config::{
    Credentials, ProvideCredentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider, StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{
    ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart, ServerSideEncryption, StorageClass,
};
use aws_sdk_s3::Client;
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

/// S3's smallest part size (except for the last part).
pub const MIN_PART_SIZE: usize = 5 << 20;

/// S3's largest number of parts in one upload.
const MAX_PARTS: i32 = 10_000;

/// Region used when none is configured anywhere (S3-compatible stores
/// usually ignore it, but requests must be signed for some region).
const FALLBACK_REGION: &str = "us-east-1";

/// How often a conditional write that met a concurrent one
/// (`409 ConditionalRequestConflict`) is sent again.
const CONFLICT_ATTEMPTS: u32 = 4;

/// Server-side encryption of new objects.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum S3Sse {
    /// Send no encryption header: the bucket's default encryption applies
    /// (AWS S3 encrypts with SSE-S3 by default).
    #[default]
    None,
    /// SSE-S3: `x-amz-server-side-encryption: AES256`.
    Aes256,
    /// SSE-KMS (`aws:kms`), with the given KMS key id or ARN, or the
    /// account's default `aws/s3` key.
    Kms { key_id: Option<String> },
}

impl S3Sse {
    /// Parses `none`, `AES256` or `aws:kms` (any case), with the KMS key id
    /// given separately; a key id alone means `aws:kms`.
    pub fn parse(sse: Option<&str>, kms_key_id: Option<&str>) -> Result<S3Sse, String> {
        let key_id = kms_key_id.filter(|k| !k.is_empty()).map(str::to_owned);
        let mode = sse.map(str::to_ascii_lowercase).filter(|m| !m.is_empty());
        match (mode.as_deref(), key_id) {
            (None, None) | (Some("none"), None) => Ok(S3Sse::None),
            (Some("aes256"), None) => Ok(S3Sse::Aes256),
            (None, Some(key_id)) => Ok(S3Sse::Kms { key_id: Some(key_id) }),
            (Some("aws:kms"), key_id) => Ok(S3Sse::Kms { key_id }),
            (Some("none" | "aes256"), Some(_)) => {
                Err("a KMS key id needs server-side encryption aws:kms".into())
            }
            (Some(_), _) => Err(format!(
                "{:?} is not one of none, AES256, aws:kms",
                sse.unwrap_or_default()
            )),
        }
    }
}

/// When the SDK adds checksums to requests and checks them in responses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum S3Checksum {
    /// Whenever the operation supports it (the SDK's default): a CRC32 on
    /// every upload, checked by S3, and response checksums validated. Some
    /// S3-compatible stores reject these requests.
    #[default]
    WhenSupported,
    /// Only where the S3 API requires one; uploads are then protected by
    /// TCP/TLS and the repository's own checksums only.
    WhenRequired,
}

impl std::str::FromStr for S3Checksum {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().replace('_', "-").as_str() {
            "when-supported" => Ok(S3Checksum::WhenSupported),
            "when-required" => Ok(S3Checksum::WhenRequired),
            _ => Err(format!("{s:?} is not one of when-supported, when-required")),
        }
    }
}

impl fmt::Display for S3Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            S3Checksum::WhenSupported => "when-supported",
            S3Checksum::WhenRequired => "when-required",
        })
    }
}

/// Where requests get their credentials.
#[derive(Clone, Default)]
pub enum S3Credentials {
    /// The SDK's standard chain: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
    /// (and `AWS_SESSION_TOKEN`), the shared config and credentials files
    /// (`AWS_PROFILE`, `credential_process`, role assumption), web identity
    /// tokens (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`: EKS IRSA), the
    /// container credentials endpoint (ECS, EKS Pod Identity) and the EC2
    /// instance metadata service.
    #[default]
    Chain,
    /// Fixed keys, for tests and programs embedding the store.
    Static {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
    /// Any SDK credentials provider (a test's failing one, say).
    Provider(SharedCredentialsProvider),
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            S3Credentials::Chain => f.write_str("Chain"),
            S3Credentials::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .finish_non_exhaustive(),
            S3Credentials::Provider(p) => f.debug_tuple("Provider").field(p).finish(),
        }
    }
}

/// The slowest upload the first-byte bound allows for (256 KiB/s): an
/// upload's response may come this much later than a bodiless request's.
pub const MIN_UPLOAD_RATE: u64 = 256 << 10;

/// Time limits of every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S3Timeouts {
    /// Establishing a connection (TCP and TLS).
    pub connect: Duration,
    /// From sending a request to the first byte of its response, for a
    /// request without a body; an upload gets this plus the time its body
    /// takes at [`MIN_UPLOAD_RATE`] (never more than `attempt`). A store
    /// that accepts connections and never answers fails at this bound,
    /// [`S3Options::max_attempts`] times, and then is not retried by the
    /// commands either (see `classify`).
    pub first_byte: Duration,
    /// One attempt of one request, until its response (headers) arrived; a
    /// part upload's body is sent within it.
    pub attempt: Duration,
    /// Longest time a request or response body may stall (move at less than
    /// one byte per second) before the request fails.
    pub stall: Duration,
}

impl Default for S3Timeouts {
    fn default() -> Self {
        S3Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(20),
            attempt: Duration::from_secs(300),
            stall: Duration::from_secs(60),
        }
    }
}

/// Everything an [`S3Store`] needs to know.
#[derive(Debug, Clone)]
pub struct S3Options {
    pub bucket: String,
    /// Prefix of every object name: empty, or ending with `/`.
    pub prefix: String,
    /// The bucket's region; `None` for the SDK's own lookup (`AWS_REGION`,
    /// the shared config file, instance metadata), falling back to
    /// `us-east-1`.
    pub region: Option<String>,
    /// Endpoint URL of an S3-compatible store (`http://127.0.0.1:9000`);
    /// `None` for AWS S3 or `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`) instead of
    /// virtual-hosted style (`bucket.endpoint/key`); most S3-compatible
    /// stores need it.
    pub force_path_style: bool,
    pub sse: S3Sse,
    /// Storage class of new objects (`STANDARD_IA`, ...); `None` for the
    /// bucket's default.
    pub storage_class: Option<String>,
    pub checksum: S3Checksum,
    pub credentials: S3Credentials,
    pub timeouts: S3Timeouts,
    /// Attempts per request in the SDK's standard retry mode (1 = none).
    pub max_attempts: u32,
    /// Parts of one multipart upload sent at once.
    pub parts_in_flight: usize,
}

impl S3Options {
    /// Options for the repository URL `s3://bucket[/prefix]`, with defaults
    /// for everything else.
    pub fn from_url(url: &str) -> Result<S3Options, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} is not an s3://bucket/prefix URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url:?} names no bucket (s3://bucket/prefix)"));
        }
        let valid_bucket = bucket.len() <= 255
            && bucket
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
        if !valid_bucket {
            return Err(format!("{url:?}: {bucket:?} is not a valid bucket name"));
        }
        let prefix = prefix.trim_matches('/');
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            // The prefix must form valid keys with what follows it.
            Key::new(prefix).map_err(|e| format!("{url:?}: invalid prefix: {}", e.reason))?;
            format!("{prefix}/")
        };
        Ok(S3Options {
            bucket: bucket.to_owned(),
            prefix,
            region: None,
            endpoint: None,
            force_path_style: false,
            sse: S3Sse::None,
            storage_class: None,
            checksum: S3Checksum::default(),
            credentials: S3Credentials::Chain,
            timeouts: S3Timeouts::default(),
            max_attempts: 3,
            parts_in_flight: 4,
        })
    }
}

/// A repository in an S3 bucket. Cheap to clone; clones share one client.
///
/// The SDK configuration (credentials chain, region lookup) is loaded on
/// the first request, so [`S3Store::new`] does no I/O.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

struct Inner {
    opts: S3Options,
    url: String,
    client: OnceCell<Client>,
    credentials: Arc<CredentialsTracker>,
    /// The bucket answered a request: a 404 without error code is a missing
    /// object, not a missing bucket.
    bucket_seen: AtomicBool,
    /// The store refused a `DeleteObjects` request (some S3-compatible
    /// stores do not have it, or want a `Content-MD5` the SDK no longer
    /// sends): deletes go one by one from then on.
    batch_refused: AtomicBool,
}

impl S3Store {
    /// A store for `opts`. Fails with a permanent [`Operation::Open`] error if
    /// an option is invalid (an endpoint that is not an http(s) URL, zero
    /// parts in flight).
    pub fn new(opts: S3Options) -> Result<S3Store> {
        let url = if opts.prefix.is_empty() {
            format!("s3://{}", opts.bucket)
        } else {
            format!("s3://{}/{}", opts.bucket, opts.prefix.trim_end_matches('/'))
        };
        let invalid =
            |message: String| StoreError::new(ErrorKind::Permanent, Operation::Open, &url, "", message);
        if let Some(endpoint) = &opts.endpoint {
            let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
            let host = endpoint.split_once("://").map_or("", |(_, rest)| rest);
            if !scheme_ok || host.is_empty() || host.starts_with('/') {
                return Err(invalid(format!(
                    "the S3 endpoint {endpoint:?} is not an http:// or https:// URL"
                )));
            }
        }
        if opts.parts_in_flight == 0 || opts.max_attempts == 0 {
            return Err(invalid(
                "parts in flight and attempts per request must be at least 1".into(),
            ));
        }
        if opts.storage_class.as_deref() == Some("") {
            return Err(invalid("the storage class is empty".into()));
        }
        if !opts.prefix.is_empty() && !opts.prefix.ends_with('/') {
            return Err(invalid(format!("the prefix {:?} must end with '/'", opts.prefix)));
        }
        Ok(S3Store {
            inner: Arc::new(Inner {
                url,
                client: OnceCell::new(),
                credentials: Arc::new(CredentialsTracker::default()),
                bucket_seen: AtomicBool::new(false),
                batch_refused: AtomicBool::new(false),
                opts,
            }),
        })
    }

    /// The options the store was made with.
    pub fn options(&self) -> &S3Options {
        &self.inner.opts
    }

    /// The SDK client the store sends its requests with (made on first
    /// use), for what [`ObjectStore`] does not cover: inspecting objects'
    /// encryption, listing unfinished multipart uploads.
    pub async fn client(&self) -> &Client {
        self.inner
            .client
            .get_or_init(|| build_client(&self.inner.opts, self.inner.credentials.clone()))
            .await
    }

    /// The S3 object name of `key`.
    fn object_name(&self, key: &Key) -> String {
        format!("{}{}", self.inner.opts.prefix, key.as_str())
    }

    fn bucket(&self) -> &str {
        &self.inner.opts.bucket
    }

    /// Classifies a failed SDK call (see the module documentation).
    fn error<E>(
        &self,
        op: Operation,
        api: &'static str,
        target: &dyn fmt::Display,
        err: SdkError<E>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let class = classify(&err);
        let bucket = self.bucket();
        let detail = error_chain(&err);
        let (kind, message) = match class {
            Class::NoCredentials => (
                ErrorKind::Permanent,
                format!(
                    "{api}: no AWS credentials for bucket {bucket:?} ({}); set AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY, AWS_PROFILE, a web identity token, or run with an instance \
                     or container role",
                    self.inner.credentials.describe_failure().unwrap_or(detail)
                ),
            ),
            Class::NotFound => (ErrorKind::NotFound, "no such object".to_owned()),
            Class::NoSuchBucket => (
                ErrorKind::Permanent,
                format!("{api}: bucket {bucket:?} does not exist{}", self.endpoint_note()),
            ),
            Class::Exists => (ErrorKind::AlreadyExists, "object already exists".to_owned()),
            Class::WrongRegion(region) => (
                ErrorKind::Permanent,
                format!(
                    "{api}: bucket {bucket:?} is not in region {}{} (set --s3-region){}",
                    self.region_in_use(),
                    match region {
                        Some(r) => format!(" but in {r}"),
                        None => String::new(),
                    },
                    self.service_detail(&err)
                ),
            ),
            Class::Denied => (
                ErrorKind::Permanent,
                format!(
                    "{api}: access to bucket {bucket:?} denied{}; credentials from {}",
                    self.service_detail(&err),
                    self.inner.credentials.describe()
                ),
            ),
            Class::Unresponsive => (
                ErrorKind::Permanent,
                format!(
                    "{api} on bucket {bucket:?}: the store sent no answer within the time limit ({} for a \
                     request without a body, {} to connect), {} times: {}{}",
                    crate::format_duration(self.inner.opts.timeouts.first_byte),
                    crate::format_duration(self.inner.opts.timeouts.connect),
                    self.inner.opts.max_attempts.max(1),
                    short_detail(&err, &detail),
                    self.endpoint_note()
                ),
            ),
            Class::Transient => (
                ErrorKind::Transient,
                format!(
                    "{api} on bucket {bucket:?} failed: {}{}",
                    short_detail(&err, &detail),
                    self.endpoint_note()
                ),
            ),
            Class::Permanent => (
                ErrorKind::Permanent,
                format!(
                    "{api} on bucket {bucket:?} failed: {}{}; credentials from {}",
                    short_detail(&err, &detail),
                    self.endpoint_note(),
                    self.inner.credentials.describe()
                ),
            ),
        };
        StoreError::new(kind, op, self, target, message).with_source(err)
    }

    /// ` (HTTP 403, AccessDenied: message)` for service errors.
    fn service_detail<E: ProvideErrorMetadata>(&self, err: &SdkError<E>) -> String {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let mut parts = Vec::new();
        if let Some(status) = status {
            parts.push(format!("HTTP {status}"));
        }
        match (err.code(), err.message()) {
            (Some(code), Some(msg)) => parts.push(format!("{code}: {msg}")),
            (Some(code), None) => parts.push(code.to_owned()),
            (None, Some(msg)) => parts.push(msg.to_owned()),
            (None, None) => {}
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!(" ({})", parts.join(", "))
        }
    }

    fn endpoint_note(&self) -> String {
        match &self.inner.opts.endpoint {
            Some(e) => format!(" (endpoint {e})"),
            None => String::new(),
        }
    }

    fn region_in_use(&self) -> String {
        self.inner
            .client
            .get()
            .and_then(|c| c.config().region().map(|r| r.to_string()))
            .unwrap_or_else(|| "(unknown)".into())
    }

    /// After a `HeadObject` 404 (which has no error code): is the bucket
    /// there at all? Asked once; afterwards a 404 means "no such object".
    async fn check_bucket_after_404(&self, op: Operation, key: &Key) -> Result<()> {
        if self.inner.bucket_seen.load(Ordering::Relaxed) {
            return Ok(());
        }
        let client = self.client().await;
        match client.head_bucket().bucket(self.bucket()).send().await {
            Ok(_) => {
                self.inner.bucket_seen.store(true, Ordering::Relaxed);
                Ok(())
            }
            // The bucket exists, but HeadBucket is not allowed: the 404 was
            // about the object.
            Err(err) if err.raw_response().map(|r| r.status().as_u16()) == Some(403) => {
                self.inner.bucket_seen.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(err) => {
                let status = err.raw_response().map(|r| r.status().as_u16());
                if status == Some(404) {
                    Err(StoreError::new(
                        ErrorKind::Permanent,
                        op,
                        self,
                        key,
                        format!(
                            "HeadBucket: bucket {:?} does not exist{}",
                            self.bucket(),
                            self.endpoint_note()
                        ),
                    )
                    .with_source(err))
                } else {
                    Err(self.error(op, "HeadBucket", key, err))
                }
            }
        }
    }

    fn seen_bucket(&self) {
        self.inner.bucket_seen.store(true, Ordering::Relaxed);
    }

    async fn put_object(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<ObjectMeta> {
        let client = self.client().await;
        let opts = &self.inner.opts;
        let size = data.len() as u64;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = client
                .put_object()
                .bucket(self.bucket())
                .key(self.object_name(key))
                .content_length(data.len() as i64)
                .body(aws_sdk_s3::primitives::ByteStream::from(data.clone()));
            if mode == PutMode::Create {
                req = req.if_none_match("*");
            }
            match &opts.sse {
                S3Sse::None => {}
                S3Sse::Aes256 => req = req.server_side_encryption(ServerSideEncryption::Aes256),
                S3Sse::Kms { key_id } => {
                    req = req
                        .server_side_encryption(ServerSideEncryption::AwsKms)
                        .set_ssekms_key_id(key_id.clone())
                }
            }
            if let Some(class) = &opts.storage_class {
                req = req.storage_class(StorageClass::from(class.as_str()));
            }
            match req
                .customize()
                .config_override(upload_timeouts(&opts.timeouts, size))
                .send()
                .await
            {
                Ok(_) => {
                    self.seen_bucket();
                    return Ok(ObjectMeta {
                        key: key.clone(),
                        size,
                        modified: None,
                    });
                }
                Err(err) if is_conflict(&err) && attempt < CONFLICT_ATTEMPTS => {
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                }
                Err(err) => return Err(self.error(Operation::Put, "PutObject", key, err)),
            }
        }
    }
}

/// An S3 `LastModified` as a [`SystemTime`]; `None` if absent or out of
/// range.
fn system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> Option<SystemTime> {
    t.and_then(|t| SystemTime::try_from(*t).ok())
}

impl fmt::Debug for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store")
            .field("url", &self.inner.url)
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for S3Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.url)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<ObjectMeta> {
        self.put_object(key, data, mode).await
    }

    async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn MultipartUpload>> {
        // The client is made now so that option errors show up early.
        self.client().await;
        Ok(Box::new(S3Upload {
            store: self.clone(),
            key: key.clone(),
            mode,
            pending: Vec::new(),
            pending_len: 0,
            size: 0,
            started: None,
            finished: false,
        }))
    }

    async fn get(&self, key: &Key) -> Result<GetResult> {
        let client = self.client().await;
        let out = client
            .get_object()
            .bucket(self.bucket())
            .key(self.object_name(key))
            .send()
            .await
            .map_err(|e| self.error(Operation::Get, "GetObject", key, e))?;
        self.seen_bucket();
        let size = out.content_length().unwrap_or(0).max(0) as u64;
        let modified = system_time(out.last_modified());
        let stream = crate::body::checked_body(
            futures::stream::unfold(
                out.body,
                |mut b| async move { b.next().await.map(|item| (item, b)) },
            ),
            crate::body::BodyOf {
                store: self.to_string(),
                key: key.to_string(),
                api: "GetObject",
                size,
                // The SDK's stalled-stream protection applies.
                idle: None,
            },
            |e| error_chain(e),
        );
        Ok(GetResult {
            meta: ObjectMeta {
                key: key.clone(),
                size,
                modified,
            },
            stream,
        })
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let client = self.client().await;
        match client
            .head_object()
            .bucket(self.bucket())
            .key(self.object_name(key))
            .send()
            .await
        {
            Ok(out) => {
                self.seen_bucket();
                Ok(ObjectMeta {
                    key: key.clone(),
                    size: out.content_length().unwrap_or(0).max(0) as u64,
                    modified: system_time(out.last_modified()),
                })
            }
            Err(err) => {
                let e = self.error(Operation::Head, "HeadObject", key, err);
                if e.is_not_found() {
                    self.check_bucket_after_404(Operation::Head, key).await?;
                }
                Err(e)
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let client = self.client().await;
        let full_prefix = format!("{}{}", self.inner.opts.prefix, prefix);
        let target = format!("{prefix:?}");
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut start_after: Option<String> = None;
        loop {
            let page = client
                .list_objects_v2()
                .bucket(self.bucket())
                .prefix(&full_prefix)
                .set_continuation_token(token.take())
                .set_start_after(start_after.take())
                .send()
                .await
                .map_err(|e| self.error(Operation::List, "ListObjectsV2", &target, e))?;
            self.seen_bucket();
            for object in page.contents() {
                let Some(name) = object.key() else { continue };
                let Some(rest) = name.strip_prefix(self.inner.opts.prefix.as_str()) else {
                    continue;
                };
                // Objects pgark did not write may have names that are no keys.
                let Ok(key) = Key::new(rest) else { continue };
                if !key.as_str().starts_with(prefix) {
                    continue;
                }
                out.push(ObjectMeta {
                    key,
                    size: object.size().unwrap_or(0).max(0) as u64,
                    modified: system_time(object.last_modified()),
                });
            }
            if page.is_truncated() != Some(true) {
                break;
            }
            match page.next_continuation_token().filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next.to_owned()),
                // A store that pages without tokens: go on after the last key.
                None => match page.contents().last().and_then(|o| o.key()) {
                    Some(last) => start_after = Some(last.to_owned()),
                    None => break,
                },
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        let client = self.client().await;
        match client
            .delete_object()
            .bucket(self.bucket())
            .key(self.object_name(key))
            .send()
            .await
        {
            Ok(_) => {
                self.seen_bucket();
                Ok(())
            }
            Err(err) => {
                let e = self.error(Operation::Delete, "DeleteObject", key, err);
                if e.is_not_found() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    async fn delete_many(&self, keys: &[Key]) -> Result<()> {
        self.delete_batches(keys).await
    }

    async fn leftovers(&self, before: std::time::SystemTime) -> Result<Vec<crate::Leftover>> {
        self.multipart_leftovers(before).await
    }

    async fn remove_leftover(&self, leftover: &crate::Leftover) -> Result<()> {
        self.abort_leftover(leftover).await
    }
}

/// A multipart upload to S3, created lazily: nothing is sent until a full
/// part is buffered, and an object smaller than one part goes up with a
/// single `PutObject` at [`MultipartUpload::complete`].
struct S3Upload {
    store: S3Store,
    key: Key,
    mode: PutMode,
    /// Bytes given but not yet sent, as given (a part of at least 5 MiB
    /// given at once is sent without copying), and their total length.
    pending: Vec<Bytes>,
    pending_len: usize,
    /// Bytes given so far.
    size: u64,
    started: Option<Started>,
    /// Completed or aborted: nothing for `Drop` to clean up.
    finished: bool,
}

struct Started {
    upload_id: String,
    next_part: i32,
    in_flight: VecDeque<JoinHandle<Result<CompletedPart>>>,
    done: Vec<CompletedPart>,
}

/// The smallest part sent when `parts` parts were sent already: 5 MiB,
/// growing by 5 MiB every 1000 parts.
fn part_threshold(parts: i32) -> usize {
    MIN_PART_SIZE * (1 + (parts.max(0) as usize) / 1000)
}

impl S3Upload {
    fn take_pending(&mut self) -> Bytes {
        let mut chunks = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.pop().expect("one chunk"),
            _ => {
                let mut joined = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
                for c in chunks {
                    joined.extend_from_slice(&c);
                }
                joined.freeze()
            }
        }
    }

    fn fail(&self, op: Operation, message: impl Into<String>) -> StoreError {
        StoreError::new(ErrorKind::Permanent, op, &self.store, &self.key, message)
    }

    /// Creates the S3 multipart upload.
    async fn start(&mut self) -> Result<()> {
        let store = &self.store;
        let client = store.client().await;
        let opts = &store.inner.opts;
        let mut req = client
            .create_multipart_upload()
            .bucket(store.bucket())
            .key(store.object_name(&self.key));
        if opts.checksum == S3Checksum::WhenSupported {
            req = req.checksum_algorithm(ChecksumAlgorithm::Crc32);
        }
        match &opts.sse {
            S3Sse::None => {}
            S3Sse::Aes256 => req = req.server_side_encryption(ServerSideEncryption::Aes256),
            S3Sse::Kms { key_id } => {
                req = req
                    .server_side_encryption(ServerSideEncryption::AwsKms)
                    .set_ssekms_key_id(key_id.clone())
            }
        }
        if let Some(class) = &opts.storage_class {
            req = req.storage_class(StorageClass::from(class.as_str()));
        }
        let out = req
            .send()
            .await
            .map_err(|e| store.error(Operation::PutPart, "CreateMultipartUpload", &self.key, e))?;
        store.seen_bucket();
        let upload_id = out
            .upload_id()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| self.fail(Operation::PutPart, "CreateMultipartUpload returned no upload id"))?
            .to_owned();
        self.started = Some(Started {
            upload_id,
            next_part: 1,
            in_flight: VecDeque::new(),
            done: Vec::new(),
        });
        Ok(())
    }

    /// Sends `data` as the next part, after waiting for the oldest part in
    /// flight if as many as allowed are.
    async fn send_part(&mut self, data: Bytes) -> Result<()> {
        if self.started.is_none() {
            self.start().await?;
        }
        let max_in_flight = self.store.inner.opts.parts_in_flight;
        let key = self.key.clone();
        let started = self.started.as_mut().expect("the upload was started");
        if started.next_part > MAX_PARTS {
            let e = StoreError::new(
                ErrorKind::Permanent,
                Operation::PutPart,
                &self.store,
                &key,
                format!("the object needs more than S3's {MAX_PARTS} parts"),
            );
            return Err(e);
        }
        // Reap finished parts; wait while too many are in flight.
        while let Some(front) = started.in_flight.front() {
            if !front.is_finished() && started.in_flight.len() < max_in_flight {
                break;
            }
            let handle = started.in_flight.pop_front().expect("a part in flight");
            started.done.push(join_part(&self.store, &key, handle).await?);
        }
        let part_number = started.next_part;
        started.next_part += 1;
        let store = self.store.clone();
        let upload_id = started.upload_id.clone();
        started.in_flight.push_back(tokio::spawn(async move {
            upload_part(store, key, upload_id, part_number, data).await
        }));
        Ok(())
    }

    /// Waits for every part in flight.
    async fn drain(&mut self) -> Result<()> {
        let key = self.key.clone();
        if let Some(started) = self.started.as_mut() {
            while let Some(handle) = started.in_flight.pop_front() {
                started.done.push(join_part(&self.store, &key, handle).await?);
            }
        }
        Ok(())
    }

    /// Cancels parts in flight and aborts the S3 upload, if one was made.
    async fn abort_inner(&mut self) -> Result<()> {
        self.finished = true;
        self.pending.clear();
        self.pending_len = 0;
        if let Some(started) = self.started.take() {
            abort_upload(self.store.clone(), self.key.clone(), started).await?;
        }
        Ok(())
    }

    async fn complete_inner(&mut self) -> Result<ObjectMeta> {
        let Some(_) = self.started else {
            // Everything fits in one request.
            let data = self.take_pending();
            self.finished = true;
            return self.store.put_object(&self.key, data, self.mode).await;
        };
        if self.pending_len > 0 {
            let last = self.take_pending();
            self.send_part(last).await?;
        }
        self.drain().await?;
        let store = self.store.clone();
        let client = store.client().await;
        let started = self.started.as_mut().expect("the upload was started");
        let mut parts = std::mem::take(&mut started.done);
        parts.sort_by_key(|p| p.part_number());
        let completed = CompletedMultipartUpload::builder().set_parts(Some(parts)).build();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut req = client
                .complete_multipart_upload()
                .bucket(store.bucket())
                .key(store.object_name(&self.key))
                .upload_id(&started.upload_id)
                .multipart_upload(completed.clone());
            if self.mode == PutMode::Create {
                req = req.if_none_match("*");
            }
            match req.send().await {
                Ok(_) => {
                    self.started = None;
                    self.finished = true;
                    return Ok(ObjectMeta {
                        key: self.key.clone(),
                        size: self.size,
                        modified: None,
                    });
                }
                Err(err) if is_conflict(&err) && attempt < CONFLICT_ATTEMPTS => {
                    tokio::time::sleep(conflict_backoff(attempt)).await;
                }
                Err(err) => {
                    return Err(store.error(Operation::Complete, "CompleteMultipartUpload", &self.key, err))
                }
            }
        }
    }
}

#[async_trait]
impl MultipartUpload for S3Upload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        if self.finished {
            return Err(self.fail(Operation::PutPart, "the upload was already completed or aborted"));
        }
        if data.is_empty() {
            return Ok(());
        }
        self.size += data.len() as u64;
        self.pending_len += data.len();
        self.pending.push(data);
        let parts_sent = self.started.as_ref().map_or(0, |s| s.next_part - 1);
        if self.pending_len >= part_threshold(parts_sent) {
            let part = self.take_pending();
            if let Err(e) = self.send_part(part).await {
                let _ = self.abort_inner().await;
                return Err(e);
            }
        }
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta> {
        if self.finished {
            return Err(self.fail(Operation::Complete, "the upload was already completed or aborted"));
        }
        match self.complete_inner().await {
            Ok(meta) => Ok(meta),
            Err(e) => {
                // Nothing may be left behind; the original error matters more.
                let _ = self.abort_inner().await;
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.abort_inner().await
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Some(started) = self.started.take() else {
            return;
        };
        for handle in &started.in_flight {
            handle.abort();
        }
        let (store, key) = (self.store.clone(), self.key.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let _ = abort_upload(store, key, started).await;
                });
            }
            Err(_) => {
                // No runtime to abort from: the parts stay until a lifecycle
                // rule removes them.
                eprintln!(
                    "pgark: multipart upload {} of {key} in {store} left unfinished",
                    started.upload_id
                );
            }
        }
    }
}

/// Uploads one part, returning what CompleteMultipartUpload needs of it.
async fn upload_part(
    store: S3Store,
    key: Key,
    upload_id: String,
    part_number: i32,
    data: Bytes,
) -> Result<CompletedPart> {
    let client = store.client().await;
    let len = data.len() as i64;
    let out = client
        .upload_part()
        .bucket(store.bucket())
        .key(store.object_name(&key))
        .upload_id(upload_id)
        .part_number(part_number)
        .content_length(len)
        .body(aws_sdk_s3::primitives::ByteStream::from(data))
        .customize()
        .config_override(upload_timeouts(&store.inner.opts.timeouts, len as u64))
        .send()
        .await
        .map_err(|e| store.error(Operation::PutPart, "UploadPart", &key, e))?;
    let etag = out.e_tag().ok_or_else(|| {
        StoreError::new(
            ErrorKind::Permanent,
            Operation::PutPart,
            &store,
            &key,
            format!("UploadPart of part {part_number} returned no ETag"),
        )
    })?;
    Ok(CompletedPart::builder()
        .part_number(part_number)
        .e_tag(etag)
        .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
        .build())
}

async fn join_part(
    store: &S3Store,
    key: &Key,
    handle: JoinHandle<Result<CompletedPart>>,
) -> Result<CompletedPart> {
    match handle.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StoreError::new(
            ErrorKind::Transient,
            Operation::PutPart,
            store,
            key,
            "a part upload was cancelled (the runtime is shutting down)",
        )),
    }
}

/// Stops the parts in flight and aborts the S3 upload. Parts whose requests
/// were under way when the abort was sent may still land, so S3 advises
/// aborting again: the abort is repeated until ListParts finds nothing.
async fn abort_upload(store: S3Store, key: Key, started: Started) -> Result<()> {
    for handle in &started.in_flight {
        handle.abort();
    }
    for handle in started.in_flight {
        let _ = handle.await;
    }
    let client = store.client().await;
    let name = store.object_name(&key);
    for _ in 0..3 {
        let result = client
            .abort_multipart_upload()
            .bucket(store.bucket())
            .key(&name)
            .upload_id(&started.upload_id)
            .send()
            .await;
        match result {
            Ok(_) => {}
            // Already gone (aborted before, or completed).
            Err(err) if err.code() == Some("NoSuchUpload") => return Ok(()),
            Err(err) => return Err(store.error(Operation::Abort, "AbortMultipartUpload", &key, err)),
        }
        let parts = client
            .list_parts()
            .bucket(store.bucket())
            .key(&name)
            .upload_id(&started.upload_id)
            .send()
            .await;
        match parts {
            Ok(out) if !out.parts().is_empty() => continue,
            _ => return Ok(()),
        }
    }
    Ok(())
}

fn is_conflict<E: ProvideErrorMetadata>(err: &SdkError<E>) -> bool {
    err.raw_response().map(|r| r.status().as_u16()) == Some(409)
        && err.code() == Some("ConditionalRequestConflict")
}

fn conflict_backoff(attempt: u32) -> Duration {
    let base = 50u64 << attempt.min(6);
    Duration::from_millis(base + rand::random::<u64>() % base)
}

#[derive(Debug, PartialEq, Eq)]
enum Class {
    NotFound,
    NoSuchBucket,
    Exists,
    WrongRegion(Option<String>),
    Denied,
    NoCredentials,
    /// Requests timed out waiting for an answer, the SDK's attempts spent.
    Unresponsive,
    Transient,
    Permanent,
}

/// Error codes S3 and S3-compatible stores use for throttling and passing
/// trouble.
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestTimeout",
    "RequestTimeoutException",
    "InternalError",
    "ServiceUnavailable",
    "ConditionalRequestConflict",
    "OperationAborted",
];

const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AllAccessDisabled",
    "AccountProblem",
    "InvalidSecurity",
    "MissingSecurityHeader",
];

fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(err: &SdkError<E>) -> Class {
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code();
    match err {
        // The SDK already made its attempts: the store accepts requests
        // and does not answer them. Retrying the whole operation again
        // would only delay the failure PostgreSQL and cron act on.
        SdkError::TimeoutError(_) => return Class::Unresponsive,
        SdkError::DispatchFailure(d) => {
            // A connect or first-byte timeout on every attempt: likewise.
            if d.is_timeout() {
                return Class::Unresponsive;
            }
            if d.is_io() {
                return Class::Transient;
            }
            if is_credentials_error(err) {
                return Class::NoCredentials;
            }
            return if d.is_user() {
                Class::Permanent
            } else {
                Class::Transient
            };
        }
        SdkError::ConstructionFailure(_) => {
            return if is_credentials_error(err) {
                Class::NoCredentials
            } else {
                Class::Permanent
            };
        }
        _ => {}
    }
    if code == Some("NoSuchBucket") {
        return Class::NoSuchBucket;
    }
    if matches!(code, Some("NoSuchKey") | Some("NotFound")) || (status == Some(404) && code.is_none()) {
        return Class::NotFound;
    }
    if status == Some(412) || code == Some("PreconditionFailed") {
        return Class::Exists;
    }
    if matches!(
        code,
        Some("PermanentRedirect")
            | Some("AuthorizationHeaderMalformed")
            | Some("IllegalLocationConstraintException")
    ) || status == Some(301)
    {
        let region = err
            .raw_response()
            .and_then(|r| r.headers().get("x-amz-bucket-region"))
            .map(str::to_owned);
        return Class::WrongRegion(region);
    }
    if code.is_some_and(|c| DENIED_CODES.contains(&c)) || status == Some(403) {
        return Class::Denied;
    }
    if code.is_some_and(|c| TRANSIENT_CODES.contains(&c)) {
        return Class::Transient;
    }
    match status {
        Some(408 | 429) => Class::Transient,
        Some(s) if s >= 500 => Class::Transient,
        Some(_) => Class::Permanent,
        // No response: something went wrong on the way.
        None => {
            if is_credentials_error(err) {
                Class::NoCredentials
            } else {
                Class::Transient
            }
        }
    }
}

/// Whether the SDK failed because it found no credentials (or the provider
/// failed), judged by the error chain.
fn is_credentials_error<E: std::error::Error + 'static>(err: &SdkError<E>) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some()
        {
            return true;
        }
        source = e.source();
    }
    let text = error_chain(err);
    text.contains("credentials") && (text.contains("no credentials") || text.contains("identity"))
}

/// `err` and its causes, `: `-separated, each said once (the SDK's errors
/// often repeat their cause's text).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// The most useful part of an SDK error for a one-line message.
fn short_detail<E: ProvideErrorMetadata>(err: &SdkError<E>, full: &str) -> String {
    let status = err.raw_response().map(|r| r.status().as_u16());
    match (status, err.code(), err.message()) {
        (Some(s), Some(code), Some(msg)) => format!("HTTP {s}, {code}: {msg}"),
        (Some(s), Some(code), None) => format!("HTTP {s}, {code}"),
        (Some(s), None, _) => format!("HTTP {s}: {full}"),
        _ => match err {
            SdkError::TimeoutError(_) => format!("timed out: {full}"),
            _ => full.to_owned(),
        },
    }
}

/// Remembers where the credentials in use came from, for error messages.
#[derive(Debug, Default)]
struct CredentialsTracker {
    state: Mutex<CredState>,
}

#[derive(Debug, Default)]
enum CredState {
    #[default]
    NotYetLoaded,
    Loaded(String),
    Failed(String),
}

impl CredentialsTracker {
    fn describe(&self) -> String {
        match &*self.state.lock().expect("credentials state") {
            CredState::NotYetLoaded => "(not loaded yet)".into(),
            CredState::Loaded(name) => name.clone(),
            CredState::Failed(msg) => format!("nowhere ({msg})"),
        }
    }

    fn describe_failure(&self) -> Option<String> {
        match &*self.state.lock().expect("credentials state") {
            CredState::Failed(msg) => Some(msg.clone()),
            _ => None,
        }
    }
}

/// A credentials provider that records the name of the provider that
/// answered (or why none did).
#[derive(Debug)]
struct Tracking {
    inner: SharedCredentialsProvider,
    tracker: Arc<CredentialsTracker>,
}

impl ProvideCredentials for Tracking {
    fn provide_credentials<'a>(&'a self) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::new(async move {
            let result = self.inner.provide_credentials().await;
            let state = match &result {
                Ok(creds) => CredState::Loaded(provider_name(creds)),
                Err(e) => CredState::Failed(error_chain(e)),
            };
            *self.tracker.state.lock().expect("credentials state") = state;
            result
        })
    }
}

/// The SDK's name of the provider that made `creds` (only its `Debug`
/// output shows it).
fn provider_name(creds: &Credentials) -> String {
    let debug = format!("{creds:?}");
    debug
        .split_once("provider_name: \"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(name, _)| name.to_owned())
        .unwrap_or_else(|| "an unnamed provider".into())
}

/// The first-byte bound of an upload of `len` bytes (see
/// [`S3Timeouts::first_byte`]).
fn upload_timeouts(timeouts: &S3Timeouts, len: u64) -> aws_sdk_s3::config::Builder {
    let body = Duration::from_secs(len / MIN_UPLOAD_RATE);
    let read = (timeouts.first_byte + body).min(timeouts.attempt);
    aws_sdk_s3::config::Builder::new().timeout_config(
        aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .read_timeout(read)
            .build(),
    )
}

/// The SDK client for `opts`: the environment's configuration (region,
/// credentials chain, endpoint variables) under the explicit options.
async fn build_client(opts: &S3Options, tracker: Arc<CredentialsTracker>) -> Client {
    use aws_sdk_s3::config::retry::RetryConfig;
    use aws_sdk_s3::config::timeout::TimeoutConfig;
    use aws_smithy_http_client::tls;

    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(opts.timeouts.connect)
        .read_timeout(opts.timeouts.first_byte)
        .operation_attempt_timeout(opts.timeouts.attempt)
        .build();
    let retry = RetryConfig::standard().with_max_attempts(opts.max_attempts);
    let stall = StalledStreamProtectionConfig::enabled()
        .grace_period(opts.timeouts.stall)
        .build();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        .timeout_config(timeouts)
        .retry_config(retry)
        .stalled_stream_protection(stall);
    if let Some(region) = &opts.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &opts.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    match &opts.credentials {
        S3Credentials::Chain => {}
        S3Credentials::Static {
            access_key_id,
            secret_access_key,
            session_token,
        } => {
            loader = loader.credentials_provider(Credentials::new(
                access_key_id,
                secret_access_key,
                session_token.clone(),
                None,
                "S3Options",
            ));
        }
        S3Credentials::Provider(p) => loader = loader.credentials_provider(p.clone()),
    }
    let sdk = loader.load().await;
    let (request_checksums, response_checksums) = match opts.checksum {
        S3Checksum::WhenSupported => (
            RequestChecksumCalculation::WhenSupported,
            ResponseChecksumValidation::WhenSupported,
        ),
        S3Checksum::WhenRequired => (
            RequestChecksumCalculation::WhenRequired,
            ResponseChecksumValidation::WhenRequired,
        ),
    };
    let mut config = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(opts.force_path_style)
        .request_checksum_calculation(request_checksums)
        .response_checksum_validation(response_checksums);
    if sdk.region().is_none() {
        config = config.region(Region::from_static(FALLBACK_REGION));
    }
    match sdk.credentials_provider() {
        Some(inner) => {
            config = config.credentials_provider(Tracking { inner, tracker });
        }
        None => {
            *tracker.state.lock().expect("credentials state") =
                CredState::Failed("no credentials provider is configured".into());
        }
    }
    Client::from_conf(config.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let o = S3Options::from_url("s3://bucket/a/b/").unwrap();
        assert_eq!((o.bucket.as_str(), o.prefix.as_str()), ("bucket", "a/b/"));
        let o = S3Options::from_url("s3://bucket").unwrap();
        assert_eq!((o.bucket.as_str(), o.prefix.as_str()), ("bucket", ""));
        let o = S3Options::from_url("s3://my.bucket-1/").unwrap();
        assert_eq!((o.bucket.as_str(), o.prefix.as_str()), ("my.bucket-1", ""));
        for bad in [
            "s3://",
            "s3:///x",
            "s3://b c/x",
            "file:///x",
            "s3://b/a//b",
            "s3://b/a/../b",
        ] {
            assert!(S3Options::from_url(bad).is_err(), "{bad}");
        }
        let store = S3Store::new(S3Options::from_url("s3://bucket/a/b/").unwrap()).unwrap();
        assert_eq!(store.to_string(), "s3://bucket/a/b");
        assert_eq!(store.object_name(&Key::new("wal/x").unwrap()), "a/b/wal/x");
    }

    #[test]
    fn options_are_checked() {
        let mut o = S3Options::from_url("s3://bucket/p").unwrap();
        o.endpoint = Some("127.0.0.1:9000".into());
        let err = S3Store::new(o.clone()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Permanent);
        assert!(err.to_string().contains("127.0.0.1:9000"), "{err}");
        o.endpoint = Some("http://127.0.0.1:9000".into());
        S3Store::new(o.clone()).unwrap();
        o.parts_in_flight = 0;
        assert!(S3Store::new(o).is_err());
    }

    #[test]
    fn sse_and_checksum_settings() {
        assert_eq!(S3Sse::parse(None, None), Ok(S3Sse::None));
        assert_eq!(S3Sse::parse(Some("none"), None), Ok(S3Sse::None));
        assert_eq!(S3Sse::parse(Some("AES256"), None), Ok(S3Sse::Aes256));
        assert_eq!(
            S3Sse::parse(Some("aws:kms"), None),
            Ok(S3Sse::Kms { key_id: None })
        );
        assert_eq!(
            S3Sse::parse(Some("aws:kms"), Some("k")),
            Ok(S3Sse::Kms {
                key_id: Some("k".into())
            })
        );
        assert_eq!(
            S3Sse::parse(None, Some("k")),
            Ok(S3Sse::Kms {
                key_id: Some("k".into())
            })
        );
        assert!(S3Sse::parse(Some("AES256"), Some("k")).is_err());
        assert!(S3Sse::parse(Some("des"), None).is_err());
        assert_eq!("when-required".parse(), Ok(S3Checksum::WhenRequired));
        assert_eq!("WHEN_SUPPORTED".parse(), Ok(S3Checksum::WhenSupported));
        assert!("always".parse::<S3Checksum>().is_err());
    }

    #[test]
    fn part_sizes_grow_to_fit_large_objects() {
        assert_eq!(part_threshold(0), MIN_PART_SIZE);
        assert_eq!(part_threshold(999), MIN_PART_SIZE);
        assert_eq!(part_threshold(1000), 2 * MIN_PART_SIZE);
        let total: u64 = (0..MAX_PARTS).map(|n| part_threshold(n) as u64).sum();
        assert!(total > 250 << 30, "{total}");
    }

    /// A service error as the SDK reports it for a HeadObject.
    fn service_error(
        status: u16,
        code: Option<&str>,
        headers: &[(&'static str, &'static str)],
    ) -> SdkError<aws_sdk_s3::operation::head_object::HeadObjectError> {
        use aws_sdk_s3::config::http::HttpResponse;
        use aws_sdk_s3::error::ErrorMetadata;
        use aws_sdk_s3::operation::head_object::HeadObjectError;
        use aws_sdk_s3::primitives::SdkBody;
        let mut meta = ErrorMetadata::builder().message("from the test");
        if let Some(code) = code {
            meta = meta.code(code);
        }
        let mut raw = HttpResponse::new(status.try_into().unwrap(), SdkBody::empty());
        for (k, v) in headers {
            raw.headers_mut().insert(*k, *v);
        }
        SdkError::service_error(HeadObjectError::generic(meta.build()), raw)
    }

    #[test]
    fn service_errors_are_classified() {
        let cases: &[(u16, Option<&str>, Class)] = &[
            (404, Some("NoSuchKey"), Class::NotFound),
            (404, None, Class::NotFound),
            (404, Some("NoSuchBucket"), Class::NoSuchBucket),
            (412, Some("PreconditionFailed"), Class::Exists),
            (412, None, Class::Exists),
            (403, Some("AccessDenied"), Class::Denied),
            (403, Some("InvalidAccessKeyId"), Class::Denied),
            (403, Some("SignatureDoesNotMatch"), Class::Denied),
            (400, Some("ExpiredToken"), Class::Denied),
            (403, None, Class::Denied),
            (
                400,
                Some("AuthorizationHeaderMalformed"),
                Class::WrongRegion(None),
            ),
            (503, Some("SlowDown"), Class::Transient),
            (503, None, Class::Transient),
            (500, Some("InternalError"), Class::Transient),
            (429, None, Class::Transient),
            (400, Some("RequestTimeout"), Class::Transient),
            (409, Some("ConditionalRequestConflict"), Class::Transient),
            (400, Some("InvalidArgument"), Class::Permanent),
            (400, Some("InvalidStorageClass"), Class::Permanent),
            (501, Some("NotImplemented"), Class::Transient),
        ];
        for (status, code, want) in cases {
            assert_eq!(
                &classify(&service_error(*status, *code, &[])),
                want,
                "{status} {code:?}"
            );
        }
        let moved = service_error(301, None, &[("x-amz-bucket-region", "eu-central-1")]);
        assert_eq!(classify(&moved), Class::WrongRegion(Some("eu-central-1".into())));
        assert!(is_conflict(&service_error(
            409,
            Some("ConditionalRequestConflict"),
            &[]
        )));
        assert!(!is_conflict(&service_error(412, Some("PreconditionFailed"), &[])));
    }

    #[tokio::test]
    async fn error_messages_name_bucket_operation_and_cause() {
        let store = S3Store::new(S3Options::from_url("s3://my-bucket/repo").unwrap()).unwrap();
        let k = Key::new("wal/x").unwrap();
        let e = store.error(
            Operation::Put,
            "PutObject",
            &k,
            service_error(403, Some("InvalidAccessKeyId"), &[]),
        );
        assert_eq!(e.kind(), ErrorKind::Permanent);
        let msg = e.to_string();
        for needle in [
            "put wal/x in s3://my-bucket/repo",
            "PutObject",
            "\"my-bucket\"",
            "HTTP 403",
            "InvalidAccessKeyId: from the test",
            "credentials from",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing in {msg}");
        }
        let e = store.error(
            Operation::Head,
            "HeadObject",
            &k,
            service_error(301, None, &[("x-amz-bucket-region", "eu-central-1")]),
        );
        assert_eq!(e.kind(), ErrorKind::Permanent);
        assert!(e.to_string().contains("but in eu-central-1"), "{e}");
        let e = store.error(
            Operation::Get,
            "GetObject",
            &k,
            service_error(503, Some("SlowDown"), &[]),
        );
        assert!(e.is_transient(), "{e}");
        assert!(e.to_string().contains("SlowDown"), "{e}");
        let e = store.error(
            Operation::Get,
            "GetObject",
            &k,
            service_error(404, Some("NoSuchKey"), &[]),
        );
        assert!(e.is_not_found());
        assert!(e.to_string().contains("wal/x"), "{e}");
    }

    #[test]
    fn provider_names_come_from_the_credentials() {
        let creds = Credentials::new("AKID", "secret", None, None, "EnvironmentVariable");
        assert_eq!(provider_name(&creds), "EnvironmentVariable");
    }
}
