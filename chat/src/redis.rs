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
//!   `SEQ-0`, TTL [`HISTORY_TTL_SECS`] refreshed on use) and PUBLISHes it,
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

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use redis::{Client, Connection, RedisError, Script, Value};
use wsloop::server::{ConnId, Ctx, Handle};
use wsloop::Message;

use crate::bus::{deliver, RoomBus};
use crate::history::Since;
use crate::wire::{unix_ms, Out};
use crate::HISTORY_PER_ROOM;

/// Every key and channel starts with this.
pub const PREFIX: &str = "wsloop:chat:";
/// A room's history (and its sequence numbers) expires after this long
/// without messages or joins; it then starts over with a new epoch.
pub const HISTORY_TTL_SECS: u64 = 24 * 3600;
/// Jobs waiting for the publisher; past this, messages are delivered
/// locally (and joins answered locally) rather than block the loop.
const JOB_QUEUE: usize = 65_536;
/// Live messages buffered per room while a fetch is in flight; past this
/// the room is fetched again when the fetch returns.
const BUFFER_LIMIT: usize = 10_000;
/// Events waiting for the loop before the subscriber slows down.
const INBOX_LIMIT: usize = 100_000;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The publisher pings an idle connection this often (so a dead one is
/// noticed before a message is lost on it)...
const PUB_IDLE: Duration = Duration::from_secs(1);
/// ...and the subscriber when nothing arrived for this long.
const SUB_IDLE: Duration = Duration::from_secs(10);
/// Catch-up rounds for one room in a row before giving up until the next
/// event (a safety net; two rounds are the most a consistent Redis needs).
const MAX_ROUNDS: u32 = 8;
/// `after` for a fetch that needs no messages, only where the room stands.
const NOTHING: u64 = u64::MAX;

/// Assigns the next seq, keeps the message, publishes it: one atomic step.
/// KEYS: meta hash (seq, epoch), stream. ARGV: epoch for a new history,
/// messages kept, TTL, channel, JSON before the seq, JSON after it.
const APPEND_LUA: &str = r"
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
end
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local json = ARGV[5] .. seq .. ARGV[6]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], seq .. '-0', 'm', json)
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], epoch .. ' ' .. seq .. ' ' .. json)
return seq
";

/// Where a room stands and the kept messages after ARGV[2] (-1: none).
/// KEYS as above. ARGV: epoch for a new history, after, TTL, the epoch the
/// caller's `after` belongs to ('' if unknown): for another one, all kept
/// messages are returned. Returns {epoch, last, oldest, the `after` used,
/// seqs, texts}.
const FETCH_LUA: &str = r"
if redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1]) == 1 then
  redis.call('DEL', KEYS[2])
