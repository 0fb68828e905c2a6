//! A `redis-server` process for the chat's fault tests: on a free loopback
//! port, no persistence, paused (SIGSTOP) and resumed, killed and
//! restarted empty, optionally with TLS; chat instances using it. Only the
//! child started here is ever signalled, by its own PID.
//! `WSLOOP_SKIP_REDIS=1` skips the tests that use it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{free_port, BinServer, Peer};

/// The redis-server binary, installed with apt-get if missing; `None`
/// when WSLOOP_SKIP_REDIS=1.
pub fn redis_server() -> Option<PathBuf> {
    if std::env::var_os("WSLOOP_SKIP_REDIS").is_some_and(|v| v == "1") {
        eprintln!("WSLOOP_SKIP_REDIS=1: Redis test skipped");
        return None;
    }
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let find = || {
            ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
        };
        if let Some(p) = find() {
            return Ok(p);
        }
        eprintln!("redis-server not found: installing it with apt-get");
        let mut log = String::new();
        for args in [&["update"][..], &["install", "-y", "redis-server"]] {
            match Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .output()
            {
                Ok(out) => {
                    log.push_str(&String::from_utf8_lossy(&out.stdout));
                    log.push_str(&String::from_utf8_lossy(&out.stderr));
                    if !out.status.success() {
                        return Err(format!("apt-get {} failed:\n{log}", args.join(" ")));
                    }
                }
                Err(e) => return Err(format!("cannot run apt-get: {e}")),
            }
        }
        find().ok_or_else(|| format!("apt-get installed no redis-server:\n{log}"))
    });
    match found {
        Ok(p) => Some(p.clone()),
        Err(e) => panic!(
            "redis-server is needed for this test and could not be installed ({e}); \
             install Debian's redis-server or set WSLOOP_SKIP_REDIS=1 to skip it"
        ),
    }
}

/// TLS files for `redis-server --tls-port` (PEM paths).
#[derive(Clone)]
pub struct RedisTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A redis-server on a loopback port, killed when dropped.
pub struct Redis {
    bin: PathBuf,
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
    tls: Option<RedisTls>,
    paused: bool,
}

impl Redis {
    pub fn start(bin: PathBuf) -> Redis {
        Self::start_with(bin, None)
    }

    /// With `tls`, it serves TLS only (`--port 0 --tls-port PORT`).
    pub fn start_with(bin: PathBuf, tls: Option<RedisTls>) -> Redis {
        let port = free_port();
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("redis-faults-{}-{port}.log", std::process::id()));
        let mut r = Redis {
            bin,
            port,
            child: None,
            log,
            tls,
            paused: false,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, empty) on the same port and waits until it
    /// accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis is running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        match &self.tls {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some(t) => cmd
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&t.cert)
                .arg("--tls-key-file")
                .arg(&t.key)
                .arg("--tls-ca-cert-file")
                .arg(&t.ca)
                .args(["--tls-auth-clients", "no"]),
        };
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--dir", env!("CARGO_TARGET_TMPDIR")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if self.answers() {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("redis-server exited ({st}): {}", self.log_text());
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "redis-server did not come up within 10 s: {}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// PING answered (plain), or the port accepting (TLS).
    fn answers(&self) -> bool {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        if self.tls.is_some() {
            return true;
        }
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    fn signal(&self, sig: &str) {
        let child = self.child.as_ref().expect("redis is running");
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} redis failed");
    }

    /// SIGSTOP: it keeps its sockets but answers nothing.
    pub fn pause(&mut self) {
        self.signal("STOP");
        self.paused = true;
    }

    /// SIGCONT.
    pub fn resume(&mut self) {
        self.signal("CONT");
        self.paused = false;
    }

    /// SIGKILL (its data is lost: no persistence) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // this child's PID only
            let _ = c.wait();
        }
        self.paused = false;
    }

    /// SIGTERM (a clean shutdown), SIGKILL if it is not gone within 5 s;
    /// waits for it.
    pub fn stop(&mut self) {
        if self.paused {
            self.resume();
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(5) {
                let _ = child.kill(); // this child's PID only
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.wait();
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// One command over plain RESP (not for TLS), its reply's first line.
    pub fn command(&self, args: &[&str]) -> String {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if self.paused {
            self.resume();
        }
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// `wsloop serve --app chat --redis URL ARGS`.
pub fn instance(redis: &Redis, args: &[&str]) -> BinServer {
    let url = redis.url();
    let mut all = vec!["--app", "chat", "--redis", &url];
    all.extend_from_slice(args);
    BinServer::spawn(&all)
}

/// Waits until a join on `addr` is served through Redis.
pub fn wait_backplane(addr: SocketAddr, within: Duration) {
    wait_backplane_as(Peer::connect(addr), addr, within);
}

/// [`wait_backplane`] probing with `p`, a member connected to `addr` (e.g.
/// by `Peer::connect_backplane`, which waits longer for each reply).
pub fn wait_backplane_as(mut p: Peer, addr: SocketAddr, within: Duration) {
    let start = Instant::now();
    loop {
        p.send(json!({"type": "join", "room": "probe"}));
        // Once Redis is back the broadcast stream's news (a second welcome
        // and a reset gap on "*", if it started over) may come first.
        let j = loop {
            let v = p.recv();
            if !(v["type"] == "welcome" || v["type"] == "gap" && v["room"] == "*") {
                break v;
            }
        };
        assert_eq!(j["type"], "joined", "{j}");
        if j.get("local").is_none() {
            return;
        }
        assert!(
            start.elapsed() < within,
            "the backplane of {addr} did not come up within {within:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}
