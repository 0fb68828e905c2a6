//! Fan-out benchmark for `wsloop serve --app chat`: N connections join one
//! room (or, with `broadcast`, just listen), one more connection sends M
//! messages, and the rate at which the server delivers them is measured:
//!
//! ```text
//! messages delivered per second = N × M / (first send → last delivery)
//! ```
//!
//! Every message the server fans out is encoded once and its bytes shared by
//! all N write queues; this measures that path end to end (JSON, history,
//! frame queueing, `writev`), with the receivers' reading included in the
//! time. `bench/examples/fanout.rs` is the program.
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
use wsloop::extension::DeflateConfig;
use wsloop::frame::{parse_header, write_frame, FrameHeader, OpCode};
use wsloop::handshake::{ClientRequest, Head, ResponseReader};

use crate::dial;

/// One fan-out measurement.
pub struct Options {
    /// The chat endpoint, `ws://HOST:PORT/ws`.
    pub url: String,
    /// Receiving connections.
    pub conns: usize,
    /// Messages sent per run.
    pub messages: usize,
    /// Text bytes per message.
    pub size: usize,
    /// Send broadcasts to everyone instead of messages to one room.
    pub broadcast: bool,
    /// Runs; the median is reported with min and max.
    pub runs: usize,
    /// Connections opened at once, so the listen backlog never overflows.
    pub wave: usize,
    /// Say how many are open after each wave (on stderr).
    pub debug: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            url: String::new(),
            conns: 5000,
            messages: 100,
            size: 64,
            broadcast: false,
            runs: 3,
            wave: 100,
            debug: false,
        }
    }
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

/// Why a receiver failed: its socket or upgrade (reported with its
/// number), or what the server sent.
enum Fail {
    Io(io::Error),
    Server(String),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Io(e)
    }
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
fn count_frames(buf: &[u8], texts: &mut u64) -> Result<usize, Fail> {
    let mut pos = 0;
    loop {
        match parse_header(&buf[pos..]) {
            Ok(Some((h, n))) => {
                let end = pos + n + h.payload_len as usize;
                if end > buf.len() {
                    return Ok(pos);
                }
                match h.opcode {
                    OpCode::Text => *texts += 1,
                    OpCode::Close => {
                        return Err(Fail::Server("the server closed a connection".into()))
                    }
                    _ => {}
                }
                pos = end;
            }
            Ok(None) => return Ok(pos),
            Err(e) => return Err(Fail::Server(format!("bad frame from the server: {e}"))),
        }
    }
}

impl Conn {
    fn open(poll: &Poll, i: usize, addr: SocketAddr, url: &Url) -> Result<Conn, String> {
        let mut sock = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
        poll.registry()
            .register(&mut sock, Token(i), Interest::READABLE | Interest::WRITABLE)
            .map_err(|e| format!("register: {e}"))?;
        let (req, out) = dial::request(
            &url.host_header(),
            &url.target,
            &DeflateConfig::default(),
            &[],
            &[],
        );
        Ok(Conn {
            sock,
            state: State::Connecting,
            out,
            tail: Vec::new(),
            texts: 0,
            req,
        })
    }

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

