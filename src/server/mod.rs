//! The server: one single-threaded mio loop serving WebSocket and plain HTTP
//! on one port.
//!
//! Connections live in a [`Slab`] keyed by mio `Token`. Reads go into one
//! loop-wide buffer; complete frames are unmasked there and handed to the
//! [`Handler`] as borrowed slices. Each connection's replies are queued and
//! written after its input is processed, many frames per `writev`. Timers
//! (handshake, idle, heartbeat, close) sit in one binary heap with lazy
//! deletion. Removals wait for the end of an event batch, so stale events
//! for a removed token are harmless.

mod access;
mod ctx;
mod handler;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io::{self, Read};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;

use crate::buffer::WriteQueue;
use crate::close::CloseCode;
use crate::config::{Config, RateAction, RateLimit};
use crate::error::Error;
use crate::handshake::{self, Head, Request, RequestReader};
use crate::protocol::{CloseInfo, Connection, Event, Message, Role};
use crate::stream::Stream;

pub use access::{http_common, percent_decode, Access};
pub use ctx::{Ctx, Handle};
pub use handler::{ConnId, Handler, HttpResponse, OriginAllowList, Upgrade};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// Reads per readiness event before other connections get a turn.
const MAX_READS_PER_EVENT: usize = 8;
/// How long accepting pauses after EMFILE/ENFILE.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// 503 answers in flight beyond `max_connections`; past this, drop.
const REJECT_SLACK: usize = 64;

