//! The loop side of the backplane: rooms with members here, what each
//! member has had, and whether Redis is reachable. It never touches Redis:
//! it queues jobs for the publisher and acts on the threads' events. How
//! members are caught up (live messages, fetch results) is in `catchup`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::jobs::{Event, Job, RoomMessage, Side};
use super::queue::{Full, Outbox};
use super::subs::Subs;
use crate::bus::{Refusal, Welcome, BROADCASTS};
use crate::history::Since;
use crate::wire::Out;

mod catchup;
mod stream;

/// Jobs waiting for the publisher (a second bound next to the bytes).
pub(super) const JOB_QUEUE: usize = 65_536;
/// Live messages buffered per room while a fetch is in flight; past this
/// the room is fetched again when the fetch returns.
const BUFFER_LIMIT: usize = 10_000;
/// Catch-up rounds for one room in a row before giving up until the next
/// event (a safety net; two rounds are the most a consistent Redis needs).
/// Whoever still waits for `joined` is then answered from what is known
/// here.
const MAX_ROUNDS: u32 = 8;
/// Longest a join waits for Redis before it is answered from what this
/// instance knows (`"local":true`; the catch-up follows when Redis
/// answers). Shorter than the Redis I/O timeout, so a stalled Redis does
/// not hold joins for that long.
pub(super) const JOIN_WAIT: Duration = Duration::from_secs(3);

/// Where the loop-side state sends things; the loop's
/// [`Ctx`](wsloop::server::Ctx) in the server, a recorder in unit tests.
pub(crate) trait Sink<I> {
    fn send(&mut self, id: I, json: &str);
    fn send_many(&mut self, ids: &[I], json: &str);
    fn join(&mut self, id: I, room: &str);
    /// To every member of `room` that has been answered (the library's
    /// room); returns how many that was.
    fn publish(&mut self, room: &str, json: &str) -> usize;
}

/// A [`Sink`] that counts the sends made through it.
pub(crate) struct Counted<'a, S> {
    pub(crate) sink: &'a mut S,
    pub(crate) sends: usize,
}

impl<I, S: Sink<I>> Sink<I> for Counted<'_, S> {
    fn send(&mut self, id: I, json: &str) {
        self.sends += 1;
        self.sink.send(id, json);
    }
    fn send_many(&mut self, ids: &[I], json: &str) {
        self.sends += ids.len();
        self.sink.send_many(ids, json);
    }
    fn join(&mut self, id: I, room: &str) {
        self.sink.join(id, room);
    }
    fn publish(&mut self, room: &str, json: &str) -> usize {
        let n = self.sink.publish(room, json);
        self.sends += n;
        n
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
    /// When it asked to join (answered locally after [`JOIN_WAIT`]).
    asked: Instant,
    /// For the broadcast stream: its answer is this `welcome` (and a new
    /// one when the stream started over), not `joined`.
    welcome: Option<Arc<Welcome>>,
}

impl Member {
    /// Its `joined` (its `welcome` for the broadcast stream) for `room`
    /// standing at `seq` in `epoch` (unknown: `None`).
    fn answer(&self, room: &str, seq: u64, epoch: Option<&str>, local: bool) -> String {
        match &self.welcome {
            Some(w) => w.json(epoch.map(|e| (seq, e))),
            None => Out::Joined {
                room,
                seq,
                epoch: epoch.unwrap_or(""),
                local,
            }
            .json(),
        }
    }
}

struct Live {
    epoch: Arc<str>,
    seq: u64,
    json: Arc<str>,
}

struct Room<I> {
    /// The history as last seen in Redis.
    epoch: Option<Arc<str>>,
    /// The highest seq seen in that history (fetched or live).
    last: u64,
    members: HashMap<I, Member>,
    fetching: bool,
    /// Live messages kept for members that are behind.
    buffer: Vec<Live>,
    overflowed: bool,
    rounds: u32,
    /// The token its subscription was asked for with, and whether the
    /// subscriber has reported it: no fetch before (a message published
    /// between the fetch and the subscription would be missed).
    sub_token: u64,
    subscribed: bool,
}

