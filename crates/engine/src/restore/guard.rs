//! Stage 3 of a restore: what it is about to overwrite, checked. Every
//! restore mode passes here before anything is touched, and every
//! directory the restore writes (the destination and each tablespace
//! location, remapped or not) is checked by the same rules:
//!
//! - no directory that a running PostgreSQL uses is touched, whatever the
//!   mode: a destination whose `postmaster.pid` names a live postmaster
//!   (its PID answers, its socket accepts, or its shared memory segment
//!   is attached), or in which a `postgres` process of this host works,
//!   and a tablespace location that a running server's `pg_tblspc` links
//!   to;
//! - a plain restore needs each directory missing or empty;
//! - `--force` empties a non-empty directory only when it is recognisably
//!   PostgreSQL's: a data directory (`PG_VERSION` or `global/pg_control`)
//!   or a restore pgark left unfinished as destination, only `PG_*`
//!   version directories as a tablespace location;
//! - `--delta` keeps what it can of a data directory of the same cluster
//!   only: the destination's `pg_control` (or the marker of an
//!   unfinished restore) must carry the backup's system identifier, and a
//!   non-empty tablespace location must be the one the destination's own
//!   `pg_tblspc` link points to.
//!
//! All directories are checked before any is changed; a refusal leaves
//! everything as it was. Once checked, [`prepare`] creates or empties them
//! and writes the marker [`MARKER`] into the destination: until the
//! restore ends, it says a restore of which cluster is under way there
//! (an interrupted restore, even one killed with SIGKILL, can be run again
//! with `--delta` or `--force`).

use super::live::{live_postmaster, ServersInUse};
use crate::EngineError;
use pgark_catalog::BackupManifest;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The file that marks a destination whose restore has not finished.
pub(super) const MARKER: &str = "pgark_restore_in_progress";

/// What the restore may do with a non-empty directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Nothing: directories must be missing or empty.
    Empty,
    /// Empty them (`--force`).
    Force,
    /// Keep what matches (`--delta`).
    Delta,
}

/// Checks every directory the restore writes (see the module docs),
/// changing nothing: what a dry run does.
pub(super) fn check(
    dest: &Path,
    locations: &HashMap<u32, PathBuf>,
    manifest: &BackupManifest,
    mode: Mode,
) -> Result<(), EngineError> {
    check_overlaps(dest, locations, mode)?;
    let in_use = ServersInUse::scan();
    check_destination(dest, manifest, mode, &in_use)?;
    for (oid, location) in locations {
        check_tablespace(
            dest,
            *oid,
            location,
            &tablespace_area(manifest, *oid, location),
            mode,
            &in_use,
        )?;
    }
    Ok(())
}

/// [`check`], then creates the missing directories and, with
/// [`Mode::Force`], empties the others (of a tablespace location, only the
/// backup's own version directory); writes the marker. Nothing is changed
/// unless every check passes.
pub(super) fn prepare(
    dest: &Path,
    locations: &HashMap<u32, PathBuf>,
    manifest: &BackupManifest,
    mode: Mode,
) -> Result<(), EngineError> {
    check(dest, locations, manifest, mode)?;
    // Checked: now changed.
    create_or_empty(dest, mode == Mode::Force)?;
    for (oid, location) in locations {
        create_or_empty(location, false)?;
        create_or_empty(&tablespace_area(manifest, *oid, location), mode == Mode::Force)?;
    }
    write_marker(dest, manifest)
}

/// The part of a tablespace location the restore owns: the backup's own
/// version directory (`PG_<major>_<catalog version>`) in it, as the
/// manifest has it. A location can hold the directories of several
/// clusters of different major versions (kept after `pg_upgrade`, say):
/// the others are never touched. The whole location when the manifest
/// names no such directory.
pub(super) fn tablespace_area(manifest: &BackupManifest, oid: u32, location: &Path) -> PathBuf {
    let prefix = format!("pg_tblspc/{oid}/");
    let version = manifest
        .directories
        .iter()
        .map(|d| d.path.as_str())
        .chain(manifest.files.iter().map(|f| f.path.as_str()))
        .filter_map(|p| p.strip_prefix(&prefix))
        .map(|rest| rest.split('/').next().unwrap_or(rest))
        .find(|v| v.starts_with("PG_"));
    match version {
        Some(v) => location.join(v),
        None => location.to_path_buf(),
    }
}

/// `p` absolute, its existing part with symbolic links resolved.
fn resolved(p: &Path) -> PathBuf {
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let mut rest = Vec::new();
    let mut cur = abs.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(cur) {
            return rest.iter().rev().fold(real, |acc: PathBuf, c| acc.join(c));
        }
        match (cur.parent(), cur.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                cur = parent;
            }
            _ => return abs,
        }
    }
}

