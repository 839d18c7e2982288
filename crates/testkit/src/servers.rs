//! Object-store servers for tests, run on 127.0.0.1 and stopped when
//! dropped: [`MotoServer`], moto's S3 server; [`S3sFsServer`], an S3
//! server that checks request signatures; [`FakeGcsServer`],
//! fake-gcs-server for Google Cloud Storage; [`Azurite`], Microsoft's
//! Azure Storage emulator.
//!
//! `.ci/install-deps.sh` installs them under `/opt/pgark-test` (moto and
//! fake-gcs-server into Python virtual environments, s3s-fs with cargo,
//! Azurite with npm). A
//! test that cannot start its server fails, unless the server's skip
//! variable is set to 1 (`PGARK_TEST_SKIP_S3`, `PGARK_TEST_SKIP_GCS`,
//! `PGARK_TEST_SKIP_AZURE`), in which case it prints why and skips
//! ([`moto_or_skip`], [`fake_gcs_or_skip`], [`azurite_or_skip`]).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where `.ci/install-deps.sh` installs moto's server.
pub const MOTO_SERVER_DEFAULT: &str = "/opt/pgark-test/moto/bin/moto_server";

/// Set to 1 to skip the S3 tests where moto cannot be started.
pub const SKIP_S3_VAR: &str = "PGARK_TEST_SKIP_S3";

/// Credentials for requests to moto (it accepts any).
pub const MOTO_ACCESS_KEY_ID: &str = "pgark-test-key";
pub const MOTO_SECRET_ACCESS_KEY: &str = "pgark-test-secret";
/// The region the tests' buckets are in.
pub const MOTO_REGION: &str = "us-east-1";

/// How long moto may take to start answering (it imports a lot).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A running moto S3 server on 127.0.0.1, killed when dropped.
pub struct MotoServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for MotoServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MotoServer")
            .field("port", &self.port)
            .field("pid", &self.child.id())
            .finish()
    }
}

/// The `moto_server` program: `$PGARK_MOTO_SERVER`, the one
/// `.ci/install-deps.sh` installs, or one on `PATH`.
pub fn find_moto_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PGARK_MOTO_SERVER") {
        return Some(PathBuf::from(p));
    }
    let default = Path::new(MOTO_SERVER_DEFAULT);
    if default.is_file() {
        return Some(default.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("moto_server"))
            .find(|p| p.is_file())
    })
}

