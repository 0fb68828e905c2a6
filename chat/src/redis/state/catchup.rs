//! Catching members up: live messages from the subscription, and fetch
//! results, handed to each member exactly once, in `seq` order; joins
//! Redis is slow to answer, answered from what this server knows.

use std::hash::Hash;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::info;

use super::{gap_json, Live, Room, Sink, State, BUFFER_LIMIT, JOIN_WAIT};
use crate::redis::jobs::{Fetched, NOTHING};
use crate::MAX_SINCE;

/// Where to fetch `r` from: the oldest `have` of its members (0 for those
/// that must start over), and the epoch that `have` is counted in (the
/// room's, else the first one a member named).
pub(super) fn fetch_from<I>(r: &Room<I>) -> (u64, Option<Arc<str>>) {
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
            // Never NOTHING, and exact in Lua's numbers.
            Some(h) => h.min(MAX_SINCE),
        })
        .min()
        .unwrap_or(NOTHING);
    (after, hint)
}

/// `seq` is the one right after `have`.
fn next(have: u64, seq: u64) -> bool {
    seq.checked_sub(1) == Some(have)
}

impl<I: Copy + Eq + Hash + Ord + std::fmt::Debug> State<I> {
    /// A live room message from the subscription.
    pub(super) fn live(
        &mut self,
        out: &mut impl Sink<I>,
        room: &Arc<str>,
        epoch: Arc<str>,
        seq: u64,
        json: Arc<str>,
        now: Instant,
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
                    Some(h) if in_sync && next(h, seq) => {
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
                self.fetch(out, room, now);
            }
        }
    }

    /// Hands buffered live messages to members they are next for; keeps
    /// the rest. True if members are still behind after that.
    pub(super) fn drain_buffer(out: &mut impl Sink<I>, r: &mut Room<I>) -> bool {
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
                    Some(h) if in_sync && next(h, live.seq) => {
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
    pub(super) fn fetched(
        &mut self,
        out: &mut impl Sink<I>,
        room: &Arc<str>,
        after: u64,
        f: Fetched,
        now: Instant,
    ) {
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
            // Live messages may have been delivered past what the fetch
            // saw: members that have them are in sync, not ahead.
            r.last = r.last.max(f.last);
        }
        let (last, known) = (f.last, r.last);
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
                    out.send(id, &m.answer(room, last, Some(&e), false));
                    m.answered = true;
                    m.told = Some(e.clone());
                }
                continue;
            };
            let foreign = m.epoch.as_ref().is_some_and(|x| *x != e);
            let reset = m.reset || foreign || have > known;
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
                out.send(id, &m.answer(room, last, Some(&e), false));
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
        if Self::drain_buffer(out, r) {
            behind = true;
        }
        if std::mem::take(&mut r.overflowed) {
            behind = true;
        }
        if behind {
            self.fetch(out, room, now);
        } else {
            r.rounds = 0;
        }
    }

    /// Joins waiting longer than [`JOIN_WAIT`] are answered from what is
    /// known here.
    pub(super) fn tick(&mut self, out: &mut impl Sink<I>, now: Instant) {
        let names: Vec<Arc<str>> = self.waiting_rooms.iter().cloned().collect();
        for name in names {
            let Some(r) = self.rooms.get_mut(&name) else {
                self.waiting_rooms.remove(&name);
                continue;
            };
            let late = r
                .members
                .values()
                .any(|m| !m.answered && now.duration_since(m.asked) >= JOIN_WAIT);
            if late {
                info!(
                    "redis backplane: room {name:?}: Redis has not answered within \
                     {JOIN_WAIT:?}; joins answered from this instance"
                );
                Self::answer_locally(out, &name, r, Some((now, JOIN_WAIT)));
            }
            if r.members.values().all(|m| m.answered) {
                self.waiting_rooms.remove(&name);
            }
        }
        if self.waiting_rooms.is_empty() {
            self.waiting.store(false, Ordering::Release);
        }
    }

    /// Answers members still waiting for `joined` (those that asked at
    /// least `older` ago, or all) from what this instance knows; they are
    /// caught up when a fetch returns.
    pub(super) fn answer_locally(
        out: &mut impl Sink<I>,
        room: &Arc<str>,
        r: &mut Room<I>,
        older: Option<(Instant, Duration)>,
    ) {
        let mut ids: Vec<I> = r
            .members
            .iter()
            .filter(|(_, m)| !m.answered)
            .filter(|(_, m)| older.is_none_or(|(now, d)| now.duration_since(m.asked) >= d))
            .map(|(id, _)| *id)
            .collect();
        ids.sort();
        for id in ids {
            let m = r.members.get_mut(&id).expect("listed above");
            m.answered = true;
            m.told = r.epoch.clone();
            out.join(id, room);
            out.send(id, &m.answer(room, r.last, r.epoch.as_deref(), true));
        }
    }
}
