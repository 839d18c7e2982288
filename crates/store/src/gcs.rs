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
//! # Why the JSON API and not the `google-cloud-storage` crate
//!
//! Requests follow the documented GCS JSON API, sent with reqwest; only the
//! credentials come from Google's own crate (`google-cloud-auth`). The
//! official `google-cloud-storage` crate (1.x) was examined and not used:
//! listing and deleting objects exist only in its `StorageControl` client,
//! whose transport is gRPC (`gaxi::grpc::Client`), which the local
//! emulator (fake-gcs-server) does not speak; it builds its gRPC stack
//! (tonic, prost, generated protos) even for the HTTP-only calls; and its
//! resumable uploads lose the port of a non-default endpoint, so they fail
//! against an emulator unless it listens on port 80. Using it for reads
//! and single-request uploads only would have meant two clients with two
//! retry and error policies for one bucket.
//!
//! # Guarantees and how they are kept
//!
//! - **Atomic puts.** A GCS object appears only once its upload (single
//!   request, or the last request of a resumable upload) has completed.
//! - **Create-only puts** send `ifGenerationMatch=0`, which GCS checks
//!   atomically when the object would be created (`412 Precondition
//!   Failed`, reported as [`ErrorKind::AlreadyExists`]); of racing
//!   create-only puts exactly one wins. Single-request puts are multipart
//!   (`uploadType=multipart`) uploads. A create-only resumable upload also
//!   looks for the object just before its last request: fake-gcs-server,
//!   the emulator the tests use, checks the precondition on multipart
//!   uploads but ignores it on resumable ones, where only that look (not
//!   atomic) protects it.
//! - **Multipart uploads** are resumable uploads: each part is sent as soon
//!   as it arrives, cut to GCS's 256 KiB granularity (the remainder waits
//!   for the next part), so an upload holds at most one part and 256 KiB in
//!   memory. A chunk whose request fails transiently is re-sent from memory
//!   from the offset GCS reports as persisted. Abort deletes the upload
//!   session; an unfinished session is discarded by GCS after a week. An
//!   object that fits in one part is sent with a single request instead.
//! - **Deletes** are idempotent (a 404 from a delete is success once the
//!   bucket is known to exist).
//! - **Reads** stream the response body; a body that ends before its
//!   `Content-Length` is an error, never a short object.
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
//! Every request has the time limits of [`HttpTimeouts`] and is retried per
//! [`RetryOptions`] (exponential backoff with jitter, bounded attempts and
//! total time); what still fails after that is reported as transient so
//! that callers may retry the whole operation.

