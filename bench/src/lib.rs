//! `wsloop bench URL`: a load generator for any WebSocket echo server, in
//! the spirit of uSockets' load_test.
//!
//! One mio `Poll` per thread drives many sans-IO [`Connection`]s in the
//! client role directly (not the blocking client): non-blocking connect,
//! the upgrade with `handshake::{ClientRequest, ResponseReader}`, then
//! masked frames. Reads go into one loop-wide buffer; each connection's
//! echoes are checked and replaced in place, and its writes are batched into
//! one `write_to` after its input is processed. Payloads are slices of one
//! shared pattern buffer, so the hot path allocates nothing of its own.
//!
//! Phases: connect (bounded concurrency, every thread) → barrier → warmup →
//! measure (or hold, in connect mode) → close handshake on every connection.
//! Every phase has a deadline, so the run always ends by itself.
//!
//! wss:// URLs (feature `tls`) put each socket in a [`Stream`] with a
//! rustls client connection; the TLS handshake is timed as part of the
//! connection's handshake.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{self, IsTerminal, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use wsloop::client::Url;
use wsloop::handshake::{generate_key, ClientRequest, Head, ResponseReader};
use wsloop::stream::Stream;
use wsloop::{CloseCode, Config, Connection, Event, HandshakeError, Message, Role};

/// Payloads of at most this size are compared whole on every echo.
const FULL_CHECK_MAX: usize = 1024;
/// Larger payloads are compared whole on every this-many-th echo (and by
/// length, first and last 8 bytes on the others).
const FULL_CHECK_EVERY: u64 = 16;
/// Payloads start at one of this many offsets into the pattern, so
/// consecutive messages differ and a lost, repeated or reordered echo is
/// caught by its first bytes.
const OFFSETS: usize = 251;
/// Time allowed for the close handshake at the end.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The connect phase is cut after this long (or --connect-timeout, if
/// longer).
const CONNECT_PHASE_MAX: Duration = Duration::from_secs(60);
/// Loop-wide read buffer.
const READ_BUF: usize = 256 << 10;

/// What the load generator does with its connections.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    /// Keep `pipeline` messages in flight per connection; count echoes.
    Echo,
    /// One message in flight per connection; measure round trips.
    Latency,
    /// Open connections (handshakes per second), hold them, close them.
    Connect,
}

impl Mode {
    /// The mode's name as `--mode` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Latency => "latency",
            Mode::Connect => "connect",
        }
    }
}

/// One run of the load generator (`wsloop bench` fills it from its flags).
pub struct Options {
    pub url: String,
    pub mode: Mode,
    pub conns: usize,
    pub pipeline: usize,
    pub size: usize,
    pub text: bool,
    /// Offer permessage-deflate (`--deflate`).
    pub deflate: bool,
    /// Repetitive payloads (`--compressible`).
    pub compressible: bool,
    pub duration: Duration,
    pub warmup: Duration,
    pub hold: Duration,
    pub threads: usize,
    pub max_connecting: usize,
    pub connect_timeout: Duration,
    pub server_pid: Option<u32>,
    pub json: bool,
    /// The TLS client configuration for a wss:// URL.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    pub tls: TlsSetting,
}

/// A wss:// URL's client configuration (`--ca`, `--insecure` or the
/// bundled roots).
#[cfg(feature = "tls")]
pub type TlsSetting = Option<Arc<rustls::ClientConfig>>;
/// Without the `tls` feature there is nothing to hold.
#[cfg(not(feature = "tls"))]
pub type TlsSetting = Option<std::convert::Infallible>;

/// CPU time used so far by all threads of `pid`, in nanoseconds (the first
/// field of each /proc/PID/task/TID/schedstat).
fn read_cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(t) = t else { continue };
        let Ok(text) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue; // the thread ended meanwhile
        };
        total += text.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// The server's CPU time (with `--server-pid`) at the two edges of what is
/// measured: in connect mode from before the first connect until all are
/// open, otherwise the start and the end of the measured window.
struct CpuMarks {
    pid: Option<u32>,
    connect: bool,
    warmup: Duration,
    duration: Duration,
    marks: [Option<(Instant, u64)>; 2],
}

impl CpuMarks {
    fn new(o: &Options, start: Instant) -> CpuMarks {
        let connect = o.mode == Mode::Connect;
        let first = match (o.server_pid, connect) {
            (Some(pid), true) => read_cpu_ns(pid).map(|ns| (start, ns)),
            _ => None,
        };
        CpuMarks {
            pid: o.server_pid,
            connect,
            warmup: o.warmup,
            duration: o.duration,
            marks: [first, None],
        }
    }

    /// Takes the sample that is due, if any, once the load has started
    /// (`go`); returns `nap`, shortened to wake for the next sample.
    fn sample(&mut self, go: Option<Instant>, nap: Duration) -> Duration {
        let (Some(pid), Some(go)) = (self.pid, go) else {
            return nap;
        };
        let now = Instant::now();
        if self.connect {
            // All connections are open once the load starts.
            if self.marks[1].is_none() {
                self.marks[1] = read_cpu_ns(pid).map(|ns| (now, ns));
            }
            return nap;
        }
        let due = [go + self.warmup, go + self.warmup + self.duration];
        let i = usize::from(self.marks[0].is_some());
        if i < 2 && self.marks[i].is_none() {
            if now >= due[i] {
                self.marks[i] = read_cpu_ns(pid).map(|ns| (now, ns));
            } else {
                return nap.min(due[i] - now);
            }
        }
        nap
    }

    /// The threads may end (the window over, every connection closed)
    /// before the sampling thread, if it was slow to wake, sampled the end
    /// of the window: sample now, a few milliseconds of closing late.
    fn threads_ended(&mut self) {
        if let (Some(pid), false, [Some(_), None]) = (self.pid, self.connect, self.marks) {
            self.marks[1] = read_cpu_ns(pid).map(|ns| (Instant::now(), ns));
        }
    }

    /// Server CPU in cores between the two samples, and the seconds to
    /// spread it over: the connect phase sampled (per handshake) or the
    /// measured window (per message).
    fn cores_and_secs(&self, measured_secs: f64) -> Option<(f64, f64)> {
        let [Some((t0, c0)), Some((t1, c1))] = self.marks else {
            return None;
        };
        if t1 <= t0 {
            return None;
        }
        let wall = t1.duration_since(t0);
        let cores = c1.saturating_sub(c0) as f64 / wall.as_nanos() as f64;
        let secs = if self.connect {
            wall.as_secs_f64()
        } else {
            measured_secs
        };
        Some((cores, secs))
    }
}

