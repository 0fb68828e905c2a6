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

struct Shared {
    inbox: Mutex<Inbox>,
    /// Signalled when the inbox shrinks (or the server stops).
    room: Condvar,
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
    pub(super) fn new(state: Arc<Mutex<State<ConnId>>>, handle: Handle) -> Self {
        Poster {
            shared: Arc::new(Shared {
                inbox: Mutex::new(Inbox::default()),
                room: Condvar::new(),
            }),
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
        let mut batch = VecDeque::new();
        let more = {
            let mut inbox = lock(&self.shared.inbox);
            let mut bytes = 0;
            while batch.len() < PASS_EVENTS && bytes < PASS_BYTES {
                let Some((ev, w)) = inbox.events.pop_front() else {
                    break;
                };
                bytes += w;
                inbox.bytes -= w;
                batch.push_back((ev, w));
            }
            self.shared.room.notify_all();
            let more = !inbox.events.is_empty();
            inbox.scheduled = more;
            more
        };
        if more {
            // After whatever else the loop has queued.
            self.schedule(false);
        }
        let now = ctx.now();
        lock(&self.state).on_events(&mut CtxSink(ctx), &mut batch, PASS_SENDS, now);
        if !batch.is_empty() {
            self.put_back(batch);
        }
    }

    /// Events taken but not handed over (the pass's sends were spent) go
    /// back to the front of the inbox, ahead of anything posted since.
    fn put_back(&self, rest: VecDeque<(Event, usize)>) {
        let mut inbox = lock(&self.shared.inbox);
        for (ev, w) in rest.into_iter().rev() {
            inbox.bytes += w;
            inbox.events.push_front((ev, w));
        }
        if inbox.scheduled || inbox.stopped {
            return;
        }
        inbox.scheduled = true;
        drop(inbox);
        self.schedule(false);
    }
}
