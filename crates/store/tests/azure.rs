//! The Azure backend against Azurite on 127.0.0.1 (started and stopped by
//! each test), which checks signatures like Azure: the conformance suite
//! with a signed account SAS and with a given SAS token, prefix layout,
//! large block uploads, and clear, prompt errors for a missing container,
//! a wrong key, a token without the needed permissions and unreachable
//! endpoints; and, against local servers that accept connections and then
//! fall silent, prompt transient errors (first-byte and idle limits).
//!
//! Needs Azurite (`.ci/install-deps.sh` installs it); with
//! `PGARK_TEST_SKIP_AZURE=1` the tests skip where it cannot be started.
#![cfg(feature = "azure")]

use bytes::Bytes;
use pgark_store::{
    put_stream, AzureCredentials, AzureOptions, AzureStore, ErrorKind, HttpTimeouts, Key, ObjectStore,
    ObjectStoreExt, Operation, PutMode, RetryOptions, UploadOptions,
};
use pgark_testkit::servers::{azurite_or_skip, Azurite, AZURITE_ACCOUNT, AZURITE_KEY};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;

fn key(s: &str) -> Key {
    Key::new(s).unwrap()
}

fn options(endpoint: &str, url: &str, credentials: AzureCredentials) -> AzureOptions {
    let mut o = AzureOptions::from_url(url, AZURITE_ACCOUNT, credentials).unwrap();
    o.endpoint = Some(endpoint.to_owned());
    o.credentials_source = "the test".into();
    o.timeouts = HttpTimeouts {
        connect: Duration::from_secs(5),
        first_byte: Duration::from_secs(60),
        idle: Duration::from_secs(20),
    };
    // Small pages, so that listing many keys pages.
    o.list_page_size = 100;
    o
}

fn key_credentials() -> AzureCredentials {
    AzureCredentials::AccessKey(AZURITE_KEY.into())
}

