//! One thread of the echo bench: a mio `Poll` driving its share of the
//! connections through the phases (connect, barrier, warmup, measure or
//! hold, open loop's drain, close), each with a deadline. This file holds
//! the connections and the connect phase; `phases` the rest.

mod phases;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};
use wsloop::client::Client;

use crate::conn::{connect_error, drive, Conn, St, Step, Window};
use crate::pace::Pacer;
use crate::plan::Plan;
use crate::series::Series;
use crate::stats::Stats;

/// Time allowed for the close handshake at the end.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The connect phase is cut after this long (or --connect-timeout, if
/// longer).
const CONNECT_PHASE_MAX: Duration = Duration::from_secs(60);

/// Counters a thread publishes for the progress line.
#[derive(Default)]
pub(crate) struct Progress {
    pub(crate) open: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) msgs: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// What the threads share: the clock, the barrier and the progress counters.
pub(crate) struct Shared {
    pub(crate) start: Instant,
    pub(crate) barrier: Barrier,
    /// When the connect phase ended everywhere: warmup or hold starts.
    pub(crate) go: Mutex<Option<Instant>>,
    /// No connection opened in any thread: skip to the summary.
    pub(crate) none_open: AtomicBool,
    pub(crate) server_pid: Option<u32>,
    /// The server's RSS and its anonymous part (KiB) once all are open.
    pub(crate) rss_open: Mutex<(Option<u64>, Option<u64>)>,
    pub(crate) progress: Vec<Progress>,
    /// The run second by second.
    pub(crate) series: Series,
    /// Chat mode: publishes queued to each room, by all threads.
    pub(crate) published: Vec<AtomicU64>,
}

pub(crate) struct Worker<'a> {
    plan: &'a Plan,
    shared: &'a Shared,
    pub(crate) me: usize,
    poll: Poll,
    conns: Vec<Conn>,
    first_id: u64,
    next: usize,
    connecting: Vec<usize>,
    live: usize,
    win: Window,
    stats: Stats,
    /// Open loop: the thread's share of the schedule.
    pacer: Option<Pacer>,
    /// The second being counted (since the load started), and its end.
    sec_t: u64,
    sec_end: Option<Instant>,
}

impl<'a> Worker<'a> {
    pub(crate) fn new(
        plan: &'a Plan,
        shared: &'a Shared,
        me: usize,
        first_id: u64,
        n: usize,
    ) -> io::Result<Self> {
        let far = shared.start + Duration::from_secs(365 * 24 * 3600);
        Ok(Worker {
            plan,
            shared,
            me,
            poll: Poll::new()?,
            conns: (0..n).map(|_| Conn::new(shared.start)).collect(),
            first_id,
            next: 0,
            connecting: Vec::new(),
            live: 0,
            win: Window {
                sending: false,
                closing: false,
                go: far,
                from: far,
                to: far,
            },
            stats: Stats::new(),
            pacer: None,
            sec_t: 0,
            sec_end: None,
        })
    }

    fn start(&mut self, i: usize, now: Instant) {
        let plan = self.plan;
        let server = plan.server(self.first_id + i as u64);
        let c = &mut self.conns[i];
        let mut ws = match Client::connect_addr(server.addr, &server.url, &plan.client, now) {
            Ok(ws) => ws,
            Err(e) => {
                c.st = St::Done;
                self.stats.failed += 1;
                self.stats.error(connect_error(e));
                return;
            }
        };
        if let Err(e) = ws.register(self.poll.registry(), Token(i)) {
            c.st = St::Done;
            self.stats.failed += 1;
            self.stats
                .error(format!("connect: register with the poller: {e}"));
            return;
        }
        c.ws = Some(ws);
        c.started = now;
        c.st = St::Upgrading;
        self.live += 1;
        self.connecting.push(i);
    }

    /// Ends connection `i`, counting `kind` as an error if given.
    fn end(&mut self, i: usize, kind: Option<Cow<'static, str>>) {
        let c = &mut self.conns[i];
        if c.st == St::Done {
            return;
        }
        if let Some(k) = kind {
            self.stats.error(k);
        }
        let opened = matches!(c.st, St::Joining | St::Open);
        match c.ws.take() {
            Some(mut ws) => {
                // A close frame for a protocol error (and TLS records
                // still held), best effort.
                let _ = ws.flush();
                if opened {
                    self.stats.ended_open += 1;
                    if ws.close_info().is_some_and(|i| i.clean) {
                        self.stats.clean_closes += 1;
                    }
                } else {
                    self.stats.failed += 1;
                }
                let _ = ws.deregister(self.poll.registry());
                self.live -= 1;
            }
            None => self.stats.failed += 1,
        }
        c.st = St::Done;
        c.chat = None;
        c.sent = VecDeque::new();
    }

    /// One poll and its events.
    fn pump(&mut self, events: &mut Events, timeout: Duration) {
        match self.poll.poll(events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // Not expected from epoll; keep the run bounded anyway.
                self.stats.error(format!("poll: {e}"));
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let now = Instant::now();
            let step = {
                let Worker {
                    conns,
                    plan,
                    win,
                    stats,
                    first_id,
                    ..
                } = self;
                let Some(c) = conns.get_mut(i) else { continue };
                if matches!(c.st, St::Done | St::New) {
                    continue;
                }
                drive(c, *first_id + i as u64, plan, win, stats, ev, now)
            };
            if let Step::End(kind) = step {
                self.end(i, kind);
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let p = &self.shared.progress[self.me];
        let s = &self.stats;
        p.open.store(s.opened - s.ended_open, Relaxed);
        p.failed.store(s.failed, Relaxed);
        p.msgs.store(s.msgs_all, Relaxed);
        p.sent.store(s.sent, Relaxed);
        p.errors.store(s.error_count, Relaxed);
    }

    fn connect_phase(&mut self, events: &mut Events) {
        let plan = self.plan;
        let deadline = self.shared.start + CONNECT_PHASE_MAX.max(plan.connect_timeout);
        let n = self.conns.len();
        loop {
            let now = Instant::now();
            // Retire finished attempts and time out slow ones.
            let mut late = Vec::new();
            let conns = &self.conns;
            self.connecting.retain(|&i| {
                let c = &conns[i];
                match c.st {
                    St::Upgrading | St::Joining => {
                        if now.saturating_duration_since(c.started) >= plan.connect_timeout
                            || now >= deadline
                        {
                            late.push(i);
                            false
                        } else {
                            true
                        }
                    }
                    _ => false,
                }
            });
            for i in late {
                let kind = if now >= deadline {
                    "connect phase cut after 60 s"
                } else if self.conns[i].ws.as_ref().is_some_and(Client::is_connecting) {
                    "connect: timed out"
                } else if self.conns[i].st == St::Joining {
                    "chat: no welcome and joined within the connect timeout"
                } else {
                    "handshake: timed out"
                };
                self.end(i, Some(kind.into()));
            }
            if now >= deadline {
                while self.next < n {
                    self.conns[self.next].st = St::Done;
                    self.stats.failed += 1;
                    self.stats.error("connect phase cut after 60 s");
                    self.next += 1;
                }
            }
            while self.connecting.len() < plan.max_connecting && self.next < n {
                self.start(self.next, now);
                self.next += 1;
            }
            if self.next == n && self.connecting.is_empty() {
                break;
            }
            self.pump(events, Duration::from_millis(50));
        }
        self.publish();
    }
}
