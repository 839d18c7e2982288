//! The two certificate checks rustls does not have: none at all
//! (`sslmode=require` without a root CA: encrypted, the server unchecked,
//! as libpq does), and the chain without the host name (`verify-ca`). Both
//! still check the handshake's signatures, so the peer holds the key of the
//! certificate it sent; that is what channel binding relies on.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use sha2::Digest;
use std::sync::Arc;

/// Accepts any server certificate.
#[derive(Debug)]
pub(super) struct NoCheck(pub WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoCheck {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The chain checked by webpki; a certificate for another host name
/// accepted. webpki checks the name last, after the chain and validity.
#[derive(Debug)]
pub(super) struct ChainOnly(pub Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `tls-server-end-point` channel binding data (RFC 5929, section 4.1):
/// the server certificate hashed with its signature's hash, SHA-256 for
/// MD5 and SHA-1. Mirrors the server's be_tls_get_certificate_hash
/// (be-secure-openssl.c), which takes the hash from
/// X509_get_signature_info: SHA-224 for sha224WithRSAEncryption and
/// ecdsa-with-SHA224, and for RSASSA-PSS the hash in its parameters (SHA-1
/// when absent, so SHA-256). `None` when the signature has no separate
/// hash (Ed25519, where the server cannot bind either) or is unknown;
/// SCRAM then goes without channel binding.
pub(super) fn tls_server_end_point(cert: &[u8]) -> Option<Vec<u8>> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01]; // 1.2.840.113549.1.1
    const RSA_PSS: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a];
    const ECDSA_SHA2: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03]; // 1.2.840.10045.4.3
    let (oid, params) = signature_algorithm(cert)?;
    let hash = match oid {
        o if o == RSA_PSS => pss_hash(params)?,
        [rsa @ .., n] if rsa == RSA => match n {
            4 | 5 | 11 => Hash::Sha256, // md5, sha1, sha256 WithRSAEncryption
            12 => Hash::Sha384,
            13 => Hash::Sha512,
            14 => Hash::Sha224,
            _ => return None,
        },
        [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01] => Hash::Sha256, // ecdsa-with-SHA1
        [ec @ .., n] if ec == ECDSA_SHA2 => match n {
            1 => Hash::Sha224,
            2 => Hash::Sha256,
            3 => Hash::Sha384,
            4 => Hash::Sha512,
            _ => return None,
        },
        _ => return None,
    };
    Some(match hash {
        Hash::Sha224 => sha2::Sha224::digest(cert).to_vec(),
        Hash::Sha256 => sha2::Sha256::digest(cert).to_vec(),
        Hash::Sha384 => sha2::Sha384::digest(cert).to_vec(),
        Hash::Sha512 => sha2::Sha512::digest(cert).to_vec(),
    })
}

enum Hash {
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

/// The hash of RSASSA-PSS parameters (RFC 4055): `SEQUENCE {
/// hashAlgorithm [0] AlgorithmIdentifier DEFAULT sha1, ... }`; SHA-1
/// becomes SHA-256 as for the other signatures.
fn pss_hash(params: &[u8]) -> Option<Hash> {
    const SHA1: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a]; // 1.3.14.3.2.26
    const SHA2: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02]; // 2.16.840.1.101.3.4.2
    let (fields, _) = der_element(params, 0x30)?;
    let Some((explicit, _)) = der_element(fields, 0xa0) else {
        return Some(Hash::Sha256); // hashAlgorithm absent: SHA-1
    };
    let (algorithm, _) = der_element(explicit, 0x30)?;
    let (oid, _) = der_element(algorithm, 0x06)?;
    match oid {
        o if o == SHA1 => Some(Hash::Sha256),
        [sha2 @ .., n] if sha2 == SHA2 => match n {
            1 => Some(Hash::Sha256),
            2 => Some(Hash::Sha384),
            3 => Some(Hash::Sha512),
            4 => Some(Hash::Sha224),
            _ => None,
        },
        _ => None,
    }
}

/// The OID of `signatureAlgorithm` in a DER certificate (RFC 5280), and
/// what follows it (the parameters): `SEQUENCE { tbsCertificate SEQUENCE,
/// signatureAlgorithm SEQUENCE { algorithm OID, parameters }, signature
/// BIT STRING }`.
fn signature_algorithm(cert: &[u8]) -> Option<(&[u8], &[u8])> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (certificate, _) = der_element(cert, SEQUENCE)?;
    let (_, rest) = der_element(certificate, SEQUENCE)?;
    let (algorithm, _) = der_element(rest, SEQUENCE)?;
    der_element(algorithm, OID)
}

