//! tokio-postgres's TLS extension point (`MakeTlsConnect`, `TlsConnect`,
//! `TlsStream`) over tokio-rustls, with handshake failures told in
//! PostgreSQL terms and `tls-server-end-point` channel binding.

use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// Makes one [`RustlsConnect`] per host tokio-postgres connects to.
#[derive(Clone)]
pub(crate) struct MakeRustls {
    config: Arc<ClientConfig>,
    /// Set once a handshake starts: the server offered TLS (`prefer` then
    /// retries without TLS if the connection fails).
    started: Arc<AtomicBool>,
    /// "the CA in /path", for messages.
    ca: Arc<str>,
    has_client_cert: bool,
}

impl MakeRustls {
    pub(super) fn new(config: Arc<ClientConfig>, ca: String, has_client_cert: bool) -> MakeRustls {
        MakeRustls {
            config,
            started: Arc::default(),
            ca: ca.into(),
            has_client_cert,
        }
    }

    /// A connector for a new attempt, sharing the loaded configuration.
    pub(crate) fn fresh(&self) -> MakeRustls {
        MakeRustls {
            started: Arc::default(),
            ..self.clone()
        }
    }

    /// Whether the server accepted TLS and a handshake started.
    pub(crate) fn started(&self) -> bool {
        self.started.load(Ordering::SeqCst)
    }
}

/// Why a TLS handshake failed, in words for the connection error.
///
/// Its own type, not PgClientError: tokio-postgres's `MakeTlsConnect` and
/// `TlsConnect` need an error that is `Into<Box<dyn Error + Send + Sync>>`,
/// which it wraps as the cause of its own error; connect.rs then finds
/// this type there to tell a TLS failure (after which `prefer` goes
/// without TLS) from any other.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct HandshakeError(String);

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = HandshakeError;

    fn make_tls_connect(&mut self, host: &str) -> Result<RustlsConnect, HandshakeError> {
        let name = ServerName::try_from(host)
            .map_err(|_| {
                HandshakeError(format!(
                    "{host:?} is not a host name or IP address to check a certificate against"
                ))
            })?
            .to_owned();
        Ok(RustlsConnect {
            make: self.clone(),
            name,
        })
    }
}

/// One TLS handshake with one host.
pub(crate) struct RustlsConnect {
    make: MakeRustls,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = HandshakeError;
    type Future = Pin<Box<dyn Future<Output = Result<RustlsStream<S>, HandshakeError>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        self.make.started.store(true, Ordering::SeqCst);
        let connector = tokio_rustls::TlsConnector::from(self.make.config.clone());
        Box::pin(async move {
            connector
                .connect(self.name.clone(), stream)
                .await
                .map(RustlsStream)
                .map_err(|e| HandshakeError(describe(&e, &self.name, &self.make)))
        })
    }
}

