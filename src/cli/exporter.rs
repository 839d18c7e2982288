use crate::config::Settings;
use clap::Args;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::RwLock;

/// Serve `pgark status` as Prometheus metrics over HTTP (GET /metrics).
///
/// The status is read once at start and then every --interval, one refresh at a time (a
/// refresh that takes longer than the interval delays the next; two never run at once);
/// scrapes get the last result, never wait for the repository. A refresh that fails keeps the
/// previous figures, with pgark_wal_archive_healthy 0 and pgark_exporter_refresh_success 0; a
/// server that does not answer makes the status unhealthy. Runs until stopped (SIGINT
/// or SIGTERM). Exit 2 when the address cannot be listened on, 11 when there is no repository.
#[derive(Debug, Clone, Args)]
pub struct ExporterArgs {
    /// Address to listen on: 127.0.0.1:9187, 0.0.0.0:9187, [::]:9187.
    #[arg(long, env = "PGARK_EXPORTER_LISTEN", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// Time between refreshes: 30s, 5m [default: 60s].
    #[arg(long, env = "PGARK_EXPORTER_INTERVAL", value_name = "DURATION")]
    pub interval: Option<String>,
    /// As in `pgark status`.
    #[command(flatten)]
    pub status: super::status::StatusSource,
}

/// Longest one refresh may take before it counts as failed.
const REFRESH_LIMIT: Duration = Duration::from_secs(300);

struct Metrics {
    /// The last successful refresh's status.
    status: Option<pgark_engine::Status>,
    success: bool,
    last_success: Option<chrono::DateTime<chrono::Utc>>,
    last_error: Option<String>,
    refreshes: u64,
}

pub async fn run(args: ExporterArgs, settings: &Settings) -> anyhow::Result<()> {
    let interval = match &args.interval {
        Some(text) => {
            crate::config::parse_timeout(text).map_err(|message| crate::config::ConfigError::Invalid {
                name: "interval",
                message,
            })?
        }
        None => Duration::from_secs(60),
    };
    if interval.is_zero() {
        return Err(crate::config::ConfigError::Invalid {
            name: "interval",
            message: "must be more than 0".into(),
        }
        .into());
    }
    let max_age = args.status.max_archive_age(settings)?;
    let (store, keys) = crate::repo::open_existing_with_keys(settings).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.map_err(|e| {
        crate::config::ConfigError::Invalid {
            name: "listen",
            message: format!("cannot listen on {}: {e}", args.listen),
        }
    })?;
    let metrics = Arc::new(RwLock::new(Metrics {
        status: None,
        success: false,
        last_success: None,
        last_error: None,
        refreshes: 0,
    }));

    // One task refreshes, in a loop: never two refreshes at once.
    let refresher = {
        let metrics = metrics.clone();
        let source = args.status.clone();
        let settings = settings.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let result = tokio::time::timeout(REFRESH_LIMIT, async {
                    // A server that does not answer is a problem of the
                    // status, not a failed refresh: the repository's
                    // figures still count.
                    let (archiver, unreachable) = match source.ask_server(&settings).await {
                        Ok(a) => (a, None),
                        Err(e) => (None, Some(format!("the server was not reachable: {e:#}"))),
                    };
                    let mut status =
                        pgark_engine::status(&*store, &keys, archiver, max_age, chrono::Utc::now()).await?;
                    if let Some(problem) = unreachable {
                        status.problems.push(problem);
                        status.healthy = false;
                    }
                    anyhow::Ok(status)
                })
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("the refresh took longer than {REFRESH_LIMIT:?}")));
                let mut m = metrics.write().await;
                m.refreshes += 1;
                match result {
                    Ok(status) => {
                        m.status = Some(status);
                        m.success = true;
                        m.last_success = Some(chrono::Utc::now());
                        m.last_error = None;
                    }
                    Err(e) => {
                        tracing::warn!("pgark exporter: refresh failed: {e:#}");
                        m.success = false;
                        m.last_error = Some(format!("{e:#}"));
                    }
                }
            }
        })
    };
    eprintln!(
        "pgark exporter: serving http://{}/metrics",
        listener.local_addr()?
    );

    let serve = async {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("pgark exporter: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(req, metrics.clone()));
                // One request per connection, so that the bound below is
                // one scrape's.
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .keep_alive(false)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                // A scrape that stalls is dropped, not waited on.
                let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
            });
        }
    };
    let mut refresher = refresher;
    tokio::select! {
        () = serve => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate() => {}
        // The refresher only ends by a panic: serving frozen figures
        // would hide it.
        ended = &mut refresher => {
            return Err(anyhow::anyhow!("the status refresh stopped: {ended:?}"));
        }
    }
    refresher.abort();
    Ok(())
}

async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    metrics: Arc<RwLock<Metrics>>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            content_type.parse().expect("a valid header"),
        );
        Ok(r)
    };
    if req.method() != hyper::Method::GET && req.method() != hyper::Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET /metrics\n".into(),
        );
    }
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "see /metrics\n".into());
    }
    let m = metrics.read().await;
    // After a failed refresh the last figures stand, but not as healthy.
    let mut body = match &m.status {
        Some(status) if m.success => super::status::to_prometheus(status),
        Some(status) => {
            let mut stale = status.clone();
            stale.healthy = false;
            super::status::to_prometheus(&stale)
        }
        None => String::new(),
    };
    let mut gauge = |name: &str, help: &str, value: f64| {
        body += &format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n");
    };
    gauge(
        "pgark_exporter_refresh_success",
        "1 when the last refresh of the status succeeded, else 0 (the figures above are the last good ones).",
        if m.success { 1.0 } else { 0.0 },
    );
    if let Some(t) = m.last_success {
        gauge(
            "pgark_exporter_last_success_timestamp_seconds",
            "When the status was last read successfully, as a Unix time.",
            t.timestamp_micros() as f64 / 1e6,
        );
    }
    body += &format!(
        "# HELP pgark_exporter_refreshes_total Refreshes attempted since the exporter started.\n\
         # TYPE pgark_exporter_refreshes_total counter\npgark_exporter_refreshes_total {}\n",
        m.refreshes
    );
    reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", body)
}
