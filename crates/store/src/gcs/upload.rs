//! Multipart uploads: GCS resumable upload sessions, fed part by part.
//!
//! - The session starts (`POST …/upload/storage/v1/b/<bucket>/o?
//!   uploadType=resumable&name=…`, with `ifGenerationMatch=0` for
//!   create-only uploads) once the first whole chunk is there; GCS answers
//!   with the session URI in `Location`. An object that fits in one part
//!   never starts one: `complete` sends it in a single request.
//! - Chunks are the first part's size cut to GCS's 256 KiB granularity,
//!   sent as `PUT <session>` with `Content-Range: bytes a-b/*`; GCS answers
//!   `308` with the `Range` it persisted (it may keep less than it got:
//!   the rest is sent again). What is left of a part waits for the next
//!   one, so an upload holds about one part in memory.
//! - A chunk that fails transiently (no answer, 408, 429, 5xx, an access
//!   token that could not be had, a first `401`, which also drops the
//!   cached token) is followed by a status query (`Content-Range: bytes
//!   */*`, or `*/<total>` for the last request) and sent again from the
//!   offset GCS persisted. The attempts and the total time of
//!   [`crate::RetryOptions`] count from the chunk's start, its status
//!   queries included; the first-byte limit of an attempt starts once its
//!   body was sent (see [`crate::HttpTimeouts::first_byte`]).
//! - The last request, and the status query that may finish it, give the
//!   total size (`bytes a-b/<total>`, or `*/<total>` when nothing is left)
//!   and the CRC32C of the whole object in `X-Goog-Hash`, which GCS checks
//!   before the object appears. The `crc32c` of the object resource GCS
//!   answers with is compared with it as well: an object stored with other
//!   bytes is deleted and the upload fails transiently (see
//!   `GcsStore::check_stored`).
//! - Abort deletes the session (GCS answers `499`); an upload dropped or
//!   failed before it completed deletes it in the background, and so does
//!   a `put_part` whose future is dropped before it returns (the upload is
//!   then stopped: what it sent may be incomplete). A `complete` dropped
//!   before its last request was answered deletes the session; dropped
//!   after, it may leave the object, whole and checked by GCS against
//!   `X-Goog-Hash`, as any lost answer would.
//! - The session URI must be https when the endpoint is (never a
//!   downgrade to clear text).
//!
//! Requests to the session URI carry the credentials only if it is on the
//! store's endpoint (the URI alone authorizes them).
//!
//! A create-only upload off GCS (an emulator endpoint) looks for the
//! object before its last request; GCS itself checks `ifGenerationMatch=0`
//! atomically and is not asked.
//!
//! fake-gcs-server, the emulator of the tests, finishes an upload when
//! asked for its status: against it (never against GCS), a chunk that
//! fails makes what was sent before it an object, and the upload then
//! fails with "GCS finished the upload before its last request". The tests
//! of failing chunks answer the status queries in a proxy, as GCS does.

use super::auth::Failed;
use super::errors::{exists, gcs_message};
use super::put::crc32c_base64;
use super::{GcsStore, ObjectResource, CHUNK_GRANULARITY};
use crate::http::{Chunks, Verdict};
use crate::{Key, MultipartUpload, ObjectMeta, ObjectStore, Operation, PutMode, Result};
use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE};

const API: &str = "objects.insert (resumable upload)";
const CANCEL_API: &str = "resumable upload cancel";

/// A multipart upload (see the module docs).
pub(super) struct GcsUpload {
    store: GcsStore,
    key: Key,
    mode: PutMode,
    /// Received and not yet sent: less than one chunk once a part has been
    /// handled.
    pending: Chunks,
    session: Option<Session>,
    /// Completed, aborted or failed: nothing more can be added.
    stopped: bool,
}

/// A resumable upload session GCS holds.
struct Session {
    uri: String,
    /// The URI is on the store's endpoint: its requests carry credentials.
    authorize: bool,
    /// Bytes per chunk: a multiple of [`CHUNK_GRANULARITY`].
    chunk: usize,
    /// Bytes GCS persisted: everything sent so far.
    persisted: u64,
    /// CRC32C of those bytes (updated only once GCS persisted them).
    crc: u32,
}

impl GcsUpload {
    pub(super) fn new(store: GcsStore, key: Key, mode: PutMode) -> GcsUpload {
        GcsUpload {
            store,
            key,
            mode,
            pending: Chunks::default(),
            session: None,
            stopped: false,
        }
    }

