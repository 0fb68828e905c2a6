//! Interop with permessage-deflate (RFC 7692) against Python `websockets`,
//! which negotiates it by default, both ways:
//! - the Python client (tests/py/deflate_echo_client.py) against
//!   `wsloop serve --deflate` and `--deflate-no-context`, with the
//!   library's default offer, a small-window no-context offer, and no offer;
//! - the wsloop client with `config.deflate.enabled` (library and the
//!   `wsloop client --deflate` binary) against a Python echo server
//!   (tests/py/echo_server.py --report), which reports what it agreed to:
//!   the wsloop client has no accessor for the negotiated extension, so
//!   negotiation is checked on the Python side.
//!
//! The venv comes from scripts/python-venv.sh (target/py-venv, needs PyPI
//! once). Set WSLOOP_SKIP_PYTHON=1 to skip explicitly; otherwise a missing
//! venv is a failure, not a pass.
#![cfg(feature = "deflate")]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use wsloop::client::{ClientOptions, WebSocket};
use wsloop::Message;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

fn skip() -> bool {
    skip_python("the Python deflate interop test")
}

fn python() -> PathBuf {
    python_venv()
}

// ------------------------------------------- Python client → wsloop serve

/// Runs deflate_echo_client.py against `srv` and returns its output.
fn run_client(srv: &BinServer, offer: &str, expect: &[&str]) -> String {
    let mut args = vec![format!("ws://{}/", srv.addr), offer.to_owned()];
    args.extend(expect.iter().map(|e| e.to_string()));
    run_python_client(
        "tests/py/deflate_echo_client.py",
        &args,
        SCRIPT_TIMEOUT,
        srv,
    )
}

#[test]
fn python_client_against_wsloop_serve_deflate() {
    if skip() {
        return;
    }
    let srv = BinServer::spawn(&["--deflate"]);
    let report = run_client(&srv, "default", &[]);
    assert!(report.contains("EXTENSIONS permessage-deflate"), "{report}");
    // A smaller window for each side and no context takeover for the
    // client: the answer names them back.
    run_client(
        &srv,
        "small",
        &[
            "client_no_context_takeover",
            "server_max_window_bits=10",
            "client_max_window_bits=9",
        ],
    );
    // No offer: no answer, plain frames.
    run_client(&srv, "none", &[]);
}

#[test]
fn python_client_against_wsloop_serve_deflate_no_context() {
    if skip() {
        return;
    }
    let srv = BinServer::spawn(&["--deflate-no-context"]);
    let expect = ["server_no_context_takeover", "client_no_context_takeover"];
    run_client(&srv, "default", &expect);
    run_client(&srv, "small", &expect);
}