    fn on_ready(&mut self, scratch: &mut [u8]) -> Result<(), Fail> {
        if let State::Connecting = self.state {
            if !dial::connected(&self.sock)? {
                return Ok(());
            }
            self.state = State::Handshake(ResponseReader::new());
        }
        self.flush()?;
        loop {
            let n = match self.sock.read(scratch) {
                Ok(0) => {
                    return Err(Fail::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "server closed",
                    )))
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Fail::Io(e)),
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
                        let used = count_frames(&rest, &mut self.texts)?;
                        self.tail.extend_from_slice(&rest[used..]);
                    }
                    Err(e) => return Err(io::Error::other(format!("bad response: {e}")).into()),
                },
                State::Open => {
                    if self.tail.is_empty() {
                        let used = count_frames(data, &mut self.texts)?;
                        self.tail.extend_from_slice(&data[used..]);
                    } else {
                        self.tail.extend_from_slice(data);
                        let used = count_frames(&self.tail, &mut self.texts)?;
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
    fn pump(
        &mut self,
        limit: Duration,
        what: &str,
        mut done: impl FnMut(&[Conn]) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while !done(&self.conns) {
            let now = Instant::now();
            if now >= deadline {
                return Err(format!("timed out: {what}"));
            }
            self.poll
                .poll(
                    &mut self.events,
                    Some((deadline - now).min(Duration::from_millis(100))),
                )
                .map_err(|e| format!("poll: {e}"))?;
            for ev in self.events.iter() {
                let i = ev.token().0;
                match self.conns[i].on_ready(&mut self.scratch) {
                    Ok(()) => {}
                    Err(Fail::Io(e)) => return Err(format!("connection {i}: {e}")),
                    Err(Fail::Server(m)) => return Err(m),
                }
            }
        }
        Ok(())
    }
}

/// Runs the measurement, printing each run and the summary on stdout
/// (progress on stderr); the error says what failed.
pub fn run(o: &Options) -> Result<(), String> {
    let url = Url::parse(&o.url).map_err(|e| format!("--url: {e}"))?;
    let addr = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or("--url: cannot resolve the host")?;
    let mut load = Load {
        poll: Poll::new().map_err(|e| format!("poll: {e}"))?,
        events: Events::with_capacity(4096),
        conns: Vec::with_capacity(o.conns),
        scratch: vec![0u8; 256 * 1024],
    };

    // Connect in waves so the listen backlog never overflows.
    let t = Instant::now();
    while load.conns.len() < o.conns {
        let from = load.conns.len();
        let to = (from + o.wave.max(1)).min(o.conns);
        for i in from..to {
            let c = Conn::open(&load.poll, i, addr, &url)?;
            load.conns.push(c);
        }
        // Welcome received.
        load.pump(Duration::from_secs(30), "connecting", |cs| {
            cs[from..to].iter().all(|c| c.texts >= 1)
        })?;
        if o.debug {
            eprintln!("{to} open after {:.2?}", t.elapsed());
        }
    }
    // Everyone joins the room (room mode): welcome + joined.
    let mut want = 1;
    if !o.broadcast {
        let join = text_frame(r#"{"type":"join","room":"fanout"}"#);
        for c in load.conns.iter_mut() {
            c.out.extend_from_slice(&join);
            c.flush().map_err(|e| format!("join: {e}"))?;
        }
        want = 2;
        load.pump(Duration::from_secs(30), "joining", |cs| {
            cs.iter().all(|c| c.texts >= 2)
        })?;
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
    let mut sender = wsloop::client::connect(&o.url).map_err(|e| format!("sender: {e}"))?;
    if !o.broadcast {
        sender
            .send_text(r#"{"type":"join","room":"fanout"}"#)
            .map_err(|e| format!("sender: join: {e}"))?;
    }
    let text: String = "x".repeat(o.size);
    let msg = if o.broadcast {
        format!(r#"{{"type":"broadcast","text":"{text}"}}"#)
    } else {
        format!(r#"{{"type":"message","room":"fanout","text":"{text}"}}"#)
    };
    let mut rates = Vec::new();
    for run in 1..=o.runs.max(1) {
        let target = want + (run * o.messages) as u64;
        let t = Instant::now();
        for _ in 0..o.messages {
            sender.send_text(&msg).map_err(|e| format!("send: {e}"))?;
        }
        sender.flush().map_err(|e| format!("send: {e}"))?;
        load.pump(Duration::from_secs(300), "delivery", |cs| {
            cs.iter().all(|c| c.texts >= target)
        })?;
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
    rates.sort_by(f64::total_cmp);
    println!(
        "fan-out ({}): median {:.0} messages delivered/s (min {:.0}, max {:.0}) over {} runs, {} connections",
        if o.broadcast { "broadcast" } else { "room" },
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1],
        rates.len(),
        o.conns
    );
    Ok(())
}
