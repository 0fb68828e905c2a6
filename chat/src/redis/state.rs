//! The loop side of the backplane: rooms with members here, what each
//! member has had, and whether Redis is reachable. It never touches Redis:
//! it queues jobs for the publisher and acts on the threads' events.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use log::{error, info, warn};

use super::jobs::{Event, Fetched, Job, RoomMessage, Side, NOTHING};
use crate::history::Since;
use crate::wire::Out;

/// Jobs waiting for the publisher; past this, messages are delivered
/// locally (and joins answered locally) rather than block the loop.
pub(super) const JOB_QUEUE: usize = 65_536;
/// Live messages buffered per room while a fetch is in flight; past this
/// the room is fetched again when the fetch returns.
const BUFFER_LIMIT: usize = 10_000;
/// Catch-up rounds for one room in a row before giving up until the next
/// event (a safety net; two rounds are the most a consistent Redis needs).
const MAX_ROUNDS: u32 = 8;

/// Where the loop-side state sends things; the loop's
/// [`Ctx`](wsloop::server::Ctx) in the
/// server, a recorder in unit tests.
pub(crate) trait Sink<I> {
    fn send(&mut self, id: I, json: &str);
    fn send_many(&mut self, ids: &[I], json: &str);
    fn join(&mut self, id: I, room: &str);
    /// To every member of `room` that has been answered (the library's room).
    fn publish(&mut self, room: &str, json: &str);
    fn broadcast_all(&mut self, json: &str);
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

#[cfg(test)]
mod tests;
