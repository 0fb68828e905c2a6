//! How room messages travel: the [`RoomBus`] seam between the chat's
//! protocol ([`Chat`](crate::Chat)) and where rooms, sequence numbers and
//! history live. [`LocalBus`] keeps them in this process; `RedisBus`
//! (feature `redis`) shares them with every server using one Redis.

use std::borrow::Cow;
use std::sync::Arc;

use log::debug;
use wsloop::server::{ConnId, Ctx, MetricsWriter};
use wsloop::Message;

use crate::history::{History, LocalHistory, Replay, Since};
use crate::wire::{unix_ms, Out, Refused};
use crate::{HISTORY_PER_ROOM, MAX_HISTORIES};

/// Why a bus (or the chat) did not do what a client asked; the client
/// gets it as `{"type":"error","message":M}`, with `"retry":true` when
/// nothing was done and the same request may succeed later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was wrong, for people.
    pub message: String,
    /// Nothing was done; sending the same request again later may work
    /// (a full queue, an unreachable backend).
    pub retry: bool,
}

impl Refusal {
    /// A refusal the client should not repeat as is.
    pub fn new(message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            retry: false,
        }
    }

    /// A refusal of something that may work if sent again later.
    pub fn retry(message: impl Into<String>) -> Self {
        Refusal {
            message: message.into(),
            retry: true,
        }
    }
}

impl From<Refused> for Refusal {
    fn from(r: Refused) -> Self {
        Refusal::new(r.0)
    }
}

/// Where rooms live. Every call happens on the loop thread, inside a
/// handler callback, with that callback's [`Ctx`].
pub trait RoomBus {
    /// The chat id of this server's `n`th member (unique wherever this bus
    /// delivers).
    fn member_id(&self, n: u64) -> String;

