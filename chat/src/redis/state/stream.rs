//! The broadcast stream on the loop side: a room of every open
//! connection, answered with `welcome` instead of `joined`.

use std::hash::Hash;
use std::sync::Arc;
use std::time::Instant;

use super::{Member, Sink, State};
use crate::bus::{Welcome, BROADCASTS};
use crate::history::Since;

impl<I: Copy + Eq + Hash + Ord + std::fmt::Debug> State<I> {
    /// A connection opened: it joins the broadcast stream, answered like a
    /// join (with `welcome` instead of `joined`). Until then it is not in
    /// the library room of the stream's members, so no broadcast, live or
    /// local, reaches it before its replay. A connection that asks for
    /// nothing older than what this server has delivered is answered at
    /// once: every later broadcast reaches it live, in order.
    pub(crate) fn open(
        &mut self,
        out: &mut impl Sink<I>,
        id: I,
        welcome: Welcome,
        since: Option<&Since>,
        now: Instant,
    ) {
        if let Some(r) = self.rooms.get_mut(BROADCASTS) {
            let settled = self.pub_up
                && self.sub_up
                && r.subscribed
                && !r.fetching
                && r.buffer.is_empty()
                && r.epoch.is_some();
            let current = since.is_none_or(|s| {
                s.seq == r.last
                    && s.epoch
                        .as_deref()
                        .is_none_or(|e| Some(e) == r.epoch.as_deref())
            });
            if settled && current {
                let m = Member {
                    have: Some(r.last),
                    epoch: r.epoch.clone(),
                    reset: false,
                    answered: true,
                    told: r.epoch.clone(),
                    asked: now,
                    welcome: Some(Arc::new(welcome)),
                };
                out.join(id, BROADCASTS);
                out.send(id, &m.answer(BROADCASTS, r.last, r.epoch.as_deref(), false));
                r.members.insert(id, m);
                self.conns.entry(id).or_default().push(BROADCASTS.into());
                return;
            }
        }
        // Never refused: the stream does not count as a room.
        let _ = self.enter(out, id, BROADCASTS, since, now, Some(welcome));
    }
}