/// A request from another thread, carried by a [`Handle`].
pub(crate) enum Command {
    Send(ConnId, Message<'static>),
    Broadcast(Message<'static>),
    Close(ConnId, CloseCode, String),
    Run(Box<dyn FnOnce(&mut Ctx<'_>) + Send>),
    Shutdown,
}

enum Phase {
    /// Reading the request head.
    Handshake {
        reader: RequestReader,
        deadline: Instant,
    },
    /// A WebSocket (its queue starts with the 101 response).
    Open { conn: Connection },
    /// Closed: write what is left, shut down our side, wait for the peer's
    /// EOF until `deadline`.
    Draining {
        conn: Option<Box<Connection>>,
        out: WriteQueue,
        deadline: Instant,
        shut: bool,
    },
}

struct Entry {
    stream: Stream,
    gen: u32,
    phase: Phase,
    dirty: bool,
    dead: bool,
    /// Reads paused: the write queue is above the high water mark.
    paused: bool,
    /// Above the high water mark since the last `on_drain`.
    above_high: bool,
    timer_at: Option<Instant>,
    /// The peer's EOF arrived after its close frame; end once flushed.
    eof: bool,
    /// Rooms joined (allocated on the first join). Boxed: 8 bytes instead
    /// of 24 in every slab entry, and most connections join no room.
    #[allow(clippy::box_collection)]
    rooms: Option<Box<Vec<Arc<str>>>>,
    /// Token bucket, when `Config::rate_limit` is set (allocated on the
    /// first message).
    bucket: Option<Box<Bucket>>,
}

/// Tokens left for messages and bytes, refilled by elapsed time.
#[derive(Debug)]
struct Bucket {
    messages: f64,
    bytes: f64,
    at: Instant,
}

impl Bucket {
    /// Takes one message of `len` bytes; false if over the limit.
    fn take(slot: &mut Option<Box<Bucket>>, limit: &RateLimit, len: usize, now: Instant) -> bool {
        let b = slot.get_or_insert_with(|| {
            Box::new(Bucket {
                messages: limit.message_burst,
                bytes: limit.byte_burst,
                at: now,
            })
        });
        let dt = now.saturating_duration_since(b.at).as_secs_f64();
        b.at = now;
        b.messages = (b.messages + dt * limit.messages_per_sec).min(limit.message_burst);
        b.bytes = (b.bytes + dt * limit.bytes_per_sec).min(limit.byte_burst);
        if b.messages < 1.0 || b.bytes < len as f64 {
            return false;
        }
        b.messages -= 1.0;
        b.bytes -= len as f64;
        true
    }
}

/// Everything the handler's [`Ctx`] may touch.
pub(crate) struct Core {
    config: Arc<Config>,
    registry: Registry,
    slab: Slab<Entry>,
    next_gen: u32,
    timers: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    dirty: Vec<usize>,
    dead: Vec<usize>,
    pending_reads: Vec<usize>,
    rooms: HashMap<Arc<str>, HashSet<ConnId>>,
    now: Instant,
    open: usize,
    shutdown_at: Option<Instant>,
    handle: Handle,
}

/// A WebSocket server: bind, then [`Server::run`].
///
/// ```no_run
/// use wsloop::server::{Ctx, ConnId, Handler, Server};
/// use wsloop::{Config, Message};
///
/// struct Echo;
/// impl Handler for Echo {
///     fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
///         let _ = ctx.send(id, msg);
///     }
/// }
/// Server::bind("127.0.0.1:9001", Config::default(), Echo)?.run()?;
/// # Ok::<(), wsloop::Error>(())
/// ```
pub struct Server<H: Handler> {
    poll: Poll,
    listener: Option<TcpListener>,
    local_addr: SocketAddr,
    handler: H,
    core: Core,
    scratch: Vec<u8>,
    commands: mpsc::Receiver<Command>,
    accept_resume: Option<Instant>,
    /// EMFILE was logged and no accept has succeeded since.
    accept_warned: bool,
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ServerConfig>>,
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    // EMFILE 24, ENFILE 23, ENOBUFS 105, ENOMEM 12 (Linux numbering).
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

impl<H: Handler> Server<H> {
    /// Binds `addr` (the first address it resolves to).
    pub fn bind(addr: impl ToSocketAddrs, config: Config, handler: H) -> Result<Self, Error> {
        config.validate()?;
        let addr = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| Error::Url("address resolves to nothing".into()))?;
        let listener = TcpListener::bind(addr)?;
        Self::from_listener(listener, config, handler)
    }

    /// Uses an already bound listener.
    pub fn from_listener(
        mut listener: TcpListener,
        config: Config,
        handler: H,
    ) -> Result<Self, Error> {
        config.validate()?;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let local_addr = listener.local_addr()?;
        let scratch = vec![0u8; config.read_buffer_size];
        Ok(Server {
            core: Core {
                config: Arc::new(config),
                registry: poll.registry().try_clone()?,
                slab: Slab::new(),
                next_gen: 0,
                timers: BinaryHeap::new(),
                dirty: Vec::new(),
                dead: Vec::new(),
                pending_reads: Vec::new(),
                rooms: HashMap::new(),
                now: Instant::now(),
                open: 0,
                shutdown_at: None,
                handle: Handle { tx, waker },
            },
            poll,
            listener: Some(listener),
            local_addr,
            handler,
            scratch,
            commands: rx,
            accept_resume: None,
            accept_warned: false,
            #[cfg(feature = "tls")]
            tls: None,
        })
    }

    /// Serves wss:// (and HTTPS for plain requests) with this rustls
    /// configuration; see [`crate::tls::server_config_from_pem`].
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// The bound address (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A handle for other threads: send, broadcast, run closures on the
    /// loop, shut down.
    pub fn handle(&self) -> Handle {
        self.core.handle.clone()
    }

    /// The handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Runs until a graceful shutdown (see [`Handle::shutdown`]) completes.
    pub fn run(mut self) -> Result<H, Error> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            self.core.now = Instant::now();
            // Reads owed from before this poll. Those owed from now on
            // (a connection that just drained its queue below the low
            // water mark) wait for the next pass, after every dirty queue
            // has been flushed: a connection reads at most about once per
            // pass, so one that broadcasts cannot outrun its receivers by
            // being written to sooner than they are.
            let pending = std::mem::take(&mut self.core.pending_reads);
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept(),
                    WAKER => self.run_commands(),
                    Token(key) => {
                        if ev.is_writable() {
                            self.core.mark_dirty(key);
                        }
                        if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                            read_conn(
                                &mut self.core,
                                &mut self.handler,
                                &mut self.scratch,
                                key,
                                ev.is_read_closed(),
                            );
                            // Its replies go out now, not after the rest of
                            // the batch has been read (other connections
                            // marked by a broadcast still wait for the end
                            // of the batch, to share one write).
                            flush_now(&mut self.core, &mut self.handler, key);
                        }
                    }
                }
            }
            for key in pending {
                read_conn(
                    &mut self.core,
                    &mut self.handler,
                    &mut self.scratch,
                    key,
                    true,
                );
            }
            flush_dirty(&mut self.core, &mut self.handler);
            self.fire_timers();
            flush_dirty(&mut self.core, &mut self.handler);
            self.core.reap();
            if let Some(at) = self.accept_resume {
                if self.core.now >= at {
                    self.accept_resume = None;
                    self.accept();
                }
            }
            if let Some(deadline) = self.core.shutdown_at {
                if self.core.slab.is_empty() {
                    info!("shutdown complete");
                    return Ok(self.handler);
                }
                if self.core.now >= deadline {
                    warn!(
                        "shutdown deadline passed; dropping {} connections",
                        self.core.slab.len()
                    );
                    let keys: Vec<usize> = self.core.slab.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        kill(&mut self.core, &mut self.handler, key, "shutdown deadline");
                    }
                    self.core.reap();
                    return Ok(self.handler);
                }
            }
        }
    }

    fn next_timeout(&mut self) -> Option<Duration> {
        if !self.core.pending_reads.is_empty() || !self.core.dirty.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut next = self.core.timers.peek().map(|Reverse((t, _, _))| *t);
        for extra in [self.accept_resume, self.core.shutdown_at] {
            next = match (next, extra) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        // Round up to a whole millisecond so the loop does not spin on a
        // deadline a few microseconds away.
        next.map(|t| t.saturating_duration_since(now) + Duration::from_millis(1))
    }

    fn accept(&mut self) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            let (mut sock, addr) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) if is_fd_exhaustion(&e) => {
                    if !self.accept_warned {
                        // Once per episode, not on every retry.
                        self.accept_warned = true;
                        warn!("accept: {e}; pausing accepts for {ACCEPT_BACKOFF:?} at a time until descriptors free up");
                    }
                    self.accept_resume = Some(self.core.now + ACCEPT_BACKOFF);
                    return;
                }
                Err(e) => {
                    warn!("accept: {e}");
                    self.accept_resume = Some(self.core.now + ACCEPT_BACKOFF);
                    return;
                }
            };
            if self.accept_warned {
                self.accept_warned = false;
                info!("accepting again");
            }
            let _ = sock.set_nodelay(true);
            let core = &mut self.core;
            let over = core
                .config
                .max_connections
                .is_some_and(|max| core.slab.len() >= max);
            if over && core.slab.len() >= core.config.max_connections.unwrap_or(0) + REJECT_SLACK {
                debug!("{addr}: dropped, far over max_connections");
                continue;
            }
            let entry = core.slab.vacant_entry();
            let key = entry.key();
            if key >= u32::MAX as usize || key >= WAKER.0 {
                continue;
            }
            if let Err(e) = core.registry.register(
                &mut sock,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                warn!("register: {e}");
                continue;
            }
            core.next_gen = core.next_gen.wrapping_add(1);
            let now = core.now;
            let phase = if over {
                debug!("{addr}: 503, max_connections reached");
                let mut out = WriteQueue::new();
                let mut bytes = Vec::new();
                handshake::write_http_response(
                    503,
                    &[],
                    b"server is at max_connections\n",
                    &mut bytes,
                );
                out.push_slice(&bytes);
                Phase::Draining {
                    conn: None,
                    out,
                    deadline: now + core.config.close_timeout,
                    shut: false,
                }
            } else {
                Phase::Handshake {
                    reader: RequestReader::new(),
                    deadline: now + core.config.handshake_timeout,
                }
            };
            #[cfg(feature = "tls")]
            let stream = match &self.tls {
                Some(cfg) => match rustls::ServerConnection::new(cfg.clone()) {
                    Ok(c) => Stream::tls(sock, c.into()),
                    Err(e) => {
                        warn!("TLS setup: {e}");
                        let _ = core.registry.deregister(&mut sock);
                        continue;
                    }
                },
                None => Stream::plain(sock),
            };
            #[cfg(not(feature = "tls"))]
            let stream = Stream::plain(sock);
            entry.insert(Entry {
                stream,
                gen: core.next_gen,
                phase,
                dirty: false,
                dead: false,
                paused: false,
                above_high: false,
                timer_at: None,
                eof: false,
                rooms: None,
                bucket: None,
            });
            if over {
                core.mark_dirty(key);
            }
            core.schedule(key);
        }
    }

    fn run_commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            let mut ctx = Ctx {
                core: &mut self.core,
            };
            match cmd {
                Command::Send(id, msg) => {
                    let _ = ctx.send(id, msg);
                }
                Command::Broadcast(msg) => {
                    ctx.broadcast_all(&msg);
                }
                Command::Close(id, code, reason) => ctx.close(id, code, &reason),
                Command::Run(f) => f(&mut ctx),
                Command::Shutdown => self.begin_shutdown(),
            }
        }
    }

    fn begin_shutdown(&mut self) {
        if self.core.shutdown_at.is_some() {
            return;
        }
        let now = self.core.now;
        info!("graceful shutdown: closing {} connections", self.core.open);
        let deadline = now + self.core.config.shutdown_timeout;
        self.core.shutdown_at = Some(deadline);
        if let Some(mut l) = self.listener.take() {
            let _ = self.core.registry.deregister(&mut l);
        }
        self.accept_resume = None;
        self.handler.on_shutdown(&mut Ctx {
            core: &mut self.core,
        });
        let keys: Vec<usize> = self.core.slab.iter().map(|(k, _)| k).collect();
        let (code, reason) = handler::SHUTDOWN_CLOSE;
        for key in keys {
            let e = &mut self.core.slab[key];
            match &mut e.phase {
                Phase::Open { conn, .. } => {
                    // Queued after everything already queued: nothing
                    // accepted before the signal is lost.
                    conn.close_until(code, reason, deadline);
                    self.core.mark_dirty(key);
                }
                Phase::Handshake { .. } => {
                    kill(&mut self.core, &mut self.handler, key, "shutdown");
                }
                Phase::Draining { .. } => {}
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = self.core.now;
        while let Some(Reverse((t, key, gen))) = self.core.timers.peek().copied() {
            if t > now {
                break;
            }
            self.core.timers.pop();
            let Some(e) = self.core.slab.get_mut(key) else {
                continue;
            };
            if e.gen != gen || e.dead || e.timer_at != Some(t) {
                continue; // stale
            }
            e.timer_at = None;
            match &mut e.phase {
                Phase::Handshake { deadline, .. } => {
                    if now >= *deadline {
                        debug!("handshake timeout");
                        let mut bytes = Vec::new();
                        handshake::write_error_response(crate::HandshakeError::Timeout, &mut bytes);
                        start_draining(&mut self.core, key, &bytes);
                    }
                }
                Phase::Open { conn, .. } => conn.handle_timeout(now),
                Phase::Draining { deadline, .. } => {
                    if now >= *deadline {
                        kill(&mut self.core, &mut self.handler, key, "drain timeout");
                        continue;
                    }
                }
            }
            self.core.mark_dirty(key);
        }
    }
}

impl Core {
    pub(crate) fn id(&self, key: usize) -> ConnId {
        ConnId::new(key, self.slab[key].gen)
    }

    /// The entry for `id` if it is still the same connection.
    fn entry(&mut self, id: ConnId) -> Option<&mut Entry> {
        self.slab
            .get_mut(id.key())
            .filter(|e| e.gen == id.gen() && !e.dead)
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(e) = self.slab.get_mut(key) {
            if !e.dirty && !e.dead {
                e.dirty = true;
                self.dirty.push(key);
            }
        }
    }

    /// How long a closed connection may take to flush and see the peer's
    /// EOF: the close timeout, or the rest of a graceful shutdown.
    fn drain_deadline(&self) -> Instant {
        let d = self.now + self.config.close_timeout;
        self.shutdown_at.map_or(d, |s| s.max(d))
    }

    /// Makes sure a timer is set for the entry's next deadline.
    fn schedule(&mut self, key: usize) {
        let Some(e) = self.slab.get_mut(key) else {
            return;
        };
        let want = match &e.phase {
            Phase::Handshake { deadline, .. } => Some(*deadline),
            Phase::Open { conn, .. } => conn.poll_timeout(),
            Phase::Draining { deadline, .. } => Some(*deadline),
        };
        if let Some(t) = want {
            if e.timer_at.is_none_or(|cur| t < cur) {
                e.timer_at = Some(t);
                self.timers.push(Reverse((t, key, e.gen)));
            }
        }
    }

    fn leave_all_rooms(&mut self, key: usize) {
        let id = self.id(key);
        let rooms = self.slab[key].rooms.take().map(|b| *b).unwrap_or_default();
        for r in rooms {
            if let Some(members) = self.rooms.get_mut(&r) {
                members.remove(&id);
                if members.is_empty() {
                    self.rooms.remove(&r);
                }
            }
        }
    }

    /// Removes dead entries (end of an event batch).
    fn reap(&mut self) {
        for key in std::mem::take(&mut self.dead) {
            if self.slab.get(key).is_some_and(|e| e.dead) {
                let mut e = self.slab.remove(key);
                let _ = self.registry.deregister(&mut e.stream.sock);
            }
        }
        if self.slab.is_empty() && self.slab.capacity() > 1024 {
            self.slab.shrink_to_fit();
        }
    }
}

/// Reads from `key` until it would block, processing as it goes.
fn read_conn<H: Handler>(
    core: &mut Core,
    handler: &mut H,
    scratch: &mut [u8],
    key: usize,
    to_eof: bool,
) {
    for _ in 0..MAX_READS_PER_EVENT {
        let high = core.config.write_buffer_high;
        let Some(e) = core.slab.get_mut(key) else {
            return;
        };
        if e.dead {
            return;
        }
        if let Phase::Open { conn } = &e.phase {
            // Backpressure: a peer whose replies pile up is not read from
            // until they drain (checked before every read, not per batch).
            if e.paused || conn.buffered() > high {
                e.paused = true;
                e.above_high = true;
                core.mark_dirty(key);
                return;
            }
        }
        let tls = e.stream.is_tls();
        let n = match e.stream.read(scratch) {
            Ok(0) => {
                let e = &mut core.slab[key];
                let orderly = match &e.phase {
                    // The peer's close frame came first: its FIN is the
                    // normal end. Our reply (and what was queued before it)
                    // still goes out; the entry ends once it is written.
                    Phase::Open { conn } => conn.is_closed(),
                    Phase::Draining { shut, .. } => !*shut,
                    Phase::Handshake { .. } => false,
                };
                if orderly {
                    e.eof = true;
                    core.mark_dirty(key);
                } else {
                    lost(core, handler, key, "peer closed TCP");
                }
                return;
            }
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                lost(core, handler, key, &err.to_string());
                return;
            }
        };
        process(core, handler, &mut scratch[..n], key);
        if n < scratch.len() && !to_eof && !tls {
            // The socket is empty for now; the next arrival is a new edge
            // (over TLS, rustls may hold records it has not handed out).
            return;
        }
    }
    core.pending_reads.push(key);
}