end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
local last = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
local oldest = last + 1
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
if #first > 0 then oldest = tonumber(string.match(first[1][1], '^%d+')) end
local after = tonumber(ARGV[2])
if after >= 0 and ARGV[4] ~= '' and ARGV[4] ~= epoch then after = 0 end
local seqs, texts = {}, {}
if after >= 0 and after < last then
  local from = math.max(after + 1, oldest)
  for _, e in ipairs(redis.call('XRANGE', KEYS[2], tostring(from), '+')) do
    seqs[#seqs + 1] = tonumber(string.match(e[1], '^%d+'))
    texts[#texts + 1] = e[2][2]
  end
end
return {epoch, last, oldest, after, seqs, texts}
";

fn meta_key(room: &str) -> String {
    format!("{PREFIX}meta:{room}")
}
fn log_key(room: &str) -> String {
    format!("{PREFIX}log:{room}")
}
fn room_channel(room: &str) -> String {
    format!("{PREFIX}room:{room}")
}
fn all_channel() -> String {
    format!("{PREFIX}all")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only the loop thread locks the state; a panic there must not wedge
    // the backplane for good.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn random_hex(bytes: usize) -> String {
    let mut r = vec![0u8; bytes];
    wsloop::rand::fill(&mut r);
    r.iter().map(|b| format!("{b:02x}")).collect()
}

// ------------------------------------------------------------------ jobs

/// A room message as the chat encodes it for a bus that numbers messages
/// elsewhere: the JSON is `head` + seq + `tail` when numbered, `local` when
/// delivered without the bus.
pub(crate) struct RoomMessage {
    pub room: std::sync::Arc<str>,
    pub head: String,
    pub tail: String,
    pub local: String,
}

/// The JSON of a room message, split around its `seq` (for a bus that
/// numbers it elsewhere), plus its form for local-only delivery.
pub(crate) fn room_message(room: &str, from: &str, name: Option<&str>, text: &str) -> RoomMessage {
    let ts = unix_ms();
    let msg = |seq, local| Out::Message {
        room,
        seq,
        from,
        name,
        text,
        ts,
        local,
    };
    let json = msg(Some(0), false).json();
    // `,"seq":` right before an unescaped quote can only be the field
    // (inside a JSON string a quote is escaped), and it precedes `text`.
    let at = json
        .find(",\"seq\":0,")
        .expect("serialized message has a seq field");
    RoomMessage {
        room: room.into(),
        head: json[..at + 7].to_owned(),
        tail: json[at + 8..].to_owned(),
        local: msg(None, true).json(),
    }
}

/// Work for the publisher thread.
pub(crate) enum Job {
    Publish(RoomMessage),
    Broadcast {
        json: String,
        local: String,
    },
    Fetch {
        room: Arc<str>,
        after: u64,
        hint: Option<Arc<str>>,
    },
}

/// What a fetch found.
#[derive(Debug, Clone)]
pub(crate) struct Fetched {
    epoch: Arc<str>,
    last: u64,
    oldest: u64,
    entries: Vec<(u64, Arc<str>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Publisher,
    Subscriber,
}

/// What the threads tell the loop.
pub(crate) enum Event {
    Link(Side, bool),
    Live {
        room: Arc<str>,
        epoch: Arc<str>,
        seq: u64,
        json: Arc<str>,
    },
    LiveAll(String),
    Fetched {
        room: Arc<str>,
        after: u64,
        result: Fetched,
    },
    /// A job Redis did not take (or a fetch that failed).
    Bounced(Job),
}

// ------------------------------------------------------------ loop side

/// Where the loop-side state sends things; the loop's [`Ctx`] in the
/// server, a recorder in unit tests.
pub(crate) trait Sink<I> {
    fn send(&mut self, id: I, json: &str);
    fn send_many(&mut self, ids: &[I], json: &str);
    fn join(&mut self, id: I, room: &str);
    /// To every member of `room` that has been answered (the library's room).
    fn publish(&mut self, room: &str, json: &str);
    fn broadcast_all(&mut self, json: &str);
}

struct CtxSink<'a, 'b>(&'a mut Ctx<'b>);

impl Sink<ConnId> for CtxSink<'_, '_> {
    fn send(&mut self, id: ConnId, json: &str) {
        // A closed or overflowing connection is the library's business.
        let _ = self.0.send_text(id, json);
    }
    fn send_many(&mut self, ids: &[ConnId], json: &str) {
        self.0
            .broadcast(ids.iter().copied(), &Message::Text(Cow::Borrowed(json)));
    }
    fn join(&mut self, id: ConnId, room: &str) {
        self.0.join(id, room);
    }
    fn publish(&mut self, room: &str, json: &str) {
        deliver(self.0, room, json);
    }
    fn broadcast_all(&mut self, json: &str) {
        self.0.broadcast_all(&Message::Text(Cow::Borrowed(json)));
    }
}

/// One member of one room, as the loop tracks it.
#[derive(Debug)]
struct Member {
    /// The last seq handed to it (or, before it is caught up, the `since`
    /// it asked for); `None`: whatever is current when the room is next
    /// fetched (a join without `since`).
    have: Option<u64>,
    /// The history `have` belongs to (`None`: not said, trusted).
    epoch: Option<Arc<str>>,
    /// It must be told the history started over (set when that was found
    /// and it could not be caught up in the same round).
    reset: bool,
    /// It got its `joined` (and is in the library's room).
    answered: bool,
    /// The epoch its last `joined` named.
    told: Option<Arc<str>>,
}

struct Live {
    epoch: Arc<str>,
    seq: u64,
    json: Arc<str>,
}

struct Room<I> {
    /// The history as last seen in Redis.
    epoch: Option<Arc<str>>,
    /// The highest seq seen in that history.
    last: u64,
    members: HashMap<I, Member>,
    fetching: bool,
    /// Live messages kept for members that are behind.
    buffer: Vec<Live>,
    overflowed: bool,
    rounds: u32,
}

impl<I> Room<I> {
    fn new() -> Self {
        Room {
            epoch: None,
            last: 0,
            members: HashMap::new(),
            fetching: false,
            buffer: Vec::new(),
            overflowed: false,
            rounds: 0,
        }
    }
}

/// The loop-side state: rooms with members here, what each member has had,
/// and whether Redis is reachable. Only the loop thread uses it.
pub(crate) struct State<I> {
    jobs: SyncSender<Job>,
    pub_up: bool,
    sub_up: bool,
    rooms: HashMap<Arc<str>, Room<I>>,
    conns: HashMap<I, Vec<Arc<str>>>,
    /// Jobs refused because the queue was full (logged now and then).
    dropped: u64,
}

fn joined_json(room: &str, seq: u64, epoch: &str, local: bool) -> String {
    Out::Joined {
        room,
        seq,
        epoch,
        local,
    }
    .json()
}

fn gap_json(room: &str, from: u64, reset: bool) -> String {
    Out::Gap { room, from, reset }.json()
}

impl<I: Copy + Eq + Hash + Ord + std::fmt::Debug> State<I> {
    pub(crate) fn new(jobs: SyncSender<Job>) -> Self {
        State {
            jobs,
            pub_up: false,
            sub_up: false,
            rooms: HashMap::new(),
            conns: HashMap::new(),
            dropped: 0,
        }
    }

    fn up(&self) -> bool {
        self.pub_up && self.sub_up
    }

    fn name(&self, room: &str) -> Arc<str> {
        match self.rooms.get_key_value(room) {
            Some((k, _)) => k.clone(),
            None => room.into(),
        }
    }

    /// `id` is in `room`, or its join is being answered.
    pub(crate) fn is_member(&self, id: I, room: &str) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.members.contains_key(&id))
    }

    fn queue(&mut self, job: Job) -> Result<(), Job> {
        match self.jobs.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job)) => {
                self.dropped += 1;
                if self.dropped.is_power_of_two() {
                    warn!(
                        "redis backplane: publisher queue full ({JOB_QUEUE} jobs; {} refused so far): \
                         handling locally",
                        self.dropped
                    );
                }
                Err(job)
            }
            Err(TrySendError::Disconnected(job)) => Err(job),
        }
    }

    /// A join: with Redis, answered when the room's fetch returns (replay
    /// after `since`, then live); without, answered at once.
    pub(crate) fn join(
        &mut self,
        out: &mut impl Sink<I>,
        id: I,
        room: &str,
        since: Option<&Since>,
    ) {
        let name = self.name(room);
        let rooms = self.conns.entry(id).or_default();
        if !rooms.contains(&name) {
            rooms.push(name.clone());
        }
        let up = self.up();
        let r = self.rooms.entry(name.clone()).or_insert_with(Room::new);
        let have = since.map(|s| s.seq);
        let epoch: Option<Arc<str>> = since.and_then(|s| s.epoch.as_deref()).map(Arc::from);
        if up {
            r.members.insert(
                id,
                Member {
                    have,
                    epoch,
                    reset: false,
                    answered: false,
                    told: None,
                },
            );
            r.rounds = 0;
            self.fetch(out, &name);
        } else {
            // Answer now from what this instance knows; the catch-up comes
            // when Redis is back.
            let have = have.or(r.epoch.is_some().then_some(r.last));
            let epoch = epoch.or_else(|| r.epoch.clone());
            r.members.insert(
                id,
                Member {
                    have,
                    epoch,
                    reset: false,
                    answered: true,
                    told: r.epoch.clone(),
                },
            );
            out.join(id, &name);
            out.send(
                id,
                &joined_json(&name, r.last, r.epoch.as_deref().unwrap_or(""), true),
            );
        }
    }

    /// Takes `id` out of `room`; false if it was not in it.
    pub(crate) fn leave(&mut self, id: I, room: &str) -> bool {
        let Some(r) = self.rooms.get_mut(room) else {
            return false;
        };
        if r.members.remove(&id).is_none() {
            return false;
        }
        if r.members.is_empty() {
            self.rooms.remove(room);
        }
        if let Some(rooms) = self.conns.get_mut(&id) {
            rooms.retain(|n| &**n != room);
            if rooms.is_empty() {
                self.conns.remove(&id);
            }
        }
        true
    }

    /// `id` closed: out of every room.
    pub(crate) fn closed(&mut self, id: I) {
        for name in self.conns.remove(&id).unwrap_or_default() {
            if let Some(r) = self.rooms.get_mut(&name) {
                r.members.remove(&id);
                if r.members.is_empty() {
                    self.rooms.remove(&name);
                }
            }
        }
    }

    /// A room message from a member here.
    pub(crate) fn publish(&mut self, out: &mut impl Sink<I>, msg: RoomMessage) {
        if !self.up() {
            return out.publish(&msg.room, &msg.local);
        }
        if let Err(Job::Publish(msg)) = self.queue(Job::Publish(msg)) {
            out.publish(&msg.room, &msg.local);
        }
    }

    /// A broadcast from a member here.
    pub(crate) fn broadcast(&mut self, out: &mut impl Sink<I>, json: String, local: String) {
        if self.up()
            && self
                .queue(Job::Broadcast {
                    json,
                    local: local.clone(),
                })
                .is_ok()
        {
            return;
        }
        out.broadcast_all(&local);
    }

    pub(crate) fn on_event(&mut self, out: &mut impl Sink<I>, ev: Event) {
        match ev {
            Event::Link(side, up) => self.link(out, side, up),
            Event::Live {
                room,
                epoch,
                seq,
                json,
            } => self.live(out, &room, epoch, seq, json),
            Event::LiveAll(json) => out.broadcast_all(&json),
            Event::Fetched {
                room,
                after,
                result,
            } => self.fetched(out, &room, after, result),
            Event::Bounced(Job::Publish(m)) => out.publish(&m.room, &m.local),
            Event::Bounced(Job::Broadcast { local, .. }) => out.broadcast_all(&local),
            Event::Bounced(Job::Fetch { room, .. }) => self.fetch_failed(out, &room),
        }
    }

    fn link(&mut self, out: &mut impl Sink<I>, side: Side, up: bool) {
        let was = self.up();
        match side {
            Side::Publisher => self.pub_up = up,
            Side::Subscriber => self.sub_up = up,
        }
        let now = self.up();
        if was && !now {
            warn!(
                "redis backplane down ({side:?} connection lost): room messages and broadcasts \
                 are delivered on this instance only (\"local\":true) until it is back"
            );
        } else if !was && now {
            info!(
                "redis backplane up: catching up {} rooms with members here",
                self.rooms.len()
            );
            let names: Vec<Arc<str>> = self.rooms.keys().cloned().collect();
            for name in names {
                if let Some(r) = self.rooms.get_mut(&name) {
                    r.rounds = 0;
                }
                self.fetch(out, &name);
            }
        }
    }

    /// Asks for `room` as Redis has it, from the oldest `have` of its
    /// members, unless a fetch is already in flight (its result is checked
    /// against every member, and another round follows if needed).
    fn fetch(&mut self, out: &mut impl Sink<I>, room: &Arc<str>) {
        if !self.up() {
            return;
        }
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        if r.fetching {
            return;
        }
        r.rounds += 1;
        if r.rounds > MAX_ROUNDS {
            error!("redis backplane: room {room:?} did not settle after {MAX_ROUNDS} fetches");
            return;
        }
        // The epoch members' `have` is counted in: the room's, else the
        // first one a member named.
        let hint = r
            .epoch
            .clone()
            .or_else(|| r.members.values().find_map(|m| m.epoch.clone()));
        let after = r
            .members
            .values()
            .map(|m| match m.have {
                None => NOTHING,
                Some(_) if m.reset => 0,
                Some(_) if m.epoch.is_some() && m.epoch != hint => 0,
                Some(h) => h,
            })
            .min()
            .unwrap_or(NOTHING);
        r.fetching = true;
        let job = Job::Fetch {
            room: room.clone(),
            after,
            hint,
        };
        if self.queue(job).is_err() {
            self.fetch_failed(out, room);
        }
    }

    /// A fetch could not be done: answer whoever waits from what is known
    /// here; the room is fetched again when Redis is back (or on its next
    /// live message).
    fn fetch_failed(&mut self, out: &mut impl Sink<I>, room: &Arc<str>) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        r.fetching = false;
        let mut ids: Vec<I> = r
            .members
            .iter()
            .filter(|(_, m)| !m.answered)
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        for id in ids {
            let m = r.members.get_mut(&id).expect("listed above");
            m.answered = true;
            m.told = r.epoch.clone();
            out.join(id, room);
            out.send(
                id,
                &joined_json(room, r.last, r.epoch.as_deref().unwrap_or(""), true),
            );
        }
        Self::drain_buffer(out, room, r);
    }

    /// A live room message from the subscription.
    fn live(
        &mut self,
        out: &mut impl Sink<I>,
        room: &Arc<str>,
        epoch: Arc<str>,
        seq: u64,
        json: Arc<str>,
    ) {
        let Some(r) = self.rooms.get_mut(room) else {
            return; // no members here
        };
        let mut behind = false;
        if r.epoch.as_ref() == Some(&epoch) {
            r.last = r.last.max(seq);
            let mut ids = Vec::new();
            for (id, m) in r.members.iter_mut() {
                let in_sync = m.answered && !m.reset && m.epoch.as_ref() == Some(&epoch);
                match m.have {
                    Some(h) if in_sync && h + 1 == seq => {
                        m.have = Some(seq);
                        ids.push(*id);
                    }
                    Some(h) if in_sync && h >= seq => {}
                    _ => behind = true,
                }
            }
            if !ids.is_empty() {
                out.send_many(&ids, &json);
            }
        } else {
            // Another history (Redis lost the room's data, or this room is
            // new here): the fetch tells.
            behind = true;
        }
        if behind {
            if r.buffer.len() < BUFFER_LIMIT {
                r.buffer.push(Live { epoch, seq, json });
            } else {
                r.overflowed = true;
            }
            if !r.fetching {
                r.rounds = 0;
                self.fetch(out, room);
            }
        }
    }

    /// Hands buffered live messages to members they are next for; keeps
    /// the rest. True if members are still behind after that.
    fn drain_buffer(out: &mut impl Sink<I>, _room: &str, r: &mut Room<I>) -> bool {
        let buffer = std::mem::take(&mut r.buffer);
        let mut behind = false;
        let mut kept = Vec::new();
        for live in buffer {
            if r.epoch.as_ref() != Some(&live.epoch) {
                // From another history than the one fetched: older (dropped)
                // or newer (a later fetch finds it).
                behind = true;
                continue;
            }
            r.last = r.last.max(live.seq);
            let mut ids = Vec::new();
            let mut keep = false;
            for (id, m) in r.members.iter_mut() {
                let in_sync = m.answered && !m.reset && m.epoch.as_ref() == Some(&live.epoch);
                match m.have {
                    Some(h) if in_sync && h + 1 == live.seq => {
                        m.have = Some(live.seq);
                        ids.push(*id);
                    }
                    Some(h) if in_sync && h >= live.seq => {}
                    _ => keep = true,
                }
            }
            if !ids.is_empty() {
                out.send_many(&ids, &live.json);
            }
            if keep {
                behind = true;
                kept.push(live);
            }
        }
        r.buffer = kept;
        behind
    }

    /// A fetch returned: answer and catch up every member it covers.
    fn fetched(&mut self, out: &mut impl Sink<I>, room: &Arc<str>, after: u64, f: Fetched) {
        let Some(r) = self.rooms.get_mut(room) else {
            return; // everyone left meanwhile
        };
        r.fetching = false;
        let e = f.epoch.clone();
        if r.epoch.as_ref() != Some(&e) {
            if r.epoch.is_some() {
                info!("redis backplane: room {room:?} history started over (epoch {e})");
            }
            r.epoch = Some(e.clone());
            r.last = f.last;
        } else {
            r.last = r.last.max(f.last);
        }
        let last = f.last;
        // Seqs up to `floor` are no longer kept.
        let floor = f.oldest.saturating_sub(1);
        let mut behind = false;
        // Members to hand fetched entries to, with what they have.
        let mut plan: Vec<(u64, I)> = Vec::new();
        let mut ids: Vec<I> = r.members.keys().copied().collect();
        ids.sort();
        for id in ids {
            let m = r.members.get_mut(&id).expect("listed above");
            let Some(have) = m.have else {
                // From now on: no replay.
                m.have = Some(last);
                m.epoch = Some(e.clone());
                if !m.answered || m.told.as_ref() != Some(&e) {
                    if !m.answered {
                        out.join(id, room);
                    }
                    out.send(id, &joined_json(room, last, &e, false));
                    m.answered = true;
                    m.told = Some(e.clone());
                }
                continue;
            };
            let foreign = m.epoch.as_ref().is_some_and(|x| *x != e);
            let reset = m.reset || foreign || have > last;
            let h = if reset { 0 } else { have };
            let start = h.max(floor);
            let covered = start >= last || after <= start;
            if !covered {
                if reset {
                    m.reset = true;
                    m.have = Some(0);
                }
                behind = true;
                continue;
            }
            if !m.answered || m.told.as_ref() != Some(&e) {
                if !m.answered {
                    out.join(id, room);
                }
                out.send(id, &joined_json(room, last, &e, false));
                m.answered = true;
                m.told = Some(e.clone());
            }
            if reset || h < floor {
                out.send(id, &gap_json(room, f.oldest, reset));
            }
            m.reset = false;
            m.epoch = Some(e.clone());
            m.have = Some(start);
            plan.push((start, id));
        }
        // Each fetched message to the members that lack it, encoded once.
        plan.sort();
        let mut upto = 0;
        let mut to: Vec<I> = Vec::new();
        for (seq, json) in &f.entries {
            while upto < plan.len() && plan[upto].0 < *seq {
                to.push(plan[upto].1);
                upto += 1;
            }
            if !to.is_empty() {
                out.send_many(&to, json);
            }
            for id in &to {
                if let Some(m) = r.members.get_mut(id) {
                    m.have = Some((*seq).max(m.have.unwrap_or(0)));
                }
            }
        }
        if Self::drain_buffer(out, room, r) {
            behind = true;
        }
        if std::mem::take(&mut r.overflowed) {
            behind = true;
        }
        if behind {
            self.fetch(out, room);
        } else {
            r.rounds = 0;
        }
    }
}

