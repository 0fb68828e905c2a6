//! `rediss://`: the chat's Redis backplane over TLS (rustls), with a real
//! `redis-server --tls-port` (Debian's is built with TLS; installed with
//! apt-get if missing; `WSLOOP_SKIP_REDIS=1` skips). The server's
//! certificate is verified: trusted through `SSL_CERT_FILE` (the test CA),
//! rooms work across two instances; not trusted, the backplane stays down
//! and says why.
#![cfg(all(feature = "redis", feature = "tls"))]

mod common;
mod redisproc;

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use redisproc::*;
use serde_json::json;

/// `wsloop serve --app chat --redis URL` with `env`, its log in a file;
/// killed (its PID only) when dropped.
struct Instance {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Instance {
    fn spawn(url: &str, env: &[(&str, &Path)]) -> Instance {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = unique_tmp_path("rediss-serve", ".log");
        let mut cmd = wsloop_command(
            "serve",
            &["--addr", &addr.to_string(), "--app", "chat", "--redis", url],
        );
        cmd.env("RUST_LOG", "info")
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn wsloop serve");
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "wsloop serve did not accept within 10 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(20));
        }
        Instance { child, addr, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill(); // this child's PID only
        let _ = self.child.wait();
    }
}

fn tls_redis() -> Option<Redis> {
    let bin = redis_server()?;
    let pki = Pki::get();
    Some(Redis::start_with(
        bin,
        Some(RedisTls {
            cert: pki.cert("localhost-ip"),
            key: pki.key("localhost-ip"),
            ca: pki.ca(),
        }),
    ))
}

#[test]
fn rediss_shares_rooms_over_tls_with_the_server_verified() {
    let Some(redis) = tls_redis() else {
        return;
    };
    let url = redis.url();
    assert!(url.starts_with("rediss://"), "{url}");
    let ca = Pki::get().ca();
    let a = Instance::spawn(&url, &[("SSL_CERT_FILE", &ca)]);
    let b = Instance::spawn(&url, &[("SSL_CERT_FILE", &ca)]);
    wait_backplane(a.addr, BACKPLANE_WAIT);
    wait_backplane(b.addr, BACKPLANE_WAIT);
    let mut pa = Peer::connect_backplane(a.addr);
    let mut pb = Peer::connect_backplane(b.addr);
    pa.join("t");
    pb.join("t");
    pa.say("t", "over TLS");
    for p in [&mut pa, &mut pb] {
        let m = p.expect("message");
        assert_eq!((seq(&m), m["text"].as_str()), (1, Some("over TLS")), "{m}");
    }
}

#[test]
fn rediss_refuses_a_server_it_cannot_verify() {
    let Some(redis) = tls_redis() else {
        return;
    };
    // The test CA is not among the system's roots.
    let a = Instance::spawn(&redis.url(), &[]);
    wait_until(
        Duration::from_secs(15),
        "a certificate error in the log",
        || a.log_text().contains("certificate"),
    );
    eprintln!("{}", a.log_text());
    let mut p = Peer::connect(a.addr);
    p.send(json!({"type": "join", "room": "t"}));
    let j = p.expect("joined");
    assert_eq!(j["local"], true, "{j}");
    assert!(
        a.log_text().contains("retrying with backoff"),
        "{}",
        a.log_text()
    );
}