/// The resident set size of `pid`, in KiB.
pub fn read_rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    line["VmRSS:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

// ------------------------------------------------------------ histogram

/// A log-linear histogram of nanoseconds: exact below 256, then 128
/// buckets per power of two (each at most 1/128 of its value wide, so a
/// quantile reported at the bucket's middle is within 0.4%).
#[derive(Clone)]
struct Hist {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;

impl Hist {
    fn new() -> Self {
        Hist {
            counts: vec![0; (64 - SUB_BITS as usize + 1) * SUB],
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < SUB as u64 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros(); // >= SUB_BITS
        let sub = (v >> (e - SUB_BITS)) as usize & (SUB - 1);
        ((e - SUB_BITS + 1) as usize) << SUB_BITS | sub
    }

    /// Lowest value of bucket `i` and its width.
    fn bucket(i: usize) -> (u64, u64) {
        let b = i >> SUB_BITS;
        let s = (i & (SUB - 1)) as u64;
        if b == 0 {
            (s, 1)
        } else {
            ((SUB as u64 + s) << (b - 1), 1 << (b - 1))
        }
    }

    fn record(&mut self, d: Duration) {
        let v = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(v)] += 1;
        self.total += 1;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        self.sum += v as u128;
    }

    fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        self.total += o.total;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
    }

    /// The value at quantile `q` (0..=1), in ns.
    fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = Self::bucket(i);
                return (low + width / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }

    fn mean(&self) -> u64 {
        if self.total == 0 {
            0
        } else {
            (self.sum / self.total as u128) as u64
        }
    }
}

// ------------------------------------------------------------- the plan

/// What every thread needs, read-only.
struct Plan {
    mode: Mode,
    addr: SocketAddr,
    host: String,
    target: String,
    size: usize,
    pipeline: usize,
    text: bool,
    /// `size + OFFSETS` pseudo-random bytes (printable ASCII for text), or
    /// repetitive text with `--compressible`.
    pattern: Vec<u8>,
    /// The same bytes as a `str` in text mode (empty otherwise).
    pattern_text: String,
    config: Arc<Config>,
    connect_timeout: Duration,
    /// Per thread.
    max_connecting: usize,
    warmup: Duration,
    duration: Duration,
    hold: Duration,
    /// wss://: the client configuration and the name to verify.
    #[cfg(feature = "tls")]
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
}

impl Plan {
    /// The connection's transport: plain, or TLS for wss://.
    fn stream(&self, tcp: TcpStream) -> Result<Stream, String> {
        #[cfg(feature = "tls")]
        if let Some((cfg, name)) = &self.tls {
            let conn = rustls::ClientConnection::new(cfg.clone(), name.clone())
                .map_err(|e| format!("connect: TLS setup: {e}"))?;
            return Ok(Stream::tls(tcp, conn.into()));
        }
        Ok(Stream::plain(tcp))
    }

    fn offset(id: u64, seq: u64) -> usize {
        (id.wrapping_mul(7919).wrapping_add(seq.wrapping_mul(13)) % OFFSETS as u64) as usize
    }

    /// Checks an echo: type, length, and content (see FULL_CHECK_*).
    fn verify(&self, got: &[u8], is_text: bool, id: u64, seq: u64) -> bool {
        if is_text != self.text || got.len() != self.size {
            return false;
        }
        let off = Self::offset(id, seq);
        let want = &self.pattern[off..off + self.size];
        if self.size <= FULL_CHECK_MAX || seq.is_multiple_of(FULL_CHECK_EVERY) {
            return got == want;
        }
        let n = self.size;
        got[..8] == want[..8] && got[n - 8..] == want[n - 8..]
    }
}

/// `--compressible`: JSON-like records whose fields vary a little, as chat
/// or telemetry traffic does. Printable ASCII, so it serves text and binary
/// messages; deflate makes a 4 KiB one about 6 times smaller.
fn make_compressible_pattern(len: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "hello", "world", "status", "update", "price", "ticker", "message", "online",
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32
    };
    let mut out = String::with_capacity(len + 128);
    let mut id = 1000u64;
    while out.len() < len {
        id += 1 + next() % 3;
        let _ = writeln!(
            out,
            "{{\"id\":{id},\"user\":\"user-{}\",\"type\":\"{}\",\"text\":\"{} {}\",\"ts\":{}}}",
            next() % 100,
            WORDS[(next() % 8) as usize],
            WORDS[(next() % 8) as usize],
            WORDS[(next() % 8) as usize],
            1_700_000_000 + id * 7
        );
    }
    out.truncate(len);
    out.into_bytes()
}

fn make_pattern(len: usize, text: bool) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
            if text {
                b'!' + r % 94
            } else {
                r
            }
        })
        .collect()
}

// ----------------------------------------------------- shared and stats

/// Counters a thread publishes for the progress line.
#[derive(Default)]
struct Progress {
    open: AtomicU64,
    failed: AtomicU64,
    msgs: AtomicU64,
    errors: AtomicU64,
}

struct Shared {
    start: Instant,
    barrier: Barrier,
    /// When the connect phase ended everywhere: warmup or hold starts.
    go: Mutex<Option<Instant>>,
    /// No connection opened in any thread: skip to the summary.
    none_open: AtomicBool,
    server_pid: Option<u32>,
    rss_open: Mutex<Option<u64>>,
    progress: Vec<Progress>,
}

/// One thread's results.
struct Stats {
    /// Echoes verified within the measured window, and their payload bytes.
    msgs: u64,
    bytes: u64,
    /// Every echo received, any phase (for the progress line).
    msgs_all: u64,
    rtt: Hist,
    handshake: Hist,
    opened: u64,
    /// Connections that were open and then ended.
    ended_open: u64,
    /// Connections that never opened.
    failed: u64,
    clean_closes: u64,
    error_count: u64,
    errors: BTreeMap<Cow<'static, str>, u64>,
    /// When the warmup/measure (or hold) loop ended: the close phase began.
    run_end: Instant,
    finished: Instant,
}

impl Stats {
    fn new() -> Self {
        Stats {
            msgs: 0,
            bytes: 0,
            msgs_all: 0,
            rtt: Hist::new(),
            handshake: Hist::new(),
            opened: 0,
            ended_open: 0,
            failed: 0,
            clean_closes: 0,
            error_count: 0,
            errors: BTreeMap::new(),
            run_end: Instant::now(),
            finished: Instant::now(),
        }
    }

    fn error(&mut self, kind: impl Into<Cow<'static, str>>) {
        self.error_count += 1;
        *self.errors.entry(kind.into()).or_default() += 1;
    }

    fn merge(&mut self, o: Stats) {
        self.msgs += o.msgs;
        self.bytes += o.bytes;
        self.msgs_all += o.msgs_all;
        self.rtt.merge(&o.rtt);
        self.handshake.merge(&o.handshake);
        self.opened += o.opened;
        self.ended_open += o.ended_open;
        self.failed += o.failed;
        self.clean_closes += o.clean_closes;
        self.error_count += o.error_count;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.run_end = self.run_end.max(o.run_end);
        self.finished = self.finished.max(o.finished);
    }
}

