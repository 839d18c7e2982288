//! Repositories in Azure Blob Storage, [`AzureStore`] (cargo feature
//! `azure`).
//!
//! # Layout
//!
//! The repository `azure://container/some/prefix` of storage account
//! `account` keeps the object under key `a/b` as the block blob
//! `some/prefix/a/b` in `container`; `azure://container` uses the whole
//! container. Azure takes `\` in a blob name for `/`, so a key's `\` is
//! written `%5C` in the blob name, and its `%` as `%25` (pgark's own keys
//! have neither). Blobs whose names are not valid [`Key`]s are ignored by
//! `list`.
//!
//! # Requests and credentials
//!
//! Every request goes through Microsoft's `azure_storage_blob` crate (1.x):
//! `BlockBlobClient::upload` (one `Put Blob`), `stage_block` and
//! `commit_block_list`, `BlobClient::download`, `get_properties` and
//! `delete`, `BlobContainerClient::list_blobs` (its pager follows
//! `NextMarker`). The crate has no account-key authorisation, so requests
//! are authorised with a shared access signature in the client's URL:
//! either one given ([`AzureCredentials::SasToken`],
//! `AZURE_STORAGE_SAS_TOKEN`), or an account SAS that pgark signs itself
//! from the account key ([`AzureCredentials::AccessKey`],
//! `AZURE_STORAGE_ACCESS_KEY`) with [`account_sas`], a fresh one valid for
//! an hour for every operation (clients are made per operation; they are
//! cheap, and share one HTTP client); or with Microsoft Entra ID bearer
//! tokens ([`AzureCredentials::EntraId`]) from the official
//! `azure_identity` crate, handed to the client as its `TokenCredential`
//! (the crate then insists on an `https` endpoint).
//!
//! The crate's HTTP pipeline is given pgark's own policy, so that the
//! Azure backend keeps the time limits and retries of the other REST
//! backends ([`HttpTimeouts`], [`RetryOptions`]):
//!
//! - its transport is the shared reqwest client (connect timeout, no
//!   redirects), wrapped so that each attempt gets its response headers
//!   within the first-byte limit and a response body that stays silent for
//!   the idle limit fails (the crate's own reqwest transport has fixed
//!   limits of its own, and its client options set none);
//! - its retry policy is replaced: the crate's exponential policy (1.1.0)
//!   jitters by at most 255 ms, sleeps `max(Retry-After, backoff)` for
//!   429/503 however long the server asks, and checks its total-time bound
//!   only before sleeping, so a `Retry-After` of an hour would hold a
//!   request for an hour. pgark's policy (a pipeline policy before the
//!   crate's, which is set to none) retries no response, 408, 429 and 5xx
//!   with exponential backoff and full jitter, honours `Retry-After` up to
//!   a minute, and starts no attempt after the total time.
//!
//! # Guarantees and how they are kept
//!
//! - **Atomic puts.** A blob written with `Put Blob` or committed with `Put
//!   Block List` becomes visible whole, at once.
//! - **Create-only puts** send `If-None-Match: *` with `Put Blob` and with
//!   `Put Block List`; Azure refuses atomically if the blob exists (`409
//!   BlobAlreadyExists` or `412 ConditionNotMet`, both reported as
//!   [`ErrorKind::AlreadyExists`]), so of racing create-only puts exactly one
//!   wins.
//! - **Multipart uploads** stage every part as an uncommitted block (`Put
//!   Block`, block ids unique to the upload) as soon as it arrives, so an
//!   upload holds one part in memory, and commit them in order with `Put
//!   Block List`. Uncommitted blocks are invisible; an aborted or abandoned
//!   upload leaves them to Azure, which discards them after a week (there is
//!   no call to delete them). Azure allows 50,000 blocks of up to 4000 MiB.
//!   (The crate's own partitioned `upload` wants the whole object at once,
//!   as `Bytes` or a seekable stream, so uploads in parts call
//!   `stage_block` and `commit_block_list` themselves.)
//! - **Deletes** are idempotent (`404 BlobNotFound` from a delete is
//!   success).
//! - **Reads** stream the response body: `download` is asked for one
//!   partition larger than any blob and no parallelism, so it sends a
//!   single ranged `Get Blob` and hands its body on unbuffered (smaller
//!   partitions would be fetched whole into memory, several at once). A
//!   body that ends before its `Content-Length` is an error, never a short
//!   object.
//!
//! # Errors
//!
//! Azure names every error in `x-ms-error-code`: `BlobNotFound` is
//! [`ErrorKind::NotFound`]; `ContainerNotFound` is permanent and says the
//! container does not exist; `BlobAlreadyExists`/412 is
//! [`ErrorKind::AlreadyExists`]; 403 (`AuthenticationFailed`,
//! `AuthorizationPermissionMismatch`, ...) is permanent and says where the
//! credentials came from; 408, 429, 5xx (`ServerBusy`, `OperationTimedOut`),
//! timeouts and connection failures are transient.

use crate::http::{
    encode_component, encode_path, error_chain, is_transient_status, retry_after, HttpClient, Verdict,
};
use crate::{
    ErrorKind, GetResult, HttpTimeouts, Key, MultipartUpload, ObjectMeta, ObjectStore, Operation, PutMode,
    Result, RetryOptions, StoreError,
};
use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::http::headers::HeaderName;
use azure_core::http::policies::{Policy, PolicyResult};
use azure_core::http::{AsyncRawResponse, ClientOptions, Context, Etag, Request, Transport, Url};
use azure_storage_blob::models::{
    BlobClientDownloadOptions, BlobClientGetPropertiesResultHeaders, BlobContainerClientListBlobsOptions,
    BlockBlobClientCommitBlockListOptions, BlockBlobClientUploadOptions, BlockLookupList,
};
use azure_storage_blob::{BlobClient, BlobClientOptions, BlobContainerClient, BlobContainerClientOptions};
use base64::Engine as _;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;
use std::num::NonZero;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The Blob service REST API version account SAS are signed for (`sv`).
/// Requests themselves carry the version of the `azure_storage_blob` crate.
pub const API_VERSION: &str = "2021-08-06";

