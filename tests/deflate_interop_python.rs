//! Interop with permessage-deflate (RFC 7692) against Python `websockets`,
//! which negotiates it by default, both ways:
//! - the Python client (tests/py/deflate_echo_client.py) against
//!   `wsloop serve --deflate` and `--deflate-no-context`, with the
//!   library's default offer, a small-window no-context offer, and no offer;
//! - the wsloop client with `config.deflate.enabled` (library and the
//!   `wsloop client --deflate` binary) against a Python echo server
//!   (tests/py/deflate_echo_server.py), which reports what it agreed to:
//!   the wsloop client has no accessor for the negotiated extension, so
//!   negotiation is checked on the Python side.
//!
//! The venv comes from scripts/python-venv.sh (target/py-venv, needs PyPI
//! once). Set WSLOOP_SKIP_PYTHON=1 to skip explicitly; otherwise a missing
//! venv is a failure, not a pass.
#![cfg(feature = "deflate")]

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{client_session, pattern, run_python_client, text_pattern, BinRun, BinServer};
use wsloop::client::{connect_with, ClientOptions, WebSocket};
use wsloop::{CloseCode, Event, Message};

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);

fn skip() -> bool {
    common::skip_python("the Python deflate interop test")
}

fn python() -> PathBuf {
    common::python_venv()
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

/// tests/py/deflate_echo_server.py on a free loopback port; its stdout
/// lines (after PORT) arrive on `lines`. Killed when dropped (and it stops
/// by itself when its stdin closes).
struct PyServer {
    child: Child,
    _stdin: ChildStdin,
    addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
}

impl PyServer {
    fn spawn() -> PyServer {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let stderr = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "py-deflate-server-{}-{:?}.err",
            std::process::id(),
            thread::current().id()
        ));
        let mut child = Command::new(python())
            .arg(root.join("tests/py/deflate_echo_server.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("run deflate_echo_server.py");
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(30));
        let mut srv = PyServer {
            child,
            _stdin: stdin,
            addr: "127.0.0.1:0".parse().unwrap(),
            lines,
            stderr,
        };
        let port: u16 = match first.as_deref().map(str::trim) {
            Ok(l) if l.starts_with("PORT ") => l[5..].parse().expect("port number"),
            other => panic!(
                "deflate_echo_server.py did not report its port ({other:?}); stderr:\n{}",
                srv.stderr_text()
            ),
        };
        srv.addr.set_port(port);
        srv
    }

    /// The next connection's (offer, answer) as the server printed them.
    fn negotiated(&self) -> (String, String) {
        let next = |what: &str| {
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|e| {
                    panic!(
                        "no {what} line from the server ({e}): {}",
                        self.stderr_text()
                    )
                });
            l.strip_prefix(what)
                .unwrap_or_else(|| panic!("expected {what}, got {l:?}"))
                .trim()
                .to_owned()
        };
        let offer = next("OFFER ");
        let answer = next("EXTENSIONS ");
        (offer, answer)
    }

    fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill(); // this child's PID only
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr);
    }
}

fn open(addr: SocketAddr, no_context: bool) -> WebSocket {
    let mut o = ClientOptions::default();
    o.config.handshake_timeout = Duration::from_secs(10);
    o.config.deflate.enabled = true;
    o.config.deflate.client_no_context_takeover = no_context;
    o.config.deflate.server_no_context_takeover = no_context;
    let mut ws = connect_with(&format!("ws://{addr}/"), &o)
        .unwrap_or_else(|e| panic!("connect to the Python server at {addr}: {e} ({e:?})"));
    ws.set_read_timeout(Some(Duration::from_secs(20)));
    ws
}

fn next_message(ws: &mut WebSocket, srv: &PyServer) -> Message<'static> {
    loop {
        match ws.recv() {
            Ok(Event::Message(m)) => return m,
            Ok(Event::Ping(_) | Event::Pong(_)) => continue,
            other => panic!(
                "expected a message, got {other:?}; server stderr:\n{}",
                srv.stderr_text()
            ),
        }
    }
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

fn echo_all(ws: &mut WebSocket, srv: &PyServer) {
    let sizes = [0usize, 1, 63, 64, 125, 126, 65535, 65536, 65537, 1 << 20];
    for (i, &n) in sizes.iter().enumerate() {
        let text = compressible(n, i);
        for rep in 0..2 {
            ws.send_text(&text).unwrap();
            match next_message(ws, srv) {
                Message::Text(t) => {
                    assert!(
                        t == text,
                        "compressible text {n} #{rep}: echo differs ({} bytes)",
                        t.len()
                    )
                }
                other => panic!("text {n}: got {} bytes of binary", other.as_bytes().len()),
            }
        }
        let text = text_pattern(n, i as u8);
        ws.send_text(&text).unwrap();
        assert!(
            next_message(ws, srv) == Message::Text(text.as_str().into()),
            "text pattern {n}: echo differs"
        );
        let bin = pattern(n, i as u8);
        ws.send_binary(&bin).unwrap();
        match next_message(ws, srv) {
            Message::Binary(b) => assert!(b == bin, "binary {n}: echo differs ({} bytes)", b.len()),
            other => panic!("binary {n}: got text of {} bytes", other.as_bytes().len()),
        }
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
        assert!(next_message(ws, srv) == want, "pipelined message {k}");
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
}

#[test]
fn wsloop_client_deflate_against_python_websockets_server() {
    if skip() {
        return;
    }
    let srv = PyServer::spawn();
    for no_context in [false, true] {
        let mut ws = open(srv.addr, no_context);
        let (offer, answer) = srv.negotiated();
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
        let info = ws.close(CloseCode::NORMAL, "interop done").unwrap();
        assert_eq!(
            (info.code, info.clean),
            (CloseCode::NORMAL, true),
            "{info:?}; server stderr:\n{}",
            srv.stderr_text()
        );
    }
}

#[test]
fn wsloop_client_binary_deflate_against_python_websockets_server() {
    if skip() {
        return;
    }
    let srv = PyServer::spawn();
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
    let (_, answer) = srv.negotiated();
    assert!(
        answer.starts_with("permessage-deflate"),
        "answer {answer:?}; stderr:\n{stderr}"
    );
    assert_eq!(code, Some(0), "stderr:\n{stderr}");
    let want: String = lines.iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(stdout, want, "stderr:\n{stderr}");
    assert!(stderr.contains("closed: 1000"), "stderr:\n{stderr}");
}