// ------------------------------------------------------ one connection

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum St {
    New,
    Connecting,
    Handshake,
    Open,
    Done,
}

/// Upgrade state, dropped once open.
struct Hs {
    req: ClientRequest,
    out: Vec<u8>,
    written: usize,
    reader: ResponseReader,
    started: Instant,
}

struct Conn {
    st: St,
    sock: Option<Stream>,
    hs: Option<Box<Hs>>,
    ws: Option<Connection>,
    /// Send times of the messages in flight, oldest first (echoes come back
    /// in order).
    sent: VecDeque<Instant>,
    send_seq: u64,
    recv_seq: u64,
    /// The server sent a close frame on its own (already counted).
    server_closed: bool,
}

/// When messages are sent and counted.
struct Window {
    sending: bool,
    closing: bool,
    from: Instant,
    to: Instant,
}

enum Step {
    Go,
    End(Option<Cow<'static, str>>),
}

fn end(kind: impl Into<Cow<'static, str>>) -> Step {
    Step::End(Some(kind.into()))
}

/// Queues the next message on `c`.
fn send_next(
    ws: &mut Connection,
    sent: &mut VecDeque<Instant>,
    seq: &mut u64,
    id: u64,
    plan: &Plan,
    now: Instant,
) -> Result<(), wsloop::Error> {
    let off = Plan::offset(id, *seq);
    let end = off + plan.size;
    if plan.text {
        ws.send_text(&plan.pattern_text[off..end])?;
    } else {
        ws.send_binary(&plan.pattern[off..end])?;
    }
    sent.push_back(now);
    *seq += 1;
    Ok(())
}

/// Handles one readiness event for connection `c` (global id `id`).
#[allow(clippy::too_many_arguments)]
fn drive(
    c: &mut Conn,
    id: u64,
    buf: &mut [u8],
    plan: &Plan,
    win: &Window,
    stats: &mut Stats,
    now: Instant,
    readable: bool,
    to_eof: bool,
) -> Step {
    if c.st == St::Connecting {
        let Some(sock) = c.sock.as_mut() else {
            return Step::End(None);
        };
        match sock.sock.take_error() {
            Ok(Some(e)) | Err(e) => return end(format!("connect: {e}")),
            Ok(None) => {}
        }
        match sock.sock.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Step::Go,
            Err(e) => return end(format!("connect: {e}")),
        }
        if let Err(e) = sock.sock.set_nodelay(true) {
            return end(format!("connect: TCP_NODELAY: {e}"));
        }
        c.st = St::Handshake;
    }
    if let Some(sock) = c.sock.as_mut() {
        // TLS records left over when the socket was full (a no-op for
        // plain TCP).
        if let Err(e) = sock.flush_records() {
            let phase = if c.ws.is_some() {
                "write"
            } else {
                "handshake: write"
            };
            return end(format!("{phase}: {e}"));
        }
    }
    if c.st == St::Handshake {
        let (Some(sock), Some(hs)) = (c.sock.as_mut(), c.hs.as_mut()) else {
            return Step::End(None);
        };
        while hs.written < hs.out.len() {
            match sock.write(&hs.out[hs.written..]) {
                Ok(0) => return end("handshake: the socket took no bytes"),
                Ok(n) => hs.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Go,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return end(format!("handshake: write: {e}")),
            }
        }
    }
    if readable || to_eof {
        loop {
            let Some(sock) = c.sock.as_mut() else {
                return Step::End(None);
            };
            let n = match sock.read(buf) {
                Ok(0) => return eof(c, None),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return eof(c, Some(e)),
            };
            if let Err(kind) = input(c, id, &mut buf[..n], plan, win, stats, now) {
                return Step::End(Some(kind));
            }
            if n < buf.len() && !to_eof && !c.sock.as_ref().is_some_and(Stream::is_tls) {
                // Drained for now: the next arrival is a new edge. (Not
                // with TLS: a short read may leave records in the socket
                // that rustls has not taken yet.)
                break;
            }
        }
    }
    if let (Some(ws), Some(sock)) = (c.ws.as_mut(), c.sock.as_mut()) {
        if ws.wants_write() {
            if let Err(e) = ws.write_to(sock) {
                return end(format!("write: {e}"));
            }
        }
    }
    Step::Go
}

/// The server's side of TCP ended (`e` is `None` for EOF).
fn eof(c: &Conn, e: Option<io::Error>) -> Step {
    match (&c.ws, e) {
        (None, None) => end("handshake: the server closed the connection before answering"),
        (None, Some(e)) => end(format!("handshake: read: {e}")),
        (Some(ws), e) => {
            if c.server_closed || ws.close_info().is_some_and(|i| i.clean) {
                Step::End(None)
            } else {
                match e {
                    None => end("connection lost: the server closed TCP without a close handshake"),
                    Some(e) => end(format!("connection lost: {e}")),
                }
            }
        }
    }
}

/// Bytes received on `c`: the upgrade response, then frames.
fn input(
    c: &mut Conn,
    id: u64,
    data: &mut [u8],
    plan: &Plan,
    win: &Window,
    stats: &mut Stats,
    now: Instant,
) -> Result<(), Cow<'static, str>> {
    if c.st == St::Handshake {
        let Some(hs) = c.hs.as_mut() else {
            return Err("handshake: lost state".into());
        };
        let cfg = &plan.config;
        match hs
            .reader
            .feed(data, cfg.max_handshake_bytes, cfg.max_headers)
        {
            Ok(Head::Partial) => return Ok(()),
            Ok(Head::Complete(resp, mut rest)) => {
                let deflate = match resp.validate_with(&hs.req, &cfg.deflate) {
                    Ok((_, deflate)) => deflate,
                    Err(e) => {
                        return Err(match e {
                            HandshakeError::Status(s) => format!(
                                "handshake: server answered HTTP {s} {}",
                                wsloop::handshake::reason_phrase(s)
                            )
                            .into(),
                            e => format!("handshake: {e}").into(),
                        })
                    }
                };
                if cfg.deflate.enabled && deflate.is_none() {
                    return Err(
                        "handshake: the server declined permessage-deflate (--deflate); \
                                enable it there (wsloop serve --deflate) or drop --deflate"
                            .into(),
                    );
                }
                stats
                    .handshake
                    .record(now.saturating_duration_since(hs.started));
                stats.opened += 1;
                c.hs = None;
                c.st = St::Open;
                #[cfg_attr(not(feature = "deflate"), allow(unused_mut))]
                let mut ws = Connection::new(Role::Client, plan.config.clone(), now);
                #[cfg(feature = "deflate")]
                if let Some(p) = &deflate {
                    ws.enable_deflate(p);
                }
                c.ws = Some(ws);
                if plan.mode != Mode::Connect {
                    c.sent = VecDeque::with_capacity(plan.pipeline);
                }
                if rest.is_empty() {
                    return Ok(());
                }
                return frames(c, id, &mut rest, plan, win, stats, now);
            }
            Err(e) => return Err(format!("handshake: {e}").into()),
        }
    }
    frames(c, id, data, plan, win, stats, now)
}

