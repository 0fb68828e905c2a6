//! The output side of a connection: write its queue, apply the
//! backpressure watermarks, and finish closing once everything is out.

use crate::buffer::WriteQueue;

use super::entry::{closed, lost, Phase};
use super::guard::guarded;
use super::timers::{drain_deadline, timer_stands};
use super::{Core, Ctx, Handler};

/// Writes every connection marked dirty.
pub(super) fn flush_dirty<H: Handler>(core: &mut Core, handler: &mut H) {
    while let Some(key) = core.dirty.pop() {
        flush_now(core, handler, key);
    }
}

/// Writes what `key` has queued if it is marked dirty (it may also still
/// be on the dirty list: that entry is then skipped).
pub(super) fn flush_now<H: Handler>(core: &mut Core, handler: &mut H, key: usize) {
    if let Some(e) = core.slab.get_mut(key) {
        if e.dirty {
            e.dirty = false;
            if !e.dead {
                flush_one(core, handler, key);
            }
        }
    }
    // Its place on the dirty list (usually the last: it was marked while
    // its read was processed) is stale unless it was marked again.
    if core.dirty.last() == Some(&key) && core.slab.get(key).is_none_or(|e| !e.dirty) {
        core.dirty.pop();
    }
}

fn flush_one<H: Handler>(core: &mut Core, handler: &mut H, key: usize) {
    let (high, low) = (core.config.write_buffer_high, core.config.write_buffer_low);
    let e = &mut core.slab[key];
    match &mut e.phase {
        Phase::Handshake { .. } => {
            if let Err(err) = e.stream.flush_records() {
                lost(core, handler, key, &err.to_string());
                return;
            }
        }
        Phase::Open { conn } => {
            let mut res = e.stream.flush_records().map(|_| 0);
            if res.is_ok() {
                res = conn.write_to(&mut e.stream);
            }
            match res {
                Ok(n) => core.stats.bytes_out += n as u64,
                Err(err) => {
                    lost(core, handler, key, &err.to_string());
                    return;
                }
            }
            // Hysteresis: pause above high, resume (and tell the handler)
            // at or below low.
            let buffered = conn.buffered();
            let mut drained = false;
            if buffered > high {
                if !e.paused {
                    core.stats.read_pauses += 1;
                }
                e.above_high = true;
                e.paused = true;
            } else if buffered <= low {
                if e.paused {
                    e.paused = false;
                    if !e.owed_read {
                        e.owed_read = true;
                        core.pending_reads.push((key, e.gen));
                    }
                }
                if e.above_high {
                    e.above_high = false;
                    drained = true;
                }
            }
            if conn.is_closed() {
                let info = conn.close_info().cloned().expect("closed has info");
                let drain_deadline =
                    drain_deadline(core.now, core.config.close_timeout, core.shutdown_at);
                let Phase::Open { conn } = std::mem::replace(
                    &mut e.phase,
                    Phase::Draining {
                        conn: None,
                        out: WriteQueue::new(),
                        deadline: drain_deadline,
                        shut: false,
                    },
                ) else {
                    unreachable!()
                };
                if let Phase::Draining { conn: c, .. } = &mut e.phase {
                    *c = Some(Box::new(conn));
                }
                e.timer_at = None;
                closed(core, handler, key, &info);
                core.mark_dirty(key);
                core.schedule(key);
                return;
            }
            if !drained && timer_stands(conn, e.timer_at) {
                // Nothing to schedule.
                return;
            }
            if drained {
                let id = core.id(key);
                if guarded("on_drain", id, || handler.on_drain(&mut Ctx { core }, id)).is_none() {
                    core.fail_by_panic(key);
                }
            }
        }
        Phase::Draining {
            conn, out, shut, ..
        } => {
            let mut res = e.stream.flush_records().map(|_| 0);
            if res.is_ok() {
                res = out.write_to(&mut e.stream);
            }
            if let (Ok(n), true, Some(c)) = (&res, out.is_empty(), conn.as_mut()) {
                let n = *n;
                res = c.write_to(&mut e.stream).map(|m| n + m);
            }
            match res {
                Ok(n) => core.stats.bytes_out += n as u64,
                Err(_) => {
                    lost(core, handler, key, "write failed while closing");
                    return;
                }
            }
            let empty = out.is_empty()
                && conn.as_ref().is_none_or(|c| !c.wants_write())
                && !e.stream.has_pending();
            let handshake_done = conn
                .as_ref()
                .and_then(|c| c.close_info())
                .is_some_and(|i| i.clean);
            if empty && !*shut && handshake_done && !e.stream.is_tls() {
                // Both close frames are through and the peer sends nothing
                // after its own: close the socket now (we close first, RFC
                // 6455 §7.1.1) instead of waiting for its EOF.
                e.dead = true;
                core.dead.push(key);
                return;
            }
            if empty && !*shut {
                // We close first (RFC 6455 §7.1.1); the peer's EOF, or the
                // deadline, ends the entry. (An HTTP response, or a close
                // frame not answered yet: the peer may still be sending, and
                // closing with unread input would reset the connection.)
                *shut = true;
                e.stream.shutdown_write();
                *conn = None;
            }
            if *shut && e.eof {
                // The peer's EOF came before we were done writing.
                e.dead = true;
                core.dead.push(key);
                return;
            }
        }
    }
    core.schedule(key);
}
