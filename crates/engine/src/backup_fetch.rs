//! `backup-fetch`: restore a base backup into an empty directory.
//!
//! Parts are downloaded, verified and extracted in parallel; every file is
//! checked against the manifest's SHA-256; tablespaces are recreated as
//! symlinks (optionally remapped); backup_label, tablespace_map, a
//! PostgreSQL backup_manifest and the requested recovery settings are
//! written; everything is flushed to disk; and only then is pg_control
//! restored, so a directory whose restore was interrupted cannot start.

use crate::manifest_io::{list_backups, load_manifest};
use crate::pipe::{decode_object, ChannelReader};
use crate::EngineError;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use pgark_catalog::{piece_entry_name, BackupManifest, BackupName, FileEntry};
use pgark_codec::ObjectReader;
use pgark_store::{Key, ObjectStore, ObjectStoreExt};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Which backup to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupSelector {
    /// The newest completed backup (or, with a target time, the newest that
    /// finished before it).
    Latest,
    Named(BackupName),
}

/// Where recovery should stop (postgresql.conf recovery_target_*).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    Time(String),
    Xid(String),
    Name(String),
    Lsn(String),
    Immediate,
}

/// Recovery settings written into the restored directory.
#[derive(Debug, Clone, Default)]
pub struct RecoveryOptions {
    /// restore_command to write (the caller builds it: absolute binary path
    /// and repository settings).
    pub restore_command: Option<String>,
    pub target: Option<RecoveryTarget>,
    /// promote, pause or shutdown.
    pub action: Option<String>,
    /// latest, current or a timeline number.
    pub timeline: Option<String>,
    /// Create standby.signal instead of recovery.signal.
    pub standby: bool,
}

/// Settings of [`backup_fetch`].
#[derive(Debug, Clone)]
pub struct BackupFetchOptions {
    pub dest: PathBuf,
    pub backup: BackupSelector,
    /// Restore into a non-empty DEST (and tablespace directories) after
    /// emptying them.
    pub force: bool,
    pub concurrency: usize,
    /// Tablespace OID -> new location.
    pub tablespace_map: HashMap<u32, PathBuf>,
    /// Recovery settings; `None` writes none (the directory then starts
    /// crash recovery from backup_label and needs restore_command set by hand).
    pub recovery: Option<RecoveryOptions>,
    /// Check that every object exists and report, writing nothing.
    pub dry_run: bool,
    /// Told how many bytes will be restored and how many are done.
    pub progress: Option<Arc<dyn crate::ProgressSink>>,
    /// The repository's data key when it is encrypted.
    pub keys: crate::RepoKeys,
}

/// What a restore did (or would do, for a dry run).
#[derive(Debug, Clone)]
pub struct BackupFetchOutcome {
    pub manifest: BackupManifest,
    pub files: usize,
    pub bytes: u64,
    pub dry_run: bool,
}

/// Restores one backup into `opts.dest`.
pub async fn backup_fetch(
    store: Arc<dyn ObjectStore>,
    opts: &BackupFetchOptions,
) -> Result<BackupFetchOutcome, EngineError> {
    let manifest = select_backup(&*store, opts).await?;
    let locations = tablespace_locations(&manifest, &opts.tablespace_map);
    if opts.dry_run {
        for part in &manifest.parts {
            let key = manifest.name.part_key(part.index);
            if !store.exists(&key).await? {
                return Err(EngineError::NotFound {
                    what: format!("part {} of backup {}", part.index, manifest.name),
                    key: key.to_string(),
                });
            }
        }
        return Ok(outcome(manifest, true));
    }
    prepare_dir(&opts.dest, opts.force, "destination")?;
    for location in locations.values() {
        prepare_dir(location, opts.force, "tablespace directory")?;
    }
    match restore_into(store, opts, manifest, &locations).await {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            // Leave nothing half-restored behind: the directories were empty
            // (or emptied with --force) before this restore began.
            for dir in std::iter::once(&opts.dest).chain(locations.values()) {
                if let Err(clean) = remove_contents(dir) {
                    tracing::warn!(
                        "could not empty {} after the failed restore: {clean}",
                        dir.display()
                    );
                }
            }
            Err(e)
        }
    }
}

