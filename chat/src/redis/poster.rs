//! How the Redis threads reach the loop: events go into an inbox drained
//! by one `Handle::run` closure at a time, into the loop-side state, whose
//! output goes to the loop's `Ctx`.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, MutexGuard};

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
    fn publish(&mut self, room: &str, json: &str) {
        deliver(self.0, room, json);
    }
    fn broadcast_all(&mut self, json: &str) {
        self.0.broadcast_all(&Message::Text(Cow::Borrowed(json)));
    }
}

#[derive(Default)]
struct Inbox {
    events: Vec<Event>,
    scheduled: bool,
}

/// Hands events to the loop: at most one `Handle::run` closure in flight,
/// which drains everything posted until it runs.
#[derive(Clone)]
pub(super) struct Poster {
    inbox: Arc<Mutex<Inbox>>,
    state: Arc<Mutex<State<ConnId>>>,
    handle: Handle,
}

impl Poster {
    pub(super) fn new(state: Arc<Mutex<State<ConnId>>>, handle: Handle) -> Self {
        Poster {
            inbox: Arc::new(Mutex::new(Inbox::default())),
            state,
            handle,
        }
    }

    /// False once the server has stopped.
    pub(super) fn post(&self, ev: Event) -> bool {
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

    pub(super) fn backlog(&self) -> usize {
        lock(&self.inbox).events.len()
    }
}