/// The peer's TCP side ended (EOF or error).
fn lost<H: Handler>(core: &mut Core, handler: &mut H, key: usize, why: &str) {
    let e = &mut core.slab[key];
    if let Phase::Draining { .. } = e.phase {
        e.dead = true;
        core.dead.push(key);
        return;
    }
    kill(core, handler, key, why);
}

/// Ends `key` now: tells the handler if it was open, removes it at the end
/// of the batch.
fn kill<H: Handler>(core: &mut Core, handler: &mut H, key: usize, why: &str) {
    let Some(e) = core.slab.get_mut(key) else {
        return;
    };
    if e.dead {
        return;
    }
    e.dead = true;
    core.dead.push(key);
    let phase = std::mem::replace(
        &mut e.phase,
        Phase::Draining {
            conn: None,
            out: WriteQueue::new(),
            deadline: core.now,
            shut: true,
        },
    );
    if let Phase::Open { mut conn, .. } = phase {
        conn.handle_transport_closed(why);
        let info = conn.close_info().cloned().unwrap_or(CloseInfo {
            code: CloseCode::ABNORMAL,
            reason: why.to_owned(),
            clean: false,
        });
        closed(core, handler, key, &info);
    }
}

/// Bookkeeping and the handler's `on_close` for a connection that was open.
fn closed<H: Handler>(core: &mut Core, handler: &mut H, key: usize, info: &CloseInfo) {
    let id = core.id(key);
    debug!(
        "{id}: closed {} {:?} clean={}",
        info.code, info.reason, info.clean
    );
    core.open -= 1;
    core.leave_all_rooms(key);
    // The handler sees the connection as gone: sends to it now fail.
    let was_dead = core.slab[key].dead;
    core.slab[key].dead = true;
    handler.on_close(&mut Ctx { core }, id, info);
    core.slab[key].dead = was_dead;
}

