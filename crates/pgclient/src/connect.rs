//! Connecting host by host, as libpq does: tokio-postgres applies one TLS
//! mode to every host, while libpq never uses TLS over a Unix socket and
//! retries a host with and without TLS under `allow` and `prefer`.
//!
//! Per TCP host (a `host` name or a `hostaddr`): `disable` plain; `allow`
//! plain, then TLS if the server refused; `prefer` TLS if the server offers
//! it, then plain if the TLS handshake (or setting it up) failed or the
//! server refused the connection over TLS; `require`, `verify-ca`,
//! `verify-full` TLS only. Each host gets `connect_timeout` for all of it
//! (TCP, TLS, authentication, both tries), as libpq. The first host that
//! accepts wins; otherwise every host's failure is reported.

use crate::tls::{HandshakeError, MakeRustls, SslMode, TlsOptions};
use crate::{describe, error_detail, ConnectConfig, PgClientError};
use std::net::IpAddr;
use tokio_postgres::config::{Host, LoadBalanceHosts, SslMode as WireMode};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, NoTls, Socket};

/// Connects to the first host that accepts; the connection runs on a
/// spawned task.
pub(crate) async fn connect(config: &ConnectConfig) -> Result<Client, PgClientError> {
    let mode = config.tls.mode;
    let mut hosts = single_hosts(&config.pg).map_err(PgClientError::BadConnInfo)?;
    if config.pg.get_load_balance_hosts() == LoadBalanceHosts::Random {
        use rand::seq::SliceRandom;
        hosts.shuffle(&mut rand::thread_rng());
    }
    let timeout = config.pg.get_connect_timeout().copied();
    let mut tls = LazyTls::new(&config.tls);
    let mut failures = Vec::new();
    for host in hosts {
        let one = connect_host(&host, mode, &mut tls);
        let result = match timeout {
            Some(t) => tokio::time::timeout(t, one).await.unwrap_or_else(|_| {
                Err(Failure::Host(format!(
                    "timeout expired after {}s (connect_timeout)",
                    t.as_secs_f64()
                )))
            }),
            None => one.await,
        };
        match result {
            Ok(client) => return Ok(client),
            Err(Failure::Host(detail)) => failures.push((describe(&host.config), detail)),
            // The same for every host: the TLS files cannot be used.
            Err(Failure::Setup(e)) => return Err(e),
        }
    }
    Err(PgClientError::Connect { mode, failures })
}

enum Failure {
    /// This host failed, for this reason.
    Host(String),
    /// TLS cannot be set up under a mode that requires it.
    Setup(PgClientError),
}

/// The TLS connector, built when TLS is first about to be used (a Unix
/// socket, or a plain connection under `allow`, never needs the files),
/// then kept.
struct LazyTls<'a> {
    options: &'a TlsOptions,
    built: Option<Result<MakeRustls, String>>,
}

impl<'a> LazyTls<'a> {
    fn new(options: &'a TlsOptions) -> LazyTls<'a> {
        LazyTls { options, built: None }
    }

    /// A connector for one attempt, or why TLS cannot be set up (the
    /// error under a mode that requires TLS).
    fn get(&mut self) -> Result<MakeRustls, Failure> {
        if self.built.is_none() {
            match self.options.connector() {
                Ok(make) => self.built = Some(Ok(make)),
                Err(e)
                    if matches!(
                        self.options.mode,
                        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
                    ) =>
                {
                    return Err(Failure::Setup(e))
                }
                Err(e) => self.built = Some(Err(e.to_string())),
            }
        }
        match self.built.as_ref().expect("set above") {
            Ok(make) => Ok(make.fresh()),
            Err(e) => Err(Failure::Host(format!("TLS could not be set up: {e}"))),
        }
    }
}

async fn connect_host(host: &OneHost, mode: SslMode, tls: &mut LazyTls<'_>) -> Result<Client, Failure> {
    let config = &host.config;
    if !host.tcp || mode == SslMode::Disable {
        return attempt(config, WireMode::Disable, NoTls)
            .await
            .map_err(|e| Failure::Host(error_detail(&e)));
    }
    match mode {
        SslMode::Disable => unreachable!("handled above"),
        SslMode::Allow => {
            let plain = match attempt(config, WireMode::Disable, NoTls).await {
                Ok(client) => return Ok(client),
                // Refused by the server (pg_hba.conf): try TLS.
                Err(e) if e.as_db_error().is_some() => e,
                Err(e) => return Err(Failure::Host(error_detail(&e))),
            };
            let then = match tls.get() {
                Ok(make) => match attempt(config, WireMode::Require, make).await {
                    Ok(client) => return Ok(client),
                    Err(e) => format!("with TLS: {}", error_detail(&e)),
                },
                Err(Failure::Host(setup)) => setup,
                Err(setup) => return Err(setup),
            };
            Err(Failure::Host(format!(
                "without TLS: {}; then {then}",
                error_detail(&plain)
            )))
        }
        SslMode::Prefer => {
            let over_tls = match tls.get() {
                Ok(make) => match attempt(config, WireMode::Prefer, make.clone()).await {
                    Ok(client) => return Ok(client),
                    Err(e) if retry_without_tls(&e, &make) => format!("with TLS: {}", error_detail(&e)),
                    Err(e) => return Err(Failure::Host(error_detail(&e))),
                },
                Err(Failure::Host(setup)) => setup,
                Err(setup) => return Err(setup),
            };
            attempt(config, WireMode::Disable, NoTls)
                .await
                .map_err(|e| Failure::Host(format!("{over_tls}; then without TLS: {}", error_detail(&e))))
        }
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            let make = tls.get()?;
            attempt(config, WireMode::Require, make)
                .await
                .map_err(|e| Failure::Host(error_detail(&e)))
        }
    }
}