fn store_on(server: &Azurite, container: &str, prefix: &str) -> AzureStore {
    server.create_container(container).unwrap();
    AzureStore::new(options(
        &server.endpoint(),
        &format!("azure://{container}/{prefix}"),
        key_credentials(),
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_with_the_account_key() {
    let Some(server) = azurite_or_skip("Azure conformance (account key)") else {
        return;
    };
    let store = store_on(&server, "conformance", "some/repo");
    pgark_testkit::conformance::run_all(Arc::new(store), "conformance/").await;
    let whole = AzureStore::new(options(
        &server.endpoint(),
        "azure://conformance",
        key_credentials(),
    ))
    .unwrap();
    assert_eq!(whole.list("").await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_with_a_sas_token() {
    let Some(server) = azurite_or_skip("Azure conformance (SAS token)") else {
        return;
    };
    server.create_container("sas").unwrap();
    let token = format!("?{}", Azurite::sas("rwdlac", AZURITE_KEY));
    let store = AzureStore::new(options(
        &server.endpoint(),
        "azure://sas/repo",
        AzureCredentials::SasToken(token),
    ))
    .unwrap();
    pgark_testkit::conformance::run_all(Arc::new(store), "conformance/").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn prefix_layout_and_large_blobs() {
    let Some(server) = azurite_or_skip("Azure layout") else {
        return;
    };
    let store = store_on(&server, "layout", "deep/er/");
    let data: Vec<u8> = (0..20 * MIB + 12345).map(|i| (i * 7 % 251) as u8).collect();
    let chunks: Vec<pgark_store::Result<Bytes>> = data
        .chunks(3 * MIB + 17)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let meta = put_stream(
        &store,
        &key("wal/big"),
        futures::stream::iter(chunks),
        UploadOptions {
            part_size: 5 * MIB + 1,
            mode: PutMode::Create,
        },
    )
    .await
    .unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert!(store.get_bytes(&key("wal/big")).await.unwrap() == data);
    let whole = AzureStore::new(options(&server.endpoint(), "azure://layout", key_credentials())).unwrap();
    let listed: Vec<String> = whole
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key.to_string())
        .collect();
    assert_eq!(listed, ["deep/er/wal/big"]);
    assert_eq!(store.to_string(), "azure://layout/deep/er");
}

/// Every operation of `store` fails permanently, promptly, with a message
/// containing each of `needles`.
async fn every_operation_fails_permanently(store: &AzureStore, needles: &[&str]) {
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
    let mut upload = store.put_multipart(&k, PutMode::Create).await.unwrap();
    errors.push(match upload.put_part(Bytes::from(vec![0u8; MIB])).await {
        Err(e) => e,
        Ok(()) => upload.complete().await.unwrap_err(),
    });
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
async fn a_missing_container_is_a_clear_permanent_error() {
    let Some(server) = azurite_or_skip("Azure missing container") else {
        return;
    };
    let store = AzureStore::new(options(
        &server.endpoint(),
        "azure://no-such-container/repo",
        key_credentials(),
    ))
    .unwrap();
    // HEAD responses carry no body: Azure still names the error in a header.
    every_operation_fails_permanently(
        &store,
        &[
            "\"no-such-container\" does not exist",
            "azure://no-such-container/repo",
        ],
    )
    .await;
    assert!(!store.exists(&key("x")).await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_key_is_a_clear_permanent_error() {
    let Some(server) = azurite_or_skip("Azure wrong key") else {
        return;
    };
    server.create_container("guarded").unwrap();
    let wrong = "cGdhcmstdGVzdC1rZXktbm90LWEtc2VjcmV0";
    let store = AzureStore::new(options(
        &server.endpoint(),
        "azure://guarded/repo",
        AzureCredentials::AccessKey(wrong.into()),
    ))
    .unwrap();
    every_operation_fails_permanently(
        &store,
        &["\"guarded\"", "denied", "HTTP 403", "credentials from the test"],
    )
    .await;
}

/// A read-only SAS token: reads work, writes are refused permanently.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_without_write_permission_is_refused() {
    let Some(server) = azurite_or_skip("Azure read-only token") else {
        return;
    };
    let store = store_on(&server, "readonly", "repo");
    store
        .put(&key("a"), Bytes::from_static(b"x"), PutMode::Create)
        .await
        .unwrap();
    let token = Azurite::sas("rl", AZURITE_KEY);
    let reader = AzureStore::new(options(
        &server.endpoint(),
        "azure://readonly/repo",
        AzureCredentials::SasToken(token),
    ))
    .unwrap();
    assert_eq!(
        reader.get_bytes(&key("a")).await.unwrap(),
        Bytes::from_static(b"x")
    );
    assert_eq!(reader.list("").await.unwrap().len(), 1);
    let err = reader
        .put(&key("b"), Bytes::from_static(b"y"), PutMode::Create)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    assert!(err.to_string().contains("HTTP 403"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_endpoint_is_a_prompt_transient_error() {
    let port = pgark_testkit::pg::free_port().unwrap();
    let mut o = options(
        &format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
        "azure://container/repo",
        key_credentials(),
    );
    o.retry = RetryOptions {
        attempts: 2,
        ..RetryOptions::default()
    };
    let store = AzureStore::new(o).unwrap();
    let started = Instant::now();
    let err = store.head(&key("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert_eq!(err.operation(), Operation::Head);
    let msg = err.to_string();
    assert!(
        msg.contains("Get Blob Properties") && msg.contains("\"container\""),
        "{msg}"
    );
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

/// No key, no token, and no Entra ID identity anywhere: a permanent error
/// that says what was tried. The managed identity endpoint is a closed
/// local port (nothing may leave 127.0.0.1).
#[tokio::test(flavor = "multi_thread")]
async fn entra_id_without_an_identity_is_a_clear_permanent_error() {
    let port = pgark_testkit::pg::free_port().unwrap();
    // Read when the first request needs a token; no other test of this
    // binary uses Entra ID.
    std::env::set_var("IDENTITY_ENDPOINT", format!("http://127.0.0.1:{port}/token"));
    std::env::set_var("IDENTITY_HEADER", "pgark-test");
    std::env::set_var("AZURE_CONFIG_DIR", "/nonexistent/pgark-test/azure");
    std::env::remove_var("AZURE_FEDERATED_TOKEN_FILE");
    let mut o = options(
        &format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
        "azure://container/repo",
        AzureCredentials::EntraId,
    );
    o.credentials_source = "Entra ID".into();
    let store = AzureStore::new(o).unwrap();
    let started = Instant::now();
    let err = store.head(&key("x")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Permanent, "{err}");
    let msg = err.to_string();
    for needle in [
        "no Azure credentials",
        "\"container\"",
        "managed identity",
        "Azure CLI",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing in: {msg}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

/// A local server that accepts connections and answers each request read
/// with `answer` (nothing if empty), then holds the connection open. Stops
/// after a minute or when the returned flag is set; the thread returns how
/// many connections it accepted.
fn holding_server(answer: &'static [u8]) -> (u16, Arc<AtomicBool>, std::thread::JoinHandle<usize>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut held = Vec::new();
            listener.set_nonblocking(true).unwrap();
            let until = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                match listener.accept() {
                    Ok((mut conn, _)) => {
                        if !answer.is_empty() {
                            conn.set_nonblocking(false).unwrap();
                            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                            let mut request = Vec::new();
                            let mut buf = [0u8; 4096];
                            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                                match conn.read(&mut buf) {
                                    Ok(0) | Err(_) => break,
                                    Ok(n) => request.extend_from_slice(&buf[..n]),
                                }
                            }
                            let _ = conn.write_all(answer);
                            let _ = conn.flush();
                        }
                        held.push(conn);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
            held.len()
        }
    });
    (port, stop, accepted)
}

/// A server that accepts connections and never answers: the first-byte
/// limit ends each attempt, and the error is transient.
#[tokio::test(flavor = "multi_thread")]
async fn a_silent_endpoint_times_out() {
    let (port, stop, accepted) = holding_server(b"");
    let mut o = options(
        &format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
        "azure://container/repo",
        key_credentials(),
    );
    o.retry.attempts = 2;
    o.timeouts.first_byte = Duration::from_secs(1);
    let store = AzureStore::new(o).unwrap();
    let started = Instant::now();
    let err = store.list("").await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("List Blobs") && msg.contains("no response within"),
        "{msg}"
    );
    assert!(!msg.contains("sig=") || msg.contains("sig=REDACTED"), "{msg}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    stop.store(true, Ordering::Relaxed);
    assert!(accepted.join().unwrap() >= 2);
}

/// A download whose body stops coming: the idle limit ends the read with a
/// transient error rather than a short object or a hang.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_download_fails_promptly() {
    let (port, stop, accepted) = holding_server(
        b"HTTP/1.1 206 Partial Content\r\nContent-Length: 100\r\nContent-Range: bytes 0-99/100\r\n\
          Content-Type: application/octet-stream\r\nETag: \"x\"\r\n\r\n0123456789",
    );
    let mut o = options(
        &format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
        "azure://container/repo",
        key_credentials(),
    );
    o.timeouts.idle = Duration::from_secs(1);
    let store = AzureStore::new(o).unwrap();
    let started = Instant::now();
    let got = store.get(&key("wal/x")).await.unwrap();
    assert_eq!(got.meta.size, 100);
    let err = store.get_bytes(&key("wal/x")).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Transient, "{err}");
    assert_eq!(err.operation(), Operation::Read, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("after 10 of 100 bytes") && msg.contains("stalled"),
        "{msg}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}");
    drop(got);
    stop.store(true, Ordering::Relaxed);
    accepted.join().unwrap();
}
