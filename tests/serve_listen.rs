//! The listening sockets of `wsloop serve`: a backlog of 1024 by default
//! (`--backlog`, capped by net.core.somaxconn) instead of the standard
//! library's 128, and with `--threads N` N sockets on the one port
//! (SO_REUSEPORT), one per loop.

mod common;
mod opsutil;

use std::process::{Command, Stdio};

use common::*;
use opsutil::*;

/// The backlog of each socket listening on `port`, from `ss` (a
/// listener's Send-Q is its backlog); `None` if `ss` is not installed.
fn listen_backlogs(port: u16) -> Option<Vec<u32>> {
    let out = Command::new("ss")
        .args(["-Hltn", &format!("sport = :{port}")])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    assert!(out.status.success(), "ss: {out:?}");
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols[2].parse().unwrap_or_else(|_| panic!("ss line {l:?}"))
            })
            .collect(),
    )
}

fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .map_or(4096, |s| s.trim().parse().unwrap())
}

#[test]
fn the_backlog_and_one_listener_per_loop() {
    let cap = somaxconn();
    let srv = spawn_serve(&[], &[], "info");
    let Some(got) = listen_backlogs(srv.addr.port()) else {
        eprintln!("SKIPPED: ss is not installed");
        return;
    };
    assert_eq!(got, [1024.min(cap)], "the default backlog");
    drop(srv);
    let srv = spawn_serve(&["--backlog", "200"], &[], "info");
    assert_eq!(listen_backlogs(srv.addr.port()).unwrap(), [200.min(cap)]);
    drop(srv);
    let srv = spawn_serve(&["--threads", "3"], &[("WSLOOP_BACKLOG", "300")], "info");
    assert_eq!(
        listen_backlogs(srv.addr.port()).unwrap(),
        [300.min(cap); 3],
        "one listener per loop"
    );
    // And each loop takes connections (SO_REUSEPORT spreads them).
    let clients: Vec<TestClient> = (0..60).map(|_| connect(srv.addr)).collect();
    for c in clients {
        c.close_and_wait(1000);
    }
    drop(srv);
    for bad in ["0", "70000", "many"] {
        let out = wsloop_command("serve", &["--check", "--backlog", bad])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--backlog {bad}: {err}");
        assert!(err.contains("--backlog"), "{err}");
    }
}
