//! `backup-push`: an online physical backup of a running cluster.
//!
//! Runs a non-exclusive backup on one pinned session, copies the data
//! directory and tablespaces through a bounded parallel pipeline (read, tar,
//! compress, checksum, upload), copies pg_control last, stops the backup,
//! waits (bounded) until the WAL the backup needs is archived, and writes
//! the manifest last. A failure at any point leaves no manifest, so the
//! backup does not exist for any command; its orphaned parts are inert.

use crate::delta_push::{self, DeltaOptions, IncrementSource, NewBackup, Parent, ScanSpec};
use crate::part_file::{self, FileSource};
use crate::pipe::{upload_and_produce, verify_object, ChannelWriter, Produced};
use crate::repository::ensure_repository_meta;
use crate::scan::{scan, Scan, ScannedFile};
use crate::{EngineError, RetryPolicy};
use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use pgark_catalog::{
    delta_entry_name, wal_key, BackupManifest, BackupName, CorruptPages, DeltaEntry, FileEntry, PartEntry,
    PieceEntry, RepositoryMeta, TablespaceEntry, MANIFEST_FORMAT,
};
use pgark_codec::{CompressionSpec, DigestAlgorithm, ObjectWriter};
use pgark_delta::BlockSize;
use pgark_pg::layout::is_paged_relation_file;
use pgark_pg::{ArchivedFile, ControlFile, Lsn, SegmentNo, TimelineId, WalSegmentName, WalSegmentSize};
use pgark_pgclient::{ConnectOptions, Session};
use pgark_store::{Key, ObjectStore, ObjectStoreExt, PutMode, UploadOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of [`backup_push`].
#[derive(Debug, Clone)]
pub struct BackupPushOptions {
    pub pgdata: PathBuf,
    pub connect: ConnectOptions,
    pub compression: CompressionSpec,
    /// Request an immediate checkpoint at backup start (the default).
    pub fast_checkpoint: bool,
    /// Parts compressed and uploaded at once. Peak memory is about
    /// `concurrency x (4 MiB channel + upload part size)`.
    pub concurrency: usize,
    /// Files are grouped into parts of about this many bytes; a larger
    /// file is split into pieces of this size, stored in different parts.
    pub part_size: u64,
    /// How long to wait after the stop call for the backup's last WAL
    /// segment to reach the repository; `None` skips the wait (the backup
    /// is then usable only once that segment is archived).
    pub archive_timeout: Option<Duration>,
    /// For a backup from a standby: how to reach its primary, to ask it to
    /// switch WAL so that the backup's last segment is archived at once
    /// (`None`: the standby's own `primary_conninfo`).
    pub primary_conn: Option<String>,
    pub retry: RetryPolicy,
    /// Told how many bytes will be copied and how many are done.
    pub progress: Option<Arc<dyn ProgressSink>>,
    /// The repository's data key when it is encrypted.
    pub keys: crate::RepoKeys,
    /// Take a delta of a parent backup (falls back to a full backup, saying
    /// why, when no suitable parent exists).
    pub delta: Option<DeltaOptions>,
    /// Mark the backup permanent (never expired by retention). The mark
    /// is written before the manifest, so the backup is never listed
    /// without it.
    pub permanent: bool,
}

/// Receives progress of a long copy (a terminal bar, log lines).
pub trait ProgressSink: Send + Sync + std::fmt::Debug {
    /// The copy starts; `total` bytes are expected.
    fn start(&self, total: u64);
    /// `bytes` more were copied.
    fn advance(&self, bytes: u64);
    /// The copy is over (successfully or not).
    fn finish(&self);
}

impl BackupPushOptions {
    pub fn new(pgdata: PathBuf) -> Self {
        BackupPushOptions {
            pgdata,
            connect: ConnectOptions::default(),
            compression: CompressionSpec::default(),
            fast_checkpoint: true,
            concurrency: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            part_size: 64 << 20,
            archive_timeout: Some(Duration::from_secs(300)),
            primary_conn: None,
            retry: RetryPolicy::default(),
            progress: None,
            keys: crate::RepoKeys::none(),
            delta: None,
            permanent: false,
        }
    }
}

/// Runs one backup; returns its manifest.
pub async fn backup_push(
    store: Arc<dyn ObjectStore>,
    opts: &BackupPushOptions,
) -> Result<BackupManifest, EngineError> {
    let pgdata = check_pgdata(&opts.pgdata)?;
    let control = read_control_file(&pgdata)?;
    let control_sysid = control.system_identifier;
    let session = Session::connect(&opts.connect).await?;
    let server_sysid = session.system_identifier().await?;
    if server_sysid != control_sysid {
        return Err(EngineError::Rejected {
            path: pgdata.clone(),
            reason: format!(
                "this data directory has system identifier {control_sysid}, but the server at {} has \
                 {server_sysid}: PGDATA belongs to another server",
                session.target()
            ),
        });
    }
    if let Ok(dir) = session.data_directory().await {
        let server_dir = std::fs::canonicalize(&dir).unwrap_or_else(|_| PathBuf::from(&dir));
        if server_dir != pgdata {
            return Err(EngineError::Rejected {
                path: pgdata.clone(),
                reason: format!("the server at {} runs on data directory {dir}", session.target()),
            });
        }
    }
    let seg_size = WalSegmentSize::new(session.wal_segment_size().await?).map_err(|source| {
        EngineError::InvalidWalFile {
            path: pgdata.clone(),
            source,
        }
    })?;
    let major = session.major();
    let candidate = RepositoryMeta::new(server_sysid, major, seg_size.bytes());
    let meta = opts
        .retry
        .run("read repository metadata", || {
            ensure_repository_meta(&*store, candidate.clone())
        })
        .await?;
    meta.check_system_identifier(server_sysid)
        .map_err(|source| EngineError::WrongCluster {
            path: pgdata.clone(),
            source,
        })?;
    let tablespaces = session.tablespaces().await?;
    let from_standby = session.is_in_recovery().await?;
    // A standby archives only with archive_mode = always; usually its
    // primary fills the archive, so only a primary's settings are checked.
    if opts.archive_timeout.is_some() && !from_standby {
        check_archiving(&session).await?;
    }
    let archiver_before = session.archiver_status().await.unwrap_or_default();

    let started_at = Utc::now();
    let label = format!("pgark {}", started_at.format("%Y-%m-%dT%H:%M:%SZ"));
    let start_lsn = session.backup_start(&label, opts.fast_checkpoint).await?;
    let timeline = session.checkpoint_timeline().await?;
    let start_segment = segment_of(timeline, start_lsn, seg_size);
    let name = BackupName::new(&start_segment.to_string(), started_at);
    tracing::info!("backup {name} started at {start_lsn} on timeline {}", timeline.0);

    let ts_dirs: Vec<(u32, PathBuf)> = tablespaces
        .iter()
        .map(|t| (t.oid, PathBuf::from(&t.location)))
        .collect();
    let pgdata_for_scan = pgdata.clone();
    let block_size = BlockSize::new(control.blcksz).map_err(|e| EngineError::Rejected {
        path: pgdata.join("global/pg_control"),
        reason: e.to_string(),
    })?;
    let parent = match &opts.delta {
        None => None,
        Some(req) => {
            let all = usable_parents(crate::manifest_io::list_backups_detailed(&*store, &opts.keys).await?);
            let new = NewBackup {
                system_identifier: server_sysid,
                timeline,
                start_lsn,
                block_size: control.blcksz,
            };
            let history = |tli: TimelineId| {
                std::fs::read_to_string(pgdata.join("pg_wal").join(format!("{:08X}.history", tli.0))).ok()
            };
            match delta_push::choose_parent(all, req, new, history) {
                Ok(parent) => {
                    tracing::info!(
                        "backup {name} is a delta of {} (pages changed since {})",
                        parent.manifest.name,
                        parent.since
                    );
                    Some(parent)
                }
                Err(why) => {
                    tracing::warn!("taking a full backup instead of a delta: {why}");
                    None
                }
            }
        }
    };
    let ctx = Arc::new(PartContext {
        block_size,
        relseg_size: control.relseg_size,
        data_checksums: control.data_checksums(),
        since: parent.as_ref().map_or(Lsn(0), |p| p.since),
    });
    let scanned = tokio::task::spawn_blocking(move || scan(&pgdata_for_scan, &ts_dirs))
        .await
        .map_err(|e| EngineError::Internal(format!("scan task failed: {e}")))??;
    let copied = copy_files(&store, &name, scanned, opts, &ctx, parent.as_ref()).await?;

    let stop = session.backup_stop().await?;
    // The server's clock, not ours: restores to a target time compare it
    // with commit timestamps.
    let server_stop_time = session.server_time().await?;
    let corrupt_pages = corrupt_pages(&copied.checksum_failures, start_lsn, stop.lsn);
    for c in &corrupt_pages {
        tracing::warn!(
            "data page checksum failure in {}: block(s) {} (read twice with the same bytes: corrupt on disk)",
            c.path,
            c.blocks.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        );
    }
    let end_timeline = session.checkpoint_timeline().await.unwrap_or(timeline);
    let label_timeline =
        parse_label_field(&stop.backup_label, "START TIMELINE:").and_then(|s| s.parse::<u32>().ok());
    if end_timeline != timeline || label_timeline.is_some_and(|t| t != timeline.0) {
        return Err(EngineError::Postgres {
            what: "backup".into(),
            message: format!(
                "the timeline changed during the backup (started on {}, now {}): the backup is discarded; run it again",
                timeline.0, end_timeline.0
            ),
        });
    }
    // The backup needs WAL up to and including the segment holding the
    // last byte before the stop LSN (XLByteToPrevSeg).
    let stop_segment = segment_of(
        timeline,
        Lsn(stop.lsn.0.saturating_sub(1).max(start_lsn.0)),
        seg_size,
    );
    if let Some(timeout) = opts.archive_timeout {
        if from_standby {
            nudge_primary(&session, opts, &stop_segment, timeout).await;
        }
        wait_for_archive(&*store, &session, &stop_segment, timeout, &archiver_before).await?;
    }

    let finished_at = Utc::now();
    let original_size = copied.files.iter().map(|f| f.size).sum();
    let stored_size = copied.parts.iter().map(|p| p.stored_size).sum();
    let manifest = BackupManifest {
        format: MANIFEST_FORMAT,
        name: name.clone(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        system_identifier: server_sysid,
        pg_version_num: session.version_num(),
        timeline: timeline.0,
        start_lsn: start_lsn.to_string(),
        stop_lsn: stop.lsn.to_string(),
        start_wal_segment: start_segment.to_string(),
        stop_wal_segment: stop_segment.to_string(),
        wal_segment_size: seg_size.bytes(),
        backup_from: if from_standby { "standby" } else { "primary" }.to_string(),
        started_at,
        finished_at,
        server_stop_time: Some(server_stop_time),
        original_size,
        stored_size,
        compression: opts.compression.codec.to_string(),
        backup_label: stop.backup_label,
        tablespace_map: stop.tablespace_map,
        tablespaces: tablespaces
            .into_iter()
            .map(|t| TablespaceEntry {
                oid: t.oid,
                name: t.name,
                location: t.location,
            })
            .collect(),
        parent: parent.as_ref().map(|p| p.manifest.name.clone()),
        delta_depth: parent.as_ref().map_or(0, |p| p.manifest.delta_depth + 1),
        delta_since_lsn: parent.as_ref().map(|p| p.since.to_string()),
        data_checksums: ctx.data_checksums,
        block_size: control.blcksz,
        corrupt_pages,
        parts: copied.parts,
        directories: copied.dirs,
        files: copied.files,
    };
    // A delete that ran meanwhile may have removed the parent: a delta
    // without its parent must not be listed. (A delete between this check
    // and the manifest's write is not caught: see docs/03-retention.md.)
    if let Some(parent) = &manifest.parent {
        let still_there = opts
            .retry
            .run("check of the parent backup", || async {
                store
                    .exists(&parent.manifest_key())
                    .await
                    .map_err(EngineError::from)
            })
            .await?;
        if !still_there {
            return Err(EngineError::NotFound {
                what: format!(
                    "parent backup {parent} (deleted while this delta was taken; no backup was written, \
                     take it again)"
                ),
                key: parent.manifest_key().to_string(),
            });
        }
    }
    if opts.permanent {
        opts.retry
            .run("write of the permanent mark", || async {
                store
                    .put(
                        &manifest.name.permanent_key(),
                        bytes::Bytes::new(),
                        PutMode::Overwrite,
                    )
                    .await
                    .map_err(EngineError::from)
            })
            .await?;
    }
    // A retried create-only put that meets its own earlier, completed
    // attempt ("already exists") is checked to be this very manifest.
    opts.retry
        .run("write of the manifest", || async {
            match crate::manifest_io::put_manifest(&*store, &manifest, &opts.keys).await {
                Err(EngineError::Store { source })
                    if source.kind() == pgark_store::ErrorKind::AlreadyExists =>
                {
                    let stored =
                        crate::manifest_io::load_manifest(&*store, &manifest.name, &opts.keys).await?;
                    if stored == manifest {
                        Ok(())
                    } else {
                        Err(EngineError::Store { source })
                    }
                }
                other => other,
            }
        })
        .await?;
    tracing::info!(
        "backup {name} complete: {} files, {} bytes stored as {} bytes",
        manifest.files.len(),
        manifest.original_size,
        manifest.stored_size
    );
    Ok(manifest)
}

/// The pages to report as corrupt among those whose checksum failed with
/// the same bytes twice: not those written during the backup, which WAL
/// replay rewrites (see `pgark_delta::checksum_failure_is_corruption`).
fn corrupt_pages(failures: &[ChecksumFailures], start: Lsn, stop: Lsn) -> Vec<CorruptPages> {
    let mut out = Vec::new();
    for f in failures {
        let (reported, replayed): (Vec<_>, Vec<_>) = f
            .pages
            .iter()
            .partition(|(_, lsn)| pgark_delta::checksum_failure_is_corruption(*lsn, start, stop));
        for (block, lsn) in &replayed {
            tracing::debug!(
                "{} block {block}: checksum failure on a page written during the backup (LSN {lsn}); \
                 WAL replay rewrites it",
                f.path
            );
        }
        if !reported.is_empty() {
            out.push(CorruptPages {
                path: f.path.clone(),
                blocks: reported.into_iter().map(|(block, _)| block).collect(),
            });
        }
    }
    out
}

fn segment_of(tli: TimelineId, lsn: Lsn, size: WalSegmentSize) -> WalSegmentName {
    WalSegmentName::from_segment_no(tli, SegmentNo(lsn.0 / u64::from(size.bytes())), size)
}

pub(crate) fn parse_label_field<'a>(label: &'a str, field: &str) -> Option<&'a str> {
    label.lines().find_map(|l| l.strip_prefix(field)).map(str::trim)
}

