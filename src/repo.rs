//! Opening the repository named by `--repo`.

use crate::config::ConfigError;
use pgark_store::{LocalStore, ObjectStore};
use std::path::PathBuf;
use std::sync::Arc;

/// Opens a repository from its URL: a local path (`/backups/pg`) or a
/// `file://` URL (`file:///backups/pg`).
pub fn open(url: &str) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let path = local_path(url)?;
    Ok(Arc::new(LocalStore::new(path)?))
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
            "{url:?}: unsupported repository scheme {scheme:?} (supported: file://)"
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
