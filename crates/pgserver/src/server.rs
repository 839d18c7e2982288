//! Starting, waiting for and stopping the scratch server.
//!
//! # What the server is allowed to do
//! It runs `postgres` directly (no `pg_ctl`), as a child of this process
//! in a process group of its own, with settings on its command line, which
//! beat every configuration file the backup brought: no TCP
//! (`listen_addresses = ''`), a Unix socket in a private directory, its own
//! `pg_hba.conf` there (`local all all trust`: only the account and root can
//! reach the directory), `archive_mode = off` (the promoted timeline is
//! never archived anywhere), `restore_command` as given and no
//! `archive_cleanup_command` or `recovery_end_command` (the backed-up
//! server's could delete its archive), no `primary_conninfo`, no
//! synchronous standbys (a commit would wait forever), no external pid
//! file, no SSL, small `shared_buffers`, `fsync = off` (the directory is
//! thrown away), and `hot_standby = off`: nobody connects until recovery
//! has ended and the server promoted.
//!
//! # Never left running
//! [`Server::stop`] asks for a fast shutdown and escalates to an immediate
//! one, then SIGKILL, each bounded. Dropping a [`Server`] (an error, a
//! cancelled future on SIGINT or SIGTERM) stops it immediately the same
//! way. If pgark itself is killed with SIGKILL, the kernel sends the
//! server SIGQUIT (immediate shutdown) through `PR_SET_PDEATHSIG`, set for
//! the thread that starts it: start it from a thread that lives as long as
//! the command (the main thread).

use crate::bins::PgBinaries;
use crate::{Account, ServerError};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// Settings of every check's session, which beat a role's or database's
/// own (`ALTER ROLE ... SET default_transaction_read_only = on`).
pub const SESSION_OPTIONS: &str =
    "-c default_transaction_read_only=off -c statement_timeout=0 -c lock_timeout=0 -c idle_in_transaction_session_timeout=0";

/// How long a fast shutdown may take before an immediate one.
const FAST_SHUTDOWN_LIMIT: Duration = Duration::from_secs(120);
/// How long an immediate shutdown may take before SIGKILL.
const IMMEDIATE_SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);
/// Longest Unix socket directory: sun_path holds 108 bytes, less
/// `/.s.PGSQL.NNNNN` and its terminating zero.
const MAX_SOCKET_DIR: usize = 107 - 16;

/// Settings `--set` may not change: they keep the server off the network,
/// off the archive and inside the scratch directory.
pub const PROTECTED_SETTINGS: &[&str] = &[
    "data_directory",
    "config_file",
    "hba_file",
    "ident_file",
    "external_pid_file",
    "listen_addresses",
    "port",
    "unix_socket_directories",
    "unix_socket_group",
    "unix_socket_permissions",
    "archive_mode",
    "archive_command",
    "archive_library",
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
    "primary_conninfo",
    "primary_slot_name",
    "hot_standby",
    "stats_temp_directory",
];

/// What to start.
#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub bins: PgBinaries,
    /// The restored data directory.
    pub data: PathBuf,
    /// A private directory (mode 0700, the account's) for the socket, the
    /// server's pg_hba.conf and pg_ident.conf.
    pub socket_dir: PathBuf,
    /// The server's log (stdout and stderr).
    pub log: PathBuf,
    /// Names the socket file only (no TCP).
    pub port: u16,
    pub restore_command: String,
    /// Settings of the user's, applied after pgark's.
    pub extra_settings: Vec<(String, String)>,
    pub account: Account,
}