/// Everything after the destination directories are ready and empty.
async fn restore_into(
    store: Arc<dyn ObjectStore>,
    opts: &BackupFetchOptions,
    manifest: BackupManifest,
    locations: &HashMap<u32, PathBuf>,
) -> Result<BackupFetchOutcome, EngineError> {
    for (oid, location) in locations {
        let link = opts.dest.join("pg_tblspc").join(oid.to_string());
        std::fs::create_dir_all(opts.dest.join("pg_tblspc"))
            .map_err(|e| EngineError::local_io("cannot create", &link, e))?;
        std::os::unix::fs::symlink(location, &link)
            .map_err(|e| EngineError::local_io("cannot create symlink", &link, e))?;
    }
    let plan = Arc::new(Plan::new(opts, locations, &manifest));
    if let Some(p) = &plan.progress {
        p.start(manifest.original_size);
    }
    let (last, rest) = manifest
        .parts
        .split_last()
        .ok_or_else(|| EngineError::Internal("backup has no parts".into()))?;
    let name = manifest.name.clone();
    let results: Vec<Result<(), EngineError>> = futures::stream::iter(rest.iter().map(|p| {
        let plan = plan.clone();
        let key = name.part_key(p.index);
        let store = store.clone();
        let name = &name;
        async move {
            decode_object(
                &*store,
                &key.clone(),
                opts.keys.data_key.as_ref(),
                move |reader| extract(&key, reader, &plan),
            )
            .await
            .map_err(|e| missing_part(e, name, p.index))
        }
    }))
    .buffer_unordered(opts.concurrency.max(1))
    .collect()
    .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;

    write_text(&opts.dest.join("backup_label"), &manifest.backup_label)?;
    if !manifest.tablespace_map.is_empty() {
        write_text(
            &opts.dest.join("tablespace_map"),
            &remap_tablespace_map(&manifest, locations),
        )?;
    }
    // A backup of a standby carries its standby.signal: the restored
    // server's mode is what this restore asks for, not what the source was.
    for signal in ["standby.signal", "recovery.signal"] {
        let path = opts.dest.join(signal);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EngineError::local_io("cannot remove", &path, e)),
        }
    }
    write_pg_manifest(&opts.dest, &manifest)?;
    std::fs::create_dir_all(opts.dest.join("pg_wal/archive_status"))
        .map_err(|e| EngineError::local_io("cannot create", opts.dest.join("pg_wal/archive_status"), e))?;
    if let Some(recovery) = &opts.recovery {
        write_recovery_settings(&opts.dest, &manifest, recovery)?;
    }
    sync_filesystems(&opts.dest, locations.values())?;

    // pg_control last: until it is in place, the directory cannot start.
    let key = name.part_key(last.index);
    let plan_last = plan.clone();
    decode_object(
        &*store,
        &key.clone(),
        opts.keys.data_key.as_ref(),
        move |reader| extract(&key, reader, &plan_last),
    )
    .await
    .map_err(|e| missing_part(e, &name, last.index))?;
    let restored = plan.restored.lock().expect("lock").len();
    if restored != manifest.files.len() {
        let have: std::collections::HashSet<String> =
            plan.restored.lock().expect("lock").iter().cloned().collect();
        let missing: Vec<&str> = manifest
            .files
            .iter()
            .map(|f| f.path.as_str())
            .filter(|p| !have.contains(*p))
            .take(5)
            .collect();
        return Err(EngineError::Internal(format!(
            "restored {restored} of {} files; missing {missing:?}",
            manifest.files.len()
        )));
    }
    fsync_path(&opts.dest.join("global"))?;
    if let Some(p) = &plan.progress {
        p.finish();
    }
    tracing::info!("restored backup {} into {}", manifest.name, opts.dest.display());
    Ok(outcome(manifest, false))
}

