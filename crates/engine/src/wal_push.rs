//! `wal-push`: archive one WAL file (PostgreSQL's `archive_command`).
//!
//! Contract with PostgreSQL: success is returned only once the file is
//! durable in the repository. The archive is append-only: a file already
//! archived with the same content is a success without rewriting; different
//! content under the same name is an error and the archive is not changed.

use crate::pipe::{upload_file, verify_object};
use crate::repository::ensure_repository_meta;
use crate::{EngineError, RetryPolicy};
use pgark_catalog::{wal_key, RepositoryMeta};
use pgark_codec::{CompressionSpec, ContentDigest, ContentHasher, DigestAlgorithm};
use pgark_pg::{validate_segment, ArchivedFile, SegmentInfo, WalSegmentName, XLogLongPageHeader};
use pgark_store::{Key, ObjectStore, ObjectStoreExt, PutMode, UploadOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Settings of [`wal_push`].
#[derive(Debug, Clone, Default)]
pub struct WalPushOptions {
    pub compression: CompressionSpec,
    pub retry: RetryPolicy,
    /// Largest object stored in one request; larger ones go in parts.
    pub part_size: Option<usize>,
    /// The repository's data key when it is encrypted.
    pub keys: crate::RepoKeys,
}

/// What [`wal_push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalPushStatus {
    /// The file was stored.
    Stored,
    /// The archive already held this exact file; nothing was written.
    AlreadyArchived,
    /// An earlier wal-push stored it while archiving ahead (see
    /// `archive_ahead`); nothing was read or written now.
    ArchivedAhead,
}

#[derive(Debug, Clone)]
pub struct WalPushOutcome {
    pub file: ArchivedFile,
    pub key: Key,
    pub status: WalPushStatus,
    pub original_len: u64,
    /// Size in the repository (0 when already archived).
    pub stored_len: u64,
    /// Digest of the segment's content (as recorded in the object's trailer).
    pub digest: ContentDigest,
}

/// Validates, compresses and stores the WAL file at `path`.
///
/// Idempotent. On failure nothing new is visible in the repository.
pub async fn wal_push(
    store: Arc<dyn ObjectStore>,
    path: &Path,
    opts: &WalPushOptions,
) -> Result<WalPushOutcome, EngineError> {
    let file = parse_file_name(path)?;
    let path_buf = path.to_path_buf();
    let checked = tokio::task::spawn_blocking(move || check_file(&path_buf, &file))
        .await
        .map_err(|e| EngineError::Internal(format!("validation task failed: {e}")))??;
    if let Some(info) = &checked {
        let candidate = RepositoryMeta::new(info.system_identifier, info.pg_version, info.seg_size.bytes());
        let meta = opts
            .retry
            .run("read repository metadata", || {
                ensure_repository_meta(&*store, candidate.clone())
            })
            .await?;
        meta.check_system_identifier(info.system_identifier)
            .map_err(|source| EngineError::WrongCluster {
                path: path.to_path_buf(),
                source,
            })?;
    }
    let key = wal_key(&file);
    opts.retry
        .run("wal-push", || push_once(&*store, path, &file, &key, opts))
        .await
}

async fn push_once(
    store: &dyn ObjectStore,
    path: &Path,
    file: &ArchivedFile,
    key: &Key,
    opts: &WalPushOptions,
) -> Result<WalPushOutcome, EngineError> {
    if store.exists(key).await? {
        return compare_with_archived(store, path, file, key, opts).await;
    }
    let mut upload = UploadOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    // A local repository writes parts straight to its temporary file: the
    // compressed segment is then never held whole in memory.
    if let Some(part) = opts.part_size.or_else(|| store.streaming_part_size()) {
        upload.part_size = part;
    }
    match upload_file(
        store,
        key,
        path,
        opts.compression,
        opts.keys.data_key.as_ref(),
        upload,
    )
    .await
    {
        Ok((meta, summary)) => Ok(WalPushOutcome {
            file: *file,
            key: key.clone(),
            status: WalPushStatus::Stored,
            original_len: summary.original_len,
            stored_len: meta.size,
            digest: summary.digest,
        }),
        // Someone archived the same name meanwhile (a retried
        // archive_command racing its predecessor): compare contents.
        Err(EngineError::Store { source }) if source.is_already_exists() => {
            compare_with_archived(store, path, file, key, opts).await
        }
        Err(e) => Err(e),
    }
}

