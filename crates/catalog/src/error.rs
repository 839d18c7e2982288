/// Why a catalog document could not be read or accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    #[error("{what} is not valid: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what} has format {found}, but this pgark reads format {supported} or older: upgrade pgark")]
    UnsupportedFormat {
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("{what} is inconsistent: {detail}")]
    Inconsistent { what: &'static str, detail: String },
    #[error("invalid backup name {name:?}: {reason}")]
    BadBackupName { name: String, reason: String },
    #[error(
        "this repository belongs to the PostgreSQL cluster with system identifier {repository}, \
         but the WAL comes from system identifier {found}: use a separate repository for each cluster"
    )]
    WrongCluster { repository: u64, found: u64 },
}
