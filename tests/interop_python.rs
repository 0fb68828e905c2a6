//! Interop: the Python `websockets` client (tests/py/echo_client.py)
//! against `wsloop serve`. The venv comes from scripts/python-venv.sh
//! (target/py-venv, needs PyPI once). Set WSLOOP_SKIP_PYTHON=1 to skip
//! explicitly; otherwise a missing venv is a failure, not a pass.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::BinServer;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn python_websockets_client_echo() {
    if std::env::var("WSLOOP_SKIP_PYTHON").is_ok_and(|v| v == "1") {
        eprintln!("WSLOOP_SKIP_PYTHON=1: skipping the Python interop test");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
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
    let python = stdout
        .lines()
        .last()
        .expect("python-venv.sh printed no path")
        .trim()
        .to_owned();

    let srv = BinServer::spawn(&[]);
    let out_path = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("py-interop-{}.out", std::process::id()));
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = Command::new(&python)
        .arg(root.join("tests/py/echo_client.py"))
        .arg(format!("ws://{}/", srv.addr))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("run echo_client.py");
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > SCRIPT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let report = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    eprintln!("{report}");
    match status {
        None => panic!(
            "echo_client.py did not finish within {SCRIPT_TIMEOUT:?}:\n{report}\nserver log:\n{}",
            srv.log_text()
        ),
        Some(st) => assert!(
            st.success(),
            "echo_client.py failed ({st}):\n{report}\nserver log:\n{}",
            srv.log_text()
        ),
    }
}