    /// Fails if the upload cannot go on.
    fn check_running(&self, op: Operation) -> Result<()> {
        if self.stopped {
            return Err(self.store.broken(
                op,
                API,
                &self.key,
                "the upload failed or ended earlier; start it again",
            ));
        }
        Ok(())
    }

    /// Starts a session with chunks of `chunk` bytes.
    async fn start(&mut self, chunk: usize) -> Result<()> {
        let store = &self.store;
        let op = Operation::PutPart;
        let name = store.object_name(&self.key);
        let url = store.upload_url("resumable", Some(&name), self.mode);
        let metadata = serde_json::json!({
            "name": name,
            "contentType": "application/octet-stream",
        })
        .to_string();
        let http = store.http().inner();
        let resp = store
            .send(op, API, &self.key, || {
                http.post(&url)
                    .header(CONTENT_TYPE, "application/json; charset=UTF-8")
                    .header("x-upload-content-type", "application/octet-stream")
                    .body(metadata.clone())
            })
            .await?;
        if !matches!(resp.status().as_u16(), 200 | 201) {
            return Err(store.upload_error(op, API, &self.key, resp).await);
        }
        store.seen_bucket();
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok());
        let uri =
            session_uri(&store.inner.endpoint, location).map_err(|m| store.broken(op, API, &self.key, m))?;
        self.session = Some(Session {
            authorize: store.is_on_endpoint(&uri),
            uri,
            chunk,
            persisted: 0,
            crc: 0,
        });
        Ok(())
    }

    /// Sends `pieces`, the bytes after those persisted, and returns once
    /// GCS persisted them all. With `total` (the last request) it returns
    /// GCS's answer with the object resource.
    ///
    /// The attempts and the total time of [`crate::RetryOptions`] count
    /// from this call's start, the status queries between attempts
    /// included.
    async fn send(
        &mut self,
        op: Operation,
        pieces: Vec<Bytes>,
        total: Option<u64>,
    ) -> Result<Option<reqwest::Response>> {
        let store = self.store.clone();
        let key = &self.key;
        let Some(session) = &mut self.session else {
            return Err(store.broken(op, API, key, "no upload session"));
        };
        let start = session.persisted;
        let end = start + pieces.iter().map(|p| p.len() as u64).sum::<u64>();
        let crc = pieces
            .iter()
            .fold(session.crc, |crc, p| crc32c::crc32c_append(crc, p));
        let total_text = total.map_or("*".to_owned(), |t| t.to_string());
        let hash = format!("crc32c={}", crc32c_base64(crc));
        let http = store.http().inner();
        let mut attempts = store.http().retry.start();
        let mut refreshed = false;
        // The first byte GCS has not persisted.
        let mut at = start;
        // After a failed attempt, ask GCS where it is before sending more.
        let mut ask = false;
        loop {
            let was_query = ask;
            let answered = if ask {
                query(&store, op, key, session, total, &hash).await?
            } else {
                let req = http.put(&session.uri);
                let (req, body) = if at < end {
                    let req = req
                        .header(CONTENT_RANGE, format!("bytes {at}-{}/{total_text}", end - 1))
                        .header(CONTENT_LENGTH, end - at);
                    (req, Some(slice_from(&pieces, (at - start) as usize)))
                } else {
                    let req = req
                        .header(CONTENT_RANGE, format!("bytes */{total_text}"))
                        .header(CONTENT_LENGTH, 0);
                    (req, None)
                };
                let req = match total {
                    Some(_) => req.header("x-goog-hash", &hash),
                    None => req,
                };
                store.send_once(op, key, session.authorize, req, body).await?
            };
            let before = at;
            let mut after = None;
            let failure = match answered {
                Ok(resp) => match resp.status().as_u16() {
                    308 => {
                        at = check_persisted(&store, op, key, persisted_of(&resp), start, end)?;
                        ask = false;
                        if at == end && total.is_none() {
                            session.persisted = end;
                            session.crc = crc;
                            return Ok(None);
                        }
                        if at > before || was_query {
                            // GCS kept part of the request, or said where
                            // it is: send the rest.
                            continue;
                        }
                        "GCS persisted nothing of the request".to_owned()
                    }
                    200 | 201 if total.is_some() => return Ok(Some(resp)),
                    200 | 201 => {
                        return Err(store.broken(
                            op,
                            API,
                            key,
                            "GCS finished the upload before its last request",
                        ))
                    }
                    401 if session.authorize && !refreshed && store.forget_token() => {
                        refreshed = true;
                        ask = true;
                        "HTTP 401 (the access token expired?)".to_owned()
                    }
                    s if crate::http::is_transient_status(s) => {
                        let header = resp.headers().get(reqwest::header::RETRY_AFTER);
                        after = crate::http::retry_after(header.and_then(|v| v.to_str().ok()));
                        ask = true;
                        format!("HTTP {s}{}", gcs_message(&crate::http::error_body(resp).await))
                    }
                    _ => return Err(session_error(&store, op, key, resp).await),
                },
                Err(e) => {
                    ask = true;
                    e.to_string()
                }
            };
            if !attempts.again(Verdict::Retry { after }).await {
                return Err(store.broken(
                    op,
                    API,
                    key,
                    format!("sending bytes {at}..{end} failed: {failure}"),
                ));
            }
        }
    }

    /// Takes `data` and sends the whole chunks there are.
    async fn feed(&mut self, data: Bytes) -> Result<()> {
        self.pending.push(data);
        if self.session.is_none() {
            let chunk = self.pending.len() / CHUNK_GRANULARITY * CHUNK_GRANULARITY;
            if chunk == 0 {
                return Ok(());
            }
            self.start(chunk).await?;
        }
        let chunk = self.session.as_ref().map_or(usize::MAX, |s| s.chunk);
        while self.pending.len() >= chunk {
            let pieces = self.pending.take(chunk);
            self.send(Operation::PutPart, pieces, None).await?;
        }
        Ok(())
    }

    /// Whether a create-only upload looks for the object before its last
    /// request: only off GCS itself (emulators such as fake-gcs-server
    /// ignore `ifGenerationMatch=0` on resumable uploads; GCS checks it
    /// atomically, and the look would only cost a request and need read
    /// access).
    fn looks_before_completing(&self) -> bool {
        self.mode == PutMode::Create && !is_gcs(&self.store.inner.endpoint)
    }

    /// Stops the upload: its session is deleted in the background.
    fn stop(&mut self) {
        self.stopped = true;
        if let Some(session) = self.session.take() {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let (store, key) = (self.store.clone(), self.key.clone());
                runtime.spawn(async move {
                    let _ = cancel(&store, &key, &session).await;
                });
            }
        }
    }
}

