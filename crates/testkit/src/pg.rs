//! Throw-away PostgreSQL servers for tests.
//!
//! Everything here drives real PostgreSQL binaries (`initdb`, `pg_ctl`,
//! `postgres`, `psql`, `pgbench`, ...) located through a [`PgInstall`]; no
//! version is hard-coded. [`PgCluster`] owns a temporary directory holding
//! the data directory, the server log and the Unix sockets, and stops the
//! server and removes the directory when dropped.
//!
//! # Root and the unprivileged user
//!
//! PostgreSQL refuses to run as root, yet the suite (and CI) usually does.
//! So when the test process's effective uid is 0, every PostgreSQL program
//! is started as an unprivileged account instead: the `postgres` system user
//! the distribution package creates (override the name with
//! `$PGARK_TEST_PGUSER`). The switch is done in the child itself with
//! [`CommandExt::uid`]/[`CommandExt::gid`] (supplementary groups dropped), so
//! no `su`/`runuser` process sits in between and killing the child kills the
//! program. Because the server runs as that user, so do the
//! `archive_command` and `restore_command` it spawns, and therefore so does
//! pgark inside them. When the tests do not run as root, everything simply
//! runs as the current user and no ownership is changed.
//!
//! Consequences for test code running as root:
//! - Directories the server or pgark (as run by the server) write into must
//!   belong to the unprivileged user: use [`scratch_dir`],
//!   [`PgCluster::make_subdir`] or [`chown_to_pg_user`]. Root can read and
//!   write them anyway, but files root creates there stay root's until
//!   handed over with [`chown_to_pg_user`].
//! - The unprivileged user must be able to reach every path it is given.
//!   Temporary directories are created under [`test_tmp_root`] (which is
//!   checked for that), and executables built under `target/` (possibly
//!   below a `0700` home) are made reachable by [`expose_binary`].
//! - Run pgark by hand the way the server would, with
//!   [`command_as_pg_user`], so that repository files keep one owner.
//!
//! Child processes started through this module run with `/` as working
//! directory, `LC_ALL=C`, and without the caller's `PG*` connection
//! variables (`PGARK_*` variables are kept); as root they also get the
//! unprivileged user's `HOME`, `USER`, `LOGNAME`, a system `PATH` and a
//! reachable `TMPDIR`.
//!
//! # Other major versions
//!
//! Debian ships one PostgreSQL major; `.ci/install-deps.sh` adds the server
//! programs of others under [`EXTRA_INSTALL_ROOT`] (`pg<major>/bin`). Those
//! installations hold `initdb`, `pg_ctl` and `postgres` only, so
//! [`PgInstall::command`] runs a compatible client program of another
//! installation in place of one the installation lacks: any `psql`,
//! `pgbench`, ... (libpq clients that talk to every supported server), a
//! `pg_basebackup` or `pg_dump` of the same or a newer major, and for
//! programs tied to the on-disk format (`pg_controldata`, `pg_checksums`,
//! `pg_waldump`, `pg_resetwal`, ...) only one of the same major. Use
//! [`PgInstall::resolve_tool`] to learn whether such a program can run at
//! all. Their shared libraries are found through their `RUNPATH`
//! (`$ORIGIN/../lib`), so no `LD_LIBRARY_PATH` is set.
//!
//! # Isolation
//!
//! Each cluster listens on `127.0.0.1` on a port found free at the time
//! (retrying on another port if the bind loses a race) and on a Unix socket
//! in its own directory, which is what [`PgCluster::conninfo`] points to, so
//! concurrently running tests never talk to each other's servers. The only
//! process-wide state is the cache of [`expose_binary`].
//!
//! # Environment
//!
//! - `PGARK_TEST_PGBIN`: bin directory of the installation [`PgInstall::detect`]
//!   returns (default: the newest `/usr/lib/postgresql/*/bin`).
//! - `PGARK_TEST_EXTRA_PGBINS`: colon-separated bin directories of further
//!   installations for [`PgInstall::all_available`], besides the
//!   distribution's and `/opt/pgark-test/pg*/bin` ([`EXTRA_INSTALL_ROOT`]).
//! - `PGARK_TEST_PGUSER`: the unprivileged account used as root (default `postgres`).
//! - `PGARK_TEST_TMPDIR`: where temporary directories go (default: the
//!   system temporary directory, or `/tmp` if the unprivileged user could not
//!   reach it).
//! - `PGARK_TEST_KEEP=1`: keep cluster and scratch directories after the
//!   test (their paths are printed); servers are still stopped.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Name of the superuser every cluster made by [`PgCluster::init`] has.
pub const SUPERUSER: &str = "postgres";

/// Default limit for one client command (`psql`, `pgbench`, `initdb`, ...).
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// How long `pg_ctl` may wait for a server to start or stop.
const PG_CTL_WAIT_SECS: u64 = 120;

/// How many ports [`PgCluster::start`] tries when the bind loses a race.
const START_PORT_ATTEMPTS: usize = 8;

/// Where `.ci/install-deps.sh` installs further PostgreSQL majors, each in
/// `pg<major>/` with a `bin/` directory; see [`PgInstall::extra_installs`].
pub const EXTRA_INSTALL_ROOT: &str = "/opt/pgark-test";

/// A `PATH` for children running as the unprivileged user.
const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// What went wrong in a [`HarnessError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HarnessErrorKind {
    /// The environment is unusable (no PostgreSQL found, bad version, ...).
    Setup,
    /// A filesystem or process-spawn operation failed.
    Io,
    /// A command ran but exited unsuccessfully.
    Command,
    /// A command or a [`PgCluster::wait_for`] condition took too long.
    Timeout,
}

/// Error of every fallible harness operation. Its message is meant to be
/// read by a human: it includes command lines, their output and, for server
/// problems, the tail of the server log. `Debug` prints the same text, so
/// `.unwrap()` failures stay readable.
pub struct HarnessError {
    kind: HarnessErrorKind,
    message: String,
}

/// Result of harness operations.
pub type HarnessResult<T> = Result<T, HarnessError>;

impl HarnessError {
    /// An error of the given kind with the given message.
    pub fn new(kind: HarnessErrorKind, message: impl Into<String>) -> HarnessError {
        HarnessError {
            kind,
            message: message.into(),
        }
    }

    fn setup(message: impl Into<String>) -> HarnessError {
        HarnessError::new(HarnessErrorKind::Setup, message)
    }

    fn io(context: impl fmt::Display, err: io::Error) -> HarnessError {
        HarnessError::new(HarnessErrorKind::Io, format!("{context}: {err}"))
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> HarnessErrorKind {
        self.kind
    }

    /// The full message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Appends more context (e.g. a server log tail) to the message.
    pub fn with_context(mut self, context: impl fmt::Display) -> HarnessError {
        self.message = format!("{}\n{context}", self.message);
        self
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} error: {}", self.kind, self.message)
    }
}

