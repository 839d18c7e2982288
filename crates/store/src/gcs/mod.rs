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
//! # Requests
//!
//! Every call is a documented GCS JSON API request sent through the shared
//! reqwest client of [`crate::http`]: `objects.list`, `objects.delete`,
//! `objects.get` for metadata (`head`) and media (`alt=media`, reads),
//! `objects.insert` as a multipart upload (single-request puts) or as a
//! resumable upload session (multipart uploads), and `buckets.get` (is the
//! bucket there after a 404?). Credentials come from Google's
//! `google-cloud-auth` (one token cache per store, a bearer token per
//! request). The code is split by concern: credentials in `auth`, statuses
//! and messages in `errors`, reads in `read`, single-request puts in `put`
//! and resumable uploads in `upload`.
//!
//! Every request has the time limits of [`HttpTimeouts`] (connecting, the
//! response headers of each attempt, the upload of its body included, and
//! the silence between two chunks of a response body) and is retried per
//! [`RetryOptions`]: transient failures only (408, 429, 5xx, I/O and
//! connection errors, time limits), at most `attempts` attempts, none
//! started after `total`, exponential backoff with jitter from
//! `base_backoff`, `Retry-After` honoured. What still fails after that is
//! reported as transient so that callers may retry the whole operation.
//!
//! # Guarantees and how they are kept
//!
//! - **Atomic puts.** A GCS object appears only once its upload (single
//!   request, or the last request of a resumable upload) has completed.
//! - **Create-only puts** send `ifGenerationMatch=0`, which GCS checks
//!   atomically when the object would be created (`412 Precondition
//!   Failed`, reported as [`ErrorKind::AlreadyExists`]); of racing
//!   create-only puts exactly one wins. Single-request puts are multipart
//!   (`uploadType=multipart`) uploads carrying their CRC32C in the metadata
//!   part, which GCS checks. Off GCS (an endpoint not on googleapis.com),
//!   a create-only resumable upload also looks for the object just before
//!   its last request: fake-gcs-server, the emulator the tests use, checks
//!   the precondition on multipart uploads but ignores it on resumable
//!   ones, where only that look (not atomic) protects it.
//! - **Checked uploads.** The CRC32C GCS reports in the object resource
//!   after an upload is compared with the one pgark computed; an object
//!   stored with other bytes is deleted and the put fails transiently.
//! - **Multipart uploads** are resumable upload sessions fed part by part
//!   (see `upload`): the chunk size is the first part's size cut to GCS's
//!   256 KiB granularity; each `put_part` sends its whole chunks
//!   (`Content-Range: bytes a-b/*`) and returns once GCS has persisted them
//!   (`308` with the `Range` it holds), the remainder waits for the next
//!   part, so an upload holds about one part in memory. A chunk whose
//!   request fails transiently is followed by a status query of the
//!   session (`Content-Range: bytes */*`) and sent again from the offset
//!   GCS persisted. The last request gives the total size and the CRC32C of
//!   the whole object (`X-Goog-Hash`), which GCS checks. An object that
//!   fits in one part is sent with a single request instead. Abort deletes
//!   the session (GCS answers `499`), and so does dropping an unfinished
//!   upload (in the background, best effort); a session nobody deleted is
//!   discarded by GCS after a week; either way nothing is ever visible.
//! - **Deletes** are idempotent (a 404 from a delete is success once the
//!   bucket is known to exist).
//! - **Reads** stream the object (see `read`) with the idle limit on each
//!   chunk. A read interrupted by a transient failure resumes from the
//!   offset reached (`Range: bytes=n-`) with `ifGenerationMatch` of the
//!   generation first read, and the generation of every resumed response is
//!   compared too, so a resumed read never mixes two versions of an
//!   object. The CRC32C of the whole read is checked against the
//!   `x-goog-hash` GCS sends as the last byte arrives, before that last
//!   chunk is handed out; a response without it is unchecked here (pgark's
//!   objects carry their own SHA-256 or BLAKE3 trailer, checked by the
//!   codec). A stream that ends before the object's size is an error,
//!   never a short object. Objects stored with a `Content-Encoding` are a
//!   permanent error naming them.
//!
//! # Errors
//!
//! 404 is [`ErrorKind::NotFound`] naming the object and the bucket;
//! whether the bucket exists is asked once after the first 404, and a
//! missing bucket is a permanent error naming it. 412 is
//! [`ErrorKind::AlreadyExists`]; 408, 429 and 5xx, timeouts, connection
//! failures and access tokens that could not be had for a passing reason
//! are transient; a 401 drops the cached access token and is tried once
//! more; 401 again, 403 and missing or unusable credentials are permanent. Messages name the bucket, the JSON
//! API call, the HTTP status and GCS's message, and where the credentials
//! came from (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's application
//! default credentials file, or the metadata server).

mod auth;
mod errors;
mod put;
mod read;
mod upload;

