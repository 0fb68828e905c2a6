//! Open loop (`--rate`, and chat mode's publishes): one thread's share of
//! the run's schedule (see [`Plan::due`]), sent on time whatever the
//! server does.
//!
//! A cursor walks the thread's slots in time order (message `j` of each of
//! its connections in turn, then `j + 1`) and sends what is due. Each
//! message keeps its scheduled time, so its round trip counts from when it
//! should have gone out, not from when it could: a server that falls behind
//! shows as latency, not as a lower send rate (no coordinated omission).
//!
//! A connection that cannot take its message yet (its write queue is above
//! the high watermark, or, echo mode, `--pipeline` messages await their
//! echo) falls behind: it is remembered, and sends what it owes, oldest
//! first, as soon as it can. Nothing due is skipped; how late each send
//! was is counted (`Stats::lag`), and what was still owed when the run
//! ended is reported as unsent.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::chat;
use crate::conn::{Conn, St, Ws};
use crate::options::Mode;
use crate::plan::Plan;
use crate::stats::Stats;

/// A connection that failed to take a send, and why.
pub(crate) type Failed = (usize, Cow<'static, str>);

pub(crate) struct Pacer {
    /// Global id of the thread's first connection, and how many it has.
    first: u64,
    n: usize,
    go: Instant,
    /// Nothing due at or after this is sent (the end of the window).
    stop: Instant,
    /// The next slot to look at: message `j` of connection `i`.
    j: u64,
    i: usize,
    /// The schedule has reached `stop`.
    done: bool,
    behind: Vec<usize>,
    touched: Vec<usize>,
}

impl Pacer {
    pub(crate) fn new(first: u64, n: usize, go: Instant, stop: Instant) -> Self {
        Pacer {
            first,
            n,
            go,
            stop,
            j: 0,
            i: 0,
            done: n == 0,
            behind: Vec::new(),
            touched: Vec::new(),
        }
    }

    /// When the next message is due (`None` once the schedule is over).
    pub(crate) fn next_due(&self, plan: &Plan) -> Option<Instant> {
        (!self.done).then(|| self.go + plan.due(self.first + self.i as u64, self.j))
    }

    /// No connection owes a message.
    pub(crate) fn caught_up(&self) -> bool {
        self.behind.is_empty()
    }

    /// Messages of connection `i` due so far (the slots the cursor passed).
    fn owed(&self, i: usize) -> u64 {
        self.j + u64::from(i < self.i)
    }

    /// Sends everything due by `now`: the new slots, and what connections
    /// that fell behind owe. Returns the connections that failed.
    pub(crate) fn run<W: Ws>(
        &mut self,
        conns: &mut [Conn<W>],
        plan: &Plan,
        published: &[AtomicU64],
        stats: &mut Stats,
        now: Instant,
    ) -> Vec<Failed> {
        let mut failed = Vec::new();
        let first_behind = self.behind.len();
        while !self.done {
            let due = self.go + plan.due(self.first + self.i as u64, self.j);
            if due >= self.stop {
                self.done = true;
                break;
            }
            if due > now {
                break;
            }
            let i = self.i;
            self.i += 1;
            if self.i == self.n {
                self.i = 0;
                self.j += 1;
            }
            let c = &mut conns[i];
            if c.behind {
                continue; // its turn comes in catch_up, in order
            }
            if !alive(c) {
                stats.unsent += 1;
                continue;
            }
            self.catch_up(i, c, plan, published, stats, now, &mut failed);
            if c.behind {
                self.behind.push(i);
            }
        }
        // Those already behind send what they owe, this round's slots
        // included.
        let mut k = 0;
        while k < first_behind.min(self.behind.len()) {
            let i = self.behind[k];
            self.catch_up(i, &mut conns[i], plan, published, stats, now, &mut failed);
            if conns[i].behind {
                k += 1;
            } else {
                self.behind.swap_remove(k);
            }
        }
        for i in self.touched.drain(..) {
            let c = &mut conns[i];
            c.touched = false;
            if let Some(ws) = c.ws.as_mut() {
                if let Err(e) = ws.flush() {
                    failed.push((i, format!("write: {e}").into()));
                }
            }
        }
        failed
    }

    /// Sends what connection `i` owes, oldest first, as far as it can take
    /// it; marks it behind if it still owes some.
    #[allow(clippy::too_many_arguments)]
    fn catch_up<W: Ws>(
        &mut self,
        i: usize,
        c: &mut Conn<W>,
        plan: &Plan,
        published: &[AtomicU64],
        stats: &mut Stats,
        now: Instant,
        failed: &mut Vec<Failed>,
    ) {
        let owed = self.owed(i);
        if !alive(c) {
            stats.unsent += owed.saturating_sub(c.send_seq);
            c.send_seq = owed;
            c.behind = false;
            return;
        }
        let g = self.first + i as u64;
        while c.send_seq < owed && has_room(c, plan) {
            let due = self.go + plan.due(g, c.send_seq);
            if let Err(e) = send(c, g, due, plan, published) {
                failed.push((i, e));
                c.behind = false;
                return;
            }
            stats.sent_late(now.saturating_duration_since(due));
            if !c.touched {
                c.touched = true;
                self.touched.push(i);
            }
        }
        c.behind = c.send_seq < owed;
    }

    /// The run is over: what is still owed will not be sent.
    pub(crate) fn give_up<W>(&mut self, conns: &mut [Conn<W>], stats: &mut Stats) {
        for i in std::mem::take(&mut self.behind) {
            let owed = self.owed(i);
            let c = &mut conns[i];
            stats.unsent += owed.saturating_sub(c.send_seq);
            c.behind = false;
        }
    }
}

fn alive<W: Ws>(c: &Conn<W>) -> bool {
    c.st == St::Open && c.ws.as_ref().is_some_and(|ws| ws.is_open())
}

/// Whether `c` may queue one more message now.
fn has_room<W: Ws>(c: &Conn<W>, plan: &Plan) -> bool {
    let Some(ws) = c.ws.as_ref() else {
        return false;
    };
    ws.is_open()
        && ws.buffered() <= plan.client.config.write_buffer_high
        && (plan.mode == Mode::Chat || c.sent.len() < plan.pipeline)
}

/// Queues message `c.send_seq` of connection `g`, due at `due`.
fn send<W: Ws>(
    c: &mut Conn<W>,
    g: u64,
    due: Instant,
    plan: &Plan,
    published: &[AtomicU64],
) -> Result<(), Cow<'static, str>> {
    let Some(ws) = c.ws.as_mut() else {
        return Err("send: no connection".into());
    };
    let j = c.send_seq;
    if let Some(member) = c.chat.as_ref() {
        let room = &plan.rooms[member.room];
        let text = chat::text(g, j, plan.payload.size);
        ws.send_text(&chat::publish(room, &text))
            .map_err(|e| format!("chat: publish: {e}"))?;
        if let Some(p) = published.get(member.room) {
            p.fetch_add(1, Relaxed);
        }
    } else {
        let sent = if plan.payload.text {
            ws.send_text(plan.payload.str(g, j))
        } else {
            ws.send_binary(plan.payload.bytes(g, j))
        };
        sent.map_err(|e| format!("send: {e}"))?;
        c.sent.push_back(due);
    }
    c.send_seq += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use wsloop::{Connection, Role};

    use super::*;

    /// Two open connections, bare sans-IO `Connection`s (no sockets: what
    /// is queued stays queued).
    fn conns(plan: &Plan, now: Instant) -> Vec<Conn<Connection>> {
        (0..2)
            .map(|_| {
                let mut c = Conn::new(now);
                c.st = St::Open;
                c.ws = Some(Connection::new(
                    Role::Client,
                    Arc::new(plan.client.config.clone()),
                    now,
                ));
                c
            })
            .collect()
    }

    #[test]
    fn a_connection_that_falls_behind_sends_everything_owed_in_order() {
        // 2 connections, 100 a second in all: slot k due at 10k ms; one
        // message in flight each.
        let plan = Plan::for_test(2, 100, 1);
        let go = Instant::now();
        let stop = go + Duration::from_secs(1);
        let mut cs = conns(&plan, go);
        let mut stats = Stats::new();
        let mut p = Pacer::new(0, 2, go, stop);
        let ms = |n: u64| go + Duration::from_millis(n);

        // At 35 ms, slots 0-3 are due: each connection's first goes out,
        // its second (due at 20 and 30 ms) must wait for an echo.
        assert!(p.run(&mut cs, &plan, &[], &mut stats, ms(35)).is_empty());
        assert_eq!(p.next_due(&plan), Some(ms(40)));
        assert_eq!((cs[0].send_seq, cs[1].send_seq), (1, 1));
        assert!(cs[0].behind && cs[1].behind && !p.caught_up());
        assert_eq!(stats.sent, 2);

        // Connection 0's echo comes at 70 ms: by then it owes slots 2, 4
        // and 6 (due 20, 40, 60 ms); it sends the oldest, keeping its due
        // time, 50 ms late.
        cs[0].sent.pop_front();
        p.run(&mut cs, &plan, &[], &mut stats, ms(70));
        assert_eq!(cs[0].send_seq, 2);
        assert_eq!(cs[0].sent.front(), Some(&ms(20)));
        assert_eq!(stats.lag.max, 50_000_000);

        // Echoes flow again: everything owed goes out, in order, each
        // with its own due time.
        let (mut got0, mut got1) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            got0.extend(cs[0].sent.drain(..));
            got1.extend(cs[1].sent.drain(..));
            p.run(&mut cs, &plan, &[], &mut stats, ms(75));
        }
        got0.extend(cs[0].sent.drain(..));
        got1.extend(cs[1].sent.drain(..));
        assert_eq!(got0, [ms(20), ms(40), ms(60)]);
        assert_eq!(got1, [ms(10), ms(30), ms(50), ms(70)]);
        assert_eq!((cs[0].send_seq, cs[1].send_seq), (4, 4));
        assert!(p.caught_up());

        // Nothing is due at or after `stop`; what is owed then is counted
        // as never sent, not dropped silently.
        p.run(&mut cs, &plan, &[], &mut stats, ms(5000));
        assert_eq!(p.next_due(&plan), None);
        assert_eq!(cs[0].send_seq, 5, "one more fit, the rest is owed");
        p.give_up(&mut cs, &mut stats);
        // 100 slots in the second: 2 × 50 per connection, 10 sent.
        assert_eq!(stats.sent, 10);
        assert_eq!(stats.unsent, 90);
    }

    #[test]
    fn slots_of_a_closed_connection_are_counted_unsent() {
        let plan = Plan::for_test(2, 100, 8);
        let go = Instant::now();
        let mut cs = conns(&plan, go);
        cs[1].st = St::Done;
        cs[1].ws = None;
        let mut stats = Stats::new();
        let mut p = Pacer::new(0, 2, go, go + Duration::from_millis(100));
        p.run(&mut cs, &plan, &[], &mut stats, go + Duration::from_secs(1));
        p.give_up(&mut cs, &mut stats);
        assert_eq!((stats.sent, stats.unsent), (5, 5));
    }
}