/// A part that is not in the repository: the backup is incomplete, which
/// is "not found", not a repository failure.
fn missing_part(e: EngineError, name: &BackupName, index: u32) -> EngineError {
    match e {
        EngineError::Store { source } if source.is_not_found() => EngineError::NotFound {
            what: format!("part {index} of backup {name}"),
            key: name.part_key(index).to_string(),
        },
        other => other,
    }
}

fn outcome(manifest: BackupManifest, dry_run: bool) -> BackupFetchOutcome {
    let files = manifest.files.len();
    let bytes = manifest.original_size;
    BackupFetchOutcome {
        manifest,
        files,
        bytes,
        dry_run,
    }
}

async fn select_backup(
    store: &dyn ObjectStore,
    opts: &BackupFetchOptions,
) -> Result<BackupManifest, EngineError> {
    match &opts.backup {
        BackupSelector::Named(name) => load_manifest(store, name, &opts.keys).await,
        BackupSelector::Latest => {
            let all = list_backups(store, &opts.keys).await?;
            let target_time = match opts.recovery.as_ref().and_then(|r| r.target.as_ref()) {
                Some(RecoveryTarget::Time(t)) => Some(parse_target_time(t)?),
                _ => None,
            };
            let chosen = all
                .into_iter()
                .rev()
                .find(|m| target_time.is_none_or(|t| m.finished_at < t));
            chosen.ok_or_else(|| EngineError::NotFound {
                what: match target_time {
                    Some(t) => format!("a backup that finished before {t}"),
                    None => "a completed backup".to_string(),
                },
                key: pgark_catalog::BACKUPS_PREFIX.to_string(),
            })
        }
    }
}

/// Parses the recovery target times PostgreSQL users write most:
/// RFC 3339, and `YYYY-MM-DD HH:MM:SS[.f][+TZ| UTC]`.
pub fn parse_target_time(s: &str) -> Result<DateTime<Utc>, EngineError> {
    let t = s.trim();
    let t = t
        .strip_suffix(" UTC")
        .map(|x| format!("{x}+00:00"))
        .unwrap_or_else(|| t.to_string());
    let formats = [
        "%Y-%m-%d %H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%d %H:%M:%S%#z",
    ];
    if let Ok(d) = DateTime::parse_from_rfc3339(&t) {
        return Ok(d.with_timezone(&Utc));
    }
    for f in formats {
        if let Ok(d) = DateTime::parse_from_str(&t, f) {
            return Ok(d.with_timezone(&Utc));
        }
    }
    Err(EngineError::Rejected {
        path: PathBuf::from("--target-time"),
        reason: format!("{s:?} is not a time with a zone, such as '2026-11-22 10:30:00+00'"),
    })
}

fn tablespace_locations(manifest: &BackupManifest, remap: &HashMap<u32, PathBuf>) -> HashMap<u32, PathBuf> {
    manifest
        .tablespaces
        .iter()
        .map(|t| {
            (
                t.oid,
                remap
                    .get(&t.oid)
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from(&t.location)),
            )
        })
        .collect()
}

fn remap_tablespace_map(manifest: &BackupManifest, locations: &HashMap<u32, PathBuf>) -> String {
    manifest
        .tablespace_map
        .lines()
        .map(|line| {
            let oid = line.split_once(' ').and_then(|(o, _)| o.parse::<u32>().ok());
            match oid.and_then(|o| locations.get(&o).map(|l| (o, l))) {
                Some((o, l)) => format!("{o} {}\n", l.display()),
                None => format!("{line}\n"),
            }
        })
        .collect()
}

