//! What the soak's clients count, and the last errors they saw.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Shared by every client thread.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) connects: AtomicU64,
    pub(super) connect_failures: AtomicU64,
    pub(super) clean_closes: AtomicU64,
    pub(super) drops: AtomicU64,
    pub(super) sent: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) policy_closes: AtomicU64,
    pub(super) slow_rounds_intact: AtomicU64,
    pub(super) firehose_seen: AtomicU64,
    pub(super) errors: AtomicU64,
    pub(super) last_errors: Mutex<VecDeque<String>>,
}

impl Counters {
    pub(super) fn error(&self, what: String) {
        self.errors.fetch_add(1, Relaxed);
        eprintln!("soak error: {what}");
        let mut l = self.last_errors.lock().unwrap();
        l.push_back(what);
        if l.len() > 20 {
            l.pop_front();
        }
    }

    pub(super) fn line(&self, t: Duration) -> String {
        format!(
            "t={:>5}s connects={} connect_failures={} clean_closes={} drops={} sent={} received={} \
             firehose_seen={} policy_closes={} slow_rounds_intact={} errors={}",
            t.as_secs(),
            self.connects.load(Relaxed),
            self.connect_failures.load(Relaxed),
            self.clean_closes.load(Relaxed),
            self.drops.load(Relaxed),
            self.sent.load(Relaxed),
            self.received.load(Relaxed),
            self.firehose_seen.load(Relaxed),
            self.policy_closes.load(Relaxed),
            self.slow_rounds_intact.load(Relaxed),
            self.errors.load(Relaxed),
        )
    }
}