use crate::http::{body_of, encode_component, error_body, skip_bytes, Chunks, HttpClient, SendError};
use crate::{
    ErrorKind, GetResult, HttpTimeouts, Key, MultipartUpload, ObjectMeta, ObjectStore, Operation, PutMode,
    Result, RetryOptions, StoreError,
};
use async_trait::async_trait;
use bytes::Bytes;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::OnceCell;

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
    credentials: OnceCell<Result<Option<google_cloud_auth::credentials::AccessTokenCredentials>, String>>,
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

    fn upload_url(&self, upload_type: &str, key: &Key, mode: PutMode) -> String {
        let mut url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType={upload_type}&name={}",
            self.inner.endpoint,
            encode_component(self.bucket()),
            encode_component(&self.object_name(key))
        );
        if mode == PutMode::Create {
            url.push_str("&ifGenerationMatch=0");
        }
        url
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
        let detail = gcs_message(&error_body(resp).await);
        let bucket = self.bucket();
        let (kind, message) = match status {
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
        };
        StoreError::new(kind, op, self, target, message)
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
    async fn put_chunks(&self, key: &Key, chunks: &[Bytes], mode: PutMode) -> Result<ObjectMeta> {
        let size: usize = chunks.iter().map(Bytes::len).sum();
        let url = self.upload_url("multipart", key, mode);
        let boundary = format!("pgark-{:032x}", rand::random::<u128>());
        let metadata = serde_json::json!({ "name": self.object_name(key) });
        let head = Bytes::from(format!(
            "--{boundary}\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n\
             --{boundary}\r\ncontent-type: application/octet-stream\r\n\r\n"
        ));
        let tail = Bytes::from(format!("\r\n--{boundary}--\r\n"));
        let mut body = Vec::with_capacity(chunks.len() + 2);
        body.push(head);
        body.extend(chunks.iter().cloned());
        body.push(tail);
        let length: usize = body.iter().map(Bytes::len).sum();
        let content_type = format!("multipart/related; boundary={boundary}");
        let http = self.inner.http.inner();
        let resp = self
            .send(Operation::Put, "objects.insert", key, || {
                http.post(&url)
                    .header("content-type", &content_type)
                    .header("content-length", length)
                    .body(body_of(&body))
            })
            .await?;
        match resp.status().as_u16() {
            200 | 201 => {
                self.seen_bucket();
                Ok(ObjectMeta {
                    key: key.clone(),
                    size: size as u64,
                })
            }
            412 => Err(exists(self, Operation::Put, key)),
            _ => Err(self
                .status_error(Operation::Put, "objects.insert", key, resp)
                .await),
        }
    }
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
        self.put_chunks(key, &[data], mode).await
    }

    async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(GcsUpload {
            store: self.clone(),
            key: key.clone(),
            mode,
            pending: Chunks::default(),
            session: None,
            sent: 0,
        }))
    }

    async fn get(&self, key: &Key) -> Result<GetResult> {
        let url = format!("{}?alt=media", self.object_url(key));
        let http = self.inner.http.inner();
        let resp = self
            .send(Operation::Get, "objects.get", key, || http.get(&url))
            .await?;
        match resp.status().as_u16() {
            200 => {}
            404 => {
                self.check_bucket_after_404(Operation::Get, key).await?;
                return Err(StoreError::new(
                    ErrorKind::NotFound,
                    Operation::Get,
                    self,
                    key,
                    "no such object",
                ));
            }
            _ => return Err(self.status_error(Operation::Get, "objects.get", key, resp).await),
        }
        self.seen_bucket();
        let size = match resp.content_length() {
            Some(n) => n,
            None => {
                return Err(StoreError::new(
                    ErrorKind::Transient,
                    Operation::Get,
                    self,
                    key,
                    "objects.get response without Content-Length",
                ))
            }
        };
        Ok(GetResult {
            meta: ObjectMeta {
                key: key.clone(),
                size,
            },
            stream: crate::http::body_stream(
                resp,
                size,
                self.inner.http.timeouts.idle,
                self.to_string(),
                key.to_string(),
                "objects.get",
            ),
        })
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        let url = format!("{}?fields=name,size", self.object_url(key));
        let http = self.inner.http.inner();
        let resp = self
            .send(Operation::Head, "objects.get", key, || http.get(&url))
            .await?;
        match resp.status().as_u16() {
            200 => {}
            404 => {
                self.check_bucket_after_404(Operation::Head, key).await?;
                return Err(StoreError::new(
                    ErrorKind::NotFound,
                    Operation::Head,
                    self,
                    key,
                    "no such object",
                ));
            }
            _ => return Err(self.status_error(Operation::Head, "objects.get", key, resp).await),
        }
        self.seen_bucket();
        let bad = |m: String| StoreError::new(ErrorKind::Transient, Operation::Head, self, key, m);
        let body = crate::http::read_body(resp, self.inner.http.timeouts.idle)
            .await
            .map_err(|e| bad(format!("reading the objects.get response failed: {e}")))?;
        let obj: ObjectResource = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("the objects.get response is not an object resource: {e}")))?;
        let size = obj
            .size
            .parse()
            .map_err(|_| bad(format!("objects.get: size {:?} is not a number", obj.size)))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size,
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let full_prefix = format!("{}{prefix}", self.inner.opts.prefix);
        let base = format!(
            "{}/storage/v1/b/{}/o?prefix={}&maxResults={}&fields=items(name,size),nextPageToken",
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
                out.push(ObjectMeta { key, size });
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

/// A resumable upload, started when the first full chunk is there.
struct GcsUpload {
    store: GcsStore,
    key: Key,
    mode: PutMode,
    /// Received and not yet sent: less than one chunk granule once a part
    /// has been handled.
    pending: Chunks,
    /// The session URI, once started.
    session: Option<String>,
    /// Bytes GCS has persisted.
    sent: u64,
}

impl GcsUpload {
    async fn start(&mut self) -> Result<String> {
        if let Some(s) = &self.session {
            return Ok(s.clone());
        }
        let store = &self.store;
        let url = store.upload_url("resumable", &self.key, self.mode);
        let http = store.inner.http.inner();
        let resp = store
            .send(
                Operation::PutPart,
                "objects.insert (resumable)",
                &self.key,
                || {
                    http.post(&url)
                        .header("content-type", "application/json; charset=UTF-8")
                        .header("x-upload-content-type", "application/octet-stream")
                        .body("{}")
                },
            )
            .await?;
        match resp.status().as_u16() {
            200 | 201 => {}
            412 => return Err(exists(store, Operation::PutPart, &self.key)),
            _ => {
                return Err(store
                    .status_error(Operation::PutPart, "objects.insert (resumable)", &self.key, resp)
                    .await)
            }
        }
        store.seen_bucket();
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                StoreError::new(
                    ErrorKind::Transient,
                    Operation::PutPart,
                    store,
                    &self.key,
                    "the resumable upload was started without a session URI (no Location header)",
                )
            })?;
        self.session = Some(location.clone());
        Ok(location)
    }

    /// Sends `chunks` at offset `self.sent`; `total` is the object's size if
    /// these are its last bytes. Re-sends from memory what GCS did not
    /// persist when a request fails transiently.
    async fn send_chunk(&mut self, chunks: Vec<Bytes>, total: Option<u64>, op: Operation) -> Result<()> {
        let session = self.start().await?;
        let store = self.store.clone();
        let retry = store.inner.http.retry;
        let len: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        let start = self.sent;
        let end = start + len;
        let auth = store.authorization(op, &self.key).await?;
        let http = store.inner.http.inner();
        let started = std::time::Instant::now();
        let mut attempt = 1;
        loop {
            let from = self.sent;
            let rest = skip_bytes(&chunks, (from - start) as usize);
            let range = match (total, from == end) {
                (Some(t), true) => format!("bytes */{t}"),
                (Some(t), false) => format!("bytes {from}-{}/{t}", end - 1),
                (None, _) => format!("bytes {from}-{}/*", end - 1),
            };
            let mut req = http
                .put(&session)
                .header("content-range", range)
                .header("content-length", end - from)
                .body(body_of(&rest));
            if let Some(a) = &auth {
                req = req.header("authorization", a);
            }
            let failure = match store.inner.http.send_once(req).await {
                Ok(resp) => match resp.status().as_u16() {
                    200 | 201 if total.is_some() => {
                        self.sent = end;
                        return Ok(());
                    }
                    308 => {
                        let p = persisted(&resp).unwrap_or(0).clamp(start, end);
                        if p >= end && total.is_none() {
                            self.sent = end;
                            return Ok(());
                        }
                        if p > from {
                            // Not everything was taken: send the rest.
                            self.sent = p;
                            continue;
                        }
                        StoreError::new(
                            ErrorKind::Transient,
                            op,
                            &store,
                            &self.key,
                            format!("the resumable upload took none of the bytes from offset {from}"),
                        )
                    }
                    412 => return Err(exists(&store, op, &self.key)),
                    s if crate::http::is_transient_status(s) => {
                        store.status_error(op, "resumable upload", &self.key, resp).await
                    }
                    _ => return Err(store.status_error(op, "resumable upload", &self.key, resp).await),
                },
                Err(e) => store.send_error(op, "resumable upload", &self.key, e),
            };
            if attempt >= retry.attempts || started.elapsed() > retry.total {
                return Err(failure);
            }
            tokio::time::sleep(retry.backoff(attempt)).await;
            attempt += 1;
            // Ask how far GCS got before sending again.
            let query = || {
                let req = http
                    .put(&session)
                    .header("content-range", "bytes */*")
                    .header("content-length", 0);
                match &auth {
                    Some(a) => req.header("authorization", a),
                    None => req,
                }
            };
            let resp = store
                .inner
                .http
                .send(query)
                .await
                .map_err(|e| store.send_error(op, "resumable upload status", &self.key, e))?;
            match resp.status().as_u16() {
                308 => self.sent = persisted(&resp).unwrap_or(0).clamp(start, end),
                200 | 201 if total.is_some() => {
                    self.sent = end;
                    return Ok(());
                }
                _ => {
                    return Err(store
                        .status_error(op, "resumable upload status", &self.key, resp)
                        .await)
                }
            }
        }
    }
}