impl std::error::Error for HarnessError {}

// ---------------------------------------------------------------------------
// The unprivileged user
// ---------------------------------------------------------------------------

/// The account PostgreSQL programs run as when the tests run as root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgUser {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
}

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    effective_uid() == 0
}

/// The effective uid of this process.
pub fn effective_uid() -> u32 {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        for line in status.lines() {
            if let Some(rest) = line.strip_prefix("Uid:") {
                // real, effective, saved, filesystem
                if let Some(euid) = rest.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
                    return euid;
                }
            }
        }
    }
    // Not Linux: ask id(1).
    let out = Command::new("id").arg("-u").output().expect("running `id -u`");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("parsing the output of `id -u`")
}

/// The unprivileged account used when running as root, `None` when not root.
///
/// # Panics
/// When running as root and the account (`postgres`, or `$PGARK_TEST_PGUSER`)
/// does not exist: run `.ci/install-deps.sh`.
pub fn pg_user_info() -> Option<PgUser> {
    if !is_root() {
        return None;
    }
    let name = std::env::var("PGARK_TEST_PGUSER").unwrap_or_else(|_| "postgres".to_owned());
    match lookup_user(&name) {
        Some(user) => Some(user),
        None => panic!(
            "the tests run as root, and PostgreSQL refuses to run as root, so its programs are \
             run as the unprivileged user `{name}`, which does not exist on this machine; install \
             the PostgreSQL packages (.ci/install-deps.sh) or name another account in \
             PGARK_TEST_PGUSER"
        ),
    }
}

/// `(uid, gid)` of the unprivileged account when running as root, `None`
/// when not root. Panics like [`pg_user_info`].
pub fn pg_user() -> Option<(u32, u32)> {
    pg_user_info().map(|u| (u.uid, u.gid))
}

fn lookup_user(name: &str) -> Option<PgUser> {
    let parse = |line: &str| -> Option<PgUser> {
        let fields: Vec<&str> = line.trim_end().split(':').collect();
        if fields.len() < 7 || fields[0] != name {
            return None;
        }
        Some(PgUser {
            name: name.to_owned(),
            uid: fields[2].parse().ok()?,
            gid: fields[3].parse().ok()?,
            home: PathBuf::from(fields[5]),
        })
    };
    if let Ok(passwd) = fs::read_to_string("/etc/passwd") {
        if let Some(user) = passwd.lines().find_map(parse) {
            return Some(user);
        }
    }
    // Accounts from other name services.
    let out = Command::new("getent").args(["passwd", name]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).lines().find_map(parse)
}

/// Hands `path` and, if it is a directory, everything below it to the
/// unprivileged user (symbolic links are not followed). No-op when not root.
pub fn chown_to_pg_user(path: &Path) -> HarnessResult<()> {
    match pg_user() {
        Some((uid, gid)) => chown_tree(path, uid, gid),
        None => Ok(()),
    }
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> HarnessResult<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .map_err(|e| HarnessError::io(format!("chown {}", path.display()), e))?;
    let meta =
        fs::symlink_metadata(path).map_err(|e| HarnessError::io(format!("stat {}", path.display()), e))?;
    if meta.is_dir() {
        let entries =
            fs::read_dir(path).map_err(|e| HarnessError::io(format!("listing {}", path.display()), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| HarnessError::io(format!("listing {}", path.display()), e))?;
            chown_tree(&entry.path(), uid, gid)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

/// A [`Command`] for `program` that runs as the unprivileged user when this
/// process is root, and as the current user otherwise.
///
/// The child starts in `/` (so pass absolute paths), with `LC_ALL=C` and
/// without the caller's `PG*` variables; as root it also gets the user's
/// `HOME`, `USER` and `LOGNAME`, a system `PATH` and a reachable `TMPDIR`.
/// Use [`PgInstall::command`] for PostgreSQL programs (it also puts the
/// installation's `bin` directory first in `PATH`).
pub fn command_as_pg_user(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    for (key, _) in std::env::vars_os() {
        let key_bytes = key.as_bytes();
        if key_bytes.starts_with(b"PG") && !key_bytes.starts_with(b"PGARK") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("LC_ALL", "C").current_dir("/");
    if let Some(user) = pg_user_info() {
        cmd.uid(user.uid)
            .gid(user.gid)
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .env("PATH", SYSTEM_PATH)
            .env("TMPDIR", test_tmp_root());
    }
    cmd
}

fn base_path() -> OsString {
    if is_root() {
        OsString::from(SYSTEM_PATH)
    } else {
        std::env::var_os("PATH").unwrap_or_else(|| OsString::from(SYSTEM_PATH))
    }
}

/// `program arg arg ...`, for messages.
pub fn describe_command(cmd: &Command) -> String {
    let mut text = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        let arg = arg.to_string_lossy();
        text.push(' ');
        if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') {
            text.push_str(&format!("{arg:?}"));
        } else {
            text.push_str(&arg);
        }
    }
    text
}

/// Runs `cmd` to completion with piped stdout/stderr, feeding it `stdin`
/// (or `/dev/null`), and kills it after `timeout`.
///
/// Errors only if it cannot be spawned or times out; the exit status is the
/// caller's business (see [`run_checked`]).
pub fn run_capture(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> HarnessResult<Output> {
    let what = describe_command(cmd);
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child: Child = cmd
        .spawn()
        .map_err(|e| HarnessError::io(format!("starting `{what}`"), e))?;

    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let input = input.to_vec();
        // A child that exits without reading everything is not an error here.
        thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let started = Instant::now();
    let mut nap = Duration::from_millis(1);
    let status: ExitStatus = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(HarnessError::io(format!("waiting for `{what}`"), e)),
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            let out = collect(stdout, stderr);
            return Err(HarnessError::new(
                HarnessErrorKind::Timeout,
                format!(
                    "`{what}` did not finish within {timeout:?} and was killed\n\
                     --- stdout ---\n{}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&out.0),
                    String::from_utf8_lossy(&out.1)
                ),
            ));
        }
        thread::sleep(nap);
        nap = (nap * 2).min(Duration::from_millis(50));
    };
    let (stdout, stderr) = collect(stdout, stderr);
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Like [`run_capture`], but an unsuccessful exit is an error whose message
/// holds the command line, the status and both outputs.
pub fn run_checked(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> HarnessResult<Output> {
    let out = run_capture(cmd, stdin, timeout)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(command_failed(cmd, &out))
    }
}

fn command_failed(cmd: &Command, out: &Output) -> HarnessError {
    HarnessError::new(
        HarnessErrorKind::Command,
        format!(
            "`{}` failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            describe_command(cmd),
            out.status,
            String::from_utf8_lossy(&out.stdout).trim_end(),
            String::from_utf8_lossy(&out.stderr).trim_end()
        ),
    )
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            let _ = tx.send(buf);
        });
    } else {
        let _ = tx.send(Vec::new());
    }
    rx
}

