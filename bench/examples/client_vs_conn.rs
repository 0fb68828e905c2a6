//! Echo load through the library's `Client`, or through a bare
//! `Connection` with the caller's own read buffer (as `wsloop bench`
//! drives it): the same loop otherwise, to see what `Client` costs.
//!
//! ```sh
//! cargo run --release -p wsloop-bench --example client_vs_conn -- \
//!     ws://127.0.0.1:PORT/ client|client-io|conn CONNS PIPELINE SIZE SECONDS
//! ```
//!
//! Binary messages of SIZE bytes, PIPELINE in flight per connection, each
//! echo checked and replaced; one second of warm-up, then SECONDS counted.
//! Prints `DRIVER msgs/s MB/s cpu-µs/msg` (this process's user+system CPU
//! over the counted window, per echo: the load generator's own cost) and
//! the echoes of the whole run (divide a callgrind total by it).
//! `client` drives the client with `handle_event`, `client-io` with
//! `handle_io` (reads on to `WouldBlock`).

use std::io::{self, Read};
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use wsloop::client::{Client, ClientOptions, Url};
use wsloop::handshake::{generate_key, ClientRequest, Head, ResponseReader};
use wsloop::stream::Stream;
use wsloop::{Config, Connection, Event, Message, Role};

/// The read size of both drivers (`wsloop bench` reads 256 KiB at a time).
const READ_BUF: usize = 256 << 10;

struct Load {
    payload: Vec<u8>,
    pipeline: usize,
    from: Instant,
    to: Instant,
    counted: u64,
    /// All echoes, warm-up included (for instruction counts per echo).
    total: u64,
}

impl Load {
    /// One echo arrived: checked, counted if in the window.
    fn echo(&mut self, data: &[u8], now: Instant) {
        assert!(data == self.payload, "echo of {} bytes differs", data.len());
        self.total += 1;
        if now >= self.from && now < self.to {
            self.counted += 1;
        }
    }
}

/// A `Connection` driven by hand: its own upgrade, one shared read buffer.
struct Raw {
    sock: Stream,
    up: Option<(ClientRequest, Vec<u8>, usize, ResponseReader)>,
    ws: Option<Connection>,
}

fn raw_connect(addr: std::net::SocketAddr, url: &Url) -> io::Result<Raw> {
    let tcp = TcpStream::connect(addr)?;
    tcp.set_nodelay(true)?;
    let req = ClientRequest {
        host: url.host_header(),
        target: url.target.clone(),
        key: generate_key(),
        ..ClientRequest::default()
    };
    let mut out = Vec::new();
    req.write(&mut out);
    Ok(Raw {
        sock: Stream::plain(tcp),
        up: Some((req, out, 0, ResponseReader::new())),
        ws: None,
    })
}

fn raw_event(r: &mut Raw, buf: &mut [u8], cfg: &Arc<Config>, load: &mut Load, now: Instant) {
    if let Some((req, out, written, reader)) = r.up.as_mut() {
        if r.sock.sock.peer_addr().is_err() {
            return;
        }
        while *written < out.len() {
            match io::Write::write(&mut r.sock, &out[*written..]) {
                Ok(n) => *written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => panic!("write the upgrade: {e}"),
            }
        }
        let n = match r.sock.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("read the upgrade: {e}"),
        };
        let Head::Complete(resp, rest) = reader.feed(&buf[..n], 8192, 64).expect("response") else {
            return;
        };
        resp.validate_with(req, &cfg.deflate).expect("101");
        assert!(rest.is_empty(), "frames before the first message");
        r.up = None;
        let mut ws = Connection::new(Role::Client, cfg.clone(), now);
        for _ in 0..load.pipeline {
            ws.send_binary(&load.payload).expect("send");
        }
        r.ws = Some(ws);
    }
    let Some(ws) = r.ws.as_mut() else { return };
    loop {
        let n = match r.sock.read(buf) {
            Ok(0) => panic!("the server closed"),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("read: {e}"),
        };
        let mut input = &mut buf[..n];
        while let Some(ev) = ws.poll_event(&mut input, now).expect("frames") {
            let Event::Message(Message::Binary(b)) = ev else {
                panic!("not a binary message: {ev:?}");
            };
            load.echo(&b, now);
            ws.send_binary(&load.payload).expect("send");
        }
        if n < buf.len() {
            break;
        }
    }
    ws.write_to(&mut r.sock).expect("write");
}