// ------------------------------------------------------------ the threads

#[derive(Default)]
struct Inbox {
    events: Vec<Event>,
    scheduled: bool,
}

/// Hands events to the loop: at most one `Handle::run` closure in flight,
/// which drains everything posted until it runs.
#[derive(Clone)]
struct Poster {
    inbox: Arc<Mutex<Inbox>>,
    state: Arc<Mutex<State<ConnId>>>,
    handle: Handle,
}

impl Poster {
    /// False once the server has stopped.
    fn post(&self, ev: Event) -> bool {
        let mut inbox = lock(&self.inbox);
        inbox.events.push(ev);
        if inbox.scheduled {
            return true;
        }
        inbox.scheduled = true;
        drop(inbox);
        let (inbox, state) = (self.inbox.clone(), self.state.clone());
        self.handle
            .run(move |ctx| {
                let events = {
                    let mut i = lock(&inbox);
                    i.scheduled = false;
                    std::mem::take(&mut i.events)
                };
                let mut st = lock(&state);
                let mut out = CtxSink(ctx);
                for ev in events {
                    st.on_event(&mut out, ev);
                }
            })
            .is_ok()
    }

    fn backlog(&self) -> usize {
        lock(&self.inbox).events.len()
    }
}

/// Reconnect pacing and logging for one connection.
struct Retry {
    what: &'static str,
    addr: String,
    backoff: Duration,
    next: Instant,
    /// Since when it is down (`None`: up, or never connected yet).
    down_since: Option<Instant>,
    attempts: u32,
}

