//! Access tokens of the GCS backend in the middle of an upload, against
//! fake-gcs-server behind the testkit proxy and a token endpoint on
//! 127.0.0.1: a token refresh that fails for a while is retried, and a
//! `401` gets a new token once instead of failing the upload.
//!
//! Its own test binary: it sets `GOOGLE_APPLICATION_CREDENTIALS` for the
//! whole process.
#![cfg(feature = "gcs")]

use bytes::Bytes;
use pgark_store::{
    GcsCredentials, GcsOptions, GcsStore, HttpTimeouts, Key, ObjectStore, ObjectStoreExt, PutMode,
};
use pgark_testkit::proxy::{HttpProxy, ProxyResponse, Reply};
use pgark_testkit::servers::fake_gcs_or_skip;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

const MIB: usize = 1 << 20;

fn token(value: &str) -> Reply {
    let mut r = ProxyResponse::new(200).with_header("content-type", "application/json");
    r.body = format!(r#"{{"access_token":"{value}","expires_in":3600,"token_type":"Bearer"}}"#).into_bytes();
    Reply::Send(r)
}

#[tokio::test(flavor = "multi_thread")]
async fn token_failures_mid_upload_are_retried() {
    let Some(server) = fake_gcs_or_skip("GCS access tokens") else {
        return;
    };
    server.create_bucket("tokens").unwrap();
    // The token endpoint: a token, then a failure, then another token.
    let token_requests = Arc::new(AtomicUsize::new(0));
    let tokens = HttpProxy::start(1, {
        let n = token_requests.clone();
        move |_, _| match n.fetch_add(1, SeqCst) {
            0 => token("tok-1"),
            1 => Reply::Send(ProxyResponse::new(503)),
            _ => token("tok-2"),
        }
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("user.json");
    let creds = serde_json::json!({
        "type": "authorized_user",
        "client_id": "pgark-test",
        "client_secret": "pgark-test",
        "refresh_token": "pgark-test",
        "token_uri": format!("{}/token", tokens.endpoint()),
    });
    std::fs::write(&file, creds.to_string()).unwrap();
    std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &file);

    // GCS: the first chunk sent with the first token is refused with 401
    // (the token expired early); status queries are answered as GCS does
    // (fake-gcs-server would finish the upload instead).
    let refused = Arc::new(AtomicUsize::new(0));
    let proxy = HttpProxy::start(server.port(), {
        let refused = refused.clone();
        move |req, upstream| {
            let session = req.method == "PUT" && req.target.contains("upload_id=");
            let query = req.header("content-range") == Some("bytes */*");
            if session && query {
                return Reply::Send(ProxyResponse::new(308));
            }
            if session
                && req.header("authorization") == Some("Bearer tok-1")
                && refused.fetch_add(1, SeqCst) == 0
            {
                return Reply::Send(ProxyResponse::new(401));
            }
            match upstream.forward(req) {
                Ok(r) => Reply::Send(r),
                Err(_) => Reply::Close,
            }
        }
    })
    .unwrap();
    let mut o = GcsOptions::from_url("gs://tokens/repo").unwrap();
    o.endpoint = Some(proxy.endpoint());
    o.credentials = GcsCredentials::Default;
    o.timeouts = HttpTimeouts {
        connect: Duration::from_secs(5),
        first_byte: Duration::from_secs(30),
        idle: Duration::from_secs(20),
    };
    let store = GcsStore::new(o).unwrap();
    let data: Vec<u8> = (0..MIB + MIB / 2).map(|i| (i % 251) as u8).collect();
    let k = Key::new("big").unwrap();
    let mut upload = store.put_multipart(&k, PutMode::Create).await.unwrap();
    upload
        .put_part(Bytes::copy_from_slice(&data[..MIB]))
        .await
        .unwrap();
    upload
        .put_part(Bytes::copy_from_slice(&data[MIB..]))
        .await
        .unwrap();
    upload.complete().await.unwrap();
    assert!(store.get_bytes(&k).await.unwrap() == data);

    assert_eq!(refused.load(SeqCst), 1, "the 401 was met");
    assert!(
        token_requests.load(SeqCst) >= 3,
        "{}",
        token_requests.load(SeqCst)
    );
    let chunks_with_new_token = proxy
        .requests()
        .iter()
        .filter(|r| r.method == "PUT" && !r.body.is_empty())
        .filter(|r| r.header("authorization") == Some("Bearer tok-2"))
        .count();
    assert!(chunks_with_new_token >= 1);
}