/// The handshake's failure in the terms of the settings that decide it.
fn describe(e: &std::io::Error, name: &ServerName<'_>, make: &MakeRustls) -> String {
    let host = name.to_str();
    let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return format!("TLS handshake failed: {e}");
    };
    match tls {
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => {
                format!("the server's certificate is not signed by {}", make.ca)
            }
            CertificateError::NotValidForName => {
                format!("the server's certificate is not issued for host {host}")
            }
            CertificateError::NotValidForNameContext { presented, .. } if presented.is_empty() => format!(
                "the server's certificate is not issued for host {host}: it names no host in subjectAltName \
                 (a name only in the Common Name is not accepted)"
            ),
            CertificateError::NotValidForNameContext { presented, .. } => format!(
                "the server's certificate is not issued for host {host} (it names {})",
                presented.iter().map(|n| bare_name(n)).collect::<Vec<_>>().join(", ")
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "the server's certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "the server's certificate is not valid yet".into()
            }
            CertificateError::BadSignature => "a signature in the server's certificate chain does not verify \
                (a damaged or forged certificate, or an RSA key under 2048 bits, which is not accepted)"
                .into(),
            #[allow(deprecated)]
            CertificateError::UnsupportedSignatureAlgorithm
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => {
                "the server's certificate chain is signed with an algorithm that is not accepted (MD5, SHA-1, \
                 DSA, or RSA under 2048 bits)"
                    .into()
            }
            CertificateError::BadEncoding => "the server's certificate is not a valid X.509 certificate".into(),
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                "the server's certificate is not for TLS servers (its extended key usage lacks serverAuth)".into()
            }
            CertificateError::UnhandledCriticalExtension => {
                "the server's certificate has a critical extension that is not understood".into()
            }
            CertificateError::Other(other) => match other.0.downcast_ref::<webpki::Error>() {
                Some(webpki::Error::CaUsedAsEndEntity) => "the server's certificate is itself a CA certificate \
                    (CA:TRUE) and cannot be used as a server certificate: give the server one signed by the CA"
                    .into(),
                Some(webpki::Error::EndEntityUsedAsCa) => {
                    "the certificate that signed the server's certificate is not a CA certificate (no CA:TRUE)".into()
                }
                Some(webpki::Error::PathLenConstraintViolated) => {
                    "the server's certificate chain is longer than a CA in it allows (pathlen)".into()
                }
                Some(webpki::Error::NameConstraintViolation) => {
                    "the server's certificate names a host its CA may not issue for (name constraints)".into()
                }
                Some(webpki::Error::UnsupportedCertVersion) => {
                    "the server's certificate is not an X.509 version 3 certificate".into()
                }
                _ => format!("the server's certificate is refused: {other}"),
            },
            other => format!("the server's certificate is refused: {other}"),
        },
        rustls::Error::AlertReceived(alert) if !make.has_client_cert => format!(
            "the server ended the TLS handshake ({alert:?}); it may want a client certificate (sslcert, sslkey)"
        ),
        rustls::Error::AlertReceived(alert) => {
            format!("the server ended the TLS handshake ({alert:?}): it may not accept the client certificate")
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

/// `localhost` for rustls's `DnsName("localhost")`, `127.0.0.1` for
/// `IpAddress(127.0.0.1)`.
fn bare_name(presented: &str) -> &str {
    let inner = ["DnsName(", "IpAddress("]
        .iter()
        .find_map(|p| presented.strip_prefix(p)?.strip_suffix(')'))
        .unwrap_or(presented);
    inner.trim_matches('"')
}

/// A TLS connection to the server.
pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        let (_, session) = self.0.get_ref();
        session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|cert| super::verify::tls_server_end_point(cert))
            .map_or_else(ChannelBinding::none, ChannelBinding::tls_server_end_point)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::OtherError;

    #[test]
    #[allow(deprecated)]
    fn certificate_errors_are_told_in_words() {
        let make = crate::tls::TlsOptions::default().connector().unwrap();
        let name = ServerName::try_from("db").unwrap();
        let told = |e: CertificateError| {
            let io = std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(e),
            );
            describe(&io, &name, &make)
        };
        let other = |e: webpki::Error| CertificateError::Other(OtherError(Arc::new(e)));
        for (e, want) in [
            (
                other(webpki::Error::CaUsedAsEndEntity),
                "the server's certificate is itself a CA certificate (CA:TRUE) and cannot be used as a server \
                 certificate",
            ),
            (other(webpki::Error::EndEntityUsedAsCa), "is not a CA certificate (no CA:TRUE)"),
            (CertificateError::BadSignature, "an RSA key under 2048 bits"),
            (CertificateError::UnsupportedSignatureAlgorithm, "signed with an algorithm that is not accepted"),
            (CertificateError::BadEncoding, "not a valid X.509 certificate"),
            (CertificateError::InvalidPurpose, "lacks serverAuth"),
            (
                CertificateError::NotValidForNameContext {
                    expected: ServerName::try_from("db").unwrap().to_owned(),
                    presented: vec![],
                },
                "not issued for host db: it names no host in subjectAltName (a name only in the Common Name",
            ),
        ] {
            let got = told(e);
            assert!(got.contains(want), "{got}");
            assert!(!got.contains("CaUsedAsEndEntity") && !got.contains("Context {"), "{got}");
        }
    }

    #[test]
    fn presented_names_are_shown_bare() {
        for (presented, bare) in [
            ("DnsName(\"localhost\")", "localhost"),
            ("IpAddress(127.0.0.1)", "127.0.0.1"),
            ("something else", "something else"),
        ] {
            assert_eq!(super::bare_name(presented), bare);
        }
    }
}