impl Retry {
    fn new(what: &'static str, addr: String) -> Self {
        Retry {
            what,
            addr,
            backoff: BACKOFF_MIN,
            next: Instant::now(),
            down_since: None,
            attempts: 0,
        }
    }

    fn wait(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }

    fn failed(&mut self, e: &RedisError) {
        self.attempts += 1;
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            warn!(
                "redis {}: cannot connect to {}: {e}; retrying with backoff",
                self.what, self.addr
            );
        } else {
            debug!(
                "redis {}: attempt {} to reach {} failed: {e}",
                self.what, self.attempts, self.addr
            );
        }
        self.next = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    fn lost(&mut self, e: &dyn std::fmt::Display) {
        warn!(
            "redis {}: connection to {} lost: {e}; reconnecting with backoff",
            self.what, self.addr
        );
        self.down_since = Some(Instant::now());
        self.attempts = 0;
        self.backoff = BACKOFF_MIN;
        self.next = Instant::now() + BACKOFF_MIN;
    }

    fn connected(&mut self) {
        match self.down_since.take() {
            Some(t) => info!(
                "redis {}: connected to {} again after {:.1} s",
                self.what,
                self.addr,
                t.elapsed().as_secs_f64()
            ),
            None => info!("redis {}: connected to {}", self.what, self.addr),
        }
        self.attempts = 0;
        self.backoff = BACKOFF_MIN;
    }
}

