//! The PostgreSQL session a backup runs on.
//!
//! Connects like libpq does: a conninfo string or URL, then the PGHOST,
//! PGHOSTADDR, PGPORT, PGUSER, PGPASSWORD, PGDATABASE, PGAPPNAME,
//! PGCONNECT_TIMEOUT, PGCHANNELBINDING, PGTARGETSESSIONATTRS,
//! PGLOADBALANCEHOSTS, PGSSLNEGOTIATION environment variables, host by host
//! (see `connect.rs`), and over TCP with TLS as libpq's `sslmode`,
//! `sslrootcert`, `sslcert` and `sslkey` (or PGSSLMODE, PGSSLROOTCERT,
//! PGSSLCERT, PGSSLKEY) say; see [`tls`] for the rules. Wraps the
//! version-specific SQL of a non-exclusive online backup. Start and stop
//! must run on the same session, so a [`Session`] is one pinned connection:
//! if it dies, the server aborts the backup and the stop call fails.

mod connect;
mod conninfo;
pub mod tls;

pub use conninfo::{client_conninfo, split_tls_params, TlsParams};
pub use tls::{ClientCert, RootCert, SslMode, TlsOptions};

use pgark_pg::{Lsn, TimelineId};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config};

/// Why talking to PostgreSQL failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PgClientError {
    #[error("invalid connection string: {0}")]
    BadConnInfo(String),
    /// Every host failed: one line per host, as libpq 14 and later.
    #[error("cannot connect to PostgreSQL {}", connect_failures(failures, *mode))]
    Connect {
        mode: SslMode,
        /// Each host tried (`db port 5432 as user u`) and why it failed in
        /// words: the server's message, the TLS failure, the timeout.
        failures: Vec<(String, String)>,
    },
    #[error("PostgreSQL {what} failed: {message}")]
    Query { what: &'static str, message: String },
    #[error("PostgreSQL {found} is not supported: pgark supports PostgreSQL 13 to 18")]
    UnsupportedVersion { found: String },
    #[error("unexpected answer from PostgreSQL to {what}: {detail}")]
    Protocol { what: &'static str, detail: String },
    /// A certificate or key file named by the settings (or libpq's default
    /// in `~/.postgresql`) that cannot be used.
    #[error("{what} {} {problem}", path.display())]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error(
        "sslmode={mode} checks the server's certificate and needs the CA that signed it: set sslrootcert \
         (PGSSLROOTCERT) to its file, or to `system` for the system's trusted CAs{}",
        default.as_ref().map(|p| format!(", or put it in {}", p.display())).unwrap_or_default()
    )]
    NoRootCert { mode: SslMode, default: Option<PathBuf> },
    #[error("cannot set up TLS: {0}")]
    TlsSetup(String),
}

fn connect_failures(failures: &[(String, String)], mode: SslMode) -> String {
    match failures {
        [(target, detail)] => format!("at {target}: {detail} (sslmode={mode})"),
        _ => {
            let lines: String = failures
                .iter()
                .map(|(target, detail)| format!("\n  at {target}: {detail}"))
                .collect();
            format!("at any of its {} hosts (sslmode={mode}):{lines}", failures.len())
        }
    }
}

/// tokio_postgres's Display leaves out the cause: the server's message
/// becomes "db error" (a refused password), an I/O failure "error
/// connecting to server" (no server listening). Spell both out.
fn error_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => match std::error::Error::source(e) {
            // "error performing TLS handshake: ..." says less than the
            // cause alone ("the server's certificate is not signed by ...").
            Some(cause) if e.to_string() == "error performing TLS handshake" => cause.to_string(),
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

impl PgClientError {
    fn query(what: &'static str, e: tokio_postgres::Error) -> Self {
        PgClientError::Query {
            what,
            message: error_detail(&e),
        }
    }
}

type Result<T> = std::result::Result<T, PgClientError>;

/// How to reach the server.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// A libpq conninfo string or URL; unset parts come from the
    /// environment like libpq.
    pub conninfo: Option<String>,
    /// Connect timeout when neither the conninfo nor PGCONNECT_TIMEOUT set one.
    pub connect_timeout: Option<Duration>,
}

