//! The HTTP client and the limits shared by the GCS and Azure backends:
//! time limits on every request, retries of transient failures with
//! exponential backoff and jitter bounded by a total time. The GCS backend
//! sends each attempt of its JSON API requests through
//! [`HttpClient::send_once`], in its own retry loops (an attempt needs a
//! fresh access token, a chunk of a resumable upload a status query); the
//! Azure backend hands the same reqwest client and limits to the
//! `azure_storage_blob` pipeline.
//!
//! What is transient is decided here once: no response at all (connection
//! refused or reset, DNS failure, a time limit hit) and the statuses 408,
//! 429 and 5xx. Everything else is handed back to the backend, which knows
//! what a 404 or 412 means for its API.

use bytes::Bytes;
use futures::StreamExt;
use rand::Rng;
use std::fmt;
use std::time::{Duration, Instant};

/// Time limits of every request of the REST backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// Establishing a connection (TCP and TLS).
    pub connect: Duration,
    /// Until the response headers of an attempt arrived. For the requests
    /// of [`HttpClient::send_once`] (GCS) it counts from the end of the
    /// request's body (its start, for a request without one): a body
    /// being sent does not count against it, however long it takes, as
    /// long as it does not stall (a body of which nothing more is taken
    /// for this long fails the attempt too). Azure's transport counts from
    /// the start of each attempt, its body included.
    pub first_byte: Duration,
    /// Longest time a response body may stay silent before the read fails.
    pub idle: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(300),
            idle: Duration::from_secs(60),
        }
    }
}

/// How transient failures of one request are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOptions {
    /// Attempts per request (1 = no retry).
    pub attempts: u32,
    /// No new attempt starts later than this after the first one.
    pub total: Duration,
    /// Backoff before the second attempt; doubled for each further one (up
    /// to 16 s), with full jitter.
    pub base_backoff: Duration,
}

impl Default for RetryOptions {
    fn default() -> Self {
        RetryOptions {
            attempts: 4,
            total: Duration::from_secs(120),
            base_backoff: Duration::from_millis(250),
        }
    }
}

impl RetryOptions {
    /// The pause before attempt `attempt + 1` (`attempt` >= 1).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let ceiling = self
            .base_backoff
            .saturating_mul(1 << (attempt - 1).min(6))
            .min(Duration::from_secs(16));
        let millis = ceiling.as_millis() as u64;
        Duration::from_millis(rand::thread_rng().gen_range(millis / 2..=millis.max(1)))
    }

    /// The attempts of one request, starting now.
    pub(crate) fn start(&self) -> Attempts {
        Attempts {
            retry: *self,
            started: Instant::now(),
            number: 1,
        }
    }
}

/// The retry loop of one request, shared by the GCS JSON requests and the
/// Azure pipeline:
///
/// ```text
/// let mut attempts = retry.start();
/// loop {
///     let outcome = send().await;
///     if !attempts.again(verdict(&outcome)).await {
///         return outcome;
///     }
/// }
/// ```
#[derive(Debug)]
pub(crate) struct Attempts {
    retry: RetryOptions,
    started: Instant,
    number: u32,
}

impl Attempts {
    /// The attempt under way, from 1.
    #[cfg_attr(not(feature = "azure"), allow(dead_code))]
    pub(crate) fn number(&self) -> u32 {
        self.number
    }

    /// After an attempt: false if its outcome is final, the attempts are
    /// used up, or the pause before the next one would end past the total
    /// time; else waits that pause and returns true.
    pub(crate) async fn again(&mut self, verdict: Verdict) -> bool {
        let pause = match verdict {
            Verdict::Final => return false,
            Verdict::Retry { after } => after.unwrap_or_else(|| self.retry.backoff(self.number)),
        };
        if self.number >= self.retry.attempts || self.started.elapsed() + pause > self.retry.total {
            return false;
        }
        tokio::time::sleep(pause).await;
        self.number += 1;
        true
    }
}

/// What an attempt's outcome calls for (see [`Attempts::again`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A success, or a failure another attempt would not mend.
    Final,
    /// A transient failure: try again, after the server's `Retry-After`
    /// if it gave one, else after the backoff.
    Retry { after: Option<Duration> },
}