/// How long one Entra ID credential may take to give its first token
/// (probing a managed identity endpoint that is not there, say).
const ENTRA_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// The OAuth scope of Entra ID tokens for blob storage (the crate asks for
/// the same).
const ENTRA_SCOPE: &str = "https://storage.azure.com/.default";

/// Azure's largest number of blocks in one blob.
const MAX_BLOCKS: usize = 50_000;

/// The partition size `download` is given: more than any blob holds
/// (Azure's limit is about 190 TiB), so one request reads it all.
const WHOLE_BLOB: u64 = 1 << 50;

/// Where requests get their authorisation.
#[derive(Clone, PartialEq, Eq)]
pub enum AzureCredentials {
    /// The storage account key (base64, as the portal shows it): pgark
    /// signs an account SAS with it.
    AccessKey(String),
    /// A SAS token (`sv=...&sig=...`, with or without a leading `?`)
    /// allowing read, write, delete, list, add and create on the container's
    /// blobs.
    SasToken(String),
    /// Microsoft Entra ID tokens (`azure_identity`) from the first of:
    /// workload identity (`AZURE_FEDERATED_TOKEN_FILE` with
    /// `AZURE_CLIENT_ID` and `AZURE_TENANT_ID`: AKS), managed identity
    /// (Azure VMs, App Service, Container Apps, Arc; `AZURE_CLIENT_ID` picks
    /// a user-assigned one), the Azure CLI or Azure Developer CLI login. The
    /// identity needs the role "Storage Blob Data Contributor".
    EntraId,
}

impl fmt::Debug for AzureCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AzureCredentials::AccessKey(_) => "AccessKey(..)",
            AzureCredentials::SasToken(_) => "SasToken(..)",
            AzureCredentials::EntraId => "EntraId",
        })
    }
}

/// Everything an [`AzureStore`] needs to know.
#[derive(Debug, Clone)]
pub struct AzureOptions {
    /// The storage account (`AZURE_STORAGE_ACCOUNT`).
    pub account: String,
    pub container: String,
    /// Prefix of every blob name: empty, or ending with `/`.
    pub prefix: String,
    /// The account's blob endpoint (`http://127.0.0.1:10000/devstoreaccount1`
    /// for Azurite); `None` for `https://<account>.blob.core.windows.net`.
    pub endpoint: Option<String>,
    pub credentials: AzureCredentials,
    /// Where the credentials came from, for error messages
    /// (`AZURE_STORAGE_ACCESS_KEY`, ...).
    pub credentials_source: String,
    pub timeouts: HttpTimeouts,
    pub retry: RetryOptions,
    /// Blobs asked for per `List Blobs` page (Azure allows up to 5000).
    pub list_page_size: u32,
}

impl AzureOptions {
    /// Options for the repository URL `azure://container[/prefix]` in
    /// `account`, authorised by `credentials`, with defaults for everything
    /// else.
    pub fn from_url(url: &str, account: &str, credentials: AzureCredentials) -> Result<AzureOptions, String> {
        let rest = url
            .strip_prefix("azure://")
            .ok_or_else(|| format!("{url:?} is not an azure://container/prefix URL"))?;
        let (container, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if container.is_empty() {
            return Err(format!("{url:?} names no container (azure://container/prefix)"));
        }
        let valid_container = (3..=63).contains(&container.len())
            && container
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !container.starts_with('-')
            && !container.contains("--");
        if !valid_container {
            return Err(format!("{url:?}: {container:?} is not a valid container name"));
        }
        let valid_account = (3..=24).contains(&account.len())
            && account
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid_account {
            return Err(format!("{account:?} is not a valid storage account name"));
        }
        Ok(AzureOptions {
            account: account.to_owned(),
            container: container.to_owned(),
            prefix: crate::http_prefix(url, prefix)?,
            endpoint: None,
            credentials,
            credentials_source: "the store's options".into(),
            timeouts: HttpTimeouts::default(),
            retry: RetryOptions::default(),
            list_page_size: 5000,
        })
    }
}

/// What an account SAS allows, for [`account_sas`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountSas<'a> {
    pub account: &'a str,
    /// `sp`: the permission letters in Azure's order (`rwdlac...`).
    pub permissions: &'a str,
    /// `ss`: the services (`b` for blobs).
    pub services: &'a str,
    /// `srt`: resource types (`s`ervice, `c`ontainer, `o`bject).
    pub resource_types: &'a str,
    /// `st`, `se`: ISO 8601 UTC times (`2026-01-01T00:00:00Z`).
    pub start: &'a str,
    pub expiry: &'a str,
    /// `spr`: `https` or `https,http`.
    pub protocol: &'a str,
    /// `sv`: the signed version.
    pub version: &'a str,
}

/// Signs an account shared access signature with the account key (its
/// base64 form) and returns the SAS query string (without `?`).
///
/// The string to sign is, for versions 2020-12-06 and later, the account
/// name, permissions, services, resource types, start, expiry, IP range
/// (empty), protocol, version and encryption scope (empty), each followed by
/// a newline; the signature is its HMAC-SHA256 under the decoded key, in
/// base64.
pub fn account_sas(sas: &AccountSas<'_>, key_base64: &str) -> Result<String, String> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(key_base64.trim())
        .map_err(|e| format!("the account key is not valid base64: {e}"))?;
    let string_to_sign = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n\n{}\n{}\n\n",
        sas.account,
        sas.permissions,
        sas.services,
        sas.resource_types,
        sas.start,
        sas.expiry,
        sas.protocol,
        sas.version
    );
    let signature = hmac_sha256_base64(&key, string_to_sign.as_bytes());
    Ok(format!(
        "sv={}&ss={}&srt={}&sp={}&st={}&se={}&spr={}&sig={}",
        encode_component(sas.version),
        encode_component(sas.services),
        encode_component(sas.resource_types),
        encode_component(sas.permissions),
        encode_component(sas.start),
        encode_component(sas.expiry),
        encode_component(sas.protocol),
        encode_component(&signature)
    ))
}

