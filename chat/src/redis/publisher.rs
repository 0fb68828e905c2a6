//! The publisher thread: takes the loop's jobs and runs them on Redis.
//!
//! Messages (room messages and broadcasts) taken together go out in one
//! pipeline. If the connection fails before every reply is read, some of
//! them may have run: the same batch is sent again, on a new connection,
//! with backoff, until Redis answers (each message's id makes a second run
//! a no-op), and nothing else is sent meanwhile. Messages never sent (taken
//! from the queue while Redis is unreachable) and messages Redis refused
//! did not run: they go back to the loop, which delivers them here only.
//! Fetches taken together go out in one pipeline too; one that fails is
//! run again once on a new connection, then handed back (the join is
//! answered from what the loop knows).

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use log::{info, warn};
use redis::{Client, Connection, Value};

use super::jobs::{Event, Job, Side};
use super::poster::Poster;
use super::queue::Gauge;
use super::retry::{open, Retry};
use super::scripts::{run_batch, run_fetches, Scripts, BATCH};

/// The publisher pings an idle connection this often (so a dead one is
/// noticed before a message is sent on it).
const PUB_IDLE: Duration = Duration::from_secs(1);

/// A connection for the publisher, its scripts loaded.
fn open_publisher(client: &Client, s: &Scripts) -> redis::RedisResult<Connection> {
    let mut con = open(client)?;
    s.load(&mut con)?;
    Ok(con)
}

struct Publisher {
    client: Client,
    scripts: Scripts,
    retry: Retry,
    con: Option<Connection>,
    /// What the loop was last told.
    linked: bool,
    poster: Poster,
    gauge: Arc<Gauge>,
    /// The server has stopped: nothing more reaches the loop.
    stopped: bool,
}

impl Publisher {
    fn post(&mut self, ev: Event) {
        if !(self.stopped || self.poster.wait_room() && self.poster.post(ev)) {
            self.stopped = true;
        }
    }

    fn link(&mut self, up: bool) {
        if self.linked != up {
            self.linked = up;
            self.post(Event::Link(Side::Publisher, up));
        }
    }

    /// Connects if it is time to; true if connected.
    fn connect(&mut self) -> bool {
        if self.con.is_some() {
            return true;
        }
        if !self.retry.wait().is_zero() {
            return false;
        }
        match open_publisher(&self.client, &self.scripts) {
            Ok(c) => {
                self.con = Some(c);
                self.retry.connected();
                self.link(true);
                true
            }
            Err(e) => {
                self.retry.failed(&e);
                self.link(false);
                false
            }
        }
    }

    /// The connection failed: drop it and tell the loop.
    fn lost(&mut self, e: &dyn std::fmt::Display, first: bool) {
        self.con = None;
        if first {
            self.retry.lost(e);
        } else {
            self.retry.again(e);
        }
        self.link(false);
    }

    /// A message is settled: acknowledged, or handed back to the loop.
    fn settle(&mut self, job: Job, bounce: bool) {
        self.gauge.done(job.weight());
        if bounce {
            self.post(Event::Bounced(job));
        }
    }

    /// Sends `batch` until Redis has answered for every message in it, or
    /// a flush at shutdown gives up on it (then logged).
    fn publish(&mut self, batch: Vec<Job>) {
        let mut first = true;
        loop {
            if self.gauge.abandoned() {
                log::error!(
                    "redis publisher: shutting down with {} messages Redis may or may not \
                     have stored (unreachable)",
                    batch.len()
                );
                for job in batch {
                    self.settle(job, false);
                }
                return;
            }
            if !self.connect() {
                thread::sleep(self.retry.wait().max(Duration::from_millis(10)));
                continue;
            }
            let con = self.con.as_mut().expect("connected above");
            match run_batch(con, &self.scripts, &batch) {
                Ok(refused) => {
                    if !first {
                        info!(
                            "redis publisher: {} messages whose reply was lost are stored \
                             (once) after all",
                            batch.len()
                        );
                    }
                    for (i, job) in batch.into_iter().enumerate() {
                        let bounce = refused.contains(&i);
                        self.settle(job, bounce);
                    }
                    return;
                }
                Err(e) => {
                    if first {
                        warn!(
                            "redis publisher: no reply for {} messages ({e}): sending them \
                             again until Redis answers",
                            batch.len()
                        );
                    }
                    self.lost(&e, first);
                    first = false;
                }
            }
        }
    }

    /// Runs `fetches`; on a failed connection, once more on a new one
    /// (a stale connection after a Redis restart), else hands them back.
    fn fetch(&mut self, fetches: Vec<Job>) {
        for attempt in 0..2 {
            if attempt == 1 {
                self.retry.reset_wait();
            }
            if !self.connect() {
                break;
            }
            let con = self.con.as_mut().expect("connected above");
            match run_fetches(con, &self.scripts, &fetches) {
                Ok(events) => {
                    for ev in events {
                        self.post(ev);
                    }
                    return;
                }
                Err(e) => self.lost(&e, true),
            }
        }
        for job in fetches {
            self.post(Event::Bounced(job));
        }
    }

    /// A quiet second: check the connection still works.
    fn ping(&mut self) {
        if let Some(c) = self.con.as_mut() {
            if let Err(e) = redis::cmd("PING").query::<Value>(c) {
                self.lost(&e, true);
            }
        }
    }
}

pub(super) fn publisher(
    client: Client,
    addr: String,
    scripts: Scripts,
    jobs: Receiver<Job>,
    poster: Poster,
    gauge: Arc<Gauge>,
) {
    let mut p = Publisher {
        client,
        scripts,
        retry: Retry::new("publisher", addr, gauge.clone()),
        con: None,
        linked: false,
        poster,
        gauge,
        stopped: false,
    };
    // A job taken while gathering a batch of the other kind, run next.
    let mut next: Option<Job> = None;
    loop {
        p.connect();
        let job = match next.take() {
            Some(j) => j,
            None if p.stopped => match jobs.try_recv() {
                // The server is gone: finish what is queued, then end.
                Ok(j) => j,
                Err(_) => return,
            },
            None => {
                let wait = if p.con.is_some() {
                    PUB_IDLE
                } else {
                    p.retry.wait().max(Duration::from_millis(10))
                };
                match jobs.recv_timeout(wait) {
                    Ok(j) => j,
                    Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => {
                        p.ping();
                        continue;
                    }
                }
            }
        };
        let fetch = matches!(job, Job::Fetch { .. });
        let mut batch = vec![job];
        while batch.len() < BATCH {
            match jobs.try_recv() {
                Ok(j) if matches!(j, Job::Fetch { .. }) == fetch => batch.push(j),
                Ok(j) => {
                    next = Some(j);
                    break;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if fetch {
            p.fetch(batch);
        } else if p.con.is_none() && !p.stopped {
            // Redis is unreachable and these were never sent: the loop
            // delivers them here only, as it does what comes meanwhile.
            for job in batch {
                p.settle(job, true);
            }
        } else {
            p.publish(batch);
        }
    }
}