/// Frames received on an open connection: check each echo, time it, and
/// replace it.
fn frames(
    c: &mut Conn,
    id: u64,
    data: &mut [u8],
    plan: &Plan,
    win: &Window,
    stats: &mut Stats,
    now: Instant,
) -> Result<(), Cow<'static, str>> {
    let Conn {
        ws,
        sock,
        sent,
        send_seq,
        recv_seq,
        server_closed,
        ..
    } = c;
    let (Some(ws), Some(sock)) = (ws.as_mut(), sock.as_mut()) else {
        return Ok(());
    };
    let latency = plan.mode == Mode::Latency;
    let mut input = data;
    loop {
        match ws.poll_event(&mut input, now) {
            Ok(None) => return Ok(()),
            Ok(Some(Event::Message(m))) => {
                let t = if latency { Instant::now() } else { now };
                stats.msgs_all += 1;
                let Some(at) = sent.pop_front() else {
                    stats.error("unexpected message: none in flight");
                    continue;
                };
                let (bytes, is_text) = match &m {
                    Message::Text(s) => (s.as_bytes(), true),
                    Message::Binary(b) => (&b[..], false),
                };
                let ok = plan.verify(bytes, is_text, id, *recv_seq);
                *recv_seq += 1;
                if !ok {
                    stats.error(if is_text != plan.text {
                        "payload mismatch: wrong message type"
                    } else if bytes.len() != plan.size {
                        "payload mismatch: wrong length"
                    } else {
                        "payload mismatch: wrong content"
                    });
                } else if t >= win.from && t < win.to {
                    stats.msgs += 1;
                    stats.bytes += bytes.len() as u64;
                    stats.rtt.record(t.saturating_duration_since(at));
                }
                if win.sending && ws.is_open() {
                    let now = if latency { Instant::now() } else { now };
                    if let Err(e) = send_next(ws, sent, send_seq, id, plan, now) {
                        return Err(format!("send: {e}").into());
                    }
                    if latency {
                        if let Err(e) = ws.write_to(sock) {
                            return Err(format!("write: {e}").into());
                        }
                    }
                }
            }
            Ok(Some(Event::Close(code, reason))) => {
                if !win.closing {
                    *server_closed = true;
                    stats.error(if reason.is_empty() {
                        format!("closed by the server: {code}")
                    } else {
                        format!("closed by the server: {code} {reason}")
                    });
                }
            }
            Ok(Some(Event::Ping(_) | Event::Pong(_))) => {}
            Err(e) => return Err(format!("protocol error: {e}").into()),
        }
    }
}

// ---------------------------------------------------------- one thread

struct Worker<'a> {
    plan: &'a Plan,
    shared: &'a Shared,
    me: usize,
    poll: Poll,
    conns: Vec<Conn>,
    first_id: u64,
    buf: Vec<u8>,
    next: usize,
    connecting: Vec<usize>,
    live: usize,
    win: Window,
    stats: Stats,
}

impl<'a> Worker<'a> {
    fn new(
        plan: &'a Plan,
        shared: &'a Shared,
        me: usize,
        first_id: u64,
        n: usize,
    ) -> io::Result<Self> {
        let far = shared.start + Duration::from_secs(365 * 24 * 3600);
        Ok(Worker {
            plan,
            shared,
            me,
            poll: Poll::new()?,
            conns: (0..n)
                .map(|_| Conn {
                    st: St::New,
                    sock: None,
                    hs: None,
                    ws: None,
                    sent: VecDeque::new(),
                    send_seq: 0,
                    recv_seq: 0,
                    server_closed: false,
                })
                .collect(),
            first_id,
            buf: vec![0; READ_BUF],
            next: 0,
            connecting: Vec::new(),
            live: 0,
            win: Window {
                sending: false,
                closing: false,
                from: far,
                to: far,
            },
            stats: Stats::new(),
        })
    }

    fn start(&mut self, i: usize, now: Instant) {
        let plan = self.plan;
        let tcp = match TcpStream::connect(plan.addr) {
            Ok(s) => s,
            Err(e) => {
                self.conns[i].st = St::Done;
                self.stats.failed += 1;
                self.stats.error(format!("connect: {e}"));
                return;
            }
        };
        let mut sock = match plan.stream(tcp) {
            Ok(s) => s,
            Err(e) => {
                self.conns[i].st = St::Done;
                self.stats.failed += 1;
                self.stats.error(e);
                return;
            }
        };
        if let Err(e) = self.poll.registry().register(
            &mut sock.sock,
            Token(i),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.conns[i].st = St::Done;
            self.stats.failed += 1;
            self.stats
                .error(format!("connect: register with the poller: {e}"));
            return;
        }
        let mut headers = Vec::new();
        if plan.config.deflate.enabled {
            headers.push((
                "Sec-WebSocket-Extensions".to_owned(),
                wsloop::extension::client_offer(&plan.config.deflate),
            ));
        }
        let req = ClientRequest {
            host: plan.host.clone(),
            target: plan.target.clone(),
            key: generate_key(),
            protocols: Vec::new(),
            headers,
        };
        let mut out = Vec::with_capacity(256);
        req.write(&mut out);
        let c = &mut self.conns[i];
        c.hs = Some(Box::new(Hs {
            req,
            out,
            written: 0,
            reader: ResponseReader::new(),
            started: now,
        }));
        c.sock = Some(sock);
        c.st = St::Connecting;
        self.live += 1;
        self.connecting.push(i);
    }

    /// Ends connection `i`, counting `kind` as an error if given.
    fn end(&mut self, i: usize, kind: Option<Cow<'static, str>>) {
        let c = &mut self.conns[i];
        if c.st == St::Done {
            return;
        }
        if let Some(k) = kind {
            self.stats.error(k);
        }
        if let (Some(ws), Some(sock)) = (c.ws.as_mut(), c.sock.as_mut()) {
            if ws.wants_write() {
                // A close frame for a protocol error, best effort.
                let _ = ws.write_to(sock);
            }
        }
        match &c.ws {
            Some(ws) => {
                self.stats.ended_open += 1;
                if ws.close_info().is_some_and(|i| i.clean) {
                    self.stats.clean_closes += 1;
                }
            }
            None => self.stats.failed += 1,
        }
        if let Some(mut s) = c.sock.take() {
            if s.is_tls() {
                // close_notify, best effort.
                s.shutdown_write();
            }
            let _ = self.poll.registry().deregister(&mut s.sock);
            self.live -= 1;
        }
        c.st = St::Done;
        c.ws = None;
        c.hs = None;
        c.sent = VecDeque::new();
    }