/// Queues `bytes` (an HTTP response) and moves the entry to draining.
fn start_draining(core: &mut Core, key: usize, bytes: &[u8]) {
    let mut out = WriteQueue::new();
    out.push_slice(bytes);
    let deadline = core.drain_deadline();
    let e = &mut core.slab[key];
    e.phase = Phase::Draining {
        conn: None,
        out,
        deadline,
        shut: false,
    };
    e.timer_at = None;
    core.mark_dirty(key);
    core.schedule(key);
}

fn process<H: Handler>(core: &mut Core, handler: &mut H, data: &mut [u8], key: usize) {
    let (max_bytes, max_headers) = (core.config.max_handshake_bytes, core.config.max_headers);
    match &mut core.slab[key].phase {
        Phase::Handshake { reader, .. } => match reader.feed(data, max_bytes, max_headers) {
            Ok(Head::Partial) => {}
            Ok(Head::Complete(req, rest)) => handshake_done(core, handler, key, req, rest),
            Err(err) => {
                debug!("bad handshake: {err}");
                let mut bytes = Vec::new();
                handshake::write_error_response(err, &mut bytes);
                start_draining(core, key, &bytes);
            }
        },
        Phase::Open { .. } => feed_frames(core, handler, key, data),
        Phase::Draining { .. } => {}
    }
}

