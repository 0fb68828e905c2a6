//! Fan-out benchmark for `wsloop serve --app chat`: N connections join one
//! room (or, with `--mode broadcast`, just listen), one more connection
//! sends M messages, and the rate at which the server delivers them is
//! measured:
//!
//! ```text
//! messages delivered per second = N × M / (first send → last delivery)
//! ```
//!
//! Every message the server fans out is encoded once and its bytes shared by
//! all N write queues; this measures that path end to end (JSON, history,
//! frame queueing, `writev`), with the receivers' reading included in the
//! time. Run the server and this load on separate cores:
//!
//! ```sh
//! cargo build --release --bin wsloop --example fanout
//! taskset -c 0 target/release/wsloop serve --app chat --addr 127.0.0.1:9100 &
//! taskset -c 1 target/release/examples/fanout --url ws://127.0.0.1:9100/ws
//! ```
//!
//! Options: `--conns N` (5000), `--messages M` per run (100), `--size B`
//! text bytes per message (64), `--mode room|broadcast` (room), `--runs R`
//! (3; the median is reported with min and max). Each receiver uses one
//! file descriptor: keep N below the open-file limit (20,000 here).
//!
//! Receivers are raw non-blocking sockets on one mio `Poll`: frames are
//! only counted, never copied, so that the load generator is not what is
//! measured.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use wsloop::client::Url;
use wsloop::frame::{parse_header, write_frame, FrameHeader, OpCode};
use wsloop::handshake::{generate_key, ClientRequest, Head, ResponseReader};

struct Opts {
    url: String,
    conns: usize,
    messages: usize,
    size: usize,
    broadcast: bool,
    runs: usize,
}

fn parse_args() -> Opts {
    let mut o = Opts {
        url: String::new(),
        conns: 5000,
        messages: 100,
        size: 64,
        broadcast: false,
        runs: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .unwrap_or_else(|| die(&format!("{a} needs a value")))
        };
        let num = |v: String| -> usize {
            v.parse()
                .unwrap_or_else(|_| die(&format!("bad number '{v}'")))
        };
        match a.as_str() {
            "--url" => o.url = val(),
            "--conns" => o.conns = num(val()),
            "--messages" => o.messages = num(val()),
            "--size" => o.size = num(val()),
            "--runs" => o.runs = num(val()).max(1),
            "--mode" => {
                o.broadcast = match val().as_str() {
                    "room" => false,
                    "broadcast" => true,
                    v => die(&format!("--mode: '{v}' is not room or broadcast")),
                }
            }
            "-h" | "--help" => {
                println!(
                    "fanout --url ws://HOST:PORT/ws [--conns N] [--messages M] [--size B] \
                     [--mode room|broadcast] [--runs R]"
                );
                std::process::exit(0);
            }
            _ => die(&format!("unknown argument '{a}'")),
        }
    }
    if o.url.is_empty() {
        die("--url ws://HOST:PORT/ws is required (a running `wsloop serve --app chat`)");
    }
    o
}

fn die(msg: &str) -> ! {
    eprintln!("fanout: {msg}");
    std::process::exit(2)
}

enum State {
    Connecting,
    Handshake(ResponseReader),
    Open,
}

struct Conn {
    sock: TcpStream,
    state: State,
    /// Bytes to write (the upgrade request, the join).
    out: Vec<u8>,
    /// An incomplete frame carried to the next read.
    tail: Vec<u8>,
    /// Text frames received.
    texts: u64,
    req: ClientRequest,
}

/// A masked client text frame.
fn text_frame(s: &str) -> Vec<u8> {
    let h = FrameHeader {
        mask: Some(wsloop::rand::mask_key()),
        ..FrameHeader::new(OpCode::Text, s.len() as u64)
    };
    let mut v = Vec::new();
    write_frame(&h, s.as_bytes(), &mut v);
    v
}

/// Counts the whole frames at the start of `buf`; returns the bytes used.
fn count_frames(buf: &[u8], texts: &mut u64) -> usize {
    let mut pos = 0;
    loop {
        match parse_header(&buf[pos..]) {
            Ok(Some((h, n))) => {
                let end = pos + n + h.payload_len as usize;
                if end > buf.len() {
                    return pos;
                }
                match h.opcode {
                    OpCode::Text => *texts += 1,
                    OpCode::Close => die("the server closed a connection"),
                    _ => {}
                }
                pos = end;
            }
            Ok(None) => return pos,
            Err(e) => die(&format!("bad frame from the server: {e}")),
        }
    }
}

