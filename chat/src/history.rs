//! Room history and sequence numbers: the [`History`] trait and
//! [`LocalHistory`], which keeps them in this process's memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use log::debug;

use crate::HISTORY_MAX_BYTES;

/// What a client that asks to catch up (`"since"`) said it has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Since {
    /// The last sequence number it saw in the room.
    pub seq: u64,
    /// The history it saw it in (the `epoch` of an earlier `joined`), if
    /// it said.
    pub epoch: Option<String>,
}

/// Messages before `from` are not kept (or, with `reset`, the client's
/// `since` belongs to a history this server does not have, e.g. after a
/// restart: everything kept is replayed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The oldest sequence number kept (the next one if none is kept).
    pub from: u64,
    /// The client's `since` was from another history.
    pub reset: bool,
}

/// Where a room stands and what a joining client is missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// Names this room's history; changes when it starts over.
    pub epoch: Arc<str>,
    /// The latest sequence number (0 before the first message).
    pub last: u64,
    /// Set when the client missed messages that are no longer kept.
    pub gap: Option<Gap>,
    /// The kept messages after the client's `since`, oldest first, as sent
    /// live (JSON text).
    pub messages: Vec<Arc<str>>,
}

/// Room history and sequence numbers. Calls happen on the loop thread, in
/// the order the loop handles them: a `replay` followed by live delivery
/// has no gap and no duplicate because nothing can be published between
/// the two.
pub trait History {
    /// Assigns the next sequence number of `room` and keeps the message
    /// `encode(seq)` builds. Returns the number and the kept text (which is
    /// also what members receive).
    fn append(&mut self, room: &str, encode: &mut dyn FnMut(u64) -> String) -> (u64, Arc<str>);

    /// Where `room` stands; with `since`, the kept messages after it.
    fn replay(&mut self, room: &str, since: Option<&Since>) -> Replay;
}

struct RoomLog {
    epoch: Arc<str>,
    /// Sequence number of the next message (the first is 1).
    next: u64,
    kept: VecDeque<(u64, Arc<str>)>,
    used: u64,
}

/// [`History`] in this process's memory: the last `keep` messages of each
/// of at most `max_rooms` rooms.
pub struct LocalHistory {
    rooms: HashMap<Box<str>, RoomLog>,
    keep: usize,
    max_rooms: usize,
    /// Bytes of kept messages in all rooms, and the most allowed: past it
    /// the oldest messages of the least recently used rooms go first.
    bytes: usize,
    max_bytes: usize,
    /// Random per process: a restarted server never reuses an epoch.
    tag: String,
    created: u64,
    clock: u64,
}

impl LocalHistory {
    /// Keeps `keep` messages per room for at most `max_rooms` rooms.
    pub fn new(keep: usize, max_rooms: usize) -> Self {
        let mut r = [0u8; 4];
        wsloop::rand::fill(&mut r);
        LocalHistory {
            rooms: HashMap::new(),
            keep: keep.max(1),
            max_rooms: max_rooms.max(1),
            bytes: 0,
            max_bytes: HISTORY_MAX_BYTES,
            tag: r.iter().map(|b| format!("{b:02x}")).collect(),
            created: 0,
            clock: 0,
        }
    }

    /// Sets the byte budget of all kept messages.
    #[cfg(test)]
    pub fn with_max_bytes(mut self, max: usize) -> Self {
        self.max_bytes = max;
        self
    }

    /// Drops the oldest messages of the least recently used rooms (never
    /// `current`'s newest message) until the budget holds.
    fn trim(&mut self, current: &str) {
        while self.bytes > self.max_bytes {
            let victim = self
                .rooms
                .iter()
                .filter(|(k, r)| {
                    // Keep at least the newest message of the room just
                    // appended to.
                    let floor = if &***k == current { 1 } else { 0 };
                    r.kept.len() > floor
                })
                .min_by_key(|(_, r)| r.used)
                .map(|(k, _)| k.clone());
            let Some(k) = victim else { return };
            let r = self.rooms.get_mut(&k).expect("found above");
            if let Some((_, t)) = r.kept.pop_front() {
                self.bytes -= t.len();
            }
        }
    }

