//! `wsloop serve --app chat`: rooms over JSON text frames, with per-room
//! sequence numbers and replay so no message is lost across reconnects.
//!
//! Protocol (one JSON object per text frame):
//!
//! ```text
//! client → server                          server → client
//! {"type":"join","room":R}                 {"type":"welcome","id":ID}             on open
//! {"type":"join","room":R,"since":N}       {"type":"joined","room":R,"seq":LAST,"epoch":E}
//!   (optional "epoch":E from "joined")     {"type":"gap","room":R,"from":OLDEST}  N older than kept
//! {"type":"leave","room":R}                {"type":"left","room":R}
//! {"type":"message","room":R,"text":T}     {"type":"message","room":R,"seq":S,"from":ID,"text":T,"ts":MS}
//! {"type":"broadcast","text":T}            {"type":"broadcast","from":ID,"text":T,"ts":MS}
//!                                          {"type":"error","message":M}           connection stays open
//! ```
//!
//! A `?name=NAME` on the upgrade URL adds `"name"` to the welcome and to
//! everything the connection sends.
//!
//! Where the state lives:
//! - Room *membership* is the library's (`Ctx::join`/`leave`/`publish`;
//!   connections leave their rooms when they close).
//! - Room *history and sequence numbers* are behind the [`History`] trait;
//!   [`LocalHistory`] keeps them in memory for one process.
//! - Every room message goes through [`Chat::publish`] (assign a seq, keep
//!   it, hand it out) and reaches members through [`deliver`].
//! - With the Redis backplane (feature `redis`, `--redis URL`,
//!   `backplane.rs`), history and sequence numbers live in Redis instead,
//!   and joins, room messages and broadcasts go through the [`Backplane`]:
//!   asynchronous, since the loop never waits on Redis (a join is answered
//!   when Redis has said where the room stands). Connection ids then start
//!   with a random per-process instance id. Messages delivered without
//!   Redis (while it is unreachable) carry `"local":true` and no `seq`.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use log::debug;
use serde::Serialize;
use serde_json::Value;
use wsloop::handshake::Request;
use wsloop::server::{ConnId, Ctx, Handler, HttpResponse, Upgrade};
use wsloop::Message;

use crate::serve::{http_common, Access};

#[cfg(feature = "redis")]
pub use crate::backplane::Backplane;
#[cfg(feature = "redis")]
use crate::backplane::RoomMessage;

/// Stands in for the backplane when the `redis` feature is off (never
/// constructed).
#[cfg(not(feature = "redis"))]
pub enum Backplane {}

#[cfg(not(feature = "redis"))]
#[allow(dead_code)]
pub struct RoomMessage {
    pub room: Arc<str>,
    pub head: String,
    pub tail: String,
    pub local: String,
}

#[cfg(not(feature = "redis"))]
impl Backplane {
    fn instance(&self) -> &str {
        match *self {}
    }
    fn is_member(&self, _: ConnId, _: &str) -> bool {
        match *self {}
    }
    fn join(&self, _: &mut Ctx<'_>, _: ConnId, _: &str, _: Option<&Since>) {
        match *self {}
    }
    fn leave(&self, _: ConnId, _: &str) -> bool {
        match *self {}
    }
    fn closed(&self, _: ConnId) {
        match *self {}
    }
    fn publish(&self, _: &mut Ctx<'_>, _: RoomMessage) {
        match *self {}
    }
    fn broadcast(&self, _: &mut Ctx<'_>, _: String, _: String) {
        match *self {}
    }
}

/// Messages kept per room for replay.
pub const HISTORY_PER_ROOM: usize = 1000;
/// Rooms whose history is kept; past this the least recently used room's
/// history is dropped (a later `since` for it gets a reset gap).
pub const MAX_HISTORIES: usize = 1024;
/// Bytes of kept messages across all rooms (local history): past this the
/// oldest messages of the least recently used rooms are dropped, so room
/// history cannot grow past 64 MiB whatever clients do.
pub const HISTORY_MAX_BYTES: usize = 64 << 20;
/// Longest `text`, in bytes (bounds history memory: 1,000 × 4 KiB a room).
pub const MAX_TEXT: usize = 4096;
/// Longest room name, in bytes.
pub const MAX_ROOM: usize = 64;
/// Longest display name, in characters.
pub const MAX_NAME: usize = 32;
/// Most rooms one connection may be in.
pub const MAX_ROOMS_PER_CONN: usize = 32;

const PAGE: &str = include_str!("chat.html");

// ------------------------------------------------------------------ history

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

// ------------------------------------------------------------- wire format

