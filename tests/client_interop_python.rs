//! Interop: the wsloop client (library and `wsloop client` binary) against
//! a Python `websockets` echo server (tests/py/echo_server.py). The venv
//! comes from scripts/python-venv.sh (target/py-venv, needs PyPI once).
//! Set WSLOOP_SKIP_PYTHON=1 to skip explicitly; otherwise a missing venv
//! is a failure, not a pass.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{client_session, pattern, text_pattern, BinRun, PyServer};
use wsloop::client::{connect_with, ClientOptions, WebSocket};
use wsloop::{CloseCode, Event, Message};

fn skip() -> bool {
    common::skip_python("the Python interop test")
}

fn open(addr: SocketAddr) -> WebSocket {
    let mut o = ClientOptions::default();
    o.config.handshake_timeout = Duration::from_secs(10);
    let mut ws = connect_with(&format!("ws://{addr}/"), &o)
        .unwrap_or_else(|e| panic!("connect to the Python server at {addr}: {e} ({e:?})"));
    ws.set_read_timeout(Some(Duration::from_secs(20)));
    ws
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
    for (i, &n) in sizes.iter().enumerate() {
        let text = text_pattern(n, i as u8);
        ws.send_text(&text).unwrap();
        match srv.next_message(&mut ws) {
            Message::Text(t) => assert!(t == text, "text {n}: echo differs ({} bytes)", t.len()),
            other => panic!(
                "text {n}: got {:?} of {} bytes",
                other,
                other.as_bytes().len()
            ),
        }
        let bin = pattern(n, i as u8);
        ws.send_binary(&bin).unwrap();
        match srv.next_message(&mut ws) {
            Message::Binary(b) => assert!(b == bin, "binary {n}: echo differs ({} bytes)", b.len()),
            other => panic!("binary {n}: got text of {} bytes", other.as_bytes().len()),
        }
    }
    let multi = "héllo wörld ✓ 🦀";
    ws.send_text(multi).unwrap();
    assert_eq!(srv.next_message(&mut ws), Message::Text(multi.into()));
    // Several in flight at once come back in order.
    for k in 0..20 {
        ws.send_binary(&pattern(1000 + k, k as u8)).unwrap();
    }
    for k in 0..20 {
        assert_eq!(
            srv.next_message(&mut ws),
            Message::Binary(pattern(1000 + k, k as u8).into()),
            "pipelined message {k}"
        );
    }
    ws.ping(b"from wsloop").unwrap();
    loop {
        match ws.recv() {
            Ok(Event::Pong(p)) => {
                assert_eq!(p.as_ref(), b"from wsloop");
                break;
            }
            Ok(Event::Ping(_)) => continue,
            other => panic!("expected a pong, got {other:?}"),
        }
    }
    let info = ws.close(CloseCode::NORMAL, "interop done").unwrap();
    assert_eq!(
        (info.code, info.clean),
        (CloseCode::NORMAL, true),
        "{info:?}; server stderr:\n{}",
        srv.stderr_text()
    );
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