/// Creates `dir` (0700) or checks it is empty; with `force`, empties it.
fn prepare_dir(dir: &Path, force: bool, what: &str) -> Result<(), EngineError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                if !force {
                    return Err(EngineError::Rejected {
                        path: dir.to_path_buf(),
                        reason: format!("the {what} is not empty (use --force to replace its contents)"),
                    });
                }
                remove_contents(dir)?;
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| EngineError::local_io("cannot create", dir, e))?;
        }
        Err(e) => return Err(EngineError::local_io("cannot read", dir, e)),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| EngineError::local_io("cannot chmod", dir, e))
}

/// Removes everything inside `dir`, keeping `dir`.
fn remove_contents(dir: &Path) -> Result<(), EngineError> {
    for entry in std::fs::read_dir(dir).map_err(|e| EngineError::local_io("cannot read", dir, e))? {
        let p = entry
            .map_err(|e| EngineError::local_io("cannot read", dir, e))?
            .path();
        let res = if p.is_dir() && !p.is_symlink() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        res.map_err(|e| EngineError::local_io("cannot remove", &p, e))?;
    }
    Ok(())
}

struct Plan {
    dest: PathBuf,
    locations: HashMap<u32, PathBuf>,
    /// Tar entry name -> the file it restores, and which piece of it.
    expected: HashMap<String, (Arc<FileEntry>, Option<usize>)>,
    /// Pieces not yet restored, per split file.
    pieces_left: Mutex<HashMap<String, usize>>,
    restored: Mutex<Vec<String>>,
    progress: Option<Arc<dyn crate::ProgressSink>>,
}

impl Plan {
    fn new(opts: &BackupFetchOptions, locations: &HashMap<u32, PathBuf>, manifest: &BackupManifest) -> Plan {
        let mut expected = HashMap::new();
        let mut pieces_left = HashMap::new();
        for f in &manifest.files {
            let f = Arc::new(f.clone());
            if f.pieces.is_empty() {
                expected.insert(f.path.clone(), (f, None));
                continue;
            }
            pieces_left.insert(f.path.clone(), f.pieces.len());
            for number in 0..f.pieces.len() {
                expected.insert(piece_entry_name(&f.path, number), (f.clone(), Some(number)));
            }
        }
        Plan {
            dest: opts.dest.clone(),
            locations: locations.clone(),
            expected,
            pieces_left: Mutex::new(pieces_left),
            restored: Mutex::new(Vec::new()),
            progress: opts.progress.clone(),
        }
    }

    /// Where a backup path lands: tablespace files in their location.
    fn target(&self, rel: &str, key: &Key) -> Result<PathBuf, EngineError> {
        let bad = || EngineError::Integrity {
            key: key.to_string(),
            source: pgark_codec::CodecError::Io(std::io::Error::other(format!(
                "unsafe path {rel:?} in backup"
            ))),
        };
        let p = Path::new(rel);
        if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(bad());
        }
        if let Some(rest) = rel.strip_prefix("pg_tblspc/") {
            let (oid, inner) = rest.split_once('/').unwrap_or((rest, ""));
            if let Some(loc) = oid.parse::<u32>().ok().and_then(|o| self.locations.get(&o)) {
                return Ok(if inner.is_empty() {
                    loc.clone()
                } else {
                    loc.join(inner)
                });
            }
        }
        Ok(self.dest.join(p))
    }
}

fn integrity(key: &Key, msg: String) -> EngineError {
    EngineError::Integrity {
        key: key.to_string(),
        source: pgark_codec::CodecError::Io(std::io::Error::other(msg)),
    }
}