fn collect(stdout: mpsc::Receiver<Vec<u8>>, stderr: mpsc::Receiver<Vec<u8>>) -> (Vec<u8>, Vec<u8>) {
    // A grandchild that inherited a pipe could keep it open forever; do not
    // wait for it much longer than the child itself.
    let grace = Duration::from_secs(10);
    (
        stdout.recv_timeout(grace).unwrap_or_default(),
        stderr.recv_timeout(grace).unwrap_or_default(),
    )
}

/// Polls `condition` (about every 100 ms) until it returns true; after
/// `timeout`, fails with an error naming `what`.
pub fn wait_until(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) -> HarnessResult<()> {
    let started = Instant::now();
    loop {
        if condition() {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            return Err(HarnessError::new(
                HarnessErrorKind::Timeout,
                format!("timed out after {timeout:?} waiting for {what}"),
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// Temporary directories and exposed binaries
// ---------------------------------------------------------------------------

/// Whether `$PGARK_TEST_KEEP` asks to keep temporary directories.
pub fn keep_requested() -> bool {
    std::env::var("PGARK_TEST_KEEP").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// The directory temporary directories are created in: `$PGARK_TEST_TMPDIR`,
/// else the system temporary directory. As root, falls back to `/tmp` when
/// the unprivileged user could not traverse the chosen directory.
pub fn test_tmp_root() -> PathBuf {
    let chosen = std::env::var_os("PGARK_TEST_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let chosen = fs::canonicalize(&chosen).unwrap_or(chosen);
    if is_root() && !traversable_by_others(&chosen) {
        return PathBuf::from("/tmp");
    }
    chosen
}

/// Whether every directory from `/` down to `path` is searchable by anyone.
fn traversable_by_others(path: &Path) -> bool {
    path.ancestors()
        .all(|dir| fs::metadata(dir).is_ok_and(|m| m.is_dir() && m.mode() & 0o001 != 0))
}

/// A fresh directory under [`test_tmp_root`], mode 0700, owned by the
/// unprivileged user (so the server and the programs it spawns may write
/// there; root can still do anything in it). It is removed on drop unless
/// `PGARK_TEST_KEEP=1`, in which case its path is printed.
///
/// # Panics
/// If the directory cannot be made; the message says why.
pub fn scratch_dir(prefix: &str) -> TempDir {
    owned_tempdir(prefix).unwrap_or_else(|e| panic!("making a scratch directory: {e}"))
}

fn owned_tempdir(prefix: &str) -> HarnessResult<TempDir> {
    let root = test_tmp_root();
    let mut dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(&root)
        .map_err(|e| HarnessError::io(format!("creating a temporary directory in {}", root.display()), e))?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
        .map_err(|e| HarnessError::io(format!("chmod {}", dir.path().display()), e))?;
    chown_to_pg_user(dir.path())?;
    if keep_requested() {
        dir.disable_cleanup(true);
        eprintln!("PGARK_TEST_KEEP: keeping {}", dir.path().display());
    }
    Ok(dir)
}

/// Copies the executable at `path` to a world-readable place (directories
/// 0755, file 0755) and returns the copy's path, so that the unprivileged
/// user can run binaries built below a private directory (e.g. under
/// `/root`). Typical use: `expose_binary(Path::new(env!("CARGO_BIN_EXE_pgark")))`.
///
/// Copies live in `<test_tmp_root>/pgark-test-bin-<uid>/<hash of source path>/`,
/// so there is one copy per source path, refreshed (atomically) when the
/// source's size or modification time changes. Within a process the result
/// is cached per source path.
///
/// # Panics
/// If the source cannot be read or the copy cannot be made.
pub fn expose_binary(path: &Path) -> PathBuf {
    static EXPOSED: OnceLock<Mutex<HashMap<PathBuf, PathBuf>>> = OnceLock::new();
    let source = fs::canonicalize(path)
        .unwrap_or_else(|e| panic!("expose_binary: cannot resolve {}: {e}", path.display()));
    let mut cache = EXPOSED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(copy) = cache.get(&source) {
        return copy.clone();
    }
    let copy = copy_exposed(&source)
        .unwrap_or_else(|e| panic!("expose_binary: cannot copy {}: {e}", source.display()));
    cache.insert(source, copy.clone());
    copy
}

fn copy_exposed(source: &Path) -> io::Result<PathBuf> {
    let base = exposed_base_dir()?;
    let dir = base.join(format!("{:016x}", fnv1a(source.as_os_str().as_bytes())));
    make_public_dir(&dir)?;
    let name = source
        .file_name()
        .ok_or_else(|| io::Error::other("source has no file name"))?;
    let dest = dir.join(name);
    let meta = fs::metadata(source)?;
    if let Ok(existing) = fs::symlink_metadata(&dest) {
        if existing.is_file()
            && existing.len() == meta.len()
            && existing.mtime() == meta.mtime()
            && existing.mtime_nsec() == meta.mtime_nsec()
            && existing.mode() & 0o7777 == 0o755
        {
            return Ok(dest);
        }
    }
    let mut tmp = tempfile::Builder::new().prefix(".partial-").tempfile_in(&dir)?;
    io::copy(&mut File::open(source)?, tmp.as_file_mut())?;
    tmp.as_file().set_permissions(fs::Permissions::from_mode(0o755))?;
    tmp.as_file().set_modified(meta.modified()?)?;
    tmp.as_file().sync_all()?;
    tmp.persist(&dest).map_err(|e| e.error)?;
    Ok(dest)
}

/// `<test_tmp_root>/pgark-test-bin-<uid>`, created 0755 if missing. Shared by
/// processes of the same user, so it is only trusted if it is a real
/// directory of ours that nobody else can write; otherwise a private,
/// never-removed directory is used instead.
fn exposed_base_dir() -> io::Result<PathBuf> {
    let uid = effective_uid();
    let base = test_tmp_root().join(format!("pgark-test-bin-{uid}"));
    match fs::create_dir(&base) {
        Ok(()) => fs::set_permissions(&base, fs::Permissions::from_mode(0o755))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(&base)?;
    if meta.is_dir() && meta.uid() == uid && meta.mode() & 0o022 == 0 && meta.mode() & 0o005 == 0o005 {
        return Ok(base);
    }
    eprintln!(
        "expose_binary: not trusting {}, using a private directory",
        base.display()
    );
    let private = tempfile::Builder::new()
        .prefix("pgark-test-bin-")
        .tempdir_in(test_tmp_root())?
        .keep();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o755))?;
    Ok(private)
}

fn make_public_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it; the
/// socket is closed again before returning, so it may be taken by the time
/// it is used: [`PgCluster::start`] retries on another port).
pub fn free_port() -> HarnessResult<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))
        .map_err(|e| HarnessError::io("binding 127.0.0.1:0 to find a free port", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| HarnessError::io("reading the bound port", e))?
        .port();
    Ok(port)
}

/// Quotes `value` as a postgresql.conf string literal: `'it''s'`.
pub fn conf_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Quotes `value` for a libpq connection string if needed.
pub fn conninfo_quote(value: &str) -> String {
    if !value.is_empty() && !value.contains(|c: char| c.is_whitespace() || c == '\'' || c == '\\') {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// Quotes `value` for `/bin/sh`.
pub fn shell_quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+=:,@%".contains(&b))
    {
        return value.to_owned();
    }
    format!("'{}'", value.replace('\'', "'\\''"))
}

// ---------------------------------------------------------------------------
// Installations
// ---------------------------------------------------------------------------

/// One PostgreSQL installation: a directory with `initdb`, `pg_ctl`,
/// `postgres`, `psql`, `pgbench`, ...
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PgInstall {
    /// The directory holding the programs.
    pub bin_dir: PathBuf,
    /// Major version (13, 14, ... 18).
    pub major: u32,
    /// Full version string, e.g. `15.14`.
    pub version: String,
}

impl PgInstall {
    /// `$PGARK_TEST_PGBIN` if set, else the newest `/usr/lib/postgresql/*/bin`.
    pub fn detect() -> HarnessResult<PgInstall> {
        if let Some(dir) = std::env::var_os("PGARK_TEST_PGBIN") {
            return PgInstall::from_bin_dir(&dir).map_err(|e| e.with_context("(from $PGARK_TEST_PGBIN)"));
        }
        PgInstall::system_installs().pop().ok_or_else(|| {
            HarnessError::setup(
                "no PostgreSQL installation found: none of /usr/lib/postgresql/*/bin has a `postgres` \
                 binary; install one (.ci/install-deps.sh) or point PGARK_TEST_PGBIN at a bin directory",
            )
        })
    }

    /// Every usable `/usr/lib/postgresql/*/bin`, oldest major first.
    pub fn system_installs() -> Vec<PgInstall> {
        let mut installs: Vec<PgInstall> = fs::read_dir("/usr/lib/postgresql")
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .map(|e| e.path().join("bin"))
                    .filter(|bin| bin.join("postgres").is_file())
                    .filter_map(|bin| PgInstall::from_bin_dir(&bin).ok())
                    .collect()
            })
            .unwrap_or_default();
        installs.sort_by_key(|i| i.major);
        installs
    }

    /// The installation whose programs are in `dir`; its version comes from
    /// `postgres --version`.
    pub fn from_bin_dir(dir: impl AsRef<Path>) -> HarnessResult<PgInstall> {
        let dir = dir.as_ref();
        let bin_dir = fs::canonicalize(dir)
            .map_err(|e| HarnessError::io(format!("PostgreSQL bin directory {}", dir.display()), e))?;
        let postgres = bin_dir.join("postgres");
        if !postgres.is_file() {
            return Err(HarnessError::setup(format!(
                "{} is not a PostgreSQL bin directory: it has no `postgres` program",
                bin_dir.display()
            )));
        }
        let out = run_checked(
            Command::new(&postgres).arg("--version"),
            None,
            Duration::from_secs(60),
        )?;
        let text = String::from_utf8_lossy(&out.stdout);
        let (version, major) = parse_version(&text).ok_or_else(|| {
            HarnessError::setup(format!(
                "cannot read a version in `{} --version`: {text:?}",
                postgres.display()
            ))
        })?;
        Ok(PgInstall {
            bin_dir,
            major,
            version,
        })
    }

    /// Path of program `tool` of this installation.
    pub fn bin(&self, tool: &str) -> PathBuf {
        self.bin_dir.join(tool)
    }

    /// Whether this installation has program `tool`.
    pub fn has_tool(&self, tool: &str) -> bool {
        self.bin(tool).is_file()
    }

    /// A [`command_as_pg_user`] for program `tool` of this installation, with
    /// the installation's bin directory first in `PATH`. If the installation
    /// lacks `tool`, a compatible one of another installation runs instead
    /// (see [`PgInstall::resolve_tool`]); if there is none, the command names
    /// the missing program and fails to start.
    pub fn command(&self, tool: &str) -> Command {
        let program = self.resolve_tool(tool).unwrap_or_else(|| self.bin(tool));
        let mut cmd = command_as_pg_user(program);
        cmd.env("PATH", self.path_env());
        cmd
    }

    /// `PATH` with this installation's bin directory first. For an
    /// installation without `psql` (the server-only ones of
    /// [`PgInstall::extra_installs`]), the bin directory of the installation
    /// [`PgInstall::resolve_tool`] takes `psql` from comes second.
    pub fn path_env(&self) -> OsString {
        let mut path = OsString::from(self.bin_dir.as_os_str());
        path.push(":");
        if !self.has_tool("psql") {
            if let Some(dir) = self.resolve_tool("psql").as_deref().and_then(Path::parent) {
                path.push(dir);
                path.push(":");
            }
        }
        path.push(base_path());
        path
    }

    /// The program to run for `tool`: this installation's own if it has it,
    /// else one of another installation ([`PgInstall::all_available`]) that
    /// works with this one's servers and data directories, preferring the
    /// distribution's and then the newest:
    /// - `psql`, `pgbench`, `pg_isready`, `createdb`, ... (libpq clients that
    ///   talk to any supported server): any major;
    /// - `pg_basebackup`, `pg_receivewal`, `pg_recvlogical`, `pg_dump`,
    ///   `pg_dumpall`, `pg_restore`: the same major or a newer one;
    /// - anything else (`pg_controldata`, `pg_checksums`, `pg_waldump`,
    ///   `pg_verifybackup`, `pg_resetwal`, ..., which read files in one
    ///   major's format): the same major only.
    ///
    /// `None` if no installation has a suitable one.
    pub fn resolve_tool(&self, tool: &str) -> Option<PathBuf> {
        if self.has_tool(tool) {
            return Some(self.bin(tool));
        }
        let compatible = |other: &PgInstall| match tool_compat(tool) {
            ToolCompat::Any => true,
            ToolCompat::SameOrNewer => other.major >= self.major,
            ToolCompat::Same => other.major == self.major,
        };
        let (system, extra) = cached_available();
        let newest_first = |list: &'static [PgInstall]| list.iter().rev();
        newest_first(system)
            .chain(newest_first(extra))
            .find(|other| other.bin_dir != self.bin_dir && other.has_tool(tool) && compatible(other))
            .map(|other| other.bin(tool))
    }

    /// The installations `.ci/install-deps.sh` adds besides the
    /// distribution's: every `pg*/bin` under [`EXTRA_INSTALL_ROOT`] and the
    /// directories listed (colon-separated) in `$PGARK_TEST_EXTRA_PGBINS`,
    /// oldest major first. Unusable directories are left out (those named in
    /// the variable with a note on stderr).
    pub fn extra_installs() -> Vec<PgInstall> {
        let mut installs: Vec<PgInstall> = Vec::new();
        let mut add = |install: PgInstall| {
            if !installs.iter().any(|i| i.bin_dir == install.bin_dir) {
                installs.push(install);
            }
        };
        if let Some(list) = std::env::var_os("PGARK_TEST_EXTRA_PGBINS") {
            for dir in std::env::split_paths(&list).filter(|d| !d.as_os_str().is_empty()) {
                match PgInstall::from_bin_dir(&dir) {
                    Ok(install) => add(install),
                    Err(e) => eprintln!("PGARK_TEST_EXTRA_PGBINS: skipping {}: {e}", dir.display()),
                }
            }
        }
        let mut found: Vec<PathBuf> = fs::read_dir(EXTRA_INSTALL_ROOT)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.file_name().as_bytes().starts_with(b"pg"))
                    .map(|e| e.path().join("bin"))
                    .filter(|bin| bin.join("postgres").is_file())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        for bin in found {
            if let Ok(install) = PgInstall::from_bin_dir(&bin) {
                add(install);
            }
        }
        installs.sort_by_key(|i| i.major);
        installs
    }

    /// Every usable installation, oldest major first (for one major, the
    /// distribution's first): [`PgInstall::system_installs`],
    /// [`PgInstall::detect`]'s and [`PgInstall::extra_installs`].
    pub fn all_available() -> Vec<PgInstall> {
        let mut all = PgInstall::system_installs();
        let more = PgInstall::detect().into_iter().chain(PgInstall::extra_installs());
        for install in more {
            if !all.iter().any(|i| i.bin_dir == install.bin_dir) {
                all.push(install);
            }
        }
        all.sort_by_key(|i| i.major);
        all
    }
}

/// What another installation's copy of a client program must be to stand in
/// for a missing one; see [`PgInstall::resolve_tool`].
enum ToolCompat {
    Any,
    SameOrNewer,
    Same,
}

fn tool_compat(tool: &str) -> ToolCompat {
    match tool {
        "psql" | "pgbench" | "pg_isready" | "createdb" | "dropdb" | "createuser" | "dropuser"
        | "vacuumdb" | "reindexdb" | "clusterdb" => ToolCompat::Any,
        "pg_basebackup" | "pg_receivewal" | "pg_recvlogical" | "pg_dump" | "pg_dumpall" | "pg_restore" => {
            ToolCompat::SameOrNewer
        }
        _ => ToolCompat::Same,
    }
}

/// The distribution's installations and the extra ones, looked up once per
/// process (for [`PgInstall::resolve_tool`], which runs for every command).
fn cached_available() -> (&'static [PgInstall], &'static [PgInstall]) {
    static AVAILABLE: OnceLock<(Vec<PgInstall>, Vec<PgInstall>)> = OnceLock::new();
    let (system, extra) =
        AVAILABLE.get_or_init(|| (PgInstall::system_installs(), PgInstall::extra_installs()));
    (system, extra)
}

/// `(full version, major)` from `postgres (PostgreSQL) 15.14 (Debian ...)`.
fn parse_version(text: &str) -> Option<(String, u32)> {
    let rest = &text[text.find("(PostgreSQL)")? + "(PostgreSQL)".len()..];
    let version = rest.split_whitespace().next()?.to_owned();
    let digits: String = version.chars().take_while(|c| c.is_ascii_digit()).collect();
    let major = digits.parse().ok()?;
    Some((version, major))
}

// ---------------------------------------------------------------------------
// Clusters
// ---------------------------------------------------------------------------

/// How [`PgCluster::init`] makes a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Programs to use.
    pub install: PgInstall,
    /// `initdb --wal-segsize` in MiB (power of two); default 16.
    pub wal_segsize_mb: Option<u32>,
    /// `initdb --data-checksums`; default true.
    pub data_checksums: bool,
    /// Appended to postgresql.conf after the harness's own settings.
    pub extra_conf: String,
    /// Sets `archive_mode = on` and this `archive_command`.
    pub archive_command: Option<String>,
    /// Sets `restore_command` (which only matters once a recovery or
    /// standby signal file exists).
    pub restore_command: Option<String>,
    /// More `initdb` arguments.
    pub initdb_args: Vec<String>,
    /// Limit for each client command the cluster runs.
    pub command_timeout: Duration,
}

impl ClusterOptions {
    /// Defaults: 16 MiB segments, data checksums on, no archiving.
    pub fn new(install: PgInstall) -> ClusterOptions {
        ClusterOptions {
            install,
            wal_segsize_mb: None,
            data_checksums: true,
            extra_conf: String::new(),
            archive_command: None,
            restore_command: None,
            initdb_args: Vec::new(),
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// Sets [`ClusterOptions::archive_command`] (and thereby `archive_mode = on`).
    pub fn with_archive_command(mut self, command: impl Into<String>) -> Self {
        self.archive_command = Some(command.into());
        self
    }

    /// Sets [`ClusterOptions::restore_command`].
    pub fn with_restore_command(mut self, command: impl Into<String>) -> Self {
        self.restore_command = Some(command.into());
        self
    }

    /// Sets [`ClusterOptions::wal_segsize_mb`].
    pub fn with_wal_segsize_mb(mut self, mb: u32) -> Self {
        self.wal_segsize_mb = Some(mb);
        self
    }

    /// Sets [`ClusterOptions::data_checksums`].
    pub fn with_data_checksums(mut self, on: bool) -> Self {
        self.data_checksums = on;
        self
    }

    /// Appends lines to [`ClusterOptions::extra_conf`].
    pub fn with_conf(mut self, text: &str) -> Self {
        self.extra_conf.push_str(text);
        if !self.extra_conf.ends_with('\n') {
            self.extra_conf.push('\n');
        }
        self
    }
}

/// A PostgreSQL cluster in a temporary directory, served on `127.0.0.1` and
/// on a Unix socket in that directory.
///
/// Layout of [`PgCluster::tempdir_path`] (mode 0700, owned by the
/// unprivileged user): `data/` (the data directory, for clusters made by
/// [`PgCluster::init`]), `server.log`, the server's Unix sockets, and
/// whatever the test puts there with [`PgCluster::make_subdir`].
///
/// Dropping it stops the server (immediate mode) and removes the temporary
/// directory, unless `PGARK_TEST_KEEP=1`. If the thread is panicking, the
/// tail of the server log is printed first. A data directory passed to
/// [`PgCluster::from_data_dir`] is left in place.
pub struct PgCluster {
    install: PgInstall,
    dir: TempDir,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: AtomicU16,
    command_timeout: Duration,
}

impl PgCluster {
    /// Runs `initdb` (superuser [`SUPERUSER`], trust authentication, UTF8,
    /// C locale) in a fresh temporary directory and writes the harness's
    /// settings to postgresql.conf. Does not start the server.
    pub fn init(opts: ClusterOptions) -> HarnessResult<PgCluster> {
        let dir = owned_tempdir("pgark-pg-")?;
        let data_dir = dir.path().join("data");
        let cluster = PgCluster::new(opts.install.clone(), dir, data_dir, opts.command_timeout)?;

        let mut initdb = cluster.install.command("initdb");
        initdb.arg("-D").arg(&cluster.data_dir).args([
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]);
        if opts.data_checksums {
            initdb.arg("--data-checksums");
        } else if opts.install.major >= 18 {
            initdb.arg("--no-data-checksums");
        }
        if let Some(mb) = opts.wal_segsize_mb {
            initdb.arg(format!("--wal-segsize={mb}"));
        }
        initdb.args(&opts.initdb_args);
        run_checked(&mut initdb, None, cluster.command_timeout)?;

        let mut conf = String::from("\n# pgark test harness\n");
        conf.push_str(&format!(
            "listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = {}\n\
             wal_level = replica\n\
             max_wal_senders = 10\n\
             max_replication_slots = 10\n\
             lc_messages = 'C'\n\
             timezone = 'UTC'\n\
             log_timezone = 'UTC'\n\
             log_line_prefix = '%m [%p] '\n\
             log_checkpoints = on\n",
            conf_quote(&cluster.socket_dir().to_string_lossy())
        ));
        if let Some(command) = &opts.archive_command {
            conf.push_str(&format!(
                "archive_mode = on\narchive_command = {}\n",
                conf_quote(command)
            ));
        }
        if let Some(command) = &opts.restore_command {
            conf.push_str(&format!("restore_command = {}\n", conf_quote(command)));
        }
        conf.push_str(&opts.extra_conf);
        cluster.append_conf(&conf)?;
        Ok(cluster)
    }

    /// [`PgCluster::init`] followed by [`PgCluster::start`].
    pub fn start_new(opts: ClusterOptions) -> HarnessResult<PgCluster> {
        let cluster = PgCluster::init(opts)?;
        cluster.start()?;
        Ok(cluster)
    }

    /// Wraps an existing, stopped data directory (a restored backup, a
    /// file-level copy, ...) so it can be configured and started on a new
    /// free port, with its log and sockets in a fresh temporary directory.
    ///
    /// The directory and everything in it is handed to the unprivileged
    /// user and made mode 0700, and a stale `postmaster.pid` is removed, so
    /// it must not belong to a running server. It must be reachable by the
    /// unprivileged user (e.g. inside a [`scratch_dir`]). Its own settings
    /// (archive_command, ...) are kept: override them with
    /// [`PgCluster::set_conf`] and friends. The directory is not removed on
    /// drop.
    pub fn from_data_dir(install: &PgInstall, data_dir: impl AsRef<Path>) -> HarnessResult<PgCluster> {
        let given = data_dir.as_ref();
        let data_dir = fs::canonicalize(given)
            .map_err(|e| HarnessError::io(format!("data directory {}", given.display()), e))?;
        if !data_dir.join("PG_VERSION").is_file() {
            return Err(HarnessError::setup(format!(
                "{} is not a PostgreSQL data directory (no PG_VERSION)",
                data_dir.display()
            )));
        }
        chown_to_pg_user(&data_dir)?;
        fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| HarnessError::io(format!("chmod {}", data_dir.display()), e))?;
        match fs::remove_file(data_dir.join("postmaster.pid")) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(HarnessError::io("removing a stale postmaster.pid", e)),
        }
        let mut probe = command_as_pg_user("test");
        probe.arg("-r").arg(data_dir.join("PG_VERSION"));
        if !run_capture(&mut probe, None, Duration::from_secs(60))?
            .status
            .success()
        {
            return Err(HarnessError::setup(format!(
                "the unprivileged user cannot reach {}; put it in a directory it can traverse \
                 (e.g. a scratch_dir())",
                data_dir.display()
            )));
        }
        let dir = owned_tempdir("pgark-pg-")?;
        PgCluster::new(install.clone(), dir, data_dir, DEFAULT_COMMAND_TIMEOUT)
    }

    fn new(
        install: PgInstall,
        dir: TempDir,
        data_dir: PathBuf,
        timeout: Duration,
    ) -> HarnessResult<PgCluster> {
        // sun_path holds 108 bytes including the terminating NUL.
        let socket = dir.path().join(".s.PGSQL.65535.lock");
        if socket.as_os_str().len() > 107 {
            return Err(HarnessError::setup(format!(
                "socket path {} is too long for a Unix socket; use a shorter PGARK_TEST_TMPDIR",
                socket.display()
            )));
        }
        Ok(PgCluster {
            install,
            log_file: dir.path().join("server.log"),
            dir,
            data_dir,
            port: AtomicU16::new(free_port()?),
            command_timeout: timeout,
        })
    }

    /// The installation whose programs this cluster runs.
    pub fn install(&self) -> &PgInstall {
        &self.install
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The TCP port (on 127.0.0.1) and Unix socket port number. It can
    /// change when [`PgCluster::start`] finds it taken.
    pub fn port(&self) -> u16 {
        self.port.load(Ordering::SeqCst)
    }

    /// Uses `port` from the next start on.
    pub fn set_port(&self, port: u16) {
        self.port.store(port, Ordering::SeqCst);
    }

    /// Directory of the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The superuser to connect as.
    pub fn superuser(&self) -> &str {
        SUPERUSER
    }

    /// The temporary directory this cluster owns (see the type's docs).
    pub fn tempdir_path(&self) -> &Path {
        self.dir.path()
    }

    /// The server log file.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// `host=<socket dir> port=<port> user=<superuser> dbname=postgres`.
    pub fn conninfo(&self) -> String {
        self.conninfo_db("postgres")
    }

    /// [`PgCluster::conninfo`] for database `dbname`.
    pub fn conninfo_db(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            conninfo_quote(&self.socket_dir().to_string_lossy()),
            self.port(),
            conninfo_quote(SUPERUSER),
            conninfo_quote(dbname)
        )
    }

    /// `host=127.0.0.1 port=<port> user=<superuser> dbname=postgres`.
    pub fn tcp_conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={} dbname=postgres",
            self.port(),
            conninfo_quote(SUPERUSER)
        )
    }

    /// Makes (if needed) directory `name` in [`PgCluster::tempdir_path`],
    /// owned by the unprivileged user, and returns its path.
    pub fn make_subdir(&self, name: &str) -> HarnessResult<PathBuf> {
        let path = self.dir.path().join(name);
        fs::create_dir_all(&path).map_err(|e| HarnessError::io(format!("mkdir {}", path.display()), e))?;
        chown_to_pg_user(&path)?;
        Ok(path)
    }

    /// Appends `text` to postgresql.conf (later lines win over earlier ones;
    /// `ALTER SYSTEM` settings in postgresql.auto.conf still win over it).
    /// Takes effect at the next start or reload.
    pub fn append_conf(&self, text: &str) -> HarnessResult<()> {
        let path = self.data_dir.join("postgresql.conf");
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| HarnessError::io(format!("opening {}", path.display()), e))?;
        let mut text = text.to_owned();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        file.write_all(format!("\n{text}").as_bytes())
            .map_err(|e| HarnessError::io(format!("writing {}", path.display()), e))
    }

    /// Appends `name = '<value>'` to postgresql.conf.
    pub fn set_conf(&self, name: &str, value: &str) -> HarnessResult<()> {
        self.append_conf(&format!("{name} = {}", conf_quote(value)))
    }

    /// Sets `archive_mode = on` and `archive_command`, or `archive_mode = off`.
    pub fn set_archive_command(&self, command: Option<&str>) -> HarnessResult<()> {
        match command {
            Some(command) => self.append_conf(&format!(
                "archive_mode = on\narchive_command = {}",
                conf_quote(command)
            )),
            None => self.append_conf("archive_mode = off"),
        }
    }

    /// Sets `restore_command`.
    pub fn set_restore_command(&self, command: &str) -> HarnessResult<()> {
        self.set_conf("restore_command", command)
    }

    /// Creates `recovery.signal`: the next start performs targeted/archive
    /// recovery with `restore_command`, then promotes (by default).
    pub fn create_recovery_signal(&self) -> HarnessResult<()> {
        self.create_data_file("recovery.signal")
    }

    /// Creates `standby.signal`: the next start runs as a standby.
    pub fn create_standby_signal(&self) -> HarnessResult<()> {
        self.create_data_file("standby.signal")
    }

    fn create_data_file(&self, name: &str) -> HarnessResult<()> {
        let path = self.data_dir.join(name);
        File::create(&path).map_err(|e| HarnessError::io(format!("creating {}", path.display()), e))?;
        chown_to_pg_user(&path)
    }

    /// Starts the server and waits (up to 120 s) until it accepts
    /// connections; for a server in archive recovery or a standby that is
    /// when it reaches a consistent state (`hot_standby` is on by default).
    /// If the port turns out to be taken, retries on another one. On failure
    /// the error includes `pg_ctl`'s output and the tail of the server log.
    pub fn start(&self) -> HarnessResult<()> {
        self.start_with(true)
    }

    /// Launches the server without waiting for it to accept connections
    /// (for servers expected to fail or to stay in recovery).
    pub fn start_nowait(&self) -> HarnessResult<()> {
        self.start_with(false)
    }

    fn start_with(&self, wait: bool) -> HarnessResult<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let log_offset = fs::metadata(&self.log_file).map(|m| m.len()).unwrap_or(0);
            // Command-line settings win over both configuration files, so
            // they also override whatever a copied data directory says.
            let server_opts = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port(),
                shell_quote(&self.socket_dir().to_string_lossy())
            );
            let mut cmd = self.install.command("pg_ctl");
            cmd.arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&self.log_file)
                .arg("-o")
                .arg(&server_opts);
            if wait {
                cmd.args(["-w", "-t", &PG_CTL_WAIT_SECS.to_string()]);
            } else {
                cmd.arg("-W");
            }
            cmd.arg("start");
            let out = run_capture(&mut cmd, None, Duration::from_secs(PG_CTL_WAIT_SECS + 60))?;
            if out.status.success() {
                return Ok(());
            }
            let new_log = read_from(&self.log_file, log_offset);
            let port_taken = new_log.contains("Address already in use")
                || new_log.contains("could not create any TCP/IP sockets");
            if port_taken && attempt < START_PORT_ATTEMPTS {
                self.set_port(free_port()?);
                continue;
            }
            return Err(command_failed(&cmd, &out).with_context(format!(
                "--- server log ({}) ---\n{}",
                self.log_file.display(),
                self.log_tail(60)
            )));
        }
    }

    /// Stops the server (fast mode: disconnects clients, checkpoints, and
    /// lets the archiver finish). Succeeds if it is not running.
    pub fn stop(&self) -> HarnessResult<()> {
        self.stop_mode("fast")
    }

    /// Stops the server in immediate mode (like a crash: no checkpoint).
    pub fn stop_immediate(&self) -> HarnessResult<()> {
        self.stop_mode("immediate")
    }

    /// Stops the server with `pg_ctl stop -m <mode>` (smart, fast, immediate).
    pub fn stop_mode(&self, mode: &str) -> HarnessResult<()> {
        if !self.data_dir.join("postmaster.pid").exists() {
            return Ok(());
        }
        let mut cmd = self.install.command("pg_ctl");
        cmd.arg("-D").arg(&self.data_dir).args([
            "-m",
            mode,
            "-w",
            "-t",
            &PG_CTL_WAIT_SECS.to_string(),
            "stop",
        ]);
        let out = run_capture(&mut cmd, None, Duration::from_secs(PG_CTL_WAIT_SECS + 60))?;
        if out.status.success() || !self.is_running() {
            Ok(())
        } else {
            Err(command_failed(&cmd, &out).with_context(format!("--- server log ---\n{}", self.log_tail(40))))
        }
    }

    /// Stops (fast) and starts the server.
    pub fn restart(&self) -> HarnessResult<()> {
        self.stop()?;
        self.start()
    }

    /// Re-reads the configuration files (`pg_ctl reload`).
    pub fn reload(&self) -> HarnessResult<()> {
        let mut cmd = self.install.command("pg_ctl");
        cmd.arg("-D").arg(&self.data_dir).arg("reload");
        run_checked(&mut cmd, None, self.command_timeout).map(drop)
    }

    /// Whether a server is running on this data directory (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        let mut cmd = self.install.command("pg_ctl");
        cmd.arg("-D").arg(&self.data_dir).arg("status");
        run_capture(&mut cmd, None, Duration::from_secs(60)).is_ok_and(|out| out.status.success())
    }

    /// A [`PgInstall::command`] for client program `tool` with `PGHOST`,
    /// `PGPORT`, `PGUSER` and `PGDATABASE` pointing at this server.
    pub fn client_command(&self, tool: &str) -> Command {
        let mut cmd = self.install.command(tool);
        cmd.env("PGHOST", self.socket_dir())
            .env("PGPORT", self.port().to_string())
            .env("PGUSER", SUPERUSER)
            .env("PGDATABASE", "postgres");
        cmd
    }

    /// Runs `sql` (any number of statements, psql meta-commands allowed)
    /// in database `postgres` with `psql -X -q -A -t -v ON_ERROR_STOP=1`
    /// and returns its trimmed output (rows one per line, columns separated
    /// by `|`). Fails at the first error, with psql's stderr in the message.
    pub fn psql(&self, sql: &str) -> HarnessResult<String> {
        self.psql_db("postgres", sql)
    }

    /// [`PgCluster::psql`] in database `dbname`.
    pub fn psql_db(&self, dbname: &str, sql: &str) -> HarnessResult<String> {
        let mut cmd = self.install.command("psql");
        cmd.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.conninfo_db(dbname))
            .args(["-f", "-"]);
        let out = run_capture(&mut cmd, Some(sql.as_bytes()), self.command_timeout)?;
        if !out.status.success() {
            return Err(HarnessError::new(
                HarnessErrorKind::Command,
                format!(
                    "psql on port {} failed ({}) running:\n{}\n--- stderr ---\n{}",
                    self.port(),
                    out.status,
                    sql.trim_end(),
                    String::from_utf8_lossy(&out.stderr).trim_end()
                ),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Runs `pgbench` with `args` against this server (connection defaults
    /// come from the environment, see [`PgCluster::client_command`]) and
    /// returns its stdout.
    pub fn pgbench(&self, args: &[&str]) -> HarnessResult<String> {
        let mut cmd = self.client_command("pgbench");
        cmd.args(args);
        let out = run_checked(&mut cmd, None, self.command_timeout)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Forces a switch to a new WAL segment after writing a little WAL, so
    /// there is always a just-completed segment, and returns that segment's
    /// file name (the one the archiver will archive next).
    pub fn switch_wal(&self) -> HarnessResult<String> {
        self.psql("select txid_current();")?;
        self.psql("select pg_walfile_name(pg_switch_wal());")
    }

    /// `pg_controldata` output as name/value pairs.
    pub fn controldata(&self) -> HarnessResult<HashMap<String, String>> {
        let mut cmd = self.install.command("pg_controldata");
        cmd.arg("-D").arg(&self.data_dir);
        let out = run_checked(&mut cmd, None, self.command_timeout)?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect())
    }

    /// [`wait_until`] with the tail of the server log in the timeout error.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        condition: impl FnMut() -> bool,
    ) -> HarnessResult<()> {
        wait_until(what, timeout, condition).map_err(|e| {
            e.with_context(format!(
                "--- server log ({}) ---\n{}",
                self.log_file.display(),
                self.log_tail(40)
            ))
        })
    }

    /// The last `lines` lines of the server log (empty if there is none).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = read_from(&self.log_file, 0);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The whole server log.
    pub fn log(&self) -> String {
        read_from(&self.log_file, 0)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!(
                "--- server log tail of the cluster in {} (port {}) ---\n{}\n---",
                self.dir.path().display(),
                self.port(),
                self.log_tail(40)
            );
        }
        if let Err(e) = self.stop_immediate() {
            eprintln!("could not stop the cluster in {}: {e}", self.data_dir.display());
        }
        if keep_requested() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "PGARK_TEST_KEEP: keeping cluster directory {}",
                self.dir.path().display()
            );
        }
    }
}