fn open(client: &Client) -> redis::RedisResult<Connection> {
    let con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}

/// The connection cannot be trusted after this error.
fn broken(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

struct Scripts {
    append: Script,
    fetch: Script,
}

/// Room messages and broadcasts queued together go out in one pipeline of
/// at most this many commands (one round trip; each still atomic).
const BATCH: usize = 256;

/// Reads where `room` stands in Redis (the fetch script).
fn run_fetch(
    con: &mut Connection,
    s: &Scripts,
    room: &Arc<str>,
    after: u64,
    hint: Option<&str>,
) -> redis::RedisResult<Event> {
    let after_arg: i64 = if after == NOTHING {
        -1
    } else {
        i64::try_from(after).unwrap_or(i64::MAX)
    };
    type Reply = (String, u64, u64, i64, Vec<u64>, Vec<String>);
    let (epoch, last, oldest, used, seqs, texts): Reply = s
        .fetch
        .key(meta_key(room))
        .key(log_key(room))
        .arg(random_hex(6))
        .arg(after_arg)
        .arg(HISTORY_TTL_SECS)
        .arg(hint.unwrap_or(""))
        .invoke(con)?;
    let entries = seqs
        .into_iter()
        .zip(texts)
        .map(|(s, t)| (s, Arc::from(t)))
        .collect();
    Ok(Event::Fetched {
        room: room.clone(),
        // What the script used: 0 if `hint` was not the room's epoch.
        after: u64::try_from(used).unwrap_or(NOTHING),
        result: Fetched {
            epoch: epoch.into(),
            last,
            oldest,
            entries,
        },
    })
}

/// Sends publishes and broadcasts in one pipeline. Returns the jobs Redis
/// refused (delivered locally then); `Err` with all of them if the
/// connection failed.
fn run_batch(
    con: &mut Connection,
    s: &Scripts,
    batch: Vec<Job>,
) -> Result<Vec<Job>, (RedisError, Vec<Job>)> {
    let send = |con: &mut Connection, jobs: &[Job]| -> redis::RedisResult<Vec<Value>> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for job in jobs {
            match job {
                Job::Publish(m) => {
                    pipe.cmd("EVALSHA")
                        .arg(s.append.get_hash())
                        .arg(2)
                        .arg(meta_key(&m.room))
                        .arg(log_key(&m.room))
                        .arg(random_hex(6))
                        .arg(HISTORY_PER_ROOM)
                        .arg(HISTORY_TTL_SECS)
                        .arg(room_channel(&m.room))
                        .arg(&m.head)
                        .arg(&m.tail);
                }
                Job::Broadcast { json, .. } => {
                    pipe.cmd("PUBLISH").arg(all_channel()).arg(json);
                }
                Job::Fetch { .. } => unreachable!("fetches are not batched"),
            }
        }
        pipe.query(con)
    };
    let replies = match send(con, &batch) {
        Ok(r) if r.len() == batch.len() => r,
        Ok(r) => {
            let e = RedisError::from(std::io::Error::other(format!(
                "{} replies to a pipeline of {}",
                r.len(),
                batch.len()
            )));
            return Err((e, batch));
        }
        Err(e) => return Err((e, batch)),
    };
    let mut refused = Vec::new();
    let mut again = Vec::new();
    for (job, reply) in batch.into_iter().zip(replies) {
        match reply {
            Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::NoScript) => {
                again.push(job);
            }
            Value::ServerError(e) => {
                warn!("redis publisher: Redis refused a message: {e:?}");
                refused.push(job);
            }
            _ => {}
        }
    }
    if !again.is_empty() {
        // The script cache was flushed: load it and send those again
        // (NOSCRIPT means they did not run).
        if let Err(e) = s.append.load(con) {
            again.extend(refused);
            return Err((e, again));
        }
        match send(con, &again) {
            Ok(replies) => {
                for (job, reply) in again.into_iter().zip(replies) {
                    if let Value::ServerError(e) = reply {
                        warn!("redis publisher: Redis refused a message: {e:?}");
                        refused.push(job);
                    }
                }
            }
            Err(e) => {
                again.extend(refused);
                return Err((e, again));
            }
        }
    }
    Ok(refused)
}

/// A connection for the publisher, its scripts loaded (so pipelined
/// EVALSHAs find them).
fn open_publisher(client: &Client, s: &Scripts) -> redis::RedisResult<Connection> {
    let mut con = open(client)?;
    s.append.load(&mut con)?;
    s.fetch.load(&mut con)?;
    Ok(con)
}

