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
//! Receivers are [`wsloop::client::Client`]s on one mio `Poll`, driven as
//! the echo bench drives its connections (`connect_addr`, `handle_event`,
//! `next_event_with`, `flush`): each text message is counted where it lies
//! in the client's read buffer, never copied, so that the load generator
//! is not what is measured.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use wsloop::client::{Client, ClientOptions, Url};
use wsloop::{Error, Event, HandshakeError, Message};

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

struct Conn {
    ws: Client,
    /// Text messages received.
    texts: u64,
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

/// The failure for an error that ended a receiver's client.
fn fail(e: Error) -> Fail {
    match e {
        Error::Io(e) => Fail::Io(e),
        Error::Handshake(HandshakeError::Eof) => Fail::Io(server_closed()),
        Error::Handshake(
            e @ (HandshakeError::Malformed
            | HandshakeError::TooLarge { .. }
            | HandshakeError::TooManyHeaders { .. }),
        ) => Fail::Io(io::Error::other(format!("bad response: {e}"))),
        Error::Handshake(e) => Fail::Io(io::Error::other(format!("upgrade refused: {e}"))),
        Error::Protocol(e) => Fail::Server(format!("bad frame from the server: {e}")),
        e => Fail::Io(io::Error::other(e.to_string())),
    }
}

fn server_closed() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "server closed")
}

impl Conn {
    fn open(
        poll: &Poll,
        i: usize,
        addr: SocketAddr,
        url: &Url,
        opts: &ClientOptions,
    ) -> Result<Conn, String> {
        let mut ws = Client::connect_addr(addr, url, opts, Instant::now())
            .map_err(|e| crate::conn::connect_error(e).into_owned())?;
        ws.register(poll.registry(), Token(i))
            .map_err(|e| format!("register: {e}"))?;
        Ok(Conn { ws, texts: 0 })
    }

    /// Handles one readiness event: connect, upgrade, then the text
    /// messages are counted; a close from the server fails the run.
    fn on_event(&mut self, ev: &mio::event::Event, now: Instant) -> Result<(), Fail> {
        self.ws.handle_event(ev, now);
        let texts = &mut self.texts;
        let mut closed = false;
        while let Some(()) = self.ws.next_event_with(|ev| match ev {
            Event::Message(Message::Text(_)) => *texts += 1,
            Event::Close(..) => closed = true,
            _ => {}
        }) {
            if closed {
                return Err(Fail::Server("the server closed a connection".into()));
            }
        }
        if let Some(e) = self.ws.take_error() {
            return Err(fail(e));
        }
        if self.ws.is_done() {
            return Err(Fail::Io(server_closed()));
        }
        // Pongs to the server's pings (nothing queued: a few compares).
        self.ws.flush()?;
        Ok(())
    }
}

struct Load {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
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
            // The clients run no timers: one clock read per batch.
            let now = Instant::now();
            for ev in self.events.iter() {
                let i = ev.token().0;
                match self.conns[i].on_event(ev, now) {
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
    let mut opts = ClientOptions::default();
    // One read takes as much as the old loop-wide buffer did.
    opts.config.read_buffer_size = 256 << 10;
    let mut load = Load {
        poll: Poll::new().map_err(|e| format!("poll: {e}"))?,
        events: Events::with_capacity(4096),
        conns: Vec::with_capacity(o.conns),
    };

    // Connect in waves so the listen backlog never overflows.
    let t = Instant::now();
    while load.conns.len() < o.conns {
        let from = load.conns.len();
        let to = (from + o.wave.max(1)).min(o.conns);
        for i in from..to {
            let c = Conn::open(&load.poll, i, addr, &url, &opts)?;
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
        let join = r#"{"type":"join","room":"fanout"}"#;
        for c in load.conns.iter_mut() {
            c.ws.send_text(join).map_err(|e| format!("join: {e}"))?;
            c.ws.flush().map_err(|e| format!("join: {e}"))?;
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
