//! Interop: the wsloop client (library and `wsloop client` binary) against
//! a Python `websockets` echo server (tests/py/echo_server.py). The venv
//! comes from scripts/python-venv.sh (target/py-venv, needs PyPI once).
//! Set WSLOOP_SKIP_PYTHON=1 to skip explicitly; otherwise a missing venv
//! is a failure, not a pass.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::{client_session, pattern, text_pattern, BinRun};
use wsloop::client::{connect_with, ClientOptions, WebSocket};
use wsloop::{CloseCode, Event, Message};

fn skip() -> bool {
    common::skip_python("the Python interop test")
}

fn python() -> PathBuf {
    common::python_venv()
}

/// tests/py/echo_server.py on a free loopback port; killed when dropped
/// (and it stops by itself when its stdin closes).
struct PyServer {
    child: Child,
    _stdin: ChildStdin,
    addr: SocketAddr,
    stderr: PathBuf,
}

impl PyServer {
    fn spawn() -> PyServer {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let stderr = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "py-echo-server-{}-{:?}.err",
            std::process::id(),
            thread::current().id()
        ));
        let mut child = Command::new(python())
            .arg(root.join("tests/py/echo_server.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("run echo_server.py");
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(out).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30));
        let mut srv = PyServer {
            child,
            _stdin: stdin,
            addr: "127.0.0.1:0".parse().unwrap(),
            stderr,
        };
        let port: u16 = match line.as_deref().map(str::trim) {
            Ok(l) if l.starts_with("PORT ") => l[5..].parse().expect("port number"),
            other => panic!(
                "echo_server.py did not report its port ({other:?}); stderr:\n{}",
                srv.stderr_text()
            ),
        };
        srv.addr.set_port(port);
        srv
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

fn open(addr: SocketAddr) -> WebSocket {
    let mut o = ClientOptions::default();
    o.config.handshake_timeout = Duration::from_secs(10);
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

#[test]
fn wsloop_client_against_python_websockets_server() {
    if skip() {
        return;
    }
    let srv = PyServer::spawn();
    let mut ws = open(srv.addr);
    let mut sizes = vec![0usize, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 20];
    sizes.push((1 << 20) + 3);
    for (i, &n) in sizes.iter().enumerate() {
        let text = text_pattern(n, i as u8);
        ws.send_text(&text).unwrap();
        match next_message(&mut ws, &srv) {
            Message::Text(t) => assert!(t == text, "text {n}: echo differs ({} bytes)", t.len()),
            other => panic!(
                "text {n}: got {:?} of {} bytes",
                other,
                other.as_bytes().len()
            ),
        }
        let bin = pattern(n, i as u8);
        ws.send_binary(&bin).unwrap();
        match next_message(&mut ws, &srv) {
            Message::Binary(b) => assert!(b == bin, "binary {n}: echo differs ({} bytes)", b.len()),
            other => panic!("binary {n}: got text of {} bytes", other.as_bytes().len()),
        }
    }
    let multi = "héllo wörld ✓ 🦀";
    ws.send_text(multi).unwrap();
    assert_eq!(next_message(&mut ws, &srv), Message::Text(multi.into()));
    // Several in flight at once come back in order.
    for k in 0..20 {
        ws.send_binary(&pattern(1000 + k, k as u8)).unwrap();
    }
    for k in 0..20 {
        assert_eq!(
            next_message(&mut ws, &srv),
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
    let srv = PyServer::spawn();
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
