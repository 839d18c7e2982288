//! Opening the repository named by `--repo`.
//!
//! Only the commands that write (wal-push, backup-push) may create a
//! repository, and use [`open`]. Every other command uses
//! [`open_existing`] or [`open_existing_with_keys`], which create nothing
//! (not even a local directory) and fail with
//! [`EngineError::NoRepository`] (exit 11) before anything else when there
//! is no repository there.

use crate::config::{AzureSettings, ConfigError, GcsSettings, S3Settings, Settings};
use pgark_engine::{EngineError, RepoKeys};
use pgark_store::{LocalStore, ObjectStore};
use std::path::PathBuf;
use std::sync::Arc;

/// A kind of repository `--repo` accepts: the help lists these, and
/// [`open`] dispatches on their schemes.
pub struct RepoKind {
    /// The URL's scheme with its `://`; `None` for a plain local path.
    pub scheme: Option<&'static str>,
    /// The form of the URL, as the help shows it.
    pub form: &'static str,
    /// What it is, and where its options are.
    pub what: &'static str,
}

pub const FILE_SCHEME: &str = "file://";
pub const S3_SCHEME: &str = "s3://";
pub const GCS_SCHEME: &str = "gs://";
pub const AZURE_SCHEME: &str = "azure://";

/// Every kind of repository, in the order the help lists them.
pub const KINDS: [RepoKind; 5] = [
    RepoKind {
        scheme: None,
        form: "/path/to/dir",
        what: "a local directory (a relative path starts at the current directory)",
    },
    RepoKind {
        scheme: Some(FILE_SCHEME),
        form: "file:///path/to/dir",
        what: "a local directory, as a URL (an absolute path)",
    },
    RepoKind {
        scheme: Some(S3_SCHEME),
        form: "s3://bucket[/prefix]",
        what: "S3 or an S3-compatible store: --s3-* options, AWS_* variables (cargo feature s3)",
    },
    RepoKind {
        scheme: Some(GCS_SCHEME),
        form: "gs://bucket[/prefix]",
        what: "Google Cloud Storage: --gcs-* options, GOOGLE_APPLICATION_CREDENTIALS (cargo feature gcs)",
    },
    RepoKind {
        scheme: Some(AZURE_SCHEME),
        form: "azure://container[/prefix]",
        what: "Azure Blob Storage: --azure-* options, AZURE_* variables (cargo feature azure)",
    },
];

/// Opens the repository of `settings`: a local path (`/backups/pg`), a
/// `file://` URL (`file:///backups/pg`), an S3 bucket and prefix
/// (`s3://bucket/prefix`, with the `--s3-*` options), a GCS bucket and
/// prefix (`gs://bucket/prefix`, `--gcs-*`) or an Azure container and
/// prefix (`azure://container/prefix`, `--azure-*`).
///
/// With a command deadline (`--command-timeout`), every call of the
/// returned store ends by it ([`pgark_store::DeadlineStore`]).
///
/// For the commands that may initialise a repository: a missing local
/// directory is created.
pub fn open(settings: &Settings) -> anyhow::Result<Arc<dyn ObjectStore>> {
    open_with(settings, true)
}

/// Opens the repository of `settings` for a command that must find one
/// there, checks that it is one ([`pgark_engine::require_repository`]) and
/// creates nothing.
pub async fn open_existing(settings: &Settings) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let store = open_with(settings, false)?;
    pgark_engine::require_repository(&*store, &settings.retry).await?;
    Ok(store)
}

/// [`open_existing`] and the repository's keys for reading
/// ([`crate::encryption::open_keys`]). The two reads run at once, so a
/// `restore_command` pays no extra round trip for the check; when both
/// fail, the missing repository is what is reported (a key "for an
/// unencrypted repository" would only mislead).
pub async fn open_existing_with_keys(
    settings: &Settings,
) -> anyhow::Result<(Arc<dyn ObjectStore>, RepoKeys)> {
    let store = open_with(settings, false)?;
    let (repository, keys) = tokio::join!(
        pgark_engine::require_repository(&*store, &settings.retry),
        crate::encryption::open_keys(&*store, settings, false)
    );
    repository?;
    Ok((store, keys?))
}