/// Where and how to connect: tokio-postgres's settings (one TLS mode for
/// all hosts, set per attempt) and the TLS settings.
#[derive(Debug, Clone)]
pub struct ConnectConfig {
    pub pg: Config,
    pub tls: TlsOptions,
}

/// Settings libpq also takes from the environment when the conninfo
/// string leaves them out (PQconninfoOptions), beyond those read below.
const ENV_SETTINGS: &[(&str, &str)] = &[
    ("hostaddr", "PGHOSTADDR"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("target_session_attrs", "PGTARGETSESSIONATTRS"),
    ("sslnegotiation", "PGSSLNEGOTIATION"),
    ("load_balance_hosts", "PGLOADBALANCEHOSTS"),
];

/// Builds a connection config from a conninfo string and the environment.
pub fn config_from(opts: &ConnectOptions, env: impl Fn(&str) -> Option<String>) -> Result<ConnectConfig> {
    let (mut pairs, tls_params) = match &opts.conninfo {
        Some(s) => split_tls_params(s).map_err(PgClientError::BadConnInfo)?,
        None => (Vec::new(), TlsParams::default()),
    };
    // An empty host, port, ... is the default (libpq), not a value.
    pairs.retain(|(k, v)| {
        !(v.is_empty() && ["host", "hostaddr", "port", "user", "dbname"].contains(&k.as_str()))
    });
    for (key, var) in ENV_SETTINGS {
        if !pairs.iter().any(|(k, _)| k == key) {
            if let Some(v) = env(var).filter(|v| !v.is_empty()) {
                pairs.push((key.to_string(), v));
            }
        }
    }
    let mut config = Config::from_str(&conninfo::to_conninfo(&pairs))
        .map_err(|e| PgClientError::BadConnInfo(e.to_string()))?;
    // The TLS mode is pgark's, host by host: tokio-postgres never sees
    // one. Fail closed should that ever change.
    if config.get_ssl_mode() != tokio_postgres::config::SslMode::Prefer {
        return Err(PgClientError::BadConnInfo(
            "an sslmode reached tokio-postgres; pgark applies sslmode itself".into(),
        ));
    }
    if config.get_hosts().is_empty() {
        match env("PGHOST").filter(|h| !h.is_empty()) {
            Some(hosts) => {
                for h in hosts.split(',') {
                    config.host(h);
                }
            }
            // libpq's default on Debian is the socket directory, then TCP;
            // hostaddr alone names the server by itself (libpq).
            None if config.get_hostaddrs().is_empty() => {
                config.host("/var/run/postgresql").host("/tmp").host("localhost");
            }
            None => {}
        }
    }
    if config.get_ports().is_empty() {
        if let Some(p) = env("PGPORT") {
            let port = p
                .parse::<u16>()
                .map_err(|_| PgClientError::BadConnInfo(format!("PGPORT={p:?} is not a port")))?;
            config.port(port);
        }
    }
    if config.get_user().is_none() {
        let user = env("PGUSER")
            .or_else(|| env("USER"))
            .or_else(|| env("LOGNAME"))
            .unwrap_or_else(|| "postgres".into());
        config.user(&user);
    }
    if config.get_password().is_none() {
        if let Some(pw) = env("PGPASSWORD") {
            config.password(pw);
        }
    }
    if config.get_dbname().is_none() {
        let db = env("PGDATABASE").unwrap_or_else(|| config.get_user().unwrap_or("postgres").to_string());
        config.dbname(&db);
    }
    if config.get_application_name().is_none() {
        config.application_name(env("PGAPPNAME").unwrap_or_else(|| "pgark".into()));
    }
    if config.get_connect_timeout().is_none() {
        let secs = env("PGCONNECT_TIMEOUT").and_then(|s| s.parse::<u64>().ok());
        let timeout = secs
            .map(Duration::from_secs)
            .or(opts.connect_timeout)
            .unwrap_or(Duration::from_secs(30));
        config.connect_timeout(timeout);
    }
    let tls = TlsOptions::resolve(&tls_params, &env)?;
    let hosts = connect::single_hosts(&config).map_err(PgClientError::BadConnInfo)?;
    // libpq checks the certificate against `host`, never hostaddr.
    if tls.mode == SslMode::VerifyFull && hosts.iter().any(|h| h.tcp && h.name.is_none()) {
        return Err(PgClientError::BadConnInfo(
            "host name must be specified for a verified SSL connection (sslmode=verify-full checks the \
             server's certificate against host; hostaddr alone gives none)"
                .into(),
        ));
    }
    if config.get_ssl_negotiation() == tokio_postgres::config::SslNegotiation::Direct
        && matches!(tls.mode, SslMode::Disable | SslMode::Allow | SslMode::Prefer)
    {
        return Err(PgClientError::BadConnInfo(format!(
            "weak sslmode \"{}\" may not be used with sslnegotiation=direct (use \"require\", \"verify-ca\", \
             or \"verify-full\")",
            tls.mode
        )));
    }
    config.keepalives(true).keepalives_idle(Duration::from_secs(30));
    Ok(ConnectConfig { pg: config, tls })
}

fn describe(config: &Config) -> String {
    let addrs = config.get_hostaddrs();
    let mut hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(addrs.iter().map(Some).chain(std::iter::repeat(None)))
        .map(|(h, addr)| {
            let name = match h {
                Host::Tcp(s) => s.clone(),
                Host::Unix(p) => p.display().to_string(),
            };
            match addr {
                Some(a) if a.to_string() != name => format!("{name} ({a})"),
                _ => name,
            }
        })
        .collect();
    if hosts.is_empty() {
        hosts = addrs.iter().map(|a| a.to_string()).collect();
    }
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{} port {port} as user {}",
        hosts.join(","),
        config.get_user().unwrap_or("?")
    )
}