/// The session URI of a `Location` header: an absolute http(s) URL, and
/// an https one if `endpoint` is (the URI alone authorizes the upload's
/// requests and carries its bytes, which must not go out in clear text).
fn session_uri(endpoint: &str, location: Option<&str>) -> Result<String, String> {
    let Some(uri) = location.map(str::trim).filter(|u| !u.is_empty()) else {
        return Err("GCS answered without a session URI".into());
    };
    let https = uri.get(..8).is_some_and(|s| s.eq_ignore_ascii_case("https://"));
    let http = uri.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("http://"));
    if https || (http && !endpoint.starts_with("https://")) {
        return Ok(uri.to_owned());
    }
    Err(if http {
        format!("refusing the session URI {uri:?}: plain http for an https endpoint")
    } else {
        format!("the session URI {uri:?} is no http(s) URL")
    })
}

/// The offset GCS persisted according to a `308`'s `Range: bytes=0-n`
/// (none: nothing persisted).
fn persisted_of(resp: &reqwest::Response) -> Option<u64> {
    let Some(range) = resp.headers().get(reqwest::header::RANGE) else {
        return Some(0);
    };
    let last = range.to_str().ok()?.trim().strip_prefix("bytes=0-")?;
    last.parse::<u64>().ok()?.checked_add(1)
}

/// `persisted` if it lies within the request that started at `start` (GCS
/// cannot have lost what it acknowledged, nor stored more than it got).
fn check_persisted(
    store: &GcsStore,
    op: Operation,
    key: &Key,
    persisted: Option<u64>,
    start: u64,
    end: u64,
) -> Result<u64> {
    match persisted {
        Some(p) if (start..=end).contains(&p) => Ok(p),
        Some(p) => Err(store.broken(
            op,
            API,
            key,
            format!("GCS says it persisted {p} bytes while {start}..{end} were being sent"),
        )),
        None => Err(store.broken(op, API, key, "GCS answered 308 with an unreadable Range")),
    }
}

/// The bytes of `pieces` from `offset` on, without copying.
fn slice_from(pieces: &[Bytes], mut offset: usize) -> Vec<Bytes> {
    let mut out = Vec::with_capacity(pieces.len());
    for p in pieces {
        if offset >= p.len() {
            offset -= p.len();
        } else {
            out.push(p.slice(offset..));
            offset = 0;
        }
    }
    out
}

