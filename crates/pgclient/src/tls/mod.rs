//! TLS to PostgreSQL with libpq's settings and rules (libpq's
//! fe-secure-openssl.c, initialize_SSL), on rustls with the ring provider.
//!
//! What libpq does, this does: `sslmode` defaults to `prefer`; a root CA
//! file (`sslrootcert`, else `~/.postgresql/root.crt` if it exists) makes
//! every mode check the server's certificate chain, so `require` then
//! behaves like `verify-ca`; `verify-full` also checks the host name; a
//! client certificate and key (`sslcert`/`sslkey`, else
//! `~/.postgresql/postgresql.crt` and `.key` if they exist) are sent when
//! the server asks; a key readable by group or others is refused (see
//! [`key_permissions`]). `~` is `$HOME`, else the home directory of the
//! effective user's passwd entry (libpq's pqGetHomeDirectory). Deliberate
//! differences: a root certificate or client certificate named explicitly
//! must exist (libpq silently goes without), so a typo does not turn
//! verification off; certificate revocation lists (`sslcrl`, `sslcrldir`,
//! `~/.postgresql/root.crl`) are not supported and refused rather than
//! ignored.

mod connect;
mod verify;

pub(crate) use connect::{HandshakeError, MakeRustls};

use crate::conninfo::TlsParams;
use crate::PgClientError;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

type Result<T> = std::result::Result<T, PgClientError>;

/// Whether and how to use TLS. Mirrors libpq's `sslmode` (fe-connect.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SslMode {
    /// Plain connections only.
    Disable,
    /// Plain first; TLS if the server refuses the plain connection.
    Allow,
    /// TLS first; plain if the server does not offer TLS, the TLS
    /// handshake (or reading the TLS files) fails, or the server refuses
    /// the connection over TLS.
    #[default]
    Prefer,
    /// TLS or nothing; the certificate is checked only if a root CA file
    /// exists.
    Require,
    /// TLS, the server's certificate signed by the root CA; any host name.
    VerifyCa,
    /// TLS, the server's certificate signed by the root CA and issued for
    /// the host connected to.
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An `sslmode` value libpq does not know (the empty one included).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid sslmode value: {0:?} (use disable, allow, prefer, require, verify-ca or verify-full)")]
pub struct InvalidSslMode(pub String);

impl FromStr for SslMode {
    type Err = InvalidSslMode;
    fn from_str(s: &str) -> std::result::Result<SslMode, InvalidSslMode> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return Err(InvalidSslMode(s.to_string())),
        })
    }
}

/// The CA certificates the server's certificate must chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCert {
    /// A PEM file of one or more CA certificates.
    File(PathBuf),
    /// The platform's trusted roots (`sslrootcert=system`, libpq 16).
    System,
}

/// A client certificate and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The TLS settings of one connection, resolved from the conninfo string,
/// the environment and the files in `~/.postgresql`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsOptions {
    pub mode: SslMode,
    pub root_cert: Option<RootCert>,
    pub client_cert: Option<ClientCert>,
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

impl TlsOptions {
    /// Resolves like libpq: conninfo, then PGSSLMODE, PGSSLROOTCERT,
    /// PGSSLCERT, PGSSLKEY, then the default files in `~/.postgresql`
    /// that exist.
    pub fn resolve(params: &TlsParams, env: impl Fn(&str) -> Option<String>) -> Result<TlsOptions> {
        TlsOptions::resolve_in(params, env, passwd_home)
    }

