//! The hub's shared state: numbering and history, which loops have
//! members of which room, and each loop's inbox (see the parent module).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use wsloop::protocol::encode_shared;
use wsloop::server::Notifier;
use wsloop::Message;

use crate::bus::BROADCASTS;
use crate::history::{History, Since};
use crate::wire::Out;

/// What an entry costs besides its frame (so notes count too).
const ENTRY_COST: usize = 64;

/// What waits for a loop, in the order the loop must deliver it.
#[derive(Debug)]
pub(crate) enum Item {
    /// A numbered message for the room's members here (for everyone, if
    /// the room is [`BROADCASTS`]).
    Frame { room: Arc<str>, frame: Arc<[u8]> },
    /// Numbers `from..=until` of the room did not fit: replay them from
    /// the history (of `epoch`).
    Missed {
        room: Arc<str>,
        from: u64,
        until: u64,
        epoch: Arc<str>,
    },
}

/// One loop's inbox.
#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) items: VecDeque<(Item, usize)>,
    pub(crate) bytes: usize,
    /// Entries taken so far: `items[i]` is entry number `base + i`.
    base: u64,
    /// Rooms whose newest entry is a `Missed`, and its number: further
    /// misses extend it.
    pub(super) open_miss: HashMap<Arc<str>, u64>,
    /// Wakes the loop to drain this inbox.
    pub(super) notifier: Option<Notifier>,
    /// The loop has been notified and has not drained yet.
    pub(super) scheduled: bool,
    /// The loop has stopped: nothing is queued for it any more.
    pub(super) stopped: bool,
    /// Frames that did not fit (replayed from the history later).
    pub(crate) missed: u64,
}

/// What a loop delivers, outside the lock.
pub(crate) struct Delivery {
    /// A room, or [`BROADCASTS`].
    pub(crate) room: Arc<str>,
    pub(crate) frame: Arc<[u8]>,
}

/// The shared state: history and numbering, which loops have members of
/// which room, and the loops' inboxes.
pub(crate) struct State {
    pub(crate) history: Box<dyn History + Send>,
    /// Room → the loops with members of it (bit `i`: loop `i`).
    pub(crate) rooms: HashMap<Arc<str>, u64>,
    pub(crate) inboxes: Vec<Inbox>,
    inbox_bytes: usize,
}

impl State {
    pub(crate) fn new(history: Box<dyn History + Send>, inbox_bytes: usize) -> Self {
        State {
            history,
            rooms: HashMap::new(),
            inboxes: Vec::new(),
            inbox_bytes,
        }
    }

    /// Numbers and keeps a message of `room` (or of [`BROADCASTS`]) and
    /// queues its frame for every loop with members of it, `me` included
    /// (every loop, for a broadcast). Returns the number and the loops
    /// that must be woken.
    pub(crate) fn publish(
        &mut self,
        me: usize,
        room: &str,
        encode: &mut dyn FnMut(u64) -> String,
    ) -> (u64, Vec<usize>) {
        let (seq, json) = self.history.append(room, encode);
        let frame = encode_shared(&Message::Text(json[..].into()));
        let mask = if room == BROADCASTS {
            u64::MAX
        } else {
            self.rooms.get(room).copied().unwrap_or(0) | 1 << me
        };
        let epoch = self.history.replay(room, None).epoch;
        let name: Arc<str> = match self.rooms.get_key_value(room) {
            Some((k, _)) => k.clone(),
            None => room.into(),
        };
        let mut wake = Vec::new();
        for (i, inbox) in self.inboxes.iter_mut().enumerate() {
            if mask & (1 << i) == 0 || inbox.stopped {
                continue;
            }
            inbox.push(&name, seq, &epoch, &frame, self.inbox_bytes);
            if i != me && !inbox.scheduled && inbox.notifier.is_some() {
                inbox.scheduled = true;
                wake.push(i);
            }
        }
        (seq, wake)
    }

