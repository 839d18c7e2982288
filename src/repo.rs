//! Opening the repository named by `--repo`.

use crate::config::{ConfigError, S3Settings, Settings};
use pgark_store::{LocalStore, ObjectStore};
use std::path::PathBuf;
use std::sync::Arc;

/// Opens the repository of `settings`: a local path (`/backups/pg`), a
/// `file://` URL (`file:///backups/pg`) or an S3 bucket and prefix
/// (`s3://bucket/prefix`, with the `--s3-*` options).
pub fn open(settings: &Settings) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let url = settings.repo()?;
    if url.starts_with("s3://") {
        return open_s3(url, &settings.s3);
    }
    let path = local_path(url)?;
    Ok(Arc::new(LocalStore::new(path)?))
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

fn local_path(url: &str) -> Result<PathBuf, ConfigError> {
    let invalid = |message: String| ConfigError::Invalid {
        name: "repo",
        message,
    };
    if url.is_empty() {
        return Err(invalid("the repository URL is empty".into()));
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(invalid(format!(
                "{url:?}: a file:// URL takes an absolute path (file:///path)"
            )));
        }
        return Ok(PathBuf::from(path));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Err(invalid(format!(
            "{url:?}: unsupported repository scheme {scheme:?} (supported: file://, s3://)"
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
}