fn publisher(client: Client, addr: String, jobs: Receiver<Job>, poster: Poster) {
    let scripts = Scripts {
        append: Script::new(APPEND_LUA),
        fetch: Script::new(FETCH_LUA),
    };
    let mut retry = Retry::new("publisher", addr);
    let mut con: Option<Connection> = None;
    // A fetch taken from the queue while batching, run next.
    let mut next: Option<Job> = None;
    loop {
        if con.is_none() && retry.wait().is_zero() {
            match open_publisher(&client, &scripts) {
                Ok(c) => {
                    con = Some(c);
                    retry.connected();
                    if !poster.post(Event::Link(Side::Publisher, true)) {
                        return;
                    }
                }
                Err(e) => retry.failed(&e),
            }
        }
        let wait = if con.is_some() {
            PUB_IDLE
        } else {
            retry.wait()
        };
        let job = match next.take().map_or_else(|| jobs.recv_timeout(wait), Ok) {
            Ok(job) => job,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                // Idle: make sure the connection still works.
                if let Some(c) = con.as_mut() {
                    if let Err(e) = redis::cmd("PING").query::<Value>(c) {
                        con = None;
                        retry.lost(&e);
                        if !poster.post(Event::Link(Side::Publisher, false)) {
                            return;
                        }
                    }
                }
                continue;
            }
        };
        let Some(c) = con.as_mut() else {
            if !poster.post(Event::Bounced(job)) {
                return;
            }
            continue;
        };
        let (error, bounced, fetch) = match job {
            Job::Fetch { room, after, hint } => {
                match run_fetch(c, &scripts, &room, after, hint.as_deref()) {
                    Ok(ev) => {
                        if !poster.post(ev) {
                            return;
                        }
                        continue;
                    }
                    Err(e) => (e, Vec::new(), Some(Job::Fetch { room, after, hint })),
                }
            }
            first => {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match jobs.try_recv() {
                        Ok(j @ Job::Fetch { .. }) => {
                            next = Some(j);
                            break;
                        }
                        Ok(j) => batch.push(j),
                        Err(_) => break,
                    }
                }
                match run_batch(c, &scripts, batch) {
                    Ok(refused) => {
                        for j in refused {
                            if !poster.post(Event::Bounced(j)) {
                                return;
                            }
                        }
                        continue;
                    }
                    Err((e, all)) => (e, all, None),
                }
            }
        };
        // Something failed: messages Redis may not have taken are delivered
        // locally (they may have run: not sent again).
        let mut fetched = None;
        if broken(&error) {
            // A stale connection (Redis restarted since): one new
            // connection at once before calling Redis down. A fetch is run
            // again on it (it changes nothing that matters).
            let mut down = Some(error.to_string());
            if let Ok(mut c) = open_publisher(&client, &scripts) {
                info!("redis publisher: connection dropped ({error}); reconnected");
                down = None;
                if let Some(Job::Fetch { room, after, hint }) = &fetch {
                    match run_fetch(&mut c, &scripts, room, *after, hint.as_deref()) {
                        Ok(ev) => fetched = Some(ev),
                        Err(e) if broken(&e) => down = Some(e.to_string()),
                        Err(e) => warn!("redis publisher: fetch failed: {e}"),
                    }
                }
                con = down.is_none().then_some(c);
            } else {
                con = None;
            }
            if let Some(e) = down {
                con = None;
                retry.lost(&e);
                if !poster.post(Event::Link(Side::Publisher, false)) {
                    return;
                }
            }
        } else {
            warn!("redis publisher: command failed: {error}");
        }
        let events = bounced
            .into_iter()
            .map(Event::Bounced)
            .chain(match fetched {
                Some(ev) => Some(ev),
                None => fetch.map(Event::Bounced),
            });
        for ev in events {
            if !poster.post(ev) {
                return;
            }
        }
    }
}

/// Parses a room channel message: `EPOCH SEQ JSON`.
fn parse_live(room: &str, payload: &[u8]) -> Option<Event> {
    let text = std::str::from_utf8(payload).ok()?;
    let (epoch, rest) = text.split_once(' ')?;
    let (seq, json) = rest.split_once(' ')?;
    Some(Event::Live {
        room: room.into(),
        epoch: epoch.into(),
        seq: seq.parse().ok()?,
        json: json.into(),
    })
}

enum SubEnd {
    /// The server stopped.
    Exit,
    Lost(RedisError),
}

fn subscribe(con: &mut Connection, poster: &Poster, retry: &mut Retry) -> SubEnd {
    let room_prefix = room_channel("");
    let all = all_channel();
    let mut ps = con.as_pubsub();
    let setup = ps
        .psubscribe(format!("{room_prefix}*"))
        .and_then(|_| ps.subscribe(&all))
        .and_then(|_| ps.set_read_timeout(Some(SUB_IDLE)));
    if let Err(e) = setup {
        return SubEnd::Lost(e);
    }
    retry.connected();
    if !poster.post(Event::Link(Side::Subscriber, true)) {
        return SubEnd::Exit;
    }
    loop {
        let msg = match ps.get_message() {
            Ok(m) => m,
            Err(e) if e.is_timeout() => {
                if let Err(e) = ps.ping::<Value>() {
                    return SubEnd::Lost(e);
                }
                continue;
            }
            Err(e) => return SubEnd::Lost(e),
        };
        let channel = msg.get_channel_name();
        let ev = if let Some(room) = channel.strip_prefix(&room_prefix) {
            match parse_live(room, msg.get_payload_bytes()) {
                Some(ev) => ev,
                None => {
                    warn!("redis subscriber: malformed message on {channel:?}: ignored");
                    continue;
                }
            }
        } else if channel == all {
            match String::from_utf8(msg.get_payload_bytes().to_vec()) {
                Ok(json) => Event::LiveAll(json),
                Err(_) => continue,
            }
        } else {
            continue;
        };
        // Let the loop catch up rather than pile up events without bound
        // (Redis buffers, and drops a subscriber that falls too far behind:
        // the catch-up after reconnecting covers that).
        while poster.backlog() > INBOX_LIMIT {
            thread::sleep(Duration::from_millis(1));
        }
        if !poster.post(ev) {
            return SubEnd::Exit;
        }
    }
}

fn subscriber(client: Client, addr: String, poster: Poster) {
    let mut retry = Retry::new("subscriber", addr);
    loop {
        thread::sleep(retry.wait());
        let mut con = match open(&client) {
            Ok(c) => c,
            Err(e) => {
                retry.failed(&e);
                continue;
            }
        };
        match subscribe(&mut con, &poster, &mut retry) {
            SubEnd::Exit => return,
            SubEnd::Lost(e) => {
                retry.lost(&e);
                if !poster.post(Event::Link(Side::Subscriber, false)) {
                    return;
                }
            }
        }
    }
}

