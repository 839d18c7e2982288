//! `backup-fetch --delta`: restore into an existing data directory (a
//! failed primary, a stale replica) by keeping what is already right.
//!
//! The guard (stage 3) has checked that the destination is missing, empty
//! or a data directory of the backup's cluster that no server runs on.
//! Before anything is downloaded, the destination is reconciled with the
//! backup, in this order:
//!
//! 1. `global/pg_control` is removed first, so that from here until the
//!    restore ends the directory cannot start (a failed delta restore
//!    leaves it so; running the same delta restore again finishes it);
//! 2. everything that is not a file or directory of the backup is removed
//!    (files, directories, stray links; in the data directory and the
//!    tablespace locations), as are `backup_label`, `tablespace_map`,
//!    `backup_manifest` and the recovery signal files, which the restore
//!    writes anew (so is a stale `postmaster.pid`; the guard's marker stays);
//! 3. every file of the backup already present is compared, in parallel:
//!    same size and same CRC-32C as the backup's copy (read in full) — or,
//!    with `--delta-by-timestamp`, same size and same mtime, without
//!    reading it (the fast path: trusts that a file changed in place also
//!    changed its mtime, as PostgreSQL's own writes do; a file rewritten
//!    with the same size within the same second, or touched back, would be
//!    kept wrongly). A match is kept (its mode and mtime set); anything
//!    else is removed and restored.
//!
//! For a file rebuilt from a delta chain, the comparison is with the
//! CRC-32C the delta backup computed while reading the file; a page stored
//! in a newer version than that read makes the file differ, and it is then
//! simply restored.
//!
//! What a failure leaves: the directory without pg_control, with the
//! guard's marker; what was removed is gone (it was not in the backup),
//! what was kept is right. Running the same restore again finishes it.

use super::plan::Plan;
use super::write::finish_file;
use super::BackupFetchOptions;
use crate::EngineError;
use futures::StreamExt;
use pgark_catalog::{BackupManifest, FileEntry};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Reconciles the destination with the backup (see the module docs);
/// returns the files (plan indexes) kept.
pub(super) async fn reconcile(
    opts: &BackupFetchOptions,
    locations: &HashMap<u32, PathBuf>,
    manifest: &BackupManifest,
    plan: &Plan,
) -> Result<HashSet<usize>, EngineError> {
    let dest = &opts.dest;
    std::fs::create_dir_all(dest).map_err(|e| EngineError::local_io("cannot create", dest, e))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| EngineError::local_io("cannot chmod", dest, e))?;
    for name in ["global/pg_control", "global/pg_control.pgark-tmp"] {
        remove_file_if_any(&dest.join(name))?;
    }

    // What the backup has, where it lands.
    let mut expected: HashMap<PathBuf, (usize, FileEntry)> = HashMap::new();
    for (i, entry) in plan.targets() {
        if entry.path == "global/pg_control" {
            continue;
        }
        expected.insert(plan.local_path(&entry.path)?, (i, entry));
    }
    // In a tablespace location, only the backup's own version directory:
    // other clusters' directories there are not this restore's.
    let roots: Vec<PathBuf> = std::iter::once(dest.clone())
        .chain(
            locations
                .iter()
                .map(|(oid, location)| super::guard::tablespace_area(manifest, *oid, location)),
        )
        .collect();
    let mut keep_dirs: HashSet<PathBuf> = roots.iter().cloned().collect();
    for d in &manifest.directories {
        let p = plan.local_path(&d.path)?;
        keep_dirs.extend(p.ancestors().map(Path::to_path_buf));
    }
    for p in expected.keys() {
        keep_dirs.extend(p.ancestors().skip(1).map(Path::to_path_buf));
    }
    let links: HashMap<PathBuf, &PathBuf> = locations
        .iter()
        .map(|(oid, loc)| (dest.join("pg_tblspc").join(oid.to_string()), loc))
        .collect();

    // Remove what the backup does not have; collect what it does.
    let mut present: Vec<(PathBuf, usize, FileEntry)> = Vec::new();
    for root in &roots {
        std::fs::create_dir_all(root).map_err(|e| EngineError::local_io("cannot create", root, e))?;
        sweep(root, &keep_dirs, &links, &mut expected, &mut present)?;
    }

    // Compare what is there, in parallel.
    let by_timestamp = opts.delta_by_timestamp;
    let checks = futures::stream::iter(present.into_iter().map(|(path, i, entry)| {
        tokio::task::spawn_blocking(move || -> Result<Option<usize>, EngineError> {
            if matches(&path, &entry, by_timestamp)? {
                let f =
                    std::fs::File::open(&path).map_err(|e| EngineError::local_io("cannot open", &path, e))?;
                finish_file(&f, &path, &entry)?;
                Ok(Some(i))
            } else {
                remove_file_if_any(&path)?;
                Ok(None)
            }
        })
    }))
    .buffer_unordered(opts.concurrency.max(1));
    let results: Vec<_> = checks.collect().await;
    let mut kept = HashSet::new();
    for r in results {
        let r = r.map_err(|e| EngineError::Internal(format!("comparison task failed: {e}")))??;
        kept.extend(r);
    }
    tracing::info!(
        "delta restore: {} of {} files already match the backup",
        kept.len(),
        manifest.files.len()
    );
    Ok(kept)
}

