//! What GCS's answers mean: statuses to [`ErrorKind`]s, messages that name
//! the bucket, the JSON API call, the status, GCS's message and where the
//! credentials came from, and the bucket check after a 404.
//!
//! Every status is classified in [`GcsStore::status_message`] alone; a 404
//! is told apart (missing bucket or missing object) by
//! [`GcsStore::not_found`], the one place that asks for the bucket.

use super::GcsStore;
use crate::http::{encode_component, error_body, SendError};
use crate::{ErrorKind, Key, Operation, Result, StoreError};
use std::fmt;
use std::sync::atomic::Ordering;

impl GcsStore {
    /// The error for a request that got no usable response.
    pub(super) fn send_error(
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

    /// The error for a response that is not a success. A 404 says "not
    /// found" without knowing what is missing: callers that can tell go
    /// through [`GcsStore::not_found`] first.
    pub(super) async fn status_error(
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
    pub(super) fn status_message(&self, api: &str, status: u16, body: &str) -> (ErrorKind, String) {
        let detail = gcs_message(body);
        let bucket = self.bucket();
        match status {
            // Only the bucket is missing where the call names nothing else.
            404 if matches!(api, "buckets.get" | "objects.list") => (
                ErrorKind::Permanent,
                format!("{api}: bucket {bucket:?} does not exist{}", self.endpoint_note()),
            ),
            404 => (
                ErrorKind::Permanent,
                format!(
                    "{api} on bucket {bucket:?}: not found (HTTP 404{detail}){}",
                    self.endpoint_note()
                ),
            ),
            412 => (ErrorKind::AlreadyExists, ALREADY_EXISTS.to_owned()),
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

    /// A transient error of `api` on `target` that is no HTTP status: an
    /// answer GCS should not give, a read cut short.
    pub(super) fn broken(
        &self,
        op: Operation,
        api: &str,
        target: &(dyn fmt::Display + Sync),
        what: impl fmt::Display,
    ) -> StoreError {
        StoreError::new(
            ErrorKind::Transient,
            op,
            self,
            target,
            format!(
                "{api} on bucket {:?}: {what}{}",
                self.bucket(),
                self.endpoint_note()
            ),
        )
    }

    /// After a 404: is the bucket there at all? Asked once; afterwards a 404
    /// means "no such object".
    pub(super) async fn check_bucket_after_404(
        &self,
        op: Operation,
        target: &(dyn fmt::Display + Sync),
    ) -> Result<()> {
        if self.inner.bucket_seen.load(Ordering::Relaxed) {
            return Ok(());
        }
        let url = format!(
            "{}/storage/v1/b/{}?fields=name",
            self.inner.endpoint,
            encode_component(self.bucket())
        );
        let http = self.http().inner();
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

    pub(super) fn seen_bucket(&self) {
        self.inner.bucket_seen.store(true, Ordering::Relaxed);
    }

    /// After a 404 for `key`: [`ErrorKind::NotFound`] naming the object and
    /// the bucket, or, if the bucket itself is missing, the permanent error
    /// naming the bucket (asked once, see
    /// [`GcsStore::check_bucket_after_404`]).
    pub(super) async fn not_found(&self, op: Operation, key: &Key) -> StoreError {
        if let Err(e) = self.check_bucket_after_404(op, key).await {
            return e;
        }
        StoreError::new(
            ErrorKind::NotFound,
            op,
            self,
            key,
            format!(
                "no such object: {:?} is not in bucket {:?}",
                self.object_name(key),
                self.bucket()
            ),
        )
    }

    /// The error for an upload's response that is not a success: a 404 is
    /// a missing bucket if [`GcsStore::check_bucket_after_404`] finds it
    /// missing, else classified as any other status (412: "already
    /// exists").
    pub(super) async fn upload_error(
        &self,
        op: Operation,
        api: &str,
        key: &Key,
        resp: reqwest::Response,
    ) -> StoreError {
        if resp.status().as_u16() == 404 {
            if let Err(e) = self.check_bucket_after_404(op, key).await {
                return e;
            }
        }
        self.status_error(op, api, key, resp).await
    }
}

const ALREADY_EXISTS: &str = "object already exists";

/// [`ErrorKind::AlreadyExists`] for `key`.
pub(super) fn exists(store: &GcsStore, op: Operation, key: &Key) -> StoreError {
    StoreError::new(ErrorKind::AlreadyExists, op, store, key, ALREADY_EXISTS)
}

/// `, message` from a GCS JSON error body (`{"error": {"message": ...}}`),
/// or the body itself if it is not one.
pub(super) fn gcs_message(body: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gcs::{GcsCredentials, GcsOptions};

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
                &["objects.insert on bucket \"my-bucket\": not found (HTTP 404, Not Found)"],
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
        // Only buckets.get and objects.list say the bucket is missing.
        for api in ["buckets.get", "objects.list"] {
            let e = store
                .status_error(Operation::List, api, &"wal/", response(404, ""))
                .await;
            assert!(
                e.to_string().contains("bucket \"my-bucket\" does not exist"),
                "{e}"
            );
        }
        // The 412 of an upload is "already exists" without asking anything.
        let e = store
            .upload_error(Operation::Complete, "objects.insert", &k, response(412, ""))
            .await;
        assert!(e.is_already_exists(), "{e}");
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