/// What the server sends. Field order is as declared. `local` (only with
/// the backplane) marks what was served without Redis.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub(crate) enum Out<'a> {
    Welcome {
        id: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
    },
    Joined {
        room: &'a str,
        seq: u64,
        epoch: &'a str,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        local: bool,
    },
    Left {
        room: &'a str,
    },
    Gap {
        room: &'a str,
        from: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        reset: bool,
    },
    Message {
        room: &'a str,
        /// Absent only on a message delivered without Redis.
        #[serde(skip_serializing_if = "Option::is_none")]
        seq: Option<u64>,
        from: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        text: &'a str,
        /// Server time, milliseconds since the Unix epoch.
        ts: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        local: bool,
    },
    Broadcast {
        from: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        text: &'a str,
        ts: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        local: bool,
    },
    Error {
        message: &'a str,
    },
}

impl Out<'_> {
    pub(crate) fn json(&self) -> String {
        serde_json::to_string(self).expect("plain structs serialize")
    }
}

/// A client message that cannot be served; sent back as `{"type":"error"}`.
struct Refused(String);

fn field<'v>(obj: &'v serde_json::Map<String, Value>, name: &str) -> Result<&'v Value, Refused> {
    obj.get(name)
        .ok_or_else(|| Refused(format!("missing field \"{name}\"")))
}

fn str_field<'v>(obj: &'v serde_json::Map<String, Value>, name: &str) -> Result<&'v str, Refused> {
    field(obj, name)?
        .as_str()
        .ok_or_else(|| Refused(format!("field \"{name}\" must be a string")))
}

fn room_field(obj: &serde_json::Map<String, Value>) -> Result<&str, Refused> {
    let room = str_field(obj, "room")?;
    if room.is_empty() || room.len() > MAX_ROOM || room.chars().any(char::is_control) {
        return Err(Refused(format!(
            "invalid room name: 1 to {MAX_ROOM} bytes, no control characters"
        )));
    }
    Ok(room)
}

fn text_field(obj: &serde_json::Map<String, Value>) -> Result<&str, Refused> {
    let text = str_field(obj, "text")?;
    if text.len() > MAX_TEXT {
        return Err(Refused(format!(
            "text too long: {} bytes, at most {MAX_TEXT}",
            text.len()
        )));
    }
    Ok(text)
}

// -------------------------------------------------------------------- app

struct Member {
    id: Arc<str>,
    name: Option<Arc<str>>,
    rooms: usize,
}

/// The chat application.
pub struct Chat<H: History = LocalHistory> {
    access: Access,
    /// Unused while a backplane is on (history is in Redis then).
    history: H,
    members: HashMap<ConnId, Member>,
    next_id: u64,
    /// The Redis backplane, if on: rooms, history and delivery go through it.
    bus: Option<Backplane>,
}

impl Chat<LocalHistory> {
    /// A chat with in-memory history.
    pub fn new(access: Access) -> Self {
        Chat::with_history(access, LocalHistory::new(HISTORY_PER_ROOM, MAX_HISTORIES))
    }

    /// A chat whose rooms are shared through the Redis backplane.
    #[cfg(feature = "redis")]
    pub fn with_backplane(access: Access, bus: Backplane) -> Self {
        let mut chat = Chat::new(access);
        chat.bus = Some(bus);
        chat
    }
}

