//! What the spools in `pg_wal` share: the lock that makes one background
//! process (a prefetcher, an archiver) the only one of its kind for a
//! `pg_wal`, handed from the process that starts it to the process started,
//! and the server the spool belongs to.

use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The descriptor on which a process passes a spool's lock to the
/// background process it starts.
pub const INHERITED_LOCK_FD: i32 = 3;

/// Takes the lock at `path` without waiting: `Some` when nobody holds it.
/// The lock is held until the returned file is closed (by every process
/// that inherited it). `None` also when it cannot be taken at all.
pub(crate) fn try_lock(path: &Path) -> Option<File> {
    try_lock_checked(path).ok().flatten()
}

/// [`try_lock`], telling "held by another process" (`Ok(None)`) from a
/// lock that cannot be taken at all (`Err`: no such directory, no
/// permission, a file system without `flock`).
pub(crate) fn try_lock_checked(path: &Path) -> std::io::Result<Option<File>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    Ok(flock_now(&file)?.then_some(file))
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(true)` when this open file now holds the
/// lock, `Ok(false)` when another holds it, `Err` when the file system
/// cannot lock it.
pub(crate) fn flock_now(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor the caller owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EWOULDBLOCK) => Ok(false),
        _ => Err(err),
    }
}

/// The lock at `path` as the background process holds it: the one its
/// starter took and passed on as descriptor [`INHERITED_LOCK_FD`] (so that
/// no other can start in between), or else taken now. Only for that
/// background process itself: elsewhere descriptor 3 belongs to someone
/// else (another thread may even have the lock file open on it).
pub(crate) fn adopt_lock(path: &Path) -> Option<File> {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::io::FromRawFd;
    let lock = std::fs::metadata(path).ok();
    // SAFETY: fstat into a zeroed struct of the right type.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let inherited = unsafe { libc::fstat(INHERITED_LOCK_FD, &mut st) } == 0
        && lock.is_some_and(|m| m.dev() == st.st_dev && m.ino() == st.st_ino);
    if inherited {
        // SAFETY: descriptor 3 is this lock file (checked above), open in
        // this process and owned by nothing else.
        let file = unsafe { File::from_raw_fd(INHERITED_LOCK_FD) };
        // Not passed on to the programs this process runs (a key command
        // that leaves a process behind would keep the lock).
        // SAFETY: fcntl on a descriptor this process owns.
        unsafe { libc::fcntl(INHERITED_LOCK_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
        // The same open file description: this succeeds when the lock is
        // ours.
        return flock_now(&file).ok()?.then_some(file);
    }
    try_lock(path)
}

/// The data directory of `pg_wal`, when it is named so (its parent taken
/// by name, not through a symbolic link).
pub(crate) fn data_dir_of(pg_wal: &Path) -> Option<PathBuf> {
    if pg_wal.file_name()? != "pg_wal" {
        return None;
    }
    Some(match pg_wal.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    })
}

/// The postmaster's process id from the `postmaster.pid` of `pg_wal`'s
/// data directory (a single-user backend writes its own, negated: not a
/// server).
pub(crate) fn postmaster_pid(pg_wal: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir_of(pg_wal)?.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    (pid > 0).then_some(pid)
}

/// Whether this process may keep a spool in `pg_wal`: it runs as the
/// directory's owner (PostgreSQL's account). A run by hand as root would
/// leave files PostgreSQL's own calls cannot open, and start background
/// processes as root.
pub(crate) fn owns(pg_wal: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    std::fs::metadata(pg_wal).is_ok_and(|m| m.uid() == euid)
}

/// Whether the process `pid` exists.
pub(crate) fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}