impl MotoServer {
    /// Starts moto's server on a free port and waits until it answers.
    ///
    /// When the Python next to `moto_server` is known, the server is started
    /// through it with a long thread switch interval: moto checks
    /// `If-None-Match: *` and then stores the object in two steps, and
    /// without this a thread switch between them could let two racing
    /// create-only puts both succeed, which AWS S3 never allows.
    pub fn start() -> Result<MotoServer, String> {
        let program = find_moto_server().ok_or_else(|| {
            format!(
                "moto's server is not installed (no {MOTO_SERVER_DEFAULT}, no moto_server on PATH, \
                 PGARK_MOTO_SERVER unset); run .ci/install-deps.sh"
            )
        })?;
        let mut last_err = String::new();
        for _ in 0..3 {
            match Self::start_once(&program) {
                Ok(server) => return Ok(server),
                Err((retry, e)) => {
                    last_err = e;
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(last_err)
    }

    fn start_once(program: &Path) -> Result<MotoServer, (bool, String)> {
        let port = crate::pg::free_port().map_err(|e| (false, e.to_string()))?;
        let dir = tempfile::Builder::new()
            .prefix("pgark-moto-")
            .tempdir()
            .map_err(|e| (false, format!("cannot make a directory for moto: {e}")))?;
        let log_path = dir.path().join("moto.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| (false, format!("cannot create {}: {e}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| (false, format!("cannot duplicate a file handle: {e}")))?;
        let python = program.with_file_name("python3");
        let mut cmd = if python.is_file() {
            let mut cmd = Command::new(&python);
            cmd.arg("-c").arg(
                "import sys; sys.setswitchinterval(0.5); from moto.server import main; main(sys.argv[1:])",
            );
            cmd
        } else {
            Command::new(program)
        };
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("TMPDIR", dir.path())
            .env("MOTO_PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let child = cmd
            .spawn()
            .map_err(|e| (false, format!("cannot run {}: {e}", program.display())))?;
        let mut server = MotoServer { child, port, dir };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = server.log();
                let port_taken = log.contains("Address already in use");
                return Err((
                    port_taken,
                    format!("{} exited ({status}) before answering:\n{log}", program.display()),
                ));
            }
            if let Ok((200, _)) = server.request("GET", "/", b"") {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err((
                    false,
                    format!(
                        "{} did not answer on 127.0.0.1:{port} within {START_TIMEOUT:?}:\n{}",
                        program.display(),
                        server.log()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("moto.log")).unwrap_or_default()
    }

    /// Creates `bucket` (in us-east-1).
    pub fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        match self.request("PUT", &format!("/{bucket}"), b"")? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("creating bucket {bucket} failed: HTTP {status}: {body}")),
        }
    }

    /// From now on moto checks every request's credentials against its own
    /// IAM users (of which there are none): every request is refused with
    /// `403 InvalidAccessKeyId`.
    pub fn enforce_authentication(&self) -> Result<(), String> {
        match self.request("POST", "/moto-api/reset-auth", b"0")? {
            (200, _) => Ok(()),
            (status, body) => Err(format!(
                "moto did not enforce authentication: HTTP {status}: {body}"
            )),
        }
    }

    /// Sends one unsigned request (moto does not check signatures unless
    /// told to); returns the status and the response body.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), String> {
        let addr = format!("127.0.0.1:{}", self.port);
        let mut stream =
            TcpStream::connect_timeout(&addr.parse().expect("an address"), Duration::from_secs(5))
                .map_err(|e| format!("cannot connect to moto on {addr}: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
        stream.set_write_timeout(Some(Duration::from_secs(30))).ok();
        let mut request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body);
        stream
            .write_all(&request)
            .map_err(|e| format!("cannot send a request to moto: {e}"))?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .map_err(|e| format!("cannot read moto's response: {e}"))?;
        let text = String::from_utf8_lossy(&response);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("moto sent no HTTP response: {text:?}"))?;
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        Ok((status, body))
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto's server for the test `test`, or, if that fails and
/// `PGARK_TEST_SKIP_S3=1` is set, prints why and returns `None`. Without that
/// variable a server that cannot start fails the test.
pub fn moto_or_skip(test: &str) -> Option<MotoServer> {
    match MotoServer::start() {
        Ok(server) => Some(server),
        Err(e) if std::env::var(SKIP_S3_VAR).is_ok_and(|v| v == "1") => {
            eprintln!("note: skipping {test}: moto's S3 server cannot be started ({SKIP_S3_VAR}=1): {e}");
            None
        }
        Err(e) => panic!(
            "{test}: moto's S3 server cannot be started: {e}\n\
             (.ci/install-deps.sh installs it; set {SKIP_S3_VAR}=1 to skip the S3 tests instead)"
        ),
    }
}

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// Sends one plain HTTP/1.1 request to 127.0.0.1:`port`; returns the status
/// and the response body.
pub fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let addr = format!("127.0.0.1:{port}");
    let mut stream = TcpStream::connect_timeout(&addr.parse().expect("an address"), Duration::from_secs(5))
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
    stream.set_write_timeout(Some(Duration::from_secs(30))).ok();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(body);
    stream
        .write_all(&request)
        .map_err(|e| format!("cannot send a request to {addr}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("cannot read the response of {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("{addr} sent no HTTP response: {text:?}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.to_ascii_lowercase().contains("chunked")
    });
    let body = if chunked { dechunk(body) } else { body.to_owned() };
    Ok((status, body))
}

/// The payload of a body in HTTP/1.1 chunked transfer encoding.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}

/// Why [`Spawned::start_on`] failed: the program exited (perhaps its port
/// was taken), or anything else.
enum StartError {
    Exited(String),
    Failed(String),
}
use StartError::{Exited, Failed};

/// A server program started by a test, with its output in a scratch
/// directory; killed when dropped.
struct Spawned {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    name: &'static str,
}

impl Spawned {
    /// Runs `program` (with arguments made from the port and the scratch
    /// directory) on a free port and waits until `ready` says it answers.
    fn start(
        name: &'static str,
        program: &Path,
        args: impl Fn(u16, &Path) -> Vec<String>,
        ready: impl Fn(u16) -> bool,
        timeout: Duration,
    ) -> Result<Spawned, String> {
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = crate::pg::free_port().map_err(|e| e.to_string())?;
            match Spawned::start_on(port, name, program, &args, &ready, timeout) {
                Ok(server) => return Ok(server),
                Err(Exited(e)) => last_err = e,
                Err(Failed(e)) => return Err(e),
            }
            // Exited early: perhaps the port was taken meanwhile; try another.
        }
        Err(last_err)
    }

    /// Runs `program` on `port` and waits until `ready` says it answers.
    fn start_on(
        port: u16,
        name: &'static str,
        program: &Path,
        args: &impl Fn(u16, &Path) -> Vec<String>,
        ready: &impl Fn(u16) -> bool,
        timeout: Duration,
    ) -> Result<Spawned, StartError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("pgark-{name}-"))
            .tempdir()
            .map_err(|e| Failed(format!("cannot make a directory for {name}: {e}")))?;
        let log_path = dir.path().join("server.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| Failed(format!("cannot create {}: {e}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| Failed(format!("cannot duplicate a file handle: {e}")))?;
        let child = Command::new(program)
            .args(args(port, dir.path()))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| Failed(format!("cannot run {}: {e}", program.display())))?;
        let mut server = Spawned {
            child,
            port,
            dir,
            name,
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = server.log();
                return Err(Exited(format!(
                    "{} exited ({status}) before answering:\n{log}",
                    program.display()
                )));
            }
            if ready(port) {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(Failed(format!(
                    "{} did not answer on 127.0.0.1:{port} within {timeout:?}:\n{}",
                    program.display(),
                    server.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl std::fmt::Debug for Spawned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(self.name)
            .field("port", &self.port)
            .field("pid", &self.child.id())
            .finish()
    }
}

/// `$var`, else `default` if it exists, else `name` on PATH.
fn find_program(var: &str, default: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p));
    }
    let default = Path::new(default);
    if default.is_file() {
        return Some(default.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// Starts a server with `start`, or, if that fails and `skip_var=1`, prints
/// why and returns `None`.
fn start_or_skip<T>(
    test: &str,
    what: &str,
    skip_var: &str,
    start: impl FnOnce() -> Result<T, String>,
) -> Option<T> {
    match start() {
        Ok(server) => Some(server),
        Err(e) if std::env::var(skip_var).is_ok_and(|v| v == "1") => {
            eprintln!("note: skipping {test}: {what} cannot be started ({skip_var}=1): {e}");
            None
        }
        Err(e) => panic!(
            "{test}: {what} cannot be started: {e}\n\
             (.ci/install-deps.sh installs it; set {skip_var}=1 to skip these tests instead)"
        ),
    }
}

// ---------------------------------------------------------------------------
// fake-gcs-server
// ---------------------------------------------------------------------------

/// Where `.ci/install-deps.sh` links fake-gcs-server's binary.
pub const FAKE_GCS_SERVER_DEFAULT: &str = "/opt/pgark-test/fake-gcs/bin/fake-gcs-server";

/// Set to 1 to skip the GCS tests where fake-gcs-server cannot be started.
pub const SKIP_GCS_VAR: &str = "PGARK_TEST_SKIP_GCS";

/// fake-gcs-server on 127.0.0.1 (plain HTTP, objects in memory) on a free
/// port, killed when the last handle to it is dropped.
///
/// It speaks the GCS JSON API and accepts any credentials (or none). Where
/// it differs from GCS: it does not check preconditions on resumable
/// uploads (`ifGenerationMatch=0` is ignored there; GCS refuses with 412)
/// nor on reads; it finishes a resumable upload when asked for its status
/// (`Content-Range: bytes */*`, which GCS answers with what it persisted)
/// and keeps a session that was deleted; it appends each chunk of a
/// resumable upload whatever offset the chunk says it starts at; and it
/// builds a session URI from the request's `Host` header. Tests of what
/// GCS does there put a [`crate::proxy::HttpProxy`] in front of it.
#[derive(Debug, Clone)]
pub struct FakeGcsServer {
    server: std::sync::Arc<Spawned>,
}

impl FakeGcsServer {
    pub fn start() -> Result<FakeGcsServer, String> {
        let program = find_program(
            "PGARK_FAKE_GCS_SERVER",
            FAKE_GCS_SERVER_DEFAULT,
            "fake-gcs-server",
        )
        .ok_or_else(|| {
            format!(
                "fake-gcs-server is not installed (no {FAKE_GCS_SERVER_DEFAULT}, none on PATH, \
                     PGARK_FAKE_GCS_SERVER unset); run .ci/install-deps.sh"
            )
        })?;
        let args = |port: u16, dir: &Path| -> Vec<String> {
            let url = format!("http://127.0.0.1:{port}");
            [
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                &port.to_string(),
                "-backend",
                "memory",
                "-external-url",
                &url,
                "-public-host",
                &format!("127.0.0.1:{port}"),
                "-log-level",
                "warn",
                "-filesystem-root",
                &dir.join("storage").to_string_lossy(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        let ready = |port| matches!(http_request(port, "GET", "/storage/v1/b", &[], b""), Ok((200, _)));
        let server = Spawned::start("fake-gcs-server", &program, args, ready, Duration::from_secs(30))?;
        Ok(FakeGcsServer {
            server: std::sync::Arc::new(server),
        })
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    pub fn log(&self) -> String {
        self.server.log()
    }

    pub fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        let body = format!("{{\"name\":\"{bucket}\"}}");
        match http_request(
            self.port(),
            "POST",
            "/storage/v1/b",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )? {
            (200, _) => Ok(()),
            (status, body) => Err(format!("creating bucket {bucket} failed: HTTP {status}: {body}")),
        }
    }

    /// Sends one request to the server.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), String> {
        http_request(self.port(), method, path, &[], body)
    }
}

/// Starts fake-gcs-server for the test `test`, or skips (see
/// [`SKIP_GCS_VAR`]).
pub fn fake_gcs_or_skip(test: &str) -> Option<FakeGcsServer> {
    start_or_skip(test, "fake-gcs-server", SKIP_GCS_VAR, FakeGcsServer::start)
}

// ---------------------------------------------------------------------------
// Azurite
// ---------------------------------------------------------------------------

/// Where `.ci/install-deps.sh` installs Azurite's blob service.
pub const AZURITE_DEFAULT: &str = "/opt/pgark-test/azurite/node_modules/.bin/azurite-blob";

/// Set to 1 to skip the Azure tests where Azurite cannot be started.
pub const SKIP_AZURE_VAR: &str = "PGARK_TEST_SKIP_AZURE";

/// Azurite's well-known development account and its key (public, from
/// Azurite's documentation).
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azurite's blob service on 127.0.0.1 (objects in memory), killed when
/// dropped. It checks Shared Key and SAS signatures like Azure does.
#[derive(Debug)]
pub struct Azurite {
    server: Spawned,
}

impl Azurite {
    pub fn start() -> Result<Azurite, String> {
        let program = find_program("PGARK_AZURITE", AZURITE_DEFAULT, "azurite-blob").ok_or_else(|| {
            format!(
                "Azurite is not installed (no {AZURITE_DEFAULT}, no azurite-blob on PATH, PGARK_AZURITE \
                 unset); run .ci/install-deps.sh"
            )
        })?;
        let server = Spawned::start(
            "azurite",
            &program,
            // In memory, so nothing is written (the working directory is
            // the scratch directory all the same).
            |port, _dir| {
                [
                    "--blobHost",
                    "127.0.0.1",
                    "--blobPort",
                    &port.to_string(),
                    "--inMemoryPersistence",
                    "--skipApiVersionCheck",
                    "--disableProductStyleUrl",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect()
            },
            // Any HTTP answer (an unauthenticated request is refused).
            |port| http_request(port, "GET", &format!("/{AZURITE_ACCOUNT}?comp=list"), &[], b"").is_ok(),
            Duration::from_secs(60),
        )?;
        Ok(Azurite { server })
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `http://127.0.0.1:<port>/devstoreaccount1`, the account's blob
    /// endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.server.port)
    }

    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Sends one request, authorised by an account SAS made with the
    /// well-known key (`path` may have a query already).
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), String> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}{}", Self::sas("rwdlac", AZURITE_KEY));
        http_request(
            self.port(),
            method,
            &path,
            &[("x-ms-version", pgark_store::azure_api_version())],
            body,
        )
    }

    /// An account SAS for the development account signed with `key`,
    /// valid for a day.
    pub fn sas(permissions: &str, key: &str) -> String {
        let sas = pgark_store::AccountSas {
            account: AZURITE_ACCOUNT,
            permissions,
            services: "b",
            resource_types: "sco",
            start: "2020-01-01T00:00:00Z",
            expiry: "2099-01-01T00:00:00Z",
            protocol: "https,http",
            version: pgark_store::azure_api_version(),
        };
        pgark_store::account_sas(&sas, key).expect("a base64 key")
    }

    pub fn create_container(&self, container: &str) -> Result<(), String> {
        match self.request(
            "PUT",
            &format!("/{AZURITE_ACCOUNT}/{container}?restype=container"),
            b"",
        )? {
            (201, _) => Ok(()),
            (status, body) => Err(format!(
                "creating container {container} failed: HTTP {status}: {body}"
            )),
        }
    }
}

/// Starts Azurite for the test `test`, or skips (see [`SKIP_AZURE_VAR`]).
pub fn azurite_or_skip(test: &str) -> Option<Azurite> {
    start_or_skip(test, "Azurite", SKIP_AZURE_VAR, Azurite::start)
}

// ---------------------------------------------------------------------------
// s3s-fs
// ---------------------------------------------------------------------------

/// Where `.ci/install-deps.sh` installs s3s-fs.
pub const S3S_FS_DEFAULT: &str = "/opt/pgark-test/s3s-fs/bin/s3s-fs";

/// The key pair s3s-fs is started with: it checks every request's
/// signature against them.
pub const S3S_ACCESS_KEY_ID: &str = "pgark-test-access-key";
pub const S3S_SECRET_ACCESS_KEY: &str = "pgark-test-secret-key";

/// s3s-fs (crate s3s-fs, an S3 server over a directory) on 127.0.0.1,
/// killed when dropped. Unlike moto, it checks every request's AWS
/// Signature Version 4 (headers and payload hash, chunked uploads
/// included) against [`S3S_ACCESS_KEY_ID`] / [`S3S_SECRET_ACCESS_KEY`], so
/// a request signed wrongly is refused as real S3 would refuse it. A bucket
/// is a directory under its root.
#[derive(Debug)]
pub struct S3sFsServer {
    server: Spawned,
}

impl S3sFsServer {
    pub fn start() -> Result<S3sFsServer, String> {
        let program = find_program("PGARK_S3S_FS", S3S_FS_DEFAULT, "s3s-fs").ok_or_else(|| {
            format!(
                "s3s-fs is not installed (no {S3S_FS_DEFAULT}, none on PATH, PGARK_S3S_FS unset); \
                 run .ci/install-deps.sh"
            )
        })?;
        let server = Spawned::start(
            "s3s-fs",
            &program,
            |port, dir| {
                let root = dir.join("data");
                let _ = std::fs::create_dir_all(&root);
                [
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--access-key",
                    S3S_ACCESS_KEY_ID,
                    "--secret-key",
                    S3S_SECRET_ACCESS_KEY,
                    &root.to_string_lossy(),
                ]
                .iter()
                .map(|s| s.to_string())
                .collect()
            },
            // Any HTTP answer (an unsigned request is refused) means it runs.
            |port| http_request(port, "GET", "/", &[], b"").is_ok(),
            Duration::from_secs(30),
        )?;
        Ok(S3sFsServer { server })
    }

    pub fn port(&self) -> u16 {
        self.server.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.server.port)
    }

    pub fn log(&self) -> String {
        self.server.log()
    }

    /// Makes bucket `bucket` (a directory under the server's root).
    pub fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        let dir = self.server.dir.path().join("data").join(bucket);
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
    }
}

/// Starts s3s-fs for the test `test`, or skips (see [`SKIP_S3_VAR`]).
pub fn s3s_fs_or_skip(test: &str) -> Option<S3sFsServer> {
    start_or_skip(test, "s3s-fs", SKIP_S3_VAR, S3sFsServer::start)
}