/// The name must be one PostgreSQL's archiver hands out.
fn parse_file_name(path: &Path) -> Result<ArchivedFile, EngineError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| EngineError::Rejected {
            path: path.to_path_buf(),
            reason: "the path has no file name".into(),
        })?;
    ArchivedFile::parse(name).map_err(|source| EngineError::InvalidWalFile {
        path: path.to_path_buf(),
        source,
    })
}

/// Checks the file's content against its name. Returns the segment header
/// facts for segments, `None` for history and backup files.
fn check_file(path: &Path, file: &ArchivedFile) -> Result<Option<SegmentInfo>, EngineError> {
    let mut f = std::fs::File::open(path).map_err(|e| EngineError::local_io("cannot open", path, e))?;
    let len = f
        .metadata()
        .map_err(|e| EngineError::local_io("cannot stat", path, e))?
        .len();
    match file {
        ArchivedFile::Segment(name) | ArchivedFile::Partial(name) => {
            let mut first = vec![0u8; XLogLongPageHeader::SIZE];
            let n =
                read_up_to(&mut f, &mut first).map_err(|e| EngineError::local_io("cannot read", path, e))?;
            first.truncate(n);
            check_segment(path, name, &first, len).map(Some)
        }
        ArchivedFile::TimelineHistory(_) | ArchivedFile::BackupHistory { .. } => {
            check_text_file(path, file, &mut f, len)?;
            Ok(None)
        }
    }
}

fn check_segment(
    path: &Path,
    name: &WalSegmentName,
    first: &[u8],
    len: u64,
) -> Result<SegmentInfo, EngineError> {
    validate_segment(name, first, len).map_err(|source| EngineError::InvalidWalFile {
        path: path.to_path_buf(),
        source,
    })
}

/// History and backup-history files are short text files PostgreSQL writes
/// itself; refuse anything that is not.
fn check_text_file(
    path: &Path,
    file: &ArchivedFile,
    f: &mut std::fs::File,
    len: u64,
) -> Result<(), EngineError> {
    const MAX_LEN: u64 = 16 << 20;
    let reject = |reason: String| EngineError::Rejected {
        path: path.to_path_buf(),
        reason,
    };
    if len > MAX_LEN {
        return Err(reject(format!("{len} bytes is too large for a history file")));
    }
    let mut text = Vec::with_capacity(len as usize);
    f.read_to_end(&mut text)
        .map_err(|e| EngineError::local_io("cannot read", path, e))?;
    let text = std::str::from_utf8(&text).map_err(|_| reject("a history file must be text".into()))?;
    match file {
        ArchivedFile::BackupHistory { .. } if !text.starts_with("START WAL LOCATION:") => Err(reject(
            "a backup history file starts with \"START WAL LOCATION:\"".into(),
        )),
        ArchivedFile::TimelineHistory(_) => {
            // Each entry: parent timeline, switch point, reason (timeline.c).
            for line in text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                let first = line.split_whitespace().next().unwrap_or("");
                if first.parse::<u32>().is_err() {
                    return Err(reject(format!("not a timeline history line: {line:?}")));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn read_up_to(f: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The name is taken: same content is success, different content a
/// conflict. The archived object is fully decoded, so a damaged one is
/// reported rather than trusted.
async fn compare_with_archived(
    store: &dyn ObjectStore,
    path: &Path,
    file: &ArchivedFile,
    key: &Key,
    opts: &WalPushOptions,
) -> Result<WalPushOutcome, EngineError> {
    let archived = verify_object(store, key, opts.keys.data_key.as_ref())
        .await?
        .digest;
    let local_path: PathBuf = path.to_path_buf();
    let algorithm = archived.algorithm;
    let (local, len) = tokio::task::spawn_blocking(move || digest_file(&local_path, algorithm))
        .await
        .map_err(|e| EngineError::Internal(format!("checksum task failed: {e}")))??;
    if archived != local {
        return Err(EngineError::Conflict {
            name: file.file_name(),
            archived: archived.to_string(),
            local: local.to_string(),
        });
    }
    Ok(WalPushOutcome {
        file: *file,
        key: key.clone(),
        status: WalPushStatus::AlreadyArchived,
        original_len: len,
        stored_len: 0,
        digest: local,
    })
}

/// The digest of a local file by `algorithm`, and its length.
fn digest_file(path: &Path, algorithm: DigestAlgorithm) -> Result<(ContentDigest, u64), EngineError> {
    let mut f = std::fs::File::open(path).map_err(|e| EngineError::local_io("cannot open", path, e))?;
    let mut hasher = ContentHasher::new(algorithm);
    let mut buf = vec![0u8; 256 << 10];
    let mut len = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| EngineError::local_io("cannot read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((hasher.finalize(), len))
}
