//! Interop over TLS (feature `tls`) with Python's ssl module and the
//! `websockets` package:
//! - tests/py/tls_echo_client.py against `wsloop serve --tls-cert/--tls-key`;
//! - the wsloop client (library and `wsloop client --ca`) against
//!   tests/py/echo_server.py --tls.
//!
//! Certificates are made here with rcgen: a test CA and a leaf for
//! `localhost` signed by it; both sides verify against the CA. The venv
//! comes from scripts/python-venv.sh (target/py-venv, needs PyPI once).
//! Set WSLOOP_SKIP_PYTHON=1 to skip explicitly; otherwise a missing venv is
//! a failure, not a pass.
#![cfg(feature = "tls")]

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::{
    client_session, pattern, run_python_client, text_pattern, BinRun, BinServer, PyServer,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use wsloop::client::{connect_with, ClientOptions};
use wsloop::{CloseCode, Message};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn skip() -> bool {
    common::skip_python("the Python TLS interop test")
}

fn python() -> PathBuf {
    common::python_venv()
}

/// `ca.pem`, `localhost.pem` and `localhost.key` in a directory made once.
fn certs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tls-interop-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
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
        std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join("localhost.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("localhost.key"), key.serialize_pem()).unwrap();
        dir
    })
}

fn cert_path(name: &str) -> String {
    certs().join(name).to_str().unwrap().to_owned()
}

#[test]
fn python_ssl_websockets_client_against_wsloop_serve_tls() {
    if skip() {
        return;
    }
    let _ = python();
    let srv = BinServer::spawn(&[
        "--tls-cert",
        &cert_path("localhost.pem"),
        "--tls-key",
        &cert_path("localhost.key"),
    ]);
    let report = run_python_client(
        "tests/py/tls_echo_client.py",
        &[
            format!("wss://localhost:{}/", srv.addr.port()),
            cert_path("ca.pem"),
        ],
        SCRIPT_TIMEOUT,
        &srv,
    );
    assert!(
        report.contains("all TLS interop checks passed"),
        "tls_echo_client.py:\n{report}\nserver log:\n{}",
        srv.log_text()
    );
}

/// tests/py/echo_server.py over TLS with the test CA's `localhost` leaf.
fn py_tls_server() -> PyServer {
    PyServer::spawn(
        "tests/py/echo_server.py",
        &[
            "--tls".into(),
            cert_path("localhost.pem"),
            cert_path("localhost.key"),
        ],
    )
}

fn client_opts(ca: Option<&Path>) -> ClientOptions {
    let mut o = ClientOptions::default();
    o.config.handshake_timeout = Duration::from_secs(10);
    o.tls = Some(wsloop::tls::client_config(ca).unwrap());
    o
}

#[test]
fn wsloop_client_against_python_tls_server() {
    if skip() {
        return;
    }
    let srv = py_tls_server();
    let url = format!("wss://localhost:{}/", srv.addr.port());

    // Not trusted without the CA.
    let Err(e) = connect_with(&url, &client_opts(None)) else {
        panic!("{url}: connected without the CA");
    };
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");

    let ca = certs().join("ca.pem");
    let mut ws = connect_with(&url, &client_opts(Some(&ca)))
        .unwrap_or_else(|e| panic!("connect {url}: {e}; server stderr:\n{}", srv.stderr_text()));
    ws.set_read_timeout(Some(Duration::from_secs(30)));
    for (i, &n) in [0usize, 125, 126, 65535, 65536, 1 << 20, 16 << 20]
        .iter()
        .enumerate()
    {
        let text = text_pattern(n, i as u8);
        ws.send_text(&text).unwrap();
        match srv.next_message(&mut ws) {
            Message::Text(t) => assert!(t == text, "text {n}: echo differs ({} bytes)", t.len()),
            other => panic!("text {n}: got binary of {}", other.as_bytes().len()),
        }
        let bin = pattern(n, i as u8);
        ws.send_binary(&bin).unwrap();
        match srv.next_message(&mut ws) {
            Message::Binary(b) => assert!(b == bin, "binary {n}: echo differs ({} bytes)", b.len()),
            other => panic!("binary {n}: got text of {}", other.as_bytes().len()),
        }
    }
    for k in 0..50 {
        ws.send_binary(&pattern(3000 + k, k as u8)).unwrap();
    }
    for k in 0..50 {
        assert_eq!(
            srv.next_message(&mut ws),
            Message::Binary(pattern(3000 + k, k as u8).into()),
            "pipelined message {k}"
        );
    }
    let info = ws.close(CloseCode::NORMAL, "tls interop done").unwrap();
    assert_eq!(
        (info.code, info.clean),
        (CloseCode::NORMAL, true),
        "{info:?}; server stderr:\n{}",
        srv.stderr_text()
    );
}

/// `wsloop client wss://… --ca FILE` used interactively against the
/// Python server: lines go out, echoes come back, ^D closes with 1000.
#[test]
fn wsloop_client_binary_against_python_tls_server() {
    if skip() {
        return;
    }
    let srv = py_tls_server();
    let url = format!("wss://localhost:{}/", srv.addr.port());
    let ca = cert_path("ca.pem");
    let lines = ["over TLS", "second line ✓"];
    let BinRun {
        code,
        stdout,
        stderr,
    } = client_session(&[&url, "--ca", &ca], &lines, Duration::from_secs(10));
    assert_eq!(
        code,
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}\nserver stderr:\n{}",
        srv.stderr_text()
    );
    assert_eq!(stdout, "over TLS\nsecond line ✓\n", "stderr:\n{stderr}");
    assert!(stderr.contains("closed: 1000"), "stderr:\n{stderr}");
}
