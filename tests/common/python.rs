//! Python interop: the venv with `websockets` (scripts/python-venv.sh), a
//! Python client script run to completion against a server, and a Python
//! test server on a free port.

use std::io::{self, BufRead};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Mutex};
use std::thread;
use std::time::Duration;

use super::bin::BinServer;
use super::wait::wait_child;
use super::ws::next_message_or;
use super::{repo_root, unique_tmp_path};

/// True (and says so) when `WSLOOP_SKIP_PYTHON=1` asks to skip `what`.
pub fn skip_python(what: &str) -> bool {
    let skip = std::env::var("WSLOOP_SKIP_PYTHON").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("WSLOOP_SKIP_PYTHON=1: skipping {what}");
    }
    skip
}

/// The python of the venv with `websockets` (scripts/python-venv.sh,
/// target/py-venv), created once per test process. Panics with a clear
/// message if it cannot be created.
pub fn python_venv() -> PathBuf {
    static CACHED: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut cached = CACHED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = cached.as_ref() {
        return p.clone();
    }
    let root = repo_root();
    let venv = Command::new("sh")
        .arg(root.join("scripts/python-venv.sh"))
        .env("WSLOOP_PY_VENV", root.join("target/py-venv"))
        .stderr(Stdio::piped())
        .output()
        .expect("run scripts/python-venv.sh");
    if !venv.status.success() {
        panic!(
            "could not create the Python venv with `websockets` (scripts/python-venv.sh \
             exited {}; no network?). Set WSLOOP_SKIP_PYTHON=1 to skip this test.\n{}",
            venv.status,
            String::from_utf8_lossy(&venv.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&venv.stdout);
    let path = PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("python-venv.sh printed no path")
            .trim(),
    );
    *cached = Some(path.clone());
    path
}

/// Runs the venv's Python on `script` (a path from the repository root)
/// with `args`, against `srv`, to completion: stdout and stderr together
/// make the returned report (also printed). Panics, with the report and
/// the server's log, if the script fails or runs longer than `within`
/// (then it is killed: this child's PID only).
pub fn run_python_client(
    script: &str,
    args: &[String],
    within: Duration,
    srv: &BinServer,
) -> String {
    let out_path = unique_tmp_path("py-client", ".out");
    let out = std::fs::File::create(&out_path).expect("create the script's output file");
    let mut child = Command::new(python_venv())
        .arg(repo_root().join(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let status = wait_child(&mut child, within);
    if status.is_none() {
        let _ = child.kill(); // this child's PID only
        let _ = child.wait();
    }
    let report = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    eprintln!("--- {script} {args:?}:\n{report}");
    match status {
        None => panic!(
            "{script} {args:?} did not finish within {within:?}:\n{report}\nserver log:\n{}",
            srv.log_text()
        ),
        Some(st) => assert!(
            st.success(),
            "{script} {args:?} failed ({st}):\n{report}\nserver log:\n{}",
            srv.log_text()
        ),
    }
    report
}

/// A Python test server (tests/py/*_server.py) on a free loopback port: it
/// prints `PORT n` first, then any report lines, which arrive on
/// [`PyServer::next_line`]. Killed when dropped (the scripts also stop by
/// themselves when their stdin closes).
pub struct PyServer {
    child: Child,
    _stdin: ChildStdin,
    pub addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
}

impl PyServer {
    /// Runs the venv's Python on `script` (a path from the repository
    /// root) with `args` and waits up to 30 s for the port it reports.
    pub fn spawn(script: &str, args: &[String]) -> PyServer {
        let stderr = unique_tmp_path("py-server", ".err");
        let mut child = Command::new(python_venv())
            .arg(repo_root().join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("create the server's stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("run {script}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in io::BufReader::new(out).lines() {
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
                "{script} did not report its port ({other:?}); stderr:\n{}",
                srv.stderr_text()
            ),
        };
        srv.addr.set_port(port);
        srv
    }

    /// The next line the server printed, which must start with `prefix`;
    /// returns the rest, trimmed. Waits up to 10 s.
    pub fn next_line(&self, prefix: &str) -> String {
        let l = self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| {
                panic!(
                    "no {prefix} line from the server ({e}): {}",
                    self.stderr_text()
                )
            });
        l.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected {prefix}, got {l:?}"))
            .trim()
            .to_owned()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// What a failed check against this server shows: its stderr.
    pub fn context(&self) -> String {
        format!("server stderr:\n{}", self.stderr_text())
    }

    /// The next data message on `ws` (a client of this server), skipping
    /// pings and pongs; panics with the server's stderr on anything else.
    pub fn next_message(&self, ws: &mut wsloop::client::WebSocket) -> wsloop::Message<'static> {
        next_message_or(ws, || self.context())
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill(); // this child's PID only
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr);
    }
}
