//! Connecting host by host, as libpq does: tokio-postgres applies one TLS
//! mode to every host, while libpq never uses TLS over a Unix socket and
//! retries a host with and without TLS under `allow` and `prefer`.
//!
//! Per TCP host: `disable` plain; `allow` plain, then TLS if the server
//! refused; `prefer` TLS if the server offers it, then plain if that
//! connection fails; `require`, `verify-ca`, `verify-full` TLS only. The
//! first host that accepts wins; otherwise the last failure is returned.

use crate::tls::{MakeRustls, SslMode};
use crate::{describe, error_detail, ConnectConfig, PgClientError};
use std::net::IpAddr;
use tokio_postgres::config::{Host, SslMode as WireMode};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{Client, Config, NoTls, Socket};

/// Connects to the first host that accepts; the connection runs on a
/// spawned task.
pub(crate) async fn connect(config: &ConnectConfig) -> Result<Client, PgClientError> {
    let mode = config.tls.mode;
    // Built at the first TCP host: a Unix socket never needs the files.
    let mut tls: Option<MakeRustls> = None;
    let mut last = None;
    for (host, tcp) in single_hosts(&config.pg) {
        let target = describe(&host);
        let fail = |detail: String, source| PgClientError::Connect {
            target: target.clone(),
            mode,
            detail,
            source,
        };
        if !tcp || mode == SslMode::Disable {
            match attempt(&host, WireMode::Disable, NoTls).await {
                Ok(client) => return Ok(client),
                Err(e) => {
                    last = Some(fail(error_detail(&e), e));
                    continue;
                }
            }
        }
        let make = match &tls {
            Some(make) => make.fresh(),
            None => tls.insert(config.tls.connector()?).fresh(),
        };
        let result = match mode {
            SslMode::Disable => unreachable!("handled above"),
            SslMode::Allow => match attempt(&host, WireMode::Disable, NoTls).await {
                Ok(client) => Ok(client),
                // Refused by the server (pg_hba.conf): try TLS.
                Err(plain) if plain.as_db_error().is_some() => {
                    match attempt(&host, WireMode::Require, make).await {
                        Ok(client) => Ok(client),
                        Err(e) => Err(fail(
                            format!(
                                "without TLS: {}; then with TLS: {}",
                                error_detail(&plain),
                                error_detail(&e)
                            ),
                            e,
                        )),
                    }
                }
                Err(e) => Err(fail(error_detail(&e), e)),
            },
            SslMode::Prefer => match attempt(&host, WireMode::Prefer, make.clone()).await {
                Ok(client) => Ok(client),
                Err(over_tls) if make.started() => match attempt(&host, WireMode::Disable, NoTls).await {
                    Ok(client) => Ok(client),
                    Err(e) => Err(fail(
                        format!(
                            "with TLS: {}; then without TLS: {}",
                            error_detail(&over_tls),
                            error_detail(&e)
                        ),
                        e,
                    )),
                },
                Err(e) => Err(fail(error_detail(&e), e)),
            },
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                attempt(&host, WireMode::Require, make)
                    .await
                    .map_err(|e| fail(error_detail(&e), e))
            }
        };
        match result {
            Ok(client) => return Ok(client),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| PgClientError::BadConnInfo("no host to connect to".into())))
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

/// One config per host of `config` (tokio-postgres's pairing of host,
/// hostaddr and port), and whether it is reached over TCP. A host given
/// only by hostaddr is also named by it, for the certificate check.
fn single_hosts(config: &Config) -> Vec<(Config, bool)> {
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    let ports = config.get_ports();
    (0..hosts.len().max(addrs.len()))
        .map(|i| {
            let mut one = settings_without_hosts(config);
            let addr: Option<&IpAddr> = addrs.get(i);
            let tcp = match hosts.get(i) {
                Some(Host::Tcp(name)) => {
                    one.host(name);
                    true
                }
                Some(Host::Unix(path)) => {
                    one.host_path(path);
                    false
                }
                None => {
                    // hostaddr without host: tokio-postgres connects to the
                    // address; it also names the server.
                    if let Some(a) = addr {
                        one.host(a.to_string());
                    }
                    true
                }
            };
            if let Some(a) = addr {
                one.hostaddr(*a);
            }
            let port = ports.get(i).or_else(|| ports.first()).copied().unwrap_or(5432);
            one.port(port);
            (one, tcp)
        })
        .collect()
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
        .ssl_negotiation(config.get_ssl_negotiation());
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn each_host_keeps_every_other_setting() {
        let config =
            Config::from_str("host=/run/pg,db1 port=5433,5434 user=u password=p dbname=d application_name=a connect_timeout=7 channel_binding=require")
                .unwrap();
        let hosts = single_hosts(&config);
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].0.get_hosts(), &[Host::Unix("/run/pg".into())]);
        assert!(!hosts[0].1);
        assert_eq!(hosts[1].0.get_hosts(), &[Host::Tcp("db1".into())]);
        assert!(hosts[1].1);
        assert_eq!(hosts[1].0.get_ports(), &[5434]);
        for (h, _) in &hosts {
            assert_eq!(h.get_user(), Some("u"));
            assert_eq!(h.get_password(), Some(&b"p"[..]));
            assert_eq!(h.get_dbname(), Some("d"));
            assert_eq!(h.get_application_name(), Some("a"));
            assert_eq!(h.get_connect_timeout(), Some(&std::time::Duration::from_secs(7)));
            assert_eq!(
                h.get_channel_binding(),
                tokio_postgres::config::ChannelBinding::Require
            );
        }
        let only_addr = single_hosts(&Config::from_str("hostaddr=127.0.0.1 port=6000").unwrap());
        assert_eq!(only_addr.len(), 1);
        assert_eq!(only_addr[0].0.get_hosts(), &[Host::Tcp("127.0.0.1".into())]);
        assert_eq!(only_addr[0].0.get_ports(), &[6000]);
        assert!(only_addr[0].1);
    }
}