    /// One poll and its events.
    fn pump(&mut self, events: &mut Events, timeout: Duration) {
        match self.poll.poll(events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Not expected from epoll; keep the run bounded anyway.
                self.stats.error(format!("poll: {e}"));
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let now = Instant::now();
            let step = {
                let Worker {
                    conns,
                    buf,
                    plan,
                    win,
                    stats,
                    first_id,
                    ..
                } = self;
                let Some(c) = conns.get_mut(i) else { continue };
                if matches!(c.st, St::Done | St::New) {
                    continue;
                }
                let to_eof = ev.is_read_closed() || ev.is_error();
                drive(
                    c,
                    *first_id + i as u64,
                    buf,
                    plan,
                    win,
                    stats,
                    now,
                    ev.is_readable(),
                    to_eof,
                )
            };
            if let Step::End(kind) = step {
                self.end(i, kind);
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let p = &self.shared.progress[self.me];
        let s = &self.stats;
        p.open.store(s.opened - s.ended_open, Relaxed);
        p.failed.store(s.failed, Relaxed);
        p.msgs.store(s.msgs_all, Relaxed);
        p.errors.store(s.error_count, Relaxed);
    }

    fn connect_phase(&mut self, events: &mut Events) {
        let plan = self.plan;
        let deadline = self.shared.start + CONNECT_PHASE_MAX.max(plan.connect_timeout);
        let n = self.conns.len();
        loop {
            let now = Instant::now();
            // Retire finished attempts and time out slow ones.
            let mut late = Vec::new();
            let conns = &self.conns;
            self.connecting.retain(|&i| {
                let c = &conns[i];
                match (c.st, &c.hs) {
                    (St::Connecting | St::Handshake, Some(hs)) => {
                        if now.saturating_duration_since(hs.started) >= plan.connect_timeout
                            || now >= deadline
                        {
                            late.push(i);
                            false
                        } else {
                            true
                        }
                    }
                    _ => false,
                }
            });
            for i in late {
                let kind = if now >= deadline {
                    "connect phase cut after 60 s"
                } else if self.conns[i].st == St::Connecting {
                    "connect: timed out"
                } else {
                    "handshake: timed out"
                };
                self.end(i, Some(kind.into()));
            }
            if now >= deadline {
                while self.next < n {
                    self.conns[self.next].st = St::Done;
                    self.stats.failed += 1;
                    self.stats.error("connect phase cut after 60 s");
                    self.next += 1;
                }
            }
            while self.connecting.len() < plan.max_connecting && self.next < n {
                self.start(self.next, now);
                self.next += 1;
            }
            if self.next == n && self.connecting.is_empty() {
                break;
            }
            self.pump(events, Duration::from_millis(50));
        }
        self.publish();
    }

    fn run(mut self) -> Stats {
        let plan = self.plan;
        let mut events = Events::with_capacity(1024);
        self.connect_phase(&mut events);

        // Everyone starts the measured part together.
        let shared = self.shared;
        if shared.barrier.wait().is_leader() {
            let now = Instant::now();
            *shared.go.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
            if let Some(pid) = shared.server_pid {
                *shared.rss_open.lock().unwrap_or_else(|e| e.into_inner()) = read_rss_kib(pid);
            }
            // Every thread published its count before the first wait.
            let open: u64 = shared.progress.iter().map(|p| p.open.load(Relaxed)).sum();
            shared.none_open.store(open == 0, Relaxed);
        }
        shared.barrier.wait();
        let go = shared
            .go
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or_else(Instant::now);

        let end_at = if shared.none_open.load(Relaxed) {
            // Nothing to measure: go straight to the summary.
            go
        } else if plan.mode == Mode::Connect {
            go + plan.hold
        } else {
            self.win.from = go + plan.warmup;
            self.win.to = self.win.from + plan.duration;
            self.win.sending = true;
            let now = Instant::now();
            for i in 0..self.conns.len() {
                let Worker {
                    conns, first_id, ..
                } = &mut self;
                let c = &mut conns[i];
                let (Some(ws), Some(sock)) = (c.ws.as_mut(), c.sock.as_mut()) else {
                    continue;
                };
                if !ws.is_open() {
                    continue;
                }
                let id = *first_id + i as u64;
                let mut res = Ok(());
                for _ in 0..plan.pipeline {
                    res = send_next(ws, &mut c.sent, &mut c.send_seq, id, plan, now)
                        .map_err(|e| format!("send: {e}"));
                    if res.is_err() {
                        break;
                    }
                }
                if res.is_ok() {
                    res = ws
                        .write_to(sock)
                        .map(|_| ())
                        .map_err(|e| format!("write: {e}"));
                }
                if let Err(kind) = res {
                    self.end(i, Some(kind.into()));
                }
            }
            self.win.to
        };
        loop {
            let now = Instant::now();
            if now >= end_at || self.live == 0 {
                break;
            }
            self.pump(&mut events, (end_at - now).min(Duration::from_millis(250)));
        }

        self.stats.run_end = Instant::now();

        // Close every connection with 1000 and wait for the replies.
        self.win.sending = false;
        self.win.closing = true;
        let now = Instant::now();
        for i in 0..self.conns.len() {
            let c = &mut self.conns[i];
            let (Some(ws), Some(sock)) = (c.ws.as_mut(), c.sock.as_mut()) else {
                continue;
            };
            ws.close(CloseCode::NORMAL, "", now);
            if let Err(e) = ws.write_to(sock) {
                self.end(i, Some(format!("close: write: {e}").into()));
            }
        }
        let deadline = now + CLOSE_TIMEOUT;
        loop {
            let now = Instant::now();
            if self.live == 0 || now >= deadline {
                break;
            }
            self.pump(
                &mut events,
                (deadline - now).min(Duration::from_millis(250)),
            );
        }
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.st == St::Done {
                continue;
            }
            let kind = match &c.ws {
                Some(ws) if ws.close_info().is_some_and(|i| i.clean) => {
                    "close: the server did not close TCP within 5 s of the close handshake"
                }
                Some(_) => "close: no close reply within 5 s",
                None => "close: still connecting",
            };
            self.end(i, Some(kind.into()));
        }
        self.publish();
        self.stats.finished = Instant::now();
        self.stats
    }
}

// ------------------------------------------------------------ the run

pub fn run(o: Options) -> i32 {
    let url = Url::parse(&o.url).expect("checked in parse");
    let addr = match (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map(|mut a| a.next())
    {
        Ok(Some(a)) => a,
        Ok(None) => {
            eprintln!("wsloop bench: {} resolves to no address", url.host);
            return 3;
        }
        Err(e) => {
            eprintln!("wsloop bench: cannot resolve {}: {e}", url.host);
            return 3;
        }
    };
    let mut config = Config::default();
    config.ping_interval = None;
    config.idle_timeout = None;
    config.close_timeout = CLOSE_TIMEOUT;
    config.max_message_size = config.max_message_size.max(o.size);
    config.max_frame_size = config.max_frame_size.max(o.size);
    let queued = o.pipeline.saturating_mul(o.size + 14).saturating_mul(2);
    config.write_buffer_limit = config.write_buffer_limit.max(queued);
    config.deflate.enabled = o.deflate;
    let pattern = if o.compressible {
        make_compressible_pattern(o.size + OFFSETS)
    } else {
        make_pattern(o.size + OFFSETS, o.text)
    };
    let pattern_text = if o.text {
        String::from_utf8(pattern.clone()).expect("ASCII")
    } else {
        String::new()
    };
    let plan = Plan {
        mode: o.mode,
        addr,
        host: url.host_header(),
        target: url.target.clone(),
        size: o.size,
        pipeline: o.pipeline,
        text: o.text,
        pattern,
        pattern_text,
        config: Arc::new(config),
        connect_timeout: o.connect_timeout,
        max_connecting: o.max_connecting.div_ceil(o.threads),
        warmup: o.warmup,
        duration: o.duration,
        hold: o.hold,
        #[cfg(feature = "tls")]
        tls: match &o.tls {
            Some(cfg) => match wsloop::tls::server_name(&url.host) {
                Ok(name) => Some((cfg.clone(), name)),
                Err(e) => {
                    eprintln!("wsloop bench: {e}");
                    return 2;
                }
            },
            None => None,
        },
    };
    // The first TLS client connection in a process pays a one-time setup
    // of the crypto provider (tens of ms): pay it before the clock starts,
    // so it is not counted in the first handshakes.
    #[cfg(feature = "tls")]
    if let Some((cfg, name)) = &plan.tls {
        let _ = rustls::ClientConnection::new(cfg.clone(), name.clone());
    }
    let rss_before = o.server_pid.and_then(read_rss_kib);
    let shared = Shared {
        start: Instant::now(),
        barrier: Barrier::new(o.threads),
        go: Mutex::new(None),
        none_open: AtomicBool::new(false),
        server_pid: o.server_pid,
        rss_open: Mutex::new(None),
        progress: (0..o.threads).map(|_| Progress::default()).collect(),
    };
    // Make every poller before starting, so a failure is one clear message.
    let mut workers = Vec::with_capacity(o.threads);
    for t in 0..o.threads {
        let first = o.conns * t / o.threads;
        let last = o.conns * (t + 1) / o.threads;
        match Worker::new(&plan, &shared, t, first as u64, last - first) {
            Ok(w) => workers.push(w),
            Err(e) => {
                eprintln!("wsloop bench: cannot create a poller: {e}");
                return 1;
            }
        }
    }
    let tty = io::stderr().is_terminal();
    let mut total = Stats::new();
    let mut cpu = CpuMarks::new(&o, shared.start);
    std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .into_iter()
            .map(|w| {
                std::thread::Builder::new()
                    .name(format!("bench-{}", w.me))
                    .spawn_scoped(s, move || w.run())
                    .expect("spawn a bench thread")
            })
            .collect();
        let mut meter = Meter::new(&o, &shared);
        while !handles.iter().all(|h| h.is_finished()) {
            let go = *shared.go.lock().unwrap_or_else(|e| e.into_inner());
            let nap = cpu.sample(go, Duration::from_millis(50));
            std::thread::sleep(nap);
            if tty {
                meter.tick();
            }
        }
        if tty {
            meter.clear();
        }
        cpu.threads_ended();
        for h in handles {
            match h.join() {
                Ok(st) => total.merge(st),
                Err(_) => total.error("a bench thread panicked"),
            }
        }
    });
    let go = shared
        .go
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(shared.start);
    let measured_secs = total
        .run_end
        .min(go + o.warmup + o.duration)
        .saturating_duration_since(go + o.warmup)
        .as_secs_f64();
    let report = Report {
        o: &o,
        s: &total,
        connect_secs: go.saturating_duration_since(shared.start).as_secs_f64(),
        measured_secs,
        close_secs: total
            .finished
            .saturating_duration_since(total.run_end)
            .as_secs_f64(),
        rss: o.server_pid.map(|pid| Rss {
            pid,
            before: rss_before,
            open: *shared.rss_open.lock().unwrap_or_else(|e| e.into_inner()),
            after: read_rss_kib(pid),
        }),
        server_cpu: cpu.cores_and_secs(measured_secs),
    };
    if o.json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    if total.opened == 0 {
        3
    } else if total.error_count > 0 {
        1
    } else {
        0
    }
}

