//! Walking a data directory and its tablespaces: what a base backup
//! copies, by the same rules as pg_basebackup (see `pgark_pg::layout`).

use crate::EngineError;
use pgark_catalog::DirEntry;
use pgark_pg::layout::{classify, unlogged_relations, PathClass};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file to copy.
#[derive(Debug, Clone)]
pub(crate) struct ScannedFile {
    /// Path in the backup (`pg_tblspc/<oid>/...` for tablespace files).
    pub rel: String,
    pub abs: PathBuf,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    /// The nanoseconds of the modification time (the manifest keeps
    /// seconds; a delta compares this with its parent's start time).
    pub mtime_nsec: i64,
}

#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub files: Vec<ScannedFile>,
    pub dirs: Vec<DirEntry>,
    /// global/pg_control, copied last.
    pub control: Option<ScannedFile>,
}

/// Walks `pgdata` and the tablespace directories `(oid, location)`.
pub(crate) fn scan(pgdata: &Path, tablespaces: &[(u32, PathBuf)]) -> Result<Scan, EngineError> {
    let mut scan = Scan::default();
    walk(pgdata, "", &mut scan)?;
    for (oid, location) in tablespaces {
        let prefix = format!("pg_tblspc/{oid}");
        walk(location, &prefix, &mut scan)?;
    }
    scan.files.sort_by(|a, b| a.rel.cmp(&b.rel));
    scan.dirs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(scan)
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

fn walk(dir: &Path, rel_dir: &str, scan: &mut Scan) -> Result<(), EngineError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        // Directories vanish during an online backup (dropped databases).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(EngineError::local_io("cannot read directory", dir, e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| EngineError::local_io("cannot read directory", dir, e))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| EngineError::Rejected {
                path: dir.join(&n),
                reason: "file names in a data directory must be UTF-8".into(),
            })?;
        names.push(name);
    }
    names.sort();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let unlogged = unlogged_relations(&refs);
    for name in &names {
        let abs = dir.join(name);
        let rel = join(rel_dir, name);
        let meta = match std::fs::symlink_metadata(&abs) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(EngineError::local_io("cannot stat", &abs, e)),
        };
        // Tablespace links are walked separately, from their locations;
        // pg_wal may be a link to another disk: keep the directory only.
        let is_dir = meta.is_dir() || (meta.file_type().is_symlink() && abs.is_dir());
        if meta.file_type().is_symlink() && rel_dir == "pg_tblspc" {
            continue;
        }
        match classify(&rel, is_dir, &unlogged) {
            PathClass::Exclude => continue,
            PathClass::ExcludeContents => {
                scan.dirs.push(DirEntry {
                    path: rel,
                    mode: dir_mode(&abs)?,
                });
            }
            PathClass::Include if is_dir => {
                scan.dirs.push(DirEntry {
                    path: rel.clone(),
                    mode: dir_mode(&abs)?,
                });
                walk(&abs, &rel, scan)?;
            }
            PathClass::Include if meta.is_file() => {
                let file = ScannedFile {
                    rel: rel.clone(),
                    abs,
                    size: meta.len(),
                    mode: meta.permissions().mode() & 0o7777,
                    mtime: meta.mtime(),
                    mtime_nsec: meta.mtime_nsec(),
                };
                if rel == "global/pg_control" {
                    scan.control = Some(file);
                } else {
                    scan.files.push(file);
                }
            }
            // Sockets, fifos and stray links are not part of a cluster.
            _ => tracing::debug!("skipping {rel}: not a regular file or directory"),
        }
    }
    Ok(())
}

fn dir_mode(path: &Path) -> Result<u32, EngineError> {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .map_err(|e| EngineError::local_io("cannot stat", path, e))
}