#[test]
fn python_client_against_wsloop_serve_without_deflate() {
    if skip() {
        return;
    }
    // The default offer is declined and everything still works uncompressed.
    let srv = BinServer::spawn(&[]);
    let report = run_client(&srv, "none", &[]);
    assert!(report.contains("EXTENSIONS None"), "{report}");
    let out = Command::new(python())
        .arg("-c")
        .arg(
            "import sys\nfrom websockets.sync.client import connect\n\
             with connect(sys.argv[1], open_timeout=5) as ws:\n    \
             print(ws.response.headers.get('Sec-WebSocket-Extensions'))\n    \
             ws.send('hi'); assert ws.recv(timeout=5) == 'hi'\n",
        )
        .arg(format!("ws://{}/", srv.addr))
        .output()
        .expect("run python");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "None",
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ------------------------------------- wsloop client → Python server

fn open(addr: SocketAddr, no_context: bool) -> WebSocket {
    let mut o = ClientOptions::default();
    o.config.handshake_timeout = Duration::from_secs(10);
    o.config.deflate.enabled = true;
    o.config.deflate.client_no_context_takeover = no_context;
    o.config.deflate.server_no_context_takeover = no_context;
    open_ws(&format!("ws://{addr}/"), &o, Duration::from_secs(20))
}

/// Repetitive JSON-like text of exactly `n` bytes.
fn compressible(n: usize, seed: usize) -> String {
    let line = format!("{{\"id\":{seed},\"user\":\"user-{seed}\",\"text\":\"hello wörld ✓\"}}\n");
    let mut s = String::with_capacity(n + line.len());
    while s.len() + line.len() <= n {
        s.push_str(&line);
    }
    while s.len() < n {
        s.push('x');
    }
    s
}

/// The next connection's (offer, answer) as `echo_server.py --report`
/// printed them.
fn negotiated(srv: &PyServer) -> (String, String) {
    let offer = srv.next_line("OFFER ");
    let answer = srv.next_line("EXTENSIONS ");
    (offer, answer)
}

fn echo_all(ws: &mut WebSocket, srv: &PyServer) {
    let sizes = [0usize, 1, 63, 64, 125, 126, 65535, 65536, 65537, 1 << 20];
    for (i, &n) in sizes.iter().enumerate() {
        let text = compressible(n, i);
        for rep in 0..2 {
            ws.send_text(&text).unwrap();
            expect_text_or(ws, &text, || {
                format!("compressible #{rep}; {}", srv.context())
            });
        }
        let text = text_pattern(n, i as u8);
        ws.send_text(&text).unwrap();
        expect_text_or(ws, &text, || srv.context());
        let bin = pattern(n, i as u8);
        ws.send_binary(&bin).unwrap();
        expect_binary_or(ws, &bin, || srv.context());
    }
    // Several in flight at once come back in order.
    for k in 0..20 {
        if k % 2 == 0 {
            ws.send_binary(&pattern(1000 + k, k as u8)).unwrap();
        } else {
            ws.send_text(&compressible(1000 + k, k)).unwrap();
        }
    }
    for k in 0..20 {
        let want = if k % 2 == 0 {
            Message::Binary(pattern(1000 + k, k as u8).into())
        } else {
            Message::Text(compressible(1000 + k, k).into())
        };
        assert!(srv.next_message(ws) == want, "pipelined message {k}");
    }
    ping_expect_pong(ws, b"from wsloop");
}

#[test]
fn wsloop_client_deflate_against_python_websockets_server() {
    if skip() {
        return;
    }
    let srv = PyServer::spawn("tests/py/echo_server.py", &["--report".into()]);
    for no_context in [false, true] {
        let mut ws = open(srv.addr, no_context);
        let (offer, answer) = negotiated(&srv);
        eprintln!("no_context {no_context}: offer {offer:?}, answer {answer:?}");
        assert!(offer.starts_with("permessage-deflate"), "offer {offer:?}");
        assert!(
            answer.starts_with("permessage-deflate"),
            "Python did not accept permessage-deflate: offer {offer:?}, answer {answer:?}"
        );
        if no_context {
            assert!(
                answer.contains("server_no_context_takeover")
                    && answer.contains("client_no_context_takeover"),
                "{answer:?}"
            );
        }
        echo_all(&mut ws, &srv);
        close_normally_or(&mut ws, "interop done", || srv.context());
    }
}

#[test]
fn wsloop_client_binary_deflate_against_python_websockets_server() {
    if skip() {
        return;
    }
    let srv = PyServer::spawn("tests/py/echo_server.py", &["--report".into()]);
    let long = compressible(5000, 7).replace('\n', " ");
    let lines = ["short line", long.as_str(), long.as_str()];
    let BinRun {
        code,
        stdout,
        stderr,
    } = client_session(
        &["--deflate", &format!("ws://{}/", srv.addr)],
        &lines,
        Duration::from_secs(5),
    );
    let (_, answer) = negotiated(&srv);
    assert!(
        answer.starts_with("permessage-deflate"),
        "answer {answer:?}; stderr:\n{stderr}"
    );
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    let want: String = lines.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(stdout, want, "stderr:\n{stderr}");
    assert!(stderr.contains("closed: 1000"), "stderr:\n{stderr}");
}