impl ServerSpec {
    /// The settings on the server's command line, in order.
    pub fn settings(&self) -> Vec<(String, String)> {
        let dir = |p: &Path| p.to_string_lossy().into_owned();
        let mut s: Vec<(&str, String)> = vec![
            ("data_directory", dir(&self.data)),
            ("listen_addresses", String::new()),
            ("port", self.port.to_string()),
            ("unix_socket_directories", dir(&self.socket_dir)),
            ("unix_socket_group", String::new()),
            ("unix_socket_permissions", "0700".into()),
            ("hba_file", dir(&self.socket_dir.join("pg_hba.conf"))),
            ("ident_file", dir(&self.socket_dir.join("pg_ident.conf"))),
            // Empty would make the server try to write a file named "".
            ("external_pid_file", dir(&self.socket_dir.join("external.pid"))),
            ("ssl", "off".into()),
            ("archive_mode", "off".into()),
            ("archive_command", String::new()),
            ("restore_command", self.restore_command.clone()),
            ("archive_cleanup_command", String::new()),
            ("recovery_end_command", String::new()),
            ("primary_conninfo", String::new()),
            ("primary_slot_name", String::new()),
            ("synchronous_standby_names", String::new()),
            ("hot_standby", "off".into()),
            ("shared_buffers", "64MB".into()),
            ("huge_pages", "off".into()),
            ("fsync", "off".into()),
            ("logging_collector", "off".into()),
            ("log_destination", "stderr".into()),
            ("session_preload_libraries", String::new()),
            ("local_preload_libraries", String::new()),
            ("default_transaction_read_only", "off".into()),
            ("statement_timeout", "0".into()),
            ("lock_timeout", "0".into()),
            ("idle_in_transaction_session_timeout", "0".into()),
            ("cluster_name", "pgark restore-test".into()),
            // Subscriptions would connect out to their publishers and
            // consume their slots; nothing needs autovacuum's load.
            ("max_logical_replication_workers", "0".into()),
            ("autovacuum", "off".into()),
            ("recovery_min_apply_delay", "0".into()),
        ];
        if self.bins.major >= 17 {
            // Login event triggers would run on every check's connection.
            s.push(("event_triggers", "off".into()));
        }
        if self.bins.major >= 15 {
            s.push(("archive_library", String::new()));
        } else {
            // Before 15 the statistics collector's directory could be set
            // outside the data directory (Debian puts it under /run).
            s.push(("stats_temp_directory", "pg_stat_tmp".into()));
        }
        let mut out: Vec<(String, String)> = s.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        out.extend(
            self.extra_settings
                .iter()
                .filter(|(k, _)| !PROTECTED_SETTINGS.contains(&k.to_ascii_lowercase().as_str()))
                .cloned(),
        );
        out
    }
}

/// What the server says once recovery has ended.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The role everything connects as (the cluster's bootstrap superuser).
    pub superuser: String,
    /// `server_version`.
    pub server_version: String,
    /// The last WAL location replayed (X/X).
    pub replay_lsn: Option<String>,
    /// Commit time of the last transaction replayed (RFC 3339, UTC).
    pub last_replayed_commit: Option<String>,
    /// The timeline it promoted onto.
    pub timeline: u32,
    pub data_checksums: bool,
    /// From start to the end of recovery.
    pub elapsed: Duration,
}

/// A running scratch server (see the module docs).
pub struct Server {
    spec: ServerSpec,
    child: Option<Child>,
    started: Instant,
    /// The role that could connect, once one could.
    user: Option<String>,
    /// `postgres`, or `template1` in a cluster without it.
    maintenance_db: &'static str,
}

enum Attempt {
    Connected(Client),
    NotYet,
    NoDatabase,
}

fn pg_env_vars() -> Vec<std::ffi::OsString> {
    std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| {
            let k = k.to_string_lossy();
            k.starts_with("PG") && !k.starts_with("PGARK_")
        })
        .collect()
}

