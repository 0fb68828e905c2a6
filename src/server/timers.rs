//! Timers: one binary heap of (deadline, key, generation) with lazy
//! deletion. An entry keeps at most one live timer, its earliest deadline
//! (`Entry::timer_at`); heap items that do not match it are stale and
//! skipped. Stale items of closed connections would otherwise stay until
//! their deadline (minutes, under churn hundreds of thousands of them): the
//! heap is rebuilt without them once they outnumber the live ones.

use std::cmp::Reverse;
use std::num::NonZeroU64;
use std::time::{Duration, Instant};

use log::{debug, info};

use super::entry::{kill, Phase};
use super::read::refuse_handshake;
use super::{Core, Handler, Server};
use crate::protocol::Connection;

/// A timer heap item: a deadline ([`At`]), the slab key (at most 24 bits,
/// as in a `ConnId`) and the generation. 16 bytes instead of the 32 of
/// (Instant, usize, u32): there is one per idle connection.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Due {
    at: At,
    key: u32,
    gen: u32,
}

/// A deadline in nanoseconds since `Core::epoch` (at least 1, so that
/// `Option<At>`, `Entry::timer_at`, is 8 bytes instead of an
/// `Option<Instant>`'s 16; u64 nanoseconds last 584 years).
pub(super) type At = NonZeroU64;

impl<H: Handler> Server<H> {
    pub(super) fn next_timeout(&mut self) -> Option<Duration> {
        if !self.core.pending_reads.is_empty()
            || !self.core.dirty.is_empty()
            || self.core.handle.backlog.pending()
            || (self.accept_more && self.accept_resume.is_none())
        {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let first = self.core.timers.peek().map(|Reverse(d)| d.at);
        let mut next = first.map(|at| self.core.instant(at));
        for extra in [self.accept_resume, self.core.shutdown_at, self.publish_at()] {
            next = match (next, extra) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        // Round up to a whole millisecond so the loop does not spin on a
        // deadline a few microseconds away.
        next.map(|t| t.saturating_duration_since(now) + Duration::from_millis(1))
    }

    pub(super) fn fire_timers(&mut self) {
        let now = self.core.now;
        while let Some(Reverse(due)) = self.core.timers.peek().copied() {
            let (t, key, gen) = (self.core.instant(due.at), due.key as usize, due.gen);
            if t > now {
                break;
            }
            self.core.timers.pop();
            let Some(e) = self.core.slab.get_mut(key) else {
                continue;
            };
            if e.gen != gen || e.dead || e.timer_at != Some(due.at) {
                continue; // stale
            }
            e.timer_at = None;
            match &mut e.phase {
                Phase::Handshake { deadline, peer, .. } => {
                    if now >= *deadline {
                        info!("{peer}: no complete request in time, answered 408");
                        refuse_handshake(&mut self.core, key, crate::HandshakeError::Timeout);
                    }
                }
                Phase::Open { conn, .. } => {
                    let was_open = conn.is_open();
                    conn.handle_timeout(now);
                    // From open, only a late pong ends the connection
                    // at once (idle time starts a close handshake).
                    if was_open && conn.is_closed() {
                        self.core.stats.ping_timeouts += 1;
                        debug!("{}: no pong in time", self.core.id(key));
                    }
                }
                Phase::Draining { deadline, .. } => {
                    if now >= *deadline {
                        kill(&mut self.core, &mut self.handler, key, "drain timeout");
                        continue;
                    }
                }
            }
            self.core.mark_dirty(key);
        }
    }
}

/// An open connection's timer still comes first: one is set, and no
/// deadline may have moved earlier since (a later one leaves the timer to
/// fire early, find nothing due and ask again). With no timer set the
/// connection is asked anyway: that costs a call per flush only where no
/// deadline is configured, and a path that drops the timer without
/// `handle_timeout` cannot leave the connection without one.
pub(super) fn timer_stands(conn: &Connection, timer_at: Option<At>) -> bool {
    timer_at.is_some() && !conn.timeout_moved()
}

/// `t` as an [`At`]. Deadlines come from `now`, never before the epoch;
/// one at the epoch itself becomes 1 ns after it.
fn at(epoch: Instant, t: Instant) -> At {
    let ns = t.saturating_duration_since(epoch).as_nanos();
    At::new(u64::try_from(ns).unwrap_or(u64::MAX)).unwrap_or(At::MIN)
}

/// See [`Core::drain_deadline`] (for a caller that holds an entry).
pub(super) fn drain_deadline(
    now: Instant,
    close_timeout: Duration,
    shutdown_at: Option<Instant>,
) -> Instant {
    let d = now + close_timeout;
    shutdown_at.map_or(d, |s| s.max(d))
}

impl Core {
    /// How long a closed connection may take to flush and see the peer's
    /// EOF: the close timeout, or the rest of a graceful shutdown.
    pub(super) fn drain_deadline(&self) -> Instant {
        drain_deadline(self.now, self.config.close_timeout, self.shutdown_at)
    }

    /// Most heap items beyond twice the entries: past it the heap is rebuilt
    /// with only its live items. Each rebuild is paid for by at least as
    /// many pushes, so it costs O(1) per push.
    const TIMER_SLACK: usize = 64;

    /// Drops stale items once they could outnumber the live ones.
    pub(super) fn compact_timers(&mut self) {
        if self.timers.len() <= 2 * self.slab.len() + Self::TIMER_SLACK {
            return;
        }
        let slab = &self.slab;
        self.timers.retain(|Reverse(d)| {
            slab.get(d.key as usize)
                .is_some_and(|e| e.gen == d.gen && !e.dead && e.timer_at == Some(d.at))
        });
    }

    /// The deadline `at` nanoseconds after the epoch. The last one is
    /// remembered: each pass asks for the heap's first item twice (is it
    /// due? how long to sleep?), and that item stays the same for many
    /// passes.
    fn instant(&mut self, at: At) -> Instant {
        if self.last_due.0 != at.get() {
            self.last_due = (at.get(), self.epoch + Duration::from_nanos(at.get()));
        }
        self.last_due.1
    }

    /// Makes sure a timer is set for the entry's next deadline.
    pub(super) fn schedule(&mut self, key: usize) {
        let Some(e) = self.slab.get_mut(key) else {
            return;
        };
        let want = match &mut e.phase {
            Phase::Handshake { deadline, .. } => Some(*deadline),
            Phase::Open { conn, .. } => {
                if timer_stands(conn, e.timer_at) {
                    return;
                }
                conn.take_timeout_moved();
                conn.poll_timeout()
            }
            Phase::Draining { deadline, .. } => Some(*deadline),
        };
        if let Some(t) = want {
            let at = at(self.epoch, t);
            if e.timer_at.is_none_or(|cur| at < cur) {
                e.timer_at = Some(at);
                self.timers.push(Reverse(Due {
                    at,
                    // Keys fit a `ConnId`'s 24 bits.
                    key: key as u32,
                    gen: e.gen,
                }));
            }
        }
    }
}