/// The destination and the tablespace locations must be distinct: two
/// tablespaces in one place would overwrite each other's files (relation
/// file numbers are unique only within a tablespace), and a location that
/// is, or holds, the destination would be restored into itself. A
/// location inside the destination is allowed (PostgreSQL allows it, with
/// a warning) except with `--delta`, whose sweep of the destination would
/// meet it.
fn check_overlaps(dest: &Path, locations: &HashMap<u32, PathBuf>, mode: Mode) -> Result<(), EngineError> {
    let dest_r = resolved(dest);
    let mut seen: Vec<(u32, PathBuf)> = Vec::new();
    let mut oids: Vec<&u32> = locations.keys().collect();
    oids.sort();
    for oid in oids {
        let loc = resolved(&locations[oid]);
        let clash = |why: String| {
            Err(refuse(
                &locations[oid],
                format!("tablespace {oid}'s location {why}: give it its own place with --tablespace-map {oid}=PATH"),
            ))
        };
        if dest_r.starts_with(&loc) {
            return clash(format!("is, or holds, the destination {}", dest.display()));
        }
        if mode == Mode::Delta && loc.starts_with(&dest_r) {
            return clash(format!(
                "is inside the destination {}, which --delta sweeps",
                dest.display()
            ));
        }
        for (other, other_loc) in &seen {
            if loc.starts_with(other_loc) || other_loc.starts_with(&loc) {
                return clash(format!("overlaps tablespace {other}'s ({})", other_loc.display()));
            }
        }
        seen.push((*oid, loc));
    }
    Ok(())
}

/// Removes the marker: the restore is complete.
pub(super) fn finish(dest: &Path) -> Result<(), EngineError> {
    let path = dest.join(MARKER);
    match std::fs::remove_file(&path) {
        // Removed by hand meanwhile: the restore is complete all the same.
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(EngineError::local_io("cannot remove", &path, e))
        }
        _ => {}
    }
    super::finish::fsync_path(dest)
}

fn refuse(path: &Path, reason: String) -> EngineError {
    EngineError::Rejected {
        path: path.to_path_buf(),
        reason,
    }
}

fn check_destination(
    dest: &Path,
    manifest: &BackupManifest,
    mode: Mode,
    in_use: &ServersInUse,
) -> Result<(), EngineError> {
    if !non_empty_dir(dest, "destination")? {
        return Ok(());
    }
    if let Some(why) = live_postmaster(dest).or_else(|| in_use.working_in(dest)) {
        return Err(refuse(
            dest,
            format!("a PostgreSQL server is running on this data directory ({why}): stop it first"),
        ));
    }
    if mode != Mode::Empty {
        check_unarchived_wal(dest)?;
    }
    match mode {
        Mode::Empty => Err(refuse(
            dest,
            "the destination is not empty (--delta restores into a data directory of the same cluster, \
             --force replaces a data directory's contents)"
                .into(),
        )),
        Mode::Force => {
            if looks_like_data_dir(dest) || dest.join(MARKER).exists() {
                Ok(())
            } else {
                Err(refuse(
                    dest,
                    "not a PostgreSQL data directory (no PG_VERSION, no global/pg_control): --force only \
                     replaces a data directory's contents; empty it yourself if it is really meant"
                        .into(),
                ))
            }
        }
        Mode::Delta => match cluster_of(dest)? {
            Some(sysid) if sysid == manifest.system_identifier => Ok(()),
            Some(sysid) => Err(refuse(
                dest,
                format!(
                    "a data directory of another cluster (system identifier {sysid}; the backup's is {}): \
                     --delta only restores over the same cluster (--force replaces it)",
                    manifest.system_identifier
                ),
            )),
            None => Err(refuse(
                dest,
                "not a data directory whose cluster can be told (no readable global/pg_control, no \
                 unfinished pgark restore): --delta only restores over a data directory of the same \
                 cluster"
                    .into(),
            )),
        },
    }
}

/// A crashed primary's `pg_wal` can hold the only copy of its last
/// transactions: segments PostgreSQL had not archived yet
/// (`archive_status/*.ready`). Replacing the directory would delete them.
fn check_unarchived_wal(dest: &Path) -> Result<(), EngineError> {
    let status = dest.join("pg_wal/archive_status");
    let Ok(read) = std::fs::read_dir(&status) else {
        return Ok(());
    };
    let mut ready: Vec<String> = read
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".ready").map(str::to_string))
        .collect();
    if ready.is_empty() {
        return Ok(());
    }
    ready.sort();
    Err(refuse(
        dest,
        format!(
            "pg_wal holds {} WAL file(s) PostgreSQL has not archived yet (pg_wal/archive_status/*.ready: {}{}): \
             they may hold the last transactions, which this restore would delete; archive them first \
             (pgark wal-push {}/pg_wal/<file> for each) or move pg_wal elsewhere, then run the restore again",
            ready.len(),
            ready[..ready.len().min(3)].join(", "),
            if ready.len() > 3 { ", ..." } else { "" },
            dest.display()
        ),
    ))
}