/// A `Retry-After` header's value in seconds, capped at a minute (an HTTP
/// date is not honoured: the backoff applies).
pub(crate) fn retry_after(value: Option<&str>) -> Option<Duration> {
    let secs: u64 = value?.trim().parse().ok()?;
    Some(Duration::from_secs(secs.min(60)))
}

/// Whether a status is worth another attempt.
pub(crate) fn is_transient_status(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// A request that got no (usable) response.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No response within the time limit.
    TimedOut { limit: Duration, what: &'static str },
    /// The request body stopped being taken for `limit`.
    Stalled { limit: Duration, sent: u64, len: u64 },
    /// Connection or protocol failure.
    Transport(reqwest::Error),
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::TimedOut { limit, what } => write!(f, "no {what} within {limit:?}"),
            SendError::Stalled { limit, sent, len } => write!(
                f,
                "no response within {limit:?}, the request body stalled after {sent} of {len} bytes"
            ),
            SendError::Transport(e) => f.write_str(&error_chain(e)),
        }
    }
}

impl std::error::Error for SendError {}

/// A reqwest client with the time limits and retry policy of one store.
#[derive(Debug, Clone)]
pub(crate) struct HttpClient {
    client: reqwest::Client,
    pub(crate) timeouts: HttpTimeouts,
    pub(crate) retry: RetryOptions,
}

impl HttpClient {
    pub(crate) fn new(timeouts: HttpTimeouts, retry: RetryOptions) -> Result<HttpClient, String> {
        // rustls needs a process-wide provider when it is built without
        // one; ring, as for the S3 backend. Fails harmlessly if another
        // part of the program installed one first.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // No reqwest read timeout: its timer also runs while a request
        // body is sent, so a large part would fail after `idle`; the idle
        // limit is kept on response bodies here instead.
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            // 308 is GCS's "resume incomplete", not a redirect to follow.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pgark/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot make an HTTP client: {}", error_chain(&e)))?;
        Ok(HttpClient {
            client,
            timeouts,
            retry,
        })
    }

    pub(crate) fn inner(&self) -> &reqwest::Client {
        &self.client
    }

    /// One attempt, within the time limits: with `body`, the request's
    /// body (its `Content-Length` set by the caller), whose sending is
    /// watched so that the first-byte limit starts only once the last of
    /// it was taken (see [`HttpTimeouts::first_byte`]).
    pub(crate) async fn send_once(
        &self,
        req: reqwest::RequestBuilder,
        body: Option<Vec<Bytes>>,
    ) -> Result<reqwest::Response, SendError> {
        let limit = self.timeouts.first_byte;
        let (req, watch) = match body {
            Some(parts) => {
                let (body, watch) = watched_body(parts);
                (req.body(body), Some(watch))
            }
            None => (req, None),
        };
        let send = req.send();
        tokio::pin!(send);
        if let Some((mut taken, len)) = watch {
            while *taken.borrow_and_update() < len {
                tokio::select! {
                    // The server may answer before it took the whole body.
                    result = &mut send => return self.outcome(result),
                    changed = tokio::time::timeout(limit, taken.changed()) => match changed {
                        Err(_) => {
                            return Err(SendError::Stalled {
                                limit,
                                sent: *taken.borrow(),
                                len,
                            })
                        }
                        // The body is gone: sent, or dropped with the request.
                        Ok(Err(_)) => break,
                        Ok(Ok(())) => {}
                    },
                }
            }
        }
        match tokio::time::timeout(limit, send).await {
            Ok(result) => self.outcome(result),
            Err(_) => Err(SendError::TimedOut {
                limit,
                what: "response",
            }),
        }
    }

    fn outcome(&self, result: reqwest::Result<reqwest::Response>) -> Result<reqwest::Response, SendError> {
        match result {
            Ok(resp) => Ok(resp),
            Err(e) if e.is_timeout() => Err(SendError::TimedOut {
                limit: self.timeouts.connect.min(self.timeouts.first_byte),
                what: "connection or response",
            }),
            Err(e) => Err(SendError::Transport(e)),
        }
    }
}

