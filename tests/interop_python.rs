//! Interop: the Python `websockets` client (tests/py/echo_client.py)
//! against `wsloop serve`. The venv comes from scripts/python-venv.sh
//! (target/py-venv, needs PyPI once). Set WSLOOP_SKIP_PYTHON=1 to skip
//! explicitly; otherwise a missing venv is a failure, not a pass.

mod common;

use std::time::Duration;

use common::*;

const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn python_websockets_client_echo() {
    if skip_python("the Python interop test") {
        return;
    }
    let srv = BinServer::spawn(&[]);
    run_python_client(
        "tests/py/echo_client.py",
        &[format!("ws://{}/", srv.addr)],
        SCRIPT_TIMEOUT,
        &srv,
    );
}