/// The number of bytes persisted, from a 308's `Range: bytes=0-N`.
fn persisted(resp: &reqwest::Response) -> Option<u64> {
    let range = resp.headers().get("range")?.to_str().ok()?;
    let last: u64 = range.trim().strip_prefix("bytes=0-")?.parse().ok()?;
    Some(last + 1)
}

#[async_trait]
impl MultipartUpload for GcsUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        self.pending.push(data);
        let ready = self.pending.len() / CHUNK_GRANULARITY * CHUNK_GRANULARITY;
        if ready == 0 {
            return Ok(());
        }
        let chunks = self.pending.take(ready);
        self.send_chunk(chunks, None, Operation::PutPart).await
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta> {
        let rest = self.pending.take(self.pending.len());
        if self.session.is_none() {
            return self.store.put_chunks(&self.key, &rest, self.mode).await;
        }
        let total = self.sent + rest.iter().map(|c| c.len() as u64).sum::<u64>();
        // GCS checks `ifGenerationMatch=0` atomically when the upload
        // finishes; this look first is for emulators that ignore it there.
        if self.mode == PutMode::Create {
            match self.store.head(&self.key).await {
                Ok(_) => {
                    let _ = self.cancel().await;
                    return Err(exists(&self.store, Operation::Complete, &self.key));
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    let _ = self.cancel().await;
                    return Err(e);
                }
            }
        }
        let result = self.send_chunk(rest, Some(total), Operation::Complete).await;
        match result {
            Ok(()) => {
                self.session = None;
                Ok(ObjectMeta {
                    key: self.key.clone(),
                    size: total,
                })
            }
            Err(e) => {
                let _ = self.cancel().await;
                Err(e)
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.cancel().await
    }
}

impl GcsUpload {
    /// Deletes the upload session (GCS answers 499; an unknown or finished
    /// session 404 or 410).
    async fn cancel(&mut self) -> Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        let store = &self.store;
        let http = store.inner.http.inner();
        let resp = store
            .send(Operation::Abort, "resumable upload cancel", &self.key, || {
                http.delete(&session).header("content-length", 0)
            })
            .await?;
        match resp.status().as_u16() {
            s if s < 300 || s == 404 || s == 410 || s == 499 => Ok(()),
            _ => Err(store
                .status_error(Operation::Abort, "resumable upload cancel", &self.key, resp)
                .await),
        }
    }
}

impl Drop for GcsUpload {
    fn drop(&mut self) {
        // An unfinished upload is cancelled in the background, if there is
        // a runtime to do it on.
        let Some(session) = self.session.take() else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let mut upload = GcsUpload {
            store: self.store.clone(),
            key: self.key.clone(),
            mode: self.mode,
            pending: Chunks::default(),
            session: Some(session),
            sent: self.sent,
        };
        handle.spawn(async move {
            let _ = upload.cancel().await;
        });
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
        assert!(store
            .upload_url("media", &k, PutMode::Create)
            .ends_with("?uploadType=media&name=a%2Fb%2Fwal%2Fx%2By&ifGenerationMatch=0"));
        assert!(store
            .upload_url("resumable", &k, PutMode::Overwrite)
            .ends_with("?uploadType=resumable&name=a%2Fb%2Fwal%2Fx%2By"));
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
