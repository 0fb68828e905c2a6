//! Reconnecting after an unexpected close or a network error, with
//! exponential backoff and jitter.

use std::time::Duration;

use crate::close::CloseCode;
use crate::error::Error;
use crate::protocol::{CloseInfo, Event};

use super::{connect_with, ClientOptions, WebSocket};

/// Exponential backoff with jitter: `base * factor^attempt`, capped, each
/// delay moved by a random ±`jitter` fraction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// First delay. Default 1 s.
    pub base: Duration,
    /// Growth per attempt. Default 2.
    pub factor: f64,
    /// Longest delay. Default 30 s.
    pub cap: Duration,
    /// Jitter as a fraction of the delay. Default 0.1 (±10%).
    pub jitter: f64,
    /// Attempts before giving up; `None` retries forever. Default 10.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            factor: 2.0,
            cap: Duration::from_secs(30),
            jitter: 0.1,
            max_attempts: Some(10),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based), with `unit` a
    /// number in [0, 1) choosing the jitter.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let exp = self.factor.max(1.0).powi(attempt.min(64) as i32);
        let raw = (self.base.as_secs_f64() * exp).min(self.cap.as_secs_f64());
        let j = 1.0 + self.jitter.clamp(0.0, 1.0) * (2.0 * unit.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((raw * j).max(0.0))
    }

    /// A random jitter unit in [0, 1).
    pub fn random_unit() -> f64 {
        let mut b = [0u8; 8];
        crate::rand::fill(&mut b);
        (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A blocking client that reconnects after an unexpected close or a network
/// error, with [`Backoff`]. The attempt counter resets after each successful
/// connection. A normal close (1000) from the server ends the session and
/// is returned as an event; other closes (1001 going away, 1012 restart,
/// errors) and lost connections are retried. After `max_attempts` failed
/// connects it returns [`Error::GaveUp`] with the last error.
#[derive(Debug)]
pub struct Reconnecting {
    url: String,
    opts: ClientOptions,
    backoff: Backoff,
    ws: Option<WebSocket>,
    attempts: u32,
    connects: u64,
    read_timeout: Option<Duration>,
}

impl Reconnecting {
    /// A client for `url`; nothing is connected until the first call.
    pub fn new(url: &str, opts: ClientOptions, backoff: Backoff) -> Self {
        Reconnecting {
            url: url.to_owned(),
            opts,
            backoff,
            ws: None,
            attempts: 0,
            connects: 0,
            read_timeout: None,
        }
    }

    /// Limits how long [`Reconnecting::recv`] waits for an event on one
    /// connection (reconnects do not count).
    pub fn set_read_timeout(&mut self, t: Option<Duration>) {
        self.read_timeout = t;
        if let Some(ws) = self.ws.as_mut() {
            ws.set_read_timeout(t);
        }
    }

    /// Successful connections so far.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// Connects if not connected, retrying with backoff. Gives up after
    /// `max_attempts` with the last error.
    pub fn ensure(&mut self) -> Result<&mut WebSocket, Error> {
        while self.ws.is_none() {
            match connect_with(&self.url, &self.opts) {
                Ok(mut ws) => {
                    self.attempts = 0;
                    self.connects += 1;
                    ws.set_read_timeout(self.read_timeout);
                    self.ws = Some(ws);
                }
                Err(e) => {
                    if let Some(max) = self.backoff.max_attempts {
                        if self.attempts + 1 >= max {
                            log::warn!("giving up on {} after {max} attempts: {e}", self.url);
                            return Err(Error::GaveUp {
                                attempts: max,
                                last: Box::new(e),
                            });
                        }
                    }
                    let d = self.backoff.delay(self.attempts, Backoff::random_unit());
                    log::warn!("connect to {} failed ({e}); retrying in {d:?}", self.url);
                    self.attempts += 1;
                    std::thread::sleep(d);
                }
            }
        }
        Ok(self.ws.as_mut().expect("connected above"))
    }

    /// Receives the next event, reconnecting (and returning the events of
    /// the new connection) if the connection is lost.
    pub fn recv(&mut self) -> Result<Event<'static>, Error> {
        loop {
            let ws = self.ensure()?;
            match ws.recv() {
                Ok(Event::Close(code, reason)) if code == CloseCode::NORMAL => {
                    // A normal close ends the session: no reconnect; the
                    // next call connects anew.
                    let _ = ws.close(code, "");
                    self.ws = None;
                    return Ok(Event::Close(code, reason));
                }
                Ok(Event::Close(code, reason)) => {
                    // Going away, restart, error: reconnect.
                    self.ws = None;
                    log::info!("server closed ({code} {reason}); reconnecting");
                }
                Ok(ev) => return Ok(ev),
                Err(Error::Timeout(w)) => return Err(Error::Timeout(w)),
                Err(e) => {
                    log::warn!("connection lost: {e}; reconnecting");
                    self.ws = None;
                }
            }
        }
    }

    /// Sends a text message, reconnecting first if needed.
    pub fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.ensure()?.send_text(text)
    }

    /// Closes the current connection (no reconnect after it).
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<Option<CloseInfo>, Error> {
        match self.ws.take() {
            Some(mut ws) => ws.close(code, reason).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_schedule() {
        let b = Backoff::default();
        assert_eq!(b.delay(0, 0.5), Duration::from_secs(1));
        assert_eq!(b.delay(1, 0.5), Duration::from_secs(2));
        assert_eq!(b.delay(4, 0.5), Duration::from_secs(16));
        assert_eq!(b.delay(5, 0.5), Duration::from_secs(30));
        assert_eq!(b.delay(40, 0.5), Duration::from_secs(30));
        let lo = b.delay(2, 0.0).as_secs_f64();
        let hi = b.delay(2, 0.999_999).as_secs_f64();
        assert!(
            (lo - 3.6).abs() < 1e-9 && (hi - 4.4).abs() < 1e-3,
            "{lo} {hi}"
        );
        for _ in 0..100 {
            let u = Backoff::random_unit();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
