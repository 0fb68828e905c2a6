//! The chat's Redis backplane (feature `redis`; `wsloop serve --app chat
//! --redis redis://HOST:PORT`, or `rediss://` for TLS): several server
//! processes share rooms, sequence numbers and history.
//!
//! The mio loop never waits on Redis. Three threads talk to it or for it:
//!
//! - the **publisher** takes jobs from the loop over the publish queue
//!   (bounded in jobs and bytes, `try_send`, never blocking the loop): a
//!   room message runs one Lua script that assigns the room's next `seq`
//!   (HINCRBY), appends the message to the room's capped stream (XADD
//!   MAXLEN with id `SEQ-0`), records its id, and PUBLISHes it, all
//!   atomically, so every subscriber sees a room's messages in `seq`
//!   order; a broadcast is a message of one more stream, the broadcast
//!   stream, run by the same script on its own keys;
//!   a fetch (for a join, or to catch up) reads the room's epoch, last
//!   `seq`, oldest kept `seq` and the kept messages after a given one.
//!   Jobs of one kind queued together go out in one pipeline.
//! - the **subscriber** SUBSCRIBEs to the channel of each room with
//!   members on this server (from its first member's join to its last
//!   one's leave: no other server's rooms reach this one) and to the
//!   broadcast stream's channel (while connections are open here), and
//!   hands what arrives to the loop. A room is
//!   fetched only once its subscription is confirmed, so nothing published
//!   between the fetch and the subscription is missed.
//! - the **ticker** wakes the loop while joins wait for Redis, so none
//!   waits longer than [`JOIN_WAIT`](state::JOIN_WAIT).
//!
//! They report back through [`Poster`]: events go into an inbox bounded in
//! bytes (the threads wait when it is full) and one `Handle::run` closure
//! at a time hands a budget of them to the loop-side [`State`] (the
//! library's `Handle::run` cannot reach the handler, so the state sits in
//! an `Arc<Mutex<_>>` that only the loop thread ever locks).
//!
//! **Exactly once, in order, no gap.** A member's copy of a room message
//! comes from the subscription (messages published by this instance too),
//! never straight from the sender. The loop keeps, per member and room, the
//! last `seq` it has handed over (`have`); a live message goes to members
//! whose `have` is the one before it. A member that is behind (it just
//! joined with `since`, or messages were missed while Redis was away, or
//! the room's history started over) is caught up from a fetch: live
//! messages for the room are buffered meanwhile, then the member gets
//! `joined`, `gap` if some are no longer kept, the fetched messages after
//! its `have`, then the buffered ones after that — each `seq` once.
//!
//! **Broadcasts** are that same machinery on one more stream: every open
//! connection is a member of it, its `joined` is the `welcome` (with
//! `broadcast_seq` and `broadcast_epoch`) and its gaps are on room `"*"`.
//! A connection opening is answered like a join: at once when this server
//! is in step with the stream (subscribed, nothing being fetched, and the
//! client asks for nothing older than the last broadcast delivered here),
//! else when Redis has said where the stream stands (the replay after
//! `broadcast_since` comes with it). Until its welcome the connection is in
//! no delivery list, so no broadcast, live or local, comes before its
//! replay, and none twice. When the stream starts over (Redis lost it),
//! connections get a new `welcome` (same id, new epoch) and a `gap` with
//! `reset`.
//!
//! **What a sender sees when Redis fails.** Every message gets an id
//! (random per process, plus a counter) before it leaves the loop, and
//! Redis keeps the ids of a room's kept messages, so a message sent twice
//! is stored and published once. Then:
//! - a message queued while Redis is reachable is numbered and delivered
//!   exactly once, however long Redis takes: a batch whose reply is lost
//!   (a timeout, a dropped connection) is sent again until Redis answers;
//! - a message sent while this instance knows Redis is unreachable (or
//!   that was still queued, never sent, when it found out) is delivered to
//!   members on this instance only, once, marked `"local":true` and
//!   without `seq`: never numbered, kept, replayed or seen elsewhere;
//! - a message that finds the publish queue full (Redis is slower than
//!   the senders) is refused: the sender gets an `error` with
//!   `"retry":true`, and nothing was delivered anywhere;
//! - at a graceful shutdown, the server waits (within its shutdown
//!   deadline) until Redis has acknowledged every queued message; what it
//!   cannot settle by then is logged.
//!
//! No message reaches a member twice in any form. The one thing Redis can
//! still lose is a message stored just before it restarts without
//! persistence: members are then told the history started over (`gap`
//! with `reset`).
//!
//! **When Redis is away** (either connection lost): logged once, the
//! threads retry with backoff (100 ms doubling to 5 s); joins are answered
//! at once (`joined` with `"local":true` and the last `seq` this instance
//! saw). When both connections are back, every room with members here is
//! fetched again (in pipelines) and members get what they missed. If Redis
//! lost the data (restarted without persistence), the history starts over
//! with a new `epoch`: members get a new `joined` (new epoch) and a `gap`
//! with `reset`.

