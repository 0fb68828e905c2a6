//! Memory of idle clients: many open `Client`s in one process, measured by
//! the process's VmRSS (Linux only).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::{Client, ClientOptions, Url};
use crate::handshake::accept_key;

fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Answers each upgrade request with a 101 and keeps the socket open (the
/// sockets cost the kernel, not this process's heap).
fn upgrade_server(listener: TcpListener, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut s, _) = listener.accept().expect("accept");
        let mut req = Vec::new();
        let mut b = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let k = s.read(&mut b).expect("read request");
            assert!(k > 0, "client closed during its request");
            req.extend_from_slice(&b[..k]);
        }
        let text = String::from_utf8_lossy(&req);
        let key = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("Sec-WebSocket-Key:")
                    .or(l.strip_prefix("sec-websocket-key:"))
            })
            .expect("key")
            .trim()
            .to_string();
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(key.as_bytes())
        );
        s.write_all(resp.as_bytes()).expect("write response");
        held.push(s);
    }
    held
}

/// 2,000 clients (10,000 would pass the 20,000 open files a process may
/// have, with both ends here): once open and idle, each costs at most 2 KiB
/// of RSS (1.35 measured: the 600-byte `Client` itself, its own copy of
/// the `Config` and the `Connection`'s state; it was 13.6 KiB with a read
/// buffer per client and a 4 KiB queue chunk for the request). Alone, as
/// RSS is the whole process's:
/// `cargo test -p wsloop --lib idle_clients -- --ignored --test-threads=1`.
#[test]
#[ignore = "measures the whole process's RSS: run alone"]
fn idle_clients_cost_at_most_2_kib_each() {
    const N: usize = 2_000;
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || upgrade_server(listener, N));
    let url = Url::parse(&format!("ws://{addr}/")).expect("url");
    let opts = ClientOptions::default();
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(1024);
    let mut clients: Vec<Client> = Vec::with_capacity(N);
    let before = vm_rss_kib().expect("VmRSS");
    for i in 0..N {
        let mut c = Client::connect_addr(addr, &url, &opts, Instant::now()).expect("connect");
        c.register(poll.registry(), Token(i)).expect("register");
        clients.push(c);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while clients.iter().any(|c| !c.is_open()) {
        assert!(Instant::now() < deadline, "clients did not open in 60 s");
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .expect("poll");
        for ev in events.iter() {
            let c = &mut clients[ev.token().0];
            c.handle_io(Instant::now());
            while c.next_event().is_some() {}
            assert!(c.take_error().is_none(), "client {} failed", ev.token().0);
        }
    }
    let after = vm_rss_kib().expect("VmRSS");
    let held = server.join().expect("server thread");
    let per = (after.saturating_sub(before)) as f64 / N as f64;
    eprintln!(
        "sizes: Client {} Connection {} Config {}",
        std::mem::size_of::<Client>(),
        std::mem::size_of::<crate::protocol::Connection>(),
        std::mem::size_of::<crate::config::Config>()
    );
    eprintln!("{N} idle clients: VmRSS {before} -> {after} KiB, {per:.2} KiB each");
    assert!(per <= 2.0, "{per:.2} KiB per idle client");
    drop(held);
}
