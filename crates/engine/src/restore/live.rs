//! Whether a running PostgreSQL uses a directory: the checks the guard
//! makes before a restore touches a data directory or a tablespace
//! location. Read-only.

use std::path::{Path, PathBuf};

/// Whether the postmaster that `dir/postmaster.pid` names is alive, and
/// how that was told: its PID answers signal 0 (in this PID namespace),
/// its Unix socket accepts a connection, or its System V shared memory
/// segment has processes attached (seen across PID namespaces, as
/// PostgreSQL's own check does). `None`: no postmaster.pid, or a stale one.
pub(super) fn live_postmaster(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    let pid: i32 = lines.first()?.trim().parse().ok()?;
    if pid > 0 && pid != std::process::id() as i32 {
        // SAFETY: signal 0 only checks that the process exists.
        let rc = unsafe { libc::kill(pid, 0) };
        let exists = rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if exists && !is_zombie(pid) {
            return Some(format!("postmaster.pid names PID {pid}, which is running"));
        }
    }
    // Lines 4 and 5: port and socket directory.
    if let (Some(port), Some(socket_dir)) = (lines.get(3), lines.get(4)) {
        let socket_dir = socket_dir.trim();
        if !socket_dir.is_empty() {
            let socket = Path::new(socket_dir).join(format!(".s.PGSQL.{}", port.trim()));
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Some(format!("its socket {} accepts connections", socket.display()));
            }
        }
    }
    // Line 7: shared memory key and id.
    let shmid: Option<i32> = lines
        .get(6)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok());
    if let Some(id) = shmid.filter(|&id| id >= 0) {
        // SAFETY: IPC_STAT fills the zeroed struct; nothing else is touched.
        let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) };
        if rc == 0 && ds.shm_nattch > 0 {
            return Some(format!(
                "its shared memory segment {id} has {} processes attached",
                ds.shm_nattch
            ));
        }
    }
    None
}

/// Whether process `pid` has ended and waits to be reaped (a killed
/// postmaster whose parent does not reap it still answers signal 0).
fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            // "pid (comm) S ...": the state follows the last ')'.
            let after = &stat[stat.rfind(')')? + 1..];
            after.split_whitespace().next().map(|s| s == "Z" || s == "X")
        })
        .unwrap_or(false)
}

/// The data directories of the `postgres` processes of this host (those
/// this user can see: all of them as root or as the server's user), read
/// once per restore from /proc and compared by device and inode (through
/// `/proc/<pid>/cwd`), so a bind mount or a symbolic link naming the same
/// directory by another path is recognised.
pub(super) struct ServersInUse {
    /// A PID working in each data directory (deduplicated by inode).
    servers: Vec<(u32, (u64, u64))>,
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl ServersInUse {
    pub(super) fn scan() -> ServersInUse {
        let mut servers: Vec<(u32, (u64, u64))> = Vec::new();
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return ServersInUse { servers };
        };
        for p in procs.flatten() {
            let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == std::process::id() {
                continue;
            }
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default();
            if !matches!(comm.trim(), "postgres" | "postmaster") {
                continue;
            }
            let Some(id) = identity(&p.path().join("cwd")) else {
                continue;
            };
            if !servers.iter().any(|(_, d)| *d == id) {
                servers.push((pid, id));
            }
        }
        ServersInUse { servers }
    }

    /// A server process working in `dir`.
    pub(super) fn working_in(&self, dir: &Path) -> Option<String> {
        let id = identity(dir)?;
        self.servers
            .iter()
            .find(|(_, d)| *d == id)
            .map(|(pid, _)| format!("postgres process {pid} works in it"))
    }

    /// A running server whose `pg_tblspc` links to `location`.
    pub(super) fn tablespace_user(&self, location: &Path) -> Option<String> {
        let id = identity(location)?;
        self.servers.iter().find_map(|(pid, _)| {
            let cwd = PathBuf::from(format!("/proc/{pid}/cwd"));
            let links = std::fs::read_dir(cwd.join("pg_tblspc")).ok()?;
            links.flatten().find_map(|l| {
                (identity(&l.path())? == id).then(|| {
                    let data_dir = std::fs::read_link(&cwd).unwrap_or_default();
                    format!(
                        "pg_tblspc/{} of the server whose postgres process {pid} works in {}",
                        l.file_name().to_string_lossy(),
                        data_dir.display()
                    )
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_postmaster_pid_is_not_a_live_server() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(live_postmaster(dir.path()), None);
        // A PID far above pid_max, a socket that does not exist, no segment.
        std::fs::write(
            dir.path().join("postmaster.pid"),
            "2147483000\n/x\n1700000000\n5432\n/nonexistent\nlocalhost\n  5432001  -1\nready\n",
        )
        .unwrap();
        assert_eq!(live_postmaster(dir.path()), None);
    }

    #[test]
    fn a_running_pid_is_a_live_server() {
        let dir = tempfile::tempdir().unwrap();
        // This test's parent (cargo or a shell) is alive and is not us.
        let parent = std::os::unix::process::parent_id();
        std::fs::write(dir.path().join("postmaster.pid"), format!("{parent}\n/x\n")).unwrap();
        assert!(live_postmaster(dir.path()).unwrap().contains("is running"));
    }

    #[test]
    fn a_listening_socket_is_a_live_server() {
        let dir = tempfile::tempdir().unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(dir.path().join(".s.PGSQL.6543")).unwrap();
        std::fs::write(
            dir.path().join("postmaster.pid"),
            format!("2147483000\n/x\n0\n6543\n{}\n", dir.path().display()),
        )
        .unwrap();
        assert!(live_postmaster(dir.path())
            .unwrap()
            .contains("accepts connections"));
    }
}
