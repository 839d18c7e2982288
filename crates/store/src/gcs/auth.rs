//! Credentials of the GCS backend and the requests that carry them:
//! Google's `google-cloud-auth` finds the application default credentials
//! and caches their access token; every request sends it as a bearer token.

use super::{GcsCredentials, GcsStore};
use crate::http::{SendError, Verdict};
use crate::{ErrorKind, Operation, Result, StoreError};
use bytes::Bytes;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A transient failure of one attempt.
#[derive(Debug)]
pub(super) enum Failed {
    /// No usable response.
    Send(SendError),
    /// No access token, for a reason that may pass.
    Token(StoreError),
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failed::Send(e) => e.fmt(f),
            Failed::Token(e) => f.write_str(e.message()),
        }
    }
}

/// The OAuth scope requests are authorised for.
const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

impl GcsStore {
    /// Where the credentials come from, for messages.
    pub(super) fn credentials_source(&self) -> String {
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

    /// Drops the credentials and their cached access token, so that the
    /// next request gets a new token; false if there are none (anonymous
    /// requests, or credentials that could not be made).
    pub(super) fn forget_token(&self) -> bool {
        let mut cached = self.inner.credentials.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*cached, Some(Ok(Some(_)))) {
            *cached = None;
            return true;
        }
        false
    }

    /// The `Authorization` header value, or `None` for anonymous requests.
    pub(super) async fn authorization(
        &self,
        op: Operation,
        target: &(dyn fmt::Display + Sync),
    ) -> Result<Option<String>> {
        let creds = {
            let mut cached = self.inner.credentials.lock().unwrap_or_else(|e| e.into_inner());
            cached
                .get_or_insert_with(|| match self.inner.opts.credentials {
                    GcsCredentials::Anonymous => Ok(None),
                    GcsCredentials::Default => google_cloud_auth::credentials::Builder::default()
                        .with_scopes([SCOPE])
                        .build_access_token_credentials()
                        .map(Some)
                        .map_err(|e| crate::http::error_chain(&e)),
                })
                .clone()
        };
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
                let limit = self.http().timeouts.first_byte;
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
            Err(detail) => Err(no_credentials(detail)),
        }
    }

    /// Sends what `make` builds with the credentials, retrying transient
    /// failures (see [`GcsStore::send_to`]).
    pub(super) async fn send(
        &self,
        op: Operation,
        api: &'static str,
        target: &(dyn fmt::Display + Sync),
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        self.send_to(op, api, target, true, make, None).await
    }

    /// Sends what `make` builds (with `body`, if any), with the credentials
    /// only if `authorize`: a resumable upload's session URI authorizes its
    /// requests by itself, and one outside the endpoint never sees the
    /// credentials.
    ///
    /// Retries within [`crate::RetryOptions`], from this call's start:
    /// no response, a transient status, and an access token that could not
    /// be had for a transient reason. A `401` with credentials drops the
    /// cached token and is tried again once with a new one (a token that
    /// expired or was revoked early). Returns the first other response, or
    /// the last one once the attempts or the time are used up.
    pub(super) async fn send_to(
        &self,
        op: Operation,
        api: &'static str,
        target: &(dyn fmt::Display + Sync),
        authorize: bool,
        make: impl Fn() -> reqwest::RequestBuilder,
        body: Option<&[Bytes]>,
    ) -> Result<reqwest::Response> {
        let mut attempts = self.http().retry.start();
        let mut refreshed = false;
        loop {
            let outcome = self
                .send_once(op, target, authorize, make(), body.map(<[Bytes]>::to_vec))
                .await?;
            let verdict = match &outcome {
                Ok(resp) => match resp.status().as_u16() {
                    401 if authorize && !refreshed && self.forget_token() => {
                        refreshed = true;
                        Verdict::Retry {
                            after: Some(Duration::ZERO),
                        }
                    }
                    s if crate::http::is_transient_status(s) => Verdict::Retry {
                        after: crate::http::retry_after(
                            resp.headers().get("retry-after").and_then(|v| v.to_str().ok()),
                        ),
                    },
                    _ => Verdict::Final,
                },
                Err(_) => Verdict::Retry { after: None },
            };
            if !attempts.again(verdict).await {
                return match outcome {
                    Ok(resp) => Ok(resp),
                    Err(Failed::Send(e)) => Err(self.send_error(op, api, target, e)),
                    Err(Failed::Token(e)) => Err(e),
                };
            }
        }
    }

    /// One attempt of `req` (with `body`), with the credentials if
    /// `authorize`: for the requests whose retries need more than sending
    /// them again (chunks of a resumable upload). `Err` is a permanent
    /// failure (no usable credentials); `Ok(Err)` a transient one for the
    /// caller to judge.
    pub(super) async fn send_once(
        &self,
        op: Operation,
        target: &(dyn fmt::Display + Sync),
        authorize: bool,
        req: reqwest::RequestBuilder,
        body: Option<Vec<Bytes>>,
    ) -> Result<Result<reqwest::Response, Failed>> {
        let auth = match authorize {
            true => match self.authorization(op, target).await {
                Ok(auth) => auth,
                Err(e) if e.is_transient() => {
                    // The next attempt asks for a token afresh rather than
                    // meet the cached failure.
                    self.forget_token();
                    return Ok(Err(Failed::Token(e)));
                }
                Err(e) => return Err(e),
            },
            false => None,
        };
        Ok(self
            .http()
            .send_once(with_auth(req, &auth), body)
            .await
            .map_err(Failed::Send))
    }

    /// Whether `url` is on this store's endpoint, so that it may see the
    /// credentials (a session URI GCS hands out always is).
    pub(super) fn is_on_endpoint(&self, url: &str) -> bool {
        url.strip_prefix(self.inner.endpoint.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    }
}

fn with_auth(req: reqwest::RequestBuilder, auth: &Option<String>) -> reqwest::RequestBuilder {
    match auth {
        Some(a) => req.header("authorization", a),
        None => req,
    }
}

/// gcloud's application default credentials file.
fn well_known_adc_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".config/gcloud/application_default_credentials.json"))
}
