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

/// Whether the process `pid` exists and has not exited. A process that
/// exited but that its parent has not reaped yet (a zombie) is gone: a
/// postmaster's parent is often a container's init, which may take seconds
/// to reap it, or never.
pub(crate) fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) state ...": comm may hold spaces and parentheses.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next()),
            Some("Z" | "X")
        ),
        // Gone between the two looks, unless /proc is not there at all
        // (then kill's answer stands).
        Err(e) => e.kind() != std::io::ErrorKind::NotFound || !Path::new("/proc/self/stat").exists(),
    }
}

/// Whether the server that `postmaster` (read from `postmaster.pid` when a
/// background process started) runs still runs: the process is alive and
/// `pg_wal`'s `postmaster.pid` still names it (a server stops by removing
/// it, even in an immediate shutdown; a new server writes its own).
pub(crate) fn server_runs(pg_wal: &Path, postmaster: i32) -> bool {
    postmaster_pid(pg_wal) == Some(postmaster) && alive(postmaster)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn this_process_is_alive() {
        assert!(alive(std::process::id() as i32));
    }

    #[test]
    fn an_exited_process_not_yet_reaped_is_not_alive() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Not waited for: once it exits it is a zombie until reaped.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
            if stat.rsplit_once(')').unwrap().1.split_whitespace().next() == Some("Z") {
                break;
            }
            assert!(Instant::now() < deadline, "the child did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!alive(pid), "a zombie counts as alive");
        child.wait().unwrap();
        assert!(!alive(pid), "a reaped process counts as alive");
    }

    #[test]
    fn a_server_runs_only_while_postmaster_pid_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let pg_wal = dir.path().join("pg_wal");
        std::fs::create_dir(&pg_wal).unwrap();
        let me = std::process::id() as i32;
        assert!(!server_runs(&pg_wal, me), "no postmaster.pid");
        std::fs::write(
            dir.path().join("postmaster.pid"),
            format!("{me}\n{}\n", dir.path().display()),
        )
        .unwrap();
        assert!(server_runs(&pg_wal, me));
        std::fs::write(dir.path().join("postmaster.pid"), "1\n").unwrap();
        assert!(!server_runs(&pg_wal, me), "postmaster.pid names another process");
        std::fs::remove_file(dir.path().join("postmaster.pid")).unwrap();
        assert!(
            !server_runs(&pg_wal, me),
            "postmaster.pid removed (the server stopped)"
        );
    }
}