/// Extracts one part's tar stream, checking each file against the manifest.
fn extract(key: &Key, reader: &mut ObjectReader<ChannelReader>, plan: &Plan) -> Result<(), EngineError> {
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| integrity(key, format!("not a tar stream: {e}")))?;
    let mut buf = vec![0u8; 256 << 10];
    for entry in entries {
        let mut entry = entry.map_err(|e| read_error(key, e))?;
        let rel = entry
            .path()
            .map_err(|e| integrity(key, e.to_string()))?
            .to_string_lossy()
            .into_owned();
        let rel = rel.trim_end_matches('/').to_string();
        let target = plan.target(&rel, key)?;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target)
                    .map_err(|e| EngineError::local_io("cannot create", &target, e))?;
                let mode = entry.header().mode().unwrap_or(0o700);
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| EngineError::local_io("cannot chmod", &target, e))?;
            }
            tar::EntryType::Regular => {
                let (expected, piece) = plan
                    .expected
                    .get(&rel)
                    .ok_or_else(|| integrity(key, format!("{rel} is not in the manifest")))?;
                let target = plan.target(&expected.path, key)?;
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| EngineError::local_io("cannot create", parent, e))?;
                }
                let len = match piece {
                    None => {
                        let len = restore_file(key, &mut entry, expected, &target, &mut buf)?;
                        plan.restored.lock().expect("lock").push(expected.path.clone());
                        len
                    }
                    Some(number) => {
                        restore_piece(key, &mut entry, expected, *number, &target, &mut buf, plan)?
                    }
                };
                if let Some(p) = &plan.progress {
                    p.advance(len);
                }
            }
            other => {
                return Err(integrity(
                    key,
                    format!("{rel}: unexpected tar entry type {other:?}"),
                ))
            }
        }
    }
    // Read to the end so the object's trailer (length, checksum) is verified.
    std::io::copy(archive.into_inner(), &mut std::io::sink()).map_err(|e| read_error(key, e))?;
    Ok(())
}

/// Restores one whole file from its tar entry: written, checked against
/// the manifest (size, CRC-32C), given its mode and mtime. pg_control is
/// written aside and renamed into place only once verified, since it is
/// what makes the directory startable.
fn restore_file(
    key: &Key,
    entry: &mut impl Read,
    expected: &FileEntry,
    final_target: &Path,
    buf: &mut [u8],
) -> Result<u64, EngineError> {
    let rel = &expected.path;
    let target = if rel == "global/pg_control" {
        final_target.with_file_name("pg_control.pgark-tmp")
    } else {
        final_target.to_path_buf()
    };
    let mut out =
        std::fs::File::create(&target).map_err(|e| EngineError::local_io("cannot create", &target, e))?;
    let mut crc = 0u32;
    let mut len = 0u64;
    loop {
        let n = entry.read(buf).map_err(|e| read_error(key, e))?;
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| EngineError::local_io("cannot write", &target, e))?;
        len += n as u64;
    }
    let crc = format!("{crc:08x}");
    if len != expected.size || crc != expected.crc32c {
        if target != final_target {
            let _ = std::fs::remove_file(&target);
        }
        return Err(integrity(
            key,
            format!(
                "{rel}: restored {len} bytes with CRC-32C {crc}, manifest says {} bytes with CRC-32C {}",
                expected.size, expected.crc32c
            ),
        ));
    }
    start_writeback(&out, 0, len);
    finish_file(&out, &target, expected)?;
    if target != final_target {
        out.sync_all()
            .map_err(|e| EngineError::local_io("cannot fsync", &target, e))?;
        std::fs::rename(&target, final_target)
            .map_err(|e| EngineError::local_io("cannot rename into", final_target, e))?;
    }
    Ok(len)
}

