//! Helpers for the operations tests (metrics, draining, proxies, deploy
//! recipes): scrapes and their values, promtool, and `wsloop serve` with a
//! chosen log level and environment.
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::common::*;

/// `GET /metrics` at `addr` (with `Authorization: Bearer token` if given);
/// panics unless it is a 200 in the Prometheus text format.
pub fn scrape(addr: SocketAddr, token: Option<&str>) -> String {
    let r = get_with_token(addr, "/metrics", token);
    assert_eq!(r.status, 200, "scrape: {r:?}");
    assert_eq!(
        r.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8"),
        "{r:?}"
    );
    r.body_text()
}

/// `GET path`, with a bearer token if given.
pub fn get_with_token(addr: SocketAddr, path: &str, token: Option<&str>) -> HttpReply {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    http_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n").as_bytes(),
    )
}

/// The value of the sample `series` (a name, with its labels if it has
/// any: `wsloop_closes_total{code="1009"}`), if present.
pub fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// [`value`], 0 when the sample is absent (labelled counters appear once
/// they count something).
pub fn count(text: &str, series: &str) -> u64 {
    value(text, series).unwrap_or(0.0) as u64
}

/// promtool, installed with apt if missing (Debian's `prometheus` package
/// ships it); `None` (with the reason printed) only if apt itself fails.
pub fn promtool() -> Option<PathBuf> {
    static TOOL: OnceLock<Option<PathBuf>> = OnceLock::new();
    TOOL.get_or_init(|| {
        if let Some(p) = which("promtool") {
            return Some(p);
        }
        eprintln!("promtool is missing: installing Debian's prometheus package (apt-get)");
        let st = Command::new("timeout")
            .args([
                "900",
                "sh",
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                 --no-install-recommends prometheus",
            ])
            .stdin(Stdio::null())
            .status();
        match st {
            Ok(s) if s.success() => {}
            other => {
                eprintln!("SKIPPING the promtool check: apt-get failed ({other:?})");
                return None;
            }
        }
        let p = which("promtool");
        assert!(
            p.is_some(),
            "apt installed prometheus but promtool is not on PATH"
        );
        p
    })
    .clone()
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// `promtool check metrics` on `text`: panics with its complaints unless it
/// passes (lint included).
pub fn promtool_check(text: &str) {
    let Some(tool) = promtool() else {
        return;
    };
    let mut child = Command::new(tool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {:?}\n{}{}\non:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `wsloop serve --addr 127.0.0.1:PORT ARGS` with `RUST_LOG=rust_log` and
/// `env`, its stderr in a log; waits until it accepts connections.
pub fn spawn_serve(args: &[&str], env: &[(&str, &str)], rust_log: &str) -> BinServer {
    for _ in 0..5 {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = unique_tmp_path("wsloop-ops", ".log");
        let child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
            .args(["serve", "--addr", &addr.to_string()])
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn wsloop serve");
        let mut srv = BinServer { child, addr, log };
        let mut up = false;
        for _ in 0..1000 {
            if let Ok(Some(_)) = srv.child.try_wait() {
                break;
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if up {
            return srv;
        }
        eprintln!("wsloop serve did not start: {}", srv.log_text());
    }
    panic!("could not start wsloop serve {args:?}");
}
