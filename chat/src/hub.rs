//! Rooms across the event loops of one process: a [`Hub`] shared by the
//! loops, and one [`HubBus`] per loop.
//!
//! A room's sequence numbers and history, and which loops have members in
//! it, live in the hub behind one mutex. Each loop keeps its own members
//! (`Ctx::join`). A publish, on whatever loop, numbers the message, encodes
//! its frame once and queues that shared frame in the inbox of every loop
//! with members of the room, all under the lock: so every inbox holds a
//! room's messages in `seq` order, even with two loops publishing to it at
//! once. The publishing loop then empties its own inbox at once; another
//! loop is woken through a [`Notifier`] registered on its server, a flag
//! and a wake-up outside the loop's request queue: a library user's own
//! [`Handle`] requests filling that queue cannot hold the frames back,
//! and the hub adds nothing to it.
//!
//! [`Notifier`]: wsloop::server::Notifier
//! [`Handle`]: wsloop::server::Handle
//!
//! An inbox is bounded in bytes. A frame that does not fit is not queued:
//! the inbox notes the room's missed numbers instead (one note per run of
//! misses), and the loop replays them from the history when it gets there,
//! in order, before anything newer; what the history no longer keeps
//! becomes a `gap` the member can act on. So a loop that falls behind
//! loses nothing silently.
//!
//! Joins and opens empty the loop's inbox before they read the history:
//! what was numbered before the `joined` (or the `welcome`) goes to the
//! members already there, and everything after it reaches the newcomer
//! live, each `seq` once.

mod state;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use log::debug;
use wsloop::server::{ConnId, Ctx, Handler, MetricsWriter, Server};

use crate::bus::{answer_join, answer_open, Refusal, RoomBus, Welcome, BROADCASTS};
use crate::history::{History, LocalHistory, Since};
use crate::wire::{unix_ms, Out};
use crate::ChatConfig;
use state::{Delivery, Inbox, State};

/// Most loops one hub serves (loops are bits of a `u64`).
pub const MAX_LOOPS: usize = 64;
/// Bytes of frames one loop's inbox holds by default.
pub const INBOX_BYTES: usize = 8 << 20;
/// Sends one notified drain makes, about (deliveries times the loop's
/// members of their room; at least one entry is taken): the rest wait for
/// the next pass, so the loop serves its sockets in between however large
/// the rooms are.
const PASS_SENDS: usize = 16 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic on one loop must not wedge the others.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Rooms shared by several event loops of one process: make one, give
/// each loop's [`Chat`](crate::Chat) a [`Hub::bus`], and [`Hub::attach`]
/// each loop's server before it runs.
///
/// ```no_run
/// use wsloop::server::{Access, Server};
/// use wsloop::Config;
/// use wsloop_chat::{Chat, ChatConfig, Hub};
///
/// let hub = Hub::new(&ChatConfig::default());
/// let mut loops = Vec::new();
/// for _ in 0..2 {
///     let bus = hub.bus();
///     let n = bus.loop_no();
///     let chat = Chat::with_bus(Access::default(), bus);
///     let mut server = Server::bind("127.0.0.1:0", Config::default(), chat)?;
///     hub.attach(n, &mut server);
///     loops.push(std::thread::spawn(move || server.run().map(|_| ())));
/// }
/// # Ok::<(), wsloop::Error>(())
/// ```
#[derive(Clone)]
pub struct Hub {
    state: Arc<Mutex<State>>,
    members: Arc<AtomicU64>,
}

impl Hub {
    /// A hub with in-memory history as `config` says.
    pub fn new(config: &ChatConfig) -> Self {
        let history = LocalHistory::new(config.history_per_room, config.max_rooms);
        Hub::with_history(history, INBOX_BYTES)
    }