/// libpq's `prefer` tries again without TLS when the TLS handshake (or
/// setting it up for this host) failed, or when the server sent an error
/// over TLS (pg_hba.conf, authentication); not after anything else, such
/// as a server that does not allow writes (target_session_attrs) or a
/// connection that broke.
fn retry_without_tls(e: &tokio_postgres::Error, make: &MakeRustls) -> bool {
    let handshake =
        std::error::Error::source(e).is_some_and(|s| s.downcast_ref::<HandshakeError>().is_some());
    handshake || (make.started() && e.as_db_error().is_some())
}

async fn attempt<T>(host: &Config, mode: WireMode, tls: T) -> Result<Client, tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket> + Send + 'static,
    T::TlsConnect: Send,
    T::Stream: Send + 'static,
    <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
{
    let mut config = host.clone();
    config.ssl_mode(mode);
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("PostgreSQL connection closed: {e}");
        }
    });
    Ok(client)
}

/// One host of a config.
pub(crate) struct OneHost {
    /// Every setting, with this one host (and its hostaddr and port).
    pub config: Config,
    /// Reached over TCP: by hostaddr, or by a host name (not a Unix
    /// socket directory).
    pub tcp: bool,
    /// The host name the server's certificate is checked against: `host`
    /// if it is one, never hostaddr (libpq).
    pub name: Option<String>,
}

/// One config per host of `config`, paired with hostaddr and port as libpq
/// does (connectOptions2): host and hostaddr lists of the same length (or
/// one of them empty), one port for all or one per host. A host given
/// only by hostaddr is also named by it for tokio-postgres, which needs a
/// name to start TLS; [`OneHost::name`] stays `None`.
pub(crate) fn single_hosts(config: &Config) -> Result<Vec<OneHost>, String> {
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    let ports = config.get_ports();
    if !hosts.is_empty() && !addrs.is_empty() && hosts.len() != addrs.len() {
        return Err(format!(
            "could not match {} host names to {} hostaddr values",
            hosts.len(),
            addrs.len()
        ));
    }
    let n = hosts.len().max(addrs.len());
    if n == 0 {
        return Err("no host to connect to".into());
    }
    if ports.len() > 1 && ports.len() != n {
        return Err(format!(
            "could not match {} port numbers to {n} hosts",
            ports.len()
        ));
    }
    Ok((0..n)
        .map(|i| {
            let mut one = settings_without_hosts(config);
            let addr: Option<&IpAddr> = addrs.get(i);
            let name = match hosts.get(i) {
                Some(Host::Tcp(name)) => Some(name.clone()),
                _ => None,
            };
            match (hosts.get(i), addr) {
                (Some(Host::Tcp(name)), _) => {
                    one.host(name);
                }
                (Some(Host::Unix(path)), None) => {
                    one.host_path(path);
                }
                (_, Some(a)) => {
                    one.host(a.to_string());
                }
                (None, None) => unreachable!("n is the longer list's length"),
            }
            if let Some(a) = addr {
                one.hostaddr(*a);
            }
            let port = ports.get(i).or_else(|| ports.first()).copied().unwrap_or(5432);
            one.port(port);
            OneHost {
                config: one,
                tcp: addr.is_some() || name.is_some(),
                name,
            }
        })
        .collect())
}