// ------------------------------------------------------------- the handle

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
        let poster = Poster {
            inbox: Arc::new(Mutex::new(Inbox::default())),
            state: self.state,
            handle,
        };
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
    ) {
        lock(&self.state).join(&mut CtxSink(ctx), id, room, since);
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
    ) {
        let msg = room_message(room, from, name, text);
        lock(&self.state).publish(&mut CtxSink(ctx), msg);
    }

    fn broadcast(&mut self, ctx: &mut Ctx<'_>, from: &str, name: Option<&str>, text: &str) {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Records what members receive (and library room membership).
    #[derive(Default)]
    struct Rec {
        got: BTreeMap<u32, Vec<String>>,
        rooms: BTreeMap<String, Vec<u32>>,
    }

    impl Sink<u32> for Rec {
        fn send(&mut self, id: u32, json: &str) {
            self.got.entry(id).or_default().push(json.to_owned());
        }
        fn send_many(&mut self, ids: &[u32], json: &str) {
            for id in ids {
                self.send(*id, json);
            }
        }
        fn join(&mut self, id: u32, room: &str) {
            let m = self.rooms.entry(room.into()).or_default();
            if !m.contains(&id) {
                m.push(id);
            }
        }
        fn publish(&mut self, room: &str, json: &str) {
            for id in self.rooms.get(room).cloned().unwrap_or_default() {
                self.send(id, json);
            }
        }
        fn broadcast_all(&mut self, _json: &str) {}
    }

    impl Rec {
        /// What `id` received, shortened: "joined:LAST", "gap:FROM[r]",
        /// "m:SEQ" (messages are "m:SEQ" JSON strings in these tests).
        fn take(&mut self, id: u32) -> Vec<String> {
            self.got
                .remove(&id)
                .unwrap_or_default()
                .into_iter()
                .map(|j| {
                    if j.starts_with("m:") || j.starts_with("local:") {
                        return j;
                    }
                    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
                    match v["type"].as_str().unwrap() {
                        "joined" => format!(
                            "joined:{}{}",
                            v["seq"],
                            if v["local"] == true { "L" } else { "" }
                        ),
                        "gap" => format!(
                            "gap:{}{}",
                            v["from"],
                            if v["reset"] == true { "r" } else { "" }
                        ),
                        t => t.to_owned(),
                    }
                })
                .collect()
        }
    }

    fn m(seq: u64) -> Arc<str> {
        format!("m:{seq}").into()
    }

    fn setup() -> (State<u32>, Receiver<Job>, Rec) {
        let (tx, rx) = mpsc::sync_channel(100);
        let mut st = State::new(tx);
        let mut rec = Rec::default();
        st.on_event(&mut rec, Event::Link(Side::Publisher, true));
        st.on_event(&mut rec, Event::Link(Side::Subscriber, true));
        (st, rx, rec)
    }

    fn fetch_job(rx: &Receiver<Job>) -> (Arc<str>, u64, Option<Arc<str>>) {
        match rx.try_recv() {
            Ok(Job::Fetch { room, after, hint }) => (room, after, hint),
            Ok(_) => panic!("expected a fetch, got another job"),
            Err(e) => panic!("expected a fetch: {e}"),
        }
    }

    fn result(epoch: &str, last: u64, oldest: u64, from: u64) -> Fetched {
        Fetched {
            epoch: epoch.into(),
            last,
            oldest,
            entries: (from.max(oldest)..=last).map(|s| (s, m(s))).collect(),
        }
    }

    fn live(st: &mut State<u32>, rec: &mut Rec, epoch: &str, seq: u64) {
        st.on_event(
            rec,
            Event::Live {
                room: "r".into(),
                epoch: epoch.into(),
                seq,
                json: m(seq),
            },
        );
    }

    fn since(seq: u64, epoch: Option<&str>) -> Since {
        Since {
            seq,
            epoch: epoch.map(str::to_owned),
        }
    }

    #[test]
    fn join_with_since_replays_then_buffered_live_without_duplicates() {
        let (mut st, rx, mut rec) = setup();
        st.join(&mut rec, 1, "r", Some(&since(3, Some("E"))));
        let (room, after, hint) = fetch_job(&rx);
        assert_eq!((&*room, after, hint.as_deref()), ("r", 3, Some("E")));
        // Live messages arrive before the fetch result: 7 is in the result
        // too, 8 is not.
        live(&mut st, &mut rec, "E", 7);
        live(&mut st, &mut rec, "E", 8);
        assert!(rec.take(1).is_empty(), "nothing before joined");
        st.on_event(
            &mut rec,
            Event::Fetched {
                room,
                after,
                result: result("E", 7, 1, 4),
            },
        );
        assert_eq!(rec.take(1), ["joined:7", "m:4", "m:5", "m:6", "m:7", "m:8"]);
        live(&mut st, &mut rec, "E", 8); // a duplicate is dropped
        live(&mut st, &mut rec, "E", 9);
        assert_eq!(rec.take(1), ["m:9"]);
        assert!(rx.try_recv().is_err(), "no further fetch");
    }

    #[test]
    fn fresh_join_gets_no_replay_and_gap_when_too_old() {
        let (mut st, rx, mut rec) = setup();
        st.join(&mut rec, 1, "r", None);
        let (room, after, _) = fetch_job(&rx);
        assert_eq!(after, NOTHING);
        st.on_event(
            &mut rec,
            Event::Fetched {
                room,
                after,
                result: result("E", 1050, 51, u64::MAX),
            },
        );
        assert_eq!(rec.take(1), ["joined:1050"]);
        live(&mut st, &mut rec, "E", 1051);
        assert_eq!(rec.take(1), ["m:1051"]);

        // Since 10 while 51..=1051 are kept: joined, gap, 51..=1051.
        st.join(&mut rec, 2, "r", Some(&since(10, None)));
        let (room, after, _) = fetch_job(&rx);
        assert_eq!(after, 10);
        st.on_event(
            &mut rec,
            Event::Fetched {
                room,
                after,
                result: result("E", 1051, 52, 11),
            },
        );
        let got = rec.take(2);
        assert_eq!(got[..3], ["joined:1051", "gap:52", "m:52"]);
        assert_eq!(got.len(), 2 + 1000);
        assert_eq!(got.last().unwrap(), "m:1051");
        assert!(rec.take(1).is_empty(), "member 1 already had everything");
    }

    #[test]
    fn foreign_epoch_since_is_a_reset_with_everything_kept() {
        let (mut st, rx, mut rec) = setup();
        // The room is known here with epoch E; a member claims F.
        st.join(&mut rec, 1, "r", None);
        let (room, after, _) = fetch_job(&rx);
        st.on_event(
            &mut rec,
            Event::Fetched {
                room,
                after,
                result: result("E", 5, 1, u64::MAX),
            },
        );
        rec.take(1);
        st.join(&mut rec, 2, "r", Some(&since(4, Some("F"))));
        let (room, after, hint) = fetch_job(&rx);
        // F is not the room's epoch: it counts from 0.
        assert_eq!((after, hint.as_deref()), (0, Some("E")));
        st.on_event(
            &mut rec,
            Event::Fetched {
                room,
                after,
                result: result("E", 5, 1, 1),
            },
        );
        assert_eq!(
            rec.take(2),
            ["joined:5", "gap:1r", "m:1", "m:2", "m:3", "m:4", "m:5"]
        );
        assert!(rx.try_recv().is_err());
    }

    #[test]
    fn history_lost_in_redis_resets_live_members() {
        let (mut st, rx, mut rec) = setup();
        st.join(&mut rec, 1, "r", None);
        let (room, after, _) = fetch_job(&rx);
        st.on_event(
            &mut rec,
            Event::Fetched {
                room,
                after,
                result: result("E", 57, 1, u64::MAX),
            },
        );
        rec.take(1);
        // Redis restarted empty; a new history begins at 1.
        live(&mut st, &mut rec, "E2", 1);
        let (room, after, hint) = fetch_job(&rx);
        assert_eq!((after, hint.as_deref()), (57, Some("E")));
        live(&mut st, &mut rec, "E2", 2);
        st.on_event(
            &mut rec,
            Event::Fetched {
                room,
                after: 0, // the script saw another epoch than the hint
                result: result("E2", 1, 1, 1),
            },
        );
        assert_eq!(rec.take(1), ["joined:1", "gap:1r", "m:1", "m:2"]);
        live(&mut st, &mut rec, "E2", 3);
        assert_eq!(rec.take(1), ["m:3"]);
    }

    #[test]
    fn outage_delivers_locally_then_catches_up() {
        let (mut st, rx, mut rec) = setup();
        st.join(&mut rec, 1, "r", None);
        let (room, after, _) = fetch_job(&rx);
        st.on_event(
            &mut rec,
            Event::Fetched {
                room,
                after,
                result: result("E", 2, 1, u64::MAX),
            },
        );
        rec.take(1);
        st.on_event(&mut rec, Event::Link(Side::Subscriber, false));
        st.publish(
            &mut rec,
            RoomMessage {
                room: "r".into(),
                head: String::new(),
                tail: String::new(),
                local: "local:1".into(),
            },
        );
        assert_eq!(rec.take(1), ["local:1"]);
        assert!(rx.try_recv().is_err(), "nothing sent to Redis while down");
        // A join while down is answered at once.
        st.join(&mut rec, 2, "r", Some(&since(1, Some("E"))));
        assert_eq!(rec.take(2), ["joined:2L"]);
        // Back: the room is fetched from the oldest have (1).
        st.on_event(&mut rec, Event::Link(Side::Subscriber, true));
        let (room, after, _) = fetch_job(&rx);
        assert_eq!(after, 1);
        live(&mut st, &mut rec, "E", 5);
        st.on_event(
            &mut rec,
            Event::Fetched {
                room,
                after,
                result: result("E", 4, 1, 2),
            },
        );
        assert_eq!(rec.take(1), ["m:3", "m:4", "m:5"]);
        assert_eq!(rec.take(2), ["m:2", "m:3", "m:4", "m:5"]);
    }

    #[test]
    fn failed_fetch_answers_locally_and_leave_cancels() {
        let (mut st, rx, mut rec) = setup();
        st.join(&mut rec, 1, "r", Some(&since(0, None)));
        let job = rx.try_recv().unwrap();
        assert!(st.is_member(1, "r"));
        st.on_event(&mut rec, Event::Bounced(job));
        assert_eq!(rec.take(1), ["joined:0L"]);
        assert!(st.leave(1, "r"));
        assert!(!st.is_member(1, "r") && !st.leave(1, "r"));
        assert!(st.rooms.is_empty() && st.conns.is_empty());
        st.join(&mut rec, 2, "r", None);
        st.closed(2);
        assert!(st.rooms.is_empty() && st.conns.is_empty());
    }

    #[test]
    fn parse_live_payload() {
        match parse_live("r", b"ab12 17 {\"x\":\"a b\"}") {
            Some(Event::Live {
                room,
                epoch,
                seq,
                json,
            }) => {
                assert_eq!(
                    (&*room, &*epoch, seq, &*json),
                    ("r", "ab12", 17, "{\"x\":\"a b\"}")
                );
            }
            _ => panic!("not parsed"),
        }
        assert!(parse_live("r", b"ab12 x {}").is_none());
        assert!(parse_live("r", b"ab12").is_none());
    }

    #[test]
    fn room_message_splits_around_seq() {
        // Room and text that contain what the split looks for.
        let room = r#"a,"seq":0,b"#;
        let text = r#"x,"seq":0,"from":"y"#;
        let m = room_message(room, "u1", Some("N"), text);
        let numbered = format!("{}42{}", m.head, m.tail);
        let v: serde_json::Value = serde_json::from_str(&numbered).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(
            (v["room"].as_str(), v["text"].as_str()),
            (Some(room), Some(text))
        );
        assert!(numbered.starts_with(r#"{"type":"message","room":"#));
        assert!(v.get("local").is_none());
        let v: serde_json::Value = serde_json::from_str(&m.local).unwrap();
        assert_eq!((v["local"].as_bool(), v.get("seq")), (Some(true), None));
        assert_eq!(
            (v["text"].as_str(), v["name"].as_str()),
            (Some(text), Some("N"))
        );
    }
}
