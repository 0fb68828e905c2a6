//! Shared helpers for the integration tests, one job per module:
//!
//! - `frames`: frames, messages and test data as bytes;
//! - `net`: raw TCP (connect with timeouts, read to EOF, resets, ports);
//! - `client`: `TestClient`, a blocking WebSocket client over
//!   `std::net::TcpStream` built on wsloop's codec;
//! - `http`: plain HTTP requests and replies;
//! - `ws`: checks with the library's own blocking client (`WebSocket`);
//! - `server`: an in-process `Server` on a thread, and echo handlers
//!   (`Recorder`; `Pusher` for backpressure in `pusher`);
//! - `bin`: the `wsloop` binary as a process (`BinServer`, `run_wsloop`,
//!   `client_session`);
//! - `procfs`: a process's memory, fds and CPU, and the host's TCP sockets,
//!   from /proc;
//! - `python`: the Python venv and the Python interop scripts;
//! - `chat`: a member of `wsloop serve --app chat`;
//! - `pki`: test certificates (feature `tls`);
//! - `wait`: polling with a deadline.
//!
//! Every read and wait has a timeout, so no test can hang: a helper that
//! waits too long panics with what it was waiting for. Everything is
//! re-exported here: tests import from `common` (a glob or by name).
#![allow(dead_code)]

mod bin;
mod chat;
mod client;
mod frames;
mod http;
mod net;
#[cfg(feature = "tls")]
mod pki;
mod procfs;
mod pusher;
mod python;
mod server;
mod wait;
mod ws;

// Each test binary uses a part of these.
#[allow(unused_imports)]
pub use self::{
    bin::*, chat::*, client::*, frames::*, http::*, net::*, procfs::*, pusher::*, python::*,
    server::*, wait::*, ws::*,
};
#[cfg(feature = "tls")]
#[allow(unused_imports)]
pub use pki::*;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The repository's root: scripts/, tests/py/ and README.md are there
/// (`CARGO_MANIFEST_DIR` is cli/, the package that declares the tests).
pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A path in the target's tmp dir no other call or test process gets:
/// `{prefix}-{pid}-{n}{suffix}`.
pub fn unique_tmp_path(prefix: &str, suffix: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{prefix}-{}-{}{suffix}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}