    /// [`TlsOptions::resolve`] with the passwd entry's home directory from
    /// `passwd_home` (for tests).
    pub(crate) fn resolve_in(
        params: &TlsParams,
        env: impl Fn(&str) -> Option<String>,
        passwd_home: impl Fn() -> Option<PathBuf>,
    ) -> Result<TlsOptions> {
        // The value and where it came from, for messages. A value given
        // empty in the conninfo hides the variable, as in libpq.
        let given = |given: &Option<String>, key: &str, var: &str| {
            given
                .clone()
                .map(|v| (v, key.to_string()))
                .or_else(|| env(var).map(|v| (v, var.to_string())))
        };
        let setting =
            |g: &Option<String>, key: &str, var: &str| given(g, key, var).filter(|(v, _)| !v.is_empty());
        let home = env("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(passwd_home);
        let home_file = |name: &str| home.as_ref().map(|h| h.join(".postgresql").join(name));
        let root = setting(&params.sslrootcert, "sslrootcert", "PGSSLROOTCERT").map(|(v, _)| v);
        // An empty sslmode is invalid (libpq), not the default.
        let mode = match given(&params.sslmode, "sslmode", "PGSSLMODE") {
            Some((v, from)) => v
                .parse()
                .map_err(|e: InvalidSslMode| PgClientError::BadConnInfo(format!("{from}: {e}")))?,
            // libpq 16: the system's roots make verify-full the default.
            None if root.as_deref() == Some("system") => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        for (value, key, var) in [
            (&params.sslcrl, "sslcrl", "PGSSLCRL"),
            (&params.sslcrldir, "sslcrldir", "PGSSLCRLDIR"),
        ] {
            if let Some((v, from)) = setting(value, key, var) {
                return Err(PgClientError::BadConnInfo(format!(
                    "{from}={v:?}: certificate revocation lists (CRLs) are not supported"
                )));
            }
        }
        let root_cert = match root.as_deref() {
            Some("system") if mode != SslMode::VerifyFull => {
                return Err(PgClientError::BadConnInfo(format!(
                    "weak sslmode \"{mode}\" may not be used with sslrootcert=system (use \"verify-full\")"
                )));
            }
            Some("system") => Some(RootCert::System),
            Some(path) => Some(RootCert::File(path.into())),
            None => home_file("root.crt").filter(|p| p.exists()).map(RootCert::File),
        };
        // libpq reads ~/.postgresql/root.crl whenever it verifies with a
        // root CA file; going without would accept a revoked certificate.
        if let (Some(_), Some(crl)) = (&root_cert, home_file("root.crl")) {
            if mode != SslMode::Disable && crl.exists() {
                return Err(PgClientError::TlsFile {
                    what: "default CRL",
                    path: crl,
                    problem: "exists, and certificate revocation lists (CRLs) are not supported: \
                              remove it, or use sslmode=disable"
                        .into(),
                });
            }
        }
        if root_cert.is_none() && matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) {
            return Err(PgClientError::NoRootCert {
                mode,
                default: home_file("root.crt"),
            });
        }
        let cert = setting(&params.sslcert, "sslcert", "PGSSLCERT")
            .map(|(v, _)| PathBuf::from(v))
            .or_else(|| home_file("postgresql.crt").filter(|p| p.exists()));
        let key = setting(&params.sslkey, "sslkey", "PGSSLKEY")
            .map(|(v, _)| PathBuf::from(v))
            .or_else(|| home_file("postgresql.key"));
        let client_cert = match (cert, key) {
            (Some(cert), Some(key)) => Some(ClientCert { cert, key }),
            (Some(cert), None) => {
                return Err(PgClientError::BadConnInfo(format!(
                    "sslcert {} is given without sslkey (and HOME is not set)",
                    cert.display()
                )));
            }
            (None, _) => None,
        };
        Ok(TlsOptions {
            mode,
            root_cert,
            client_cert,
        })
    }

    pub(crate) fn verify(&self) -> Verify {
        match self.mode {
            SslMode::VerifyFull => Verify::ChainAndName,
            SslMode::VerifyCa => Verify::Chain,
            _ if self.root_cert.is_some() => Verify::Chain,
            _ => Verify::Nothing,
        }
    }

    /// Reads the certificate and key files and builds the TLS connector.
    pub(crate) fn connector(&self) -> Result<MakeRustls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| PgClientError::TlsSetup(e.to_string()))?;
        let verify = self.verify();
        let algorithms = provider.signature_verification_algorithms;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match (&self.root_cert, verify) {
            (_, Verify::Nothing) => Arc::new(verify::NoCheck(algorithms)),
            // resolve() refuses verify-* without a root CA; fail closed.
            (None, Verify::Chain | Verify::ChainAndName) => {
                return Err(PgClientError::TlsSetup(format!(
                    "sslmode={} checks the server's certificate, and no root CA is set",
                    self.mode
                )));
            }
            (Some(root), _) => {
                let roots = load_roots(root)?;
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| PgClientError::TlsSetup(e.to_string()))?;
                if verify == Verify::Chain {
                    Arc::new(verify::ChainOnly(webpki))
                } else {
                    webpki
                }
            }
        };
        let builder = builder.dangerous().with_custom_certificate_verifier(verifier);
        let mut config = match &self.client_cert {
            Some(cc) => {
                let (certs, key) = load_client_cert(cc)?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| PgClientError::TlsFile {
                        what: "sslkey",
                        path: cc.key.clone(),
                        problem: format!("cannot be used with sslcert {}: {e}", cc.cert.display()),
                    })?
            }
            None => builder.with_no_client_auth(),
        };
        // What libpq 17 sends; the server checks it only for direct TLS.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        let ca = match &self.root_cert {
            Some(RootCert::File(p)) => format!("the CA in {}", p.display()),
            Some(RootCert::System) => "the system's trusted CAs".into(),
            None => "a trusted CA".into(),
        };
        Ok(MakeRustls::new(Arc::new(config), ca, self.client_cert.is_some()))
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| PgClientError::TlsFile {
        what,
        path: path.into(),
        problem: if e.kind() == std::io::ErrorKind::NotFound {
            "does not exist".into()
        } else {
            format!("cannot be read: {e}")
        },
    })
}

fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let pem = read_file(what, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| PgClientError::TlsFile {
            what,
            path: path.into(),
            problem: format!("is not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(PgClientError::TlsFile {
            what,
            path: path.into(),
            problem: "holds no PEM certificate".into(),
        });
    }
    Ok(certs)
}

fn load_roots(root: &RootCert) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match root {
        RootCert::File(path) => {
            let (added, _) = roots.add_parsable_certificates(load_certs("sslrootcert", path)?);
            if added == 0 {
                return Err(PgClientError::TlsFile {
                    what: "sslrootcert",
                    path: path.clone(),
                    problem: "holds no usable CA certificate".into(),
                });
            }
        }
        RootCert::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
                return Err(PgClientError::TlsSetup(format!(
                    "sslrootcert=system: no trusted CA certificates found on this system{why}"
                )));
            }
        }
    }
    Ok(roots)
}

fn load_client_cert(cc: &ClientCert) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let certs = load_certs("sslcert", &cc.cert)?;
    let pem = read_key(cc)?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| PgClientError::TlsFile {
        what: "sslkey",
        path: cc.key.clone(),
        problem: format!("holds no unencrypted PEM private key ({e})"),
    })?;
    Ok((certs, key))
}

/// The key file's contents, checked as libpq checks it: opened once, its
/// permissions read from the open file (fstat), then read from it, so the
/// file checked is the file read.
fn read_key(cc: &ClientCert) -> Result<Vec<u8>> {
    use std::io::Read;
    let fail = |problem: String| PgClientError::TlsFile {
        what: "sslkey",
        path: cc.key.clone(),
        problem,
    };
    let mut open = std::fs::OpenOptions::new();
    open.read(true);
    #[cfg(unix)]
    {
        // A FIFO must not block the open; it is refused below.
        use std::os::unix::fs::OpenOptionsExt;
        open.custom_flags(libc::O_NONBLOCK);
    }
    let mut file = open.open(&cc.key).map_err(|e| {
        fail(if e.kind() == std::io::ErrorKind::NotFound {
            format!("does not exist (needed with sslcert {})", cc.cert.display())
        } else {
            format!("cannot be read: {e}")
        })
    })?;
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot be read: {e}")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        key_permissions(meta.uid(), euid, meta.mode(), meta.is_file()).map_err(fail)?;
    }
    #[cfg(not(unix))]
    if !meta.is_file() {
        return Err(fail("is not a regular file".into()));
    }
    let mut pem = Vec::new();
    file.read_to_end(&mut pem)
        .map_err(|e| fail(format!("cannot be read: {e}")))?;
    Ok(pem)
}

/// libpq's rule for a private key file (fe-secure-openssl.c,
/// initialize_SSL): a regular file; owned by root, `0640` or less (u=rw,
/// g=r: a key mounted for a group); owned by anyone else, `0600` or less.
/// The owner is not otherwise checked: a key that restricted and still
/// readable is the caller's. `euid` only shapes the message.
pub(crate) fn key_permissions(
    owner: u32,
    euid: u32,
    mode: u32,
    is_regular: bool,
) -> std::result::Result<(), String> {
    if !is_regular {
        return Err("is not a regular file".into());
    }
    let (forbidden, limit) = if owner == 0 {
        (0o037, "0640 or less (u=rw,g=r) when owned by root")
    } else {
        (0o077, "0600 or less (u=rw)")
    };
    let perms = mode & 0o7777;
    if perms & forbidden != 0 {
        let whose = match owner {
            0 => String::new(),
            o if o == euid => String::new(),
            o => format!(" (owned by uid {o})"),
        };
        return Err(format!("has permissions {perms:04o}{whose}: must be {limit}"));
    }
    Ok(())
}

/// The home directory of the effective user's passwd entry
/// (getpwuid_r), for `~/.postgresql` when HOME is unset or empty.
#[cfg(unix)]
pub(crate) fn passwd_home() -> Option<PathBuf> {
    use std::ffi::CStr;
    use std::os::unix::ffi::OsStrExt;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    loop {
        // SAFETY: all-zero is a valid passwd (null pointers, zero ids).
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: pwd, buf and result are valid for writes; buf's length
        // is passed; geteuid cannot fail.
        let rc = unsafe {
            libc::getpwuid_r(
                libc::geteuid(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut result,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 || result.is_null() || pwd.pw_dir.is_null() {
            return None;
        }
        // SAFETY: pw_dir points into buf, NUL-terminated, and buf outlives it.
        let dir = unsafe { CStr::from_ptr(pwd.pw_dir) };
        let dir = std::ffi::OsStr::from_bytes(dir.to_bytes());
        return (!dir.is_empty()).then(|| PathBuf::from(dir));
    }
}

#[cfg(not(unix))]
pub(crate) fn passwd_home() -> Option<PathBuf> {
    None
}

#[cfg(test)]
mod tests;
