//! `backup-fetch`: restore a base backup (and the delta chain it needs)
//! into a directory, ready for PostgreSQL to recover.
//!
//! A pipeline, one module a stage, data flowing one way:
//!
//! 1. [`select`]: which backup (named, or the newest that can reach the
//!    recovery target), and why;
//! 2. [`plan`]: the chain of manifests it needs and, per file, which tar
//!    entries of which parts rebuild it ([`chain`] for files rebuilt from
//!    increments);
//! 3. [`guard`]: every directory the restore would write checked, for
//!    every mode, before anything is touched; then created or emptied;
//! 4. [`delta`] (`--delta` only): the existing directory reconciled, files
//!    that already match kept;
//! 5. [`write`]: parts downloaded, verified (each file's CRC-32C, each
//!    part's digest) and extracted, newest backup of the chain first;
//!    within a backup the costliest parts first, pieces of one file kept
//!    apart ([`schedule`]);
//! 6. [`recovery`]: the source's recovery settings disabled, pgark's
//!    written;
//! 7. [`finish`]: backup_label, tablespace_map, backup_manifest, flush;
//!    pg_control last, so a directory whose restore did not end cannot
//!    start.
//!
//! What a failure leaves behind: up to stage 3, nothing is changed. After
//! it, a failed plain or `--force` restore empties the directories it
//! wrote (the destination and tablespace locations); a failed `--delta`
//! restore leaves the directory without pg_control, with the marker
//! [`guard::MARKER`] (running it again finishes it). A restore killed
//! with SIGKILL leaves the marker and no pg_control: the directory cannot
//! start, and a restore with `--delta` or `--force` takes it over.

mod chain;
mod delta;
mod finish;
mod guard;
mod live;
mod plan;
mod recovery;
mod select;
mod workers;
mod write;

pub use select::parse_target_time;
pub(crate) use write::same_digest;

use crate::EngineError;
use futures::StreamExt;
use pgark_catalog::{BackupManifest, BackupName};
use pgark_store::ObjectStore;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Which backup to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupSelector {
    /// The newest completed backup that can reach the recovery target (see
    /// `select`).
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

/// Whether the restored server archives WAL as the source did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ArchiveMode {
    /// Keep the source's archive settings (a restore in place of the
    /// source, which must go on archiving into its repository).
    #[default]
    Preserve,
    /// `archive_mode = off`: a clone or a test restore, which must not
    /// archive its own timeline into the source's repository.
    Off,
}

/// Settings of [`backup_fetch`].
#[derive(Debug, Clone)]
pub struct BackupFetchOptions {
    pub dest: PathBuf,
    pub backup: BackupSelector,
    /// Restore into a non-empty DEST (and tablespace directories) after
    /// emptying them; refused for a directory that is not PostgreSQL's or
    /// is in use (see `guard`).
    pub force: bool,
    pub concurrency: usize,
    /// Tablespace OID -> new location.
    pub tablespace_map: HashMap<u32, PathBuf>,
    /// Recovery settings; `None` writes none (the directory then starts
    /// crash recovery from backup_label and needs restore_command set by
    /// hand). The source's recovery settings are disabled either way.
    pub recovery: Option<RecoveryOptions>,
    /// Whether the restored server archives (see [`ArchiveMode`]).
    pub archive_mode: ArchiveMode,
    /// Check that every object exists and report, writing nothing.
    pub dry_run: bool,
    /// Restore into an existing data directory of the same cluster,
    /// keeping the files whose content already matches the backup (see
    /// `delta`).
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
    /// Why this backup was chosen.
    pub reason: String,
    pub files: usize,
    pub bytes: u64,
    pub dry_run: bool,
}

/// Which backup `opts` would restore, and why, reading only manifests.
pub async fn select_backup(
    store: &dyn ObjectStore,
    opts: &BackupFetchOptions,
) -> Result<(BackupManifest, String), EngineError> {
    let selected = opts
        .retry
        .run("reading the backups' manifests", || select::select(store, opts))
        .await?;
    Ok((selected.manifest, selected.reason))
}