/// Every setting of `config` but its hosts, addresses and ports (Config
/// cannot drop hosts).
fn settings_without_hosts(config: &Config) -> Config {
    let mut c = Config::new();
    if let Some(v) = config.get_user() {
        c.user(v);
    }
    if let Some(v) = config.get_password() {
        c.password(v);
    }
    if let Some(v) = config.get_dbname() {
        c.dbname(v);
    }
    if let Some(v) = config.get_options() {
        c.options(v);
    }
    if let Some(v) = config.get_application_name() {
        c.application_name(v);
    }
    if let Some(v) = config.get_connect_timeout() {
        c.connect_timeout(*v);
    }
    if let Some(v) = config.get_tcp_user_timeout() {
        c.tcp_user_timeout(*v);
    }
    c.keepalives(config.get_keepalives())
        .keepalives_idle(config.get_keepalives_idle());
    if let Some(v) = config.get_keepalives_interval() {
        c.keepalives_interval(v);
    }
    if let Some(v) = config.get_keepalives_retries() {
        c.keepalives_retries(v);
    }
    c.target_session_attrs(config.get_target_session_attrs())
        .channel_binding(config.get_channel_binding())
        .ssl_negotiation(config.get_ssl_negotiation())
        .load_balance_hosts(config.get_load_balance_hosts());
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use std::time::{Duration, Instant};

    #[test]
    fn each_host_keeps_every_other_setting() {
        let config = Config::from_str(
            "host=/run/pg,db1 port=5433,5434 user=u password=p dbname=d application_name=a connect_timeout=7 \
             channel_binding=require load_balance_hosts=random target_session_attrs=read-write",
        )
        .unwrap();
        let hosts = single_hosts(&config).unwrap();
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].config.get_hosts(), &[Host::Unix("/run/pg".into())]);
        assert!(!hosts[0].tcp);
        assert_eq!(hosts[1].config.get_hosts(), &[Host::Tcp("db1".into())]);
        assert!(hosts[1].tcp);
        assert_eq!(hosts[1].name.as_deref(), Some("db1"));
        assert_eq!(hosts[1].config.get_ports(), &[5434]);
        for h in &hosts {
            let h = &h.config;
            assert_eq!(h.get_user(), Some("u"));
            assert_eq!(h.get_password(), Some(&b"p"[..]));
            assert_eq!(h.get_dbname(), Some("d"));
            assert_eq!(h.get_application_name(), Some("a"));
            assert_eq!(h.get_connect_timeout(), Some(&Duration::from_secs(7)));
            assert_eq!(
                h.get_channel_binding(),
                tokio_postgres::config::ChannelBinding::Require
            );
            assert_eq!(h.get_load_balance_hosts(), LoadBalanceHosts::Random);
            assert_eq!(
                h.get_target_session_attrs(),
                tokio_postgres::config::TargetSessionAttrs::ReadWrite
            );
        }
        // hostaddr makes a host TCP, whatever host says; only host names it.
        let config = Config::from_str("host=/run/pg,db hostaddr=127.0.0.1,::1").unwrap();
        let hosts = single_hosts(&config).unwrap();
        assert!(hosts[0].tcp && hosts[1].tcp);
        assert_eq!(hosts[0].name, None);
        assert_eq!(hosts[0].config.get_hosts(), &[Host::Tcp("127.0.0.1".into())]);
        assert_eq!(hosts[1].name.as_deref(), Some("db"));
        assert_eq!(
            hosts[1].config.get_hostaddrs(),
            &["::1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn mismatched_lists_are_refused_like_libpq() {
        for (conninfo, want) in [
            (
                "host=a,b hostaddr=127.0.0.1",
                "could not match 2 host names to 1 hostaddr values",
            ),
            ("host=a,b,c port=1,2", "could not match 2 port numbers to 3 hosts"),
            (
                "hostaddr=127.0.0.1 port=1,2",
                "could not match 2 port numbers to 1 hosts",
            ),
        ] {
            let err = single_hosts(&Config::from_str(conninfo).unwrap()).err().unwrap();
            assert_eq!(err, want, "{conninfo}");
        }
        assert_eq!(
            single_hosts(&Config::from_str("host=a,b port=1").unwrap())
                .unwrap()
                .len(),
            2
        );
    }

    /// A TCP port that accepts connections (the kernel completes them)
    /// and never answers.
    fn silent_listener() -> std::net::TcpListener {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap()
    }

    #[tokio::test]
    async fn a_silent_server_times_out_host_by_host_and_every_host_is_reported() {
        let (a, b) = (silent_listener(), silent_listener());
        for mode in ["disable", "prefer", "require"] {
            let opts = crate::ConnectOptions {
                conninfo: Some(format!(
                    "host=127.0.0.1,localhost port={},{} user=u dbname=d connect_timeout=1 sslmode={mode}",
                    a.local_addr().unwrap().port(),
                    b.local_addr().unwrap().port()
                )),
                connect_timeout: None,
            };
            let config = crate::config_from(&opts, |_| None).unwrap();
            let started = Instant::now();
            let err = tokio::time::timeout(Duration::from_secs(20), connect(&config))
                .await
                .expect("connect returns within the hosts' connect_timeout")
                .err()
                .unwrap();
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{mode}: {:?}",
                started.elapsed()
            );
            let msg = err.to_string();
            for port in [a.local_addr().unwrap().port(), b.local_addr().unwrap().port()] {
                assert!(
                    msg.contains(&format!("port {port} as user u: timeout expired after 1s")),
                    "{mode}: {msg}"
                );
            }
            assert!(msg.starts_with(&format!("cannot connect to PostgreSQL at any of its 2 hosts (sslmode={mode}):\n  at 127.0.0.1 port")), "{msg}");
        }
    }
}
