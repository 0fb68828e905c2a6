//! The live progress line on stderr (drawn when stderr is a terminal).

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::options::{Mode, Options};
use crate::report::{group, secs};
use crate::worker::{Progress, Shared};

pub(crate) struct Meter<'a> {
    o: &'a Options,
    shared: &'a Shared,
    last: Instant,
    last_msgs: u64,
}

impl<'a> Meter<'a> {
    pub(crate) fn new(o: &'a Options, shared: &'a Shared) -> Self {
        Meter {
            o,
            shared,
            last: Instant::now(),
            last_msgs: 0,
        }
    }

    pub(crate) fn tick(&mut self) {
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.last);
        if dt < Duration::from_millis(500) {
            return;
        }
        let sum = |f: fn(&Progress) -> &AtomicU64| -> u64 {
            self.shared
                .progress
                .iter()
                .map(|p| f(p).load(Relaxed))
                .sum()
        };
        let (open, failed, msgs, errors) = (
            sum(|p| &p.open),
            sum(|p| &p.failed),
            sum(|p| &p.msgs),
            sum(|p| &p.errors),
        );
        let rate = (msgs - self.last_msgs.min(msgs)) as f64 / dt.as_secs_f64();
        self.last = now;
        self.last_msgs = msgs;
        let go = *self.shared.go.lock().unwrap_or_else(|e| e.into_inner());
        let o = self.o;
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
                        "warmup {:>5.1}s/{}  open {}  {} msg/s",
                        t.as_secs_f64(),
                        secs(o.warmup),
                        open,
                        group(rate as u64)
                    )
                } else if t < o.warmup + o.duration {
                    format!(
                        "measure {:>5.1}s/{}  open {}  {} msg/s",
                        (t - o.warmup).as_secs_f64(),
                        secs(o.duration),
                        open,
                        group(rate as u64)
                    )
                } else {
                    format!("closing  open {open}")
                }
            }
        };
        eprint!("\r\x1b[Kbench {}: {phase}  errors {errors}", o.mode.name());
        let _ = io::stderr().flush();
    }

    pub(crate) fn clear(&self) {
        eprint!("\r\x1b[K");
        let _ = io::stderr().flush();
    }
}
