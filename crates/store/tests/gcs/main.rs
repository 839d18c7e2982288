//! The GCS backend against fake-gcs-server on 127.0.0.1: the conformance
//! suite, prefix layout, large resumable uploads, reads and resumable
//! uploads that ride out cut connections and lost requests and answers,
//! aborted uploads, and clear, prompt errors for a missing bucket, unusable
//! credentials and unreachable or silent endpoints.
//!
//! fake-gcs-server ignores `ifGenerationMatch` on resumable uploads (it
//! checks it on single-request ones): there, create-only multipart uploads
//! are refused by the backend's look for the object before it completes.
//! The faults, and the status queries of resumable uploads (which
//! fake-gcs-server does not answer as GCS does), come from an HTTP proxy
//! in front of it (`pgark_testkit::proxy`).
//!
//! Needs fake-gcs-server (`.ci/install-deps.sh` installs it); with
//! `PGARK_TEST_SKIP_GCS=1` the tests skip where it cannot be started.
#![cfg(feature = "gcs")]

mod hardening;

use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use pgark_store::{
    put_stream, ErrorKind, GcsCredentials, GcsOptions, GcsStore, HttpTimeouts, Key, ObjectStore,
    ObjectStoreExt, Operation, PutMode, RetryOptions, UploadOptions,
};
use pgark_testkit::conformance as c;
use pgark_testkit::proxy::{HttpProxy, ProxyRequest, ProxyResponse, Reply};
use pgark_testkit::servers::{fake_gcs_or_skip, FakeGcsServer};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

fn key(s: &str) -> Key {
    Key::new(s).unwrap()
}

/// Options for `gs://bucket/prefix` on `endpoint`, anonymous, with short
/// timeouts.
fn options(endpoint: &str, url: &str) -> GcsOptions {
    let mut o = GcsOptions::from_url(url).unwrap();
    o.endpoint = Some(endpoint.to_owned());
    o.credentials = GcsCredentials::Anonymous;
    o.timeouts = HttpTimeouts {
        connect: Duration::from_secs(5),
        first_byte: Duration::from_secs(60),
        idle: Duration::from_secs(20),
    };
    // Small pages, so that listing many keys pages.
    o.list_page_size = 100;
    o
}

fn store_on(server: &FakeGcsServer, bucket: &str, prefix: &str) -> GcsStore {
    server.create_bucket(bucket).unwrap();
    GcsStore::new(options(&server.endpoint(), &format!("gs://{bucket}/{prefix}"))).unwrap()
}

/// The whole conformance suite.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance() {
    let Some(server) = fake_gcs_or_skip("GCS conformance") else {
        return;
    };
    let store = store_on(&server, "conformance", "some/repo");
    let shared: Arc<dyn ObjectStore> = Arc::new(store.clone());
    c::run_all(shared, "conformance/").await;
    // Nothing outside the repository's prefix was touched.
    let whole = GcsStore::new(options(&server.endpoint(), "gs://conformance")).unwrap();
    assert_eq!(whole.list("").await.unwrap(), vec![]);
}