/// One pinned connection to the server being backed up.
pub struct Session {
    client: Client,
    version_num: u32,
    target: String,
}

/// What `pg_backup_stop` returned.
#[derive(Debug, Clone)]
pub struct BackupStop {
    pub lsn: Lsn,
    /// Contents for the restored directory's backup_label.
    pub backup_label: String,
    /// Contents for tablespace_map; empty without tablespaces.
    pub tablespace_map: String,
}

/// A row of pg_stat_archiver, as text for messages.
#[derive(Debug, Clone, Default)]
pub struct ArchiverStatus {
    pub archived_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<String>,
    pub failed_count: i64,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<String>,
}

/// [`Session::archiver_health`]: `pg_stat_archiver` and the segment being
/// written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiverHealth {
    pub failed_count: i64,
    pub last_archived_wal: Option<String>,
    pub last_archived_time: Option<chrono::DateTime<chrono::Utc>>,
    pub last_failed_wal: Option<String>,
    pub last_failed_time: Option<chrono::DateTime<chrono::Utc>>,
    pub current_wal: Option<String>,
    /// Files waiting for `archive_command` (`.ready` in
    /// `pg_wal/archive_status`); `None` when the role may not look.
    pub ready_segments: Option<i64>,
}

/// A user tablespace: its OID and location on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tablespace {
    pub oid: u32,
    pub name: String,
    pub location: String,
}

impl Session {
    /// Connects and checks the server version (13 to 18).
    pub async fn connect(opts: &ConnectOptions) -> Result<Session> {
        let config = config_from(opts, |k| std::env::var(k).ok())?;
        let target = describe(&config.pg);
        let client = connect::connect(&config).await?;
        let row = client
            .query_one("select current_setting('server_version_num')::int", &[])
            .await
            .map_err(|e| PgClientError::query("version query", e))?;
        let version_num = u32::try_from(row.get::<_, i32>(0)).unwrap_or(0);
        let session = Session {
            client,
            version_num,
            target,
        };
        if !(13..=18).contains(&session.major()) {
            return Err(PgClientError::UnsupportedVersion {
                found: version_num.to_string(),
            });
        }
        Ok(session)
    }

    /// Where the session is connected, for messages.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// server_version_num (150018 for 15.18).
    pub fn version_num(&self) -> u32 {
        self.version_num
    }

