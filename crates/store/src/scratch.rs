//! The scratch files a local repository's interrupted puts leave behind
//! (`*.pgark-tmp`, see [`crate::LocalStore`]), found for garbage
//! collection.

use crate::{Leftover, LeftoverHandle};
use std::io;
use std::path::Path;
use std::time::SystemTime;

/// The directories of a repository puts write into: only these are
/// searched (a repository at a mount point also holds `lost+found`, a
/// filer's `.snapshot`...).
const AREAS: [&str; 4] = ["backups", "wal", "verify", "restore-test"];

/// Every file under `root`'s [`AREAS`] whose name ends in `suffix` and
/// that was last modified before `before`, in path order, and those at
/// `root` itself (`repository.json`'s). Symbolic links are neither
/// followed nor returned; a directory or file that vanishes meanwhile (a
/// concurrent delete) is skipped, and so is a directory that cannot be
/// read (with a warning).
pub(crate) fn find(root: &Path, suffix: &str, before: SystemTime) -> io::Result<Vec<Leftover>> {
    let mut out = Vec::new();
    top_level(root, suffix, before, &mut out)?;
    for area in AREAS {
        walk(&root.join(area), suffix, before, &mut out)?;
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The scratch files directly in `root`.
fn top_level(root: &Path, suffix: &str, before: SystemTime, out: &mut Vec<Leftover>) -> io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let path = entry.path();
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => push_if_old(path, &meta, suffix, before, out)?,
            _ => {}
        }
    }
    Ok(())
}

fn push_if_old(
    path: std::path::PathBuf,
    meta: &std::fs::Metadata,
    suffix: &str,
    before: SystemTime,
    out: &mut Vec<Leftover>,
) -> io::Result<()> {
    let named = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().ends_with(suffix));
    if named && meta.modified()? < before {
        out.push(Leftover {
            name: path.display().to_string(),
            since: meta.modified()?,
            size: Some(meta.len()),
            key: None,
            handle: LeftoverHandle::File(path),
        });
    }
    Ok(())
}

fn walk(dir: &Path, suffix: &str, before: SystemTime, out: &mut Vec<Leftover>) -> io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            eprintln!(
                "pgark: warning: {} cannot be read, not searched for scratch files: {e}",
                dir.display()
            );
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            walk(&path, suffix, before, out)?;
        } else if meta.is_file() {
            push_if_old(path, &meta, suffix, before, out)?;
        }
    }
    Ok(())
}

/// Removes a scratch file found by [`find`]; one already gone is fine.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn finds_old_scratch_files_only() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("wal/0000000100000000")).unwrap();
        let old = root.join("wal/0000000100000000/x.1234.pgark-tmp");
        std::fs::write(&old, b"abc").unwrap();
        std::fs::write(root.join("wal/0000000100000000/y"), b"object").unwrap();
        let found = find(root, ".pgark-tmp", SystemTime::now() + Duration::from_secs(5)).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].size, Some(3));
        assert_eq!(found[0].handle, LeftoverHandle::File(old.clone()));
        // Younger than the threshold: kept.
        let none = find(root, ".pgark-tmp", SystemTime::now() - Duration::from_secs(3600)).unwrap();
        assert!(none.is_empty());
        // Outside the repository's areas (a mount point's lost+found, a
        // filer's .snapshot): not searched.
        std::fs::create_dir_all(root.join("lost+found")).unwrap();
        std::fs::write(root.join("lost+found/z.1.pgark-tmp"), b"x").unwrap();
        let found = find(root, ".pgark-tmp", SystemTime::now() + Duration::from_secs(5)).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        remove(&old).unwrap();
        remove(&old).unwrap();
        assert!(!old.exists());
        assert!(root.join("wal/0000000100000000/y").exists());
    }
}