use crate::http::{encode_component, HttpClient};
use crate::{
    ErrorKind, GetResult, HttpTimeouts, Key, MultipartUpload, ObjectMeta, ObjectStore, Operation, PutMode,
    Result, RetryOptions, StoreError,
};
use async_trait::async_trait;
use bytes::Bytes;
use google_cloud_auth::credentials::AccessTokenCredentials;
use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The GCS JSON API endpoint.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// Resumable upload chunks must be multiples of this (except the last).
pub const CHUNK_GRANULARITY: usize = 256 << 10;

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
    /// Made on the first request; dropped (to be made again, with a new
    /// token) after a `401`.
    credentials: Mutex<Option<Result<Option<AccessTokenCredentials>, String>>>,
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
                credentials: Mutex::new(None),
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

    fn http(&self) -> &HttpClient {
        &self.inner.http
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

    /// `…/upload/storage/v1/b/<bucket>/o?uploadType=<kind>&…`, with
    /// `ifGenerationMatch=0` for create-only puts.
    fn upload_url(&self, kind: &str, name: Option<&str>, mode: PutMode) -> String {
        let mut url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType={kind}",
            self.inner.endpoint,
            encode_component(self.bucket()),
        );
        if let Some(name) = name {
            url.push_str("&name=");
            url.push_str(&encode_component(name));
        }
        if mode == PutMode::Create {
            url.push_str("&ifGenerationMatch=0");
        }
        url
    }

    fn endpoint_note(&self) -> String {
        match &self.inner.opts.endpoint {
            Some(e) => format!(" (endpoint {e})"),
            None => String::new(),
        }
    }

    /// The size, generation and modification time of `key` (`objects.get`
    /// for metadata).
    async fn object_resource(
        &self,
        op: Operation,
        key: &Key,
    ) -> Result<(u64, Option<i64>, Option<SystemTime>)> {
        let url = format!("{}?fields=name,size,generation,updated", self.object_url(key));
        let http = self.http().inner();
        let resp = self.send(op, "objects.get", key, || http.get(&url)).await?;
        match resp.status().as_u16() {
            200 => {}
            404 => return Err(self.not_found(op, key).await),
            _ => return Err(self.status_error(op, "objects.get", key, resp).await),
        }
        self.seen_bucket();
        let obj: ObjectResource = self.read_json(op, "objects.get", key, resp).await?;
        let size = obj.size(|m| StoreError::new(ErrorKind::Transient, op, self, key, m))?;
        Ok((
            size,
            obj.generation.as_deref().and_then(|g| g.parse().ok()),
            obj.modified(),
        ))
    }

    /// A JSON response body as `T`; transient errors if it cannot be read
    /// or is not one.
    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        op: Operation,
        api: &str,
        target: &(dyn fmt::Display + Sync),
        resp: reqwest::Response,
    ) -> Result<T> {
        let bad = |m: String| StoreError::new(ErrorKind::Transient, op, self, target, m);
        let body = crate::http::read_body(resp, self.http().timeouts.idle)
            .await
            .map_err(|e| bad(format!("reading the {api} response failed: {e}")))?;
        serde_json::from_slice(&body)
            .map_err(|e| bad(format!("the {api} response is not what GCS sends: {e}")))
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

/// The fields of a GCS object resource pgark reads.
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
    /// The CRC32C of the object's bytes, base64 of its four big-endian
    /// bytes.
    #[serde(default)]
    crc32c: Option<String>,
}

impl ObjectResource {
    /// `size` as a number.
    fn size(&self, bad: impl Fn(String) -> StoreError) -> Result<u64> {
        self.size
            .parse()
            .map_err(|_| bad(format!("object size {:?} is not a number", self.size)))
    }

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
        Ok(Box::new(upload::GcsUpload::new(self.clone(), key.clone(), mode)))
    }

    async fn get(&self, key: &Key) -> Result<GetResult> {
        self.read(key).await
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
        let http = self.http().inner();
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
            let page: ObjectList = self
                .read_json(Operation::List, "objects.list", &prefix, resp)
                .await?;
            let bad = |m: String| {
                StoreError::new(
                    ErrorKind::Transient,
                    Operation::List,
                    self,
                    prefix,
                    format!("objects.list: {m}"),
                )
            };
            for item in page.items {
                let Some(name) = item.name.strip_prefix(&self.inner.opts.prefix) else {
                    continue;
                };
                let Ok(key) = Key::new(name) else { continue };
                let size = item.size(bad)?;
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
        let http = self.http().inner();
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
        assert_eq!(
            store.upload_url("resumable", Some("a/b/wal/x+y"), PutMode::Create),
            "https://storage.googleapis.com/upload/storage/v1/b/bucket/o?uploadType=resumable\
             &name=a%2Fb%2Fwal%2Fx%2By&ifGenerationMatch=0"
        );
        assert_eq!(
            store.upload_url("multipart", None, PutMode::Overwrite),
            "https://storage.googleapis.com/upload/storage/v1/b/bucket/o?uploadType=multipart"
        );
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
}