impl Conn {
    fn flush(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.sock.write(&self.out) {
                Ok(n) => {
                    self.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn on_ready(&mut self, scratch: &mut [u8]) -> io::Result<()> {
        if let State::Connecting = self.state {
            if let Some(e) = self.sock.take_error()? {
                return Err(e);
            }
            match self.sock.peer_addr() {
                Ok(_) => self.state = State::Handshake(ResponseReader::new()),
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        self.flush()?;
        loop {
            let n = match self.sock.read(scratch) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed",
                    ))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let data = &scratch[..n];
            match &mut self.state {
                State::Connecting => unreachable!(),
                State::Handshake(reader) => match reader.feed(data, 8192, 64) {
                    Ok(Head::Partial) => {}
                    Ok(Head::Complete(resp, rest)) => {
                        resp.validate(&self.req)
                            .map_err(|e| io::Error::other(format!("upgrade refused: {e}")))?;
                        self.state = State::Open;
                        let used = count_frames(&rest, &mut self.texts);
                        self.tail.extend_from_slice(&rest[used..]);
                    }
                    Err(e) => return Err(io::Error::other(format!("bad response: {e}"))),
                },
                State::Open => {
                    if self.tail.is_empty() {
                        let used = count_frames(data, &mut self.texts);
                        self.tail.extend_from_slice(&data[used..]);
                    } else {
                        self.tail.extend_from_slice(data);
                        let used = count_frames(&self.tail, &mut self.texts);
                        self.tail.drain(..used);
                    }
                }
            }
        }
    }
}

struct Load {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    scratch: Vec<u8>,
}

impl Load {
    /// Handles events until `done` holds or `limit` passes.
    fn pump(&mut self, limit: Duration, what: &str, mut done: impl FnMut(&[Conn]) -> bool) {
        let deadline = Instant::now() + limit;
        while !done(&self.conns) {
            let now = Instant::now();
            if now >= deadline {
                die(&format!("timed out: {what}"));
            }
            self.poll
                .poll(
                    &mut self.events,
                    Some((deadline - now).min(Duration::from_millis(100))),
                )
                .unwrap_or_else(|e| die(&format!("poll: {e}")));
            for ev in self.events.iter() {
                let i = ev.token().0;
                if let Err(e) = self.conns[i].on_ready(&mut self.scratch) {
                    die(&format!("connection {i}: {e}"));
                }
            }
        }
    }
}

fn connect(poll: &Poll, i: usize, addr: SocketAddr, url: &Url) -> Conn {
    let mut sock = TcpStream::connect(addr).unwrap_or_else(|e| die(&format!("connect: {e}")));
    poll.registry()
        .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)
        .unwrap_or_else(|e| die(&format!("register: {e}")));
    let req = ClientRequest {
        host: url.host_header(),
        target: url.target.clone(),
        key: generate_key(),
        protocols: Vec::new(),
        headers: Vec::new(),
    };
    let mut out = Vec::new();
    req.write(&mut out);
    Conn {
        sock,
        state: State::Connecting,
        out,
        tail: Vec::new(),
        texts: 0,
        req,
    }
}

fn main() {
    let o = parse_args();
    let url = Url::parse(&o.url).unwrap_or_else(|e| die(&format!("--url: {e}")));
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .unwrap_or_else(|| die("--url: cannot resolve the host"));
    let poll = Poll::new().unwrap();
    let mut load = Load {
        poll,
        events: Events::with_capacity(4096),
        conns: Vec::with_capacity(o.conns),
        scratch: vec![0u8; 256 * 1024],
    };

    // Connect in waves so the listen backlog never overflows.
    let t = Instant::now();
    let wave: usize = std::env::var("FANOUT_WAVE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    while load.conns.len() < o.conns {
        let from = load.conns.len();
        let to = (from + wave).min(o.conns);
        for i in from..to {
            let c = connect(&load.poll, i, addr, &url);
            load.conns.push(c);
        }
        // Welcome received.
        load.pump(Duration::from_secs(30), "connecting", |cs| {
            cs[from..to].iter().all(|c| c.texts >= 1)
        });
        if std::env::var_os("FANOUT_DEBUG").is_some() {
            eprintln!("{to} open after {:.2?}", t.elapsed());
        }
    }
    // Everyone joins the room (room mode): welcome + joined.
    let mut want = 1;
    if !o.broadcast {
        let join = text_frame(r#"{"type":"join","room":"fanout"}"#);
        for c in load.conns.iter_mut() {
            c.out.extend_from_slice(&join);
            c.flush().unwrap_or_else(|e| die(&format!("join: {e}")));
        }
        want = 2;
        load.pump(Duration::from_secs(30), "joining", |cs| {
            cs.iter().all(|c| c.texts >= 2)
        });
    }
    eprintln!(
        "{} connections {} in {:.2?}",
        o.conns,
        if o.broadcast {
            "open"
        } else {
            "open and in the room"
        },
        t.elapsed()
    );

    // The sender: wsloop's blocking client (its own copies are not counted).
    let mut sender =
        wsloop::client::connect(&o.url).unwrap_or_else(|e| die(&format!("sender: {e}")));
    if !o.broadcast {
        sender
            .send_text(r#"{"type":"join","room":"fanout"}"#)
            .unwrap();
    }
    let text: String = "x".repeat(o.size);
    let msg = if o.broadcast {
        format!(r#"{{"type":"broadcast","text":"{text}"}}"#)
    } else {
        format!(r#"{{"type":"message","room":"fanout","text":"{text}"}}"#)
    };
    let mut rates = Vec::new();
    for run in 1..=o.runs {
        let target = want + (run * o.messages) as u64;
        let t = Instant::now();
        for _ in 0..o.messages {
            sender
                .send_text(&msg)
                .unwrap_or_else(|e| die(&format!("send: {e}")));
        }
        sender.flush().unwrap();
        load.pump(Duration::from_secs(300), "delivery", |cs| {
            cs.iter().all(|c| c.texts >= target)
        });
        let took = t.elapsed();
        let delivered = o.conns * o.messages;
        let rate = delivered as f64 / took.as_secs_f64();
        println!(
            "run {run}: {delivered} messages ({} × {} B text) delivered to {} connections in {took:.2?}: {rate:.0} messages/s",
            o.messages, o.size, o.conns
        );
        rates.push(rate);
        // Read the sender's own copies so its socket never fills.
        sender.set_read_timeout(Some(Duration::from_millis(1)));
        while sender.recv_message().is_ok() {}
    }
    rates.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "fan-out ({}): median {:.0} messages delivered/s (min {:.0}, max {:.0}) over {} runs, {} connections",
        if o.broadcast { "broadcast" } else { "room" },
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1],
        rates.len(),
        o.conns
    );
}
