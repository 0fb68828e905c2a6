//! What one thread counted; merged into the run's totals at the end.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Instant;

use crate::hist::Hist;

/// One thread's results.
pub(crate) struct Stats {
    /// Echoes verified within the measured window, and their payload bytes.
    pub(crate) msgs: u64,
    pub(crate) bytes: u64,
    /// Every echo received, any phase (for the progress line).
    pub(crate) msgs_all: u64,
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
            run_end: Instant::now(),
            finished: Instant::now(),
        }
    }

    pub(crate) fn error(&mut self, kind: impl Into<Cow<'static, str>>) {
        self.error_count += 1;
        *self.errors.entry(kind.into()).or_default() += 1;
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
        self.run_end = self.run_end.max(o.run_end);
        self.finished = self.finished.max(o.finished);
    }
}
