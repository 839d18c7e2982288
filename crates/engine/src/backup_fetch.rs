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
    /// Restore into an existing data directory, keeping the files whose
    /// content already matches the backup (see `delta_restore`).
    pub delta: bool,
    /// With `delta`: a file whose size and mtime match the backup's is
    /// kept without reading it.
    pub delta_by_timestamp: bool,
    /// Told how many bytes will be restored and how many are done.
    pub progress: Option<Arc<dyn crate::ProgressSink>>,
    /// The repository's data key when it is encrypted.
    pub keys: crate::RepoKeys,
    /// How a part whose download fails on a transient error (a connection
    /// reset halfway, throttling) is read again: from its start, skipping
    /// the entries already restored.
    pub retry: crate::RetryPolicy,
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
    let manifest = opts
        .retry
        .run("reading the backup's manifest", || select_backup(&*store, opts))
        .await?;
    let locations = tablespace_locations(&manifest, &opts.tablespace_map);
    if opts.dry_run {
        // Every part the restore would read, of this backup and of the
        // parents a delta needs.
        let chain = opts
            .retry
            .run("reading the parents' manifests", || {
                load_chain(&*store, manifest.clone(), &opts.keys)
            })
            .await?;
        let plan = Plan::new(opts, &locations, &chain)?;
        for (level, backup) in chain.iter().enumerate() {
            let mut parts = plan.levels[level].parts.clone();
            if level == 0 {
                parts.extend(backup.parts.iter().map(|p| p.index));
            }
            for index in parts {
                let key = backup.name.part_key(index);
                if !store.exists(&key).await? {
                    return Err(EngineError::NotFound {
                        what: format!("part {index} of backup {}", backup.name),
                        key: key.to_string(),
                    });
                }
            }
        }
        return Ok(outcome(manifest, true));
    }
    if opts.delta {
        // A failed delta restore leaves the directory without pg_control
        // (it cannot start); running the same delta restore again finishes it.
        return restore_into(store, opts, manifest, &locations).await;
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
    let chain = opts
        .retry
        .run("reading the parents' manifests", || {
            load_chain(&*store, manifest.clone(), &opts.keys)
        })
        .await?;
    let mut plan = Plan::new(opts, locations, &chain)?;
    if opts.delta {
        let kept = crate::delta_restore::reconcile(opts, locations, &manifest, &plan).await?;
        plan.keep(&kept);
    }
    for (oid, location) in locations {
        let link = opts.dest.join("pg_tblspc").join(oid.to_string());
        std::fs::create_dir_all(opts.dest.join("pg_tblspc"))
            .map_err(|e| EngineError::local_io("cannot create", &link, e))?;
        if std::fs::read_link(&link).ok().as_deref() == Some(location.as_path()) {
            continue;
        }
        std::os::unix::fs::symlink(location, &link)
            .map_err(|e| EngineError::local_io("cannot create symlink", &link, e))?;
    }
    let plan = Arc::new(plan.open_chain_files()?);
    if let Some(p) = &plan.progress {
        p.start(manifest.original_size);
    }
    let last_index = manifest
        .parts
        .last()
        .ok_or_else(|| EngineError::Internal("backup has no parts".into()))?
        .index;
    // Newest backup first: each page is written once, by the newest backup
    // of the chain that has it.
    for (level, backup) in chain.iter().enumerate() {
        plan.start_level(level)?;
        let parts: Vec<u32> = plan.levels[level]
            .parts
            .iter()
            .copied()
            .filter(|&i| level > 0 || i != last_index)
            .collect();
        let results: Vec<Result<(), EngineError>> = futures::stream::iter(
            parts
                .into_iter()
                .map(|index| restore_part(&store, opts, &plan, &backup.name, index, level)),
        )
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
        // Every part in flight is let finish before a failure is returned:
        // their writer threads cannot be cancelled, and the cleanup of a
        // failed restore must not race them.
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        plan.end_level(level)?;
    }
    let name = manifest.name.clone();

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
    let crcs = plan.crc_override.lock().expect("lock").clone();
    write_pg_manifest(&opts.dest, &manifest, &crcs)?;
    std::fs::create_dir_all(opts.dest.join("pg_wal/archive_status"))
        .map_err(|e| EngineError::local_io("cannot create", opts.dest.join("pg_wal/archive_status"), e))?;
    if let Some(recovery) = &opts.recovery {
        write_recovery_settings(&opts.dest, &manifest, recovery)?;
    }
    sync_filesystems(&opts.dest, locations.values())?;

    // pg_control last: until it is in place, the directory cannot start.
    restore_part(&store, opts, &plan, &name, last_index, 0).await?;
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

/// Downloads part `index` of `name` (chain level `level`) and extracts it.
///
/// A transient failure (the download broken off halfway, throttling) reads
/// the part again from its start, as `opts.retry` allows: the entries
/// restored before the failure are skipped, and the entry it interrupted is
/// restored again from its beginning, which gives the same result (whole
/// files and pieces are rewritten; increments and bases keep the pages they
/// wrote and write the rest, see `pgark_delta`'s restore contracts).
async fn restore_part(
    store: &Arc<dyn ObjectStore>,
    opts: &BackupFetchOptions,
    plan: &Arc<Plan>,
    name: &BackupName,
    index: u32,
    level: usize,
) -> Result<(), EngineError> {
    let key = name.part_key(index);
    let done: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    opts.retry
        .run(&format!("restore of part {index} of backup {name}"), || {
            let (key, plan, done) = (key.clone(), plan.clone(), done.clone());
            async move {
                decode_object(
                    &**store,
                    &key.clone(),
                    opts.keys.data_key.as_ref(),
                    move |reader| extract(&key, reader, &plan, level, &done),
                )
                .await
            }
        })
        .await
        .map_err(|e| missing_part(e, name, index))
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

/// What a restore does with one file of the target backup.
struct FilePlan {
    /// The target backup's entry: path, size, mode, mtime.
    target: FileEntry,
    /// The entry holding the full copy the file is rebuilt from (the
    /// target's own entry unless the file is a delta).
    base: FileEntry,
    /// The chain level (0 = the target backup) of `base`.
    base_level: usize,
    /// Levels holding an increment of the file, newest first.
    increments: Vec<usize>,
    /// The parts (level, part index) its restore reads.
    needs: Vec<(usize, u32)>,
}

/// What a tar entry of a part is for.
#[derive(Debug, Clone, Copy)]
enum Action {
    /// A directory (of the target backup).
    Dir,
    /// The whole file `.0`, as it is.
    Whole(usize),
    /// Piece `.1` of file `.0`.
    Piece(usize, usize),
    /// The increment of file `.0`.
    Increment(usize),
    /// The base of file `.0` (rebuilt from increments and this).
    BaseWhole(usize),
    /// Piece `.1` of the base of file `.0`.
    BasePiece(usize, usize),
    /// An entry of this backup the restore does not need.
    Skip,
}

/// Per backup of the chain: what its tar entries are for, and which of
/// its parts hold anything needed.
#[derive(Default)]
struct LevelPlan {
    actions: HashMap<String, Action>,
    parts: std::collections::BTreeSet<u32>,
}

/// The restore of a file rebuilt from a chain.
enum ChainState {
    /// Applying increments, newest first (`None` until the first).
    Increments(Option<pgark_delta::ChainRestore>),
    /// Filling from the base, possibly in pieces at once.
    Base(Arc<pgark_delta::BaseFill>),
    Done,
}

struct ChainFile {
    file: std::fs::File,
    path: PathBuf,
    state: Mutex<ChainState>,
}

pub(crate) struct Plan {
    dest: PathBuf,
    locations: HashMap<u32, PathBuf>,
    files: Vec<FilePlan>,
    levels: Vec<LevelPlan>,
    /// The target's part holding the directories.
    dirs_part: Option<u32>,
    /// Files rebuilt from increments, by file index.
    chains: HashMap<usize, ChainFile>,
    /// Pieces not yet restored, per file restored whole from pieces.
    pieces_left: Mutex<HashMap<usize, usize>>,
    restored: Mutex<Vec<String>>,
    /// CRC-32C of files rebuilt from a chain, as rebuilt, for the
    /// backup_manifest (see [`Plan::end_level`]).
    crc_override: Mutex<HashMap<String, String>>,
    block_size: pgark_delta::BlockSize,
    progress: Option<Arc<dyn crate::ProgressSink>>,
}

/// Loads the parents of `target`, newest first, down to its full backup.
async fn load_chain(
    store: &dyn ObjectStore,
    target: BackupManifest,
    keys: &crate::RepoKeys,
) -> Result<Vec<BackupManifest>, EngineError> {
    let mut chain = vec![target];
    while let Some(parent) = chain.last().and_then(|m| m.parent.clone()) {
        let child = chain.last().expect("not empty");
        let m = load_manifest(store, &parent, keys).await.map_err(|e| match e {
            EngineError::NotFound { key, .. } => EngineError::NotFound {
                what: format!("backup {parent}, the parent of delta backup {}", child.name),
                key,
            },
            other => other,
        })?;
        if m.system_identifier != child.system_identifier
            || m.delta_depth + 1 != child.delta_depth
            || chain.len() > 10_000
        {
            return Err(EngineError::Integrity {
                key: parent.manifest_key().to_string(),
                source: pgark_codec::CodecError::Io(std::io::Error::other(format!(
                    "backup {parent} does not fit as the parent of {} (system identifier or delta depth)",
                    child.name
                ))),
            });
        }
        chain.push(m);
    }
    Ok(chain)
}

impl Plan {
    fn new(
        opts: &BackupFetchOptions,
        locations: &HashMap<u32, PathBuf>,
        chain: &[BackupManifest],
    ) -> Result<Plan, EngineError> {
        let target = &chain[0];
        let block_size = pgark_delta::BlockSize::new(target.block_size)
            .map_err(|e| EngineError::Internal(format!("backup {}: {e}", target.name)))?;
        let indexes: Vec<HashMap<&str, &FileEntry>> = chain
            .iter()
            .map(|m| m.files.iter().map(|f| (f.path.as_str(), f)).collect())
            .collect();
        let broken = |m: &BackupManifest, msg: String| EngineError::Integrity {
            key: m.name.manifest_key().to_string(),
            source: pgark_codec::CodecError::Io(std::io::Error::other(msg)),
        };
        let mut files = Vec::with_capacity(target.files.len());
        for f in &target.files {
            let mut increments = Vec::new();
            let mut level = 0;
            let base = loop {
                let e = indexes[level].get(f.path.as_str()).ok_or_else(|| {
                    broken(
                        &chain[level],
                        format!(
                            "{} is a delta in {} but is missing here",
                            f.path,
                            chain[level - 1].name
                        ),
                    )
                })?;
                match &e.delta {
                    None => break (*e).clone(),
                    Some(d) if !d.unchanged => increments.push(level),
                    Some(_) => {}
                }
                level += 1;
                if level == chain.len() {
                    return Err(broken(
                        &chain[level - 1],
                        format!("{}: no full copy in the chain", f.path),
                    ));
                }
            };
            if increments.is_empty() && base.size != f.size {
                return Err(broken(
                    &chain[level],
                    format!(
                        "{}: unchanged since this backup, but {} bytes here and {} in {}",
                        f.path, base.size, f.size, target.name
                    ),
                ));
            }
            files.push(FilePlan {
                target: f.clone(),
                base,
                base_level: level,
                increments,
                needs: Vec::new(),
            });
        }
        let mut levels: Vec<LevelPlan> = (0..chain.len()).map(|_| LevelPlan::default()).collect();
        for (level, m) in chain.iter().enumerate() {
            let actions = &mut levels[level].actions;
            for f in &m.files {
                if !f.has_content() {
                    continue;
                }
                if f.delta.is_some() {
                    actions.insert(pgark_catalog::delta_entry_name(&f.path), Action::Skip);
                } else if f.pieces.is_empty() {
                    actions.insert(f.path.clone(), Action::Skip);
                } else {
                    for n in 0..f.pieces.len() {
                        actions.insert(piece_entry_name(&f.path, n), Action::Skip);
                    }
                }
            }
            if level == 0 {
                for d in &m.directories {
                    actions.insert(d.path.clone(), Action::Dir);
                }
            }
        }
        let mut pieces_left = HashMap::new();
        for (i, fp) in files.iter_mut().enumerate() {
            let chained = !fp.increments.is_empty();
            for &level in &fp.increments {
                let e = indexes[level][fp.target.path.as_str()];
                levels[level]
                    .actions
                    .insert(pgark_catalog::delta_entry_name(&e.path), Action::Increment(i));
                levels[level].parts.insert(e.part);
                fp.needs.push((level, e.part));
            }
            let lp = &mut levels[fp.base_level];
            if fp.base.pieces.is_empty() {
                let action = if chained {
                    Action::BaseWhole(i)
                } else {
                    Action::Whole(i)
                };
                lp.actions.insert(fp.base.path.clone(), action);
                lp.parts.insert(fp.base.part);
                fp.needs.push((fp.base_level, fp.base.part));
            } else {
                if !chained {
                    pieces_left.insert(i, fp.base.pieces.len());
                }
                for (n, p) in fp.base.pieces.iter().enumerate() {
                    let action = if chained {
                        Action::BasePiece(i, n)
                    } else {
                        Action::Piece(i, n)
                    };
                    lp.actions.insert(piece_entry_name(&fp.base.path, n), action);
                    lp.parts.insert(p.part);
                    fp.needs.push((fp.base_level, p.part));
                }
            }
        }
        // The directories are in the target's first part.
        let dirs_part = target.parts.first().map(|p| p.index);
        if let Some(first) = dirs_part {
            levels[0].parts.insert(first);
        }
        let plan = Plan {
            dest: opts.dest.clone(),
            locations: locations.clone(),
            files,
            levels,
            dirs_part,
            chains: HashMap::new(),
            pieces_left: Mutex::new(pieces_left),
            restored: Mutex::new(Vec::new()),
            crc_override: Mutex::new(HashMap::new()),
            block_size,
            progress: opts.progress.clone(),
        };
        Ok(plan)
    }

    /// The files of the target backup (index, and the entry a file already
    /// in place must match), for a delta restore's comparison.
    pub(crate) fn targets(&self) -> impl Iterator<Item = (usize, FileEntry)> + '_ {
        self.files.iter().enumerate().map(|(i, fp)| {
            // A rebuilt file is compared with what the delta backup read.
            let entry = if fp.increments.is_empty() {
                restored_entry(fp)
            } else {
                fp.target.clone()
            };
            (i, entry)
        })
    }

    /// Where a file of the backup lands (tablespace files in their
    /// location).
    pub(crate) fn local_path(&self, rel: &str) -> Result<PathBuf, EngineError> {
        self.target(rel, &Key::new("backups").expect("a valid key"))
    }

    /// Leaves the files `kept` (already right in the destination) out of
    /// the restore: their entries are skipped, and parts that hold nothing
    /// else needed are not read.
    fn keep(&mut self, kept: &std::collections::HashSet<usize>) {
        for level in &mut self.levels {
            for action in level.actions.values_mut() {
                let file = match *action {
                    Action::Whole(i)
                    | Action::Piece(i, _)
                    | Action::Increment(i)
                    | Action::BaseWhole(i)
                    | Action::BasePiece(i, _) => i,
                    Action::Dir | Action::Skip => continue,
                };
                if kept.contains(&file) {
                    *action = Action::Skip;
                }
            }
            level.parts.clear();
        }
        if let Some(first) = self.dirs_part {
            self.levels[0].parts.insert(first);
        }
        for (i, fp) in self.files.iter_mut().enumerate() {
            if kept.contains(&i) {
                fp.increments.clear();
                continue;
            }
            for &(level, part) in &fp.needs {
                self.levels[level].parts.insert(part);
            }
        }
        self.restored
            .lock()
            .expect("lock")
            .extend(kept.iter().map(|&i| self.files[i].target.path.clone()));
        self.pieces_left
            .lock()
            .expect("lock")
            .retain(|i, _| !kept.contains(i));
    }

    /// Creates the files rebuilt from chains, empty.
    fn open_chain_files(mut self) -> Result<Plan, EngineError> {
        let key = Key::new("backups").expect("a valid key");
        for (i, fp) in self.files.iter().enumerate() {
            if fp.increments.is_empty() {
                continue;
            }
            let path = self.target(&fp.target.path, &key)?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| EngineError::local_io("cannot create", parent, e))?;
            }
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| EngineError::local_io("cannot create", &path, e))?;
            self.chains.insert(
                i,
                ChainFile {
                    file,
                    path,
                    state: Mutex::new(ChainState::Increments(None)),
                },
            );
        }
        Ok(self)
    }

    /// Before the parts of `level`: files whose base is at this level stop
    /// taking increments and start taking their base.
    fn start_level(&self, level: usize) -> Result<(), EngineError> {
        for (i, c) in &self.chains {
            if self.files[*i].base_level != level {
                continue;
            }
            let mut state = c.state.lock().expect("lock");
            let ChainState::Increments(restore) = std::mem::replace(&mut *state, ChainState::Done) else {
                return Err(EngineError::Internal(format!(
                    "{}: chain state out of order",
                    c.path.display()
                )));
            };
            let restore = restore.ok_or_else(|| {
                EngineError::Internal(format!(
                    "{}: no increment was applied before its base",
                    c.path.display()
                ))
            })?;
            let fill = restore.into_base_fill();
            let expected = u64::from(fill.base_blocks()) * u64::from(self.block_size.get());
            if self.files[*i].base.size != expected {
                return Err(EngineError::Integrity {
                    key: self.files[*i].base.path.clone(),
                    source: pgark_codec::CodecError::Io(std::io::Error::other(format!(
                        "the base copy has {} bytes, the chain needs {expected}",
                        self.files[*i].base.size
                    ))),
                });
            }
            *state = ChainState::Base(Arc::new(fill));
        }
        Ok(())
    }

    /// After the parts of `level`: files whose base was at this level are
    /// complete: that every block was written exactly once is checked, the
    /// file is read back for its CRC-32C (for the backup_manifest: it is
    /// not compared with the CRC-32C the delta backup computed while
    /// scanning, because the kept pages are read a second time to be
    /// stored, and a page written in between is stored in its newer
    /// version, which WAL replay makes right either way; each piece of the
    /// chain was verified on its own), and given its mode and mtime.
    fn end_level(&self, level: usize) -> Result<(), EngineError> {
        for (i, c) in &self.chains {
            let fp = &self.files[*i];
            if fp.base_level != level {
                continue;
            }
            let state = std::mem::replace(&mut *c.state.lock().expect("lock"), ChainState::Done);
            let ChainState::Base(fill) = state else {
                return Err(EngineError::Internal(format!(
                    "{}: chain state out of order",
                    c.path.display()
                )));
            };
            let fill = Arc::try_unwrap(fill)
                .map_err(|_| EngineError::Internal(format!("{}: base still in use", c.path.display())))?;
            let blocks = fill.blocks();
            fill.finish().map_err(|e| EngineError::Integrity {
                key: fp.target.path.clone(),
                source: pgark_codec::CodecError::Io(std::io::Error::other(e.to_string())),
            })?;
            let len = u64::from(blocks) * u64::from(self.block_size.get());
            c.file
                .set_len(len)
                .map_err(|e| EngineError::local_io("cannot truncate", &c.path, e))?;
            let crc = crc_of_file(&c.file, &c.path, len)?;
            let crc = format!("{crc:08x}");
            if len != fp.target.size {
                return Err(EngineError::Integrity {
                    key: fp.target.path.clone(),
                    source: pgark_codec::CodecError::Io(std::io::Error::other(format!(
                        "rebuilt from the chain: {len} bytes, the backup read {} bytes",
                        fp.target.size
                    ))),
                });
            }
            start_writeback(&c.file, 0, len);
            finish_file(&c.file, &c.path, &fp.target)?;
            self.crc_override
                .lock()
                .expect("lock")
                .insert(fp.target.path.clone(), crc);
            self.restored.lock().expect("lock").push(fp.target.path.clone());
            if let Some(p) = &self.progress {
                p.advance(len);
            }
        }
        Ok(())
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
/// Entries in `done` (restored by an earlier attempt at this part) are
/// skipped; each entry restored is added to it.
fn extract(
    key: &Key,
    reader: &mut ObjectReader<ChannelReader>,
    plan: &Plan,
    level: usize,
    done: &Mutex<std::collections::HashSet<String>>,
) -> Result<(), EngineError> {
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
        if done.lock().expect("lock").contains(&rel) {
            continue;
        }
        let target = plan.target(&rel, key)?;
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                match plan.levels[level].actions.get(&rel) {
                    Some(Action::Dir) => {}
                    Some(_) | None if level > 0 => continue,
                    _ => return Err(integrity(key, format!("directory {rel} is not in the manifest"))),
                }
                std::fs::create_dir_all(&target)
                    .map_err(|e| EngineError::local_io("cannot create", &target, e))?;
                let mode = entry.header().mode().unwrap_or(0o700);
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| EngineError::local_io("cannot chmod", &target, e))?;
            }
            tar::EntryType::Regular => {
                let action = *plan.levels[level]
                    .actions
                    .get(&rel)
                    .ok_or_else(|| integrity(key, format!("{rel} is not in the manifest")))?;
                let len = match action {
                    Action::Dir => {
                        return Err(integrity(key, format!("{rel} is a directory in the manifest")))
                    }
                    Action::Skip => continue,
                    Action::Whole(i) => {
                        let fp = &plan.files[i];
                        let expected = restored_entry(fp);
                        let target = plan.target(&expected.path, key)?;
                        create_parent(&target)?;
                        let len = restore_file(key, &mut entry, &expected, &target, &mut buf)?;
                        plan.restored.lock().expect("lock").push(expected.path.clone());
                        len
                    }
                    Action::Piece(i, number) => {
                        let expected = restored_entry(&plan.files[i]);
                        let target = plan.target(&expected.path, key)?;
                        create_parent(&target)?;
                        restore_piece(key, &mut entry, &expected, i, number, &target, &mut buf, plan)?
                    }
                    Action::Increment(i) => apply_increment(key, &mut entry, plan, i)?,
                    Action::BaseWhole(i) => apply_base(key, &mut entry, plan, i, 0)?,
                    Action::BasePiece(i, number) => {
                        let offset = plan.files[i].base.pieces[number].offset;
                        apply_base(key, &mut entry, plan, i, offset)?
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
        done.lock().expect("lock").insert(rel);
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
#[allow(clippy::too_many_arguments)]
fn restore_piece(
    key: &Key,
    entry: &mut impl Read,
    expected: &FileEntry,
    index: usize,
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
        match left.get_mut(&index) {
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
pub(crate) fn finish_file(
    out: &std::fs::File,
    target: &Path,
    expected: &FileEntry,
) -> Result<(), EngineError> {
    out.set_permissions(std::fs::Permissions::from_mode(expected.mode))
        .map_err(|e| EngineError::local_io("cannot chmod", target, e))?;
    let mtime =
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(expected.mtime).unwrap_or(0));
    out.set_modified(mtime)
        .map_err(|e| EngineError::local_io("cannot set mtime", target, e))
}

/// The entry a file is restored with as it is: its full copy (in the
/// target backup, or in an older one when no delta since changed it) under
/// the target's path, mode and mtime.
fn restored_entry(fp: &FilePlan) -> FileEntry {
    FileEntry {
        path: fp.target.path.clone(),
        mode: fp.target.mode,
        mtime: fp.target.mtime,
        ..fp.base.clone()
    }
}

fn create_parent(target: &Path) -> Result<(), EngineError> {
    match target.parent() {
        Some(parent) => {
            std::fs::create_dir_all(parent).map_err(|e| EngineError::local_io("cannot create", parent, e))
        }
        None => Ok(()),
    }
}

fn delta_error(key: &Key, path: &str, e: pgark_delta::DeltaError) -> EngineError {
    match e {
        pgark_delta::DeltaError::Io(e) => read_error(key, e),
        e => integrity(key, format!("{path}: {e}")),
    }
}

/// Applies the increment of file `i` (newest first, see [`Plan`]).
fn apply_increment(key: &Key, entry: &mut impl Read, plan: &Plan, i: usize) -> Result<u64, EngineError> {
    use std::os::unix::fs::FileExt;
    let path = &plan.files[i].target.path;
    let c = plan
        .chains
        .get(&i)
        .ok_or_else(|| EngineError::Internal(format!("{path}: no chain")))?;
    let mut state = c.state.lock().expect("lock");
    let ChainState::Increments(restore) = &mut *state else {
        return Err(EngineError::Internal(format!(
            "{path}: an increment after its base"
        )));
    };
    let mut reader = pgark_delta::IncrementReader::new(std::io::BufReader::with_capacity(256 << 10, entry))
        .map_err(|e| delta_error(key, path, e))?;
    let restore = restore.get_or_insert_with(|| pgark_delta::ChainRestore::new(reader.header()));
    let bs = u64::from(plan.block_size.get());
    let mut write = |block: u32, page: &[u8]| c.file.write_all_at(page, u64::from(block) * bs);
    let written = restore
        .apply_increment(&mut reader, &mut write)
        .map_err(|e| delta_error(key, path, e))?;
    tracing::debug!("{path}: {written} pages from the increment in {key}");
    Ok(0)
}

/// Applies the base of file `i` (whole, or the piece at `offset`): the
/// blocks no increment wrote. Checks the piece's CRC-32C.
fn apply_base(
    key: &Key,
    entry: &mut impl Read,
    plan: &Plan,
    i: usize,
    offset: u64,
) -> Result<u64, EngineError> {
    use std::os::unix::fs::FileExt;
    let fp = &plan.files[i];
    let path = &fp.target.path;
    let c = plan
        .chains
        .get(&i)
        .ok_or_else(|| EngineError::Internal(format!("{path}: no chain")))?;
    let fill = match &*c.state.lock().expect("lock") {
        ChainState::Base(fill) => fill.clone(),
        _ => {
            return Err(EngineError::Internal(format!(
                "{path}: a base before its increments"
            )))
        }
    };
    let (size, crc) = match fp.base.pieces.iter().find(|p| p.offset == offset) {
        Some(p) => (p.size, p.crc32c.as_str()),
        None => (fp.base.size, fp.base.crc32c.as_str()),
    };
    let bs = u64::from(plan.block_size.get());
    let mut write = |block: u32, page: &[u8]| c.file.write_all_at(page, u64::from(block) * bs);
    let mut counted = CrcReader {
        inner: entry,
        crc: 0,
        len: 0,
    };
    let written = fill
        .apply_range((offset / bs) as u32, &mut counted, &mut write)
        .map_err(|e| delta_error(key, path, e))?;
    tracing::debug!("{path}: {written} pages from the base at offset {offset} in {key}");
    let got = format!("{:08x}", counted.crc);
    if counted.len != size || got != crc {
        return Err(integrity(
            key,
            format!(
                "{path}: base copy at offset {offset}: {} bytes with CRC-32C {got}, manifest says {size} bytes \
                 with CRC-32C {crc}",
                counted.len
            ),
        ));
    }
    Ok(0)
}

/// Counts and checksums what passes through.
struct CrcReader<R> {
    inner: R,
    crc: u32,
    len: u64,
}

impl<R: Read> Read for CrcReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// CRC-32C of the first `len` bytes of `file`.
fn crc_of_file(file: &std::fs::File, path: &Path, len: u64) -> Result<u32, EngineError> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = 0u32;
    let mut at = 0u64;
    while at < len {
        let want = buf.len().min((len - at) as usize);
        file.read_exact_at(&mut buf[..want], at)
            .map_err(|e| EngineError::local_io("cannot read back", path, e))?;
        crc = crc32c::crc32c_append(crc, &buf[..want]);
        at += want as u64;
    }
    Ok(crc)
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
fn write_pg_manifest(
    dest: &Path,
    manifest: &BackupManifest,
    crcs: &HashMap<String, String>,
) -> Result<(), EngineError> {
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
        let crc = crcs.get(&f.path).unwrap_or(&f.crc32c);
        let crc = u32::from_str_radix(crc, 16).map_err(|e| bad(format!("{}: {e}", f.path)))?;
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
