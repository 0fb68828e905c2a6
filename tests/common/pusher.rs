//! `Pusher`: an in-process app that streams numbered 64 KiB messages with
//! and without regard for backpressure, and `Stats` of what its sends
//! returned, for the tests of the write queue, `on_drain` and the
//! overflow policy (plain and over TLS).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wsloop::server::{ConnId, Ctx, Handler};
use wsloop::{CloseCode, CloseInfo, Config, Message, OverflowPolicy, SendStatus};

use super::frames::numbered;
use super::wait::wait_until;

/// Size of each pushed message.
pub const CHUNK: usize = 64 * 1024;
/// Largest frame header: what one queued message adds beyond its payload.
pub const HDR: usize = 14;

#[derive(Default)]
pub struct Stats {
    /// Largest `ctx.buffered(id)` seen right after a send.
    pub max_buffered: AtomicUsize,
    /// Messages accepted by `ctx.send*`.
    pub accepted: AtomicUsize,
    /// Sends that returned `SendStatus::Full`.
    pub full: AtomicUsize,
    /// Sends that returned an error.
    pub errors: AtomicUsize,
    pub drains: AtomicUsize,
    pub closes: Mutex<Vec<(ConnId, CloseInfo)>>,
    pub opened: Mutex<Vec<ConnId>>,
}

impl Stats {
    /// Waits up to 5 s until every send of a burst of `n` has returned;
    /// returns how many were accepted.
    pub fn wait_burst(&self, n: usize) -> usize {
        wait_until(Duration::from_secs(5), "the burst", || {
            self.accepted.load(Ordering::SeqCst) + self.errors.load(Ordering::SeqCst) == n
        });
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits for a burst of `n` sends past `limit` under the Close
    /// overflow policy: about `limit` of it is accepted, the rest refused,
    /// and the queue stayed bounded. Returns how many were accepted.
    pub fn expect_burst_cut_at_limit(&self, n: usize, limit: usize) -> usize {
        let accepted = self.wait_burst(n);
        eprintln!("accepted {accepted} of {n}");
        assert!(
            accepted < n && accepted >= limit / (CHUNK + HDR) - 1,
            "accepted {accepted}"
        );
        self.assert_queue_bounded(limit);
        accepted
    }

    /// The write queue never held more than `limit` plus one message.
    pub fn assert_queue_bounded(&self, limit: usize) {
        let max = self.max_buffered.load(Ordering::SeqCst);
        assert!(
            max <= limit + CHUNK + HDR,
            "buffered {max} > limit {limit} + one message"
        );
    }

    pub fn closes(&self) -> Vec<CloseInfo> {
        self.closes
            .lock()
            .unwrap()
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }
}

/// Echoes, and pushes 64 KiB binaries on request:
/// - "flood N": N messages, stopping at `Full` and resuming in `on_drain`
///   (a well-behaved streaming app);
/// - "burst N": N messages in one callback, ignoring `Full` (an app that
///   does not look at backpressure: the overflow policy applies);
/// - "bye": the server closes with 4002 "bye".
///
/// Pushed message `i` is [`Pusher::chunk`]`(i)`.
pub struct Pusher {
    stats: Arc<Stats>,
    streams: HashMap<ConnId, (usize, usize)>, // next index, end
}

impl Pusher {
    pub fn new() -> (Self, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        (
            Pusher {
                stats: stats.clone(),
                streams: HashMap::new(),
            },
            stats,
        )
    }

    pub fn chunk(i: usize) -> Vec<u8> {
        numbered(i, CHUNK)
    }

    fn send_one(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        i: usize,
    ) -> Result<SendStatus, wsloop::Error> {
        let r = ctx.send_binary(id, &Self::chunk(i));
        self.record(ctx, id, r)
    }

    /// Counts a send's outcome and the queue size after it.
    fn record(
        &mut self,
        ctx: &mut Ctx<'_>,
        id: ConnId,
        r: Result<SendStatus, wsloop::Error>,
    ) -> Result<SendStatus, wsloop::Error> {
        match &r {
            Ok(st) => {
                self.stats.accepted.fetch_add(1, Ordering::SeqCst);
                if *st == SendStatus::Full {
                    self.stats.full.fetch_add(1, Ordering::SeqCst);
                }
            }
            Err(_) => {
                self.stats.errors.fetch_add(1, Ordering::SeqCst);
            }
        }
        if let Some(b) = ctx.buffered(id) {
            self.stats.max_buffered.fetch_max(b, Ordering::SeqCst);
        }
        r
    }

    fn pump(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        let Some(&(mut next, end)) = self.streams.get(&id) else {
            return;
        };
        while next < end {
            match self.send_one(ctx, id, next) {
                Ok(st) => {
                    next += 1;
                    if st == SendStatus::Full {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        self.streams.insert(id, (next, end));
    }
}

impl Handler for Pusher {
    fn on_open(&mut self, _ctx: &mut Ctx<'_>, id: ConnId) {
        self.stats.opened.lock().unwrap().push(id);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        if let Message::Text(t) = &msg {
            if let Some(n) = t.strip_prefix("flood ") {
                self.streams.insert(id, (0, n.parse().unwrap()));
                self.pump(ctx, id);
                return;
            }
            if t == "bye" {
                ctx.close(id, CloseCode(4002), "bye");
                return;
            }
            if let Some(n) = t.strip_prefix("burst ") {
                for i in 0..n.parse().unwrap() {
                    let _ = self.send_one(ctx, id, i);
                }
                return;
            }
        }
        // Echo, ignoring Full: the server's read pause is what holds a
        // peer that sends but does not read.
        let r = ctx.send(id, msg);
        let _ = self.record(ctx, id, r);
    }

    fn on_drain(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        self.stats.drains.fetch_add(1, Ordering::SeqCst);
        self.pump(ctx, id);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, info: &CloseInfo) {
        self.streams.remove(&id);
        self.stats.closes.lock().unwrap().push((id, info.clone()));
    }
}

/// A write queue of 256 KiB high, 64 KiB low and 1 MiB limit, with
/// `overflow`.
pub fn small_queue_config(overflow: OverflowPolicy) -> Config {
    let mut c = Config::default();
    c.write_buffer_high = 256 << 10;
    c.write_buffer_low = 64 << 10;
    c.write_buffer_limit = 1 << 20;
    c.overflow = overflow;
    c
}
