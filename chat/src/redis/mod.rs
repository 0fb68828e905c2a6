//! The chat's Redis backplane (feature `redis`; `wsloop serve --app chat
//! --redis redis://HOST:PORT`): several server processes share rooms,
//! sequence numbers and history.
//!
//! The mio loop never waits on Redis. Two threads talk to it:
//!
//! - the **publisher** takes jobs from the loop over a bounded channel
//!   (`try_send`, never blocking the loop): a room message runs one Lua
//!   script that assigns the room's next `seq` (HINCRBY), appends the
//!   message to the room's capped stream (XADD MAXLEN 1000 with id
//!   `SEQ-0`, TTL [`HISTORY_TTL_SECS`](scripts::HISTORY_TTL_SECS) refreshed on use) and PUBLISHes it,
//!   all atomically, so every subscriber sees a room's messages in `seq`
//!   order; a broadcast is a plain PUBLISH; a fetch (for a join, or to catch
//!   up) runs a second script that reads the room's epoch, last `seq`,
//!   oldest kept `seq` and the kept messages after a given one. Messages
//!   and broadcasts queued together go out in one pipeline (one round trip;
//!   fetches keep their place in the queue).
//! - the **subscriber** PSUBSCRIBEs to every room channel (and SUBSCRIBEs
//!   to the broadcast channel) and hands what arrives to the loop.
//!
//! Both report back through [`Poster`]: events go into an inbox and at most
//! one `Handle::run` closure is queued at a time to drain it on the loop
//! thread (the library's `Handle::run` cannot reach the handler, so the
//! loop-side [`State`] sits in an `Arc<Mutex<_>>` that only the loop thread
//! ever locks).
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
//! **When Redis is away** (either connection lost): logged once, both
//! threads retry with backoff (100 ms doubling to 5 s); room messages and
//! broadcasts are delivered on this instance only, marked `"local":true`
//! and without `seq` (not numbered, not kept, never replayed, not seen by
//! other instances); joins are answered at once (`joined` with
//! `"local":true` and the last `seq` this instance saw). When both
//! connections are back, every room with members here is fetched again and
//! members get what they missed (what other instances published meanwhile,
//! and the replay a `since` asked for). If Redis lost the data (restarted
//! without persistence), the history starts over with a new `epoch`:
//! members get a new `joined` (new epoch) and a `gap` with `reset`.
//!
//! One edge is not covered: a publish whose reply is lost as the
//! connection drops (it may or may not have run) is delivered locally as
//! well, so members here may see it twice (once `local`, once numbered).

mod jobs;
mod poster;
mod publisher;
mod retry;
mod scripts;
mod state;
mod subscriber;

use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;

use log::info;
use redis::Client;
use wsloop::server::{ConnId, Ctx, Handle};

use crate::bus::{Refusal, RoomBus};
use crate::history::Since;
use crate::wire::{unix_ms, Out};

use jobs::{room_message, Job};
use poster::{lock, CtxSink, Poster};
use publisher::publisher;
use scripts::random_hex;
use state::{State, JOB_QUEUE};
use subscriber::subscriber;

/// Rooms shared through Redis: the [`RoomBus`] of a chat that runs on
/// several servers (lives in the handler, used on the loop thread).
pub struct RedisBus {
    state: Arc<Mutex<State<ConnId>>>,
    instance: Arc<str>,
}

/// Starts the backplane's threads once the server (and its [`Handle`])
/// exists.
pub struct Starter {
    client: Client,
    addr: String,
    jobs: Receiver<Job>,
    state: Arc<Mutex<State<ConnId>>>,
    instance: Arc<str>,
}

impl RedisBus {
    /// Checks a Redis URL (`redis://[:PASSWORD@]HOST:PORT[/DB]`) without
    /// connecting.
    pub fn check_url(url: &str) -> Result<(), String> {
        Client::open(url).map(|_| ()).map_err(|e| e.to_string())
    }

    /// Sets up the bus for `url` (checked, not yet connected); start its
    /// threads with [`Starter::start`] once the server's handle exists.
    pub fn new(url: &str) -> Result<(RedisBus, Starter), String> {
        let client = Client::open(url).map_err(|e| format!("invalid Redis URL '{url}': {e}"))?;
        let addr = client.get_connection_info().addr().to_string();
        let (tx, rx) = mpsc::sync_channel(JOB_QUEUE);
        let state = Arc::new(Mutex::new(State::new(tx)));
        let instance: Arc<str> = random_hex(3).into();
        Ok((
            RedisBus {
                state: state.clone(),
                instance: instance.clone(),
            },
            Starter {
                client,
                addr,
                jobs: rx,
                state,
                instance,
            },
        ))
    }
}

impl Starter {
    /// Spawns the publisher and subscriber threads; they connect (and
    /// reconnect) by themselves.
    pub fn start(self, handle: Handle) -> std::io::Result<()> {
        info!(
            "redis backplane: instance {} using redis at {}",
            self.instance, self.addr
        );
        let poster = Poster::new(self.state, handle);
        let (client, addr, p) = (self.client.clone(), self.addr.clone(), poster.clone());
        thread::Builder::new()
            .name("wsloop-redis-pub".into())
            .spawn(move || publisher(client, addr, self.jobs, p))?;
        thread::Builder::new()
            .name("wsloop-redis-sub".into())
            .spawn(move || subscriber(self.client, self.addr, poster))?;
        Ok(())
    }
}

impl RoomBus for RedisBus {
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
        lock(&self.state).join(&mut CtxSink(ctx), id, room, since);
        Ok(())
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
        lock(&self.state).publish(&mut CtxSink(ctx), msg);
        Ok(())
    }

    fn broadcast(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: &str,
        name: Option<&str>,
        text: &str,
    ) -> Result<(), Refusal> {
        let ts = unix_ms();
        let out = |local| {
            Out::Broadcast {
                from,
                name,
                text,
                ts,
                local,
            }
            .json()
        };
        lock(&self.state).broadcast(&mut CtxSink(ctx), out(false), out(true));
        Ok(())
    }
}