fn open_with(settings: &Settings, create: bool) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let store = open_backend(settings, create)?;
    Ok(match settings.deadline {
        Some((at, limit)) => Arc::new(pgark_store::DeadlineStore::new(
            store,
            tokio::time::Instant::from_std(at),
            limit,
        )),
        None => store,
    })
}

fn open_backend(settings: &Settings, create: bool) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let url = settings.repo()?;
    if url.starts_with(S3_SCHEME) {
        return open_s3(url, &settings.s3);
    }
    if url.starts_with(GCS_SCHEME) {
        return open_gcs(url, &settings.gcs);
    }
    if url.starts_with(AZURE_SCHEME) {
        return open_azure(url, &settings.azure, &|name| std::env::var(name).ok());
    }
    let path = local_path(url)?;
    if create {
        return Ok(Arc::new(LocalStore::new(path)?));
    }
    let store = LocalStore::open(path)?;
    if !store.root().exists() {
        // Said plainly: the commonest case (a typo, a volume not mounted).
        return Err(EngineError::NoRepository {
            url: store.to_string(),
            reason: format!("the directory {} does not exist", store.root().display()),
        }
        .into());
    }
    Ok(Arc::new(store))
}

#[cfg(feature = "s3")]
fn open_s3(url: &str, s3: &S3Settings) -> anyhow::Result<Arc<dyn ObjectStore>> {
    use pgark_store::{S3Options, S3Sse, S3Store};
    let invalid = |name: &'static str| move |message: String| ConfigError::Invalid { name, message };
    let mut opts = S3Options::from_url(url).map_err(invalid("repo"))?;
    opts.endpoint = s3.endpoint.clone();
    opts.region = s3.region.clone();
    opts.force_path_style = s3.force_path_style;
    opts.sse = S3Sse::parse(s3.sse.as_deref(), s3.sse_kms_key_id.as_deref()).map_err(invalid("s3-sse"))?;
    opts.storage_class = s3.storage_class.clone();
    if let Some(c) = &s3.checksum {
        opts.checksum = c.parse().map_err(invalid("s3-checksum"))?;
    }
    Ok(Arc::new(S3Store::new(opts)?))
}

#[cfg(not(feature = "s3"))]
fn open_s3(url: &str, _: &S3Settings) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Err(ConfigError::Invalid {
        name: "repo",
        message: format!("{url:?}: this pgark was built without S3 support (cargo feature s3)"),
    }
    .into())
}

#[cfg(feature = "gcs")]
fn open_gcs(url: &str, gcs: &GcsSettings) -> anyhow::Result<Arc<dyn ObjectStore>> {
    use pgark_store::{GcsCredentials, GcsOptions, GcsStore};
    let mut opts = GcsOptions::from_url(url).map_err(|message| ConfigError::Invalid {
        name: "repo",
        message,
    })?;
    opts.endpoint = gcs.endpoint.clone();
    if gcs.no_auth {
        opts.credentials = GcsCredentials::Anonymous;
    }
    Ok(Arc::new(GcsStore::new(opts)?))
}

#[cfg(not(feature = "gcs"))]
fn open_gcs(url: &str, _: &GcsSettings) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Err(ConfigError::Invalid {
        name: "repo",
        message: format!("{url:?}: this pgark was built without GCS support (cargo feature gcs)"),
    }
    .into())
}