    /// Takes entries of loop `me`'s inbox as deliveries (missed numbers
    /// replayed from the history) until what they cost reaches `budget`:
    /// each delivery costs `cost(room)`, at least 1 (the loop counts the
    /// sends it will make). At least one entry is taken. Returns whether
    /// more wait.
    pub(crate) fn take(
        &mut self,
        me: usize,
        budget: usize,
        mut cost: impl FnMut(&str) -> usize,
        out: &mut Vec<Delivery>,
    ) -> bool {
        let mut spent = 0usize;
        while spent < budget {
            let inbox = &mut self.inboxes[me];
            let Some((item, w)) = inbox.items.pop_front() else {
                break;
            };
            inbox.bytes -= w;
            let before = out.len();
            match item {
                Item::Frame { room, frame } => out.push(Delivery { room, frame }),
                Item::Missed {
                    room,
                    from,
                    until,
                    epoch,
                } => {
                    if inbox.open_miss.get(&room) == Some(&inbox.base) {
                        inbox.open_miss.remove(&room);
                    }
                    recover(&mut *self.history, &room, from, until, &epoch, out);
                }
            }
            inbox.base += 1;
            for d in &out[before..] {
                spent = spent.saturating_add(cost(&d.room).max(1));
            }
        }
        let inbox = &mut self.inboxes[me];
        !inbox.items.is_empty()
    }

    /// Loop `me` has members of `room` (`true`) or none any more.
    pub(crate) fn register(&mut self, me: usize, room: &str, present: bool) {
        if present {
            let name: Arc<str> = room.into();
            *self.rooms.entry(name).or_default() |= 1 << me;
        } else if let Some(mask) = self.rooms.get_mut(room) {
            *mask &= !(1 << me);
            if *mask == 0 {
                self.rooms.remove(room);
            }
        }
    }
}

impl Inbox {
    fn push(&mut self, room: &Arc<str>, seq: u64, epoch: &Arc<str>, frame: &Arc<[u8]>, max: usize) {
        let w = frame.len() + room.len() + ENTRY_COST;
        if self.bytes + w <= max || self.items.is_empty() {
            self.items.push_back((
                Item::Frame {
                    room: room.clone(),
                    frame: frame.clone(),
                },
                w,
            ));
            self.bytes += w;
            self.open_miss.remove(room);
            return;
        }
        // Full: note the number instead (one note per run of misses, so
        // notes stay as few as the rooms).
        self.missed += 1;
        if let Some(&at) = self.open_miss.get(room) {
            if let Some((Item::Missed { until, .. }, _)) =
                self.items.get_mut((at - self.base) as usize)
            {
                *until = seq;
                return;
            }
        }
        let w = room.len() + ENTRY_COST;
        self.items.push_back((
            Item::Missed {
                room: room.clone(),
                from: seq,
                until: seq,
                epoch: epoch.clone(),
            },
            w,
        ));
        self.bytes += w;
        self.open_miss
            .insert(room.clone(), self.base + self.items.len() as u64 - 1);
    }
}

/// Replays numbers `from..=until` of `room` from the history; what it no
/// longer keeps becomes a `gap` (with `reset` if the room's history
/// started over since).
fn recover(
    history: &mut dyn History,
    room: &Arc<str>,
    from: u64,
    until: u64,
    epoch: &str,
    out: &mut Vec<Delivery>,
) {
    let since = Since {
        seq: from - 1,
        epoch: Some(epoch.to_owned()),
    };
    let r = history.replay(room, Some(&since));
    let shown = if &**room == BROADCASTS { "*" } else { room };
    let mut start = from;
    if let Some(g) = r.gap {
        let gap = Out::Gap {
            room: shown,
            from: g.from,
            reset: g.reset,
        };
        out.push(Delivery {
            room: room.clone(),
            frame: encode_shared(&Message::Text(gap.json().into())),
        });
        if g.reset {
            // Numbers of another history: the member must join again.
            return;
        }
        start = g.from;
    }
    let n = (until + 1).saturating_sub(start) as usize;
    for m in r.messages.iter().take(n) {
        out.push(Delivery {
            room: room.clone(),
            frame: encode_shared(&Message::Text(m[..].into())),
        });
    }
}
