//! A thread's run after the connect phase: start together, the load
//! (closed loop: a message for each echo; open loop: on schedule), the
//! open loop's drain, then the close handshake on every connection.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use mio::Events;
use wsloop::CloseCode;

use super::{Worker, CLOSE_TIMEOUT};
use crate::conn::{send_next, St};
use crate::options::Mode;
use crate::pace::Pacer;
use crate::procfs::{read_rss_anon_kib, read_rss_kib};
use crate::stats::Stats;

/// Open loop: how long after the window the bench waits for what is still
/// owed to be sent and for the last echoes (chat: deliveries).
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait in one poll, so the phases' deadlines and the seconds of
/// the series are seen in time.
const MAX_WAIT: Duration = Duration::from_millis(250);
const SECOND: Duration = Duration::from_secs(1);

impl Worker<'_> {
    pub(crate) fn run(mut self) -> Stats {
        let plan = self.plan;
        let mut events = Events::with_capacity(1024);
        self.connect_phase(&mut events);
        let go = self.start_together();
        self.win.go = go;
        self.sec_end = Some(go + SECOND);
        let none_open = self.shared.none_open.load(Relaxed);

        let end_at = if none_open {
            // Nothing to measure: go straight to the summary.
            go
        } else if plan.mode == Mode::Connect {
            go + plan.hold
        } else {
            self.win.from = go + plan.warmup;
            self.win.to = self.win.from + plan.duration;
            if plan.open_loop() {
                let n = self.conns.len();
                self.pacer = Some(Pacer::new(self.first_id, n, go, self.win.to));
            } else {
                self.win.sending = true;
                self.first_messages();
            }
            self.win.to
        };
        self.load(end_at, &mut events);
        if plan.open_loop() && !none_open {
            self.drain(&mut events);
        }
        self.stats.run_end = Instant::now();
        self.close_all(&mut events);
        let now = Instant::now();
        self.roll(now);
        self.shared
            .series
            .hand_over(self.sec_t, &mut self.stats.sec);
        self.publish();
        self.stats.finished = now;
        self.stats
    }

    /// Waits for every thread; returns when the load starts.
    fn start_together(&mut self) -> Instant {
        let shared = self.shared;
        if shared.barrier.wait().is_leader() {
            let now = Instant::now();
            *shared.go.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
            if let Some(pid) = shared.server_pid {
                *shared.rss_open.lock().unwrap_or_else(|e| e.into_inner()) =
                    (read_rss_kib(pid), read_rss_anon_kib(pid));
            }
            // Every thread published its count before the first wait.
            let open: u64 = shared.progress.iter().map(|p| p.open.load(Relaxed)).sum();
            shared.none_open.store(open == 0, Relaxed);
        }
        shared.barrier.wait();
        let go = *shared.go.lock().unwrap_or_else(|e| e.into_inner());
        go.unwrap_or_else(Instant::now)
    }

    /// Closed loop: `--pipeline` messages on every open connection.
    fn first_messages(&mut self) {
        let plan = self.plan;
        let now = Instant::now();
        for i in 0..self.conns.len() {
            let Worker {
                conns,
                first_id,
                stats,
                ..
            } = &mut *self;
            let c = &mut conns[i];
            let Some(ws) = c.ws.as_mut() else {
                continue;
            };
            if !ws.is_open() {
                continue;
            }
            let id = *first_id + i as u64;
            let mut res = Ok(());
            for _ in 0..plan.pipeline {
                res = send_next(ws, &mut c.sent, &mut c.send_seq, id, plan, now)
                    .map_err(|e| format!("send: {e}"));
                if res.is_err() {
                    break;
                }
                stats.sent += 1;
                stats.sec.sent += 1;
            }
            if res.is_ok() {
                res = ws.flush().map_err(|e| format!("write: {e}"));
            }
            if let Err(kind) = res {
                self.end(i, Some(kind.into()));
            }
        }
    }

    /// Hands the seconds that are over to the series.
    fn roll(&mut self, now: Instant) {
        let Some(mut end) = self.sec_end else { return };
        while now >= end {
            self.shared
                .series
                .hand_over(self.sec_t, &mut self.stats.sec);
            self.sec_t += 1;
            end += SECOND;
        }
        self.sec_end = Some(end);
    }

    /// Open loop: sends what is due; returns how long to wait at most for
    /// the next send.
    fn pace(&mut self, now: Instant) -> Duration {
        let plan = self.plan;
        let Some(pacer) = self.pacer.as_mut() else {
            return MAX_WAIT;
        };
        let failed = pacer.run(
            &mut self.conns,
            plan,
            &self.shared.published,
            &mut self.stats,
            now,
        );
        let wait = match pacer.next_due(plan) {
            // Whole milliseconds, rounded down (mio rounds a timeout up
            // to one): a message due within the next one is not slept
            // past; the loop polls without waiting until it is sent.
            Some(due) => {
                let ms = due.saturating_duration_since(Instant::now()).as_millis();
                Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
            }
            None => MAX_WAIT,
        };
        for (i, kind) in failed {
            self.end(i, Some(kind));
        }
        wait.min(MAX_WAIT)
    }

    /// The warmup and the measured window (or the hold).
    fn load(&mut self, end_at: Instant, events: &mut Events) {
        loop {
            let now = Instant::now();
            self.roll(now);
            if now >= end_at || self.live == 0 {
                break;
            }
            let wait = self.pace(now).min(end_at - now);
            self.pump(events, wait);
        }
    }

    /// Open loop, after the window: sends what is still owed (nothing new
    /// is due), then waits for the echoes or, chat, for every member to
    /// have been delivered everything published to its room; at most
    /// `DRAIN_TIMEOUT`. What did not come is counted.
    fn drain(&mut self, events: &mut Events) {
        let chat = self.plan.mode == Mode::Chat;
        let deadline = self.win.to.max(Instant::now()) + DRAIN_TIMEOUT;
        let mut checked = Instant::now();
        // Chat: every thread's publishes are in before counting what each
        // member is owed.
        let mut counted = !chat;
        loop {
            let now = Instant::now();
            self.roll(now);
            let wait = self.pace(now);
            let caught_up = self.pacer.as_ref().is_none_or(|p| p.caught_up());
            if now >= deadline || self.live == 0 {
                if !counted {
                    self.shared.barrier.wait();
                }
                break;
            }
            if caught_up && !counted {
                self.shared.barrier.wait();
                counted = true;
            }
            if caught_up && counted && now >= checked {
                if self.all_in() {
                    break;
                }
                checked = now + Duration::from_millis(20);
            }
            let wait = if caught_up { MAX_WAIT } else { wait };
            self.pump(events, wait.min(deadline - now));
        }
        if let Some(p) = self.pacer.as_mut() {
            p.give_up(&mut self.conns, &mut self.stats);
        }
        for c in &self.conns {
            if c.st != St::Open {
                continue;
            }
            self.stats.unanswered += c.sent.len() as u64;
            if let Some(m) = &c.chat {
                let published = self.shared.published[m.room].load(Relaxed);
                m.tally(published, &mut self.stats);
            }
        }
    }

    /// Whether every open connection has had its echoes (chat: every
    /// member everything published to its room).
    fn all_in(&self) -> bool {
        let published = &self.shared.published;
        self.conns.iter().all(|c| {
            c.st != St::Open
                || match &c.chat {
                    Some(m) => m.unique >= published[m.room].load(Relaxed),
                    None => c.sent.is_empty(),
                }
        })
    }

    /// Closes every connection with 1000 and waits for the replies.
    fn close_all(&mut self, events: &mut Events) {
        self.win.sending = false;
        self.win.closing = true;
        let now = Instant::now();
        for i in 0..self.conns.len() {
            let c = &mut self.conns[i];
            if !matches!(c.st, St::Joining | St::Open) {
                continue;
            }
            let Some(ws) = c.ws.as_mut() else {
                continue;
            };
            ws.close(CloseCode::NORMAL, "", now);
            if let Err(e) = ws.flush() {
                self.end(i, Some(format!("close: write: {e}").into()));
            }
        }
        let deadline = now + CLOSE_TIMEOUT;
        loop {
            let now = Instant::now();
            self.roll(now);
            if self.live == 0 || now >= deadline {
                break;
            }
            self.pump(events, (deadline - now).min(MAX_WAIT));
        }
        for i in 0..self.conns.len() {
            let c = &self.conns[i];
            if c.st == St::Done {
                continue;
            }
            let clean =
                c.ws.as_ref()
                    .and_then(|ws| ws.close_info())
                    .is_some_and(|i| i.clean);
            let kind = if !matches!(c.st, St::Joining | St::Open) {
                "close: still connecting"
            } else if clean {
                "close: the server did not close TCP within 5 s of the close handshake"
            } else {
                "close: no close reply within 5 s"
            };
            self.end(i, Some(kind.into()));
        }
    }
}