fn hmac_sha256_base64(key: &[u8], data: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A repository in an Azure Blob Storage container. Cheap to clone; clones
/// share one HTTP client.
#[derive(Clone)]
pub struct AzureStore {
    inner: Arc<Inner>,
}

struct Inner {
    opts: AzureOptions,
    url: String,
    /// `<endpoint>/<container>`.
    container_url: String,
    /// Transport and retry policy of every client (see the module doc).
    client_options: ClientOptions,
    /// The Entra ID credential that gave a token, and its name; or why none
    /// did.
    entra: tokio::sync::OnceCell<Result<EntraCredential, String>>,
}

impl AzureStore {
    /// A store for `opts`. Fails with a permanent [`Operation::Open`] error
    /// if an option is invalid (a key that is not base64, a bad endpoint).
    /// Does no I/O.
    pub fn new(opts: AzureOptions) -> Result<AzureStore> {
        let url = if opts.prefix.is_empty() {
            format!("azure://{}", opts.container)
        } else {
            format!("azure://{}/{}", opts.container, opts.prefix.trim_end_matches('/'))
        };
        let invalid =
            |message: String| StoreError::new(ErrorKind::Permanent, Operation::Open, &url, "", message);
        let endpoint = match &opts.endpoint {
            Some(e) => crate::check_endpoint(e).map_err(|m| invalid(format!("the Azure endpoint {m}")))?,
            None => format!("https://{}.blob.core.windows.net", opts.account),
        };
        match &opts.credentials {
            AzureCredentials::AccessKey(key) => {
                base64::engine::general_purpose::STANDARD
                    .decode(key.trim())
                    .map_err(|e| {
                        invalid(format!(
                            "the account key from {} is not valid base64: {e}",
                            opts.credentials_source
                        ))
                    })?;
            }
            AzureCredentials::SasToken(token) => {
                if !token.trim_start_matches('?').contains("sig=") {
                    return Err(invalid(format!(
                        "the SAS token from {} has no signature (sig=)",
                        opts.credentials_source
                    )));
                }
            }
            AzureCredentials::EntraId => {}
        }
        if opts.retry.attempts == 0 {
            return Err(invalid("attempts per request must be at least 1".into()));
        }
        if !opts.prefix.is_empty() && !opts.prefix.ends_with('/') {
            return Err(invalid(format!("the prefix {:?} must end with '/'", opts.prefix)));
        }
        let container_url = format!("{endpoint}/{}", opts.container);
        Url::parse(&container_url).map_err(|e| invalid(format!("the Azure endpoint {endpoint:?}: {e}")))?;
        let http = HttpClient::new(opts.timeouts, opts.retry).map_err(invalid)?;
        let client_options = ClientOptions {
            transport: Some(Transport::new(Arc::new(TimedTransport {
                client: http.inner().clone(),
                timeouts: opts.timeouts,
            }))),
            retry: azure_core::http::RetryOptions::none(),
            per_call_policies: vec![Arc::new(RetryPolicy { retry: opts.retry })],
            ..Default::default()
        };
        Ok(AzureStore {
            inner: Arc::new(Inner {
                container_url,
                url,
                client_options,
                entra: tokio::sync::OnceCell::new(),
                opts,
            }),
        })
    }

    pub fn options(&self) -> &AzureOptions {
        &self.inner.opts
    }

    fn container(&self) -> &str {
        &self.inner.opts.container
    }

    fn blob_name(&self, key: &Key) -> String {
        format!("{}{}", self.inner.opts.prefix, escape_name(key.as_str()))
    }

    /// The SAS query string for one operation (empty with Entra ID).
    fn sas(&self) -> String {
        match &self.inner.opts.credentials {
            AzureCredentials::EntraId => String::new(),
            AzureCredentials::SasToken(t) => t.trim().trim_start_matches('?').to_owned(),
            AzureCredentials::AccessKey(key) => {
                let now = chrono::Utc::now();
                // A little in the past: clocks differ.
                let start = (now - chrono::Duration::minutes(15))
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string();
                let expiry = (now + chrono::Duration::hours(1))
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string();
                let sas = AccountSas {
                    account: &self.inner.opts.account,
                    permissions: "rwdlac",
                    services: "b",
                    resource_types: "sco",
                    start: &start,
                    expiry: &expiry,
                    protocol: "https,http",
                    version: API_VERSION,
                };
                // The key was checked in new().
                account_sas(&sas, key).unwrap_or_default()
            }
        }
    }

    /// `<container url>/<blob>?<sas>`.
    fn blob_url(&self, key: &Key) -> String {
        with_query(
            format!(
                "{}/{}",
                self.inner.container_url,
                encode_path(&self.blob_name(key))
            ),
            &[&self.sas()],
        )
    }

    /// Where the credentials come from, for messages.
    fn credentials_source(&self) -> String {
        match (&self.inner.opts.credentials, self.inner.entra.get()) {
            (AzureCredentials::EntraId, Some(Ok((_, name)))) => format!("Entra ID ({name})"),
            _ => self.inner.opts.credentials_source.clone(),
        }
    }

    /// The Entra ID credential for a client, or `None` (the SAS is in the
    /// URL).
    async fn credential(
        &self,
        op: Operation,
        target: &(dyn fmt::Display + Sync),
    ) -> Result<Option<Arc<dyn TokenCredential>>> {
        if self.inner.opts.credentials != AzureCredentials::EntraId {
            return Ok(None);
        }
        match self.inner.entra.get_or_init(choose_entra_credential).await {
            Ok((credential, name)) => Ok(Some(Arc::new(TimedCredential {
                inner: credential.clone(),
                name,
                limit: self.inner.opts.timeouts.first_byte,
            }))),
            Err(why) => Err(StoreError::new(
                ErrorKind::Permanent,
                op,
                self,
                target,
                format!(
                    "no Azure credentials for container {:?} in account {:?}: no account key \
                     (AZURE_STORAGE_ACCESS_KEY), no SAS token (AZURE_STORAGE_SAS_TOKEN), and no \
                     Entra ID identity: {why}",
                    self.container(),
                    self.inner.opts.account
                ),
            )),
        }
    }

    /// A client for the blob of `key`, authorised for one operation.
    async fn blob_client(&self, op: Operation, api: &str, key: &Key) -> Result<BlobClient> {
        let credential = self.credential(op, key).await?;
        let url = self.parse_url(op, api, key, &self.blob_url(key))?;
        let options = BlobClientOptions {
            client_options: self.inner.client_options.clone(),
            ..Default::default()
        };
        BlobClient::new(url, credential, Some(options)).map_err(|e| self.client_error(op, api, key, e))
    }

    /// A client for the container, authorised for one operation.
    async fn container_client(
        &self,
        op: Operation,
        api: &str,
        target: &(dyn fmt::Display + Sync),
    ) -> Result<BlobContainerClient> {
        let credential = self.credential(op, target).await?;
        let url = with_query(self.inner.container_url.clone(), &[&self.sas()]);
        let url = self.parse_url(op, api, target, &url)?;
        let options = BlobContainerClientOptions {
            client_options: self.inner.client_options.clone(),
            ..Default::default()
        };
        BlobContainerClient::new(url, credential, Some(options))
            .map_err(|e| self.client_error(op, api, target, e))
    }

    fn parse_url(
        &self,
        op: Operation,
        api: &str,
        target: &(dyn fmt::Display + Sync),
        url: &str,
    ) -> Result<Url> {
        Url::parse(url).map_err(|e| {
            StoreError::new(
                ErrorKind::Permanent,
                op,
                self,
                target,
                format!(
                    "{api} on container {:?}: not a valid URL{}: {e}",
                    self.container(),
                    self.endpoint_note()
                ),
            )
        })
    }

    /// A client the crate would not make (Entra ID over `http://`, say).
    fn client_error(
        &self,
        op: Operation,
        api: &str,
        target: &(dyn fmt::Display + Sync),
        err: azure_core::Error,
    ) -> StoreError {
        StoreError::new(
            ErrorKind::Permanent,
            op,
            self,
            target,
            format!(
                "{api} on container {:?}: {}{}; credentials from {}",
                self.container(),
                redact(&error_chain(&err)),
                self.endpoint_note(),
                self.credentials_source()
            ),
        )
    }

    fn endpoint_note(&self) -> String {
        match &self.inner.opts.endpoint {
            Some(e) => format!(" (endpoint {e})"),
            None => String::new(),
        }
    }

    /// The store's error for what a client returned.
    fn error(
        &self,
        op: Operation,
        api: &str,
        target: &(dyn fmt::Display + Sync),
        err: azure_core::Error,
    ) -> StoreError {
        if let azure_core::error::ErrorKind::HttpResponse {
            status,
            error_code,
            raw_response,
        } = err.kind()
        {
            let (code, body) = match raw_response {
                Some(resp) => {
                    let code = resp
                        .headers()
                        .get_optional_str(&HeaderName::from_static("x-ms-error-code"))
                        .unwrap_or_default()
                        .to_owned();
                    let body: &[u8] = resp.body();
                    let body = String::from_utf8_lossy(&body[..body.len().min(2048)])
                        .trim()
                        .to_owned();
                    (code, body)
                }
                None => (error_code.clone().unwrap_or_default(), String::new()),
            };
            return self.status_error(op, api, target, u16::from(*status), &code, &body);
        }
        // No response: a connection failure, a time limit, a body cut
        // short, no Entra ID token.
        StoreError::new(
            ErrorKind::Transient,
            op,
            self,
            target,
            format!(
                "{api} on container {:?} failed: {}{}",
                self.container(),
                redact(&error_chain(&err)),
                self.endpoint_note()
            ),
        )
        .with_source(err)
    }

    /// The error for a response with status `status`, Azure's
    /// `x-ms-error-code` `code` (or empty) and (the start of) its body.
    fn status_error(
        &self,
        op: Operation,
        api: &str,
        target: &(dyn fmt::Display + Sync),
        status: u16,
        code: &str,
        body: &str,
    ) -> StoreError {
        let message = xml_text(body, "Message")
            .map(|m| m.lines().next().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let detail = match (code, message.as_str()) {
            ("", "") => String::new(),
            (c, "") => format!(", {c}"),
            ("", m) => format!(", {m}"),
            (c, m) => format!(", {c}: {m}"),
        };
        let container = self.container();
        let source = &self.credentials_source();
        let (kind, message) = match (status, code) {
            (404, "BlobNotFound") => (ErrorKind::NotFound, "no such object".to_owned()),
            (404, _) => (
                ErrorKind::Permanent,
                format!(
                    "{api}: container {container:?} does not exist in account {:?}{}",
                    self.inner.opts.account,
                    self.endpoint_note()
                ),
            ),
            (409, "BlobAlreadyExists") | (412, _) => (ErrorKind::AlreadyExists, "object already exists".to_owned()),
            (401 | 403, _) => (
                ErrorKind::Permanent,
                format!(
                    "{api}: access to container {container:?} denied (HTTP {status}{detail}); credentials from \
                     {source}"
                ),
            ),
            (s, _) if is_transient_status(s) => (
                ErrorKind::Transient,
                format!("{api} on container {container:?} failed: HTTP {s}{detail}{}", self.endpoint_note()),
            ),
            (s, _) => (
                ErrorKind::Permanent,
                format!(
                    "{api} on container {container:?} failed: HTTP {s}{detail}{}; credentials from {source}",
                    self.endpoint_note()
                ),
            ),
        };
        StoreError::new(kind, op, self, target, message)
    }

    async fn put_blob(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<ObjectMeta> {
        const API: &str = "Put Blob";
        let client = self
            .blob_client(Operation::Put, API, key)
            .await?
            .block_blob_client();
        let size = data.len() as u64;
        let options = BlockBlobClientUploadOptions {
            blob_content_type: Some("application/octet-stream".into()),
            if_none_match: if_none_match(mode),
            // One request, whatever the size (`upload` would cut larger
            // data into blocks, several in flight).
            partition_size: NonZero::new(size.max(1)),
            parallel: NonZero::new(1),
            ..Default::default()
        };
        client
            .upload(data.into(), Some(options))
            .await
            .map_err(|e| self.error(Operation::Put, API, key, e))?;
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            modified: None,
        })
    }
}

/// `url` with the non-empty `parts` as its query.
fn with_query(mut url: String, parts: &[&str]) -> String {
    let mut sep = '?';
    for p in parts.iter().filter(|p| !p.is_empty()) {
        url.push(sep);
        url.push_str(p);
        sep = '&';
    }
    url
}

/// `If-None-Match: *` for create-only puts.
fn if_none_match(mode: PutMode) -> Option<Etag> {
    match mode {
        PutMode::Create => Some(Etag::from("*")),
        PutMode::Overwrite => None,
    }
}

/// `text` with the value of every `sig=` (a SAS signature in a URL that an
/// error names) left out.
fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("sig=") {
        out.push_str(&rest[..i + 4]);
        out.push_str("REDACTED");
        let after = &rest[i + 4..];
        let end = after.find(['&', ')', ' ', '"', '\'']).unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// The crate's transport: the shared reqwest client, with the first-byte
/// limit on each attempt and the idle limit on response bodies.
#[derive(Debug)]
struct TimedTransport {
    client: reqwest::Client,
    timeouts: HttpTimeouts,
}

#[async_trait]
impl azure_core::http::HttpClient for TimedTransport {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        let limit = self.timeouts.first_byte;
        let resp = match tokio::time::timeout(limit, self.client.execute_request(request)).await {
            Ok(resp) => resp?,
            Err(_) => {
                return Err(azure_core::Error::with_message(
                    azure_core::error::ErrorKind::Io,
                    format!("no response within {limit:?}"),
                ))
            }
        };
        let (status, headers, body) = resp.deconstruct();
        let idle = self.timeouts.idle;
        // Ends after the first error.
        let body = futures::stream::unfold(Some(body), move |body| async move {
            let mut body = body?;
            match tokio::time::timeout(idle, body.next()).await {
                Ok(Some(Ok(chunk))) => Some((Ok(chunk), Some(body))),
                Ok(Some(Err(e))) => Some((Err(e), None)),
                Ok(None) => None,
                Err(_) => Some((
                    Err(azure_core::Error::with_message(
                        azure_core::error::ErrorKind::Io,
                        format!("the response body stalled for {idle:?}"),
                    )),
                    None,
                )),
            }
        });
        Ok(AsyncRawResponse::new(status, headers, Box::pin(body)))
    }
}

/// The retry policy of the crate's pipeline (see the module doc): the
/// attempts, backoff and total time of [`RetryOptions`].
#[derive(Debug)]
struct RetryPolicy {
    retry: RetryOptions,
}

#[async_trait]
impl Policy for RetryPolicy {
    async fn send(&self, ctx: &Context, request: &mut Request, next: &[Arc<dyn Policy>]) -> PolicyResult {
        let mut attempts = self.retry.start();
        loop {
            if attempts.number() > 1 {
                request.body_mut().reset().await?;
            }
            let result = next[0].send(ctx, request, &next[1..]).await;
            let verdict = match &result {
                Ok(resp) if is_transient_status(u16::from(resp.status())) => Verdict::Retry {
                    after: retry_after(
                        resp.headers()
                            .get_optional_str(&HeaderName::from_static("retry-after")),
                    ),
                },
                Ok(_) => Verdict::Final,
                // Not an answer (that is an Ok response here): no
                // connection, a time limit, a failed read.
                Err(e)
                    if matches!(
                        e.kind(),
                        azure_core::error::ErrorKind::Io | azure_core::error::ErrorKind::Connection
                    ) =>
                {
                    Verdict::Retry { after: None }
                }
                Err(_) => Verdict::Final,
            };
            if !attempts.again(verdict).await {
                return result;
            }
        }
    }
}

/// An Entra ID credential whose tokens come within a time limit.
#[derive(Debug)]
struct TimedCredential {
    inner: Arc<dyn TokenCredential>,
    name: &'static str,
    limit: Duration,
}

#[async_trait]
impl TokenCredential for TimedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        let kind = azure_core::error::ErrorKind::Credential;
        match tokio::time::timeout(self.limit, self.inner.get_token(scopes, options)).await {
            Ok(Ok(token)) => Ok(token),
            Ok(Err(e)) => Err(azure_core::Error::with_message(
                kind,
                format!(
                    "getting an Entra ID token ({}) failed: {}",
                    self.name,
                    one_line(&e.to_string())
                ),
            )),
            Err(_) => Err(azure_core::Error::with_message(
                kind,
                format!("no Entra ID token ({}) within {:?}", self.name, self.limit),
            )),
        }
    }
}