/// Asks GCS how much of the session it holds (one attempt: the caller
/// retries). The last request's query carries the whole object's CRC32C
/// (`hash`) as that request does.
async fn query(
    store: &GcsStore,
    op: Operation,
    key: &Key,
    session: &Session,
    total: Option<u64>,
    hash: &str,
) -> Result<Result<reqwest::Response, Failed>> {
    let range = format!("bytes */{}", total.map_or("*".to_owned(), |t| t.to_string()));
    let mut req = store
        .http()
        .inner()
        .put(&session.uri)
        .header(CONTENT_RANGE, &range)
        .header(CONTENT_LENGTH, 0);
    if total.is_some() {
        req = req.header("x-goog-hash", hash);
    }
    store.send_once(op, key, session.authorize, req, None).await
}

/// The error for an answer of the session URI that is not a success: 404
/// and 410 say GCS no longer knows the session (it expired, or was
/// deleted), which a new upload mends.
async fn session_error(
    store: &GcsStore,
    op: Operation,
    key: &Key,
    resp: reqwest::Response,
) -> crate::StoreError {
    match resp.status().as_u16() {
        s @ (404 | 410) => store.broken(
            op,
            API,
            key,
            format!("GCS no longer knows the upload session (HTTP {s}); start the upload again"),
        ),
        _ => store.upload_error(op, API, key, resp).await,
    }
}

/// Deletes the session; one GCS no longer knows is no error.
async fn cancel(store: &GcsStore, key: &Key, session: &Session) -> Result<()> {
    let http = store.http().inner();
    let resp = store
        .send_to(
            Operation::Abort,
            CANCEL_API,
            key,
            session.authorize,
            || http.delete(&session.uri).header(CONTENT_LENGTH, 0),
            None,
        )
        .await?;
    match resp.status().as_u16() {
        // 499 is GCS's "Client Closed Request": the session is gone.
        499 | 200 | 204 | 404 | 410 => Ok(()),
        _ => Err(store.status_error(Operation::Abort, CANCEL_API, key, resp).await),
    }
}

#[async_trait]
impl MultipartUpload for GcsUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        self.check_running(Operation::PutPart)?;
        // Dropped before it returns (a cancelled caller), the call leaves
        // the upload stopped and its session deleted, as abort does.
        let mut call = Call {
            upload: self,
            finished: false,
        };
        call.upload.feed(data).await?;
        call.finished = true;
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<ObjectMeta> {
        let op = Operation::Complete;
        self.check_running(op)?;
        let rest = self.pending.take(self.pending.len());
        let Some(session) = &self.session else {
            self.stopped = true;
            return self.store.put_chunks(&self.key, rest, self.mode).await;
        };
        let total = session.persisted + rest.iter().map(|p| p.len() as u64).sum::<u64>();
        let crc = rest
            .iter()
            .fold(session.crc, |crc, p| crc32c::crc32c_append(crc, p));
        // GCS checks `ifGenerationMatch=0` atomically when the upload
        // finishes; this look first is for emulators that ignore it there.
        // Its failures are no reason to fail the upload.
        if self.looks_before_completing() && self.store.head(&self.key).await.is_ok() {
            self.stop();
            return Err(exists(&self.store, op, &self.key));
        }
        let resp = match self.send(op, rest, Some(total)).await {
            Ok(Some(resp)) => resp,
            Ok(None) => {
                self.stop();
                return Err(self.store.broken(op, API, &self.key, "the upload did not finish"));
            }
            Err(e) => {
                self.stop();
                return Err(e);
            }
        };
        // Finished: there is no session left to delete.
        self.session = None;
        self.stopped = true;
        let store = self.store.clone();
        let object: ObjectResource = store.read_json(op, API, &self.key, resp).await?;
        store
            .check_stored(op, API, &self.key, &object, total, crc)
            .await?;
        Ok(ObjectMeta {
            key: self.key.clone(),
            size: total,
            modified: object.modified(),
        })
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        self.stopped = true;
        match self.session.take() {
            Some(session) => cancel(&self.store, &self.key, &session).await,
            None => Ok(()),
        }
    }
}

/// A call of [`GcsUpload::put_part`] under way: dropped unfinished (an
/// error, or the caller's future dropped midway), it stops the upload.
struct Call<'a> {
    upload: &'a mut GcsUpload,
    finished: bool,
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.upload.stop();
        }
    }
}