/// Restores piece `number` of a split file at its offset (other pieces may
/// be written at the same time by other workers); the worker that writes
/// the last piece gives the file its mode and mtime and counts it restored.
fn restore_piece(
    key: &Key,
    entry: &mut impl Read,
    expected: &FileEntry,
    number: usize,
    target: &Path,
    buf: &mut [u8],
    plan: &Plan,
) -> Result<u64, EngineError> {
    use std::os::unix::fs::FileExt;
    let rel = &expected.path;
    let piece = &expected.pieces[number];
    if rel == "global/pg_control" {
        return Err(integrity(key, format!("{rel} is split into pieces")));
    }
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(target)
        .map_err(|e| EngineError::local_io("cannot create", target, e))?;
    let mut crc = 0u32;
    let mut len = 0u64;
    loop {
        let n = entry.read(buf).map_err(|e| read_error(key, e))?;
        if n == 0 {
            break;
        }
        if len + n as u64 > piece.size {
            return Err(integrity(
                key,
                format!(
                    "{rel}: piece {number} is longer than the manifest's {} bytes",
                    piece.size
                ),
            ));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        out.write_all_at(&buf[..n], piece.offset + len)
            .map_err(|e| EngineError::local_io("cannot write", target, e))?;
        len += n as u64;
    }
    let crc = format!("{crc:08x}");
    if len != piece.size || crc != piece.crc32c {
        return Err(integrity(
            key,
            format!(
                "{rel}: piece {number} at offset {}: restored {len} bytes with CRC-32C {crc}, manifest says {} \
                 bytes with CRC-32C {}",
                piece.offset, piece.size, piece.crc32c
            ),
        ));
    }
    start_writeback(&out, piece.offset, len);
    let last = {
        let mut left = plan.pieces_left.lock().expect("lock");
        match left.get_mut(rel.as_str()) {
            Some(n) if *n > 0 => {
                *n -= 1;
                *n == 0
            }
            _ => return Err(integrity(key, format!("{rel}: piece {number} appears twice"))),
        }
    };
    if last {
        finish_file(&out, target, expected)?;
        plan.restored.lock().expect("lock").push(rel.clone());
    }
    Ok(len)
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to
/// disk now, without waiting (sync_file_range(2) with
/// SYNC_FILE_RANGE_WRITE, as PostgreSQL's pg_flush_data does), so that the
/// final syncfs finds little left to do. Only a hint: durability comes
/// from that syncfs.
fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: the call only reads the descriptor, which `file` keeps open.
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Gives a completely written file its mode and mtime, and counts it.
fn finish_file(out: &std::fs::File, target: &Path, expected: &FileEntry) -> Result<(), EngineError> {
    out.set_permissions(std::fs::Permissions::from_mode(expected.mode))
        .map_err(|e| EngineError::local_io("cannot chmod", target, e))?;
    let mtime =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(expected.mtime).unwrap_or(0));
    out.set_modified(mtime)
        .map_err(|e| EngineError::local_io("cannot set mtime", target, e))
}

fn read_error(key: &Key, e: std::io::Error) -> EngineError {
    crate::pipe::classify_read_error(key, e)
}

fn write_text(path: &Path, text: &str) -> Result<(), EngineError> {
    let mut f = std::fs::File::create(path).map_err(|e| EngineError::local_io("cannot create", path, e))?;
    f.write_all(text.as_bytes())
        .map_err(|e| EngineError::local_io("cannot write", path, e))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| EngineError::local_io("cannot chmod", path, e))
}

/// Writes `backup_manifest` in PostgreSQL's own format, so that
/// `pg_verifybackup -n DEST` can check the restored files independently
/// (WAL is not in the directory: recovery fetches it from the archive).
fn write_pg_manifest(dest: &Path, manifest: &BackupManifest) -> Result<(), EngineError> {
    use pgark_pg::{BackupManifestWriter, ChecksumAlgorithm, FileChecksum, ManifestVersion, WalRange};
    let bad = |what: String| EngineError::Internal(format!("backup_manifest: {what}"));
    let mut writer = BackupManifestWriter::new(ManifestVersion::for_pg_major(
        manifest.pg_major(),
        manifest.system_identifier,
    ));
    let mut written: Vec<(&str, &str)> = vec![("backup_label", manifest.backup_label.as_str())];
    let map_path = dest.join("tablespace_map");
    let map_text;
    if map_path.exists() {
        map_text = std::fs::read_to_string(&map_path)
            .map_err(|e| EngineError::local_io("cannot read", &map_path, e))?;
        written.push(("tablespace_map", map_text.as_str()));
    }
    for f in &manifest.files {
        let crc = u32::from_str_radix(&f.crc32c, 16).map_err(|e| bad(format!("{}: {e}", f.path)))?;
        let sum = FileChecksum::crc32c(crc);
        writer
            .add_file(f.path.as_bytes(), f.size, f.mtime, Some(&sum))
            .map_err(|e| bad(e.to_string()))?;
    }
    for (name, text) in written {
        let path = dest.join(name);
        let mtime = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .map_err(|e| EngineError::local_io("cannot stat", &path, e))?
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let sum = FileChecksum::from_digest(ChecksumAlgorithm::Sha256, &Sha256::digest(text.as_bytes()))
            .ok_or_else(|| bad("sha256".into()))?;
        writer
            .add_file(name.as_bytes(), text.len() as u64, mtime, Some(&sum))
            .map_err(|e| bad(e.to_string()))?;
    }
    let parse_lsn = |s: &str| s.parse::<pgark_pg::Lsn>().map_err(|e| bad(e.to_string()));
    writer.add_wal_range(WalRange {
        timeline: pgark_pg::TimelineId(manifest.timeline),
        start: parse_lsn(&manifest.start_lsn)?,
        end: parse_lsn(&manifest.stop_lsn)?,
    });
    let mut text = writer.take_output();
    text.push_str(&writer.finish());
    write_text(&dest.join("backup_manifest"), &text)
}

