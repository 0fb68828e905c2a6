//! Memory of idle clients: many open `Client`s in one process, measured by
//! the process's VmRSS (Linux only). The server is another process (this
//! test binary again), so the 20,000 open files of a process hold 10,000
//! clients.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::{Client, ClientOptions, Url};
use crate::handshake::accept_key;

const SERVER_ENV: &str = "WSLOOP_IDLE_SERVER";

fn vm_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Answers one upgrade request with a 101.
pub(super) fn upgrade(s: &mut TcpStream) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut b = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let k = s.read(&mut b)?;
        if k == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        req.extend_from_slice(&b[..k]);
    }
    let text = String::from_utf8_lossy(&req);
    let key = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("Sec-WebSocket-Key:")
                .or(l.strip_prefix("sec-websocket-key:"))
        })
        .unwrap_or("")
        .trim()
        .to_string();
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
        accept_key(key.as_bytes())
    );
    s.write_all(resp.as_bytes())
}

/// Not a test: the server process of `idle_clients_cost_at_most_1_kib_each`
/// (does nothing unless started by it). Upgrades and holds the connections
/// until its stdin closes (the test ended) or 5 minutes pass.
#[test]
#[ignore = "the server process of idle_clients_cost_at_most_1_kib_each"]
fn idle_upgrade_server_process() {
    let Some(n) = std::env::var(SERVER_ENV).ok().and_then(|v| v.parse().ok()) else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    println!("IDLE_SERVER {}", listener.local_addr().expect("addr"));
    let _ = std::io::stdout().flush();
    let mut held = Vec::with_capacity(n);
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(300));
        std::process::exit(0);
    });
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    for _ in 0..n {
        let (mut s, _) = listener.accept().expect("accept");
        if upgrade(&mut s).is_ok() {
            held.push(s);
        }
    }
    std::thread::sleep(Duration::from_secs(300));
}

/// Starts the server process; returns it and its address.
fn server_process(n: usize) -> (std::process::Child, SocketAddr) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--ignored",
            "--exact",
            "client::idle_tests::idle_upgrade_server_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SERVER_ENV, n.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the server process");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the server process ended before listening")
            .expect("read the server's output");
        // libtest prints the test's name on the same line first.
        if let Some((_, a)) = line.split_once("IDLE_SERVER ") {
            break a.trim().parse().expect("address");
        }
    };
    // Its output is not needed any more; drain it so it never blocks.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

/// 10,000 open, idle clients in this process (the server is another): each
/// costs at most 1 KiB of RSS (the `Client` itself; the `Config` is shared
/// and no buffer is held). It was 13.6 KiB with a 64 KiB read buffer per
/// client, then 1.35-1.43 with a `Config` per client and input buffers.
/// Alone, as RSS is the whole process's: `cargo test -p wsloop --lib
/// idle_clients -- --ignored --test-threads=1 --nocapture`
/// (`WSLOOP_IDLE_CLIENTS=N` for another count).
#[test]
#[ignore = "measures the whole process's RSS: run alone"]
fn idle_clients_cost_at_most_1_kib_each() {
    let n: usize = std::env::var("WSLOOP_IDLE_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    // Connects in waves, so the server's accept backlog never overflows
    // (a dropped SYN is retried after a second).
    const WAVE: usize = 100;
    let (mut server, addr) = server_process(n);
    let url = Url::parse(&format!("ws://{addr}/")).expect("url");
    let opts = ClientOptions::default();
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(1024);
    let mut clients: Vec<Client> = Vec::with_capacity(n);
    let before = vm_rss_kib().expect("VmRSS");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut open = 0;
    while open < n {
        assert!(
            Instant::now() < deadline,
            "{open} of {n} clients opened in 120 s"
        );
        while clients.len() < n && clients.len() < open + WAVE {
            let i = clients.len();
            let mut c = Client::connect_addr(addr, &url, &opts, Instant::now()).expect("connect");
            c.register(poll.registry(), Token(i)).expect("register");
            clients.push(c);
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .expect("poll");
        for ev in events.iter() {
            let c = &mut clients[ev.token().0];
            let was_open = c.is_open();
            c.handle_io(Instant::now());
            while c.next_event().is_some() {}
            assert!(c.take_error().is_none(), "client {} failed", ev.token().0);
            if c.is_open() && !was_open {
                open += 1;
            }
        }
    }
    let after = vm_rss_kib().expect("VmRSS");
    let per = (after.saturating_sub(before)) as f64 / n as f64;
    eprintln!(
        "sizes: Client {} Connection {} Config {}",
        std::mem::size_of::<Client>(),
        std::mem::size_of::<crate::protocol::Connection>(),
        std::mem::size_of::<crate::config::Config>()
    );
    eprintln!("{n} idle clients: VmRSS {before} -> {after} KiB, {per:.3} KiB each");
    drop(clients);
    drop(server.stdin.take());
    let _ = server.kill();
    let _ = server.wait();
    assert!(per <= 1.0, "{per:.3} KiB per idle client");
}