    /// The server's major version (13 for 130012).
    pub fn major(&self) -> u32 {
        self.version_num / 10000
    }

    async fn text(&self, what: &'static str, sql: &str) -> Result<String> {
        let row = self
            .client
            .query_one(sql, &[])
            .await
            .map_err(|e| PgClientError::query(what, e))?;
        row.try_get::<_, String>(0).map_err(|e| PgClientError::Protocol {
            what,
            detail: e.to_string(),
        })
    }

    pub async fn is_in_recovery(&self) -> Result<bool> {
        Ok(self
            .text("pg_is_in_recovery()", "select pg_is_in_recovery()::text")
            .await?
            == "true")
    }

    /// The standby's `primary_conninfo` (needs superuser or
    /// pg_read_all_settings); `None` when it is empty.
    pub async fn primary_conninfo(&self) -> Result<Option<String>> {
        let v = self
            .text("primary_conninfo", "select current_setting('primary_conninfo')")
            .await?;
        Ok((!v.trim().is_empty()).then_some(v))
    }

    /// `pg_switch_wal()` on this server (a primary): ends its current WAL
    /// segment, so that it is archived. Returns the LSN it returned.
    pub async fn switch_wal(&self) -> Result<String> {
        self.text("pg_switch_wal()", "select pg_switch_wal()::text").await
    }

    /// The server's data_directory setting (needs superuser or
    /// pg_read_all_settings).
    pub async fn data_directory(&self) -> Result<String> {
        self.text("data_directory", "select current_setting('data_directory')")
            .await
    }

    pub async fn system_identifier(&self) -> Result<u64> {
        let s = self
            .text(
                "pg_control_system()",
                "select system_identifier::text from pg_control_system()",
            )
            .await?;
        s.parse().map_err(|_| PgClientError::Protocol {
            what: "pg_control_system()",
            detail: s,
        })
    }

    /// wal_segment_size in bytes.
    pub async fn wal_segment_size(&self) -> Result<u64> {
        let s = self
            .text(
                "wal_segment_size",
                "select setting from pg_settings where name = 'wal_segment_size'",
            )
            .await?;
        s.parse().map_err(|_| PgClientError::Protocol {
            what: "wal_segment_size",
            detail: s,
        })
    }

    /// The timeline of the latest checkpoint (or restartpoint on a standby).
    pub async fn checkpoint_timeline(&self) -> Result<TimelineId> {
        let s = self
            .text(
                "pg_control_checkpoint()",
                "select timeline_id::text from pg_control_checkpoint()",
            )
            .await?;
        s.parse().map(TimelineId).map_err(|_| PgClientError::Protocol {
            what: "pg_control_checkpoint()",
            detail: s,
        })
    }

    pub async fn tablespaces(&self) -> Result<Vec<Tablespace>> {
        let rows = self
            .client
            .query(
                "select oid::int8, spcname::text, pg_tablespace_location(oid) from pg_tablespace \
                 where spcname not in ('pg_default', 'pg_global') order by oid",
                &[],
            )
            .await
            .map_err(|e| PgClientError::query("pg_tablespace", e))?;
        rows.iter()
            .map(|r| {
                let oid: i64 = r.get(0);
                Ok(Tablespace {
                    oid: oid as u32,
                    name: r.get(1),
                    location: r.get(2),
                })
            })
            .collect()
    }

    /// Starts a non-exclusive backup; returns its start LSN.
    pub async fn backup_start(&self, label: &str, fast: bool) -> Result<Lsn> {
        let sql = if self.major() >= 15 {
            "select pg_backup_start($1, $2)::text"
        } else {
            "select pg_start_backup($1, $2, false)::text"
        };
        let row = self
            .client
            .query_one(sql, &[&label, &fast])
            .await
            .map_err(|e| PgClientError::query("backup start", e))?;
        let s: String = row.get(0);
        s.parse().map_err(|_| PgClientError::Protocol {
            what: "backup start",
            detail: s,
        })
    }