/// The live progress line on stderr.
struct Meter<'a> {
    o: &'a Options,
    shared: &'a Shared,
    last: Instant,
    last_msgs: u64,
}

impl<'a> Meter<'a> {
    fn new(o: &'a Options, shared: &'a Shared) -> Self {
        Meter {
            o,
            shared,
            last: Instant::now(),
            last_msgs: 0,
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.last);
        if dt < Duration::from_millis(500) {
            return;
        }
        let sum = |f: fn(&Progress) -> &AtomicU64| -> u64 {
            self.shared
                .progress
                .iter()
                .map(|p| f(p).load(Relaxed))
                .sum()
        };
        let (open, failed, msgs, errors) = (
            sum(|p| &p.open),
            sum(|p| &p.failed),
            sum(|p| &p.msgs),
            sum(|p| &p.errors),
        );
        let rate = (msgs - self.last_msgs.min(msgs)) as f64 / dt.as_secs_f64();
        self.last = now;
        self.last_msgs = msgs;
        let go = *self.shared.go.lock().unwrap_or_else(|e| e.into_inner());
        let o = self.o;
        let phase = match go {
            None => format!(
                "connecting {:>6.1}s  open {}/{}  failed {}",
                now.saturating_duration_since(self.shared.start)
                    .as_secs_f64(),
                open,
                o.conns,
                failed
            ),
            Some(go) => {
                let t = now.saturating_duration_since(go);
                if o.mode == Mode::Connect {
                    if t < o.hold {
                        format!(
                            "holding {:>5.1}s/{}  open {}",
                            t.as_secs_f64(),
                            secs(o.hold),
                            open
                        )
                    } else {
                        format!("closing  open {open}")
                    }
                } else if t < o.warmup {
                    format!(
                        "warmup {:>5.1}s/{}  open {}  {} msg/s",
                        t.as_secs_f64(),
                        secs(o.warmup),
                        open,
                        group(rate as u64)
                    )
                } else if t < o.warmup + o.duration {
                    format!(
                        "measure {:>5.1}s/{}  open {}  {} msg/s",
                        (t - o.warmup).as_secs_f64(),
                        secs(o.duration),
                        open,
                        group(rate as u64)
                    )
                } else {
                    format!("closing  open {open}")
                }
            }
        };
        eprint!("\r\x1b[Kbench {}: {phase}  errors {errors}", o.mode.name());
        let _ = io::stderr().flush();
    }

    fn clear(&self) {
        eprint!("\r\x1b[K");
        let _ = io::stderr().flush();
    }
}

// ----------------------------------------------------------- reporting

