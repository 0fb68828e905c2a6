//! Progress on stderr: a line redrawn in place when stderr is a terminal,
//! or with `--progress` one line a second (for logs and CI, where a
//! redrawn line is noise).

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::options::{Mode, Options};
use crate::report::{dur, group, secs};
use crate::worker::{Progress, Shared};

pub(crate) struct Meter<'a> {
    o: &'a Options,
    shared: &'a Shared,
    last: Instant,
    last_msgs: u64,
    last_sent: u64,
    /// The latest second of the series already printed (`--progress`).
    last_row: Option<u64>,
}

impl<'a> Meter<'a> {
    pub(crate) fn new(o: &'a Options, shared: &'a Shared) -> Self {
        Meter {
            o,
            shared,
            last: Instant::now(),
            last_msgs: 0,
            last_sent: 0,
            last_row: None,
        }
    }

    /// Redraws the line in place (a terminal), every half second.
    pub(crate) fn tick(&mut self) {
        if let Some(status) = self.status(Duration::from_millis(500)) {
            eprint!("\r\x1b[K{status}");
            let _ = io::stderr().flush();
        }
    }

    /// `--progress`: one line a second, with the last whole second's
    /// latency once there is one.
    pub(crate) fn line(&mut self) {
        let Some(mut status) = self.status(Duration::from_secs(1)) else {
            return;
        };
        if let Some(row) = self.shared.series.last() {
            if self.last_row != Some(row.t) && row.received > 0 {
                self.last_row = Some(row.t);
                status.push_str(&format!(
                    "  [second {}: p50 {}  p99 {}  max {}]",
                    row.t + 1,
                    dur(row.p50),
                    dur(row.p99),
                    dur(row.max)
                ));
            }
        }
        eprintln!("{status}");
    }

    /// The progress text, if `every` has passed since the last one.
    fn status(&mut self, every: Duration) -> Option<String> {
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.last);
        if dt < every {
            return None;
        }
        let sum = |f: fn(&Progress) -> &AtomicU64| -> u64 {
            self.shared
                .progress
                .iter()
                .map(|p| f(p).load(Relaxed))
                .sum()
        };
        let (open, failed, msgs, sent, errors) = (
            sum(|p| &p.open),
            sum(|p| &p.failed),
            sum(|p| &p.msgs),
            sum(|p| &p.sent),
            sum(|p| &p.errors),
        );
        let rate = (msgs - self.last_msgs.min(msgs)) as f64 / dt.as_secs_f64();
        let sent_rate = (sent - self.last_sent.min(sent)) as f64 / dt.as_secs_f64();
        self.last = now;
        self.last_msgs = msgs;
        self.last_sent = sent;
        let go = *self.shared.go.lock().unwrap_or_else(|e| e.into_inner());
        let o = self.o;
        // Open loop: what is sent is set by the schedule, what comes back
        // by the server; show both.
        let flow = if o.rate.is_some() {
            format!(
                "{} sent/s  {} {}/s",
                group(sent_rate as u64),
                group(rate as u64),
                if o.mode == Mode::Chat {
                    "delivered"
                } else {
                    "echoed"
                }
            )
        } else {
            format!("{} msg/s", group(rate as u64))
        };
        let phase = match go {
            None => format!(
                "connecting {:>6.1}s  open {}/{}  failed {}",
                now.saturating_duration_since(self.shared.start)
                    .as_secs_f64(),
                open,
                o.conns,
                failed
            ),
            Some(go) => {
                let t = now.saturating_duration_since(go);
                if o.mode == Mode::Connect {
                    if t < o.hold {
                        format!(
                            "holding {:>5.1}s/{}  open {}",
                            t.as_secs_f64(),
                            secs(o.hold),
                            open
                        )
                    } else {
                        format!("closing  open {open}")
                    }
                } else if t < o.warmup {
                    format!(
                        "warmup {:>5.1}s/{}  open {}  {flow}",
                        t.as_secs_f64(),
                        secs(o.warmup),
                        open
                    )
                } else if t < o.warmup + o.duration {
                    format!(
                        "measure {:>5.1}s/{}  open {}  {flow}",
                        (t - o.warmup).as_secs_f64(),
                        secs(o.duration),
                        open
                    )
                } else if o.rate.is_some() {
                    format!("draining  open {open}  {flow}")
                } else {
                    format!("closing  open {open}")
                }
            }
        };
        Some(format!("bench {}: {phase}  errors {errors}", o.mode.name()))
    }

    pub(crate) fn clear(&self) {
        eprint!("\r\x1b[K");
        let _ = io::stderr().flush();
    }
}
