//! `wsloop serve --threads 2` under a connect storm: ids name their loop,
//! and both loops take connections (one does not drain the shared backlog
//! while the other starves).

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

/// `wsloop serve --threads N` with debug logs (one line per connection),
/// killed (by its own pid) when dropped.
struct Threaded {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Threaded {
    fn spawn(threads: usize) -> Threaded {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("wsloop-threads-{}-{port}.log", std::process::id()));
        let child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
            .args(["serve", "--addr", &addr.to_string()])
            .args(["--threads", &threads.to_string()])
            .env("RUST_LOG", "wsloop=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn wsloop serve");
        let srv = Threaded { child, addr, log };
        wait_until(Duration::from_secs(10), "wsloop serve to listen", || {
            std::net::TcpStream::connect(addr).is_ok()
        });
        srv
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Opened connections per loop, from the ids in the `open` lines.
    fn opens_per_loop(&self) -> BTreeMap<String, usize> {
        let mut per = BTreeMap::new();
        for line in self.log_text().lines() {
            let Some((_, rest)) = line.split_once("] ") else {
                continue;
            };
            let Some((id, what)) = rest.split_once(": ") else {
                continue;
            };
            if what.starts_with("open ") {
                let lp = id.split_once(':').map_or("(no loop)", |(l, _)| l);
                *per.entry(lp.to_owned()).or_default() += 1;
            }
        }
        per
    }
}

impl Drop for Threaded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

#[test]
fn a_connect_storm_is_shared_by_every_loop() {
    const CONNS: usize = 2000;
    const DIALERS: usize = 8;
    let srv = Threaded::spawn(2);
    let start = Instant::now();
    let dialers: Vec<_> = (0..DIALERS)
        .map(|_| {
            let addr = srv.addr;
            thread::spawn(move || {
                // Connect them all before any upgrade: the loops find a
                // backlog of connections waiting, not one at a time.
                let mut socks: Vec<TcpStream> =
                    (0..CONNS / DIALERS).map(|_| tcp_connect(addr)).collect();
                for s in &mut socks {
                    s.write_all(&upgrade_request(addr, "/").1).unwrap();
                }
                for s in &mut socks {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match s.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            other => panic!("reading a 101: {other:?}"),
                        }
                    }
                    assert!(head.starts_with(b"HTTP/1.1 101"), "{head:?}");
                }
                socks.len()
            })
        })
        .collect();
    let opened: usize = dialers.into_iter().map(|d| d.join().unwrap()).sum();
    assert_eq!(opened, CONNS);
    let took = start.elapsed();
    wait_until(Duration::from_secs(20), "every open logged", || {
        srv.opens_per_loop().values().sum::<usize>() >= CONNS
    });
    let per = srv.opens_per_loop();
    eprintln!("{CONNS} connections in {took:?}, per loop: {per:?}");
    assert_eq!(per.len(), 2, "opens per loop: {per:?}");
    assert!(
        per.values().all(|&n| n > 0),
        "a loop took no connection: {per:?}"
    );
}
