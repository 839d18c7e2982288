//! An HTTP/1.1 proxy on 127.0.0.1 in front of a local test server, whose
//! handler sees every request and decides what the client gets: the
//! server's answer, an answer of its own, an answer cut off after some of
//! its body, or a connection closed without an answer. For testing how the
//! REST backends ride out what real services and networks do to them (a
//! download cut mid-stream, a request that never arrived, an answer lost
//! after the server acted on it), which the local servers never do.
//!
//! Plain HTTP, one request per connection (every answer says `Connection:
//! close`); the `Host` header is passed on unchanged, so a server that
//! builds URLs from it (fake-gcs-server's resumable upload sessions) points
//! them at the proxy.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A request the proxy received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequest {
    /// 1 for the first request the proxy received, and so on.
    pub number: usize,
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ProxyRequest {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// An answer: the server's, or one the handler made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl ProxyResponse {
    pub fn new(status: u16) -> ProxyResponse {
        ProxyResponse {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> ProxyResponse {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// What the client gets.
#[derive(Debug)]
pub enum Reply {
    Send(ProxyResponse),
    /// The answer's head (with its full `Content-Length`) and the first
    /// `after` bytes of its body, then the connection is closed.
    Cut {
        response: ProxyResponse,
        after: usize,
    },
    /// The connection is closed without an answer.
    Close,
}

/// The server behind the proxy.
#[derive(Debug, Clone, Copy)]
pub struct Upstream {
    port: u16,
}

impl Upstream {
    /// Sends `req` to the server and returns its answer.
    pub fn forward(&self, req: &ProxyRequest) -> io::Result<ProxyResponse> {
        let mut conn = TcpStream::connect(("127.0.0.1", self.port))?;
        conn.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut head = format!("{} {} HTTP/1.1\r\n", req.method, req.target);
        for (name, value) in &req.headers {
            let lower = name.to_ascii_lowercase();
            if !matches!(
                lower.as_str(),
                "connection" | "content-length" | "transfer-encoding" | "keep-alive"
            ) {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            req.body.len()
        ));
        conn.write_all(head.as_bytes())?;
        conn.write_all(&req.body)?;
        let mut reader = BufReader::new(conn);
        let (status_line, headers) = read_head(&mut reader)?;
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
        let body = read_body(&mut reader, &headers, true)?;
        Ok(ProxyResponse {
            status,
            headers,
            body,
        })
    }
}

type Handler = dyn Fn(&ProxyRequest, &Upstream) -> Reply + Send + Sync;

/// The proxy; stops when dropped.
pub struct HttpProxy {
    port: u16,
    requests: Arc<Mutex<Vec<ProxyRequest>>>,
    stop: Arc<AtomicBool>,
    upload_rate: Arc<AtomicU64>,
}

impl HttpProxy {
    /// A proxy on a free port of 127.0.0.1 in front of the server on
    /// `upstream_port`, answering each request as `handler` says.
    pub fn start<F>(upstream_port: u16, handler: F) -> io::Result<HttpProxy>
    where
        F: Fn(&ProxyRequest, &Upstream) -> Reply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let upstream = Upstream { port: upstream_port };
        let count = Arc::new(AtomicUsize::new(0));
        let upload_rate = Arc::new(AtomicU64::new(0));
        std::thread::spawn({
            let (requests, stop, rate) = (requests.clone(), stop.clone(), upload_rate.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let (requests, handler, count) =
                                (requests.clone(), handler.clone(), count.clone());
                            let rate = rate.load(Ordering::Relaxed);
                            std::thread::spawn(move || {
                                let _ = serve(conn, &upstream, &*handler, &requests, &count, rate);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            }
        });
        Ok(HttpProxy {
            port,
            requests,
            stop,
            upload_rate,
        })
    }

    /// From now on, request bodies (of a `Content-Length`) are taken at
    /// most `bytes_per_second` fast (0: as fast as they come): a slow
    /// network under an upload.
    pub fn throttle_uploads(&self, bytes_per_second: u64) {
        self.upload_rate.store(bytes_per_second, Ordering::Relaxed);
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests received so far, in order, with their bodies.
    pub fn requests(&self) -> Vec<ProxyRequest> {
        let mut all = self.requests.lock().unwrap_or_else(|e| e.into_inner()).clone();
        all.sort_by_key(|r| r.number);
        all
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Answers the one request of `conn`.
fn serve(
    conn: TcpStream,
    upstream: &Upstream,
    handler: &Handler,
    requests: &Mutex<Vec<ProxyRequest>>,
    count: &AtomicUsize,
    upload_rate: u64,
) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let (request_line, headers) = read_head(&mut reader)?;
    let mut parts = request_line.split_whitespace();
    let (method, target) = match (parts.next(), parts.next()) {
        (Some(m), Some(t)) => (m.to_owned(), t.to_owned()),
        _ => return Err(io::Error::other(format!("bad request line {request_line:?}"))),
    };
    let body = match find_header(&headers, "content-length") {
        Some(len) if upload_rate > 0 => read_slowly(&mut reader, len, upload_rate)?,
        _ => read_body(&mut reader, &headers, false)?,
    };
    let req = ProxyRequest {
        number: count.fetch_add(1, Ordering::SeqCst) + 1,
        method,
        target,
        headers,
        body,
    };
    requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(req.clone());
    let mut conn = conn;
    match handler(&req, upstream) {
        Reply::Send(response) => write_response(&mut conn, &response, None)?,
        Reply::Cut { response, after } => write_response(&mut conn, &response, Some(after))?,
        Reply::Close => {}
    }
    let _ = conn.shutdown(Shutdown::Both);
    Ok(())
}

fn write_response(conn: &mut TcpStream, response: &ProxyResponse, cut: Option<usize>) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {} Proxied\r\n", response.status);
    let chunked = response
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    for (name, value) in &response.headers {
        let lower = name.to_ascii_lowercase();
        if lower != "connection" && lower != "content-length" {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    if !chunked {
        head.push_str(&format!("Content-Length: {}\r\n", response.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    conn.write_all(head.as_bytes())?;
    let body = match cut {
        Some(n) => &response.body[..n.min(response.body.len())],
        None => &response.body[..],
    };
    conn.write_all(body)?;
    conn.flush()
}

/// `len` bytes, taken in 16 KiB steps at `rate` bytes a second.
fn read_slowly(reader: &mut impl BufRead, len: &str, rate: u64) -> io::Result<Vec<u8>> {
    let len: usize = len.parse().map_err(|_| io::Error::other("bad Content-Length"))?;
    let started = std::time::Instant::now();
    let mut body = vec![0; len];
    let mut at = 0;
    while at < len {
        let end = (at + (16 << 10)).min(len);
        reader.read_exact(&mut body[at..end])?;
        at = end;
        let due = Duration::from_secs_f64(at as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    Ok(body)
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The first line and the headers of a request or response.
fn read_head(reader: &mut impl BufRead) -> io::Result<(String, Vec<(String, String)>)> {
    let mut first = String::new();
    if reader.read_line(&mut first)? == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "no request"));
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "headers cut short"));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    Ok((first.trim_end().to_owned(), headers))
}

/// A body of `Content-Length` bytes, a chunked one (decoded for requests,
/// kept as sent for responses), or, for a response without either,
/// everything up to the end of the connection.
fn read_body(reader: &mut impl BufRead, headers: &[(String, String)], response: bool) -> io::Result<Vec<u8>> {
    if let Some(len) = find_header(headers, "content-length") {
        let len: usize = len.parse().map_err(|_| io::Error::other("bad Content-Length"))?;
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        return Ok(body);
    }
    let chunked =
        find_header(headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let mut body = Vec::new();
    if chunked && !response {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| io::Error::other("bad chunk size"))?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            chunk.truncate(size);
            body.extend_from_slice(&chunk);
            if size == 0 {
                // Trailers end with an empty line; none are expected.
                return Ok(body);
            }
        }
    }
    if response {
        reader.read_to_end(&mut body)?;
    }
    Ok(body)
}