/// An Entra ID credential that gave a token, and the name of its kind.
type EntraCredential = (Arc<dyn TokenCredential>, &'static str);

/// Tries the Entra ID credentials in order (see
/// [`AzureCredentials::EntraId`]) and keeps the first that gives a token.
async fn choose_entra_credential() -> Result<EntraCredential, String> {
    let mut failures = Vec::new();
    let mut candidates: Vec<(&'static str, azure_core::Result<Arc<dyn TokenCredential>>)> = Vec::new();
    if std::env::var_os("AZURE_FEDERATED_TOKEN_FILE").is_some() {
        candidates.push((
            "workload identity",
            azure_identity::WorkloadIdentityCredential::new(None).map(|c| c as Arc<dyn TokenCredential>),
        ));
    }
    let managed = match std::env::var("AZURE_CLIENT_ID") {
        Ok(id) if !id.is_empty() => azure_identity::ManagedIdentityCredential::new(Some(
            azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id: Some(azure_identity::UserAssignedId::ClientId(id)),
                ..Default::default()
            },
        )),
        _ => azure_identity::ManagedIdentityCredential::new(None),
    };
    candidates.push(("managed identity", managed.map(|c| c as Arc<dyn TokenCredential>)));
    candidates.push((
        "Azure CLI",
        azure_identity::DeveloperToolsCredential::new(None).map(|c| c as Arc<dyn TokenCredential>),
    ));
    for (name, made) in candidates {
        let credential = match made {
            Ok(c) => c,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        match tokio::time::timeout(ENTRA_PROBE_TIMEOUT, credential.get_token(&[ENTRA_SCOPE], None)).await {
            Ok(Ok(_)) => return Ok((credential, name)),
            Ok(Err(e)) => failures.push(format!("{name}: {}", one_line(&e.to_string()))),
            Err(_) => failures.push(format!("{name}: no answer within {ENTRA_PROBE_TIMEOUT:?}")),
        }
    }
    Err(failures.join("; "))
}

/// `s` on one line, at most 400 characters.
fn one_line(s: &str) -> String {
    let joined = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match joined.char_indices().nth(400) {
        Some((i, _)) => format!("{}...", &joined[..i]),
        None => joined,
    }
}

/// A key as a blob name: Azure reads `\\` in blob names as `/`, so it is
/// written `%5C`, and `%` as `%25` to keep the mapping reversible.
fn escape_name(key: &str) -> String {
    key.replace('%', "%25").replace('\\', "%5C")
}

/// The key of a blob name made by [`escape_name`].
fn unescape_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut rest = name;
    while let Some(i) = rest.find('%') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(r) = after.strip_prefix("%25") {
            out.push('%');
            rest = r;
        } else if let Some(r) = after.strip_prefix("%5C").or_else(|| after.strip_prefix("%5c")) {
            out.push('\\');
            rest = r;
        } else {
            out.push('%');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    out
}

/// The text of the first `<tag>...</tag>` in `xml`, entities decoded.
fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&close)?;
    Some(xml_unescape(&xml[start..start + len]))
}

