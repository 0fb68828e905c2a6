//! What one thread counted; merged into the run's totals at the end.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::hist::Hist;
use crate::series::Sec;

/// One thread's results.
pub(crate) struct Stats {
    /// Echoes verified within the measured window, and their payload bytes
    /// (chat: deliveries and their text bytes). Closed loop: received in
    /// the window; open loop and chat: scheduled in the window.
    pub(crate) msgs: u64,
    pub(crate) bytes: u64,
    /// Every echo (chat: delivery) received, any phase.
    pub(crate) msgs_all: u64,
    /// Round trips (chat: publish to delivery) of `msgs`.
    pub(crate) rtt: Hist,
    pub(crate) handshake: Hist,
    pub(crate) opened: u64,
    /// Connections that were open and then ended.
    pub(crate) ended_open: u64,
    /// Connections that never opened.
    pub(crate) failed: u64,
    pub(crate) clean_closes: u64,
    pub(crate) error_count: u64,
    pub(crate) errors: BTreeMap<Cow<'static, str>, u64>,
    /// Messages (chat: publishes) queued, any phase.
    pub(crate) sent: u64,
    /// Open loop: how late each send was against its schedule.
    pub(crate) lag: Hist,
    /// Open loop: messages due that were never sent (their connection
    /// ended, or it was still behind when the run ended).
    pub(crate) unsent: u64,
    /// Open loop: messages sent whose echo had not come when the run ended.
    pub(crate) unanswered: u64,
    /// Chat: room sequence numbers skipped and never delivered, deliveries
    /// seen twice, deliveries that came after a later one, and messages
    /// published but not delivered to a member by the end (gaps excluded).
    pub(crate) gaps: u64,
    pub(crate) duplicates: u64,
    pub(crate) reorders: u64,
    pub(crate) undelivered: u64,
    /// When the last message counted in `msgs` came (open loop: one due
    /// in the window may come well after it).
    pub(crate) last_measured: Option<Instant>,
    /// This second's counts (see `series`).
    pub(crate) sec: Sec,
    /// When the warmup/measure (or hold) loop ended: the close phase began.
    pub(crate) run_end: Instant,
    pub(crate) finished: Instant,
}

impl Stats {
    pub(crate) fn new() -> Self {
        Stats {
            msgs: 0,
            bytes: 0,
            msgs_all: 0,
            rtt: Hist::new(),
            handshake: Hist::new(),
            opened: 0,
            ended_open: 0,
            failed: 0,
            clean_closes: 0,
            error_count: 0,
            errors: BTreeMap::new(),
            sent: 0,
            lag: Hist::new(),
            unsent: 0,
            unanswered: 0,
            gaps: 0,
            duplicates: 0,
            reorders: 0,
            undelivered: 0,
            last_measured: None,
            sec: Sec::new(),
            run_end: Instant::now(),
            finished: Instant::now(),
        }
    }

    pub(crate) fn error(&mut self, kind: impl Into<Cow<'static, str>>) {
        self.errors_n(kind, 1);
    }

    /// Counts `n` errors of one kind.
    pub(crate) fn errors_n(&mut self, kind: impl Into<Cow<'static, str>>, n: u64) {
        if n == 0 {
            return;
        }
        self.error_count += n;
        self.sec.errors += n;
        *self.errors.entry(kind.into()).or_default() += n;
    }

    /// A message sent `lag` after its scheduled time (open loop).
    pub(crate) fn sent_late(&mut self, lag: Duration) {
        self.sent += 1;
        self.sec.sent += 1;
        self.lag.record(lag);
        let ns = u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX);
        self.sec.lag_max = self.sec.lag_max.max(ns);
    }

    /// An echo or delivery of `bytes` payload bytes that came at `now`
    /// for a message sent (open loop: due) at `at`; counted in the summary
    /// if `measured`.
    pub(crate) fn received(&mut self, now: Instant, at: Instant, bytes: usize, measured: bool) {
        let d = now.saturating_duration_since(at);
        self.sec.received += 1;
        self.sec.lat.record(d);
        if measured {
            self.msgs += 1;
            self.bytes += bytes as u64;
            self.rtt.record(d);
            self.last_measured = self.last_measured.max(Some(now));
        }
    }

    pub(crate) fn merge(&mut self, o: Stats) {
        self.msgs += o.msgs;
        self.bytes += o.bytes;
        self.msgs_all += o.msgs_all;
        self.rtt.merge(&o.rtt);
        self.handshake.merge(&o.handshake);
        self.opened += o.opened;
        self.ended_open += o.ended_open;
        self.failed += o.failed;
        self.clean_closes += o.clean_closes;
        self.error_count += o.error_count;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.sent += o.sent;
        self.lag.merge(&o.lag);
        self.unsent += o.unsent;
        self.unanswered += o.unanswered;
        self.gaps += o.gaps;
        self.duplicates += o.duplicates;
        self.reorders += o.reorders;
        self.undelivered += o.undelivered;
        self.last_measured = self.last_measured.max(o.last_measured);
        self.run_end = self.run_end.max(o.run_end);
        self.finished = self.finished.max(o.finished);
    }
}