fn check_tablespace(
    dest: &Path,
    oid: u32,
    location: &Path,
    area: &Path,
    mode: Mode,
    in_use: &ServersInUse,
) -> Result<(), EngineError> {
    if !non_empty_dir(location, "tablespace location")? {
        return Ok(());
    }
    if let Some(why) = in_use.tablespace_user(location) {
        return Err(refuse(
            location,
            format!(
                "tablespace {oid}'s location is in use by a running PostgreSQL server ({why}): stop it, or \
                 restore the tablespace elsewhere with --tablespace-map {oid}=PATH"
            ),
        ));
    }
    if area == location && mode == Mode::Force {
        // No version directory known: the whole location would be emptied.
        if let Some(name) = entries(location)?.into_iter().find(|n| !n.starts_with("PG_")) {
            return Err(refuse(
                location,
                format!(
                    "not a tablespace location ({name:?} is not a PG_* version directory): --force only \
                     replaces a tablespace's contents (or use --tablespace-map {oid}=PATH)"
                ),
            ));
        }
    }
    if !non_empty_dir(area, "tablespace directory")? {
        // The backup's version directory is not there: what else the
        // location holds is left alone.
        return Ok(());
    }
    match mode {
        Mode::Empty => Err(refuse(
            area,
            format!(
                "tablespace {oid}'s directory is not empty (--tablespace-map {oid}=PATH restores it elsewhere; \
                 --force replaces its contents)"
            ),
        )),
        Mode::Force => Ok(()),
        Mode::Delta => {
            let link = dest.join("pg_tblspc").join(oid.to_string());
            if same_dir(&link, location) {
                Ok(())
            } else {
                Err(refuse(
                    area,
                    format!(
                        "tablespace {oid}'s directory is not empty and is not the destination's own tablespace \
                         ({} does not point to its location): --delta only restores over the same cluster",
                        link.display()
                    ),
                ))
            }
        }
    }
}

/// Whether `dir` exists with something in it; an error if it is not a
/// directory or cannot be read.
fn non_empty_dir(dir: &Path, what: &str) -> Result<bool, EngineError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(refuse(dir, format!("the {what} exists and is not a directory"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(EngineError::local_io("cannot stat", dir, e)),
    }
    Ok(!entries(dir)?.is_empty())
}

fn entries(dir: &Path) -> Result<Vec<String>, EngineError> {
    let read = std::fs::read_dir(dir).map_err(|e| EngineError::local_io("cannot read", dir, e))?;
    read.map(|e| {
        e.map(|e| e.file_name().to_string_lossy().into_owned())
            .map_err(|e| EngineError::local_io("cannot read", dir, e))
    })
    .collect()
}

fn looks_like_data_dir(dir: &Path) -> bool {
    dir.join("PG_VERSION").is_file() || dir.join("global/pg_control").is_file()
}

/// The system identifier of the cluster whose data directory `dir` is:
/// from `global/pg_control` (its first 8 bytes when the file fails its
/// CRC: a damaged pg_control is a reason to restore), else from the
/// marker of an unfinished pgark restore. `None`: neither tells.
fn cluster_of(dir: &Path) -> Result<Option<u64>, EngineError> {
    let control = dir.join("global/pg_control");
    match std::fs::read(&control) {
        Ok(bytes) => {
            if let Ok(c) = pgark_pg::ControlFile::parse(&bytes) {
                return Ok(Some(c.system_identifier));
            }
            if let Some(first) = bytes.get(..8) {
                return Ok(Some(u64::from_le_bytes(first.try_into().expect("8 bytes"))));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(EngineError::local_io("cannot read", &control, e)),
    }
    let marker = dir.join(MARKER);
    Ok(std::fs::read_to_string(marker).ok().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("system_identifier: "))
            .and_then(|s| s.trim().parse().ok())
    }))
}

fn write_marker(dest: &Path, manifest: &BackupManifest) -> Result<(), EngineError> {
    let path = dest.join(MARKER);
    let text = format!(
        "A restore by pgark backup-fetch is under way here, or was interrupted: this directory is not \
         a usable data directory until it ends. Run the restore again (--delta keeps what is already \
         right, --force starts over).\nbackup: {}\nsystem_identifier: {}\n",
        manifest.name, manifest.system_identifier
    );
    super::finish::write_text(&path, &text)?;
    super::finish::fsync_path(&path)?;
    super::finish::fsync_path(dest)
}

/// Creates `dir` (0700) or, with `empty`, empties it.
fn create_or_empty(dir: &Path, empty: bool) -> Result<(), EngineError> {
    if dir.exists() {
        if empty {
            remove_contents(dir)?;
        }
    } else {
        std::fs::create_dir_all(dir).map_err(|e| EngineError::local_io("cannot create", dir, e))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| EngineError::local_io("cannot chmod", dir, e))
}

/// Removes everything inside `dir`, keeping `dir`.
pub(super) fn remove_contents(dir: &Path) -> Result<(), EngineError> {
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

/// Whether two paths name the same directory (symbolic links followed).
fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