fn xml_unescape(s: &str) -> String {
    if !s.contains('&') {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        let Some(end) = after.find(';') else {
            out.push_str(after);
            return out;
        };
        let entity = &after[1..end];
        let c = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") => u32::from_str_radix(&e[2..], 16).ok().and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        match c {
            Some(c) => out.push(c),
            None => out.push_str(&after[..=end]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

impl fmt::Debug for AzureStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureStore")
            .field("url", &self.inner.url)
            .field("opts", &self.inner.opts)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for AzureStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.url)
    }
}

#[async_trait]
impl ObjectStore for AzureStore {
    async fn put(&self, key: &Key, data: Bytes, mode: PutMode) -> Result<ObjectMeta> {
        self.put_blob(key, data, mode).await
    }

    async fn put_multipart(&self, key: &Key, mode: PutMode) -> Result<Box<dyn MultipartUpload>> {
        Ok(Box::new(AzureUpload {
            store: self.clone(),
            key: key.clone(),
            mode,
            upload_id: rand::random(),
            blocks: 0,
            size: 0,
        }))
    }

    async fn get(&self, key: &Key) -> Result<GetResult> {
        const API: &str = "Get Blob";
        let client = self.blob_client(Operation::Get, API, key).await?;
        let options = BlobClientDownloadOptions {
            parallel: NonZero::new(1),
            partition_size: NonZero::new(usize::try_from(WHOLE_BLOB).unwrap_or(usize::MAX)),
            ..Default::default()
        };
        let resp = client
            .download(Some(options))
            .await
            .map_err(|e| self.error(Operation::Get, API, key, e))?;
        let Some(size) = resp.properties.content_length else {
            return Err(StoreError::new(
                ErrorKind::Transient,
                Operation::Get,
                self,
                key,
                "Get Blob response without Content-Length",
            ));
        };
        Ok(GetResult {
            meta: ObjectMeta {
                key: key.clone(),
                size,
                modified: resp.properties.last_modified.map(SystemTime::from),
            },
            stream: crate::body::checked_body(
                resp.body,
                crate::body::BodyOf {
                    store: self.to_string(),
                    key: key.to_string(),
                    api: API,
                    size,
                    // The transport's idle limit applies.
                    idle: None,
                },
                |e| redact(&error_chain(e)),
            ),
        })
    }