mod jobs;
mod poster;
mod publisher;
mod queue;
mod retry;
mod scripts;
mod state;
mod subs;
mod subscriber;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};
use redis::Client;
use wsloop::server::{ConnId, Ctx, Handle, MetricsWriter};

use crate::bus::{Refusal, RoomBus, Welcome};
use crate::history::Since;
use crate::ChatConfig;

use jobs::{broadcast_message, room_message, Event, Job};
use poster::{lock, CtxSink, Poster, Shared};
use publisher::publisher;
use queue::{Gauge, Outbox};
use scripts::{random_hex, Scripts, HISTORY_TTL_SECS};
use state::{Limits, State, JOB_QUEUE};
use subs::Subs;
use subscriber::subscriber;

/// How often the ticker looks at waiting joins (and at events waiting for
/// a closure).
const TICK: Duration = Duration::from_millis(250);

/// Rooms shared through Redis: the [`RoomBus`] of a chat that runs on
/// several servers (lives in the handler, used on the loop thread).
pub struct RedisBus {
    state: Arc<Mutex<State<ConnId>>>,
    instance: Arc<str>,
    gauge: Arc<Gauge>,
    /// When the server's graceful shutdown began.
    shutdown_at: Option<Instant>,
    /// The inbox from the Redis threads, stopped when this is dropped.
    inbox: Arc<Shared>,
}

impl Drop for RedisBus {
    /// The handler, and so the loop, is gone: the Redis threads end.
    fn drop(&mut self) {
        self.inbox.stop();
    }
}

/// Starts the backplane's threads once the server (and its [`Handle`])
/// exists.
pub struct Starter {
    client: Client,
    addr: String,
    jobs: Receiver<Job>,
    state: Arc<Mutex<State<ConnId>>>,
    waiting: Arc<AtomicBool>,
    gauge: Arc<Gauge>,
    scripts: Scripts,
    subs: Arc<Subs>,
    instance: Arc<str>,
    inbox: Arc<Shared>,
}

/// What a flush at shutdown left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unflushed {
    /// Messages Redis had not acknowledged.
    pub messages: usize,
    /// Their bytes.
    pub bytes: usize,
}

impl RedisBus {
    /// Checks a Redis URL (`redis://[:PASSWORD@]HOST:PORT[/DB]`, or
    /// `rediss://` for TLS) without connecting.
    pub fn check_url(url: &str) -> Result<(), String> {
        Client::open(url).map(|_| ()).map_err(|e| e.to_string())
    }

    /// [`RedisBus::with_config`] with the default limits.
    pub fn new(url: &str) -> Result<(RedisBus, Starter), String> {
        Self::with_config(url, &ChatConfig::default())
    }

    /// Sets up the bus for `url` (checked, not yet connected), keeping
    /// `config.history_per_room` messages per room and using at most
    /// `config.max_rooms` rooms within the history's TTL; start its
    /// threads with [`Starter::start`] once the server's handle exists.
    pub fn with_config(url: &str, config: &ChatConfig) -> Result<(RedisBus, Starter), String> {
        config.validate()?;
        let client = Client::open(url).map_err(|e| format!("invalid Redis URL '{url}': {e}"))?;
        let addr = client.get_connection_info().addr().to_string();
        let (outbox, rx, gauge) = Outbox::new(JOB_QUEUE, config.redis_queue_bytes);
        let ttl = Duration::from_secs(HISTORY_TTL_SECS);
        let limits = Limits {
            max_rooms: config.max_rooms,
            ttl,
        };
        // Message ids must not repeat across processes: 64 random bits.
        let subs = Arc::new(Subs::default());
        let st = State::new(outbox, limits, subs.clone(), random_hex(8));
        let waiting = st.waiting_flag();
        let state = Arc::new(Mutex::new(st));
        let instance: Arc<str> = random_hex(3).into();
        let inbox = Shared::new();
        Ok((
            RedisBus {
                state: state.clone(),
                instance: instance.clone(),
                gauge: gauge.clone(),
                shutdown_at: None,
                inbox: inbox.clone(),
            },
            Starter {
                client,
                addr,
                jobs: rx,
                state,
                waiting,
                gauge,
                scripts: Scripts::new(config.history_per_room, ttl),
                subs,
                instance,
                inbox,
            },
        ))
    }

    /// Both connections to Redis are up (for a readiness check; cheap).
    pub fn is_linked(&self) -> bool {
        lock(&self.state).up()
    }

    /// Messages (and their bytes) queued for Redis or in flight.
    pub fn queued(&self) -> Unflushed {
        let l = self.gauge.load();
        Unflushed {
            messages: l.jobs,
            bytes: l.bytes,
        }
    }

    /// Waits until Redis has acknowledged every queued message, or until
    /// `timeout` after the server's graceful shutdown began (after now if
    /// it did not); then the publisher gives up on what is left, which is
    /// returned (and logged). Call it once the server has stopped.
    pub fn flush(&self, timeout: Duration) -> Unflushed {
        let deadline = self.shutdown_at.unwrap_or_else(Instant::now) + timeout;
        let before = self.gauge.load();
        let left = self.gauge.wait_settled(deadline);
        if left.jobs > 0 {
            warn!(
                "redis backplane: {} messages ({} bytes) not acknowledged by Redis at shutdown",
                left.jobs, left.bytes
            );
        } else if before.jobs > 0 {
            info!(
                "redis backplane: {} queued messages flushed to Redis",
                before.jobs
            );
        }
        Unflushed {
            messages: left.jobs,
            bytes: left.bytes,
        }
    }
}