/// Whether `endpoint` is Google's own.
fn is_gcs(endpoint: &str) -> bool {
    let host = endpoint
        .strip_prefix("https://")
        .map(|rest| rest.split(['/', ':']).next().unwrap_or(""));
    host.is_some_and(|h| h == "storage.googleapis.com" || h.ends_with(".googleapis.com"))
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
    fn pieces_are_sliced_without_losing_bytes() {
        let pieces = [Bytes::from_static(b"abc"), Bytes::from_static(b"defgh")];
        let joined = |v: Vec<Bytes>| v.iter().flat_map(|b| b.iter().copied()).collect::<Vec<u8>>();
        assert_eq!(joined(slice_from(&pieces, 0)), b"abcdefgh");
        assert_eq!(joined(slice_from(&pieces, 2)), b"cdefgh");
        assert_eq!(joined(slice_from(&pieces, 3)), b"defgh");
        assert_eq!(joined(slice_from(&pieces, 7)), b"h");
        assert_eq!(joined(slice_from(&pieces, 8)), b"");
    }

    #[test]
    fn session_uris_never_downgrade() {
        let gcs = "https://storage.googleapis.com";
        let session = "https://storage.googleapis.com/upload/storage/v1/b/b/o?upload_id=x";
        assert_eq!(session_uri(gcs, Some(session)).unwrap(), session);
        let e = session_uri(gcs, Some("http://storage.googleapis.com/upload?upload_id=x")).unwrap_err();
        assert!(e.contains("plain http for an https endpoint"), "{e}");
        assert!(session_uri(gcs, Some("HTTP://evil/x")).is_err());
        assert!(session_uri(gcs, None)
            .unwrap_err()
            .contains("without a session URI"));
        assert!(session_uri(gcs, Some("/upload?upload_id=x")).is_err());
        // An emulator on plain http hands out plain http sessions.
        let local = "http://127.0.0.1:4443";
        assert!(session_uri(local, Some("http://127.0.0.1:4443/upload?upload_id=x")).is_ok());
        assert!(session_uri(local, Some("https://127.0.0.1:4443/upload?upload_id=x")).is_ok());
    }

    #[test]
    fn only_emulators_get_the_look_before_completing() {
        let upload = |endpoint: Option<&str>, mode| {
            let mut o = super::super::GcsOptions::from_url("gs://bucket").unwrap();
            o.endpoint = endpoint.map(str::to_owned);
            GcsUpload::new(GcsStore::new(o).unwrap(), Key::new("k").unwrap(), mode)
        };
        assert!(!upload(None, PutMode::Create).looks_before_completing());
        assert!(!upload(Some("https://storage.googleapis.com"), PutMode::Create).looks_before_completing());
        assert!(
            !upload(Some("https://private.googleapis.com:443"), PutMode::Create).looks_before_completing()
        );
        assert!(upload(Some("http://127.0.0.1:4443"), PutMode::Create).looks_before_completing());
        assert!(!upload(Some("http://127.0.0.1:4443"), PutMode::Overwrite).looks_before_completing());
    }

    fn answer(range: Option<&str>) -> reqwest::Response {
        let mut b = http::Response::builder().status(308);
        if let Some(r) = range {
            b = b.header("range", r);
        }
        reqwest::Response::from(b.body(String::new()).unwrap())
    }

    #[test]
    fn persisted_offsets() {
        assert_eq!(persisted_of(&answer(None)), Some(0));
        assert_eq!(persisted_of(&answer(Some("bytes=0-262143"))), Some(262144));
        assert_eq!(persisted_of(&answer(Some("bytes=0-0"))), Some(1));
        assert_eq!(persisted_of(&answer(Some("bytes=5-9"))), None);
        assert_eq!(persisted_of(&answer(Some("nonsense"))), None);
        let store = GcsStore::new(super::super::GcsOptions::from_url("gs://bucket").unwrap()).unwrap();
        let k = Key::new("k").unwrap();
        assert_eq!(
            check_persisted(&store, Operation::PutPart, &k, Some(10), 10, 20).unwrap(),
            10
        );
        assert_eq!(
            check_persisted(&store, Operation::PutPart, &k, Some(20), 10, 20).unwrap(),
            20
        );
        for bad in [Some(9), Some(21), None] {
            let e = check_persisted(&store, Operation::PutPart, &k, bad, 10, 20).unwrap_err();
            assert!(e.is_transient(), "{e}");
        }
    }
}
