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

mod accept;
mod access;
mod commands;
mod ctx;
mod entry;
mod flush;
mod guard;
mod handler;
mod metrics;
mod ops;
mod peer;
mod rate;
mod read;
mod stats;
mod timers;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use log::{info, warn};
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;

use crate::config::Config;
use crate::error::Error;

pub use commands::Notifier;
use commands::{Backlog, Command, Notified};
use entry::{kill, Entry, Phase};
use flush::{flush_dirty, flush_now};
use ops::Ops;
use read::read_conn;
use stats::Stats;

pub use access::{http_common, percent_decode, Access};
pub use ctx::{Ctx, Handle};
pub use handler::{ConnId, Handler, HttpResponse, OriginAllowList, Upgrade};
pub use metrics::{Metrics, MetricsWriter};

/// Numbers the servers of the process, for their ids (see [`ConnId`]).
static LOOPS: AtomicU32 = AtomicU32::new(0);

fn next_loop_id() -> u8 {
    LOOPS.fetch_add(1, Ordering::Relaxed) as u8
}

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// Everything the handler's [`Ctx`] may touch.
pub(crate) struct Core {
    config: Arc<Config>,
    registry: Registry,
    slab: Slab<Entry>,
    /// This loop's part of every [`ConnId`].
    loop_id: u8,
    next_gen: u32,
    timers: BinaryHeap<Reverse<timers::Due>>,
    /// Timer deadlines are kept as nanoseconds since this instant.
    epoch: Instant,
    /// The last deadline converted to an `Instant` (`Core::instant`).
    last_due: (u64, Instant),
    dirty: Vec<usize>,
    dead: Vec<usize>,
    /// Connections owed a read next pass (`Entry::owed_read`), with their
    /// generation: a key reused by a new connection in between is not read
    /// for the old one.
    pending_reads: Vec<(usize, u32)>,
    rooms: HashMap<Arc<str>, HashSet<ConnId>>,
    now: Instant,
    open: usize,
    shutdown_at: Option<Instant>,
    handle: Handle,
    /// What happened on this loop, for metrics.
    stats: Stats,
    /// The loop's own endpoints (readiness, metrics).
    ops: Ops,
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
    notified: Vec<Notified>,
    accept_resume: Option<Instant>,
    /// The last accept stopped at its cap with connections maybe waiting.
    accept_more: bool,
    /// EMFILE was logged and no accept has succeeded since.
    accept_warned: bool,
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl<H: Handler> Server<H> {
    /// Binds `addr` (the first address it resolves to), with mio's listen
    /// backlog of 128; for a larger one bind the listener yourself and use
    /// [`Server::from_listener`].
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
        let now = Instant::now();
        let backlog = Arc::new(Backlog::new(
            config.command_queue_len,
            config.command_queue_bytes,
        ));
        Ok(Server {
            core: Core {
                config: Arc::new(config),
                registry: poll.registry().try_clone()?,
                slab: Slab::new(),
                loop_id: next_loop_id(),
                next_gen: 0,
                timers: BinaryHeap::new(),
                epoch: now,
                last_due: (0, now),
                dirty: Vec::new(),
                dead: Vec::new(),
                pending_reads: Vec::new(),
                rooms: HashMap::new(),
                now,
                open: 0,
                shutdown_at: None,
                handle: Handle { tx, waker, backlog },
                stats: Stats::default(),
                ops: Ops::default(),
            },
            poll,
            listener: Some(listener),
            local_addr,
            handler,
            scratch,
            commands: rx,
            notified: Vec::new(),
            accept_resume: None,
            accept_more: false,
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

    /// Runs until a graceful shutdown (see [`Handle::shutdown`]) completes:
    /// from its start, requests for new sessions are answered 503 with
    /// `Retry-After` (the listener stays open for that, and for health
    /// checks), open connections get what is queued for them then close
    /// 1001, and `run` returns once no WebSocket connection is left or
    /// `Config::shutdown_timeout` has passed.
    pub fn run(mut self) -> Result<H, Error> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.next_timeout();
            if self.turn(&mut events, timeout)? {
                return Ok(self.handler);
            }
        }
    }

    /// One pass of the loop: poll (up to `timeout`), handle the events, the
    /// reads owed, the timers, the removals. True once a shutdown is done.
    fn turn(
        &mut self,
        events: &mut Events,
        timeout: Option<std::time::Duration>,
    ) -> Result<bool, Error> {
        if let Err(e) = self.poll.poll(events, timeout) {
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
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
                // Requests run below, whether or not this pass was woken.
                WAKER => {}
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
        if self.core.handle.backlog.pending() {
            self.run_commands();
        }
        self.run_notified();
        for (key, gen) in pending {
            if !self.core.take_owed_read(key, gen) {
                continue;
            }
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
        } else if self.accept_more {
            self.accept();
        }
        self.publish_if_due();
        if let Some(deadline) = self.core.shutdown_at {
            if self.core.sessions_done() {
                info!("shutdown complete");
                return Ok(true);
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
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Core {
    pub(crate) fn id(&self, key: usize) -> ConnId {
        ConnId::new(self.loop_id, key, self.slab[key].gen)
    }

    /// The entry for `id` if it is still the same connection (of this loop).
    fn entry(&mut self, id: ConnId) -> Option<&mut Entry> {
        if id.loop_id() != self.loop_id {
            return None;
        }
        self.slab
            .get_mut(id.key())
            .filter(|e| e.gen == id.gen() && !e.dead)
    }

    fn mark_dirty(&mut self, key: usize) {
        if let Some(e) = self.slab.get_mut(key) {
            if !e.dead {
                e.mark_dirty(key, &mut self.dirty);
            }
        }
    }

    /// Takes `key` out of every room it joined. Every path that ends an
    /// entry (closed, rejected, failed handshake, killed, reaped) calls it.
    fn leave_all_rooms(&mut self, key: usize) {
        let Some(e) = self.slab.get_mut(key) else {
            return;
        };
        let rooms = match e.extra.as_mut() {
            Some(x) if !x.rooms.is_empty() => std::mem::take(&mut x.rooms),
            _ => return,
        };
        let id = self.id(key);
        for r in rooms {
            if let Some(members) = self.rooms.get_mut(&r) {
                members.remove(&id);
                if members.is_empty() {
                    self.rooms.remove(&r);
                }
            }
        }
    }

    /// Owes `key` a read at the next pass (once: the list stays within
    /// the number of entries, and no peer is read more than its share).
    fn owe_read(&mut self, key: usize) {
        if let Some(e) = self.slab.get_mut(key) {
            if !e.owed_read {
                e.owed_read = true;
                self.pending_reads.push((key, e.gen));
            }
        }
    }

    /// Settles a read owed to (`key`, `gen`): true if that entry is still
    /// there to be read (not a new connection in a reused slot).
    fn take_owed_read(&mut self, key: usize, gen: u32) -> bool {
        match self.slab.get_mut(key) {
            Some(e) if e.gen == gen => {
                e.owed_read = false;
                true
            }
            _ => false,
        }
    }

    /// True once no WebSocket connection is left, open or closing. Plain
    /// HTTP exchanges and handshakes do not count: during a shutdown
    /// they are only answered 503 (or health checks), and must not hold
    /// the process up.
    fn sessions_done(&self) -> bool {
        // Cheap while connections remain open; a scan only at the end.
        self.open == 0
            && !self
                .slab
                .iter()
                .any(|(_, e)| !e.dead && matches!(e.phase, Phase::Draining { conn: Some(_), .. }))
    }

    /// Removes dead entries (end of an event batch).
    fn reap(&mut self) {
        if !self.dead.is_empty() {
            self.remove_dead();
        }
        self.compact_timers();
    }

    fn remove_dead(&mut self) {
        for key in std::mem::take(&mut self.dead) {
            if self.slab.get(key).is_some_and(|e| e.dead) {
                self.leave_all_rooms(key);
                let mut e = self.slab.remove(key);
                let _ = self.registry.deregister(&mut e.stream.sock);
            }
        }
        if self.slab.is_empty() && self.slab.capacity() > 1024 {
            self.slab.shrink_to_fit();
        }
    }
}