    fn room(&mut self, name: &str) -> &mut RoomLog {
        self.clock += 1;
        let clock = self.clock;
        if !self.rooms.contains_key(name) {
            if self.rooms.len() >= self.max_rooms {
                // O(rooms), only when a new room pushes an old one out.
                let oldest = self
                    .rooms
                    .iter()
                    .min_by_key(|(_, r)| r.used)
                    .map(|(k, _)| k.clone());
                if let Some(k) = oldest {
                    debug!("chat: dropping the history of room {k:?}");
                    if let Some(r) = self.rooms.remove(&k) {
                        self.bytes -= r.kept.iter().map(|(_, t)| t.len()).sum::<usize>();
                    }
                }
            }
            self.created += 1;
            let epoch: Arc<str> = format!("{}-{}", self.tag, self.created).into();
            self.rooms.insert(
                name.into(),
                RoomLog {
                    epoch,
                    next: 1,
                    kept: VecDeque::new(),
                    used: clock,
                },
            );
        }
        let r = self.rooms.get_mut(name).expect("inserted above");
        r.used = clock;
        r
    }
}

impl History for LocalHistory {
    fn append(&mut self, room: &str, encode: &mut dyn FnMut(u64) -> String) -> (u64, Arc<str>) {
        let keep = self.keep;
        let r = self.room(room);
        let seq = r.next;
        r.next += 1;
        let text: Arc<str> = encode(seq).into();
        let mut freed = 0;
        if r.kept.len() == keep {
            freed = r.kept.pop_front().map_or(0, |(_, t)| t.len());
        }
        r.kept.push_back((seq, text.clone()));
        self.bytes = self.bytes + text.len() - freed;
        self.trim(room);
        (seq, text)
    }

    fn replay(&mut self, room: &str, since: Option<&Since>) -> Replay {
        let r = self.room(room);
        let last = r.next - 1;
        let oldest = r.kept.front().map_or(r.next, |(s, _)| *s);
        let mut out = Replay {
            epoch: r.epoch.clone(),
            last,
            gap: None,
            messages: Vec::new(),
        };
        let Some(since) = since else {
            return out;
        };
        // A `since` from another history (an epoch we do not have, or a
        // number we never reached) cannot be trusted: replay all we keep.
        let reset = since.epoch.as_deref().is_some_and(|e| e != &*r.epoch) || since.seq > last;
        let after = if reset { 0 } else { since.seq };
        if reset || after + 1 < oldest {
            out.gap = Some(Gap {
                from: oldest,
                reset,
            });
        }
        let skip = (after + 1).saturating_sub(oldest) as usize;
        out.messages = r.kept.iter().skip(skip).map(|(_, t)| t.clone()).collect();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(room: &str) -> impl FnMut(u64) -> String + '_ {
        move |seq| format!("{room}#{seq}")
    }

    fn texts(r: &Replay) -> Vec<String> {
        r.messages.iter().map(|m| m.to_string()).collect()
    }

    #[test]
    fn replay_after_since_without_gap() {
        let mut h = LocalHistory::new(5, 10);
        for _ in 0..3 {
            h.append("a", &mut enc("a"));
        }
        let r = h.replay("a", None);
        assert_eq!((r.last, r.gap, r.messages.len()), (3, None, 0));
        let r = h.replay(
            "a",
            Some(&Since {
                seq: 1,
                epoch: None,
            }),
        );
        assert_eq!(texts(&r), ["a#2", "a#3"]);
        assert_eq!(r.gap, None);
        let r = h.replay(
            "a",
            Some(&Since {
                seq: 3,
                epoch: Some(r.epoch.to_string()),
            }),
        );
        assert!(r.messages.is_empty() && r.gap.is_none());
        // Empty room, since 0: nothing, no gap.
        let r = h.replay(
            "b",
            Some(&Since {
                seq: 0,
                epoch: None,
            }),
        );
        assert_eq!((r.last, r.gap, r.messages.len()), (0, None, 0));
    }