    /// Whether `id` is in `room` (or has asked to join and is being
    /// answered).
    fn is_member(&self, ctx: &Ctx<'_>, id: ConnId, room: &str) -> bool;

    /// `id` joins `room` (`member`: it is in it already) and is sent
    /// `joined`, a `gap` if some of what `since` asks for is gone, the kept
    /// messages after `since`, then live messages: each `seq` once, in
    /// order.
    fn join(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        room: &str,
        since: Option<&Since>,
        member: bool,
    ) -> Result<(), Refusal>;

    /// `id` leaves `room`; `false` if it was not in it.
    fn leave(&mut self, ctx: &mut Ctx<'_>, id: ConnId, room: &str) -> bool;

    /// Numbers, keeps and delivers a room message to every member (`Err`:
    /// nothing was delivered).
    fn publish(
        &mut self,
        ctx: &mut Ctx<'_>,
        room: &str,
        from: &str,
        name: Option<&str>,
        text: &str,
    ) -> Result<(), Refusal>;

    /// Delivers a message to every connection (`Err`: to none); a bus
    /// that numbers broadcasts gives it the stream's next `seq`.
    fn broadcast(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: &str,
        name: Option<&str>,
        text: &str,
    ) -> Result<(), Refusal>;

    /// Where the broadcast stream stands and, with `since`, the kept
    /// broadcasts after it, for a connection that is opening (answered in
    /// the same callback, so nothing live comes between the replay and
    /// it); `None` if this bus does not number broadcasts (or answers
    /// [`RoomBus::open`] later).
    fn broadcasts(&mut self, since: Option<&Since>) -> Option<Replay> {
        let _ = since;
        None
    }

    /// A connection opened (broadcast on): send it `welcome` naming where
    /// the broadcast stream stands, a `gap` (room `"*"`) if some of what
    /// `since` asks for is gone, the kept broadcasts after `since`, then
    /// live broadcasts: each `seq` once, in order. A bus that must ask
    /// elsewhere may answer later; until then no broadcast reaches the
    /// connection. The default answers at once from
    /// [`RoomBus::broadcasts`].
    fn open(&mut self, ctx: &mut Ctx<'_>, id: ConnId, welcome: &Welcome, since: Option<&Since>) {
        let replay = self.broadcasts(since);
        answer_open(ctx, id, welcome, replay);
    }

    /// `id` has closed (the library has already taken it out of its rooms).
    fn closed(&mut self, id: ConnId) {
        let _ = id;
    }

    /// The server has started a graceful shutdown (its connections close
    /// after what is queued for them).
    fn shutdown(&mut self, ctx: &mut Ctx<'_>) {
        let _ = ctx;
    }

    /// True while the bus can serve new members (a backplane's link is
    /// up): the chat's [`Handler::ready`](wsloop::server::Handler::ready).
    fn ready(&self) -> bool {
        true
    }

    /// The bus's own metrics (a backplane's link and queue).
    fn metrics(&self, out: &mut MetricsWriter) {
        let _ = out;
    }
}

/// Who a connection is, for its `welcome` (the first message it gets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Its chat id ([`RoomBus::member_id`]).
    pub id: Arc<str>,
    /// Its display name (`?name=`).
    pub name: Option<Arc<str>>,
}

impl Welcome {
    /// The `welcome` JSON; `stream` is where the broadcast stream stands
    /// (last `seq`, epoch), left out when unknown or not numbered.
    pub fn json(&self, stream: Option<(u64, &str)>) -> String {
        Out::Welcome {
            id: &self.id,
            name: self.name.as_deref(),
            broadcast_seq: stream.map(|s| s.0),
            broadcast_epoch: stream.map(|s| s.1),
        }
        .json()
    }
}

/// Hands a room message (JSON text) to every member of `room` here,
/// encoding the frame once for all of them. The one way room messages
/// reach connections.
pub(crate) fn deliver(ctx: &mut Ctx<'_>, room: &str, json: &str) -> usize {
    ctx.publish(room, &Message::Text(Cow::Borrowed(json)))
}

/// Sends one server message to one connection.
/// Answers a join from `r`: `joined` naming where the room stands, then
/// its catch-up.
pub(crate) fn answer_join(ctx: &mut Ctx<'_>, id: ConnId, room: &str, r: Replay) {
    send(
        ctx,
        id,
        &Out::Joined {
            room,
            seq: r.last,
            epoch: &r.epoch,
            local: false,
        },
    );
    catch_up(ctx, id, room, r);
}

/// Answers an open: `welcome` naming where the broadcast stream stands
/// (nothing without `replay`: the bus does not number broadcasts), then
/// the catch-up of broadcasts (room `"*"`).
pub(crate) fn answer_open(
    ctx: &mut Ctx<'_>,
    id: ConnId,
    welcome: &Welcome,
    replay: Option<Replay>,
) {
    let stream = replay.as_ref().map(|r| (r.last, &*r.epoch));
    let _ = ctx.send(id, Message::Text(Cow::Owned(welcome.json(stream))));
    if let Some(r) = replay {
        catch_up(ctx, id, "*", r);
    }
}

/// A `gap` in `room` if some of what was asked for is gone, then the kept
/// messages, as sent live.
fn catch_up(ctx: &mut Ctx<'_>, id: ConnId, room: &str, r: Replay) {
    if let Some(g) = r.gap {
        send(
            ctx,
            id,
            &Out::Gap {
                room,
                from: g.from,
                reset: g.reset,
            },
        );
    }
    for m in r.messages {
        let _ = ctx.send_text(id, &m);
    }
}

pub(crate) fn send(ctx: &mut Ctx<'_>, id: ConnId, out: &Out<'_>) {
    // A closed or overflowing connection is the library's business (its
    // overflow policy); nothing more to do here.
    let _ = ctx.send(id, Message::Text(Cow::Owned(out.json())));
}

/// The history key (and, with Redis, the stream's name in the loop-side
/// state and the library room of its answered members) of the broadcast
/// stream: no room can have this name (room names have no control
/// characters), so it never meets a room's.
pub(crate) const BROADCASTS: &str = "\u{0}broadcast";

/// Rooms in this process: membership is the library's (`Ctx::join`,
/// `publish`), history and sequence numbers are `H`'s.
pub struct LocalBus<H: History = LocalHistory> {
    history: H,
}

impl LocalBus<LocalHistory> {
    /// In-memory history with the default limits ([`HISTORY_PER_ROOM`]
    /// messages per room, [`MAX_HISTORIES`] rooms).
    pub fn new() -> Self {
        LocalBus::with_history(LocalHistory::new(HISTORY_PER_ROOM, MAX_HISTORIES))
    }
}

impl Default for LocalBus<LocalHistory> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: History> LocalBus<H> {
    /// Rooms whose history `history` keeps.
    pub fn with_history(history: H) -> Self {
        LocalBus { history }
    }
}

impl<H: History> RoomBus for LocalBus<H> {
    fn member_id(&self, n: u64) -> String {
        format!("u{n}")
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
        if !member {
            ctx.join(id, room);
        }
        // Replay and join happen in this one callback: nothing can be
        // published in between, so no gap and no duplicate.
        let r = self.history.replay(room, since);
        answer_join(ctx, id, room, r);
        Ok(())
    }

    fn leave(&mut self, ctx: &mut Ctx<'_>, id: ConnId, room: &str) -> bool {
        ctx.leave(id, room)
    }

    fn publish(
        &mut self,
        ctx: &mut Ctx<'_>,
        room: &str,
        from: &str,
        name: Option<&str>,
        text: &str,
    ) -> Result<(), Refusal> {
        let (seq, json) = self.history.append(room, &mut |seq| {
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
        let n = deliver(ctx, room, &json);
        debug!("chat: {room}#{seq} from {from} to {n}");
        Ok(())
    }

    fn broadcast(
        &mut self,
        ctx: &mut Ctx<'_>,
        from: &str,
        name: Option<&str>,
        text: &str,
    ) -> Result<(), Refusal> {
        let (seq, json) = self.history.append(BROADCASTS, &mut |seq| {
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
        let n = ctx.broadcast_all(&Message::Text(Cow::Borrowed(&*json)));
        debug!("chat: broadcast #{seq} from {from} to {n}");
        Ok(())
    }

    fn broadcasts(&mut self, since: Option<&Since>) -> Option<Replay> {
        Some(self.history.replay(BROADCASTS, since))
    }
}