impl<I> Room<I> {
    fn new(sub_token: u64) -> Self {
        Room {
            sub_token,
            subscribed: false,
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

/// Limits of the loop-side state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Rooms this server may have used (joined, fetched, published to)
    /// within `ttl`: each one's keys live in Redis that long.
    pub max_rooms: usize,
    pub ttl: Duration,
}

/// The loop-side state: rooms with members here, what each member has had,
/// and whether Redis is reachable. Only the loop thread uses it.
pub(crate) struct State<I> {
    outbox: Outbox,
    pub_up: bool,
    sub_up: bool,
    rooms: HashMap<Arc<str>, Room<I>>,
    conns: HashMap<I, Vec<Arc<str>>>,
    /// Rooms whose keys this server refreshed, and when last.
    used: HashMap<Arc<str>, Instant>,
    limits: Limits,
    /// Rooms with members waiting for `joined`; `waiting` is set while
    /// there are any (the ticker then posts [`Event::Tick`]).
    waiting_rooms: HashSet<Arc<str>>,
    waiting: Arc<AtomicBool>,
    /// The room channels the subscriber should listen to, and the last
    /// token given out for one.
    subs: Arc<Subs>,
    next_token: u64,
    /// Message ids: a random per-process prefix and a counter.
    id_prefix: String,
    next_id: u64,
    /// Messages refused because the queue was full (logged now and then).
    refused: u64,
}

/// A `gap`; the broadcast stream's is room `"*"`.
fn gap_json(room: &str, from: u64, reset: bool) -> String {
    let room = if room == BROADCASTS { "*" } else { room };
    Out::Gap { room, from, reset }.json()
}

impl<I: Copy + Eq + Hash + Ord + std::fmt::Debug> State<I> {
    pub(crate) fn new(outbox: Outbox, limits: Limits, subs: Arc<Subs>, id_prefix: String) -> Self {
        State {
            subs,
            next_token: 0,
            outbox,
            pub_up: false,
            sub_up: false,
            rooms: HashMap::new(),
            conns: HashMap::new(),
            used: HashMap::new(),
            limits,
            waiting_rooms: HashSet::new(),
            waiting: Arc::new(AtomicBool::new(false)),
            id_prefix,
            next_id: 0,
            refused: 0,
        }
    }

    /// Both connections to Redis are up.
    pub(crate) fn up(&self) -> bool {
        self.pub_up && self.sub_up
    }

    /// Set while joins wait for Redis.
    pub(crate) fn waiting_flag(&self) -> Arc<AtomicBool> {
        self.waiting.clone()
    }

    fn name(&self, room: &str) -> Arc<str> {
        match self.rooms.get_key_value(room) {
            Some((k, _)) => k.clone(),
            None => match self.used.get_key_value(room) {
                Some((k, _)) => k.clone(),
                None => room.into(),
            },
        }
    }

    /// `id` is in `room`, or its join is being answered.
    pub(crate) fn is_member(&self, id: I, room: &str) -> bool {
        self.rooms
            .get(room)
            .is_some_and(|r| r.members.contains_key(&id))
    }

    /// Notes that this server refreshes `room`'s keys now. False if it is a
    /// room not used within the TTL and the limit is reached.
    fn use_room(&mut self, room: &Arc<str>, now: Instant) -> bool {
        if &**room == BROADCASTS {
            return true; // one stream, not a room clients create
        }
        if let Some(t) = self.used.get_mut(room) {
            *t = now;
            return true;
        }
        if self.used.len() >= self.limits.max_rooms {
            let ttl = self.limits.ttl;
            self.used.retain(|_, t| now.duration_since(*t) < ttl);
        }
        if self.used.len() >= self.limits.max_rooms && !self.rooms.contains_key(room) {
            return false;
        }
        self.used.insert(room.clone(), now);
        true
    }

    fn queue(&mut self, job: Job) -> Result<(), Box<(Job, Full)>> {
        let r = self.outbox.push(job);
        if let Err(e) = &r {
            let why = e.1;
            if why == Full::Gone {
                return r;
            }
            self.refused += 1;
            if self.refused.is_power_of_two() {
                warn!(
                    "redis backplane: publisher queue full ({why:?}; {} refused so far): \
                     senders are asked to retry",
                    self.refused
                );
            }
        }
        r
    }

    fn next_msg_id(&mut self) -> String {
        self.next_id += 1;
        format!("{}-{}", self.id_prefix, self.next_id)
    }

    /// A join: with Redis, answered when the room's fetch returns (replay
    /// after `since`, then live) or after [`JOIN_WAIT`]; without, at once.
    /// A member already in sync that asks for nothing older than it has is
    /// answered at once, with nothing replayed.
    pub(crate) fn join(
        &mut self,
        out: &mut impl Sink<I>,
        id: I,
        room: &str,
        since: Option<&Since>,
        now: Instant,
    ) -> Result<(), Refusal> {
        self.enter(out, id, room, since, now, None)
    }

    pub(super) fn enter(
        &mut self,
        out: &mut impl Sink<I>,
        id: I,
        room: &str,
        since: Option<&Since>,
        now: Instant,
        welcome: Option<Welcome>,
    ) -> Result<(), Refusal> {
        let welcome = welcome.map(Arc::new);
        let name = self.name(room);
        if !self.use_room(&name, now) {
            return Err(Refusal::new(format!(
                "too many rooms on this server: {} used within {} h; join one of them, or \
                 another room later",
                self.limits.max_rooms,
                self.limits.ttl.as_secs() / 3600
            )));
        }
        let rooms = self.conns.entry(id).or_default();
        if !rooms.contains(&name) {
            rooms.push(name.clone());
        }
        let up = self.up();
        let first = self
            .rooms
            .get(&name)
            .is_none_or(|r| r.members.is_empty() && !r.subscribed);
        if first {
            // Its first member here: listen to it from now on.
            self.next_token += 1;
            self.subs.want(&name, self.next_token);
            let token = self.next_token;
            self.rooms
                .entry(name.clone())
                .or_insert_with(|| Room::new(token))
                .sub_token = token;
        }
        let r = self.rooms.get_mut(&name).expect("inserted above");
        let have = since.map(|s| s.seq);
        let epoch: Option<Arc<str>> = since.and_then(|s| s.epoch.as_deref()).map(Arc::from);
        if let Some(m) = r.members.get(&id) {
            let in_sync = m.answered
                && !m.reset
                && r.epoch.is_some()
                && m.epoch == r.epoch
                && m.have == Some(r.last);
            let asks_nothing_older = match (have, &epoch) {
                (None, _) => true,
                (Some(h), e) => {
                    h >= r.last && e.as_ref().is_none_or(|e| Some(e) == r.epoch.as_ref())
                }
            };
            if in_sync && asks_nothing_older {
                out.send(id, &m.answer(&name, r.last, r.epoch.as_deref(), !up));
                return Ok(());
            }
        }
        // A connection opening before this server has ever heard where
        // the broadcast stream stands (it just started) waits for Redis
        // too, within JOIN_WAIT: a welcome without the stream would be
        // followed by a second one naming it.
        let hold = welcome.is_some() && r.epoch.is_none();
        if up || hold {
            r.members.insert(
                id,
                Member {
                    have,
                    epoch,
                    reset: false,
                    answered: false,
                    told: None,
                    asked: now,
                    welcome,
                },
            );
            r.rounds = 0;
            self.waiting_rooms.insert(name.clone());
            self.waiting.store(true, Ordering::Release);
            self.fetch(out, &name, now);
        } else {
            // Answer now from what this instance knows; the catch-up comes
            // when Redis is back.
            let have = have.or(r.epoch.is_some().then_some(r.last));
            let epoch = epoch.or_else(|| r.epoch.clone());
            let m = Member {
                have,
                epoch,
                reset: false,
                answered: true,
                told: r.epoch.clone(),
                asked: now,
                welcome,
            };
            out.join(id, &name);
            out.send(id, &m.answer(&name, r.last, r.epoch.as_deref(), true));
            r.members.insert(id, m);
        }
        Ok(())
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
            self.waiting_rooms.remove(room);
            self.subs.drop_room(room);
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
                    self.waiting_rooms.remove(&name);
                    self.subs.drop_room(&name);
                    if &*name == BROADCASTS {
                        // Kept where it stood, unsubscribed: a connection
                        // opening while Redis is away is welcomed from it.
                        // A report of the old subscription still on its way
                        // must not count (the subscriber is leaving the
                        // channel), so its token no longer matches.
                        r.subscribed = false;
                        r.sub_token = 0;
                        r.buffer.clear();
                        r.overflowed = false;
                    } else {
                        self.rooms.remove(&name);
                    }
                }
            }
        }
    }

    /// A room message (or a broadcast: room [`BROADCASTS`]) from a member
    /// here: queued for Redis (numbered and
    /// delivered from the subscription, however long Redis takes), or,
    /// while Redis is known to be away, delivered here only, marked local.
    /// A full queue refuses it: nothing was sent, the sender may retry.
    pub(crate) fn publish(
        &mut self,
        out: &mut impl Sink<I>,
        mut msg: RoomMessage,
        now: Instant,
    ) -> Result<(), Refusal> {
        if !self.up() {
            out.publish(&msg.room, &msg.local);
            return Ok(());
        }
        let name = self.name(&msg.room);
        self.use_room(&name, now);
        msg.id = self.next_msg_id();
        match self.queue(Job::Publish(msg)).map_err(|e| *e) {
            Ok(()) => Ok(()),
            Err((Job::Publish(m), Full::Gone)) => {
                out.publish(&m.room, &m.local);
                Ok(())
            }
            Err((_, why)) if &*name == BROADCASTS => Err(queue_full("broadcast", why)),
            Err((_, why)) => Err(queue_full("message", why)),
        }
    }

    /// Hands the events at the front of `batch` to the state until the
    /// sends they made reach `budget` (at least one event goes, however
    /// many it sends); the rest stay in `batch`, in order.
    pub(crate) fn on_events<S: Sink<I>>(
        &mut self,
        out: &mut S,
        batch: &mut VecDeque<(Event, usize)>,
        budget: usize,
        now: Instant,
    ) {
        let mut out = Counted {
            sink: out,
            sends: 0,
        };
        while out.sends < budget {
            let Some((ev, _)) = batch.pop_front() else {
                break;
            };
            self.on_event(&mut out, ev, now);
        }
    }

    pub(crate) fn on_event(&mut self, out: &mut impl Sink<I>, ev: Event, now: Instant) {
        match ev {
            Event::Link(side, up) => self.link(out, side, up, now),
            Event::Live {
                room,
                epoch,
                seq,
                json,
            } => self.live(out, &room, epoch, seq, json, now),
            Event::Fetched {
                room,
                after,
                result,
            } => self.fetched(out, &room, after, result, now),
            // Redis did not run these (refused, or never sent): here only.
            Event::Bounced(Job::Publish(m)) => {
                out.publish(&m.room, &m.local);
            }
            Event::Bounced(Job::Fetch { room, .. }) => self.fetch_failed(out, &room),
            Event::Tick => self.tick(out, now),
            Event::Subscribed { room, token } => {
                if let Some(r) = self.rooms.get_mut(&room) {
                    if r.sub_token == token && !r.subscribed {
                        r.subscribed = true;
                        r.rounds = 0;
                        self.fetch(out, &room, now);
                    }
                }
            }
        }
    }

    fn link(&mut self, out: &mut impl Sink<I>, side: Side, up: bool, now: Instant) {
        let was = self.up();
        match side {
            Side::Publisher => self.pub_up = up,
            Side::Subscriber => self.sub_up = up,
        }
        let is = self.up();
        if side == Side::Subscriber && !up {
            // Its subscriptions went with the connection.
            for r in self.rooms.values_mut() {
                r.subscribed = false;
            }
        }
        if was && !is {
            warn!(
                "redis backplane down ({side:?} connection lost): room messages and broadcasts \
                 are delivered on this instance only (\"local\":true) until it is back"
            );
        } else if !was && is {
            info!(
                "redis backplane up: catching up {} rooms with members here",
                self.rooms.len()
            );
            let names: Vec<Arc<str>> = self.rooms.keys().cloned().collect();
            for name in names {
                if let Some(r) = self.rooms.get_mut(&name) {
                    r.rounds = 0;
                }
                self.fetch(out, &name, now);
            }
        }
    }

    /// Asks for `room` as Redis has it, from the oldest `have` of its
    /// members, unless a fetch is already in flight (its result is checked
    /// against every member, and another round follows if needed).
    fn fetch(&mut self, out: &mut impl Sink<I>, room: &Arc<str>, now: Instant) {
        if !self.up() {
            return;
        }
        if self
            .rooms
            .get(room)
            .is_none_or(|r| r.fetching || !r.subscribed)
        {
            return;
        }
        self.use_room(room, now);
        let r = self.rooms.get_mut(room).expect("checked above");
        r.rounds += 1;
        if r.rounds > MAX_ROUNDS {
            warn!(
                "redis backplane: room {room:?} did not settle after {MAX_ROUNDS} fetches; \
                 waiting joins are answered from this instance"
            );
            Self::answer_locally(out, room, r, None);
            return;
        }
        let (after, hint) = catchup::fetch_from(r);
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
        Self::answer_locally(out, room, r, None);
        Self::drain_buffer(out, r);
    }
}

/// The error a sender gets when the publish queue is full.
fn queue_full(what: &str, why: Full) -> Refusal {
    let detail = match why {
        Full::Bytes(queued, max) => format!("{queued} bytes wait for Redis, limit {max}"),
        Full::Jobs(max) => format!("{max} jobs wait for Redis"),
        Full::Gone => "the backplane has stopped".into(),
    };
    Refusal::retry(format!(
        "{what} not sent: this server is behind on Redis ({detail}); retry in a moment"
    ))
}

#[cfg(test)]
mod tests;