fn check_pgdata(pgdata: &Path) -> Result<PathBuf, EngineError> {
    let reject = |reason: &str| EngineError::Rejected {
        path: pgdata.to_path_buf(),
        reason: reason.to_string(),
    };
    let canonical =
        std::fs::canonicalize(pgdata).map_err(|e| EngineError::local_io("cannot open", pgdata, e))?;
    if !canonical.join("PG_VERSION").is_file() || !canonical.join("global/pg_control").is_file() {
        return Err(reject(
            "not a PostgreSQL data directory (no PG_VERSION or global/pg_control)",
        ));
    }
    Ok(canonical)
}

/// Reads and checks pg_control (system identifier, BLCKSZ, RELSEG_SIZE,
/// data checksums). The server rewrites it in place, in one sector, so a
/// read that fails its CRC is tried again a few times.
fn read_control_file(pgdata: &Path) -> Result<ControlFile, EngineError> {
    let path = pgdata.join("global/pg_control");
    let mut last = None;
    for _ in 0..5 {
        let bytes = std::fs::read(&path).map_err(|e| EngineError::local_io("cannot read", &path, e))?;
        match ControlFile::parse(&bytes) {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(EngineError::Rejected {
        path,
        reason: format!("pg_control cannot be read: {}", last.expect("tried")),
    })
}

async fn check_archiving(session: &Session) -> Result<(), EngineError> {
    let (mode, command) = session.archive_settings().await?;
    if mode == "off" {
        return Err(EngineError::Postgres {
            what: "WAL archiving".into(),
            message: "archive_mode is off, so the WAL this backup needs would never reach the repository: set \
                      archive_mode = on and archive_command = 'pgark wal-push %p' (or pass --archive-timeout 0 \
                      to skip the check and ship WAL another way)"
                .into(),
        });
    }
    if command.is_empty() || command == "(disabled)" {
        tracing::warn!("archive_command is empty: the backup will wait for WAL that nothing archives");
    }
    Ok(())
}

/// Polls the repository for `segment`, failing promptly when PostgreSQL
/// reports that archiving is failing, and at `timeout` otherwise.
/// A standby does not archive (unless `archive_mode = always`): its
/// primary archives the backup's last segment when it switches to the
/// next, which a quiet primary may not do for a long time. So the primary
/// is asked to switch now (`pg_switch_wal()`), as pgBackRest does, through
/// `opts.primary_conn` or the standby's `primary_conninfo` (the parts of it
/// this client understands). Failing that, says what the backup waits for.
async fn nudge_primary(
    session: &Session,
    opts: &BackupPushOptions,
    segment: &WalSegmentName,
    timeout: Duration,
) {
    let waiting = format!(
        "waiting up to {}s for the primary to switch to a new WAL segment, so that {segment} is archived \
         (the primary's archive_timeout bounds this; give --primary-conn so pgark can ask it)",
        timeout.as_secs()
    );
    let conninfo = match &opts.primary_conn {
        Some(c) => Some(c.clone()),
        None => session
            .primary_conninfo()
            .await
            .ok()
            .flatten()
            .and_then(|c| pgark_pgclient::client_conninfo(&c)),
    };
    let Some(conninfo) = conninfo else {
        tracing::warn!("backup from a standby without a primary_conninfo: {waiting}");
        return;
    };
    let asked = async {
        let primary = Session::connect(&ConnectOptions {
            conninfo: Some(conninfo),
            connect_timeout: Some(Duration::from_secs(10)),
        })
        .await?;
        if primary.is_in_recovery().await? {
            return Err(pgark_pgclient::PgClientError::Protocol {
                what: "primary",
                detail: "the server primary_conninfo names is in recovery too (cascading standby)".into(),
            });
        }
        primary.switch_wal().await
    };
    match tokio::time::timeout(Duration::from_secs(30), asked).await {
        Ok(Ok(lsn)) => tracing::info!("asked the primary to switch WAL (pg_switch_wal() returned {lsn})"),
        Ok(Err(e)) => tracing::warn!("could not ask the primary to switch WAL ({e}): {waiting}"),
        Err(_) => tracing::warn!("the primary did not answer within 30 s: {waiting}"),
    }
}

async fn wait_for_archive(
    store: &dyn ObjectStore,
    session: &Session,
    segment: &WalSegmentName,
    timeout: Duration,
    before: &pgark_pgclient::ArchiverStatus,
) -> Result<(), EngineError> {
    let key = wal_key(&ArchivedFile::Segment(*segment));
    let begun = Instant::now();
    let deadline = begun + timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        if store.exists(&key).await? {
            return Ok(());
        }
        let status = session.archiver_status().await?;
        let failing = status.failed_count > before.failed_count
            && status
                .last_failed_wal
                .as_deref()
                .is_some_and(|w| w <= segment.to_string().as_str() || w.len() != 24)
            && status.last_failed_time > status.last_archived_time;
        if failing || Instant::now() >= deadline {
            let why = if failing {
                "WAL archiving is failing"
            } else {
                "timed out waiting"
            };
            return Err(EngineError::ArchiveWait {
                segment: segment.to_string(),
                detail: format!(
                    "{why}: pg_stat_archiver reports {} failures (last failed WAL {}, at {}), last archived {} at {}",
                    status.failed_count,
                    status.last_failed_wal.as_deref().unwrap_or("none"),
                    status.last_failed_time.as_deref().unwrap_or("never"),
                    status.last_archived_wal.as_deref().unwrap_or("none"),
                    status.last_archived_time.as_deref().unwrap_or("never"),
                ),
                waited: begun.elapsed(),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

#[derive(Debug)]
struct NoProgress;

impl ProgressSink for NoProgress {
    fn start(&self, _: u64) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// Ends the progress display however the copy ends.
struct FinishOnDrop(Arc<dyn ProgressSink>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

struct Copied {
    parts: Vec<PartEntry>,
    files: Vec<FileEntry>,
    dirs: Vec<pgark_catalog::DirEntry>,
    checksum_failures: Vec<ChecksumFailures>,
}

/// The pages of one file whose checksum failed with the same bytes twice:
/// block (in the file) and `pd_lsn` as read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChecksumFailures {
    path: String,
    pages: Vec<(u32, Lsn)>,
}

/// What one tar entry of a part holds: a whole file, or a piece of a file
/// larger than a part.
#[derive(Debug, Clone)]
struct WorkItem {
    file: Arc<ScannedFile>,
    piece: Option<Piece>,
    /// In a delta backup, for a relation file the parent has: the parent's
    /// size in blocks; the file is stored as an increment.
    parent_blocks: Option<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Piece {
    /// 0-based, in offset order.
    number: usize,
    offset: u64,
    len: u64,
}

impl WorkItem {
    fn len(&self) -> u64 {
        self.piece.map_or(self.file.size, |p| p.len)
    }

    fn offset(&self) -> u64 {
        self.piece.map_or(0, |p| p.offset)
    }

    /// The tar entry name: the file's path, or its piece name.
    fn entry_name(&self) -> String {
        match self.piece {
            None => self.file.rel.clone(),
            Some(p) => pgark_catalog::piece_entry_name(&self.file.rel, p.number),
        }
    }
}

/// What writing one work item produced.
#[derive(Debug)]
struct Copied1 {
    item: WorkItem,
    crc32c: u32,
    part: u32,
    /// Blocks (in the file) whose checksum failed with the same bytes
    /// twice, with their `pd_lsn`.
    corrupt: Vec<(u32, Lsn)>,
    /// How a delta backup stored the file.
    delta: Option<DeltaEntry>,
}

/// Splits files larger than `piece_size` into pieces of that size (the
/// last one shorter), so that one large file is compressed, uploaded and
/// restored by several workers at once. Nothing is split when a file's own
/// name looks like a piece (its entry name could collide). In a delta
/// backup, relation files the parent has become increments (never split).
fn work_items(
    files: Vec<ScannedFile>,
    piece_size: u64,
    parent: Option<(&Parent, BlockSize)>,
) -> Vec<WorkItem> {
    let piece_size = piece_size.max(1);
    let split = !files.iter().any(|f| f.rel.contains(pgark_catalog::PIECE_SUFFIX));
    // A database directory new or re-created since the parent (a reused
    // OID) has its files copied whole: see `Parent::same_database_dirs`.
    let same_dirs = parent
        .map(|(p, _)| p.same_database_dirs(files.iter().map(|f| (f.rel.as_str(), f.mtime, f.mtime_nsec))))
        .unwrap_or_default();
    let mut items = Vec::with_capacity(files.len());
    for f in files {
        let parent_blocks = parent
            .filter(|_| pgark_delta::is_delta_file(&f.rel))
            .filter(|_| delta_push::database_dir(&f.rel).is_none_or(|d| same_dirs.contains(d)))
            // A file caught mid-extension (not whole pages) is copied whole.
            .filter(|(_, bs)| f.size % u64::from(bs.get()) == 0)
            .and_then(|(p, bs)| p.blocks_of(&f.rel, bs));
        let file = Arc::new(f);
        if parent_blocks.is_some() || !split || file.size <= piece_size {
            items.push(WorkItem {
                file,
                piece: None,
                parent_blocks,
            });
            continue;
        }
        let mut offset = 0;
        let mut number = 0;
        while offset < file.size {
            let len = piece_size.min(file.size - offset);
            items.push(WorkItem {
                file: file.clone(),
                piece: Some(Piece { number, offset, len }),
                parent_blocks: None,
            });
            offset += len;
            number += 1;
        }
    }
    items
}

/// Groups files (and pieces of large files) into parts, uploads them
/// `concurrency` at a time, then pg_control alone in the last part.
async fn copy_files(
    store: &Arc<dyn ObjectStore>,
    name: &BackupName,
    scanned: Scan,
    opts: &BackupPushOptions,
    ctx: &Arc<PartContext>,
    parent: Option<&Parent>,
) -> Result<Copied, EngineError> {
    let Scan { files, dirs, control } = scanned;
    let mut items = work_items(files, opts.part_size, parent.map(|p| (p, ctx.block_size)));
    // Largest first: the biggest items start at once and the small ones
    // fill the gaps, so no worker idles at the end while another still
    // compresses a large part alone.
    items.sort_by(|a, b| {
        b.len()
            .cmp(&a.len())
            .then_with(|| a.file.rel.cmp(&b.file.rel))
            .then_with(|| a.offset().cmp(&b.offset()))
    });
    let control = control.ok_or_else(|| EngineError::Internal("global/pg_control vanished".into()))?;
    let mut groups: Vec<Vec<WorkItem>> = Vec::new();
    let mut current: Vec<WorkItem> = Vec::new();
    let mut current_size = 0u64;
    for item in items {
        current_size += item.len();
        current.push(item);
        if current_size >= opts.part_size {
            groups.push(std::mem::take(&mut current));
            current_size = 0;
        }
    }
    if !current.is_empty() || groups.is_empty() {
        groups.push(current);
    }
    let total: u64 = groups.iter().flatten().map(WorkItem::len).sum::<u64>() + control.size;
    let progress: Arc<dyn ProgressSink> = opts.progress.clone().unwrap_or_else(|| Arc::new(NoProgress));
    progress.start(total);
    let _finish = FinishOnDrop(progress.clone());

    let dirs_for_first = Arc::new(dirs.clone());
    let uploads = futures::stream::iter(groups.into_iter().enumerate().map(|(i, group)| {
        let index = i as u32 + 1;
        let key = name.part_key(index);
        let dirs = if index == 1 {
            Some(dirs_for_first.clone())
        } else {
            None
        };
        let progress = progress.clone();
        let store = store.clone();
        let ctx = ctx.clone();
        // A part that meets a transient repository failure is written again
        // from the start (its files are read again: an online backup's
        // copy may come from any moment between start and stop); nothing
        // of a failed attempt remains (create-only puts complete whole or
        // not at all).
        async move {
            opts.retry
                .run(&format!("upload of {key}"), || {
                    upload_part(
                        &*store,
                        key.clone(),
                        index,
                        group.clone(),
                        dirs.clone(),
                        opts,
                        ctx.clone(),
                        progress.clone(),
                    )
                })
                .await
        }
    }))
    .buffer_unordered(opts.concurrency.max(1));
    // The first failure stops the copy: parts in flight are dropped (their
    // uploads aborted), none is started after it.
    let results: Vec<(PartEntry, Vec<Copied1>)> = uploads.try_collect().await?;
    let mut parts = Vec::new();
    let mut copied = Vec::new();
    for (part, items) in results {
        parts.push(part);
        copied.extend(items);
    }
    // pg_control last: a restore that has it has everything else.
    let index = parts.len() as u32 + 1;
    let control_item = WorkItem {
        file: Arc::new(control),
        piece: None,
        parent_blocks: None,
    };
    let (part, items) = opts
        .retry
        .run("upload of pg_control", || {
            upload_part(
                &**store,
                name.part_key(index),
                index,
                vec![control_item.clone()],
                None,
                opts,
                ctx.clone(),
                progress.clone(),
            )
        })
        .await?;
    parts.push(part);
    copied.extend(items);
    parts.sort_by_key(|p| p.index);
    let (files, checksum_failures) = file_entries(copied);
    Ok(Copied {
        parts,
        files,
        dirs,
        checksum_failures,
    })
}

/// The manifest's file entries from what the parts hold: pieces are put
/// back in order under their file, whose CRC-32C is combined from theirs;
/// and the checksum failures found, per file.
fn file_entries(mut copied: Vec<Copied1>) -> (Vec<FileEntry>, Vec<ChecksumFailures>) {
    copied.sort_by(|a, b| {
        a.item
            .file
            .rel
            .cmp(&b.item.file.rel)
            .then_with(|| a.item.offset().cmp(&b.item.offset()))
    });
    let mut entries: Vec<FileEntry> = Vec::new();
    let mut corrupt: Vec<ChecksumFailures> = Vec::new();
    for c in copied {
        let f = &c.item.file;
        if !c.corrupt.is_empty() {
            match corrupt.last_mut() {
                Some(last) if last.path == f.rel => last.pages.extend(&c.corrupt),
                _ => corrupt.push(ChecksumFailures {
                    path: f.rel.clone(),
                    pages: c.corrupt.clone(),
                }),
            }
        }
        let piece = c.item.piece.map(|p| PieceEntry {
            part: c.part,
            offset: p.offset,
            size: p.len,
            crc32c: format!("{:08x}", c.crc32c),
        });
        match entries.last_mut() {
            Some(last) if last.path == f.rel && piece.is_some() => {
                let prev = u32::from_str_radix(&last.crc32c, 16).expect("written above");
                let len = usize::try_from(c.item.len()).expect("a piece fits in memory addresses");
                let crc = crc32c::crc32c_combine(prev, c.crc32c, len);
                last.crc32c = format!("{crc:08x}");
                last.pieces.extend(piece);
            }
            _ => entries.push(FileEntry {
                path: f.rel.clone(),
                size: f.size,
                mode: f.mode,
                mtime: f.mtime,
                crc32c: format!("{:08x}", c.crc32c),
                part: if c.delta.as_ref().is_some_and(|d| d.unchanged) {
                    0
                } else {
                    c.part
                },
                pieces: piece.into_iter().collect(),
                delta: c.delta,
            }),
        }
    }
    (entries, corrupt)
}

#[allow(clippy::too_many_arguments)]
async fn upload_part(
    store: &dyn ObjectStore,
    key: Key,
    index: u32,
    items: Vec<WorkItem>,
    dirs: Option<Arc<Vec<pgark_catalog::DirEntry>>>,
    opts: &BackupPushOptions,
    ctx: Arc<PartContext>,
    progress: Arc<dyn ProgressSink>,
) -> Result<(PartEntry, Vec<Copied1>), EngineError> {
    let spec = opts.compression;
    let data_key = opts.keys.data_key.clone();
    let name = key.as_str().to_string();
    let mut upload = UploadOptions {
        mode: PutMode::Create,
        ..Default::default()
    };
    // A local repository writes parts straight to its temporary file: a
    // backup part is then never held in memory by the upload.
    if let Some(part) = store.streaming_part_size() {
        upload.part_size = part;
    }
    let writer_key = data_key.clone();
    let outcome = upload_and_produce(store, &key, upload, move |sink| {
        let object =
            crate::pipe::object_writer(sink, spec, DigestAlgorithm::Blake3, writer_key.as_ref(), &name)?;
        write_part(index, items, dirs.as_deref(), object, &ctx, &*progress)
    })
    .await?;
    match outcome {
        (Ok(meta), Ok((mut part, items))) => {
            part.stored_size = meta.size;
            Ok((part, items))
        }
        // A retry meeting an earlier attempt that was stored although it
        // reported failure (a request that timed out after the store had
        // done it). The part key is this backup's alone, so the object is
        // that attempt: identical content is its success.
        (Err(e), Ok((part, items))) if e.is_already_exists() => {
            let (stored_size, identical) = same_part(store, &key, data_key.as_ref(), &part).await?;
            match identical {
                Ok(()) => {
                    tracing::info!("{key} was stored by an earlier attempt that reported failure; kept");
                    Ok((PartEntry { stored_size, ..part }, items))
                }
                Err(stored) => Err(EngineError::ObjectConflict {
                    key: key.to_string(),
                    stored,
                    written: format!("{} ({} bytes)", part.digest, part.original_size),
                }),
            }
        }
        (Err(e), Ok(_)) => Err(e.into()),
        (_, Err(Produced::Failed(e))) => Err(e),
        (Err(e), Err(Produced::Stopped(_))) => Err(e.into()),
        (Ok(_), Err(Produced::Stopped(e))) => Err(e),
    }
}

/// Reads and verifies the stored part `key` and compares its content (the
/// digest and length of the tar stream, from its verified trailer) with
/// `part`: its stored size, and `Ok` when identical or else what it holds.
async fn same_part(
    store: &dyn ObjectStore,
    key: &Key,
    data_key: Option<&pgark_crypto::DataKey>,
    part: &PartEntry,
) -> Result<(u64, Result<(), String>), EngineError> {
    let stored = verify_object(store, key, data_key).await?;
    let identical = stored.digest.to_string() == part.digest && stored.original_len == part.original_size;
    let what = format!("{} ({} bytes)", stored.digest, stored.original_len);
    Ok((stored.stored_len, if identical { Ok(()) } else { Err(what) }))
}

/// Writes one part: a tar stream of `items` (and `dirs` first), encoded as
/// a pgark object, into the channel.
fn write_part(
    index: u32,
    items: Vec<WorkItem>,
    dirs: Option<&Vec<pgark_catalog::DirEntry>>,
    object: ObjectWriter<ChannelWriter>,
    ctx: &PartContext,
    progress: &dyn ProgressSink,
) -> Result<(PartEntry, Vec<Copied1>), EngineError> {
    // Unbuffered: file data is read in place into the codec's buffer
    // (`part_file`); only headers and padding are written, each with one
    // write, into the frame being gathered.
    let mut tar = tar::Builder::new(object);
    tar.mode(tar::HeaderMode::Complete);
    let broken = |e: std::io::Error| EngineError::Internal(format!("writing backup part {index}: {e}"));
    for d in dirs.into_iter().flatten() {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(d.mode);
        h.set_size(0);
        h.set_mtime(0);
        tar.append_data(&mut h, &d.path, std::io::empty())
            .map_err(broken)?;
    }
    let mut buf = Vec::new();
    let mut copied = Vec::with_capacity(items.len());
    for item in items {
        let f = item.file.clone();
        let file = match std::fs::File::open(&f.abs) {
            Ok(file) => Some(file),
            // Dropped relations vanish during an online backup: WAL replay
            // removes them anyway, so a whole file is left out. A piece is
            // stored as zeros instead: some of its file's pieces may already
            // be in other parts.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && item.piece.is_none() => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!("{} vanished while being copied: the rest is zeros", f.rel);
                None
            }
            Err(e) => return Err(EngineError::local_io("cannot open", &f.abs, e)),
        };
        if let (Some(file), Some(parent_blocks)) = (&file, item.parent_blocks) {
            let spec = ScanSpec {
                block_size: ctx.block_size,
                since: ctx.since,
                parent_blocks,
                verify_checksums: ctx.data_checksums,
                first_block_no: ctx.first_block_no(&f.rel),
            };
            let scanned = delta_push::scan_file(file, &f.abs, f.size, spec, &mut buf)?;
            let mut delta = DeltaEntry {
                unchanged: scanned.unchanged(),
                blocks: scanned.header.blocks,
                parent_blocks,
                stored_pages: scanned.stored.len() as u32,
                size: 0,
                crc32c: String::new(),
            };
            if !delta.unchanged {
                let len = scanned.increment_len();
                let mut h = entry_header(&f, len);
                let mut source = IncrementSource::new(file, &f.abs, &scanned)?;
                let res =
                    part_file::append_read(&mut tar, &mut h, &delta_entry_name(&f.rel), len, &mut source);
                if let Some(e) = source.error.take() {
                    return Err(e);
                }
                res.map_err(broken)?;
                delta.size = len;
                delta.crc32c = format!("{:08x}", source.crc);
            }
            progress.advance(item.len());
            copied.push(Copied1 {
                crc32c: scanned.crc32c,
                corrupt: scanned.corrupt,
                delta: Some(delta),
                item,
                part: index,
            });
            continue;
        }
        let verify = (ctx.data_checksums && is_paged_relation_file(&f.rel) && file.is_some())
            .then_some(ctx.block_size)
            .filter(|bs| item.offset() % u64::from(bs.get()) == 0);
        let mut h = entry_header(&f, item.len());
        let mut source = FileSource::new(
            file.as_ref(),
            &f.abs,
            item.offset(),
            item.len(),
            verify,
            ctx.first_block_no(&f.rel),
        );
        part_file::append_file(&mut tar, &mut h, &item.entry_name(), &mut source, broken)?;
        progress.advance(item.len());
        let (crc32c, corrupt) = (source.crc, std::mem::take(&mut source.corrupt));
        copied.push(Copied1 {
            crc32c,
            corrupt,
            delta: None,
            item,
            part: index,
        });
    }
    let object = tar.into_inner().map_err(broken)?;
    let (sink, summary) = object
        .finish()
        .map_err(|e| EngineError::Internal(e.to_string()))?;
    sink.finish().map_err(broken)?;
    let part = PartEntry {
        index,
        original_size: summary.original_len,
        stored_size: 0,
        digest: summary.digest.to_string(),
    };
    Ok((part, copied))
}

fn entry_header(f: &ScannedFile, len: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(f.mode);
    h.set_size(len);
    h.set_mtime(u64::try_from(f.mtime).unwrap_or(0));
    h
}

/// What every part's writer needs to know about the cluster and the
/// backup.
#[derive(Debug, Clone)]
pub(crate) struct PartContext {
    pub block_size: BlockSize,
    pub relseg_size: u32,
    pub data_checksums: bool,
    /// The parent's start LSN in a delta backup.
    pub since: Lsn,
}

impl PartContext {
    /// The absolute block number of the first block of `rel` (segment
    /// number x RELSEG_SIZE), for data checksums; 0 for other files.
    fn first_block_no(&self, rel: &str) -> u32 {
        pgark_pg::layout::RelationFilePath::parse(rel)
            .map_or(0, |p| p.file.segno.saturating_mul(self.relseg_size))
    }
}

/// The backups a delta may build on, oldest first: not damaged, and not a
/// delta whose chain runs through a damaged or missing backup (restoring it
/// would fail). Each one left out is warned about.
fn usable_parents(listed: Vec<crate::ListedBackup>) -> Vec<BackupManifest> {
    use crate::ListedBackup;
    let mut usable: Vec<BackupManifest> = Vec::new();
    // Oldest first, so a parent is decided before its children.
    for b in listed {
        match b {
            ListedBackup::Damaged { name, reason, .. } => {
                tracing::warn!("backup {name} cannot be a delta parent: its manifest is damaged: {reason}");
            }
            ListedBackup::Ok(m) => match &m.parent {
                Some(p) if !usable.iter().any(|u| &u.name == p) => {
                    tracing::warn!(
                        "backup {} cannot be a delta parent: its parent {p} is damaged or missing",
                        m.name
                    );
                }
                _ => usable.push(*m),
            },
        }
    }
    usable
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(rel: &str, size: u64) -> ScannedFile {
        ScannedFile {
            rel: rel.into(),
            abs: PathBuf::from("/nonexistent").join(rel),
            size,
            mode: 0o600,
            mtime: 1,
            mtime_nsec: 0,
        }
    }

    #[test]
    fn large_files_are_split_into_pieces_that_cover_them() {
        let items = work_items(vec![file("a", 10), file("b", 25), file("c", 20)], 10, None);
        let layout: Vec<(String, u64, u64)> = items
            .iter()
            .map(|i| (i.entry_name(), i.offset(), i.len()))
            .collect();
        assert_eq!(
            layout,
            [
                ("a".to_string(), 0, 10),
                ("b.pgark-piece.000000".to_string(), 0, 10),
                ("b.pgark-piece.000001".to_string(), 10, 10),
                ("b.pgark-piece.000002".to_string(), 20, 5),
                ("c.pgark-piece.000000".to_string(), 0, 10),
                ("c.pgark-piece.000001".to_string(), 10, 10),
            ]
        );
    }

    #[test]
    fn nothing_is_split_when_a_name_looks_like_a_piece() {
        let items = work_items(vec![file("b", 25), file("x.pgark-piece.000000", 1)], 10, None);
        assert!(items.iter().all(|i| i.piece.is_none()));
    }

    #[test]
    fn pieces_are_joined_in_order_with_the_combined_crc() {
        let data: Vec<u8> = (0..25u32).map(|i| (i * 37 % 256) as u8).collect();
        let items = work_items(vec![file("b", 25), file("a", 3)], 10, None);
        // Finished out of order, in different parts.
        let mut copied: Vec<Copied1> = items
            .into_iter()
            .enumerate()
            .map(|(n, item)| {
                let crc32c = if item.file.rel == "a" {
                    crc32c::crc32c(&data[..3])
                } else {
                    let off = item.offset() as usize;
                    crc32c::crc32c(&data[off..off + item.len() as usize])
                };
                Copied1 {
                    item,
                    crc32c,
                    part: n as u32 + 1,
                    corrupt: vec![],
                    delta: None,
                }
            })
            .collect();
        copied.reverse();
        let (entries, corrupt) = file_entries(copied);
        assert!(corrupt.is_empty());
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].path, "a");
        assert!(entries[0].pieces.is_empty());
        let b = &entries[1];
        assert_eq!(b.crc32c, format!("{:08x}", crc32c::crc32c(&data)));
        assert_eq!(b.part, b.pieces[0].part);
        let offsets: Vec<u64> = b.pieces.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, [0, 10, 20]);
        assert_eq!(b.pieces.iter().map(|p| p.size).sum::<u64>(), 25);
    }
}