/// `ev` is given to `handle_event`; `None` drives with `handle_io`.
fn client_event(c: &mut Client, ev: Option<&mio::event::Event>, load: &mut Load, now: Instant) {
    let was_open = c.is_open();
    match ev {
        Some(ev) => c.handle_event(ev, now),
        None => c.handle_io(now),
    }
    if let Some(e) = c.take_error() {
        panic!("client: {e}");
    }
    if c.is_open() && !was_open {
        for _ in 0..load.pipeline {
            c.send_binary(&load.payload).expect("send");
        }
    }
    while c
        .next_event_with(|ev| match ev {
            Event::Message(Message::Binary(b)) => load.echo(&b, now),
            other => panic!("not a binary message: {other:?}"),
        })
        .is_some()
    {
        c.send_binary(&load.payload).expect("send");
    }
    c.flush().expect("write");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, driver, conns, pipeline, size, secs] = &args[..] else {
        eprintln!("usage: client_vs_conn URL client|client-io|conn CONNS PIPELINE SIZE SECONDS");
        std::process::exit(2);
    };
    let num = |s: &str, what: &str| -> usize {
        s.parse().unwrap_or_else(|_| {
            eprintln!("{what}: not a number: {s}");
            std::process::exit(2)
        })
    };
    let (conns, pipeline) = (num(conns, "CONNS"), num(pipeline, "PIPELINE"));
    let (size, secs) = (num(size, "SIZE"), num(secs, "SECONDS"));
    let url = Url::parse(url).expect("URL");
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .expect("resolve")
        .next()
        .expect("an address");
    let mut opts = ClientOptions::default();
    opts.config.read_buffer_size = READ_BUF;
    opts.config.ping_interval = None;
    let cfg = Arc::new(opts.config.clone());
    let start = Instant::now();
    let from = start + Duration::from_secs(1);
    let mut load = Load {
        payload: (0..size).map(|i| (i * 7) as u8).collect(),
        pipeline,
        from,
        to: from + Duration::from_secs(secs as u64),
        counted: 0,
        total: 0,
    };
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; READ_BUF];
    let mut clients = Vec::new();
    let mut raws = Vec::new();
    let rw = Interest::READABLE | Interest::WRITABLE;
    for i in 0..conns {
        if driver.starts_with("client") {
            let mut c = Client::connect_addr(addr, &url, &opts, start).expect("connect");
            c.register(poll.registry(), Token(i)).expect("register");
            clients.push(c);
        } else {
            let mut r = raw_connect(addr, &url).expect("connect");
            poll.registry()
                .register(&mut r.sock.sock, Token(i), rw)
                .expect("register");
            raws.push(r);
        }
    }
    let mut cpu_from = None;
    while Instant::now() < load.to {
        if cpu_from.is_none() && Instant::now() >= load.from {
            cpu_from = Some(cpu_ticks());
        }
        poll.poll(&mut events, Some(Duration::from_millis(100)))
            .expect("poll");
        let now = Instant::now();
        for ev in events.iter() {
            let i = ev.token().0;
            if driver == "client" {
                client_event(&mut clients[i], Some(ev), &mut load, now);
            } else if driver == "client-io" {
                client_event(&mut clients[i], None, &mut load, now);
            } else {
                raw_event(&mut raws[i], &mut buf, &cfg, &mut load, now);
            }
        }
    }
    let ticks = cpu_ticks() - cpu_from.unwrap_or(0);
    let rate = load.counted as f64 / secs as f64;
    // Clock ticks are 10 ms (USER_HZ 100).
    let us_per_msg = ticks as f64 * 1e4 / load.counted.max(1) as f64;
    let mb = rate * size as f64 / 1e6;
    println!(
        "{driver} {rate:.0} {mb:.1} {us_per_msg:.2} ({} echoes in all)",
        load.total
    );
}

/// User plus system CPU of this process so far, in clock ticks (Linux).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and
    // stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    f.iter().sum()
}
