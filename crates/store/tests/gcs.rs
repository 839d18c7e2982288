//! The GCS backend against fake-gcs-server on 127.0.0.1: the conformance
//! suite, prefix layout, large resumable uploads, and clear, prompt errors
//! for a missing bucket, unusable credentials and unreachable or silent
//! endpoints.
//!
//! The server listens on port 80 when the tests run as root, shared by the
//! tests running at the same time (each uses buckets of its own): the
//! resumable uploads of google-cloud-storage reach fake-gcs-server only
//! there (see `pgark_testkit::servers::FakeGcsServer`).
//!
//! fake-gcs-server ignores `ifGenerationMatch` on resumable uploads (it
//! checks it on single-request ones): there, create-only multipart uploads
//! are refused by the backend's look for the object before it completes.
//!
//! Needs fake-gcs-server (`.ci/install-deps.sh` installs it); with
//! `PGARK_TEST_SKIP_GCS=1` the tests skip where it cannot be started.
#![cfg(feature = "gcs")]

use bytes::Bytes;
use pgark_store::{
    put_stream, ErrorKind, GcsCredentials, GcsOptions, GcsStore, HttpTimeouts, Key, ObjectStore,
    ObjectStoreExt, Operation, PutMode, RetryOptions, UploadOptions,
};
use pgark_testkit::conformance as c;
use pgark_testkit::servers::{fake_gcs_or_skip, FakeGcsServer};
use std::sync::Arc;
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
    // The same through google-cloud-storage.
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
/// timeout ends each attempt (the JSON API requests) or the call (reads and
/// writes through google-cloud-storage, which has no per-attempt limit),
/// and the error is transient.
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