/// A postgresql.conf string literal.
fn conf_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn write_recovery_settings(
    dest: &Path,
    manifest: &BackupManifest,
    r: &RecoveryOptions,
) -> Result<(), EngineError> {
    let mut lines = format!(
        "\n# Recovery settings written by pgark backup-fetch of {} at {}\n",
        manifest.name,
        Utc::now().to_rfc3339()
    );
    if let Some(cmd) = &r.restore_command {
        lines += &format!("restore_command = {}\n", conf_quote(cmd));
    }
    match &r.target {
        Some(RecoveryTarget::Time(t)) => lines += &format!("recovery_target_time = {}\n", conf_quote(t)),
        Some(RecoveryTarget::Xid(x)) => lines += &format!("recovery_target_xid = {}\n", conf_quote(x)),
        Some(RecoveryTarget::Name(n)) => lines += &format!("recovery_target_name = {}\n", conf_quote(n)),
        Some(RecoveryTarget::Lsn(l)) => lines += &format!("recovery_target_lsn = {}\n", conf_quote(l)),
        Some(RecoveryTarget::Immediate) => lines += "recovery_target = 'immediate'\n",
        None => {}
    }
    if let Some(a) = &r.action {
        lines += &format!("recovery_target_action = {}\n", conf_quote(a));
    }
    if let Some(t) = &r.timeline {
        lines += &format!("recovery_target_timeline = {}\n", conf_quote(t));
    }
    let auto = dest.join("postgresql.auto.conf");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&auto)
        .map_err(|e| EngineError::local_io("cannot open", &auto, e))?;
    f.write_all(lines.as_bytes())
        .map_err(|e| EngineError::local_io("cannot write", &auto, e))?;
    let signal = dest.join(if r.standby {
        "standby.signal"
    } else {
        "recovery.signal"
    });
    write_text(&signal, "")
}

fn fsync_path(path: &Path) -> Result<(), EngineError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| EngineError::local_io("cannot fsync", path, e))
}

/// One syncfs(2) per filesystem holding restored files.
fn sync_filesystems<'a>(
    dest: &'a Path,
    others: impl Iterator<Item = &'a PathBuf>,
) -> Result<(), EngineError> {
    use std::os::fd::AsRawFd;
    for dir in std::iter::once(dest).chain(others.map(PathBuf::as_path)) {
        let f = std::fs::File::open(dir).map_err(|e| EngineError::local_io("cannot open", dir, e))?;
        // SAFETY: syncfs only reads the descriptor, which `f` keeps open.
        let rc = unsafe { libc::syncfs(f.as_raw_fd()) };
        if rc != 0 {
            return Err(EngineError::local_io(
                "cannot syncfs",
                dir,
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}
