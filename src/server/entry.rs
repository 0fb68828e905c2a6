//! One connection's slab entry: its phase (handshake, open, draining) and
//! the moves that end it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use log::{debug, log_enabled, Level};

use crate::buffer::WriteQueue;
use crate::close::CloseCode;
use crate::handshake::{self, RequestReader};
use crate::protocol::{CloseInfo, Connection};
use crate::stream::Stream;

use super::guard::guarded;
use super::rate::Bucket;
use super::stats::REASON_CLOSED;
use super::timers::At;
use super::{Core, Ctx, Handler, HttpResponse};

/// Where a connection is in its life.
pub(super) enum Phase {
    /// Reading the request head.
    Handshake {
        reader: RequestReader,
        deadline: Instant,
        /// The TCP peer (kept here, where it costs no space: the `Open`
        /// variant is larger).
        peer: SocketAddr,
    },
    /// A WebSocket (its queue starts with the 101 response).
    Open { conn: Connection },
    /// Closed: write what is left, shut down our side, wait for the peer's
    /// EOF until `deadline`.
    Draining {
        conn: Option<Box<Connection>>,
        out: WriteQueue,
        deadline: Instant,
        shut: bool,
    },
}

/// One connection in the slab.
pub(super) struct Entry {
    pub(super) stream: Stream,
    pub(super) gen: u32,
    pub(super) phase: Phase,
    pub(super) dirty: bool,
    pub(super) dead: bool,
    /// Reads paused: the write queue is above the high water mark.
    pub(super) paused: bool,
    /// Above the high water mark since the last `on_drain`.
    pub(super) above_high: bool,
    /// The deadline of the entry's live timer item (see `timers`).
    pub(super) timer_at: Option<At>,
    /// The peer's EOF arrived after its close frame; end once flushed.
    pub(super) eof: bool,
    /// On `Core::pending_reads`: to be read next pass.
    pub(super) owed_read: bool,
    /// A callback about this connection panicked: its input no longer
    /// reaches the handler.
    pub(super) handler_failed: bool,
    /// Rooms and rate limit, allocated when first needed.
    pub(super) extra: Option<Box<Extra>>,
}

/// What only some connections need, in one box: 8 bytes in every slab
/// entry instead of 16 for two (most connections join no room and have no
/// rate limit).
#[derive(Default)]
pub(super) struct Extra {
    /// Rooms joined.
    pub(super) rooms: Vec<Arc<str>>,
    /// Token bucket, when `Config::rate_limit` is set (from the first
    /// message).
    pub(super) bucket: Option<Bucket>,
}

impl Entry {
    /// Puts entry `key` (not dead) on the `dirty` list, once: its queue is
    /// written at the end of the batch, or sooner (`flush_now`).
    pub(super) fn mark_dirty(&mut self, key: usize, dirty: &mut Vec<usize>) {
        if !self.dirty {
            self.dirty = true;
            dirty.push(key);
        }
    }
}

/// The peer's TCP side ended (EOF or error).
pub(super) fn lost<H: Handler>(core: &mut Core, handler: &mut H, key: usize, why: &str) {
    let e = &mut core.slab[key];
    match &e.phase {
        Phase::Draining { .. } => {
            e.dead = true;
            core.dead.push(key);
            core.leave_all_rooms(key);
            return;
        }
        Phase::Handshake { peer, .. } => {
            debug!("{peer}: gone before its request was complete: {why}");
            core.stats.handshake_failures[REASON_CLOSED] += 1;
        }
        Phase::Open { .. } => {}
    }
    kill(core, handler, key, why);
}

