//! The context handed to handler callbacks, and the cross-thread handle.

use std::sync::{mpsc, Arc};
use std::time::Instant;

use mio::Waker;

use crate::close::CloseCode;
use crate::config::OverflowPolicy;
use crate::error::CapacityError;
use crate::error::Error;
use crate::protocol::{encode_shared, Message, SendStatus};

use super::commands::{Backlog, Command};
use super::entry::Phase;
use super::{ConnId, Core};

/// What a callback can do: send to one connection, to a room, or to all;
/// close connections; join and leave rooms. Sends are queued and written
/// when the callback returns.
pub struct Ctx<'a> {
    pub(crate) core: &'a mut Core,
}

impl Ctx<'_> {
    /// The loop's time for this batch of events.
    pub fn now(&self) -> Instant {
        self.core.now
    }

    /// Open WebSocket connections.
    pub fn connections(&self) -> usize {
        self.core.open
    }

    /// True if `id` is an open connection.
    pub fn is_open(&mut self, id: ConnId) -> bool {
        self.with_conn(id, |c| Ok(c.is_open())).unwrap_or(false)
    }

    fn with_conn<T>(
        &mut self,
        id: ConnId,
        f: impl FnOnce(&mut crate::Connection) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let core = &mut *self.core;
        let (key, high) = (id.key(), core.config.write_buffer_high);
        // `Core::entry`, with the dirty list still at hand.
        let e = match core.slab.get_mut(key) {
            Some(e) if id.loop_id() == core.loop_id && e.gen == id.gen() && !e.dead => e,
            _ => return Err(Error::ConnectionClosed),
        };
        let Phase::Open { conn, .. } = &mut e.phase else {
            return Err(Error::ConnectionClosed);
        };
        let r = f(conn);
        if r.is_ok() && conn.buffered() > high {
            // The sender was told `Full`: it gets `on_drain` later.
            e.above_high = true;
        }
        e.mark_dirty(key, &mut core.dirty);
        r
    }

    /// Counts a message send: queued, or refused by the write queue limit.
    fn counted(&mut self, r: Result<SendStatus, Error>) -> Result<SendStatus, Error> {
        match &r {
            Ok(_) => self.core.stats.messages_out += 1,
            Err(Error::Capacity(CapacityError::WriteBufferLimit { .. })) => {
                let slot = match self.core.config.overflow {
                    OverflowPolicy::Close(_) => 0,
                    _ => 1,
                };
                self.core.stats.overflows[slot] += 1;
            }
            Err(_) => {}
        }
        r
    }

    /// Queues a text message to `id`.
    pub fn send_text(&mut self, id: ConnId, text: &str) -> Result<SendStatus, Error> {
        let r = self.with_conn(id, |c| c.send_text(text));
        self.counted(r)
    }

    /// Queues a binary message to `id`.
    pub fn send_binary(&mut self, id: ConnId, data: &[u8]) -> Result<SendStatus, Error> {
        let r = self.with_conn(id, |c| c.send_binary(data));
        self.counted(r)
    }

    /// Queues a message to `id` (an owned payload is not copied).
    pub fn send(&mut self, id: ConnId, msg: Message<'_>) -> Result<SendStatus, Error> {
        let r = self.with_conn(id, |c| c.send(msg));
        self.counted(r)
    }

    /// Queues a ping to `id`.
    pub fn ping(&mut self, id: ConnId, payload: &[u8]) -> Result<(), Error> {
        self.with_conn(id, |c| c.ping(payload))
    }

    /// Starts the close handshake with `id`.
    pub fn close(&mut self, id: ConnId, code: CloseCode, reason: &str) {
        let now = self.core.now;
        let _ = self.with_conn(id, |c| {
            c.close(code, reason, now);
            Ok(())
        });
    }

    /// Bytes queued for `id`.
    pub fn buffered(&mut self, id: ConnId) -> Option<usize> {
        self.with_conn(id, |c| Ok(c.buffered())).ok()
    }

    /// Sends `msg` to every id in `ids`, encoding the frame once. Returns
    /// how many accepted it (a full or closed connection does not).
    pub fn broadcast(&mut self, ids: impl IntoIterator<Item = ConnId>, msg: &Message<'_>) -> usize {
        self.broadcast_frame(ids, &encode_shared(msg))
    }

    /// Sends a frame already encoded by
    /// [`encode_shared`](crate::protocol::encode_shared) to every id in
    /// `ids`: another loop's publish reaches this loop's members without
    /// being encoded again. Queued as is, uncompressed, on deflate
    /// connections too (RFC 7692 lets any message go uncompressed). Returns
    /// how many accepted it; a frame that is not one whole unmasked text or
    /// binary frame is refused by every connection.
    pub fn broadcast_frame(
        &mut self,
        ids: impl IntoIterator<Item = ConnId>,
        frame: &Arc<[u8]>,
    ) -> usize {
        let mut n = 0;
        for id in ids {
            let r = self.with_conn(id, |c| c.send_shared(frame.clone()));
            if self.counted(r).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Sends `msg` to every open connection, encoding it once.
    pub fn broadcast_all(&mut self, msg: &Message<'_>) -> usize {
        self.broadcast_all_frame(&encode_shared(msg), None)
    }

    /// Sends an encoded frame (see [`Ctx::broadcast_frame`]) to every open
    /// connection but `except` (one that is being answered apart, such as
    /// a connection opening now whose catch-up already holds the frame).
    pub fn broadcast_all_frame(&mut self, frame: &Arc<[u8]>, except: Option<ConnId>) -> usize {
        let ids: Vec<ConnId> = self
            .core
            .slab
            .iter()
            .filter(|(_, e)| !e.dead && matches!(e.phase, Phase::Open { .. }))
            .map(|(k, e)| ConnId::new(self.core.loop_id, k, e.gen))
            .filter(|id| Some(*id) != except)
            .collect();
        self.broadcast_frame(ids, frame)
    }

    /// Adds `id` to `room`: an open connection, or one whose upgrade is
    /// being decided (in `on_upgrade`). Connections leave their rooms when
    /// they end, however they end (closed, rejected, failed, dropped).
    /// False, and no change, for a connection that has closed (or is
    /// not this loop's).
    pub fn join(&mut self, id: ConnId, room: &str) -> bool {
        let Some(e) = self.core.entry(id) else {
            return false;
        };
        match &e.phase {
            Phase::Open { conn } if !conn.is_closed() => {}
            Phase::Handshake { .. } => {}
            _ => return false,
        }
        if e.extra
            .as_ref()
            .is_some_and(|x| x.rooms.iter().any(|r| &**r == room))
        {
            return true;
        }
        let name: Arc<str> = match self.core.rooms.get_key_value(room) {
            Some((k, _)) => k.clone(),
            None => room.into(),
        };
        let e = self.core.entry(id).expect("checked above");
        e.extra
            .get_or_insert_with(Default::default)
            .rooms
            .push(name.clone());
        self.core.rooms.entry(name).or_default().insert(id);
        true
    }

    /// Removes `id` from `room`.
    pub fn leave(&mut self, id: ConnId, room: &str) -> bool {
        let Some(e) = self.core.entry(id) else {
            return false;
        };
        let Some(x) = e.extra.as_mut() else {
            return false;
        };
        let Some(pos) = x.rooms.iter().position(|r| &**r == room) else {
            return false;
        };
        x.rooms.swap_remove(pos);
        if x.rooms.is_empty() {
            if x.bucket.is_none() {
                e.extra = None;
            } else {
                x.rooms = Vec::new();
            }
        }
        if let Some(m) = self.core.rooms.get_mut(room) {
            m.remove(&id);
            if m.is_empty() {
                self.core.rooms.remove(room);
            }
        }
        true
    }

    /// True if `id` is in `room`.
    pub fn in_room(&self, id: ConnId, room: &str) -> bool {
        self.core.rooms.get(room).is_some_and(|m| m.contains(&id))
    }

    /// Members of `room`.
    pub fn room_members(&self, room: &str) -> Vec<ConnId> {
        self.core
            .rooms
            .get(room)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Members of `room` on this loop.
    pub fn room_len(&self, room: &str) -> usize {
        self.core.rooms.get(room).map_or(0, |m| m.len())
    }

    /// Sends `msg` to every member of `room`, encoding it once.
    pub fn publish(&mut self, room: &str, msg: &Message<'_>) -> usize {
        let members = self.room_members(room);
        self.broadcast(members, msg)
    }

    /// Sends an encoded frame (see [`Ctx::broadcast_frame`]) to every
    /// member of `room`.
    pub fn publish_frame(&mut self, room: &str, frame: &Arc<[u8]>) -> usize {
        let members = self.room_members(room);
        self.broadcast_frame(members, frame)
    }

    /// A handle for other threads.
    pub fn handle(&self) -> Handle {
        self.core.handle.clone()
    }

    /// Entries in the slab and items in the timer heap (for tests of the
    /// heap's bound).
    #[doc(hidden)]
    pub fn debug_timer_counts(&self) -> (usize, usize) {
        (self.core.slab.len(), self.core.timers.len())
    }
}

/// Feeds the loop from other threads; cheap to clone.
///
/// Requests wait in a queue bounded by `Config::command_queue_len` and
/// `Config::command_queue_bytes` (message payload bytes), and the loop runs
/// a few hundred of them per pass, between serving its sockets. A call
/// fails with:
/// - [`CapacityError::CommandQueueFull`](crate::CapacityError::CommandQueueFull)
///   when the queue is full: the loop
///   is behind. Nothing was queued; the caller may retry later (after a
///   short sleep) or drop the request. [`Handle::shutdown`] is never
///   refused for this;
/// - [`Error::ConnectionClosed`] when the server has stopped.
///
/// A request that was queued still reports nothing about its outcome: a
/// send to a connection that is gone, or whose write queue is full, is
/// dropped on the loop.
#[derive(Clone)]
pub struct Handle {
    pub(crate) tx: mpsc::Sender<Command>,
    pub(crate) waker: Arc<Waker>,
    pub(crate) backlog: Arc<Backlog>,
}

impl Handle {
    fn submit(&self, cmd: Command) -> Result<(), Error> {
        let weight = cmd.weight();
        let wake = self.backlog.reserve(&cmd)?;
        if self.tx.send(cmd).is_err() {
            self.backlog.release(weight);
            return Err(Error::ConnectionClosed);
        }
        // Only the first request into an empty queue wakes the loop (one
        // syscall, not one per request): the loop keeps polling without
        // sleeping while requests wait.
        if wake {
            self.waker.wake()?;
        }
        Ok(())
    }

    /// Sends a message to one connection.
    pub fn send(&self, id: ConnId, msg: Message<'static>) -> Result<(), Error> {
        self.submit(Command::Send(id, msg))
    }

    /// Sends a message to every open connection.
    pub fn broadcast(&self, msg: Message<'static>) -> Result<(), Error> {
        self.submit(Command::Broadcast(msg))
    }

    /// Closes one connection.
    pub fn close(&self, id: ConnId, code: CloseCode, reason: &str) -> Result<(), Error> {
        self.submit(Command::Close(id, code, reason.to_owned()))
    }

    /// Runs `f` on the loop thread with a [`Ctx`]. A loop pass runs the
    /// requests queued before it began; one queued from inside `f` runs in
    /// a later pass, after the sockets have been served, so a closure that
    /// queues its own next step cannot hold the loop.
    pub fn run(&self, f: impl FnOnce(&mut Ctx<'_>) + Send + 'static) -> Result<(), Error> {
        self.submit(Command::Run(Box::new(f)))
    }

    /// Starts a graceful shutdown: stop accepting, close every connection
    /// with 1001 after what is queued, wait up to `shutdown_timeout`.
    pub fn shutdown(&self) -> Result<(), Error> {
        self.submit(Command::Shutdown)
    }
}