/// Objects live under the URL's prefix, and the whole bucket works too.
#[tokio::test(flavor = "multi_thread")]
async fn prefix_layout() {
    let Some(server) = fake_gcs_or_skip("GCS prefix layout") else {
        return;
    };
    let store = store_on(&server, "layout", "deep/er/");
    store
        .put(&key("wal/a"), Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    let whole = GcsStore::new(options(&server.endpoint(), "gs://layout")).unwrap();
    let listed: Vec<String> = whole
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(listed, ["deep/er/wal/a"]);
    assert_eq!(store.to_string(), "gs://layout/deep/er");
    let sibling = GcsStore::new(options(&server.endpoint(), "gs://layout/deep/e")).unwrap();
    assert_eq!(sibling.list("").await.unwrap(), vec![]);
}

/// A large object in uneven parts goes through a resumable upload and
/// comes back whole; a create-only upload over it is refused; an aborted
/// one leaves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn large_resumable_uploads() {
    let Some(server) = fake_gcs_or_skip("GCS resumable uploads") else {
        return;
    };
    let store = store_on(&server, "large", "repo");
    let data: Vec<u8> = (0..20 * MIB + 12345).map(|i| (i * 7 % 251) as u8).collect();
    let chunks: Vec<pgark_store::Result<Bytes>> = data
        .chunks(3 * MIB + 17)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let meta = put_stream(
        &store,
        &key("big"),
        futures::stream::iter(chunks),
        UploadOptions {
            part_size: 5 * MIB + 1,
            mode: PutMode::Create,
        },
    )
    .await
    .unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert!(store.get_bytes(&key("big")).await.unwrap() == data);
    assert_eq!(store.head(&key("big")).await.unwrap().size, data.len() as u64);

    let mut upload = store.put_multipart(&key("big"), PutMode::Create).await.unwrap();
    upload.put_part(Bytes::from(vec![2u8; 3 * MIB])).await.unwrap();
    let err = upload.complete().await.unwrap_err();
    assert!(err.is_already_exists(), "{err}");
    assert!(store.get_bytes(&key("big")).await.unwrap() == data);

    let mut upload = store
        .put_multipart(&key("aborted"), PutMode::Create)
        .await
        .unwrap();
    upload.put_part(Bytes::from(vec![1u8; 3 * MIB])).await.unwrap();
    upload.abort().await.unwrap();
    assert!(store.head(&key("aborted")).await.unwrap_err().is_not_found());
}