fn handshake_done<H: Handler>(
    core: &mut Core,
    handler: &mut H,
    key: usize,
    req: Request,
    mut rest: Vec<u8>,
) {
    let mut bytes = Vec::new();
    if !req.wants_upgrade() {
        let resp = handler.on_http(&req);
        handshake::write_http_response(resp.status, &resp.headers, &resp.body, &mut bytes);
        if req.method == "HEAD" {
            // Same headers (Content-Length included), no body.
            bytes.truncate(bytes.len() - resp.body.len());
        }
        debug!("HTTP {} {} -> {}", req.method, req.target, resp.status);
        start_draining(core, key, &bytes);
        return;
    }
    let wskey = match req.validate_upgrade() {
        Ok(k) => k.to_owned(),
        Err(err) => {
            debug!("bad upgrade: {err}");
            handshake::write_error_response(err, &mut bytes);
            start_draining(core, key, &bytes);
            return;
        }
    };
    let id = core.id(key);
    match handler.on_upgrade(&mut Ctx { core }, id, &req) {
        Upgrade::Reject(resp) => {
            debug!("{id}: upgrade rejected with {}", resp.status);
            handshake::write_http_response(resp.status, &resp.headers, &resp.body, &mut bytes);
            start_draining(core, key, &bytes);
        }
        Upgrade::Accept { protocol, headers } => {
            #[allow(unused_mut)]
            let mut headers = headers;
            #[allow(unused_mut)]
            let mut conn = Connection::new(Role::Server, core.config.clone(), core.now);
            #[cfg(feature = "deflate")]
            if let Some((params, answer)) =
                crate::extension::negotiate_server(req.extensions(), &core.config.deflate)
            {
                headers.push(("Sec-WebSocket-Extensions".into(), answer));
                conn.enable_deflate(&params);
            }
            handshake::write_accept_response(&wskey, protocol.as_deref(), &headers, &mut bytes);
            conn.push_raw(&bytes);
            let e = &mut core.slab[key];
            e.phase = Phase::Open { conn };
            e.timer_at = None;
            core.open += 1;
            debug!("{id}: open {}", req.target);
            handler.on_open(&mut Ctx { core }, id);
            core.schedule(key);
            core.mark_dirty(key);
            if !rest.is_empty() {
                // Frames that came with the request must not be lost.
                feed_frames(core, handler, key, &mut rest);
            }
        }
    }
}

