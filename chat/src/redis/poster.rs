//! How the Redis threads reach the loop: events go into an inbox bounded
//! in bytes, drained on the loop thread by one `Handle::run` closure at a
//! time, a budget of events per closure, into the loop-side state, whose
//! output goes to the loop's `Ctx`.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use wsloop::server::{ConnId, Ctx, Handle};
use wsloop::Message;

use super::jobs::Event;
use super::state::{Sink, State};
use crate::bus::deliver;

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only the loop thread locks the state; a panic there must not wedge
    // the backplane for good.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Bytes of events waiting for the loop; past this the Redis threads wait
/// (the subscriber stops reading: Redis buffers, and past its own limit
/// drops the subscription, which the catch-up after reconnecting covers).
pub(super) const INBOX_BYTES: usize = 16 << 20;
/// Events one closure takes from the inbox, and their bytes, and the sends
/// they may make (deliveries times members); the rest wait for the next
/// closure, so the loop serves its sockets in between however large the
/// rooms are.
const PASS_EVENTS: usize = 256;
const PASS_BYTES: usize = 1 << 20;
const PASS_SENDS: usize = 16 * 1024;

/// The loop's [`Ctx`] as the state's [`Sink`].
pub(super) struct CtxSink<'a, 'b>(pub(super) &'a mut Ctx<'b>);

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
    fn publish(&mut self, room: &str, json: &str) -> usize {
        deliver(self.0, room, json)
    }
}

#[derive(Default)]
struct Inbox {
    events: VecDeque<(Event, usize)>,
    bytes: usize,
    /// A drain closure is queued on the loop.
    scheduled: bool,
    /// The server has stopped.
    stopped: bool,
}

impl Inbox {
    /// Takes a pass's events from the front: up to PASS_EVENTS or
    /// PASS_BYTES. Their bytes stay counted (they are not handed over
    /// yet); returns them and their bytes.
    fn take(&mut self) -> (VecDeque<(Event, usize)>, usize) {
        let (mut batch, mut bytes) = (VecDeque::new(), 0);
        while batch.len() < PASS_EVENTS && bytes < PASS_BYTES {
            let Some((ev, w)) = self.events.pop_front() else {
                break;
            };
            bytes += w;
            batch.push_back((ev, w));
        }
        (batch, bytes)
    }

    /// After a pass that took `taken` bytes: those handed over leave the
    /// count, the rest go back to the front in their order. True if a
    /// drain must be queued for them.
    fn settle(&mut self, taken: usize, rest: VecDeque<(Event, usize)>) -> bool {
        let kept: usize = rest.iter().map(|(_, w)| w).sum();
        self.bytes -= taken - kept;
        if rest.is_empty() {
            return false;
        }
        for ev in rest.into_iter().rev() {
            self.events.push_front(ev);
        }
        if self.scheduled || self.stopped {
            return false;
        }
        self.scheduled = true;
        true
    }
}

/// The inbox and its signal, shared by the Redis threads' posters and the
/// bus in the handler.
pub(super) struct Shared {
    inbox: Mutex<Inbox>,
    /// Signalled when the inbox shrinks (or the server stops).
    room: Condvar,
}

impl Shared {
    pub(super) fn new() -> Arc<Shared> {
        Arc::new(Shared {
            inbox: Mutex::new(Inbox::default()),
            room: Condvar::new(),
        })
    }

    /// The loop is gone (its handler was dropped): what waits is dropped,
    /// and every later post, kick or wait for room says so, so the Redis
    /// threads end. A drain closure still queued on a loop that ended
    /// would otherwise leave `scheduled` set for good, and the threads
    /// would never hear of the stop.
    pub(super) fn stop(&self) {
        let mut inbox = lock(&self.inbox);
        inbox.stopped = true;
        inbox.scheduled = false;
        inbox.events.clear();
        inbox.bytes = 0;
        self.room.notify_all();
    }
}

/// Hands events to the loop: at most one `Handle::run` closure in flight,
/// which hands over a budget of what was posted and queues itself again
/// for the rest.
#[derive(Clone)]
pub(super) struct Poster {
    shared: Arc<Shared>,
    state: Arc<Mutex<State<ConnId>>>,
    handle: Handle,
}

