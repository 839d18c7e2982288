//! The scratch directory of a restore test.
//!
//! Layout: `data/` (the restored data directory), `tablespaces/<oid>/`
//! (every tablespace, never its original location), `socket/` (the
//! server's socket, pg_hba.conf and pg_ident.conf; mode 0700),
//! `postgres.log`. The directory is the server account's, mode 0700.
//!
//! It is removed when the test ends, also on failure and when the command
//! is interrupted (its [`Drop`]), unless kept: a directory pgark created is
//! removed whole; a `--dest` that existed (empty) is emptied and left.

use crate::EngineError;
use pgark_pgserver::Account;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Room asked for beyond the restored files: WAL replayed into pg_wal, the
/// server's log.
const HEADROOM: u64 = 256 << 20;

pub(super) struct Scratch {
    root: PathBuf,
    /// pgark made `root` (else it existed, empty).
    created: bool,
    keep: bool,
}

fn is_empty_dir(path: &Path) -> std::io::Result<bool> {
    Ok(std::fs::read_dir(path)?.next().is_none())
}

impl Scratch {
    /// Makes the scratch directory: `dest` (missing or empty) or a new one
    /// under the system temporary directory.
    pub(super) fn create(dest: Option<&Path>, keep: bool) -> Result<Scratch, EngineError> {
        let (root, created) = match dest {
            Some(dest) => {
                let dest = std::path::absolute(dest)
                    .map_err(|e| EngineError::local_io("cannot resolve", dest, e))?;
                match std::fs::symlink_metadata(&dest) {
                    Ok(meta) if meta.is_dir() => {
                        if !is_empty_dir(&dest).map_err(|e| EngineError::local_io("cannot list", &dest, e))? {
                            return Err(EngineError::Refused {
                                action: format!("use --dest {}", dest.display()),
                                reason: "it is not empty (restore-test removes what it restores there: give a new \
                                         or empty directory)"
                                    .into(),
                            });
                        }
                        (dest, false)
                    }
                    Ok(_) => {
                        return Err(EngineError::Refused {
                            action: format!("use --dest {}", dest.display()),
                            reason: "it is not a directory".into(),
                        })
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        std::fs::DirBuilder::new()
                            .mode(0o700)
                            .create(&dest)
                            .map_err(|e| EngineError::local_io("cannot create", &dest, e))?;
                        (dest, true)
                    }
                    Err(e) => return Err(EngineError::local_io("cannot read", &dest, e)),
                }
            }
            None => {
                let base = std::env::temp_dir();
                let mut attempt = 0u32;
                loop {
                    let name = format!(
                        "pgark-restore-test-{}-{:08x}",
                        std::process::id(),
                        rand::random::<u32>()
                    );
                    let root = base.join(name);
                    match std::fs::DirBuilder::new().mode(0o700).create(&root) {
                        Ok(()) => break (root, true),
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 8 => {
                            attempt += 1
                        }
                        Err(e) => return Err(EngineError::local_io("cannot create", &root, e)),
                    }
                }
            }
        };
        let scratch = Scratch { root, created, keep };
        // The server's socket, `<root>/socket/.s.PGSQL.NNNNN`, must fit in
        // sun_path (108 bytes with its terminating zero).
        let socket_len = scratch.socket_dir().as_os_str().len() + "/.s.PGSQL.NNNNN".len();
        if socket_len > 107 {
            return Err(EngineError::Refused {
                action: format!("use {} as the scratch directory", scratch.root.display()),
                reason: format!(
                    "the server's Unix socket there would have a path of {socket_len} bytes, over the 107 a socket \
                     allows: choose a shorter --dest"
                ),
            });
        }
        std::fs::set_permissions(&scratch.root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| EngineError::local_io("cannot set the mode of", &scratch.root, e))?;
        for dir in [scratch.socket_dir(), scratch.tablespaces()] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(|e| EngineError::local_io("cannot create", &dir, e))?;
        }
        Ok(scratch)
    }

    pub(super) fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    pub(super) fn tablespaces(&self) -> PathBuf {
        self.root.join("tablespaces")
    }

    pub(super) fn socket_dir(&self) -> PathBuf {
        self.root.join("socket")
    }

    pub(super) fn log(&self) -> PathBuf {
        self.root.join("postgres.log")
    }

    /// Gives everything to the account the server runs as.
    pub(super) fn hand_over(&self, account: &Account) -> Result<(), EngineError> {
        account.own_tree(&self.root)?;
        Ok(())
    }

    /// Refuses to start a restore of `bytes` that the filesystem cannot hold.
    pub(super) fn check_free_space(&self, bytes: u64) -> Result<(), EngineError> {
        let c_path = std::ffi::CString::new(self.root.as_os_str().as_encoded_bytes())
            .map_err(|_| EngineError::Internal("a path with a NUL byte".into()))?;
        // SAFETY: an all-zero statvfs is a valid value to be overwritten.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: c_path is a valid C string, st a valid statvfs.
        if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
            return Err(EngineError::local_io(
                "cannot read the free space of",
                &self.root,
                std::io::Error::last_os_error(),
            ));
        }
        let free = st.f_bavail as u64 * st.f_frsize as u64;
        let need = bytes + bytes / 10 + HEADROOM;
        if free < need {
            return Err(EngineError::local_io(
                "not enough free space in",
                &self.root,
                std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!(
                        "the restore needs about {} MiB (the backup's {} MiB, a tenth more, 256 MiB for WAL), {} MiB \
                         are free: give --dest on a larger filesystem",
                        need >> 20,
                        bytes >> 20,
                        free >> 20
                    ),
                ),
            ));
        }
        Ok(())
    }

    /// Removes what the test made (unless kept); says whether it did.
    pub(super) fn finish(&mut self) -> bool {
        if self.keep {
            return false;
        }
        let removed = self.remove();
        self.keep = true;
        removed
    }

    fn remove(&self) -> bool {
        // wal-fetch's prefetcher ends once the server has stopped: wait
        // for it, so that it writes nothing while the directory goes.
        let pg_wal = self.data().join("pg_wal");
        if !crate::prefetch::wait_for_prefetcher(&pg_wal, std::time::Duration::from_secs(30)) {
            tracing::warn!("wal-fetch's prefetcher in {} has not ended", pg_wal.display());
        }
        let result = if self.created {
            std::fs::remove_dir_all(&self.root)
        } else {
            std::fs::read_dir(&self.root).and_then(|entries| {
                for entry in entries {
                    let path = entry?.path();
                    if path.is_dir() && !path.is_symlink() {
                        std::fs::remove_dir_all(&path)?;
                    } else {
                        std::fs::remove_file(&path)?;
                    }
                }
                Ok(())
            })
        };
        match result {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => {
                tracing::warn!(
                    "could not remove the scratch directory {}: {e}; remove it by hand",
                    self.root.display()
                );
                false
            }
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // Removed once: a restore cancelled midway (SIGINT, SIGTERM) has
        // stopped its workers and waited for them before this runs (its
        // future, inside the test's, is dropped first; see
        // `restore::workers`), so nothing writes here any more. A failure
        // is said once, naming the directory and its cause.
        self.remove();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_dest_must_be_new_or_empty_and_is_emptied_not_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let full = tmp.path().join("full");
        std::fs::create_dir(&full).unwrap();
        std::fs::write(full.join("precious"), b"x").unwrap();
        let err = Scratch::create(Some(&full), false).err().unwrap();
        assert!(err.to_string().contains("not empty"), "{err}");
        assert!(full.join("precious").exists());

        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let mut s = Scratch::create(Some(&empty), false).unwrap();
        std::fs::create_dir_all(s.data().join("base")).unwrap();
        assert!(s.finish());
        assert!(empty.exists() && is_empty_dir(&empty).unwrap());

        let new = tmp.path().join("new");
        let s = Scratch::create(Some(&new), false).unwrap();
        assert!(new.join("socket").is_dir());
        drop(s);
        assert!(!new.exists());

        let kept = tmp.path().join("kept");
        let mut s = Scratch::create(Some(&kept), true).unwrap();
        assert!(!s.finish());
        drop(s);
        assert!(kept.join("socket").exists());
        assert!(Scratch::create(None, false)
            .unwrap()
            .check_free_space(1 << 60)
            .is_err());
    }
}