struct Rss {
    pid: u32,
    before: Option<u64>,
    open: Option<u64>,
    after: Option<u64>,
}

struct Report<'a> {
    o: &'a Options,
    s: &'a Stats,
    connect_secs: f64,
    /// The measured time: --duration unless every connection ended first.
    measured_secs: f64,
    close_secs: f64,
    rss: Option<Rss>,
    /// Cores' worth of server CPU (1.0 = one core busy all the time) and
    /// the seconds it is averaged over: the measured window, or in connect
    /// mode the connect phase. From --server-pid.
    server_cpu: Option<(f64, f64)>,
}

/// 1234567 → "1,234,567".
fn group(n: u64) -> String {
    let d = n.to_string();
    let mut out = String::with_capacity(d.len() + d.len() / 3);
    for (i, ch) in d.chars().enumerate() {
        if i > 0 && (d.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s}s")
    }
}

/// Nanoseconds for people.
fn dur(ns: u64) -> String {
    match ns {
        0..=999 => format!("{ns} ns"),
        1_000..=999_949 => format!("{:.1} µs", ns as f64 / 1e3),
        999_950..=999_994_999 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// A byte count for people: `32 B`, `16 KiB`, `1 MiB`.
pub fn fmt_bytes(n: usize) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} B")
    }
}