    /// A hub over `history`, each loop's inbox holding at most about
    /// `inbox_bytes` of frames (past it, numbers are noted and replayed
    /// from the history later).
    pub fn with_history(history: impl History + Send + 'static, inbox_bytes: usize) -> Self {
        Hub {
            state: Arc::new(Mutex::new(State::new(Box::new(history), inbox_bytes))),
            members: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The bus of one more loop (at most [`MAX_LOOPS`]).
    ///
    /// # Panics
    /// If the hub has [`MAX_LOOPS`] loops already.
    pub fn bus(&self) -> HubBus {
        let mut st = lock(&self.state);
        assert!(
            st.inboxes.len() < MAX_LOOPS,
            "a hub serves at most {MAX_LOOPS} loops"
        );
        st.inboxes.push(Inbox::default());
        HubBus {
            hub: self.clone(),
            me: st.inboxes.len() - 1,
            counts: HashMap::new(),
            of: HashMap::new(),
        }
    }

    /// Loop `n`'s server (the one whose chat has the bus with
    /// [`HubBus::loop_no`] `n`): registers the
    /// [`Notifier`](wsloop::server::Notifier) through which other loops
    /// wake it. A loop never attached gets what is published
    /// elsewhere only on its own next publish, join or open.
    ///
    /// # Panics
    /// If `n` is not the number of a bus of this hub.
    pub fn attach<H: Handler>(&self, n: usize, server: &mut Server<H>) {
        let loops = lock(&self.state).inboxes.len();
        assert!(n < loops, "loop {n} of a hub with {loops} loops");
        let hub = self.clone();
        let notifier = server.notifier(move |ctx| hub.drain(ctx, n));
        lock(&self.state).inboxes[n].notifier = Some(notifier);
    }

    /// Frames that did not fit loop `n`'s inbox so far (replayed from the
    /// history, or a gap).
    ///
    /// # Panics
    /// If `n` is not the number of a bus of this hub.
    pub fn missed(&self, n: usize) -> u64 {
        let st = lock(&self.state);
        let loops = st.inboxes.len();
        assert!(n < loops, "loop {n} of a hub with {loops} loops");
        st.inboxes[n].missed
    }

    /// The loops (bit `i`: loop `i`) that have members of `room`.
    pub fn loops_of(&self, room: &str) -> u64 {
        lock(&self.state).rooms.get(room).copied().unwrap_or(0)
    }

    /// Notifies each loop in `wake` to empty its inbox.
    fn wake(&self, wake: Vec<usize>) {
        for i in wake {
            let notifier = lock(&self.state).inboxes[i].notifier.clone();
            let Some(notifier) = notifier else { continue };
            if !notifier.notify() {
                // The loop has stopped: free what waits for it.
                let mut st = lock(&self.state);
                let inbox = &mut st.inboxes[i];
                inbox.scheduled = false;
                inbox.stopped = true;
                inbox.items.clear();
                inbox.bytes = 0;
                inbox.open_miss.clear();
            }
        }
    }

    /// On loop `me`: delivers a pass of its inbox, and notifies itself
    /// again if more waits.
    fn drain(&self, ctx: &mut Ctx<'_>, me: usize) {
        let mut out = Vec::new();
        let more = {
            let mut st = lock(&self.state);
            let more = st.take(me, PASS_SENDS, |room| sends(ctx, room), &mut out);
            st.inboxes[me].scheduled = more;
            more
        };
        if more {
            self.wake(vec![me]);
        }
        deliver(ctx, &out, None);
    }
}

/// The sends a delivery to `room` makes on this loop.
fn sends(ctx: &Ctx<'_>, room: &str) -> usize {
    if room == BROADCASTS {
        ctx.connections()
    } else {
        ctx.room_len(room)
    }
}

/// Hands deliveries to this loop's connections, in order.
fn deliver(ctx: &mut Ctx<'_>, out: &[Delivery], except: Option<ConnId>) {
    for d in out {
        if &*d.room == BROADCASTS {
            ctx.broadcast_all_frame(&d.frame, except);
        } else {
            ctx.publish_frame(&d.room, &d.frame);
        }
    }
}

/// One loop's side of a [`Hub`]: a [`RoomBus`] whose rooms span every
/// loop of the hub. Its own members are the library's (`Ctx::join`).
pub struct HubBus {
    hub: Hub,
    me: usize,
    /// Members of each room on this loop.
    counts: HashMap<Arc<str>, usize>,
    /// The rooms of each member on this loop (the library has forgotten
    /// them by the time `closed` is called).
    of: HashMap<ConnId, Vec<Arc<str>>>,
}

impl HubBus {
    /// Which loop of the hub this is (for [`Hub::attach`]).
    pub fn loop_no(&self) -> usize {
        self.me
    }

    /// Empties this loop's inbox (all of it: a join or an open reads the
    /// history right after, under the same lock) and runs `then` under the
    /// lock.
    fn flush<T>(
        &self,
        ctx: &mut Ctx<'_>,
        except: Option<ConnId>,
        then: impl FnOnce(&mut State) -> T,
    ) -> T {
        let mut out = Vec::new();
        let r = {
            let mut st = lock(&self.hub.state);
            st.take(self.me, usize::MAX, |_| 1, &mut out);
            then(&mut st)
        };
        deliver(ctx, &out, except);
        r
    }

    fn publish_as(&mut self, ctx: &mut Ctx<'_>, room: &str, encode: &mut dyn FnMut(u64) -> String) {
        let mut out = Vec::new();
        let (seq, wake, more) = {
            let mut st = lock(&self.hub.state);
            let (seq, wake) = st.publish(self.me, room, encode);
            let more = st.take(self.me, usize::MAX, |_| 1, &mut out);
            (seq, wake, more)
        };
        debug_assert!(!more);
        self.hub.wake(wake);
        deliver(ctx, &out, None);
        debug!("chat: {room:?}#{seq} on loop {}", self.me);
    }

    fn forget(&mut self, room: &str) {
        let Some(n) = self.counts.get_mut(room) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.counts.remove(room);
            lock(&self.hub.state).register(self.me, room, false);
        }
    }
}

impl RoomBus for HubBus {
    fn member_id(&self, _n: u64) -> String {
        // One count for every loop: ids stay unique across them.
        format!("u{}", self.hub.members.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn is_member(&self, ctx: &Ctx<'_>, id: ConnId, room: &str) -> bool {
        ctx.in_room(id, room)
    }

    fn join(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        room: &str,
        since: Option<&Since>,
        member: bool,
    ) -> Result<(), Refusal> {
        let me = self.me;
        // What was numbered before the replay goes to the members already
        // here, not to `id`; what comes after reaches `id` live.
        let r = self.flush(ctx, None, |st| {
            if !member {
                st.register(me, room, true);
            }
            st.history.replay(room, since)
        });
        if !member {
            let name = self
                .counts
                .get_key_value(room)
                .map_or_else(|| Arc::from(room), |(k, _)| k.clone());
            if ctx.join(id, room) {
                *self.counts.entry(name.clone()).or_default() += 1;
                self.of.entry(id).or_default().push(name);
            } else if !self.counts.contains_key(room) {
                lock(&self.hub.state).register(me, room, false);
            }
        }
        answer_join(ctx, id, room, r);
        Ok(())
    }

    fn leave(&mut self, ctx: &mut Ctx<'_>, id: ConnId, room: &str) -> bool {
        if !ctx.leave(id, room) {
            return false;
        }
        if let Some(rooms) = self.of.get_mut(&id) {
            rooms.retain(|r| &**r != room);
            if rooms.is_empty() {
                self.of.remove(&id);
            }
        }
        self.forget(room);
        true
    }

    fn publish(
        &mut self,
        ctx: &mut Ctx<'_>,
        room: &str,
        from: &str,
        name: Option<&str>,
        text: &str,
    ) -> Result<(), Refusal> {
        self.publish_as(ctx, room, &mut |seq| {
            Out::Message {
                room,
                seq: Some(seq),
                from,
                name,
                text,
                ts: unix_ms(),
                local: false,
            }
            .json()
        });
        Ok(())
    }

    fn broadcast(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: &str,
        name: Option<&str>,
        text: &str,
    ) -> Result<(), Refusal> {
        self.publish_as(ctx, BROADCASTS, &mut |seq| {
            Out::Broadcast {
                seq: Some(seq),
                from,
                name,
                text,
                ts: unix_ms(),
                local: false,
            }
            .json()
        });
        Ok(())
    }

    fn open(&mut self, ctx: &mut Ctx<'_>, id: ConnId, welcome: &Welcome, since: Option<&Since>) {
        // Broadcasts numbered before the replay go to everyone else here;
        // `id` gets them in its catch-up, and later ones live.
        let r = self.flush(ctx, Some(id), |st| st.history.replay(BROADCASTS, since));
        answer_open(ctx, id, welcome, Some(r));
    }

    fn closed(&mut self, id: ConnId) {
        for room in self.of.remove(&id).unwrap_or_default() {
            self.forget(&room);
        }
    }

    fn metrics(&self, out: &mut MetricsWriter) {
        let me = self.me.to_string();
        let labels = [("loop", me.as_str())];
        out.gauge(
            "wsloop_chat_hub_members",
            "Chat connections in at least one room, per event loop.",
            &labels,
            self.of.len() as f64,
        );
        out.gauge(
            "wsloop_chat_hub_rooms",
            "Rooms with members, per event loop.",
            &labels,
            self.counts.len() as f64,
        );
        let missed = lock(&self.hub.state).inboxes[self.me].missed;
        out.counter(
            "wsloop_chat_hub_missed_total",
            "Room messages that did not fit in this loop's inbox and were \
             replayed from the history (or became a gap).",
            &labels,
            missed,
        );
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