fn feed_frames<H: Handler>(core: &mut Core, handler: &mut H, key: usize, data: &mut [u8]) {
    let id = core.id(key);
    let mut input: &mut [u8] = data;
    loop {
        let now = core.now;
        let Some(Entry {
            phase: Phase::Open { conn, .. },
            dead: false,
            bucket,
            ..
        }) = core.slab.get_mut(key)
        else {
            return;
        };
        let ev = match conn.poll_event(&mut input, now) {
            Ok(Some(ev)) => ev,
            Ok(None) => break,
            Err(err) => {
                debug!("{id}: {err}");
                break;
            }
        };
        if let (Event::Message(m), Some(limit)) = (&ev, &core.config.rate_limit) {
            if !Bucket::take(bucket, limit, m.as_bytes().len(), now) {
                match limit.action {
                    RateAction::Drop => continue,
                    _ => {
                        debug!("{id}: rate limit exceeded");
                        conn.close(CloseCode::POLICY, "rate limit exceeded", now);
                        continue;
                    }
                }
            }
        }
        let mut ctx = Ctx { core };
        match ev {
            Event::Message(m) => handler.on_message(&mut ctx, id, m),
            Event::Ping(p) => handler.on_ping(&mut ctx, id, &p),
            Event::Pong(p) => handler.on_pong(&mut ctx, id, &p),
            Event::Close(..) => {}
        }
    }
    core.mark_dirty(key);
}