impl Server {
    /// Writes the server's pg_hba.conf and pg_ident.conf, an empty
    /// postgresql.conf when the backup has none (its configuration lived
    /// outside the data directory), and starts `postgres`.
    pub fn start(spec: ServerSpec) -> Result<Server, ServerError> {
        let socket = spec.socket_dir.to_string_lossy().len();
        if socket > MAX_SOCKET_DIR {
            return Err(ServerError::BadBinDir {
                dir: spec.socket_dir.clone(),
                reason: format!(
                    "the socket directory's path is {socket} bytes, over the {MAX_SOCKET_DIR} a Unix socket \
                     allows: choose a shorter --dest"
                ),
            });
        }
        // New files only (O_EXCL: never through a link planted there).
        let write = |path: PathBuf, text: &str| -> Result<(), ServerError> {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .and_then(|mut f| f.write_all(text.as_bytes()))
                .map_err(|e| ServerError::io("cannot create", &path, e))?;
            spec.account.own_tree(&path)
        };
        write(spec.socket_dir.join("pg_hba.conf"), "local all all trust\n")?;
        write(spec.socket_dir.join("pg_ident.conf"), "")?;
        let conf = spec.data.join("postgresql.conf");
        if std::fs::symlink_metadata(&conf).is_err() {
            write(
                conf,
                "# written by pgark restore-test: the backup had no postgresql.conf\n",
            )?;
        }
        let log = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&spec.log)
            .map_err(|e| ServerError::io("cannot create", &spec.log, e))?;
        spec.account.own_tree(&spec.log)?;
        let log2 = log
            .try_clone()
            .map_err(|e| ServerError::io("cannot open", &spec.log, e))?;

