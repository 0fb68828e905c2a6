//! TLS configuration helpers (feature `tls`, rustls with its default
//! crypto provider).
//!
//! - [`server_config_from_pem`]: certificate chain and key from PEM files,
//!   ALPN `http/1.1`, errors that name the file and the reason.
//! - [`client_config`]: verification against the bundled Mozilla roots
//!   (webpki-roots) or a given CA file; [`insecure_client_config`] skips
//!   verification, for tests only.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::Error;

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
    let mut cfg = rustls::ServerConfig::builder()
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
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// A client configuration that accepts ANY server certificate. For tests
/// against self-signed servers only: it gives no protection at all.
pub fn insecure_client_config() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder()
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
