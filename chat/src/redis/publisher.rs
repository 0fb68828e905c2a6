//! The publisher thread: takes the loop's jobs and runs them on Redis.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use log::{info, warn};
use redis::{Client, Connection, Value};

use super::jobs::{Event, Job, Side};
use super::poster::Poster;
use super::retry::{broken, open, Retry};
use super::scripts::{run_batch, run_fetch, Scripts, BATCH};

/// The publisher pings an idle connection this often (so a dead one is
/// noticed before a message is lost on it).
const PUB_IDLE: Duration = Duration::from_secs(1);

/// A connection for the publisher, its scripts loaded.
fn open_publisher(client: &Client, s: &Scripts) -> redis::RedisResult<Connection> {
    let mut con = open(client)?;
    s.load(&mut con)?;
    Ok(con)
}

pub(super) fn publisher(client: Client, addr: String, jobs: Receiver<Job>, poster: Poster) {
    let scripts = Scripts::new();
    let mut retry = Retry::new("publisher", addr);
    let mut con: Option<Connection> = None;
    // A fetch taken from the queue while batching, run next.
    let mut next: Option<Job> = None;
    loop {
        if con.is_none() && retry.wait().is_zero() {
            match open_publisher(&client, &scripts) {
                Ok(c) => {
                    con = Some(c);
                    retry.connected();
                    if !poster.post(Event::Link(Side::Publisher, true)) {
                        return;
                    }
                }
                Err(e) => retry.failed(&e),
            }
        }
        let wait = if con.is_some() {
            PUB_IDLE
        } else {
            retry.wait()
        };
        let job = match next.take().map_or_else(|| jobs.recv_timeout(wait), Ok) {
            Ok(job) => job,
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {
                // Idle: make sure the connection still works.
                if let Some(c) = con.as_mut() {
                    if let Err(e) = redis::cmd("PING").query::<Value>(c) {
                        con = None;
                        retry.lost(&e);
                        if !poster.post(Event::Link(Side::Publisher, false)) {
                            return;
                        }
                    }
                }
                continue;
            }
        };
        let Some(c) = con.as_mut() else {
            if !poster.post(Event::Bounced(job)) {
                return;
            }
            continue;
        };
        let (error, bounced, fetch) = match job {
            Job::Fetch { room, after, hint } => {
                match run_fetch(c, &scripts, &room, after, hint.as_deref()) {
                    Ok(ev) => {
                        if !poster.post(ev) {
                            return;
                        }
                        continue;
                    }
                    Err(e) => (e, Vec::new(), Some(Job::Fetch { room, after, hint })),
                }
            }
            first => {
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match jobs.try_recv() {
                        Ok(j @ Job::Fetch { .. }) => {
                            next = Some(j);
                            break;
                        }
                        Ok(j) => batch.push(j),
                        Err(_) => break,
                    }
                }
                match run_batch(c, &scripts, batch) {
                    Ok(refused) => {
                        for j in refused {
                            if !poster.post(Event::Bounced(j)) {
                                return;
                            }
                        }
                        continue;
                    }
                    Err((e, all)) => (e, all, None),
                }
            }
        };
        // Something failed: messages Redis may not have taken are delivered
        // locally (they may have run: not sent again).
        let mut fetched = None;
        if broken(&error) {
            // A stale connection (Redis restarted since): one new
            // connection at once before calling Redis down. A fetch is run
            // again on it (it changes nothing that matters).
            let mut down = Some(error.to_string());
            if let Ok(mut c) = open_publisher(&client, &scripts) {
                info!("redis publisher: connection dropped ({error}); reconnected");
                down = None;
                if let Some(Job::Fetch { room, after, hint }) = &fetch {
                    match run_fetch(&mut c, &scripts, room, *after, hint.as_deref()) {
                        Ok(ev) => fetched = Some(ev),
                        Err(e) if broken(&e) => down = Some(e.to_string()),
                        Err(e) => warn!("redis publisher: fetch failed: {e}"),
                    }
                }
                con = down.is_none().then_some(c);
            } else {
                con = None;
            }
            if let Some(e) = down {
                con = None;
                retry.lost(&e);
                if !poster.post(Event::Link(Side::Publisher, false)) {
                    return;
                }
            }
        } else {
            warn!("redis publisher: command failed: {error}");
        }
        let events = bounced
            .into_iter()
            .map(Event::Bounced)
            .chain(match fetched {
                Some(ev) => Some(ev),
                None => fetch.map(Event::Bounced),
            });
        for ev in events {
            if !poster.post(ev) {
                return;
            }
        }
    }
}
