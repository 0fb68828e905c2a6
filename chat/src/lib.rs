//! # wsloop-chat
//!
//! Chat rooms for a [`wsloop`] server: rooms over JSON text frames, with
//! per-room sequence numbers and replay so no message is lost across
//! reconnects. `wsloop serve --app chat` runs it; [`Chat`] is a
//! [`Handler`](wsloop::server::Handler) you can mount on your own
//! [`Server`](wsloop::server::Server).
//!
//! Protocol (one JSON object per text frame):
//!
//! ```text
//! client → server                          server → client
//! (open /ws)                               {"type":"welcome","id":ID,"broadcast_seq":LAST,"broadcast_epoch":E}
//! (open /ws?broadcast_since=N              welcome, {"type":"gap","room":"*",...} if N is
//!   &broadcast_epoch=E)                      older than kept, the broadcasts after N, then live
//! {"type":"join","room":R}, or with      {"type":"joined","room":R,"seq":LAST,"epoch":E}
//!   "since":N (and "epoch":E of joined)    {"type":"gap","room":R,"from":OLDEST}  N older than kept
//! {"type":"leave","room":R}                {"type":"left","room":R}
//! {"type":"message","room":R,"text":T}     {"type":"message","room":R,"seq":S,"from":ID,"text":T,"ts":MS}
//! {"type":"broadcast","text":T}            {"type":"broadcast","seq":S,"from":ID,"text":T,"ts":MS}
//!   (optional "ref":X on both, echoed      {"type":"error","message":M}           connection stays open
//!    in an error about that request)
//! ```
//!
//! Broadcasts are one numbered stream, kept like a room's history (in this
//! process, or through Redis in one stream shared by every server): a
//! reconnecting client catches up with `broadcast_since` on the upgrade
//! URL, answered with the welcome ([`RoomBus::open`]) so no live broadcast
//! comes before the replay. Without Redis that is in the open callback;
//! through Redis the welcome comes once Redis has said where the stream
//! stands (at once if this server is in step with it), and the
//! connection gets no broadcast before it. A second `welcome` (same id)
//! says the stream started over (a new `broadcast_epoch`, with a `gap`
//! on room `"*"` with `reset`).
//!
//! A `?name=NAME` on the upgrade URL adds `"name"` to the welcome and to
//! everything the connection sends. An `error` carries `"retry":true` when
//! nothing was done and the same request may work later (a [`Refusal`]).
//! The chat's own limits and switches (input size, broadcast on or off,
//! history per room, rooms with history) are a [`ChatConfig`]
//! ([`Chat::with_config`]).
//!
//! ```text
//!  text frame ──► Chat::on_message: parse the JSON, check limits, access, membership
//!                   │  join / leave / message / broadcast
//!                   ▼
//!                 RoomBus ── LocalBus: rooms of this loop (Ctx::join/publish) + History
//!                   │    └── RedisBus: publisher thread → Lua script in Redis (seq, stream,
//!                   │        PUBLISH); subscriber thread → the loop's Handle
//!                   ▼
//!                 Ctx::publish: one encoded frame shared by every member's write queue
//! ```
//!
//! Where the state lives:
//! - [`Chat`] speaks the protocol: it parses what clients send, checks
//!   limits and access, and hands room work to a [`RoomBus`].
//! - [`LocalBus`] keeps rooms in this process: *membership* is the
//!   library's (`Ctx::join`/`leave`/`publish`; connections leave their
//!   rooms when they close), *history and sequence numbers* are behind the
//!   [`History`] trait ([`LocalHistory`] keeps them in memory).
//! - `RedisBus` (feature `redis`, `--redis URL`) keeps history and
//!   sequence numbers in Redis, so several servers share rooms. It is
//!   asynchronous, since the loop never waits on Redis (a join is answered
//!   when Redis has said where the room stands). Member ids then start
//!   with a random per-process instance id. Messages delivered without
//!   Redis (while it is unreachable) carry `"local":true` and no `seq`.
//!
//! ```no_run
//! use wsloop::server::{Access, Server};
//! use wsloop::Config;
//! use wsloop_chat::Chat;
//!
//! let server = Server::bind("127.0.0.1:10000", Config::default(), Chat::new(Access::default()))?;
//! server.run()?;
//! # Ok::<(), wsloop::Error>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod bus;
mod config;
mod handler;
mod history;
mod hub;
#[cfg(feature = "redis")]
mod redis;
mod wire;

pub use bus::{LocalBus, Refusal, RoomBus, Welcome};
pub use config::{ChatConfig, DEFAULT_MAX_INPUT, MAX_HISTORY_PER_ROOM};
pub use handler::Chat;
pub use history::{Gap, History, LocalHistory, Replay, Since};
pub use hub::{Hub, HubBus, INBOX_BYTES as HUB_INBOX_BYTES, MAX_LOOPS};
#[cfg(feature = "redis")]
pub use redis::{RedisBus, Starter as RedisStarter, Unflushed};

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
/// Largest `since` a client may send: 2^53 - 1, the largest whole number
/// a JavaScript client holds exactly (no room gets anywhere near it).
pub const MAX_SINCE: u64 = (1 << 53) - 1;