/// A request body of `parts`, sent without copying them, in pieces of at
/// most 64 KiB, and a receiver of how many of its `len` bytes the client
/// took so far.
fn watched_body(parts: Vec<Bytes>) -> (reqwest::Body, (tokio::sync::watch::Receiver<u64>, u64)) {
    const STEP: usize = 64 << 10;
    let len = parts.iter().map(|p| p.len() as u64).sum();
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    let pieces = parts.into_iter().flat_map(|p| {
        (0..p.len())
            .step_by(STEP)
            .map(move |at| p.slice(at..(at + STEP).min(p.len())))
    });
    let mut taken = 0u64;
    let stream = futures::stream::iter(pieces).map(move |piece| {
        taken += piece.len() as u64;
        tx.send_replace(taken);
        Ok::<Bytes, std::io::Error>(piece)
    });
    (reqwest::Body::wrap_stream(stream), (rx, len))
}

/// The body of a response that is not a success, for error messages (at
/// most 2 KiB, never failing).
pub(crate) async fn error_body(resp: reqwest::Response) -> String {
    let text = match tokio::time::timeout(Duration::from_secs(10), resp.bytes()).await {
        Ok(Ok(b)) => String::from_utf8_lossy(&b[..b.len().min(2048)]).into_owned(),
        _ => String::new(),
    };
    text.trim().to_owned()
}

/// A small response body (JSON, XML) read whole within `idle`.
pub(crate) async fn read_body(resp: reqwest::Response, idle: Duration) -> Result<Bytes, String> {
    match tokio::time::timeout(idle, resp.bytes()).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => Err(error_chain(&e)),
        Err(_) => Err(format!("the response body stalled for {idle:?}")),
    }
}

/// `err` and its causes, `: `-separated, each said once.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

/// Percent-encodes everything but RFC 3986's unreserved characters (for
/// one path segment or query value).
pub(crate) fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Like [`encode_component`] but keeping `/`, for object paths.
#[cfg_attr(not(feature = "azure"), allow(dead_code))]
pub(crate) fn encode_path(s: &str) -> String {
    s.split('/').map(encode_component).collect::<Vec<_>>().join("/")
}

/// A list of byte chunks held for an upload, cut at any byte offset
/// without copying.
#[cfg_attr(not(feature = "gcs"), allow(dead_code))]
#[derive(Debug, Default)]
pub(crate) struct Chunks {
    parts: std::collections::VecDeque<Bytes>,
    len: usize,
}

#[cfg_attr(not(feature = "gcs"), allow(dead_code))]
impl Chunks {
    pub(crate) fn push(&mut self, data: Bytes) {
        if !data.is_empty() {
            self.len += data.len();
            self.parts.push_back(data);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Removes and returns the first `n` bytes (`n <= len`).
    pub(crate) fn take(&mut self, n: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut left = n.min(self.len);
        while left > 0 {
            let Some(mut front) = self.parts.pop_front() else {
                break;
            };
            if front.len() > left {
                let head = front.split_to(left);
                self.parts.push_front(front);
                out.push(head);
                left = 0;
            } else {
                left -= front.len();
                out.push(front);
            }
        }
        self.len -= n.min(self.len) - left;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_cut_without_losing_bytes() {
        let mut c = Chunks::default();
        c.push(Bytes::from_static(b"abc"));
        c.push(Bytes::new());
        c.push(Bytes::from_static(b"defgh"));
        assert_eq!(c.len(), 8);
        let joined = |v: Vec<Bytes>| v.iter().flat_map(|b| b.iter().copied()).collect::<Vec<u8>>();
        assert_eq!(joined(c.take(4)), b"abcd");
        assert_eq!(c.len(), 4);
        assert_eq!(joined(c.take(0)), b"");
        assert_eq!(joined(c.take(4)), b"efgh");
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn encoding() {
        assert_eq!(encode_component("a/b c+d~e"), "a%2Fb%20c%2Bd~e");
        assert_eq!(encode_path("a/b c/ü"), "a/b%20c/%C3%BC");
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        let r = RetryOptions::default();
        for attempt in 1..20 {
            let b = r.backoff(attempt);
            assert!(b <= Duration::from_secs(16), "{attempt}: {b:?}");
        }
        assert!(r.backoff(1) <= Duration::from_millis(250));
        for s in [408, 429, 500, 503] {
            assert!(is_transient_status(s));
        }
        for s in [400, 401, 403, 404, 409, 412] {
            assert!(!is_transient_status(s));
        }
    }
}
