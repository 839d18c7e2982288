//! Stage 7 of a restore: the files PostgreSQL reads first. backup_label,
//! tablespace_map (remapped), the signal files of the source removed,
//! a PostgreSQL backup_manifest (for pg_verifybackup), pg_wal ready; then
//! everything flushed (one syncfs per filesystem) before the caller
//! restores pg_control, the file that makes the directory startable.
//!
//! What a failure leaves: some of these files written, no pg_control; the
//! caller cleans up as for any failed restore.

use crate::EngineError;
use pgark_catalog::BackupManifest;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Writes what a restored directory needs besides the backup's files.
/// `crcs`: CRC-32C of the files rebuilt from a chain, as rebuilt.
pub(super) fn write_backup_files(
    dest: &Path,
    manifest: &BackupManifest,
    locations: &HashMap<u32, PathBuf>,
    crcs: &HashMap<String, String>,
) -> Result<(), EngineError> {
    write_text(&dest.join("backup_label"), &manifest.backup_label)?;
    if !manifest.tablespace_map.is_empty() {
        write_text(
            &dest.join("tablespace_map"),
            &remap_tablespace_map(manifest, locations),
        )?;
    }
    // A backup of a standby carries its standby.signal: the restored
    // server's mode is what this restore asks for, not what the source was.
    for signal in ["standby.signal", "recovery.signal"] {
        let path = dest.join(signal);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(EngineError::local_io("cannot remove", &path, e)),
        }
    }
    write_pg_manifest(dest, manifest, crcs)?;
    let status = dest.join("pg_wal/archive_status");
    std::fs::create_dir_all(&status).map_err(|e| EngineError::local_io("cannot create", &status, e))
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

pub(super) fn write_text(path: &Path, text: &str) -> Result<(), EngineError> {
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

pub(super) fn fsync_path(path: &Path) -> Result<(), EngineError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| EngineError::local_io("cannot fsync", path, e))
}

/// One syncfs(2) per filesystem holding restored files.
pub(super) fn sync_filesystems<'a>(
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
