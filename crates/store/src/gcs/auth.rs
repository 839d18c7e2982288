//! Credentials of the GCS backend and the requests that carry them:
//! Google's `google-cloud-auth` finds the application default credentials
//! and caches their access token; every request sends it as a bearer token.

use super::{GcsCredentials, GcsStore};
use crate::http::SendError;
use crate::{ErrorKind, Operation, Result, StoreError};
use std::fmt;
use std::path::PathBuf;

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

    /// The `Authorization` header value, or `None` for anonymous requests.
    pub(super) async fn authorization(
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
            Err(detail) => Err(no_credentials(detail.clone())),
        }
    }

    /// Sends what `make` builds with the credentials, retrying transient
    /// failures (see [`crate::http::HttpClient::send`]).
    pub(super) async fn send(
        &self,
        op: Operation,
        api: &'static str,
        target: &(dyn fmt::Display + Sync),
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        self.send_to(op, api, target, true, make).await
    }

    /// [`GcsStore::send`], with the credentials only if `authorize`: a
    /// resumable upload's session URI authorizes its requests by itself,
    /// and one outside the endpoint never sees the credentials.
    pub(super) async fn send_to(
        &self,
        op: Operation,
        api: &'static str,
        target: &(dyn fmt::Display + Sync),
        authorize: bool,
        make: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let auth = match authorize {
            true => self.authorization(op, target).await?,
            false => None,
        };
        self.http()
            .send(|| with_auth(make(), &auth))
            .await
            .map_err(|e| self.send_error(op, api, target, e))
    }

    /// Sends `req` once with the credentials: for the requests whose
    /// retries need more than sending them again (chunks of a resumable
    /// upload). The error is the transport's, for the caller to judge.
    pub(super) async fn send_once(
        &self,
        op: Operation,
        target: &(dyn fmt::Display + Sync),
        authorize: bool,
        req: reqwest::RequestBuilder,
    ) -> Result<Result<reqwest::Response, SendError>> {
        let auth = match authorize {
            true => self.authorization(op, target).await?,
            false => None,
        };
        Ok(self.http().send_once(with_auth(req, &auth)).await)
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
