//! Test certificates made with rcgen, once per test process, and the
//! rustls configs built from them (feature `tls`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM files made once per test binary under the target's tmp dir:
/// - `ca.pem`: a test CA (the only trust anchor the clients get);
/// - `localhost.{pem,key}`: a leaf for DNS name `localhost` only;
/// - `localhost-ip.{pem,key}`: a leaf for `localhost` and `127.0.0.1`;
/// - `expired.{pem,key}`: a leaf for `localhost` that expired in 2021;
/// - `selfsigned.{pem,key}`: a self-signed CA certificate for `localhost`
///   (what `openssl req -x509` makes by default), used as a server cert.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn get() -> &'static Pki {
        static PKI: OnceLock<Pki> = OnceLock::new();
        PKI.get_or_init(|| {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("tls-test-certs-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();

            let ca_key = KeyPair::generate().unwrap();
            let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.distinguished_name
                .push(DnType::CommonName, "wsloop test CA");
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            ca.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            write("ca.pem", &ca.self_signed(&ca_key).unwrap().pem());
            let issuer = Issuer::new(ca, ca_key);

            let leaf = |name: &str, names: &[&str], expired: bool| {
                let key = KeyPair::generate().unwrap();
                let names = names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
                let mut p = CertificateParams::new(names).unwrap();
                p.distinguished_name.push(DnType::CommonName, "localhost");
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
                if expired {
                    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
                    p.not_after = rcgen::date_time_ymd(2021, 1, 1);
                }
                let cert = p.signed_by(&key, &issuer).unwrap();
                write(&format!("{name}.pem"), &cert.pem());
                write(&format!("{name}.key"), &key.serialize_pem());
            };
            leaf("localhost", &["localhost"], false);
            leaf("localhost-ip", &["localhost", "127.0.0.1"], false);
            leaf("expired", &["localhost"], true);

            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            write("selfsigned.pem", &p.self_signed(&key).unwrap().pem());
            write("selfsigned.key", &key.serialize_pem());
            Pki { dir }
        })
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
}

/// A server config with certificate `name` of the [`Pki`].
pub fn server_tls(name: &str) -> Arc<rustls::ServerConfig> {
    let pki = Pki::get();
    wsloop::tls::server_config_from_pem(&pki.cert(name), &pki.key(name))
        .unwrap_or_else(|e| panic!("server config for {name}: {e}"))
}

/// A rustls client config trusting only the test CA.
pub fn client_tls() -> Arc<rustls::ClientConfig> {
    wsloop::tls::client_config(Some(&Pki::get().ca())).expect("client config with the test CA")
}