impl Starter {
    /// Spawns the publisher, subscriber and ticker threads; they connect
    /// (and reconnect) by themselves.
    pub fn start(self, handle: Handle) -> std::io::Result<()> {
        info!(
            "redis backplane: instance {} using redis at {}",
            self.instance, self.addr
        );
        let poster = Poster::new(self.inbox, self.state, handle);
        let (client, addr, p) = (self.client.clone(), self.addr.clone(), poster.clone());
        let (scripts, jobs, gauge) = (self.scripts, self.jobs, self.gauge);
        let sub_gauge = gauge.clone();
        thread::Builder::new()
            .name("wsloop-redis-pub".into())
            .spawn(move || publisher(client, addr, scripts, jobs, p, gauge))?;
        let (p, subs) = (poster.clone(), self.subs);
        thread::Builder::new()
            .name("wsloop-redis-sub".into())
            .spawn(move || subscriber(self.client, self.addr, p, subs, sub_gauge))?;
        let waiting = self.waiting;
        thread::Builder::new()
            .name("wsloop-redis-tick".into())
            .spawn(move || loop {
                thread::sleep(TICK);
                let alive = if waiting.load(Ordering::Acquire) {
                    poster.post(Event::Tick)
                } else {
                    poster.kick()
                };
                if !alive {
                    return;
                }
            })?;
        Ok(())
    }
}

impl RoomBus for RedisBus {
    /// Not while a connection to Redis is down: a member here would not
    /// reach the rooms.
    fn ready(&self) -> bool {
        self.is_linked()
    }

    fn metrics(&self, out: &mut MetricsWriter) {
        out.gauge(
            "wsloop_chat_redis_up",
            "1 while both connections to Redis (publish and subscribe) are up.",
            &[],
            if self.is_linked() { 1.0 } else { 0.0 },
        );
        let q = self.queued();
        out.gauge(
            "wsloop_chat_redis_queue_messages",
            "Chat messages waiting for Redis or in flight.",
            &[],
            q.messages as f64,
        );
        out.gauge(
            "wsloop_chat_redis_queue_bytes",
            "Bytes of the chat messages waiting for Redis or in flight.",
            &[],
            q.bytes as f64,
        );
        out.counter(
            "wsloop_chat_redis_reconnects_total",
            "Connections to Redis (publish or subscribe) made again after one was lost.",
            &[],
            self.gauge.reconnects(),
        );
    }

    /// Prefixed with this process's random instance id, so ids are unique
    /// across the servers sharing Redis.
    fn member_id(&self, n: u64) -> String {
        format!("{}-u{n}", self.instance)
    }

    fn is_member(&self, ctx: &Ctx<'_>, id: ConnId, room: &str) -> bool {
        ctx.in_room(id, room) || lock(&self.state).is_member(id, room)
    }

    fn join(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        room: &str,
        since: Option<&Since>,
        _member: bool,
    ) -> Result<(), Refusal> {
        let now = ctx.now();
        lock(&self.state).join(&mut CtxSink(ctx), id, room, since, now)
    }

    fn leave(&mut self, ctx: &mut Ctx<'_>, id: ConnId, room: &str) -> bool {
        let left = ctx.leave(id, room);
        let left_bus = lock(&self.state).leave(id, room);
        left || left_bus
    }

    fn closed(&mut self, id: ConnId) {
        lock(&self.state).closed(id);
    }

    fn publish(
        &mut self,
        ctx: &mut Ctx<'_>,
        room: &str,
        from: &str,
        name: Option<&str>,
        text: &str,
    ) -> Result<(), Refusal> {
        let msg = room_message(room, from, name, text);
        let now = ctx.now();
        lock(&self.state).publish(&mut CtxSink(ctx), msg, now)
    }

    fn broadcast(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: &str,
        name: Option<&str>,
        text: &str,
    ) -> Result<(), Refusal> {
        let msg = broadcast_message(from, name, text);
        let now = ctx.now();
        lock(&self.state).publish(&mut CtxSink(ctx), msg, now)
    }

    /// Answered when Redis has said where the broadcast stream stands
    /// (at once if this server is in step with it), like a join.
    fn open(&mut self, ctx: &mut Ctx<'_>, id: ConnId, welcome: &Welcome, since: Option<&Since>) {
        let now = ctx.now();
        lock(&self.state).open(&mut CtxSink(ctx), id, welcome.clone(), since, now);
    }

    fn shutdown(&mut self, ctx: &mut Ctx<'_>) {
        self.shutdown_at = Some(ctx.now());
        let q = self.queued();
        if q.messages > 0 {
            info!(
                "redis backplane: shutting down with {} messages queued for Redis",
                q.messages
            );
        }
    }
}