/// Ends `key` now: tells the handler if it was open, removes it at the end
/// of the batch.
pub(super) fn kill<H: Handler>(core: &mut Core, handler: &mut H, key: usize, why: &str) {
    let Some(e) = core.slab.get_mut(key) else {
        return;
    };
    if e.dead {
        return;
    }
    e.dead = true;
    core.dead.push(key);
    core.leave_all_rooms(key);
    let e = &mut core.slab[key];
    let phase = std::mem::replace(
        &mut e.phase,
        Phase::Draining {
            conn: None,
            out: WriteQueue::new(),
            deadline: core.now,
            shut: true,
        },
    );
    if let Phase::Open { mut conn, .. } = phase {
        conn.handle_transport_closed(why);
        let info = conn.close_info().cloned().unwrap_or(CloseInfo {
            code: CloseCode::ABNORMAL,
            reason: why.to_owned(),
            clean: false,
        });
        closed(core, handler, key, &info);
    }
}

/// Bookkeeping and the handler's `on_close` for a connection that was open.
pub(super) fn closed<H: Handler>(core: &mut Core, handler: &mut H, key: usize, info: &CloseInfo) {
    let id = core.id(key);
    if log_enabled!(Level::Debug) {
        // Asked only when logged: the address is not kept per connection.
        let peer = core.slab[key].stream.sock.peer_addr();
        let peer = peer.map_or_else(|_| "?".to_owned(), |a| a.to_string());
        debug!(
            "{id}: closed {} {:?} clean={} (peer {peer})",
            info.code, info.reason, info.clean
        );
    }
    core.stats.closed(info.code);
    core.open -= 1;
    core.leave_all_rooms(key);
    // The handler sees the connection as gone: sends to it now fail.
    let was_dead = core.slab[key].dead;
    core.slab[key].dead = true;
    // A panic here is only logged: the connection is ending anyway.
    if guarded("on_close", id, || {
        handler.on_close(&mut Ctx { core }, id, info)
    })
    .is_none()
    {
        core.stats.handler_panics += 1;
    }
    core.slab[key].dead = was_dead;
}

/// Queues `bytes` (an HTTP response) and moves the entry to draining.
pub(super) fn start_draining(core: &mut Core, key: usize, bytes: &[u8]) {
    // Not a WebSocket (any more): rooms joined in `on_upgrade` end here.
    core.leave_all_rooms(key);
    let mut out = WriteQueue::new();
    out.push_slice(bytes);
    let deadline = core.drain_deadline();
    let e = &mut core.slab[key];
    e.phase = Phase::Draining {
        conn: None,
        out,
        deadline,
        shut: false,
    };
    e.timer_at = None;
    core.mark_dirty(key);
    core.schedule(key);
}

/// Answers `key` with `resp` (without its body for a HEAD request) and
/// moves it to draining.
pub(super) fn respond(core: &mut Core, key: usize, resp: &HttpResponse, head_only: bool) {
    let mut bytes = Vec::new();
    handshake::write_http_response(resp.status, &resp.headers, &resp.body, &mut bytes);
    if head_only {
        // Same headers (Content-Length included), no body.
        bytes.truncate(bytes.len() - resp.body.len());
    }
    core.stats.responded(resp.status);
    start_draining(core, key, &bytes);
}

#[cfg(test)]
mod size_probe {
    /// Idle memory per connection is mostly this entry (the timer heap adds
    /// one 16-byte item): keep it small, with `tls` compiled in too (a TLS
    /// pointer beside the socket makes `Stream` 16 bytes instead of 4).
    /// mio's `TcpStream` holds a selector id in debug builds only, so those
    /// entries are larger; `cargo test --release` checks the sizes that
    /// ship.
    #[test]
    #[cfg(all(unix, target_pointer_width = "64"))]
    fn entry_stays_small() {
        let size = std::mem::size_of::<super::Entry>();
        let most = match (cfg!(feature = "tls"), cfg!(debug_assertions)) {
            (false, false) => 184,
            (true, false) => 200,
            (false, true) => 200,
            (true, true) => 208,
        };
        assert!(size <= most, "Entry grew to {size} bytes (at most {most})");
    }

    #[test]
    fn timer_items_stay_small() {
        assert_eq!(std::mem::size_of::<super::super::timers::Due>(), 16);
    }
}
