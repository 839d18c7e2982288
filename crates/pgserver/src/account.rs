//! The account PostgreSQL runs as.
//!
//! PostgreSQL refuses to run as root. When pgark runs as root, the server
//! (and the `restore_command` it spawns, and so `pgark wal-fetch`) runs as
//! an unprivileged account, `postgres` unless told otherwise, with its
//! primary group only: supplementary groups are dropped when the child
//! switches, so [`Account::check_reachable`] judges paths by owner, primary
//! group and others alone. Not as root, everything runs as the current user.

use crate::ServerError;
use std::ffi::{CStr, CString};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A local account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn from_passwd(pw: &libc::passwd) -> Account {
    // SAFETY: getpwnam_r/getpwuid_r filled `pw` with valid C strings.
    let text = |p: *const libc::c_char| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    Account {
        name: text(pw.pw_name),
        uid: pw.pw_uid,
        gid: pw.pw_gid,
        home: PathBuf::from(text(pw.pw_dir)),
    }
}

fn lookup_with(
    what: &str,
    call: impl Fn(&mut libc::passwd, &mut [libc::c_char], &mut *mut libc::passwd) -> libc::c_int,
) -> Result<Option<Account>, ServerError> {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: an all-zero passwd is a valid value to be overwritten.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = call(&mut pw, &mut buf, &mut result);
    if rc != 0 {
        return Err(ServerError::Account(format!(
            "cannot look up {what}: {}",
            std::io::Error::from_raw_os_error(rc)
        )));
    }
    Ok((!result.is_null()).then(|| from_passwd(&pw)))
}

/// The account named `name`.
pub fn lookup(name: &str) -> Result<Account, ServerError> {
    let c_name =
        CString::new(name).map_err(|_| ServerError::Account(format!("bad account name {name:?}")))?;
    let found = lookup_with(&format!("account {name:?}"), |pw, buf, result| {
        // SAFETY: every pointer is valid for the sizes given.
        unsafe { libc::getpwnam_r(c_name.as_ptr(), pw, buf.as_mut_ptr(), buf.len(), result) }
    })?;
    found.ok_or_else(|| {
        ServerError::Account(format!(
            "there is no account {name:?} on this host to run PostgreSQL as (PostgreSQL refuses to run as root): \
             give --run-as USER"
        ))
    })
}

/// The account the process runs as.
pub fn current() -> Result<Account, ServerError> {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    let found = lookup_with("the current account", |pw, buf, result| {
        // SAFETY: every pointer is valid for the sizes given.
        unsafe { libc::getpwuid_r(uid, pw, buf.as_mut_ptr(), buf.len(), result) }
    })?;
    Ok(found.unwrap_or_else(|| Account {
        name: uid.to_string(),
        uid,
        // SAFETY: getegid has no preconditions.
        gid: unsafe { libc::getegid() },
        home: PathBuf::from("/"),
    }))
}

/// The account to run PostgreSQL as: `run_as` (root only), else `postgres`
/// as root, else the current user.
pub fn choose(run_as: Option<&str>) -> Result<Account, ServerError> {
    let me = current()?;
    match (is_root(), run_as) {
        (true, Some(name)) => refuse_root(lookup(name)?),
        (true, None) => refuse_root(lookup("postgres")?),
        (false, Some(name)) if name != me.name => Err(ServerError::Account(format!(
            "--run-as {name}: only root can run PostgreSQL as another account (this is {})",
            me.name
        ))),
        (false, _) => Ok(me),
    }
}

fn refuse_root(account: Account) -> Result<Account, ServerError> {
    if account.uid == 0 {
        return Err(ServerError::Account(format!(
            "--run-as {}: PostgreSQL refuses to run as root; name an unprivileged account",
            account.name
        )));
    }
    Ok(account)
}

impl Account {
    /// Whether this account may `bits` (an `rwx` triple, 4/2/1) a file of
    /// `meta`, by owner, primary group, others.
    fn may(&self, meta: &std::fs::Metadata, bits: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        let mode = meta.mode();
        let granted = if meta.uid() == self.uid {
            mode >> 6
        } else if meta.gid() == self.gid {
            mode >> 3
        } else {
            mode
        } & 0o7;
        granted & bits == bits
    }

    /// Checks that the account can reach `path` (search every directory
    /// above it) and then `bits` it: 0o5 to list a directory, 0o1 to run a
    /// program, 0o4 to read a file. ACLs are not read: a path they open is
    /// refused here with the mode bits that close it.
    pub fn check_reachable(&self, path: &Path, bits: u32) -> Result<(), ServerError> {
        let unreachable = |p: &Path, reason: String| ServerError::Unreachable {
            account: format!("the account {} (which runs PostgreSQL)", self.name),
            path: p.to_path_buf(),
            reason,
        };
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        for dir in path.ancestors().skip(1) {
            let meta = std::fs::metadata(dir).map_err(|e| unreachable(dir, e.to_string()))?;
            if !self.may(&meta, 0o1) {
                return Err(unreachable(
                    &path,
                    format!(
                        "{} (mode {:o}) cannot be searched",
                        dir.display(),
                        meta.mode() & 0o7777
                    ),
                ));
            }
        }
        let meta = std::fs::metadata(&path).map_err(|e| unreachable(&path, e.to_string()))?;
        if !self.may(&meta, bits) {
            return Err(unreachable(
                &path,
                format!("mode {:o} does not allow it", meta.mode() & 0o7777),
            ));
        }
        Ok(())
    }

    /// Gives `path` and everything below it to this account (symbolic
    /// links themselves, not their targets). A no-op when the files are
    /// already the current user's and the account is the current user.
    pub fn own_tree(&self, path: &Path) -> Result<(), ServerError> {
        let meta = std::fs::symlink_metadata(path).map_err(|e| ServerError::io("cannot read", path, e))?;
        if meta.uid() != self.uid || meta.gid() != self.gid {
            std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
                .map_err(|e| ServerError::io("cannot give to the server's account", path, e))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(path).map_err(|e| ServerError::io("cannot list", path, e))? {
                let entry = entry.map_err(|e| ServerError::io("cannot list", path, e))?;
                self.own_tree(&entry.path())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn reachability_follows_owner_group_and_others() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("inner");
        std::fs::create_dir(&inner).unwrap();
        let file = inner.join("f");
        std::fs::write(&file, b"x").unwrap();
        let stranger = Account {
            name: "stranger".into(),
            uid: 65534,
            gid: 65534,
            home: "/".into(),
        };
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = stranger.check_reachable(&file, 0o4).unwrap_err();
        assert!(err.to_string().contains("cannot be searched"), "{err}");
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o711)).unwrap();
        // /tmp's ancestors are searchable by anyone on a usual host.
        if stranger.check_reachable(dir.path(), 0o1).is_ok() {
            stranger.check_reachable(&file, 0o4).unwrap();
            assert!(stranger.check_reachable(&file, 0o1).is_err());
        }
        let me = current().unwrap();
        me.check_reachable(&file, 0o4).unwrap();
        me.own_tree(dir.path()).unwrap();
    }

    #[test]
    fn root_is_never_chosen_to_run_postgres() {
        let root = Account {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: "/root".into(),
        };
        assert!(refuse_root(root).is_err());
        assert!(lookup("no-such-account-pgark")
            .unwrap_err()
            .to_string()
            .contains("--run-as"));
    }
}