impl fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgCluster")
            .field("version", &self.install.version)
            .field("data_dir", &self.data_dir)
            .field("port", &self.port())
            .finish()
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut file) = File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut buf);
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_versions() {
        assert_eq!(
            parse_version("postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n"),
            Some(("15.14".to_owned(), 15))
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 18beta1\n"),
            Some(("18beta1".to_owned(), 18))
        );
        assert_eq!(
            parse_version("postgres (PostgreSQL) 9.6.24"),
            Some(("9.6.24".to_owned(), 9))
        );
        assert_eq!(parse_version("something else"), None);
    }

    #[test]
    fn client_programs_stand_in_by_compatibility() {
        assert!(matches!(tool_compat("psql"), ToolCompat::Any));
        assert!(matches!(tool_compat("pgbench"), ToolCompat::Any));
        assert!(matches!(tool_compat("pg_basebackup"), ToolCompat::SameOrNewer));
        assert!(matches!(tool_compat("pg_checksums"), ToolCompat::Same));
        assert!(matches!(tool_compat("pg_controldata"), ToolCompat::Same));
        // An installation's own programs are always used.
        if let Ok(install) = PgInstall::detect() {
            if install.has_tool("psql") {
                assert_eq!(install.resolve_tool("psql"), Some(install.bin("psql")));
            }
        }
        // A server-only installation borrows psql but not pg_controldata.
        let bare = PgInstall {
            bin_dir: PathBuf::from("/nonexistent/pgark-test/bin"),
            major: 1,
            version: "1.0".to_owned(),
        };
        assert_eq!(bare.resolve_tool("pg_controldata"), None);
        assert!(bare.command("pg_controldata").get_program() == bare.bin("pg_controldata").as_os_str());
    }

    #[test]
    fn quoting() {
        assert_eq!(conf_quote("cp %p '/x y'/%f"), "'cp %p ''/x y''/%f'");
        assert_eq!(conninfo_quote("/tmp/abc"), "/tmp/abc");
        assert_eq!(conninfo_quote("/tmp/a b"), "'/tmp/a b'");
        assert_eq!(conninfo_quote("it's"), r"'it\'s'");
        assert_eq!(shell_quote("/tmp/pgark-pg-x1"), "/tmp/pgark-pg-x1");
        assert_eq!(shell_quote("a b'c"), r"'a b'\''c'");
    }

    #[test]
    fn describes_commands() {
        let mut cmd = Command::new("psql");
        cmd.args(["-c", "select 1", "-X"]);
        assert_eq!(describe_command(&cmd), r#"psql -c "select 1" -X"#);
    }

    #[test]
    fn run_capture_times_out() {
        let err = run_capture(Command::new("sleep").arg("30"), None, Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), HarnessErrorKind::Timeout);
    }

    #[test]
    fn run_capture_feeds_stdin() {
        let out = run_capture(&mut Command::new("cat"), Some(b"hello"), Duration::from_secs(30)).unwrap();
        assert_eq!(out.stdout, b"hello");
        let err = run_checked(&mut Command::new("false"), None, Duration::from_secs(30)).unwrap_err();
        assert_eq!(err.kind(), HarnessErrorKind::Command);
    }
}