/// Every operation of `store` fails permanently, promptly, with a message
/// containing each of `needles`.
async fn every_operation_fails_permanently(store: &GcsStore, needles: &[&str]) {
    let k = key("wal/000000010000000000000001");
    let started = Instant::now();
    let mut errors = vec![
        store
            .put(&k, Bytes::from_static(b"x"), PutMode::Create)
            .await
            .unwrap_err(),
        store.get(&k).await.unwrap_err(),
        store.head(&k).await.unwrap_err(),
        store.list("wal/").await.unwrap_err(),
        store.delete(&k).await.unwrap_err(),
    ];
    match store.put_multipart(&k, PutMode::Overwrite).await {
        Err(e) => errors.push(e),
        Ok(mut upload) => errors.push(match upload.put_part(Bytes::from(vec![0u8; MIB])).await {
            Err(e) => e,
            Ok(()) => upload.complete().await.unwrap_err(),
        }),
    }
    for e in &errors {
        assert_eq!(e.kind(), ErrorKind::Permanent, "{e}");
        let msg = e.to_string();
        for needle in needles {
            assert!(msg.contains(needle), "{needle:?} missing in: {msg}");
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bucket_is_a_clear_permanent_error() {
    let Some(server) = fake_gcs_or_skip("GCS missing bucket") else {
        return;
    };
    let store = GcsStore::new(options(&server.endpoint(), "gs://no-such-bucket/repo")).unwrap();
    every_operation_fails_permanently(
        &store,
        &["\"no-such-bucket\" does not exist", "gs://no-such-bucket/repo"],
    )
    .await;
    // Not "no such object", which would end a recovery early.
    assert!(!store.exists(&key("x")).await.unwrap_err().is_not_found());
}

/// Credentials that cannot be used (a credentials file that is not one):
/// a permanent error naming the bucket and where the credentials came from,
/// before any request.
#[tokio::test(flavor = "multi_thread")]
async fn unusable_credentials_are_a_clear_permanent_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("creds.json");
    std::fs::write(&file, r#"{"type": "no_such_type"}"#).unwrap();
    // The variable is read when the first request needs credentials; this
    // test binary's other tests use anonymous credentials.
    std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &file);
    let port = pgark_testkit::pg::free_port().unwrap();
    let mut o = options(&format!("http://127.0.0.1:{port}"), "gs://creds/repo");
    o.credentials = GcsCredentials::Default;
    let store = GcsStore::new(o).unwrap();
    let started = Instant::now();
    let err = store.head(&key("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    let msg = err.to_string();
    for needle in [
        "no usable Google Cloud credentials",
        "\"creds\"",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "creds.json",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing in: {msg}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Nothing listens: a transient error after bounded retries, fast.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_endpoint_is_a_prompt_transient_error() {
    let port = pgark_testkit::pg::free_port().unwrap();
    let mut o = options(&format!("http://127.0.0.1:{port}"), "gs://bucket/repo");
    o.retry = RetryOptions {
        attempts: 2,
        ..RetryOptions::default()
    };
    let store = GcsStore::new(o).unwrap();
    let started = Instant::now();
    let err = store.head(&key("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert_eq!(err.operation(), Operation::Head);
    let msg = err.to_string();
    assert!(msg.contains("objects.get") && msg.contains("\"bucket\""), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    // The same for a read.
    let err = store.get(&key("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("objects.get") && msg.contains(&format!("127.0.0.1:{port}")),
        "{msg}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

/// A server that accepts connections and never answers: the first-byte
/// timeout ends each attempt, and the error is transient.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_endpoint_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accepted = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut held = Vec::new();
            listener.set_nonblocking(true).unwrap();
            let until = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                match listener.accept() {
                    Ok((conn, _)) => held.push(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            held.len()
        }
    });
    let mut o = options(&format!("http://127.0.0.1:{port}"), "gs://bucket/repo");
    o.retry.attempts = 2;
    o.timeouts.first_byte = Duration::from_secs(1);
    let store = GcsStore::new(o).unwrap();
    let started = Instant::now();
    let err = store.list("").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.to_string().contains("objects.list"), "{err}");
    assert!(took < Duration::from_secs(10), "{took:?}");

    let k = key("wal/x");
    let mut upload = store.put_multipart(&k, PutMode::Create).await.unwrap();
    let started = Instant::now();
    let errors = [
        (store.get(&k).await.unwrap_err(), "objects.get"),
        (
            store
                .put(&k, Bytes::from_static(b"x"), PutMode::Create)
                .await
                .unwrap_err(),
            "objects.insert",
        ),
        (
            upload.put_part(Bytes::from(vec![0u8; MIB])).await.unwrap_err(),
            "resumable upload",
        ),
    ];
    let took = started.elapsed();
    for (err, api) in &errors {
        assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
        let msg = err.to_string();
        assert!(msg.contains(api) && msg.contains("no response within"), "{msg}");
    }
    assert!(took < Duration::from_secs(20), "{took:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(accepted.join().unwrap() >= 1);
}

// ---------------------------------------------------------------------------
// Faults between the backend and the server, made by a proxy
// ---------------------------------------------------------------------------

/// Bytes that differ at every offset from those of another `seed`.
fn pattern(len: usize, seed: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + seed) % 251) as u8).collect()
}

fn media_get(req: &ProxyRequest) -> bool {
    req.method == "GET" && req.target.contains("alt=media")
}

/// The server's answer to `req`, or a closed connection if it has none.
fn forwarded(req: &ProxyRequest, upstream: &pgark_testkit::proxy::Upstream) -> Result<ProxyResponse, Reply> {
    upstream.forward(req).map_err(|_| Reply::Close)
}

/// The generation of `object` in `bucket`, as the server says.
fn generation(server: &FakeGcsServer, bucket: &str, object: &str) -> String {
    let (status, body) = server
        .request("GET", &format!("/storage/v1/b/{bucket}/o/{object}"), b"")
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let resource: serde_json::Value = serde_json::from_str(&body).unwrap();
    resource["generation"].as_str().unwrap().to_owned()
}

/// A read whose connection is cut mid-body three times resumes each time
/// from the byte it reached, pinned to the generation it first read, and
/// returns the exact object.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_cut_mid_stream_resumes_where_it_stopped() {
    let Some(server) = fake_gcs_or_skip("GCS resumed reads") else {
        return;
    };
    server.create_bucket("resume").unwrap();
    let direct = GcsStore::new(options(&server.endpoint(), "gs://resume")).unwrap();
    let data = pattern(3 * MIB + 5, 1);
    direct
        .put(&key("obj"), Bytes::from(data.clone()), PutMode::Create)
        .await
        .unwrap();
    const CUT: usize = 700_001;
    let cuts = Arc::new(AtomicUsize::new(0));
    let proxy = HttpProxy::start(server.port(), {
        let cuts = cuts.clone();
        move |req, upstream| {
            let response = match forwarded(req, upstream) {
                Ok(r) => r,
                Err(reply) => return reply,
            };
            if media_get(req) && cuts.fetch_add(1, SeqCst) < 3 {
                return Reply::Cut { response, after: CUT };
            }
            Reply::Send(response)
        }
    })
    .unwrap();
    let store = GcsStore::new(options(&proxy.endpoint(), "gs://resume")).unwrap();
    let got = store.get(&key("obj")).await.unwrap();
    assert_eq!(got.meta.size, data.len() as u64);
    let chunks: Vec<Bytes> = got.stream.map(|c| c.unwrap()).collect().await;
    assert!(chunks.concat() == data, "the read returned other bytes");

    let reads: Vec<ProxyRequest> = proxy.requests().into_iter().filter(media_get).collect();
    assert_eq!(reads.len(), 4, "{reads:#?}");
    assert_eq!(reads[0].header("range"), None);
    let pinned = format!("ifGenerationMatch={}", generation(&server, "resume", "obj"));
    for (i, r) in reads.iter().enumerate().skip(1) {
        assert_eq!(r.header("range"), Some(format!("bytes={}-", i * CUT).as_str()));
        assert!(r.target.contains(&pinned), "{} lacks {pinned}", r.target);
    }
}

/// An object replaced while a read of it is cut off: the read fails
/// (transiently, so that the caller reads again) after handing out bytes of
/// the old version only, never bytes of both.
#[tokio::test(flavor = "multi_thread")]
async fn a_read_never_mixes_two_versions_of_an_object() {
    let Some(server) = fake_gcs_or_skip("GCS replaced while read") else {
        return;
    };
    server.create_bucket("replaced").unwrap();
    let direct = GcsStore::new(options(&server.endpoint(), "gs://replaced")).unwrap();
    let old = pattern(MIB + 3, 1);
    direct
        .put(&key("obj"), Bytes::from(old.clone()), PutMode::Create)
        .await
        .unwrap();
    let proxy = HttpProxy::start(server.port(), {
        let (server, replaced) = (server.clone(), Arc::new(AtomicUsize::new(0)));
        move |req, upstream| {
            let response = match forwarded(req, upstream) {
                Ok(r) => r,
                Err(reply) => return reply,
            };
            if media_get(req) && replaced.fetch_add(1, SeqCst) == 0 {
                let path = "/upload/storage/v1/b/replaced/o?uploadType=media&name=obj";
                let (status, body) = server.request("POST", path, &pattern(MIB + 3, 2)).unwrap();
                assert_eq!(status, 200, "{body}");
                return Reply::Cut {
                    response,
                    after: 100_000,
                };
            }
            Reply::Send(response)
        }
    })
    .unwrap();
    let store = GcsStore::new(options(&proxy.endpoint(), "gs://replaced")).unwrap();
    let mut stream = store.get(&key("obj")).await.unwrap().stream;
    let mut read = Vec::new();
    let err = loop {
        match stream.next().await {
            Some(Ok(chunk)) => read.extend_from_slice(&chunk),
            Some(Err(e)) => break e,
            None => panic!("the read ended without an error"),
        }
    };
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert_eq!(err.operation(), Operation::Read);
    assert!(err.to_string().contains("replaced"), "{err}");
    assert!(read.len() <= 100_000 && read[..] == old[..read.len()]);
    assert!(stream.next().await.is_none(), "nothing after the error");
}

/// A body that arrives with a byte changed fails the CRC32C check of the
/// whole read.
#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_read_fails_its_checksum() {
    let Some(server) = fake_gcs_or_skip("GCS read checksum") else {
        return;
    };
    let direct = store_on(&server, "garbled", "repo");
    direct
        .put(&key("obj"), Bytes::from(pattern(300_000, 3)), PutMode::Create)
        .await
        .unwrap();
    let proxy = HttpProxy::start(server.port(), |req, upstream| {
        let mut response = match forwarded(req, upstream) {
            Ok(r) => r,
            Err(reply) => return reply,
        };
        if media_get(req) && response.body.len() > 1000 {
            response.body[1000] ^= 1;
        }
        Reply::Send(response)
    })
    .unwrap();
    let store = GcsStore::new(options(&proxy.endpoint(), "gs://garbled/repo")).unwrap();
    let err = store.get_bytes(&key("obj")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert!(err.to_string().contains("CRC32C"), "{err}");
}

/// What the proxy of [`a_resumable_upload_survives_lost_chunks_and_answers`]
/// knows of the one upload session.
#[derive(Default)]
struct Session {
    /// Bytes the server holds.
    persisted: u64,
    /// Status queries answered.
    queries: usize,
    /// Chunks that did not start where the server was (fake-gcs-server
    /// would append them all the same).
    misplaced: Vec<String>,
    /// Offsets whose fault was injected.
    faulted: Vec<u64>,
}

/// Chunks of a resumable upload whose request is lost, whose answer is
/// lost after the server stored them, or that meet a 503: each time the
/// backend asks the session's status and sends the rest from the offset
/// the server persisted, never a byte twice, and the object comes out
/// whole, its CRC32C sent with the last request.
///
/// fake-gcs-server finishes an upload when asked for its status, so the
/// proxy answers the status queries as GCS does, from what it saw the
/// server persist.
#[tokio::test(flavor = "multi_thread")]
async fn a_resumable_upload_survives_lost_chunks_and_answers() {
    let Some(server) = fake_gcs_or_skip("GCS resumable upload faults") else {
        return;
    };
    server.create_bucket("faults").unwrap();
    let session = Arc::new(Mutex::new(Session::default()));
    let proxy = HttpProxy::start(server.port(), {
        let session = session.clone();
        move |req, upstream| {
            if !(req.method == "PUT" && req.target.contains("upload_id=")) {
                return match forwarded(req, upstream) {
                    Ok(r) => Reply::Send(r),
                    Err(reply) => reply,
                };
            }
            let mut s = session.lock().unwrap();
            let range = req.header("content-range").unwrap_or_default().to_owned();
            let (span, total) = range
                .strip_prefix("bytes ")
                .and_then(|r| r.split_once('/'))
                .expect("a Content-Range");
            if span == "*" && total.parse::<u64>().ok() != Some(s.persisted) {
                s.queries += 1;
                let mut answer = ProxyResponse::new(308);
                if s.persisted > 0 {
                    answer = answer.with_header("Range", &format!("bytes=0-{}", s.persisted - 1));
                }
                return Reply::Send(answer);
            }
            let start: u64 = match span.split_once('-') {
                Some((a, _)) => a.parse().unwrap(),
                None => s.persisted,
            };
            if start != s.persisted {
                let misplaced = format!("{range} while the server holds {}", s.persisted);
                s.misplaced.push(misplaced);
            }
            let fault = [
                (MIB as u64, "lost request"),
                (2 * MIB as u64, "lost answer"),
                (3 * MIB as u64, "503"),
            ]
            .into_iter()
            .find(|(at, _)| *at == start && !s.faulted.contains(at));
            if let Some((at, _)) = fault {
                s.faulted.push(at);
            }
            match fault {
                Some((_, "lost request")) => return Reply::Close,
                Some((_, "503")) => return Reply::Send(ProxyResponse::new(503)),
                _ => {}
            }
            let response = match forwarded(req, upstream) {
                Ok(r) => r,
                Err(reply) => return reply,
            };
            if response.status == 308 {
                let last = response.header("range").and_then(|r| r.strip_prefix("bytes=0-"));
                s.persisted = last.map_or(0, |l| l.parse::<u64>().unwrap() + 1);
            }
            match fault {
                Some((_, "lost answer")) => Reply::Close,
                _ => Reply::Send(response),
            }
        }
    })
    .unwrap();
    let store = GcsStore::new(options(&proxy.endpoint(), "gs://faults")).unwrap();
    let data = pattern(5 * MIB + 1234, 4);
    let parts: Vec<pgark_store::Result<Bytes>> =
        data.chunks(MIB).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
    let meta = put_stream(
        &store,
        &key("big"),
        futures::stream::iter(parts),
        UploadOptions {
            part_size: MIB,
            mode: PutMode::Create,
        },
    )
    .await
    .unwrap();
    assert_eq!(meta.size, data.len() as u64);

    let direct = GcsStore::new(options(&server.endpoint(), "gs://faults")).unwrap();
    assert!(
        direct.get_bytes(&key("big")).await.unwrap() == data,
        "other bytes stored"
    );
    let s = session.lock().unwrap();
    assert_eq!(s.faulted.len(), 3, "every fault was met");
    assert!(s.misplaced.is_empty(), "{:?}", s.misplaced);
    assert!(s.queries >= 3, "{} status queries", s.queries);
    let uploads: Vec<ProxyRequest> = proxy
        .requests()
        .into_iter()
        .filter(|r| r.method == "PUT" && !r.body.is_empty())
        .collect();
    let (last, chunks) = uploads.split_last().unwrap();
    for c in chunks {
        assert_eq!(c.body.len() % (256 << 10), 0, "{:?}", c.header("content-range"));
    }
    let crc = base64::engine::general_purpose::STANDARD.encode(crc32c::crc32c(&data).to_be_bytes());
    assert_eq!(last.header("x-goog-hash"), Some(format!("crc32c={crc}").as_str()));
    assert_eq!(
        last.header("content-range"),
        Some(format!("bytes {}-{}/{}", 5 * MIB, data.len() - 1, data.len()).as_str())
    );
}

/// The `upload_id` of a session request.
fn upload_id(req: &ProxyRequest) -> Option<&str> {
    let (_, rest) = req.target.split_once("upload_id=")?;
    Some(rest.split('&').next().unwrap_or(rest))
}

/// Abort deletes the session GCS holds, and so does dropping an unfinished
/// upload; neither leaves an object.
#[tokio::test(flavor = "multi_thread")]
async fn aborted_and_dropped_uploads_delete_their_sessions() {
    let Some(server) = fake_gcs_or_skip("GCS aborted uploads") else {
        return;
    };
    server.create_bucket("aborts").unwrap();
    let proxy = HttpProxy::start(server.port(), |req, upstream| match forwarded(req, upstream) {
        Ok(r) => Reply::Send(r),
        Err(reply) => reply,
    })
    .unwrap();
    let store = GcsStore::new(options(&proxy.endpoint(), "gs://aborts")).unwrap();
    let deletes_of = |id: &str| {
        proxy
            .requests()
            .iter()
            .filter(|r| r.method == "DELETE" && upload_id(r) == Some(id))
            .count()
    };
    let session_of_last_chunk = || {
        proxy
            .requests()
            .iter()
            .rev()
            .find(|r| r.method == "PUT")
            .and_then(upload_id)
            .map(str::to_owned)
            .expect("a chunk was sent")
    };

    let mut upload = store
        .put_multipart(&key("aborted"), PutMode::Create)
        .await
        .unwrap();
    upload.put_part(Bytes::from(vec![1u8; MIB])).await.unwrap();
    let id = session_of_last_chunk();
    assert_eq!(deletes_of(&id), 0);
    upload.abort().await.unwrap();
    assert_eq!(deletes_of(&id), 1);
    assert!(store.head(&key("aborted")).await.unwrap_err().is_not_found());

    let mut upload = store
        .put_multipart(&key("dropped"), PutMode::Overwrite)
        .await
        .unwrap();
    upload.put_part(Bytes::from(vec![2u8; MIB])).await.unwrap();
    let id = session_of_last_chunk();
    drop(upload);
    let until = Instant::now() + Duration::from_secs(10);
    while deletes_of(&id) == 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(deletes_of(&id), 1, "the dropped upload's session was not deleted");
    assert!(store.head(&key("dropped")).await.unwrap_err().is_not_found());
}