/// The JSON of a room message, split around its `seq` for the backplane
/// (which numbers it in Redis), plus its form for local-only delivery.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
fn room_message(room: &str, from: &str, name: Option<&str>, text: &str) -> RoomMessage {
    let ts = unix_ms();
    let msg = |seq, local| Out::Message {
        room,
        seq,
        from,
        name,
        text,
        ts,
        local,
    };
    let json = msg(Some(0), false).json();
    // `,"seq":` right before an unescaped quote can only be the field
    // (inside a JSON string a quote is escaped), and it precedes `text`.
    let at = json
        .find(",\"seq\":0,")
        .expect("serialized message has a seq field");
    RoomMessage {
        room: room.into(),
        head: json[..at + 7].to_owned(),
        tail: json[at + 8..].to_owned(),
        local: msg(None, true).json(),
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Hands a room message (JSON text) to every member of `room` here,
/// encoding the frame once for all of them. The one way room messages
/// reach connections.
pub fn deliver(ctx: &mut Ctx<'_>, room: &str, json: &str) -> usize {
    ctx.publish(room, &Message::Text(Cow::Borrowed(json)))
}

fn send(ctx: &mut Ctx<'_>, id: ConnId, out: &Out<'_>) {
    // A closed or overflowing connection is the library's business (its
    // overflow policy); nothing more to do here.
    let _ = ctx.send(id, Message::Text(Cow::Owned(out.json())));
}

impl<H: History> Chat<H> {
    /// A chat keeping room history in `history`.
    pub fn with_history(access: Access, history: H) -> Self {
        Chat {
            access,
            history,
            members: HashMap::new(),
            next_id: 0,
            bus: None,
        }
    }

    /// Publishes `text` from `member` to `room`: the history assigns the
    /// sequence number and keeps it, then every member gets it. Every room
    /// message goes through here. With the backplane, Redis numbers and
    /// keeps it, and members on every instance get it from the
    /// subscription.
    fn publish(
        &mut self,
        ctx: &mut Ctx<'_>,
        room: &str,
        from: &str,
        name: Option<&str>,
        text: &str,
    ) {
        if let Some(bus) = &self.bus {
            bus.publish(ctx, room_message(room, from, name, text));
            return;
        }
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
    }

    fn handle(&mut self, ctx: &mut Ctx<'_>, id: ConnId, text: &str) -> Result<(), Refused> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| Refused(format!("invalid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| Refused("expected a JSON object".into()))?;
        let kind = str_field(obj, "type")?;
        let Some(me) = self.members.get(&id) else {
            return Ok(());
        };
        let (from, name) = (me.id.clone(), me.name.clone());
        match kind {
            "join" => {
                let room = room_field(obj)?;
                let since = match obj.get("since") {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(Since {
                        seq: v.as_u64().ok_or_else(|| {
                            Refused("field \"since\" must be a whole number".into())
                        })?,
                        epoch: match obj.get("epoch") {
                            None | Some(Value::Null) => None,
                            Some(e) => Some(
                                e.as_str()
                                    .ok_or_else(|| {
                                        Refused("field \"epoch\" must be a string".into())
                                    })?
                                    .to_owned(),
                            ),
                        },
                    }),
                };
                let member = ctx.in_room(id, room)
                    || self.bus.as_ref().is_some_and(|b| b.is_member(id, room));
                if !member {
                    let me = self.members.get_mut(&id).expect("checked above");
                    if me.rooms >= MAX_ROOMS_PER_CONN {
                        return Err(Refused(format!(
                            "too many rooms: at most {MAX_ROOMS_PER_CONN} per connection"
                        )));
                    }
                    me.rooms += 1;
                }
                if let Some(bus) = &self.bus {
                    // Answered when Redis has said where the room stands:
                    // joined, gap, replay, then live, in that order.
                    bus.join(ctx, id, room, since.as_ref());
                    return Ok(());
                }
                if !member {
                    ctx.join(id, room);
                }
                // Replay and join happen in this one callback: nothing can
                // be published in between, so no gap and no duplicate.
                let r = self.history.replay(room, since.as_ref());
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
            "leave" => {
                let room = room_field(obj)?;
                let left = ctx.leave(id, room);
                let left_bus = self.bus.as_ref().is_some_and(|b| b.leave(id, room));
                if !(left || left_bus) {
                    return Err(Refused(format!("not in room \"{room}\"")));
                }
                if let Some(me) = self.members.get_mut(&id) {
                    me.rooms = me.rooms.saturating_sub(1);
                }
                send(ctx, id, &Out::Left { room });
            }
            "message" => {
                let room = room_field(obj)?;
                let text = text_field(obj)?;
                let member = ctx.in_room(id, room)
                    || self.bus.as_ref().is_some_and(|b| b.is_member(id, room));
                if !member {
                    return Err(Refused(format!("not in room \"{room}\": join it first")));
                }
                self.publish(ctx, room, &from, name.as_deref(), text);
            }
            "broadcast" => {
                let text = text_field(obj)?;
                let ts = unix_ms();
                let out = |local| {
                    Out::Broadcast {
                        from: &from,
                        name: name.as_deref(),
                        text,
                        ts,
                        local,
                    }
                    .json()
                };
                match &self.bus {
                    Some(bus) => bus.broadcast(ctx, out(false), out(true)),
                    None => {
                        ctx.broadcast_all(&Message::Text(Cow::Owned(out(false))));
                    }
                }
            }
            other => {
                let mut shown: String = other.chars().take(40).collect();
                if shown.len() < other.len() {
                    shown.push('…');
                }
                return Err(Refused(format!(
                    "unknown type \"{shown}\": expected join, leave, message or broadcast"
                )));
            }
        }
        Ok(())
    }
}

/// Decodes `%XX` escapes and `+` (a query string value).
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A display name from the upgrade's `?name=`: trimmed, control characters
/// removed, at most [`MAX_NAME`] characters; `None` if nothing is left.
fn display_name(req: &Request) -> Option<Arc<str>> {
    let raw = percent_decode(req.query_param("name")?)?;
    let name: String = raw
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME)
        .collect();
    (!name.is_empty()).then(|| name.into())
}

impl<H: History> Handler for Chat<H> {
    fn on_upgrade(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, req: &Request) -> Upgrade {
        if req.path() != "/ws" {
            return Upgrade::reject(404, "the chat WebSocket endpoint is /ws");
        }
        if let Some(no) = self.access.check(req) {
            return no;
        }
        self.next_id += 1;
        let member_id = match &self.bus {
            // Unique across instances sharing the backplane.
            Some(bus) => format!("{}-u{}", bus.instance(), self.next_id),
            None => format!("u{}", self.next_id),
        };
        self.members.insert(
            id,
            Member {
                id: member_id.into(),
                name: display_name(req),
                rooms: 0,
            },
        );
        Upgrade::accept()
    }

    fn on_http(&mut self, req: &Request) -> HttpResponse {
        match (req.method.as_str(), req.path()) {
            ("GET" | "HEAD", "/" | "/index.html") => {
                let mut r = HttpResponse::with_type(200, "text/html; charset=utf-8", PAGE);
                r.headers.extend([
                    ("Cache-Control".into(), "no-store".into()),
                    ("X-Content-Type-Options".into(), "nosniff".into()),
                    (
                        "Content-Security-Policy".into(),
                        "default-src 'none'; script-src 'unsafe-inline'; \
                         style-src 'unsafe-inline'; connect-src 'self' ws: wss:; \
                         img-src 'self' data:; base-uri 'none'; form-action 'none'"
                            .into(),
                    ),
                ]);
                r
            }
            (_, "/healthz" | "/ws") => http_common(req),
            _ => HttpResponse::text(404, "not found: the chat is at /, its WebSocket at /ws\n"),
        }
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        if let Some(m) = self.members.get(&id) {
            let json = Out::Welcome {
                id: &m.id,
                name: m.name.as_deref(),
            }
            .json();
            let _ = ctx.send(id, Message::Text(Cow::Owned(json)));
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        let result = match &msg {
            Message::Text(t) => self.handle(ctx, id, t),
            Message::Binary(_) => Err(Refused(
                "binary messages are not understood: send JSON in text messages".into(),
            )),
        };
        if let Err(Refused(m)) = result {
            send(ctx, id, &Out::Error { message: &m });
        }
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, _info: &wsloop::CloseInfo) {
        // The library has already taken the connection out of its rooms.
        self.members.remove(&id);
        if let Some(bus) = &self.bus {
            bus.closed(id);
        }
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

    #[test]
    fn wire_format() {
        let m = Out::Message {
            room: "r",
            seq: Some(3),
            from: "u1",
            name: None,
            text: "hi \"there\"",
            ts: 17,
            local: false,
        };
        assert_eq!(
            m.json(),
            r#"{"type":"message","room":"r","seq":3,"from":"u1","text":"hi \"there\"","ts":17}"#
        );
        assert_eq!(
            Out::Gap {
                room: "r",
                from: 5,
                reset: false
            }
            .json(),
            r#"{"type":"gap","room":"r","from":5}"#
        );
        assert_eq!(
            Out::Welcome {
                id: "u2",
                name: Some("Ann")
            }
            .json(),
            r#"{"type":"welcome","id":"u2","name":"Ann"}"#
        );
    }

    #[test]
    fn room_message_splits_around_seq() {
        // Room and text that contain what the split looks for.
        let room = r#"a,"seq":0,b"#;
        let text = r#"x,"seq":0,"from":"y"#;
        let m = room_message(room, "u1", Some("N"), text);
        let numbered = format!("{}42{}", m.head, m.tail);
        let v: Value = serde_json::from_str(&numbered).unwrap();
        assert_eq!(v["seq"], 42);
        assert_eq!(
            (v["room"].as_str(), v["text"].as_str()),
            (Some(room), Some(text))
        );
        assert!(numbered.starts_with(r#"{"type":"message","room":"#));
        assert!(v.get("local").is_none());
        let v: Value = serde_json::from_str(&m.local).unwrap();
        assert_eq!((v["local"].as_bool(), v.get("seq")), (Some(true), None));
        assert_eq!(
            (v["text"].as_str(), v["name"].as_str()),
            (Some(text), Some("N"))
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("%G1"), None);
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%FF"), None);
    }
}