    #[test]
    fn gap_when_older_than_kept() {
        let mut h = LocalHistory::new(5, 10);
        for _ in 0..12 {
            h.append("a", &mut enc("a"));
        }
        // Kept: 8..=12.
        let r = h.replay(
            "a",
            Some(&Since {
                seq: 2,
                epoch: None,
            }),
        );
        assert_eq!(
            r.gap,
            Some(Gap {
                from: 8,
                reset: false
            })
        );
        assert_eq!(texts(&r), ["a#8", "a#9", "a#10", "a#11", "a#12"]);
        // 7 seen: 8 is next, nothing missing.
        let r = h.replay(
            "a",
            Some(&Since {
                seq: 7,
                epoch: None,
            }),
        );
        assert_eq!(r.gap, None);
        assert_eq!(r.messages.len(), 5);
        let r = h.replay(
            "a",
            Some(&Since {
                seq: 10,
                epoch: None,
            }),
        );
        assert_eq!(texts(&r), ["a#11", "a#12"]);
    }

    #[test]
    fn reset_for_another_history() {
        let mut h = LocalHistory::new(5, 10);
        h.append("a", &mut enc("a"));
        let epoch = h.replay("a", None).epoch.to_string();
        let r = h.replay(
            "a",
            Some(&Since {
                seq: 1,
                epoch: Some("other".into()),
            }),
        );
        assert_eq!(
            r.gap,
            Some(Gap {
                from: 1,
                reset: true
            })
        );
        assert_eq!(texts(&r), ["a#1"]);
        let r = h.replay(
            "a",
            Some(&Since {
                seq: 9,
                epoch: None,
            }),
        );
        assert_eq!(
            r.gap,
            Some(Gap {
                from: 1,
                reset: true
            })
        );
        let r = h.replay(
            "a",
            Some(&Since {
                seq: 1,
                epoch: Some(epoch),
            }),
        );
        assert_eq!((r.gap, r.messages.len()), (None, 0));
        // Another process never reuses an epoch.
        let mut h2 = LocalHistory::new(5, 10);
        assert_ne!(h2.replay("a", None).epoch, h.replay("a", None).epoch);
    }

    #[test]
    fn history_bytes_are_capped_across_rooms() {
        let mut h = LocalHistory::new(1000, 100).with_max_bytes(10_000);
        for room in ["a", "b", "c"] {
            for _ in 0..100 {
                h.append(room, &mut |seq| format!("{seq:0>100}"));
            }
        }
        assert!(h.bytes <= 10_000, "{} bytes kept", h.bytes);
        let kept: usize = h.rooms.values().map(|r| r.kept.len()).sum();
        assert_eq!(kept * 100, h.bytes);
        // The newest messages survive; a `since` behind them gets a gap.
        let r = h.replay(
            "c",
            Some(&Since {
                seq: 0,
                epoch: None,
            }),
        );
        assert_eq!(r.last, 100);
        assert!(r.gap.is_some() || r.messages.len() == 100);
        assert!(!r.messages.is_empty());
    }

    #[test]
    fn least_recently_used_history_is_dropped() {
        let mut h = LocalHistory::new(5, 2);
        h.append("a", &mut enc("a"));
        let ea = h.replay("a", None).epoch;
        h.append("b", &mut enc("b"));
        h.append("a", &mut enc("a"));
        h.append("c", &mut enc("c")); // pushes out b
        assert_eq!(h.rooms.len(), 2);
        assert!(h.rooms.contains_key("a") && h.rooms.contains_key("c"));
        assert_eq!(h.replay("a", None).epoch, ea);
        let r = h.replay(
            "b",
            Some(&Since {
                seq: 1,
                epoch: None,
            }),
        );
        assert_eq!((r.last, r.gap.map(|g| g.reset)), (0, Some(true)));
    }
}