/// One DER element of type `tag` at the start of `input`: its contents
/// and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_elements_are_bounded() {
        assert_eq!(
            der_element(&[0x30, 0x02, 1, 2, 9], 0x30),
            Some((&[1u8, 2][..], &[9u8][..]))
        );
        assert_eq!(
            der_element(&[0x30, 0x81, 0x01, 7], 0x30),
            Some((&[7u8][..], &[][..]))
        );
        for bad in [
            &[][..],
            &[0x30],
            &[0x30, 0x03, 1],
            &[0x31, 0x00],
            &[0x30, 0x80],
            &[0x30, 0x85, 1, 1, 1, 1, 1],
        ] {
            assert_eq!(der_element(bad, 0x30), None, "{bad:?}");
        }
        assert_eq!(tls_server_end_point(b"not a certificate"), None);
    }

    /// A DER element: tag, length, contents.
    fn der(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match contents.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(contents);
        out
    }

    /// A certificate-shaped DER with this signature algorithm (OID bytes,
    /// then the parameters' DER).
    fn cert_signed_with(oid: &[u8], params: &[u8]) -> Vec<u8> {
        let tbs = der(0x30, &der(0x02, &[1]));
        let algorithm = der(0x30, &[der(0x06, oid), params.to_vec()].concat());
        der(0x30, &[tbs, algorithm, der(0x03, &[0, 1, 2, 3])].concat())
    }

    fn digest(hash: &str, data: &[u8]) -> Vec<u8> {
        match hash {
            "sha224" => sha2::Sha224::digest(data).to_vec(),
            "sha256" => sha2::Sha256::digest(data).to_vec(),
            "sha384" => sha2::Sha384::digest(data).to_vec(),
            "sha512" => sha2::Sha512::digest(data).to_vec(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn end_point_hash_follows_the_signature_algorithm() {
        // Real certificates: the digest of their DER.
        for (alg, hash) in [
            (&rcgen::PKCS_ECDSA_P256_SHA256, Some("sha256")),
            (&rcgen::PKCS_ECDSA_P384_SHA384, Some("sha384")),
            (&rcgen::PKCS_ED25519, None),
        ] {
            let key = rcgen::KeyPair::generate_for(alg).unwrap();
            let cert = rcgen::CertificateParams::new(vec!["db".into()])
                .unwrap()
                .self_signed(&key)
                .unwrap();
            let der = cert.der().to_vec();
            assert_eq!(
                tls_server_end_point(&der),
                hash.map(|h| digest(h, &der)),
                "{alg:?}"
            );
        }
        // Algorithms rcgen does not sign with, by OID.
        let rsa = |n: u8| [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, n].to_vec();
        let null = der(0x05, &[]);
        let sha2_id = |n: u8| {
            der(
                0x30,
                &[
                    der(0x06, &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, n]),
                    null.clone(),
                ]
                .concat(),
            )
        };
        let sha1_id = der(
            0x30,
            &[der(0x06, &[0x2b, 0x0e, 0x03, 0x02, 0x1a]), null.clone()].concat(),
        );
        let pss = |hash: Option<Vec<u8>>| {
            let fields = hash.map(|h| der(0xa0, &h)).unwrap_or_default();
            der(0x30, &[fields, der(0xa2, &der(0x02, &[32]))].concat())
        };
        // (what, signature algorithm OID, its parameters, the hash)
        type Case<'a> = (&'a str, Vec<u8>, Vec<u8>, Option<&'a str>);
        let cases: Vec<Case> = vec![
            ("md5WithRSA", rsa(4), null.clone(), Some("sha256")),
            ("sha1WithRSA", rsa(5), null.clone(), Some("sha256")),
            ("sha224WithRSA", rsa(14), null.clone(), Some("sha224")),
            ("sha256WithRSA", rsa(11), null.clone(), Some("sha256")),
            ("sha512WithRSA", rsa(13), null.clone(), Some("sha512")),
            (
                "ecdsa-with-SHA224",
                vec![0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x01],
                vec![],
                Some("sha224"),
            ),
            (
                "ecdsa-with-SHA1",
                vec![0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01],
                vec![],
                Some("sha256"),
            ),
            ("PSS SHA-384", rsa(10), pss(Some(sha2_id(2))), Some("sha384")),
            ("PSS SHA-224", rsa(10), pss(Some(sha2_id(4))), Some("sha224")),
            ("PSS SHA-256", rsa(10), pss(Some(sha2_id(1))), Some("sha256")),
            ("PSS SHA-1", rsa(10), pss(Some(sha1_id)), Some("sha256")),
            ("PSS default (SHA-1)", rsa(10), pss(None), Some("sha256")),
            ("PSS unknown hash", rsa(10), pss(Some(sha2_id(9))), None),
            ("PSS without parameters", rsa(10), vec![], None),
            ("unknown", vec![0x2a, 0x03], vec![], None),
        ];
        for (what, oid, params, hash) in cases {
            let cert = cert_signed_with(&oid, &params);
            assert_eq!(
                tls_server_end_point(&cert),
                hash.map(|h| digest(h, &cert)),
                "{what}"
            );
        }
    }
}
