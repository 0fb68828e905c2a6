//! The run second by second: what each second of the load sent and
//! received and how long deliveries took, for `--json` ("series") and
//! `--progress`.
//!
//! Each thread counts its current second in a [`Sec`] and hands it over
//! when the second is over; the last thread to hand over a second turns the
//! merged counts into a [`Row`]. Only a few seconds are ever pending (the
//! threads wake at least every 250 ms), so memory does not grow with the
//! length of the run beyond one small row a second.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::hist::Hist;

/// One thread's counts for one second.
pub(crate) struct Sec {
    /// Messages (chat: publishes) queued.
    pub(crate) sent: u64,
    /// Echoes (chat: deliveries) received.
    pub(crate) received: u64,
    pub(crate) errors: u64,
    /// Round trips (chat: publish to delivery) of what was received.
    pub(crate) lat: Hist,
    /// Open loop: the most a send was behind its scheduled time, in ns.
    pub(crate) lag_max: u64,
}

impl Sec {
    pub(crate) fn new() -> Self {
        Sec {
            sent: 0,
            received: 0,
            errors: 0,
            lat: Hist::new(),
            lag_max: 0,
        }
    }

    fn clear(&mut self) {
        self.sent = 0;
        self.received = 0;
        self.errors = 0;
        self.lat.clear();
        self.lag_max = 0;
    }

    fn merge(&mut self, o: &Sec) {
        self.sent += o.sent;
        self.received += o.received;
        self.errors += o.errors;
        self.lat.merge(&o.lat);
        self.lag_max = self.lag_max.max(o.lag_max);
    }
}

/// One second of the run, all threads together. Times in ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    /// Seconds since the load started (the end of the connect phase).
    pub(crate) t: u64,
    pub(crate) sent: u64,
    pub(crate) received: u64,
    pub(crate) errors: u64,
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
    pub(crate) lag_max: u64,
}

impl Row {
    fn of(t: u64, s: &Sec) -> Row {
        let l = &s.lat;
        Row {
            t,
            sent: s.sent,
            received: s.received,
            errors: s.errors,
            p50: l.quantile(0.5),
            p99: l.quantile(0.99),
            p999: l.quantile(0.999),
            max: if l.total > 0 { l.max } else { 0 },
            lag_max: s.lag_max,
        }
    }

    /// The row as a JSON object (times in µs).
    pub(crate) fn json(&self, out: &mut String) {
        use std::fmt::Write as _;
        let us = |ns: u64| ns as f64 / 1e3;
        let _ = write!(
            out,
            "{{\"t\":{},\"sent\":{},\"received\":{},\"errors\":{},\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"max_us\":{:.1},\"lag_max_us\":{:.1}}}",
            self.t,
            self.sent,
            self.received,
            self.errors,
            us(self.p50),
            us(self.p99),
            us(self.p999),
            us(self.max),
            us(self.lag_max)
        );
    }
}

/// The seconds handed over by the threads.
pub(crate) struct Series {
    threads: usize,
    /// Seconds not every thread has handed over yet: how many have, and
    /// their counts merged.
    pending: Mutex<BTreeMap<u64, (usize, Sec)>>,
    rows: Mutex<Vec<Row>>,
}

impl Series {
    pub(crate) fn new(threads: usize) -> Self {
        Series {
            threads,
            pending: Mutex::new(BTreeMap::new()),
            rows: Mutex::new(Vec::new()),
        }
    }

    /// A thread's second `t` is over: merges `sec` and clears it for the
    /// next second.
    pub(crate) fn hand_over(&self, t: u64, sec: &mut Sec) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let slot = pending.entry(t).or_insert_with(|| (0, Sec::new()));
        slot.0 += 1;
        slot.1.merge(sec);
        if slot.0 >= self.threads {
            if let Some((_, all)) = pending.remove(&t) {
                let mut rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
                rows.push(Row::of(t, &all));
            }
        }
        sec.clear();
    }

    /// The latest second every thread has handed over.
    pub(crate) fn last(&self) -> Option<Row> {
        let rows = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        rows.iter().max_by_key(|r| r.t).copied()
    }

    /// Every second, in order, once the threads have ended: the last ones
    /// (which threads that ended earlier never reached) as they are.
    pub(crate) fn finish(&self) -> Vec<Row> {
        let mut rows = std::mem::take(&mut *self.rows.lock().unwrap_or_else(|e| e.into_inner()));
        let pending = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        rows.extend(pending.iter().map(|(&t, (_, s))| Row::of(t, s)));
        rows.sort_by_key(|r| r.t);
        rows
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_second_is_a_row_once_every_thread_handed_it_over() {
        let series = Series::new(2);
        let mut a = Sec::new();
        a.sent = 3;
        a.lat.record(Duration::from_millis(10));
        series.hand_over(0, &mut a);
        assert_eq!(a.sent, 0, "handed over counts are cleared");
        assert_eq!(series.last(), None, "one of two threads so far");
        let mut b = Sec::new();
        b.sent = 4;
        b.received = 2;
        b.lat.record(Duration::from_millis(30));
        b.lat.record(Duration::from_millis(30));
        series.hand_over(0, &mut b);
        let row = series.last().expect("both threads handed second 0 over");
        assert_eq!((row.t, row.sent, row.received), (0, 7, 2));
        assert!(row.p99 >= 29_000_000 && row.max >= row.p99, "{row:?}");
        // A thread that ran a second longer: its last second is kept too.
        b.received = 1;
        series.hand_over(1, &mut b);
        let rows = series.finish();
        assert_eq!(rows.iter().map(|r| r.t).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(rows[1].received, 1);
    }
}