    async fn head(&self, key: &Key) -> Result<ObjectMeta> {
        const API: &str = "Get Blob Properties";
        let client = self.blob_client(Operation::Head, API, key).await?;
        let resp = client
            .get_properties(None)
            .await
            .map_err(|e| self.error(Operation::Head, API, key, e))?;
        let size = resp.content_length().ok().flatten().ok_or_else(|| {
            StoreError::new(
                ErrorKind::Transient,
                Operation::Head,
                self,
                key,
                "Get Blob Properties response without Content-Length",
            )
        })?;
        // `Last-Modified`, RFC 1123; a missing or unreadable one is no
        // reason to fail.
        let modified = resp.last_modified().ok().flatten().map(SystemTime::from);
        Ok(ObjectMeta {
            key: key.clone(),
            size,
            modified,
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        const API: &str = "List Blobs";
        let full_prefix = format!("{}{}", self.inner.opts.prefix, escape_name(prefix));
        let client = self.container_client(Operation::List, API, &prefix).await?;
        let options = BlobContainerClientListBlobsOptions {
            prefix: Some(full_prefix),
            maxresults: Some(self.inner.opts.list_page_size.clamp(1, 5000) as i32),
            ..Default::default()
        };
        let fail = |e| self.error(Operation::List, API, &prefix, e);
        let mut pages = client.list_blobs(Some(options)).map_err(fail)?.into_pages();
        let mut out = Vec::new();
        while let Some(page) = pages.try_next().await.map_err(fail)? {
            let page = page.into_model().map_err(fail)?;
            let bad = |m: String| StoreError::new(ErrorKind::Transient, Operation::List, self, prefix, m);
            for blob in page.blob_items {
                let name = blob.name.ok_or_else(|| bad("a listed blob has no name".into()))?;
                let properties = blob.properties.unwrap_or_default();
                let size = properties
                    .content_length
                    .ok_or_else(|| bad(format!("listed blob {name:?} has no Content-Length")))?;
                // `<Last-Modified>` of `<Properties>`, RFC 1123.
                let modified = properties.last_modified.map(SystemTime::from);
                let Some(name) = name.strip_prefix(&self.inner.opts.prefix) else {
                    continue;
                };
                let Ok(key) = Key::new(unescape_name(name)) else {
                    continue;
                };
                out.push(ObjectMeta { key, size, modified });
            }
        }
        out.sort_by(|a, b| a.key.as_str().cmp(b.key.as_str()));
        out.dedup_by(|a, b| a.key == b.key);
        Ok(out)
    }

    async fn delete(&self, key: &Key) -> Result<()> {
        const API: &str = "Delete Blob";
        let client = self.blob_client(Operation::Delete, API, key).await?;
        match client.delete(None).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let err = self.error(Operation::Delete, API, key, e);
                if err.is_not_found() {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }
}

/// A block blob upload: parts staged as blocks, committed by `complete`.
struct AzureUpload {
    store: AzureStore,
    key: Key,
    mode: PutMode,
    /// Makes this upload's block ids differ from any other's.
    upload_id: u64,
    /// How many blocks were staged.
    blocks: usize,
    size: u64,
}

impl AzureUpload {
    /// The id of block `n` (the crate sends it base64-encoded).
    fn block_id(&self, n: usize) -> Vec<u8> {
        // Every id of a blob must have the same length.
        format!("pgark-{:016x}-{n:06}", self.upload_id).into_bytes()
    }
}

#[async_trait]
impl MultipartUpload for AzureUpload {
    async fn put_part(&mut self, data: Bytes) -> Result<()> {
        const API: &str = "Put Block";
        if data.is_empty() {
            return Ok(());
        }
        if self.blocks >= MAX_BLOCKS {
            return Err(StoreError::new(
                ErrorKind::Permanent,
                Operation::PutPart,
                &self.store,
                &self.key,
                format!("a blob holds at most {MAX_BLOCKS} blocks; use larger parts"),
            ));
        }
        let client = self
            .store
            .blob_client(Operation::PutPart, API, &self.key)
            .await?
            .block_blob_client();
        let len = data.len() as u64;
        client
            .stage_block(&self.block_id(self.blocks), len, data.into(), None)
            .await
            .map_err(|e| self.store.error(Operation::PutPart, API, &self.key, e))?;
        self.blocks += 1;
        self.size += len;
        Ok(())
    }

    async fn complete(self: Box<Self>) -> Result<ObjectMeta> {
        const API: &str = "Put Block List";
        if self.blocks == 0 {
            return self.store.put_blob(&self.key, Bytes::new(), self.mode).await;
        }
        let fail = |e| self.store.error(Operation::Complete, API, &self.key, e);
        let client = self
            .store
            .blob_client(Operation::Complete, API, &self.key)
            .await?
            .block_blob_client();
        let list = BlockLookupList {
            latest: Some((0..self.blocks).map(|n| self.block_id(n)).collect()),
            ..Default::default()
        };
        let options = BlockBlobClientCommitBlockListOptions {
            blob_content_type: Some("application/octet-stream".into()),
            if_none_match: if_none_match(self.mode),
            ..Default::default()
        };
        client
            .commit_block_list(list.try_into().map_err(fail)?, Some(options))
            .await
            .map_err(fail)?;
        Ok(ObjectMeta {
            key: self.key.clone(),
            size: self.size,
            modified: None,
        })
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        // Uncommitted blocks cannot be deleted; Azure discards them.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // RFC 4231, test case 2.
        let mac = hmac_sha256_base64(b"Jefe", b"what do ya want for nothing?");
        let hex: String = base64::engine::general_purpose::STANDARD
            .decode(mac)
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    /// Signatures computed independently (Python's hmac and base64 modules)
    /// over the documented account SAS string-to-sign.
    #[test]
    fn account_sas_known_vectors() {
        let cases = [
            (
                AccountSas {
                    account: "devstoreaccount1",
                    permissions: "rwdlac",
                    services: "b",
                    resource_types: "sco",
                    start: "2026-01-01T00:00:00Z",
                    expiry: "2026-01-01T01:00:00Z",
                    protocol: "https,http",
                    version: "2021-08-06",
                },
                DEV_KEY,
                "2pXJa4SBrJ5HsJWG9IKWBl+ybrAQ3vwBqyKf7JmfPtk=",
            ),
            (
                AccountSas {
                    account: "pgarkbackups",
                    permissions: "rl",
                    services: "b",
                    resource_types: "o",
                    start: "2025-06-30T23:59:59Z",
                    expiry: "2025-07-01T00:15:00Z",
                    protocol: "https",
                    version: "2022-11-02",
                },
                "cGdhcmstdGVzdC1rZXktbm90LWEtc2VjcmV0",
                "1jjer6xT3/fiyjfTfylt0Yi4GeVjAM8ap4dOdKlkVKM=",
            ),
        ];
        for (sas, key, sig) in cases {
            let q = account_sas(&sas, key).unwrap();
            let got = q.rsplit_once("&sig=").unwrap().1;
            assert_eq!(got, encode_component(sig), "{sas:?}");
            assert!(
                q.starts_with(&format!(
                    "sv={}&ss={}&srt={}&sp={}&",
                    sas.version, sas.services, sas.resource_types, sas.permissions
                )),
                "{q}"
            );
        }
        assert!(account_sas(&cases_first(), "not base64!").is_err());
    }

    fn cases_first() -> AccountSas<'static> {
        AccountSas {
            account: "a",
            permissions: "r",
            services: "b",
            resource_types: "o",
            start: "",
            expiry: "",
            protocol: "https",
            version: API_VERSION,
        }
    }

    #[test]
    fn urls_and_options() {
        let creds = AzureCredentials::AccessKey(DEV_KEY.into());
        let o = AzureOptions::from_url("azure://backups/a/b/", "devstoreaccount1", creds.clone()).unwrap();
        assert_eq!((o.container.as_str(), o.prefix.as_str()), ("backups", "a/b/"));
        let o2 = AzureOptions::from_url("azure://backups", "acct", creds.clone()).unwrap();
        assert_eq!(o2.prefix, "");
        for bad in [
            "azure://",
            "azure://Up/x",
            "azure://a/x",
            "azure://b--c/x",
            "azure://-bc",
            "s3://abc",
            "azure://abc/a//b",
        ] {
            assert!(
                AzureOptions::from_url(bad, "acct", creds.clone()).is_err(),
                "{bad}"
            );
        }
        assert!(AzureOptions::from_url("azure://abc", "Bad_Account", creds.clone()).is_err());
        let store = AzureStore::new(o.clone()).unwrap();
        assert_eq!(store.to_string(), "azure://backups/a/b");
        let url = store.blob_url(&Key::new("wal/x+y").unwrap());
        assert!(
            url.starts_with("https://devstoreaccount1.blob.core.windows.net/backups/a/b/wal/x%2By?sv="),
            "{url}"
        );
        let mut bad = o.clone();
        bad.credentials = AzureCredentials::AccessKey("not base64!".into());
        assert!(AzureStore::new(bad).is_err());
        let mut sas = o.clone();
        sas.credentials = AzureCredentials::SasToken("?sv=2021-08-06&sig=abc".into());
        sas.endpoint = Some("http://127.0.0.1:10000/devstoreaccount1/".into());
        let store = AzureStore::new(sas.clone()).unwrap();
        assert_eq!(
            store.blob_url(&Key::new("k").unwrap()),
            "http://127.0.0.1:10000/devstoreaccount1/backups/a/b/k?sv=2021-08-06&sig=abc"
        );
        sas.credentials = AzureCredentials::SasToken("sv=2021-08-06".into());
        assert!(AzureStore::new(sas).is_err());
        assert!(!format!("{:?}", o.credentials).contains(DEV_KEY));
    }

    #[test]
    fn blob_names_keep_backslashes_and_percents() {
        for (key, name) in [
            ("wal/000000010000000000000001", "wal/000000010000000000000001"),
            ("a\\b", "a%5Cb"),
            ("%20", "%2520"),
            ("%5C\\%", "%255C%5C%25"),
        ] {
            assert_eq!(escape_name(key), name);
            assert_eq!(unescape_name(name), key);
        }
        assert_eq!(unescape_name("100%"), "100%");
    }

    #[test]
    fn statuses_are_classified() {
        let mut o = AzureOptions::from_url(
            "azure://backups/repo",
            "acct",
            AzureCredentials::AccessKey(DEV_KEY.into()),
        )
        .unwrap();
        o.credentials_source = "AZURE_STORAGE_ACCESS_KEY".into();
        let store = AzureStore::new(o).unwrap();
        let k = Key::new("wal/x").unwrap();
        let auth_failed =
            "<?xml version=\"1.0\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to \
                           authenticate the request.\nRequestId:1</Message></Error>";
        // Status, x-ms-error-code, body, expected kind, message parts.
        type Case<'a> = (u16, Option<&'a str>, &'a str, ErrorKind, &'a [&'a str]);
        let cases: &[Case] = &[
            (
                404,
                Some("BlobNotFound"),
                "",
                ErrorKind::NotFound,
                &["no such object"],
            ),
            (
                404,
                Some("ContainerNotFound"),
                "",
                ErrorKind::Permanent,
                &["\"backups\" does not exist in account \"acct\""],
            ),
            (
                409,
                Some("BlobAlreadyExists"),
                "",
                ErrorKind::AlreadyExists,
                &["already exists"],
            ),
            (
                412,
                Some("ConditionNotMet"),
                "",
                ErrorKind::AlreadyExists,
                &["already exists"],
            ),
            (
                403,
                Some("AuthenticationFailed"),
                auth_failed,
                ErrorKind::Permanent,
                &[
                    "Put Blob: access to container \"backups\" denied",
                    "HTTP 403, AuthenticationFailed: Server failed to authenticate the request.",
                    "credentials from AZURE_STORAGE_ACCESS_KEY",
                ],
            ),
            (
                503,
                Some("ServerBusy"),
                "",
                ErrorKind::Transient,
                &["HTTP 503, ServerBusy"],
            ),
            (
                500,
                Some("OperationTimedOut"),
                "",
                ErrorKind::Transient,
                &["OperationTimedOut"],
            ),
            (
                409,
                Some("LeaseIdMissing"),
                "",
                ErrorKind::Permanent,
                &["HTTP 409, LeaseIdMissing"],
            ),
        ];
        for (status, code, body, kind, needles) in cases {
            let e = store.status_error(Operation::Put, "Put Blob", &k, *status, code.unwrap_or(""), body);
            assert_eq!(e.kind(), *kind, "{status} {code:?}: {e}");
            let msg = e.to_string();
            assert!(msg.contains("put wal/x in azure://backups/repo"), "{msg}");
            for needle in *needles {
                assert!(msg.contains(needle), "{status}: {needle:?} missing in {msg}");
            }
            assert!(!msg.contains(DEV_KEY), "{msg}");
        }
    }

    #[test]
    fn xml_helpers() {
        let xml = "<Error><Code>A</Code><Message>a/b&amp;c &#x41;&#66;</Message></Error>";
        assert_eq!(xml_text(xml, "Message").as_deref(), Some("a/b&c AB"));
        assert_eq!(xml_text(xml, "Missing"), None);
        assert_eq!(xml_unescape("a&lt;b&gt;&unknown;&"), "a<b>&unknown;&");
    }

    #[test]
    fn signatures_are_left_out_of_messages() {
        assert_eq!(
            redact("error sending request for url (http://h/c/b?se=x&sig=abc%2Bd&sp=r): refused"),
            "error sending request for url (http://h/c/b?se=x&sig=REDACTED&sp=r): refused"
        );
        assert_eq!(redact("x?sig=abc"), "x?sig=REDACTED");
        assert_eq!(redact("no signature"), "no signature");
    }
}
