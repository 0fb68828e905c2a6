//! TLS configuration helpers (feature `tls`, rustls with its default
//! crypto provider).
//!
//! - [`server_config_from_pem`]: certificate chain and key from PEM files,
//!   ALPN `http/1.1`, errors that name the file and the reason.
//! - [`client_config`]: verification against the bundled Mozilla roots
//!   (webpki-roots) or a given CA file; [`insecure_client_config`] skips
//!   verification, for tests only.
//!
//! All three use rustls' default provider (aws-lc-rs) and its safe
//! defaults (TLS 1.3 and 1.2, its cipher suites, key exchange groups and
//! signature schemes), with one change: AES-128-GCM is preferred over
//! AES-256-GCM (see [`provider`]).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CipherSuite, DigitallySignedStruct, RootCertStore, SignatureScheme, SupportedCipherSuite,
};

use crate::error::Error;

/// rustls' default provider with the AES-128-GCM suites ahead of the
/// AES-256-GCM ones (TLS 1.3 and 1.2 each), everything else unchanged.
///
/// Why: AES-128 runs 10 rounds per block against AES-256's 14, so bulk
/// encryption costs less, and 128-bit keys are as standard and as strong
/// in practice: they are what browsers offer first and the suite TLS 1.3
/// requires every implementation to support (RFC 8446 §9.1). A rustls client prefers
/// AES-256 otherwise, and a rustls server follows the client's order (so
/// a client that prefers ChaCha20, having no AES hardware, still gets it).
pub fn provider() -> CryptoProvider {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    // Stable, and AES-256 only moves behind AES-128: ChaCha20 and the
    // TLS 1.2 suites stay behind both, as in rustls' own order.
    p.cipher_suites.sort_by_key(|s| {
        let rank = match s.suite() {
            CipherSuite::TLS13_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
            CipherSuite::TLS13_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | CipherSuite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
            _ => 2,
        };
        (matches!(s, SupportedCipherSuite::Tls12(_)), rank)
    });
    p
}

fn tls_err(msg: String) -> Error {
    Error::Tls(msg)
}

/// Reads every certificate in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let name = path.display();
    std::fs::metadata(path).map_err(|e| tls_err(format!("{name}: {e}")))?;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(format!("{name}: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(format!("{name}: not a valid PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(format!(
            "{name}: no certificate (BEGIN CERTIFICATE) found"
        )));
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) in a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    let name = path.display();
    std::fs::metadata(path).map_err(|e| tls_err(format!("{name}: {e}")))?;
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| tls_err(format!("{name}: no usable private key: {e}")))
}

/// A server configuration from a PEM certificate chain and key, with ALPN
/// `http/1.1`. A key that does not match the certificate is an error.
pub fn server_config_from_pem(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, Error> {
    let certs = load_certs(cert)?;
    let key_der = load_key(key)?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| tls_err(format!("{} and {}: {e}", cert.display(), key.display())))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A client configuration that trusts the bundled Mozilla roots, or only
/// the certificates in `ca` when given.
pub fn client_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, Error> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for c in load_certs(path)? {
                roots
                    .add(c)
                    .map_err(|e| tls_err(format!("{}: {e}", path.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A client configuration that accepts ANY server certificate. For tests
/// against self-signed servers only: it gives no protection at all.
pub fn insecure_client_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// The server name to verify and send (SNI) for `host`.
pub fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(host.to_owned()).map_err(|e| tls_err(format!("'{host}': {e}")))
}

#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