    /// Stops the backup started on this session. Does not wait for WAL
    /// archiving: the caller waits for the archive itself, with a bound.
    pub async fn backup_stop(&self) -> Result<BackupStop> {
        let sql = if self.major() >= 15 {
            "select lsn::text, labelfile, coalesce(spcmapfile, '') from pg_backup_stop(false)"
        } else {
            "select lsn::text, labelfile, coalesce(spcmapfile, '') from pg_stop_backup(false, false)"
        };
        let row = self
            .client
            .query_one(sql, &[])
            .await
            .map_err(|e| PgClientError::query("backup stop", e))?;
        let lsn: String = row.get(0);
        Ok(BackupStop {
            lsn: lsn.parse().map_err(|_| PgClientError::Protocol {
                what: "backup stop",
                detail: lsn,
            })?,
            backup_label: row.get(1),
            tablespace_map: row.get(2),
        })
    }

    /// The server's own clock, `clock_timestamp()`, in UTC.
    pub async fn server_time(&self) -> Result<chrono::DateTime<chrono::Utc>> {
        let row = self
            .client
            .query_one(
                "select (extract(epoch from clock_timestamp()) * 1000000)::int8",
                &[],
            )
            .await
            .map_err(|e| PgClientError::query("reading the server's clock", e))?;
        let micros: i64 = row.get(0);
        chrono::DateTime::from_timestamp_micros(micros).ok_or_else(|| PgClientError::Protocol {
            what: "server clock",
            detail: micros.to_string(),
        })
    }

    pub async fn archiver_status(&self) -> Result<ArchiverStatus> {
        let row = self
            .client
            .query_one(
                "select archived_count, last_archived_wal, last_archived_time::text, failed_count, \
                 last_failed_wal, last_failed_time::text from pg_stat_archiver",
                &[],
            )
            .await
            .map_err(|e| PgClientError::query("pg_stat_archiver", e))?;
        Ok(ArchiverStatus {
            archived_count: row.get(0),
            last_archived_wal: row.get(1),
            last_archived_time: row.get(2),
            failed_count: row.get(3),
            last_failed_wal: row.get(4),
            last_failed_time: row.get(5),
        })
    }

    /// `pg_stat_archiver` with times as timestamps, and the segment the
    /// server writes now (`None` on a standby, where there is none).
    pub async fn archiver_health(&self) -> Result<ArchiverHealth> {
        let row = self
            .client
            .query_one(
                "select failed_count, last_archived_wal, \
                 (extract(epoch from last_archived_time) * 1000000)::int8, last_failed_wal, \
                 (extract(epoch from last_failed_time) * 1000000)::int8, \
                 case when pg_is_in_recovery() then null else pg_walfile_name(pg_current_wal_lsn()) end \
                 from pg_stat_archiver",
                &[],
            )
            .await
            .map_err(|e| PgClientError::query("pg_stat_archiver", e))?;
        let time = |micros: Option<i64>| micros.and_then(chrono::DateTime::from_timestamp_micros);
        // Needs superuser or pg_monitor: without, unknown.
        let ready = self
            .client
            .query_one(
                "select count(*) from pg_ls_archive_statusdir() where name like '%.ready'",
                &[],
            )
            .await
            .ok()
            .map(|r| r.get::<_, i64>(0));
        Ok(ArchiverHealth {
            ready_segments: ready,
            failed_count: row.get(0),
            last_archived_wal: row.get(1),
            last_archived_time: time(row.get(2)),
            last_failed_wal: row.get(3),
            last_failed_time: time(row.get(4)),
            current_wal: row.get(5),
        })
    }