        let mut cmd = std::process::Command::new(&spec.bins.postgres);
        cmd.arg("-D").arg(&spec.data);
        for (name, value) in spec.settings() {
            cmd.arg("-c").arg(format!("{name}={value}"));
        }
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2).current_dir("/");
        for var in pg_env_vars() {
            cmd.env_remove(var);
        }
        cmd.env("LC_MESSAGES", "C");
        if crate::account::is_root() {
            cmd.uid(spec.account.uid).gid(spec.account.gid);
            cmd.env("HOME", &spec.account.home)
                .env("USER", &spec.account.name)
                .env("LOGNAME", &spec.account.name);
        }
        cmd.process_group(0);
        let parent = std::process::id();
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() as u32 != parent {
                    return Err(std::io::Error::other("pgark exited before the server started"));
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| ServerError::io("cannot start", &spec.bins.postgres, e))?;
        tracing::info!(
            "started PostgreSQL {} (pid {}) on {}",
            spec.bins.version,
            child.id(),
            spec.data.display()
        );
        Ok(Server {
            spec,
            child: Some(child),
            started: Instant::now(),
            user: None,
            maintenance_db: "postgres",
        })
    }

    pub fn spec(&self) -> &ServerSpec {
        &self.spec
    }

    /// The process id of the postmaster, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.spec.log).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn failed(&self, what: String) -> ServerError {
        ServerError::Postgres {
            what,
            log: self.spec.log.clone(),
            tail: self.log_tail(20),
        }
    }

    /// Whether the server has exited (and how).
    fn exited(&mut self) -> Result<Option<std::process::ExitStatus>, ServerError> {
        match self.child.as_mut() {
            None => Ok(None),
            Some(child) => child
                .try_wait()
                .map_err(|e| ServerError::io("cannot wait for", &self.spec.bins.postgres, e)),
        }
    }

    fn candidates(&self) -> Vec<String> {
        let mut users = Vec::new();
        if let Some(u) = &self.user {
            users.push(u.clone());
        }
        users.push("postgres".into());
        users.push(self.spec.account.name.clone());
        if let Ok(me) = crate::account::current() {
            users.push(me.name);
        }
        let mut seen = std::collections::HashSet::new();
        users.retain(|u| seen.insert(u.clone()));
        users
    }

    async fn try_connect(&mut self, dbname: &str) -> Result<Attempt, ServerError> {
        let mut refused = Vec::new();
        for user in self.candidates() {
            let mut config = tokio_postgres::Config::new();
            config
                .host_path(&self.spec.socket_dir)
                .port(self.spec.port)
                .user(&user)
                .dbname(dbname)
                .application_name("pgark restore-test")
                .options(SESSION_OPTIONS)
                .connect_timeout(Duration::from_secs(10));
            match config.connect(NoTls).await {
                Ok((client, connection)) => {
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    self.user = Some(user);
                    return Ok(Attempt::Connected(client));
                }
                Err(e) => match e.as_db_error().map(|d| d.code().clone()) {
                    Some(code) if code == SqlState::CANNOT_CONNECT_NOW => return Ok(Attempt::NotYet),
                    Some(code) if code == SqlState::INVALID_CATALOG_NAME => return Ok(Attempt::NoDatabase),
                    Some(code) if code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
                        refused.push(format!("{user}: {e}"));
                    }
                    Some(_) => return Err(self.failed(format!("refused a connection to {dbname}: {e}"))),
                    // The socket is not there yet.
                    None => return Ok(Attempt::NotYet),
                },
            }
        }
        Err(self.failed(format!("accepted no role to connect as ({})", refused.join("; "))))
    }

    /// Waits until recovery has ended and the server accepts connections,
    /// at most `limit` from the start; then reads where recovery ended.
    /// Fails when the server exits first (the log's end says why).
    pub async fn wait_recovered(&mut self, limit: Duration) -> Result<Recovered, ServerError> {
        loop {
            if let Some(status) = self.exited()? {
                self.child = None;
                return Err(self.failed(format!("exited ({status}) before recovery ended")));
            }
            if self.started.elapsed() > limit {
                return Err(ServerError::TimedOut {
                    limit,
                    log: self.spec.log.clone(),
                    tail: self.log_tail(20),
                });
            }
            let attempt = match self.try_connect(self.maintenance_db).await? {
                Attempt::NotYet => None,
                Attempt::Connected(c) => Some(c),
                Attempt::NoDatabase if self.maintenance_db == "postgres" => {
                    // A cluster whose postgres database was dropped.
                    self.maintenance_db = "template1";
                    continue;
                }
                Attempt::NoDatabase => {
                    return Err(self.failed("has neither a postgres nor a template1 database".into()))
                }
            };
            if let Some(client) = attempt {
                let query = "select pg_is_in_recovery(), current_setting('server_version'), \
                    pg_last_wal_replay_lsn()::text, \
                    to_char(pg_last_xact_replay_timestamp() at time zone 'UTC', \
                        'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                    pg_walfile_name(pg_current_wal_lsn()), current_setting('data_checksums'), \
                    (select rolname::text from pg_roles where oid = 10 and rolcanlogin and rolsuper)";
                let row = client
                    .query_one(query, &[])
                    .await
                    .map_err(|e| self.failed(format!("could not be queried: {e}")))?;
                let in_recovery: bool = row.get(0);
                if !in_recovery {
                    let walfile: String = row.get(4);
                    let timeline = u32::from_str_radix(walfile.get(..8).unwrap_or("0"), 16).unwrap_or(0);
                    // The bootstrap superuser, unless it cannot log in: then the
                    // role that connected.
                    let superuser: String = row
                        .get::<_, Option<String>>(6)
                        .or_else(|| self.user.clone())
                        .unwrap_or_else(|| "postgres".into());
                    self.user = Some(superuser.clone());
                    return Ok(Recovered {
                        superuser,
                        server_version: row.get(1),
                        replay_lsn: row.get(2),
                        last_replayed_commit: row.get(3),
                        timeline,
                        data_checksums: row.get::<_, String>(5) == "on",
                        elapsed: self.started.elapsed(),
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A connection to `dbname` as the superuser, once recovered.
    pub async fn connect(&mut self, dbname: &str) -> Result<Client, ServerError> {
        match self.try_connect(dbname).await? {
            Attempt::Connected(c) => Ok(c),
            Attempt::NotYet => Err(self.failed(format!("refused a connection to {dbname}"))),
            Attempt::NoDatabase => Err(self.failed(format!("has no database {dbname}"))),
        }
    }

    /// A connection to the maintenance database (`postgres`, else `template1`).
    pub async fn connect_maintenance(&mut self) -> Result<Client, ServerError> {
        let db = self.maintenance_db;
        self.connect(db).await
    }

    /// The role connections use (the bootstrap superuser once recovered).
    pub fn user(&self) -> &str {
        self.user.as_deref().unwrap_or("postgres")
    }

    fn signal(&self, sig: libc::c_int, group: bool) {
        if let Some(child) = &self.child {
            let pid = child.id() as libc::pid_t;
            // SAFETY: kill has no memory preconditions; the pid is our child's.
            unsafe {
                libc::kill(if group { -pid } else { pid }, sig);
            }
        }
    }

    /// Waits for the server to exit, at most `limit`.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            match self.exited() {
                Ok(Some(status)) => {
                    self.child = None;
                    return Some(status);
                }
                Ok(None) if Instant::now() < until => std::thread::sleep(Duration::from_millis(50)),
                _ => return None,
            }
        }
    }

    /// Stops the server with a fast shutdown (a clean one: every page
    /// written, a shutdown checkpoint), escalating when it takes too long.
    /// Fails when the shutdown was not clean.
    pub async fn stop(&mut self) -> Result<(), ServerError> {
        if self.child.is_none() {
            return Err(self.failed("had already exited".into()));
        }
        self.signal(libc::SIGINT, false);
        let until = Instant::now() + FAST_SHUTDOWN_LIMIT;
        while Instant::now() < until {
            if let Some(status) = self.exited()? {
                self.child = None;
                return if status.success() {
                    Ok(())
                } else {
                    Err(self.failed(format!("shut down with {status}")))
                };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.kill();
        Err(self.failed(format!(
            "did not finish a fast shutdown within {FAST_SHUTDOWN_LIMIT:?}; stopped immediately"
        )))
    }

    /// Immediate shutdown, then SIGKILL to its process group; bounded.
    pub fn kill(&mut self) {
        if self.child.is_none() {
            return;
        }
        self.signal(libc::SIGQUIT, false);
        if self.wait_exit(IMMEDIATE_SHUTDOWN_LIMIT).is_none() {
            self.signal(libc::SIGKILL, true);
            self.wait_exit(IMMEDIATE_SHUTDOWN_LIMIT);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            tracing::warn!("stopping the scratch server (immediate shutdown)");
            self.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(major: u32) -> ServerSpec {
        ServerSpec {
            bins: PgBinaries {
                bin_dir: "/usr/lib/postgresql/15/bin".into(),
                postgres: "/usr/lib/postgresql/15/bin/postgres".into(),
                version: format!("{major}.1"),
                major,
                pg_amcheck: None,
                pg_checksums: None,
            },
            data: "/scratch/data".into(),
            socket_dir: "/scratch/socket".into(),
            log: "/scratch/postgres.log".into(),
            port: 45432,
            restore_command: "'/bin/pgark' --repo '/r' --abort-on-error wal-fetch %f %p".into(),
            extra_settings: vec![
                ("Archive_Mode".into(), "on".into()),
                ("work_mem".into(), "8MB".into()),
            ],
            account: Account {
                name: "postgres".into(),
                uid: 999,
                gid: 999,
                home: "/var/lib/postgresql".into(),
            },
        }
    }

    fn value<'a>(settings: &'a [(String, String)], name: &str) -> Option<&'a str> {
        settings.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn the_server_never_archives_listens_on_tcp_or_runs_the_sources_commands() {
        for major in [13, 14, 15, 16, 17, 18] {
            let settings = spec(major).settings();
            assert_eq!(value(&settings, "archive_mode"), Some("off"));
            assert_eq!(value(&settings, "listen_addresses"), Some(""));
            assert_eq!(value(&settings, "archive_cleanup_command"), Some(""));
            assert_eq!(value(&settings, "recovery_end_command"), Some(""));
            assert_eq!(value(&settings, "synchronous_standby_names"), Some(""));
            assert_eq!(value(&settings, "data_directory"), Some("/scratch/data"));
            assert_eq!(value(&settings, "hot_standby"), Some("off"));
            assert!(value(&settings, "restore_command")
                .unwrap()
                .contains("wal-fetch %f %p"));
            // Settings a version does not know stop it from starting.
            assert_eq!(
                value(&settings, "archive_library").is_some(),
                major >= 15,
                "{major}"
            );
            assert_eq!(
                value(&settings, "stats_temp_directory").is_some(),
                major < 15,
                "{major}"
            );
            // The user's come last, so they win, except the protected ones.
            assert_eq!(
                settings.last().unwrap(),
                &("work_mem".to_string(), "8MB".to_string())
            );
            assert!(!settings
                .iter()
                .any(|(k, v)| k.eq_ignore_ascii_case("archive_mode") && v == "on"));
        }
    }
}