fn flush_dirty<H: Handler>(core: &mut Core, handler: &mut H) {
    while let Some(key) = core.dirty.pop() {
        flush_now(core, handler, key);
    }
}

/// Writes what `key` has queued if it is marked dirty (it may also still
/// be on the dirty list: that entry is then skipped).
fn flush_now<H: Handler>(core: &mut Core, handler: &mut H, key: usize) {
    if let Some(e) = core.slab.get_mut(key) {
        if e.dirty {
            e.dirty = false;
            if !e.dead {
                flush_one(core, handler, key);
            }
        }
    }
}

fn flush_one<H: Handler>(core: &mut Core, handler: &mut H, key: usize) {
    let (high, low) = (core.config.write_buffer_high, core.config.write_buffer_low);
    let drain_deadline = core.drain_deadline();
    let e = &mut core.slab[key];
    match &mut e.phase {
        Phase::Handshake { .. } => {
            if let Err(err) = e.stream.flush_records() {
                lost(core, handler, key, &err.to_string());
                return;
            }
        }
        Phase::Open { conn } => {
            let mut res = e.stream.flush_records().map(|_| 0);
            if res.is_ok() {
                res = conn.write_to(&mut e.stream);
            }
            if let Err(err) = res {
                lost(core, handler, key, &err.to_string());
                return;
            }
            // Hysteresis: pause above high, resume (and tell the handler)
            // at or below low.
            let buffered = conn.buffered();
            let mut drained = false;
            if buffered > high {
                e.above_high = true;
                e.paused = true;
            } else if buffered <= low {
                if e.paused {
                    e.paused = false;
                    core.pending_reads.push(key);
                }
                if e.above_high {
                    e.above_high = false;
                    drained = true;
                }
            }
            if conn.is_closed() {
                let info = conn.close_info().cloned().expect("closed has info");
                let Phase::Open { conn } = std::mem::replace(
                    &mut e.phase,
                    Phase::Draining {
                        conn: None,
                        out: WriteQueue::new(),
                        deadline: drain_deadline,
                        shut: false,
                    },
                ) else {
                    unreachable!()
                };
                if let Phase::Draining { conn: c, .. } = &mut e.phase {
                    *c = Some(Box::new(conn));
                }
                e.timer_at = None;
                closed(core, handler, key, &info);
                core.mark_dirty(key);
                core.schedule(key);
                return;
            }
            if drained {
                let id = core.id(key);
                handler.on_drain(&mut Ctx { core }, id);
            }
        }
        Phase::Draining {
            conn, out, shut, ..
        } => {
            let mut res = e.stream.flush_records().map(|_| 0);
            if res.is_ok() {
                res = out.write_to(&mut e.stream);
            }
            if let (Ok(_), true, Some(c)) = (&res, out.is_empty(), conn.as_mut()) {
                res = c.write_to(&mut e.stream);
            }
            if res.is_err() {
                lost(core, handler, key, "write failed while closing");
                return;
            }
            let empty = out.is_empty()
                && conn.as_ref().is_none_or(|c| !c.wants_write())
                && !e.stream.has_pending();
            let handshake_done = conn
                .as_ref()
                .and_then(|c| c.close_info())
                .is_some_and(|i| i.clean);
            if empty && !*shut && handshake_done && !e.stream.is_tls() {
                // Both close frames are through and the peer sends nothing
                // after its own: close the socket now (we close first, RFC
                // 6455 §7.1.1) instead of waiting for its EOF.
                e.dead = true;
                core.dead.push(key);
                return;
            }
            if empty && !*shut {
                // We close first (RFC 6455 §7.1.1); the peer's EOF, or the
                // deadline, ends the entry. (An HTTP response, or a close
                // frame not answered yet: the peer may still be sending, and
                // closing with unread input would reset the connection.)
                *shut = true;
                e.stream.shutdown_write();
                *conn = None;
            }
            if *shut && e.eof {
                // The peer's EOF came before we were done writing.
                e.dead = true;
                core.dead.push(key);
                return;
            }
        }
    }
    core.schedule(key);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_bursts_then_the_rate() {
        let limit = RateLimit::new(10.0, 1000.0);
        let t0 = Instant::now();
        let mut slot = None;
        for _ in 0..10 {
            assert!(Bucket::take(&mut slot, &limit, 10, t0));
        }
        assert!(
            !Bucket::take(&mut slot, &limit, 10, t0),
            "burst of 10 used up"
        );
        // 100 ms later one message's worth has come back.
        let t1 = t0 + Duration::from_millis(100);
        assert!(Bucket::take(&mut slot, &limit, 10, t1));
        assert!(!Bucket::take(&mut slot, &limit, 10, t1));
        // Bytes are limited too: 2000 bytes never fit a 1000-byte burst.
        let t2 = t1 + Duration::from_secs(10);
        assert!(!Bucket::take(&mut slot, &limit, 2000, t2));
        assert!(Bucket::take(&mut slot, &limit, 1000, t2));
    }
}
#[cfg(test)]
mod size_probe {
    /// Idle memory per connection is mostly this entry (the timer heap adds
    /// 32 bytes): keep it small.
    #[test]
    fn entry_stays_small() {
        let size = std::mem::size_of::<super::Entry>();
        assert!(size <= 224, "Entry grew to {size} bytes");
    }
}