    /// Current settings that decide whether the WAL of a backup reaches the
    /// archive: (archive_mode, archive_command).
    pub async fn archive_settings(&self) -> Result<(String, String)> {
        let row = self
            .client
            .query_one(
                "select current_setting('archive_mode'), current_setting('archive_command')",
                &[],
            )
            .await
            .map_err(|e| PgClientError::query("archive settings", e))?;
        Ok((row.get(0), row.get(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(conninfo: Option<&str>, env: &[(&str, &str)]) -> Result<Config> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let opts = ConnectOptions {
            conninfo: conninfo.map(String::from),
            connect_timeout: None,
        };
        config_from(&opts, |k| env.get(k).cloned()).map(|c| c.pg)
    }

    #[test]
    fn environment_fills_what_conninfo_leaves_unset() {
        let c = cfg(
            None,
            &[
                ("PGHOST", "/run/pg"),
                ("PGPORT", "5433"),
                ("PGUSER", "u"),
                ("PGPASSWORD", "pw"),
            ],
        )
        .unwrap();
        assert_eq!(c.get_hosts(), &[Host::Unix("/run/pg".into())]);
        assert_eq!(c.get_ports(), &[5433]);
        assert_eq!(c.get_user(), Some("u"));
        assert_eq!(c.get_password(), Some(&b"pw"[..]));
        assert_eq!(c.get_dbname(), Some("u"));
        let c = cfg(
            Some("host=db port=6000 user=x dbname=y"),
            &[("PGHOST", "/run/pg"), ("PGUSER", "u")],
        )
        .unwrap();
        assert_eq!(c.get_hosts(), &[Host::Tcp("db".into())]);
        assert_eq!(c.get_user(), Some("x"));
        assert_eq!(c.get_dbname(), Some("y"));
        assert_eq!(c.get_connect_timeout(), Some(&Duration::from_secs(30)));
    }

    fn connect_config(conninfo: Option<&str>, env: &[(&str, &str)]) -> Result<ConnectConfig> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let opts = ConnectOptions {
            conninfo: conninfo.map(String::from),
            connect_timeout: None,
        };
        config_from(&opts, |k| env.get(k).cloned())
    }

    #[test]
    fn hostaddr_alone_is_a_tcp_host_and_keeps_its_tls_mode() {
        let addr: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        for (conninfo, env) in [
            (Some("hostaddr=127.0.0.1 port=6000 sslmode=require"), vec![]),
            (
                Some("sslmode=require"),
                vec![("PGHOSTADDR", "127.0.0.1"), ("PGPORT", "6000")],
            ),
            (
                None,
                vec![
                    ("PGHOSTADDR", "127.0.0.1"),
                    ("PGSSLMODE", "require"),
                    ("PGPORT", "6000"),
                ],
            ),
        ] {
            let c = connect_config(conninfo, &env).unwrap();
            // No default socket directories added next to the address.
            assert_eq!(c.pg.get_hosts(), &[] as &[Host], "{conninfo:?} {env:?}");
            assert_eq!(c.pg.get_hostaddrs(), &[addr]);
            assert_eq!(c.tls.mode, SslMode::Require);
            let hosts = connect::single_hosts(&c.pg).unwrap();
            assert_eq!(hosts.len(), 1);
            assert!(hosts[0].tcp, "hostaddr is reached over TCP, so with TLS");
            assert_eq!(hosts[0].name, None);
            assert_eq!(hosts[0].config.get_ports(), &[6000]);
        }
        // A host given with its address: the name is the host.
        let c = connect_config(
            Some("host=db.example hostaddr=127.0.0.1 sslmode=verify-full sslrootcert=/ca"),
            &[],
        )
        .unwrap();
        let hosts = connect::single_hosts(&c.pg).unwrap();
        assert_eq!(hosts[0].name.as_deref(), Some("db.example"));
        assert!(hosts[0].tcp);
        // PGHOST pairs with the conninfo's hostaddr.
        let c = connect_config(Some("hostaddr=127.0.0.1"), &[("PGHOST", "db")]).unwrap();
        assert_eq!(c.pg.get_hosts(), &[Host::Tcp("db".into())]);
        // Without host or hostaddr: the defaults.
        assert_eq!(connect_config(None, &[]).unwrap().pg.get_hosts().len(), 3);
    }

    #[test]
    fn what_libpq_refuses_about_hosts_is_refused() {
        for (conninfo, env, want) in [
            (
                "hostaddr=127.0.0.1 sslmode=verify-full sslrootcert=/ca",
                vec![],
                "host name must be specified for a verified SSL connection",
            ),
            (
                "host=/run/pg hostaddr=127.0.0.1 sslmode=verify-full sslrootcert=/ca",
                vec![],
                "host name must be specified for a verified SSL connection",
            ),
            (
                "host=a,b hostaddr=127.0.0.1",
                vec![],
                "could not match 2 host names to 1 hostaddr values",
            ),
            (
                "hostaddr=127.0.0.1",
                vec![("PGHOST", "a,b")],
                "could not match 2 host names to 1 hostaddr values",
            ),
            (
                "host=a,b,c port=1,2",
                vec![],
                "could not match 2 port numbers to 3 hosts",
            ),
            (
                "host=db sslnegotiation=direct",
                vec![],
                "weak sslmode \"prefer\" may not be used with sslnegotiation=direct",
            ),
            (
                "host=db",
                vec![("PGSSLNEGOTIATION", "direct"), ("PGSSLMODE", "allow")],
                "weak sslmode \"allow\"",
            ),
        ] {
            let err = connect_config(Some(conninfo), &env).err().unwrap();
            assert!(
                matches!(err, PgClientError::BadConnInfo(_)),
                "{conninfo}: {err:?}"
            );
            assert!(err.to_string().contains(want), "{conninfo}: {err}");
        }
        assert!(connect_config(Some("host=db sslnegotiation=direct sslmode=require"), &[]).is_ok());
    }

    #[test]
    fn security_settings_come_from_the_environment_too() {
        use tokio_postgres::config::{ChannelBinding, LoadBalanceHosts, TargetSessionAttrs};
        let env = [
            ("PGCHANNELBINDING", "require"),
            ("PGTARGETSESSIONATTRS", "read-write"),
            ("PGLOADBALANCEHOSTS", "random"),
            ("PGSSLNEGOTIATION", "direct"),
            ("PGSSLMODE", "require"),
        ];
        let c = cfg(Some("host=db"), &env).unwrap();
        assert_eq!(c.get_channel_binding(), ChannelBinding::Require);
        assert_eq!(c.get_target_session_attrs(), TargetSessionAttrs::ReadWrite);
        assert_eq!(c.get_load_balance_hosts(), LoadBalanceHosts::Random);
        assert_eq!(
            c.get_ssl_negotiation(),
            tokio_postgres::config::SslNegotiation::Direct
        );
        // The conninfo wins.
        let c = cfg(Some("host=db channel_binding=disable"), &env).unwrap();
        assert_eq!(c.get_channel_binding(), ChannelBinding::Disable);
        // A URL's password may hold `?`; its sslmode is still pgark's.
        let c = connect_config(Some("postgresql://u:s3cr?t@db/postgres?sslmode=require"), &[]).unwrap();
        assert_eq!(c.tls.mode, SslMode::Require);
        assert_eq!(c.pg.get_password(), Some(&b"s3cr?t"[..]));
        assert_eq!(c.pg.get_ssl_mode(), tokio_postgres::config::SslMode::Prefer);
    }

    #[test]
    fn bad_settings_are_named() {
        assert!(cfg(None, &[("PGPORT", "x")])
            .unwrap_err()
            .to_string()
            .contains("PGPORT"));
        assert!(cfg(None, &[("PGSSLMODE", "verify")])
            .unwrap_err()
            .to_string()
            .contains("PGSSLMODE: invalid sslmode value: \"verify\""));
        assert!(cfg(Some("host=db sslmode=on"), &[])
            .unwrap_err()
            .to_string()
            .contains("sslmode: invalid sslmode value: \"on\""));
        // verify-* without a CA to verify with (no HOME: no root.crt).
        let err = cfg(None, &[("PGSSLMODE", "verify-full")]).unwrap_err();
        assert!(matches!(err, PgClientError::NoRootCert { .. }), "{err:?}");
        assert!(err.to_string().contains("sslmode=verify-full"), "{err}");
        // A conninfo string that does not parse is refused as such.
        for bad in [
            "nonsense",
            "host=db port=x",
            "hostaddr=db",
            "postgresql://db/x?sslmode",
            "host=db sslcrl=/c.crl",
        ] {
            let err = cfg(Some(bad), &[]).unwrap_err();
            assert!(matches!(err, PgClientError::BadConnInfo(_)), "{bad}: {err:?}");
        }
    }
}