/// Restores one backup into `opts.dest` (see the module docs).
pub async fn backup_fetch(
    store: Arc<dyn ObjectStore>,
    opts: &BackupFetchOptions,
) -> Result<BackupFetchOutcome, EngineError> {
    let selected = opts
        .retry
        .run("reading the backups' manifests", || select::select(&*store, opts))
        .await?;
    let manifest = selected.manifest;
    tracing::info!("restoring {}", selected.reason);
    warn_about_forks(&*store, opts, &manifest).await;
    let locations = plan::tablespace_locations(&manifest, &opts.tablespace_map);
    let chain = opts
        .retry
        .run("reading the parents' manifests", || {
            plan::load_chain(&*store, manifest.clone(), &opts.keys)
        })
        .await?;
    let plan = plan::Plan::new(opts, &locations, &chain)?;
    let outcome = |manifest: BackupManifest, dry_run: bool| BackupFetchOutcome {
        files: manifest.files.len(),
        bytes: manifest.original_size,
        reason: selected.reason.clone(),
        manifest,
        dry_run,
    };
    let mode = match (opts.delta, opts.force) {
        (true, _) => guard::Mode::Delta,
        (false, true) => guard::Mode::Force,
        (false, false) => guard::Mode::Empty,
    };
    if opts.dry_run {
        // What the restore would refuse, a dry run refuses too.
        guard::check(&opts.dest, &locations, &manifest, mode)?;
        check_parts_exist(&*store, &chain, &plan).await?;
        return Ok(outcome(manifest, true));
    }
    guard::prepare(&opts.dest, &locations, &manifest, mode)?;
    // Dropped after the restore's future (declared before it): when that
    // future is dropped midway (restore-test interrupted), the workers
    // still extracting parts are stopped and waited for here, so nothing
    // writes into the directories once this future is gone.
    let workers = workers::Workers::default();
    let _stop = workers::StopGuard(workers.clone());
    match restore_into(store, opts, &workers, &chain, plan, &locations).await {
        Ok(()) => Ok(outcome(manifest, false)),
        // A failed delta restore leaves the directory without pg_control
        // (it cannot start); running the same delta restore again finishes it.
        Err(e) if opts.delta => Err(e),
        Err(e) => {
            // Leave nothing half-restored behind: the directories were empty
            // (or emptied with --force) before this restore began.
            let areas = locations
                .iter()
                .map(|(oid, location)| guard::tablespace_area(&manifest, *oid, location));
            for dir in std::iter::once(opts.dest.clone()).chain(areas) {
                if let Err(clean) = guard::remove_contents(&dir) {
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

/// Warns when the archive holds a timeline that forked from one which went
/// on archiving, and recovery will follow the newest timeline: two servers
/// archive into this repository (see `crate::timelines`). A check that
/// fails is only logged: it must not stop a restore.
async fn warn_about_forks(store: &dyn ObjectStore, opts: &BackupFetchOptions, manifest: &BackupManifest) {
    let Some(recovery) = &opts.recovery else {
        return;
    };
    if recovery.timeline.as_deref().is_some_and(|t| t != "latest") {
        return;
    }
    let Ok(seg_size) = pgark_pg::WalSegmentSize::new(u64::from(manifest.wal_segment_size)) else {
        return;
    };
    match crate::timelines::diverged_timelines(store, &opts.keys, seg_size).await {
        Ok(forks) => {
            for fork in forks {
                tracing::warn!(
                    "the WAL archive holds two timelines that both grew: {fork}. Either a point-in-time \
                     restore left that WAL behind (expected), or two servers archive into this repository \
                     (a promoted clone or test restore, or an old primary still running). Recovery follows \
                     the newest timeline (recovery_target_timeline = latest): give --target-timeline to \
                     choose"
                );
            }
        }
        Err(e) => tracing::warn!("could not check the archive's timelines for forks: {e}"),
    }
}

/// For a dry run: every part the restore would read, of this backup and of
/// the parents a delta needs, is in the repository.
async fn check_parts_exist(
    store: &dyn ObjectStore,
    chain: &[BackupManifest],
    plan: &plan::Plan,
) -> Result<(), EngineError> {
    for (level, backup) in chain.iter().enumerate() {
        let mut parts = plan.levels[level].parts.clone();
        if level == 0 {
            parts.extend(backup.parts.iter().map(|p| p.index));
        }
        for index in parts {
            let key = backup.name.part_key(index);
            if !pgark_store::ObjectStoreExt::exists(store, &key).await? {
                return Err(EngineError::NotFound {
                    what: format!("part {index} of backup {}", backup.name),
                    key: key.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Stages 4 to 7, once the directories are checked and ready.
async fn restore_into(
    store: Arc<dyn ObjectStore>,
    opts: &BackupFetchOptions,
    workers: &workers::Workers,
    chain: &[BackupManifest],
    mut plan: plan::Plan,
    locations: &HashMap<u32, PathBuf>,
) -> Result<(), EngineError> {
    let manifest = &chain[0];
    if opts.delta {
        let kept = delta::reconcile(opts, locations, manifest, &plan).await?;
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
    // The last part holds only pg_control: restored after everything else.
    let last = manifest
        .parts
        .last()
        .ok_or_else(|| EngineError::Internal("backup has no parts".into()))?;
    // Newest backup first: each page is written once, by the newest backup
    // of the chain that has it.
    for (level, backup) in chain.iter().enumerate() {
        plan.start_level(level)?;
        let parts: Vec<&pgark_catalog::PartEntry> = backup
            .parts
            .iter()
            .filter(|p| plan.levels[level].parts.contains(&p.index))
            .filter(|p| level > 0 || p.index != last.index)
            .collect();
        let parts = schedule(parts, &backup.files, opts.concurrency.max(1));
        let results: Vec<Result<(), EngineError>> = futures::stream::iter(
            parts
                .into_iter()
                .map(|part| write::restore_part(&store, opts, &plan, workers, &backup.name, part, level)),
        )
        .buffer_unordered(opts.concurrency.max(1))
        .collect()
        .await;
        // Every part in flight is let finish before a failure is returned:
        // the cleanup of a failed restore must not race their workers.
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        plan.end_level(level)?;
    }

    let crcs = plan.crc_override.lock().expect("lock").clone();
    finish::write_backup_files(&opts.dest, manifest, locations, &crcs)?;
    recovery::write_settings(&opts.dest, manifest, opts.recovery.as_ref(), opts.archive_mode)?;
    finish::sync_filesystems(&opts.dest, locations.values())?;

    // pg_control last: written aside and verified (its part's digest too),
    // then, once every file is known to be in place, renamed into place.
    // Until then the directory cannot start.
    write::restore_part(&store, opts, &plan, workers, &manifest.name, last, 0).await?;
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
    write::place_pg_control(&opts.dest)?;
    guard::finish(&opts.dest)?;
    if let Some(p) = &plan.progress {
        p.finish();
    }
    tracing::info!("restored backup {} into {}", manifest.name, opts.dest.display());
    Ok(())
}

/// What one whole file costs a restore beyond its bytes, counted as bytes:
/// creating it, setting its mode and mtime, starting its writeback.
/// Measured on a 2-core machine: about 0.3 ms a file, while a worker
/// restores about 1 MiB of an lz4 or zstd part in 0.3-1 ms.
const PER_FILE_COST: u64 = 256 << 10;

/// The order in which `parts` are handed to the workers: the costliest
/// first (longest processing time first), so that no worker is left alone
/// with a long part at the end while the others have nothing left. A part
/// costs its tar stream's size plus [`PER_FILE_COST`] per whole file in it
/// (`files`: the backup's manifest entries). A backup's last data part
/// holds most of a cluster's small files (about a thousand: catalogs,
/// configuration), restored one by one: taken last, in file order, one
/// worker spent the end of a restore on it alone (0.2-0.4 s at pgbench
/// scale 100). Parts of equal cost keep their order.
///
/// Then, as far as the parts allow, no part is started right after one
/// of the `concurrency - 1` before it that holds a piece of the same file
/// (the next part of another file goes first): two workers writing into
/// one file take turns at its inode lock, the one waiting spinning on it
/// (9 % of a restore's CPU time at scale 100, where most parts are pieces
/// of one 1 GiB file).
fn schedule<'a>(
    mut parts: Vec<&'a pgark_catalog::PartEntry>,
    files: &[pgark_catalog::FileEntry],
    concurrency: usize,
) -> Vec<&'a pgark_catalog::PartEntry> {
    let mut whole_files: HashMap<u32, u64> = HashMap::new();
    // The file each part holds the largest piece of: (piece size, file).
    let mut piece_of: HashMap<u32, (u64, usize)> = HashMap::new();
    for (i, f) in files.iter().enumerate() {
        if f.pieces.is_empty() {
            *whole_files.entry(f.part).or_default() += 1;
        }
        for piece in &f.pieces {
            let e = piece_of.entry(piece.part).or_insert((piece.size, i));
            if piece.size > e.0 {
                *e = (piece.size, i);
            }
        }
    }
    parts.sort_by_key(|p| {
        let n = whole_files.get(&p.index).copied().unwrap_or(0);
        std::cmp::Reverse(p.original_size.saturating_add(n.saturating_mul(PER_FILE_COST)))
    });
    let file = |p: &pgark_catalog::PartEntry| piece_of.get(&p.index).map(|&(_, i)| i);
    let mut order: Vec<&'a pgark_catalog::PartEntry> = Vec::with_capacity(parts.len());
    let mut rest = std::collections::VecDeque::from(parts);
    while !rest.is_empty() {
        let recent: Vec<usize> = order
            .iter()
            .rev()
            .take(concurrency.saturating_sub(1))
            .filter_map(|p| file(p))
            .collect();
        let next = rest
            .iter()
            .position(|p| file(p).is_none_or(|f| !recent.contains(&f)))
            .unwrap_or(0);
        order.extend(rest.remove(next));
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgark_catalog::{FileEntry, PartEntry, PieceEntry};

    fn part(index: u32, original_size: u64) -> PartEntry {
        PartEntry {
            index,
            original_size,
            stored_size: original_size / 10,
            digest: String::new(),
        }
    }

    fn file(part: u32, pieces: Vec<PieceEntry>) -> FileEntry {
        FileEntry {
            path: format!("base/5/{part}"),
            size: 8192,
            mode: 0o600,
            mtime: 0,
            crc32c: "00000000".into(),
            part,
            pieces,
            delta: None,
        }
    }

    #[test]
    fn parts_of_many_files_and_large_parts_go_first() {
        const MIB: u64 = 1 << 20;
        let parts = [
            part(1, 64 * MIB),
            part(2, 64 * MIB),
            part(3, 60 * MIB),
            part(4, 48 * MIB),
            part(5, 10 * MIB),
        ];
        // Part 4: a thousand small files; part 1: one file in pieces
        // (which count as bytes only); part 5: a few files.
        let piece = |part| PieceEntry {
            part,
            offset: 0,
            size: 64 * MIB,
            crc32c: "00000000".into(),
        };
        let mut files = vec![file(1, vec![piece(1), piece(2)])];
        files.extend((0..1000).map(|_| file(4, Vec::new())));
        files.extend((0..3).map(|_| file(5, Vec::new())));
        let order = |files: &[FileEntry], concurrency| -> Vec<u32> {
            schedule(parts.iter().collect(), files, concurrency)
                .iter()
                .map(|p| p.index)
                .collect()
        };
        assert_eq!(order(&files, 1), [4, 1, 2, 3, 5]);
        // Nothing to weigh but sizes: largest first, ties in order.
        assert_eq!(order(&[], 1), [1, 2, 3, 4, 5]);
        assert_eq!(order(&[], 2), [1, 2, 3, 4, 5]);
        // Two workers: part 2 (the file's second piece) not right after
        // part 1 (its first) when another part can go between.
        assert_eq!(order(&files, 2), [4, 1, 3, 2, 5]);
    }

    #[test]
    fn pieces_of_one_file_are_spread_among_other_parts() {
        const MIB: u64 = 1 << 20;
        // Parts 1-6: pieces of file A; 7-8: of file B; 9: a whole file
        // (the costliest, first).
        let parts: Vec<PartEntry> = (1..=9).map(|i| part(i, 64 * MIB)).collect();
        let pieces = |range: std::ops::RangeInclusive<u32>| {
            range
                .map(|part| PieceEntry {
                    part,
                    offset: u64::from(part) * 64 * MIB,
                    size: 64 * MIB,
                    crc32c: "00000000".into(),
                })
                .collect()
        };
        let files = vec![
            file(1, pieces(1..=6)),
            file(7, pieces(7..=8)),
            file(9, Vec::new()),
        ];
        let order = |concurrency| -> Vec<u32> {
            schedule(parts.iter().collect(), &files, concurrency)
                .iter()
                .map(|p| p.index)
                .collect()
        };
        assert_eq!(order(2), [9, 1, 7, 2, 8, 3, 4, 5, 6]);
        // Three workers: a part of A or B goes right after the other two
        // only when nothing else is left.
        assert_eq!(order(3), [9, 1, 7, 2, 3, 8, 4, 5, 6]);
    }
}