/// Opens an Azure repository with the credentials in the environment
/// (read through `env`): `AZURE_STORAGE_ACCESS_KEY` (or `AZURE_STORAGE_KEY`),
/// else `AZURE_STORAGE_SAS_TOKEN`, else Entra ID (managed identity,
/// workload identity, Azure CLI), tried at the first request.
#[cfg(feature = "azure")]
fn open_azure(
    url: &str,
    azure: &AzureSettings,
    env: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    use pgark_store::{AzureCredentials, AzureOptions, AzureStore, ErrorKind, Operation, StoreError};
    let invalid = |name: &'static str| move |message: String| ConfigError::Invalid { name, message };
    // What the environment lacks is a repository failure (exit 6), as
    // missing credentials are for the other clouds.
    let unusable = |message: String| StoreError::new(ErrorKind::Permanent, Operation::Open, url, "", message);
    let account = azure.account.clone().ok_or_else(|| {
        unusable("no storage account: set AZURE_STORAGE_ACCOUNT or --azure-account".to_owned())
    })?;
    let var = |name: &str| env(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let (credentials, source) = if let Some(key) = var("AZURE_STORAGE_ACCESS_KEY") {
        (AzureCredentials::AccessKey(key), "AZURE_STORAGE_ACCESS_KEY")
    } else if let Some(key) = var("AZURE_STORAGE_KEY") {
        (AzureCredentials::AccessKey(key), "AZURE_STORAGE_KEY")
    } else if let Some(token) = var("AZURE_STORAGE_SAS_TOKEN") {
        (AzureCredentials::SasToken(token), "AZURE_STORAGE_SAS_TOKEN")
    } else {
        (AzureCredentials::EntraId, "Entra ID")
    };
    let mut opts = AzureOptions::from_url(url, &account, credentials).map_err(invalid("repo"))?;
    opts.endpoint = azure.endpoint.clone();
    opts.credentials_source = source.to_owned();
    Ok(Arc::new(AzureStore::new(opts)?))
}

#[cfg(not(feature = "azure"))]
fn open_azure(
    url: &str,
    _: &AzureSettings,
    _: &dyn Fn(&str) -> Option<String>,
) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Err(ConfigError::Invalid {
        name: "repo",
        message: format!("{url:?}: this pgark was built without Azure support (cargo feature azure)"),
    }
    .into())
}

fn local_path(url: &str) -> Result<PathBuf, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        name: "repo",
        message,
    };
    if url.is_empty() {
        return Err(invalid("the repository URL is empty".into()));
    }
    if let Some(path) = url.strip_prefix(FILE_SCHEME) {
        if !path.starts_with('/') {
            return Err(invalid(format!(
                "{url:?}: a file:// URL takes an absolute path (file:///path)"
            )));
        }
        return Ok(PathBuf::from(path));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        let supported: Vec<&str> = KINDS.iter().filter_map(|k| k.scheme).collect();
        return Err(invalid(format!(
            "{url:?}: unsupported repository scheme {scheme:?} (supported: {})",
            supported.join(", ")
        )));
    }
    Ok(PathBuf::from(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_urls() {
        assert_eq!(local_path("/a/b").unwrap(), PathBuf::from("/a/b"));
        assert_eq!(local_path("file:///a/b").unwrap(), PathBuf::from("/a/b"));
        assert_eq!(local_path("rel/dir").unwrap(), PathBuf::from("rel/dir"));
        for bad in ["", "file://a/b", "ftp://x/y"] {
            assert!(local_path(bad).is_err(), "{bad}");
        }
    }

    /// The refusal of an unknown scheme names every listed one, and no
    /// scheme is spelt out in this file's code but in KINDS.
    #[test]
    fn the_listed_kinds_are_the_accepted_ones() {
        let err = local_path("ftp://x/y").unwrap_err().to_string();
        for kind in &KINDS {
            let Some(scheme) = kind.scheme else { continue };
            assert!(err.contains(scheme), "{err} lacks {scheme}");
            assert!(kind.form.starts_with(scheme), "{}", kind.form);
        }
        // Any "scheme://" literal in this file's code is one of KINDS'.
        let source = include_str!("repo.rs");
        let code = &source[..source.find("#[cfg(test)]\nmod tests").unwrap()];
        for (i, _) in code.match_indices("://\"") {
            let start = code[..i].rfind('"').unwrap() + 1;
            if start == i {
                continue; // "://" itself
            }
            let scheme = &code[start..i + 3];
            assert!(
                KINDS.iter().any(|k| k.scheme == Some(scheme)),
                "repo.rs spells out the scheme {scheme:?}, which KINDS lacks"
            );
        }
    }
}
