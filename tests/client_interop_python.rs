//! Interop: the wsloop client (library and `wsloop client` binary) against
//! a Python `websockets` echo server (tests/py/echo_server.py). The venv
//! comes from scripts/python-venv.sh (target/py-venv, needs PyPI once).
//! Set WSLOOP_SKIP_PYTHON=1 to skip explicitly; otherwise a missing venv
//! is a failure, not a pass.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use wsloop::client::{ClientOptions, WebSocket};
use wsloop::Message;

fn skip() -> bool {
    skip_python("the Python interop test")
}

fn open(addr: SocketAddr) -> WebSocket {
    let mut o = ClientOptions::default();
    o.config.handshake_timeout = Duration::from_secs(10);
    open_ws(&format!("ws://{addr}/"), &o, Duration::from_secs(20))
}

#[test]
fn wsloop_client_against_python_websockets_server() {
    if skip() {
        return;
    }
    let srv = PyServer::spawn("tests/py/echo_server.py", &[]);
    let mut ws = open(srv.addr);
    let mut sizes = vec![0usize, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 20];
    sizes.push((1 << 20) + 3);
    echo_round_or(&mut ws, &sizes, || srv.context());
    let multi = "héllo wörld ✓ 🦀";
    ws.send_text(multi).unwrap();
    assert_eq!(srv.next_message(&mut ws), Message::Text(multi.into()));
    // Several in flight at once come back in order.
    let msgs: Vec<Vec<u8>> = (0..20).map(|k| pattern(1000 + k, k as u8)).collect();
    echo_pipelined_or(&mut ws, &msgs, || srv.context());
    ping_expect_pong(&mut ws, b"from wsloop");
    close_normally_or(&mut ws, "interop done", || srv.context());
}

#[test]
fn wsloop_client_binary_against_python_websockets_server() {
    if skip() {
        return;
    }
    let srv = PyServer::spawn("tests/py/echo_server.py", &[]);
    let BinRun {
        code,
        stdout,
        stderr,
    } = client_session(
        &[&format!("ws://{}/", srv.addr)],
        &["first line", "second line ✓"],
        Duration::from_secs(5),
    );
    assert_eq!(
        code,
        Some(0),
        "stdout:\n{stdout}\nstderr:\n{stderr}\nserver stderr:\n{}",
        srv.stderr_text()
    );
    assert_eq!(stdout, "first line\nsecond line ✓\n", "stderr:\n{stderr}");
    assert!(stderr.contains("closed: 1000"), "stderr:\n{stderr}");
}
