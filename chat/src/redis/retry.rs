//! Connecting to Redis, and reconnecting with backoff and logging once.

use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use redis::{Client, Connection, RedisError};

use super::queue::Gauge;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub(super) const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// Reconnect pacing and logging for one connection.
pub(super) struct Retry {
    what: &'static str,
    addr: String,
    backoff: Duration,
    next: Instant,
    /// Since when it is down (`None`: up, or never connected yet).
    down_since: Option<Instant>,
    attempts: u32,
    /// Counts reconnects for the metrics.
    gauge: Arc<Gauge>,
}

impl Retry {
    pub(super) fn new(what: &'static str, addr: String, gauge: Arc<Gauge>) -> Self {
        Retry {
            what,
            addr,
            backoff: BACKOFF_MIN,
            next: Instant::now(),
            down_since: None,
            attempts: 0,
            gauge,
        }
    }

    pub(super) fn wait(&self) -> Duration {
        self.next.saturating_duration_since(Instant::now())
    }

    pub(super) fn failed(&mut self, e: &RedisError) {
        self.attempts += 1;
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            warn!(
                "redis {}: cannot connect to {}: {e}; retrying with backoff",
                self.what, self.addr
            );
        } else {
            debug!(
                "redis {}: attempt {} to reach {} failed: {e}",
                self.what, self.attempts, self.addr
            );
        }
        self.next = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    pub(super) fn lost(&mut self, e: &dyn std::fmt::Display) {
        warn!(
            "redis {}: connection to {} lost: {e}; reconnecting with backoff",
            self.what, self.addr
        );
        self.down_since = Some(Instant::now());
        self.attempts = 0;
        self.backoff = BACKOFF_MIN;
        self.next = Instant::now() + BACKOFF_MIN;
    }

    /// Lost again while retrying the same thing: back off further, log
    /// quietly.
    pub(super) fn again(&mut self, e: &dyn std::fmt::Display) {
        self.attempts += 1;
        debug!(
            "redis {}: attempt {} on {} failed: {e}",
            self.what, self.attempts, self.addr
        );
        self.next = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Try to connect at once (a connection found stale).
    pub(super) fn reset_wait(&mut self) {
        self.next = Instant::now();
    }

    pub(super) fn connected(&mut self) {
        match self.down_since.take() {
            Some(t) => {
                self.gauge.reconnected();
                info!(
                    "redis {}: connected to {} again after {:.1} s",
                    self.what,
                    self.addr,
                    t.elapsed().as_secs_f64()
                )
            }
            None => info!("redis {}: connected to {}", self.what, self.addr),
        }
        self.attempts = 0;
        self.backoff = BACKOFF_MIN;
    }
}

pub(super) fn open(client: &Client) -> redis::RedisResult<Connection> {
    let con = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    con.set_read_timeout(Some(IO_TIMEOUT))?;
    con.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(con)
}
