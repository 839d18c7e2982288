//! Uploads and reads that go wrong in ways fake-gcs-server never does on
//! its own, made by the proxy: bytes changed on the way, futures dropped
//! midway, slow networks, encoded objects, and clear 404s.

use super::*;

/// Flips one byte of `body` at `at`, if it is that long.
fn garble(body: &mut [u8], at: usize) {
    if let Some(b) = body.get_mut(at) {
        *b ^= 1;
    }
}

/// Removes `"crc32c":"…",` from the metadata part of a multipart upload.
fn drop_metadata_crc32c(body: &mut Vec<u8>) {
    let needle = b"\"crc32c\":\"";
    let Some(start) = body.windows(needle.len()).position(|w| w == needle) else {
        return;
    };
    let value = start + needle.len();
    let Some(len) = body[value..].iter().position(|&b| b == b'"') else {
        return;
    };
    let mut end = value + len + 1;
    if body.get(end) == Some(&b',') {
        end += 1;
    }
    body.drain(start..end);
}

fn session_put(req: &ProxyRequest) -> bool {
    req.method == "PUT" && req.target.contains("upload_id=")
}

/// Polls `call` until the proxy got more than `before` session requests
/// (held there), then drops it, unfinished.
async fn drop_once_sent<T>(proxy: &HttpProxy, before: usize, call: impl std::future::Future<Output = T>) {
    let mut call = Box::pin(call);
    let sent = async {
        while proxy.requests().iter().filter(|r| session_put(r)).count() <= before {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        _ = &mut call => panic!("the call ended while its request was held"),
        _ = sent => {}
    }
    drop(call);
}

/// Waits up to 10 s for `done`.
async fn eventually(done: impl Fn() -> bool) -> bool {
    let until = Instant::now() + Duration::from_secs(10);
    while !done() && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

/// Bytes changed on their way to the server, with the `X-Goog-Hash` that
/// would have told it dropped: the CRC32C the server reports for what it
/// stored differs from the one of the bytes sent, so the upload fails
/// (transiently: put it again) and the object it made is deleted.
#[tokio::test(flavor = "multi_thread")]
async fn an_upload_stored_with_other_bytes_fails_and_is_deleted() {
    let Some(server) = fake_gcs_or_skip("GCS upload checksum") else {
        return;
    };
    server.create_bucket("stored").unwrap();
    let proxy = HttpProxy::start(server.port(), |req, upstream| {
        let mut req = req.clone();
        let resumable_last = session_put(&req) && req.header("x-goog-hash").is_some();
        let single = req.method == "POST" && req.target.contains("uploadType=multipart");
        if resumable_last || single {
            req.headers
                .retain(|(n, _)| !n.eq_ignore_ascii_case("x-goog-hash"));
            drop_metadata_crc32c(&mut req.body);
            // In the data, before a multipart body's closing boundary.
            let at = req.body.len().saturating_sub(100);
            garble(&mut req.body, at);
        }
        match forwarded(&req, upstream) {
            Ok(r) => Reply::Send(r),
            Err(reply) => reply,
        }
    })
    .unwrap();
    let store = GcsStore::new(options(&proxy.endpoint(), "gs://stored/repo")).unwrap();
    let direct = GcsStore::new(options(&server.endpoint(), "gs://stored/repo")).unwrap();

    let mut upload = store.put_multipart(&key("big"), PutMode::Create).await.unwrap();
    upload.put_part(Bytes::from(pattern(MIB, 5))).await.unwrap();
    upload.put_part(Bytes::from(pattern(MIB / 2, 6))).await.unwrap();
    let err = upload.complete().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("CRC32C") && msg.contains("deleted"), "{msg}");
    assert!(direct.head(&key("big")).await.unwrap_err().is_not_found());

    // A single-request put: refused by the server (it checks the CRC32C
    // of the metadata part) or caught the same way; never left behind.
    let put = store
        .put(&key("small"), Bytes::from(pattern(1000, 7)), PutMode::Create)
        .await;
    assert!(put.is_err(), "a garbled put succeeded");
    assert!(direct.head(&key("small")).await.unwrap_err().is_not_found());
}

/// A `put_part` whose future is dropped while its chunk is on the way
/// stops the upload: its session is deleted without waiting for the
/// upload to be dropped, later calls fail, and nothing is stored. A
/// `complete` dropped midway deletes its session too.
#[tokio::test(flavor = "multi_thread")]
async fn dropped_calls_stop_the_upload_and_delete_its_session() {
    let Some(server) = fake_gcs_or_skip("GCS cancelled uploads") else {
        return;
    };
    server.create_bucket("cancel").unwrap();
    let slow = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let proxy = HttpProxy::start(server.port(), {
        let slow = slow.clone();
        move |req, upstream| {
            if session_put(req) && slow.load(SeqCst) {
                // Slower than the caller is patient; then lost.
                std::thread::sleep(Duration::from_millis(1500));
                return Reply::Close;
            }
            match forwarded(req, upstream) {
                Ok(r) => Reply::Send(r),
                Err(reply) => reply,
            }
        }
    })
    .unwrap();
    let store = GcsStore::new(options(&proxy.endpoint(), "gs://cancel")).unwrap();
    let deletes_of = |id: &str| {
        proxy
            .requests()
            .iter()
            .filter(|r| r.method == "DELETE" && upload_id(r) == Some(id))
            .count()
    };
    let last_session = || {
        proxy
            .requests()
            .iter()
            .rev()
            .find(|r| r.method == "PUT")
            .and_then(upload_id)
            .map(str::to_owned)
            .expect("a chunk was sent")
    };

    let mut upload = store.put_multipart(&key("part"), PutMode::Create).await.unwrap();
    let chunks_before = proxy.requests().iter().filter(|r| session_put(r)).count();
    drop_once_sent(
        &proxy,
        chunks_before,
        upload.put_part(Bytes::from(pattern(MIB, 1))),
    )
    .await;
    let id = last_session();
    assert!(
        eventually(|| deletes_of(&id) == 1).await,
        "the session of the dropped put_part was not deleted"
    );
    let err = upload.put_part(Bytes::from(pattern(MIB, 2))).await.unwrap_err();
    assert!(err.to_string().contains("start it again"), "{err}");
    assert!(upload.complete().await.is_err());
    assert!(store.head(&key("part")).await.unwrap_err().is_not_found());

    slow.store(false, SeqCst);
    let mut upload = store
        .put_multipart(&key("complete"), PutMode::Overwrite)
        .await
        .unwrap();
    upload.put_part(Bytes::from(pattern(MIB, 3))).await.unwrap();
    let id = last_session();
    slow.store(true, SeqCst);
    let chunks_before = proxy.requests().iter().filter(|r| session_put(r)).count();
    drop_once_sent(&proxy, chunks_before, upload.complete()).await;
    assert!(
        eventually(|| deletes_of(&id) == 1).await,
        "the session of the dropped complete was not deleted"
    );
    assert!(store.head(&key("complete")).await.unwrap_err().is_not_found());
}

/// A large chunk on a slow network takes longer than the first-byte
/// limit to send: that is not a silent server, and the upload succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_upload_is_not_a_silent_server() {
    let Some(server) = fake_gcs_or_skip("GCS slow uploads") else {
        return;
    };
    server.create_bucket("slow").unwrap();
    let proxy = HttpProxy::start(server.port(), |req, upstream| match forwarded(req, upstream) {
        Ok(r) => Reply::Send(r),
        Err(reply) => reply,
    })
    .unwrap();
    let mut o = options(&proxy.endpoint(), "gs://slow");
    o.timeouts.first_byte = Duration::from_secs(1);
    o.retry.attempts = 2;
    let store = GcsStore::new(o).unwrap();
    proxy.throttle_uploads(8 * MIB as u64);
    let data = pattern(24 * MIB, 9);
    let started = Instant::now();
    let mut upload = store.put_multipart(&key("slow"), PutMode::Create).await.unwrap();
    upload.put_part(Bytes::from(data.clone())).await.unwrap();
    upload.complete().await.unwrap();
    assert!(
        started.elapsed() > Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    proxy.throttle_uploads(0);
    assert!(store.get_bytes(&key("slow")).await.unwrap() == data);
}

/// A corrupted read fails before its last chunk is handed out: a
/// consumer never sees every byte of an object that failed its check.
#[tokio::test(flavor = "multi_thread")]
async fn a_corrupted_read_withholds_its_last_chunk() {
    let Some(server) = fake_gcs_or_skip("GCS read checksum, last chunk") else {
        return;
    };
    let direct = store_on(&server, "withheld", "");
    let size = 2 * MIB + 7;
    direct
        .put(&key("obj"), Bytes::from(pattern(size, 3)), PutMode::Create)
        .await
        .unwrap();
    let proxy = HttpProxy::start(server.port(), |req, upstream| {
        let mut response = match forwarded(req, upstream) {
            Ok(r) => r,
            Err(reply) => return reply,
        };
        if media_get(req) {
            garble(&mut response.body, 10);
        }
        Reply::Send(response)
    })
    .unwrap();
    let store = GcsStore::new(options(&proxy.endpoint(), "gs://withheld")).unwrap();
    let mut stream = store.get(&key("obj")).await.unwrap().stream;
    let mut got = 0;
    let err = loop {
        match stream.next().await {
            Some(Ok(chunk)) => got += chunk.len(),
            Some(Err(e)) => break e,
            None => panic!("a corrupted read ended well"),
        }
    };
    assert!(err.to_string().contains("CRC32C"), "{err}");
    assert!(got < size, "all {got} bytes were handed out before the error");
    assert!(stream.next().await.is_none());
}

/// An object stored gzip-encoded (GCS would send it decompressed) is a
/// permanent error naming it, at once, never retried.
#[tokio::test(flavor = "multi_thread")]
async fn an_encoded_object_is_a_permanent_error() {
    let Some(server) = fake_gcs_or_skip("GCS encoded objects") else {
        return;
    };
    let direct = store_on(&server, "encoded", "repo");
    direct
        .put(&key("obj"), Bytes::from(pattern(5000, 1)), PutMode::Create)
        .await
        .unwrap();
    let proxy = HttpProxy::start(server.port(), |req, upstream| {
        let mut response = match forwarded(req, upstream) {
            Ok(r) => r,
            Err(reply) => return reply,
        };
        if media_get(req) {
            // As GCS answers for an object uploaded with Content-Encoding:
            // gzip: the stored (compressed) length, the body decompressed.
            response
                .headers
                .retain(|(n, _)| !n.to_ascii_lowercase().starts_with("x-goog-stored-content-"));
            response = response
                .with_header("x-goog-stored-content-encoding", "gzip")
                .with_header("x-goog-stored-content-length", "1234");
        }
        Reply::Send(response)
    })
    .unwrap();
    let store = GcsStore::new(options(&proxy.endpoint(), "gs://encoded/repo")).unwrap();
    let started = Instant::now();
    let err = store.get_bytes(&key("obj")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("\"repo/obj\"") && msg.contains("\"encoded\"") && msg.contains("gzip"),
        "{msg}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let gets = proxy.requests().into_iter().filter(media_get).collect::<Vec<_>>();
    assert_eq!(gets.len(), 1, "retried");
    assert_eq!(gets[0].header("accept-encoding"), Some("identity"));
}

/// A missing object and a missing bucket say which is missing.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_object_is_told_from_a_missing_bucket() {
    let Some(server) = fake_gcs_or_skip("GCS 404 wording") else {
        return;
    };
    let store = store_on(&server, "present", "repo");
    for err in [
        store.head(&key("wal/x")).await.unwrap_err(),
        store.get(&key("wal/x")).await.unwrap_err(),
    ] {
        assert!(err.is_not_found(), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("no such object") && msg.contains("\"repo/wal/x\"") && msg.contains("\"present\""),
            "{msg}"
        );
    }
    let missing = GcsStore::new(options(&server.endpoint(), "gs://absent/repo")).unwrap();
    let err = missing.head(&key("wal/x")).await.unwrap_err();
    assert!(!err.is_not_found(), "{err}");
    assert!(
        err.to_string().contains("bucket \"absent\" does not exist"),
        "{err}"
    );
}