impl Poster {
    pub(super) fn new(
        shared: Arc<Shared>,
        state: Arc<Mutex<State<ConnId>>>,
        handle: Handle,
    ) -> Self {
        Poster {
            shared,
            state,
            handle,
        }
    }

    /// Queues `ev` for the loop. False once the server has stopped.
    pub(super) fn post(&self, ev: Event) -> bool {
        let weight = ev.weight();
        let mut inbox = lock(&self.shared.inbox);
        if inbox.stopped {
            return false;
        }
        inbox.events.push_back((ev, weight));
        inbox.bytes += weight;
        if inbox.scheduled {
            return true;
        }
        inbox.scheduled = true;
        drop(inbox);
        self.schedule(true)
    }

    /// Waits while the inbox holds more than [`INBOX_BYTES`] (so it holds
    /// at most that plus one event per thread). False once the server has
    /// stopped.
    pub(super) fn wait_room(&self) -> bool {
        let mut inbox = lock(&self.shared.inbox);
        while inbox.bytes > INBOX_BYTES && !inbox.stopped {
            inbox = self
                .shared
                .room
                .wait_timeout(inbox, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        !inbox.stopped
    }

    /// Events are waiting but no closure is queued (one could not be, the
    /// loop's queue being full): queue one now.
    pub(super) fn kick(&self) -> bool {
        let mut inbox = lock(&self.shared.inbox);
        if inbox.stopped {
            return false;
        }
        if inbox.scheduled || inbox.events.is_empty() {
            return true;
        }
        inbox.scheduled = true;
        drop(inbox);
        self.schedule(true)
    }

    /// Queues a drain closure on the loop. From another thread a full
    /// queue is waited out; from the loop thread (`patient` false) it is
    /// left to the next post or kick.
    fn schedule(&self, patient: bool) -> bool {
        loop {
            let me = self.clone();
            match self.handle.run(move |ctx| me.drain(ctx)) {
                Ok(()) => return true,
                Err(wsloop::Error::ConnectionClosed) => {
                    let mut inbox = lock(&self.shared.inbox);
                    inbox.stopped = true;
                    inbox.scheduled = false;
                    self.shared.room.notify_all();
                    return false;
                }
                // The loop's queue is full: it is behind.
                Err(_) if patient => thread::sleep(Duration::from_millis(1)),
                Err(_) => {
                    lock(&self.shared.inbox).scheduled = false;
                    return true;
                }
            }
        }
    }

    /// On the loop thread: hands a budget of events to the state.
    fn drain(&self, ctx: &mut Ctx<'_>) {
        // Taken events still count against INBOX_BYTES until they have
        // been handed over, so the inbox and this batch together stay
        // within the bound the posting threads wait on.
        let (more, batch, taken) = {
            let mut inbox = lock(&self.shared.inbox);
            let (batch, taken) = inbox.take();
            let more = !inbox.events.is_empty();
            inbox.scheduled = more;
            (more, batch, taken)
        };
        if more {
            // A later pass of the loop (the loop runs only requests queued
            // before a pass began), after whatever else it has queued.
            self.schedule(false);
        }
        let now = ctx.now();
        // Settled when dropped, so a panic in the state (the loop survives
        // it) neither keeps the bytes counted nor loses the events after
        // the one that panicked.
        let mut pass = Pass {
            poster: self,
            taken,
            batch,
        };
        lock(&self.state).on_events(&mut CtxSink(ctx), &mut pass.batch, PASS_SENDS, now);
    }

    /// After a pass: the bytes of the events handed over leave the inbox's
    /// count, and the events taken but not handed over (the pass's sends
    /// were spent) go back to its front, ahead of anything posted since.
    fn settle(&self, taken: usize, rest: VecDeque<(Event, usize)>) {
        let mut inbox = lock(&self.shared.inbox);
        let queue = inbox.settle(taken, rest);
        self.shared.room.notify_all();
        drop(inbox);
        if queue {
            self.schedule(false);
        }
    }
}

/// The events one drain took; settled with the inbox when dropped.
struct Pass<'a> {
    poster: &'a Poster,
    /// Bytes of all the events taken.
    taken: usize,
    /// Those not handed over yet.
    batch: VecDeque<(Event, usize)>,
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        self.poster
            .settle(self.taken, std::mem::take(&mut self.batch));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(n: usize) -> (Event, usize) {
        (Event::Tick, 1000 + n)
    }

    fn inbox(n: usize) -> Inbox {
        let mut inbox = Inbox::default();
        for i in 0..n {
            let (ev, w) = tick(i);
            inbox.bytes += w;
            inbox.events.push_back((ev, w));
        }
        inbox
    }

    #[test]
    fn taken_events_count_until_handed_over_and_the_rest_go_back_in_order() {
        let mut inbox = inbox(300);
        let all = inbox.bytes;
        let (mut batch, taken) = inbox.take();
        assert_eq!(batch.len(), PASS_EVENTS);
        // Still counted while the loop works through them: a posting
        // thread waiting for room is not let in on bytes still held.
        assert_eq!(inbox.bytes, all);
        // Ten handed over, the rest of the pass kept.
        let handed: usize = batch.drain(..10).map(|(_, w)| w).sum();
        inbox.scheduled = true;
        assert!(!inbox.settle(taken, batch), "a drain is already queued");
        assert_eq!(inbox.bytes, all - handed);
        let weights: Vec<usize> = inbox.events.iter().map(|(_, w)| *w).collect();
        assert_eq!(weights, (10..300).map(|i| 1000 + i).collect::<Vec<_>>());
    }

    #[test]
    fn events_put_back_with_no_drain_queued_ask_for_one() {
        let mut inbox = inbox(3);
        let (mut batch, taken) = inbox.take();
        batch.pop_front();
        assert!(inbox.settle(taken, batch));
        assert!(inbox.scheduled);
        assert_eq!(inbox.events.len(), 2);
        assert_eq!(inbox.bytes, 1001 + 1002);
        // All handed over: nothing to queue, nothing counted.
        let (batch, taken) = inbox.take();
        inbox.scheduled = false;
        assert!(!inbox.settle(taken, VecDeque::new()));
        assert_eq!((inbox.bytes, batch.len()), (0, 2));
        // Stopped: what is put back waits, no drain is queued.
        let mut inbox = inbox_stopped();
        let (batch, taken) = inbox.take();
        assert!(!inbox.settle(taken, batch));
    }

    struct Quiet;

    impl wsloop::server::Handler for Quiet {
        fn on_message(&mut self, _: &mut Ctx<'_>, _: ConnId, _: Message<'_>) {}
    }

    /// A poster on `shared` whose loop never turns.
    fn poster_on(shared: Arc<Shared>) -> (Poster, wsloop::server::Server<Quiet>) {
        let server =
            wsloop::server::Server::bind("127.0.0.1:0", wsloop::Config::default(), Quiet).unwrap();
        let (outbox, _, _) = crate::redis::queue::Outbox::new(16, 1 << 20);
        let limits = crate::redis::state::Limits {
            max_rooms: 4,
            ttl: Duration::from_secs(60),
        };
        let subs = Arc::new(crate::redis::subs::Subs::default());
        let st = State::new(outbox, limits, subs, "p".into());
        let poster = Poster::new(shared, Arc::new(Mutex::new(st)), server.handle());
        (poster, server)
    }

    #[test]
    fn a_stopped_inbox_ends_the_threads_even_with_a_drain_queued_on_a_loop_that_ended() {
        let shared = Shared::new();
        let (poster, server) = poster_on(shared.clone());
        // A drain is queued; the loop ends before running it.
        assert!(poster.post(Event::Tick));
        drop(server);
        // Nothing can tell: `scheduled` is set, so nobody asks the loop.
        assert!(poster.post(Event::Tick));
        assert!(poster.kick());
        // Until the bus says the loop is gone.
        shared.stop();
        assert!(!poster.post(Event::Tick));
        assert!(!poster.kick());
        assert!(!poster.wait_room());
    }

    #[test]
    fn dropping_the_bus_stops_its_inbox() {
        let (bus, starter) = crate::RedisBus::new("redis://127.0.0.1:1/").unwrap();
        let (poster, _server) = poster_on(starter.inbox.clone());
        assert!(poster.post(Event::Tick));
        drop(bus);
        assert!(!poster.post(Event::Tick), "the Redis threads would go on");
    }

    fn inbox_stopped() -> Inbox {
        let mut inbox = inbox(2);
        inbox.stopped = true;
        inbox
    }
}