fn json_str(s: &str, out: &mut String) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Report<'_> {
    fn rate(&self, n: u64) -> f64 {
        if self.measured_secs > 0.0 {
            n as f64 / self.measured_secs
        } else {
            0.0
        }
    }

    fn cut_short(&self) -> bool {
        self.measured_secs + 0.01 < self.o.duration.as_secs_f64()
    }

    fn kib_per_conn(&self) -> Option<f64> {
        let r = self.rss.as_ref()?;
        let (b, a) = (r.before?, r.open?);
        (self.s.opened > 0).then(|| (a as f64 - b as f64) / self.s.opened as f64)
    }

    /// Server CPU nanoseconds per echoed message (echo and latency modes)
    /// or per handshake (connect mode).
    fn cpu_ns_per_msg(&self) -> Option<f64> {
        let (cores, secs) = self.server_cpu?;
        let n = match self.o.mode {
            Mode::Connect => self.s.opened,
            _ => self.s.msgs,
        };
        (n > 0).then(|| cores * secs * 1e9 / n as f64)
    }

    fn text(&self) -> String {
        let (o, s) = (self.o, self.s);
        let mut t = String::new();
        let what = match o.mode {
            Mode::Connect => format!("{} connections held {}", o.conns, secs(o.hold)),
            _ => format!(
                "{} conns x {} in flight, {} {}, {} warmup, {} measured",
                o.conns,
                o.pipeline,
                fmt_bytes(o.size),
                if o.text { "text" } else { "binary" },
                secs(o.warmup),
                secs(o.duration)
            ),
        };
        let mut threads = if o.threads > 1 {
            format!(", {} threads", o.threads)
        } else {
            String::new()
        };
        if o.deflate {
            threads.push_str(", permessage-deflate");
        }
        if o.compressible && o.mode != Mode::Connect {
            threads.push_str(", compressible payloads");
        }
        let _ = writeln!(
            t,
            "wsloop bench {} {}: {what}{threads}",
            o.mode.name(),
            o.url
        );
        let hs_rate = if self.connect_secs > 0.0 {
            s.opened as f64 / self.connect_secs
        } else {
            0.0
        };
        let _ = writeln!(
            t,
            "  connect    {}/{} open in {:.3} s: {} handshakes/s",
            group(s.opened),
            group(o.conns as u64),
            self.connect_secs,
            group(hs_rate as u64)
        );
        let h = &s.handshake;
        if h.total > 0 {
            let _ = writeln!(
                t,
                "  handshake  p50 {}  p99 {}  p99.9 {}  max {}",
                dur(h.quantile(0.5)),
                dur(h.quantile(0.99)),
                dur(h.quantile(0.999)),
                dur(h.max)
            );
        }
        if o.mode != Mode::Connect && s.opened > 0 {
            let _ = writeln!(
                t,
                "  messages   {} echoed in {:.2} s: {} msgs/s, {:.1} MB/s{}",
                group(s.msgs),
                self.measured_secs,
                group(self.rate(s.msgs) as u64),
                self.rate(s.bytes) / 1e6,
                if self.cut_short() {
                    " (cut short: no connection left)"
                } else {
                    ""
                }
            );
            let r = &s.rtt;
            if r.total > 0 {
                let _ = writeln!(
                    t,
                    "  round trip p50 {}  p99 {}  p99.9 {}  max {}  mean {}",
                    dur(r.quantile(0.5)),
                    dur(r.quantile(0.99)),
                    dur(r.quantile(0.999)),
                    dur(r.max),
                    dur(r.mean())
                );
            }
        }
        if let (Some((cores, _)), Some(per)) = (self.server_cpu, self.cpu_ns_per_msg()) {
            let _ = writeln!(
                t,
                "  server cpu {:.0}% of a core, {} per {}",
                cores * 100.0,
                dur(per.round() as u64),
                if o.mode == Mode::Connect {
                    "handshake"
                } else {
                    "message"
                }
            );
        }
        if let Some(r) = &self.rss {
            let kib = |v: Option<u64>| v.map_or("?".to_owned(), |k| format!("{} KiB", group(k)));
            let _ = write!(
                t,
                "  server RSS {} before, {} with {} open, {} after close (pid {})",
                kib(r.before),
                kib(r.open),
                group(s.opened),
                kib(r.after),
                r.pid
            );
            match self.kib_per_conn() {
                Some(k) if o.mode == Mode::Connect => {
                    let _ = writeln!(t, "\n             {k:.2} KiB per connection (user space; kernel socket buffers not included)");
                }
                _ => t.push('\n'),
            }
        }
        if s.opened > 0 {
            let _ = writeln!(
                t,
                "  close      {}/{} closed cleanly in {:.3} s",
                group(s.clean_closes),
                group(s.opened),
                self.close_secs
            );
        }
        let _ = writeln!(t, "  errors     {}", group(s.error_count));
        let mut kinds: Vec<_> = s.errors.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1));
        for (k, n) in kinds {
            let _ = writeln!(t, "  {:>10} {k}", group(*n));
        }
        t
    }

    fn json(&self) -> String {
        let (o, s) = (self.o, self.s);
        let mut j = String::from("{");
        j.push_str("\"mode\":");
        json_str(o.mode.name(), &mut j);
        j.push_str(",\"url\":");
        json_str(&o.url, &mut j);
        let _ = write!(
            j,
            ",\"deflate\":{},\"compressible\":{}",
            o.deflate, o.compressible
        );
        let _ = write!(
            j,
            ",\"conns\":{},\"threads\":{},\"open\":{},\"failed\":{},\"connect_s\":{:.6},\"handshakes_per_s\":{:.1}",
            o.conns,
            o.threads,
            s.opened,
            s.failed,
            self.connect_secs,
            if self.connect_secs > 0.0 { s.opened as f64 / self.connect_secs } else { 0.0 }
        );
        let us = |ns: u64| ns as f64 / 1e3;
        let h = &s.handshake;
        let _ = write!(
            j,
            ",\"handshake_us\":{{\"p50\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1}}}",
            us(h.quantile(0.5)),
            us(h.quantile(0.99)),
            us(h.quantile(0.999)),
            us(if h.total > 0 { h.max } else { 0 })
        );
        if o.mode == Mode::Connect {
            let _ = write!(j, ",\"hold_s\":{}", o.hold.as_secs_f64());
        } else {
            let r = &s.rtt;
            let _ = write!(
                j,
                ",\"pipeline\":{},\"size\":{},\"text\":{},\"warmup_s\":{},\"duration_s\":{},\"measured_s\":{:.6},\"msgs\":{},\"msgs_per_s\":{:.1},\"mb_per_s\":{:.3},\"rtt_us\":{{\"p50\":{:.1},\"p99\":{:.1},\"p999\":{:.1},\"max\":{:.1},\"mean\":{:.1}}}",
                o.pipeline,
                o.size,
                o.text,
                o.warmup.as_secs_f64(),
                o.duration.as_secs_f64(),
                self.measured_secs,
                s.msgs,
                self.rate(s.msgs),
                self.rate(s.bytes) / 1e6,
                us(r.quantile(0.5)),
                us(r.quantile(0.99)),
                us(r.quantile(0.999)),
                us(if r.total > 0 { r.max } else { 0 }),
                us(r.mean())
            );
        }
        if let Some(r) = &self.rss {
            let n = |v: Option<u64>| v.map_or("null".to_owned(), |k| k.to_string());
            let _ = write!(
                j,
                ",\"server_pid\":{},\"rss_kib_before\":{},\"rss_kib_open\":{},\"rss_kib_after\":{},\"kib_per_conn\":{}",
                r.pid,
                n(r.before),
                n(r.open),
                n(r.after),
                self.kib_per_conn().map_or("null".to_owned(), |k| format!("{k:.3}"))
            );
        }
        if let Some((cores, _)) = self.server_cpu {
            let key = if o.mode == Mode::Connect {
                "server_cpu_ns_per_handshake"
            } else {
                "server_cpu_ns_per_msg"
            };
            let _ = write!(
                j,
                ",\"server_cpu_cores\":{cores:.4},\"{key}\":{}",
                self.cpu_ns_per_msg()
                    .map_or("null".to_owned(), |n| format!("{n:.1}"))
            );
        }
        let _ = write!(
            j,
            ",\"clean_closes\":{},\"close_s\":{:.6},\"errors\":{},\"error_kinds\":{{",
            s.clean_closes, self.close_secs, s.error_count
        );
        for (i, (k, n)) in s.errors.iter().enumerate() {
            if i > 0 {
                j.push(',');
            }
            json_str(k, &mut j);
            let _ = write!(j, ":{n}");
        }
        j.push_str("}}");
        j
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_contiguous_and_precise() {
        let mut prev = 0;
        for v in (0..5000u64).chain((12..63).map(|e| (1u64 << e) + 12345)) {
            let i = Hist::index(v);
            assert!(i >= prev, "index goes back at {v}");
            prev = i;
            let (low, width) = Hist::bucket(i);
            assert!(
                low <= v && v < low + width,
                "{v} not in bucket {i} [{low}, +{width})"
            );
            assert!(width == 1 || width * 128 <= low, "bucket {i} too wide");
        }
        assert!(Hist::index(u64::MAX) < Hist::new().counts.len());
    }

    #[test]
    fn quantiles() {
        let mut h = Hist::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.quantile(0.5) as f64;
        assert!((p50 - 500_000.0).abs() / 500_000.0 < 0.01, "{p50}");
        let p99 = h.quantile(0.99) as f64;
        assert!((p99 - 990_000.0).abs() / 990_000.0 < 0.01, "{p99}");
        assert_eq!(h.quantile(1.0), 1_000_000);
        let mut g = Hist::new();
        g.merge(&h);
        assert_eq!(g.quantile(0.5), h.quantile(0.5));
    }

    #[test]
    fn verify_catches_wrong_and_shifted_payloads() {
        for size in [0usize, 5, 32, 2000] {
            let pattern = make_pattern(size + OFFSETS, false);
            let plan = Plan {
                mode: Mode::Echo,
                addr: "127.0.0.1:1".parse().unwrap(),
                host: String::new(),
                target: "/".into(),
                size,
                pipeline: 1,
                text: false,
                pattern: pattern.clone(),
                pattern_text: String::new(),
                config: Arc::new(Config::default()),
                connect_timeout: Duration::from_secs(1),
                max_connecting: 1,
                warmup: Duration::ZERO,
                duration: Duration::from_secs(1),
                hold: Duration::ZERO,
                #[cfg(feature = "tls")]
                tls: None,
            };
            for seq in 0..40 {
                let off = Plan::offset(3, seq);
                let good = &pattern[off..off + size];
                assert!(plan.verify(good, false, 3, seq));
                assert!(!plan.verify(good, true, 3, seq));
                if size >= 16 {
                    // The previous or next message instead of this one.
                    assert!(!plan.verify(good, false, 3, seq + 1));
                    assert!(!plan.verify(good, false, 4, seq));
                    let mut bad = good.to_vec();
                    bad[size - 1] ^= 1;
                    assert!(!plan.verify(&bad, false, 3, seq));
                    let mut mid = good.to_vec();
                    mid[size / 2] ^= 1;
                    let caught = !plan.verify(&mid, false, 3, seq);
                    assert_eq!(
                        caught,
                        size <= FULL_CHECK_MAX || seq.is_multiple_of(FULL_CHECK_EVERY)
                    );
                }
            }
        }
    }

    #[test]
    fn text_pattern_is_printable() {
        assert!(make_pattern(4096, true)
            .iter()
            .all(|b| (b'!'..=b'~').contains(b)));
    }

    #[test]
    fn numbers_for_people() {
        assert_eq!(group(0), "0");
        assert_eq!(group(1234567), "1,234,567");
        assert_eq!(group(100), "100");
        assert_eq!(dur(850), "850 ns");
        assert_eq!(dur(123_456), "123.5 µs");
        assert_eq!(dur(3_842_000), "3.84 ms");
        assert_eq!(dur(999_990), "1.00 ms");
        assert_eq!(fmt_bytes(16 << 10), "16 KiB");
        assert_eq!(fmt_bytes(32), "32 B");
        let mut s = String::new();
        json_str("a\"b\\c\n", &mut s);
        assert_eq!(s, r#""a\"b\\c\n""#.replace("\\n", "\\u000a"));
    }
}