/// Walks `dir`: removes what is neither an expected file, a directory to
/// keep, nor a tablespace link; moves expected files into `present`.
fn sweep(
    dir: &Path,
    keep_dirs: &HashSet<PathBuf>,
    links: &HashMap<PathBuf, &PathBuf>,
    expected: &mut HashMap<PathBuf, (usize, FileEntry)>,
    present: &mut Vec<(PathBuf, usize, FileEntry)>,
) -> Result<(), EngineError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| EngineError::local_io("cannot read directory", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| EngineError::local_io("cannot read directory", dir, e))?;
        let path = entry.path();
        let meta =
            std::fs::symlink_metadata(&path).map_err(|e| EngineError::local_io("cannot stat", &path, e))?;
        if meta.file_type().is_symlink() {
            // A tablespace link pointing at its location stays; the
            // restore makes the others.
            if links
                .get(&path)
                .is_some_and(|loc| std::fs::read_link(&path).ok().as_ref() == Some(*loc))
            {
                continue;
            }
            remove_file_if_any(&path)?;
        } else if meta.is_dir() {
            if keep_dirs.contains(&path) {
                sweep(&path, keep_dirs, links, expected, present)?;
            } else {
                std::fs::remove_dir_all(&path)
                    .map_err(|e| EngineError::local_io("cannot remove", &path, e))?;
            }
        } else if let Some((i, e)) = expected.remove(&path) {
            if meta.is_file() {
                present.push((path, i, e));
            } else {
                remove_file_if_any(&path)?;
            }
        } else if path.file_name() == Some(std::ffi::OsStr::new(super::guard::MARKER)) {
            // The marker of this restore, removed when it ends.
        } else {
            remove_file_if_any(&path)?;
        }
    }
    Ok(())
}

/// Whether the file at `path` already holds `entry`'s content.
fn matches(path: &Path, entry: &FileEntry, by_timestamp: bool) -> Result<bool, EngineError> {
    let meta = std::fs::metadata(path).map_err(|e| EngineError::local_io("cannot stat", path, e))?;
    if meta.len() != entry.size {
        return Ok(false);
    }
    if by_timestamp {
        return Ok(meta.mtime() == entry.mtime);
    }
    let file = std::fs::File::open(path).map_err(|e| EngineError::local_io("cannot open", path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = 0u32;
    let mut at = 0u64;
    while at < entry.size {
        let want = buf.len().min((entry.size - at) as usize);
        file.read_exact_at(&mut buf[..want], at)
            .map_err(|e| EngineError::local_io("cannot read", path, e))?;
        crc = crc32c::crc32c_append(crc, &buf[..want]);
        at += want as u64;
    }
    Ok(format!("{crc:08x}") == entry.crc32c)
}

fn remove_file_if_any(path: &Path) -> Result<(), EngineError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(EngineError::local_io("cannot remove", path, e)),
    }
}
