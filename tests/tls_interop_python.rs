//! Interop over TLS (feature `tls`) with Python's ssl module and the
//! `websockets` package:
//! - tests/py/tls_echo_client.py against `wsloop serve --tls-cert/--tls-key`;
//! - the wsloop client (library and `wsloop client --ca`) against
//!   tests/py/echo_server.py --tls.
//!
//! Certificates come from tests/common/pki.rs (rcgen): a test CA and a
//! leaf for `localhost` and 127.0.0.1 signed by it; both sides verify
//! against the CA. The venv
//! comes from scripts/python-venv.sh (target/py-venv, needs PyPI once).
//! Set WSLOOP_SKIP_PYTHON=1 to skip explicitly; otherwise a missing venv is
//! a failure, not a pass.
#![cfg(feature = "tls")]

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use wsloop::client::{connect_with, ClientOptions};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

fn skip() -> bool {
    skip_python("the Python TLS interop test")
}

/// A path of the test PKI as a string: the CA, or the `localhost-ip` leaf
/// (`localhost` and `127.0.0.1`) and its key.
fn ca_path() -> String {
    Pki::get().ca().to_str().unwrap().to_owned()
}
fn cert_path() -> String {
    Pki::get().cert("localhost-ip").to_str().unwrap().to_owned()
}
fn key_path() -> String {
    Pki::get().key("localhost-ip").to_str().unwrap().to_owned()
}

#[test]
fn python_ssl_websockets_client_against_wsloop_serve_tls() {
    if skip() {
        return;
    }
    let _ = python_venv();
    let srv = BinServer::spawn(&["--tls-cert", &cert_path(), "--tls-key", &key_path()]);
    let report = run_python_client(
        "tests/py/tls_echo_client.py",
        &[format!("wss://localhost:{}/", srv.addr.port()), ca_path()],
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
        &["--tls".into(), cert_path(), key_path()],
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

    let ca = Pki::get().ca();
    let mut ws = open_ws(&url, &client_opts(Some(&ca)), Duration::from_secs(30));
    let sizes = [0usize, 125, 126, 65535, 65536, 1 << 20, 16 << 20];
    echo_round_or(&mut ws, &sizes, || srv.context());
    let msgs: Vec<Vec<u8>> = (0..50).map(|k| pattern(3000 + k, k as u8)).collect();
    echo_pipelined_or(&mut ws, &msgs, || srv.context());
    close_normally_or(&mut ws, "tls interop done", || srv.context());
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
    let ca = ca_path();
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
