//! Reconnecting after an unexpected close or a network error, with
//! exponential backoff and jitter, without losing what was sent.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::close::CloseCode;
use crate::error::{Error, HandshakeError};
use crate::protocol::{CloseInfo, Event, Message};

use super::blocking::DEFAULT_WRITE_TIMEOUT;
use super::{connect_with, Backoff, ClientOptions, WebSocket};

/// Most messages a [`Reconnecting`] client keeps to send again, by default.
pub const DEFAULT_MAX_UNSENT: usize = 1024;
/// Most payload bytes a [`Reconnecting`] client keeps to send again, by
/// default.
pub const DEFAULT_MAX_UNSENT_BYTES: usize = 4 << 20;

/// A message accepted by a send whose frame has not left the write queue.
#[derive(Debug)]
struct Unsent {
    msg: Message<'static>,
    /// Where its frame ends in the current connection's output; `None`:
    /// not queued on the current connection (it goes on the next one).
    end: Option<u64>,
}

/// A blocking client that reconnects after an unexpected close or a network
/// error, with [`Backoff`].
///
/// # Closes and retries
///
/// A normal close (1000) from the server ends the session and is returned
/// as an event (the next call connects anew); other closes (1001 going
/// away, 1012 restart, errors) and lost connections are retried. After
/// `max_attempts` failed connects it returns [`Error::GaveUp`] with the last
/// error. A connection that ends before anything arrived on it counts as a
/// failed attempt, so a server that accepts and drops at once is retried
/// with backoff, not in a busy loop. The attempt counter resets once a
/// connection works, and after giving up.
///
/// A 4xx answer to the upgrade (401, 403, 404, ...) is a refusal that
/// retrying will not change: the call returns
/// `Error::Handshake(HandshakeError::Status(code))` at once. 408 and 429
/// are retried. [`Reconnecting::set_retry_refusals`] retries every status.
///
/// # What is sent is not dropped
///
/// - A send on a live connection is queued (waiting while the queue is
///   full, as [`WebSocket`] does) and a copy is kept until its frame has
///   left the write queue (handed to the kernel, or to TLS). If the
///   connection is lost first, the kept messages are sent again, in order,
///   first thing on the next connection.
/// - A send while disconnected reconnects first. If that fails (it gave
///   up, or the upgrade was refused), the send returns the error and the
///   message is not kept.
/// - What is kept is bounded: at most [`DEFAULT_MAX_UNSENT`] messages and
///   [`DEFAULT_MAX_UNSENT_BYTES`] bytes by default
///   ([`Reconnecting::set_unsent_limits`]; one message is always taken). A
///   send past the bound waits for earlier messages to be written, up to
///   the write timeout, then returns [`Error::Timeout`] and keeps nothing.
/// - A frame that left the write queue before the loss is not sent again:
///   it may or may not have reached the server (TCP does not say), so use
///   acknowledgements in your protocol where that matters.
/// - [`Reconnecting::unsent`] counts the kept messages;
///   [`Reconnecting::take_unsent`] takes them back (say, before dropping
///   the client).
///
/// Events that arrived on a connection before a send found it lost are
/// returned by [`Reconnecting::recv`] before those of the next connection.
/// They are bounded by `max_message_size + read_buffer_size` bytes, what one
/// connection holds undecoded; past that, events are dropped and counted
/// ([`Reconnecting::missed_events`]).
///
/// Sends made through [`Reconnecting::ensure`]'s [`WebSocket`] bypass all
/// of this.
#[derive(Debug)]
pub struct Reconnecting {
    url: String,
    opts: ClientOptions,
    backoff: Backoff,
    ws: Option<WebSocket>,
    attempts: u32,
    connects: u64,
    /// The current connection has not worked yet: no event arrived and no
    /// send went through.
    fresh: bool,
    /// The last connection was lost while fresh: wait before the next.
    delay_next: bool,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
    retry_refusals: bool,
    unsent: VecDeque<Unsent>,
    unsent_bytes: usize,
    max_unsent: usize,
    max_unsent_bytes: usize,
    /// Events of a lost connection not returned yet, and their bytes.
    inbox: VecDeque<Event<'static>>,
    inbox_bytes: usize,
    missed: u64,
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
            fresh: false,
            delay_next: false,
            read_timeout: None,
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            retry_refusals: false,
            unsent: VecDeque::new(),
            unsent_bytes: 0,
            max_unsent: DEFAULT_MAX_UNSENT,
            max_unsent_bytes: DEFAULT_MAX_UNSENT_BYTES,
            inbox: VecDeque::new(),
            inbox_bytes: 0,
            missed: 0,
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

    /// Limits how long a send waits for room (see
    /// [`WebSocket::set_write_timeout`]); reconnects do not count.
    pub fn set_write_timeout(&mut self, t: Option<Duration>) {
        self.write_timeout = t;
        if let Some(ws) = self.ws.as_mut() {
            ws.set_write_timeout(t);
        }
    }

    /// Keeps retrying after a 4xx answer to the upgrade too (default: stop).
    pub fn set_retry_refusals(&mut self, retry: bool) {
        self.retry_refusals = retry;
    }

    /// Bounds the messages kept to send again after a reconnect (see the
    /// type's docs).
    pub fn set_unsent_limits(&mut self, messages: usize, bytes: usize) {
        self.max_unsent = messages;
        self.max_unsent_bytes = bytes;
    }

    /// Messages accepted by a send whose frame has not been written yet
    /// (they go out on the next connection if this one is lost).
    pub fn unsent(&self) -> usize {
        self.unsent.len()
    }

    /// Takes back the kept messages that wait for the next connection
    /// (all of them after [`Reconnecting::close`] or an error): they will
    /// not be sent. Those still queued on a live connection stay: it may
    /// yet write them.
    pub fn take_unsent(&mut self) -> Vec<Message<'static>> {
        self.prune();
        let (waiting, queued): (VecDeque<Unsent>, VecDeque<Unsent>) =
            self.unsent.drain(..).partition(|u| u.end.is_none());
        self.unsent = queued;
        self.unsent_bytes = self.unsent.iter().map(|u| u.msg.as_bytes().len()).sum();
        waiting.into_iter().map(|u| u.msg).collect()
    }

    /// Events of a lost connection dropped because the application had not
    /// read the earlier ones (see the type's docs).
    pub fn missed_events(&self) -> u64 {
        self.missed
    }

    /// Successful connections so far.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// Connects if not connected, retrying with backoff, and sends the
    /// messages kept from a lost connection. Gives up after `max_attempts`
    /// with the last error, or at once on a refusal (see the type's docs).
    pub fn ensure(&mut self) -> Result<&mut WebSocket, Error> {
        loop {
            if self.ws.as_ref().is_some_and(is_lost) {
                self.retire();
            }
            if self.ws.is_none() {
                self.connect()?;
            }
            match self.resend() {
                Ok(()) => return Ok(self.ws.as_mut().expect("connected above")),
                // Lost again before the kept messages went out: reconnect
                // (after a delay, as it is still fresh).
                Err(_) if self.ws.as_ref().is_some_and(is_lost) => self.retire(),
                Err(e) => return Err(e),
            }
        }
    }

    fn connect(&mut self) -> Result<(), Error> {
        if std::mem::take(&mut self.delay_next) {
            self.failed_attempt(Error::ConnectionClosed)?;
        }
        loop {
            match connect_with(&self.url, &self.opts) {
                Ok(mut ws) => {
                    self.connects += 1;
                    self.fresh = true;
                    ws.set_read_timeout(self.read_timeout);
                    ws.set_write_timeout(self.write_timeout);
                    self.ws = Some(ws);
                    return Ok(());
                }
                Err(Error::Handshake(HandshakeError::Status(s)))
                    if is_refusal(s) && !self.retry_refusals =>
                {
                    log::warn!(
                        "{} refused the upgrade with HTTP {s}; not retrying",
                        self.url
                    );
                    self.attempts = 0;
                    return Err(Error::Handshake(HandshakeError::Status(s)));
                }
                Err(e) => self.failed_attempt(e)?,
            }
        }
    }

    /// Counts a failed attempt: waits the backoff delay, or gives up.
    fn failed_attempt(&mut self, e: Error) -> Result<(), Error> {
        if let Some(max) = self.backoff.max_attempts {
            if self.attempts + 1 >= max {
                log::warn!("giving up on {} after {max} attempts: {e}", self.url);
                self.attempts = 0;
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
        Ok(())
    }

    /// The current connection works: failed attempts are forgotten.
    fn works(&mut self) {
        self.fresh = false;
        self.attempts = 0;
    }

    /// Queues the kept messages that are not on the current connection.
    fn resend(&mut self) -> Result<(), Error> {
        let ws = self.ws.as_mut().expect("connected");
        for u in self.unsent.iter_mut().filter(|u| u.end.is_none()) {
            u.end = Some(ws.queue(borrowed(&u.msg))?);
            ws.pump_writes()?;
        }
        Ok(())
    }

    /// Ends the current connection's story: the events it still holds go
    /// to the inbox, and the kept messages it did not write are marked to
    /// go on the next connection.
    fn retire(&mut self) {
        let Some(mut ws) = self.ws.take() else {
            return;
        };
        // A server that accepts and drops at once is not retried in a
        // busy loop.
        self.delay_next = self.fresh;
        while let Some(ev) = ws.client.next_event() {
            self.stash(ev);
        }
        self.prune_to(ws.client.written);
        for u in &mut self.unsent {
            u.end = None;
        }
    }

    fn stash(&mut self, ev: Event<'static>) {
        let len = event_len(&ev);
        let cap =
            (self.opts.config.max_message_size).saturating_add(self.opts.config.read_buffer_size);
        if self.inbox_bytes + len > cap {
            self.missed += 1;
            log::warn!(
                "dropping an event of a lost connection: {} bytes of earlier ones not read",
                self.inbox_bytes
            );
            return;
        }
        self.inbox_bytes += len;
        self.inbox.push_back(ev);
    }

    /// Forgets the kept messages the current connection has written.
    fn prune(&mut self) {
        if let Some(written) = self.ws.as_ref().map(|ws| ws.client.written) {
            self.prune_to(written);
        }
    }

    fn prune_to(&mut self, written: u64) {
        while let Some(u) = self.unsent.front() {
            if u.end.is_none_or(|e| e > written) {
                break;
            }
            self.unsent_bytes -= u.msg.as_bytes().len();
            self.unsent.pop_front();
        }
    }

    fn has_room(&self, len: usize) -> bool {
        self.unsent.is_empty()
            || (self.unsent.len() < self.max_unsent
                && self.unsent_bytes.saturating_add(len) <= self.max_unsent_bytes)
    }

    /// Waits until a message of `len` bytes may be kept, or the connection
    /// is lost (then the send reconnects).
    fn wait_for_room(&mut self, len: usize, deadline: Option<Instant>) -> Result<(), Error> {
        loop {
            self.prune();
            if self.has_room(len) {
                return Ok(());
            }
            let ws = match self.ws.as_mut() {
                Some(ws) if !is_lost(ws) => ws,
                _ => return Ok(()),
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout("send: too many messages not written yet"));
            }
            ws.wait(deadline)?;
        }
    }

    /// Receives the next event, reconnecting (and returning the events of
    /// the new connection) if the connection is lost.
    pub fn recv(&mut self) -> Result<Event<'static>, Error> {
        loop {
            if self.ws.as_ref().is_some_and(is_lost) {
                self.retire();
            }
            if let Some(ev) = self.inbox.pop_front() {
                self.inbox_bytes -= event_len(&ev);
                return Ok(ev);
            }
            self.ensure()?;
            if !self.inbox.is_empty() {
                continue;
            }
            let ws = self.ws.as_mut().expect("connected above");
            match ws.recv() {
                Ok(Event::Close(code, reason)) if code == CloseCode::NORMAL => {
                    // A normal close ends the session: no reconnect; the
                    // next call connects anew.
                    let _ = ws.close(code, "");
                    self.fresh = false;
                    self.retire();
                    return Ok(Event::Close(code, reason));
                }
                Ok(Event::Close(code, reason)) => {
                    // Going away, restart, error: reconnect.
                    log::info!("server closed ({code} {reason}); reconnecting");
                    self.retire();
                }
                Ok(ev) => {
                    self.works();
                    return Ok(ev);
                }
                Err(Error::Timeout(w)) => return Err(Error::Timeout(w)),
                Err(e) => {
                    log::warn!("connection lost: {e}; reconnecting");
                    self.retire();
                }
            }
        }
    }

    /// Sends a text message (see the type's docs for what happens across
    /// a reconnect).
    pub fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.send(Message::Text(Cow::Borrowed(text)))
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), Error> {
        self.send(Message::Binary(Cow::Borrowed(data)))
    }

    /// Sends a message, reconnecting first if needed. `Ok` means the
    /// message was accepted: it is written on this connection or, if that
    /// is lost first, on the next one.
    pub fn send(&mut self, msg: Message<'_>) -> Result<(), Error> {
        let len = msg.as_bytes().len();
        let deadline = self.write_timeout.map(|t| Instant::now() + t);
        loop {
            self.ensure()?;
            self.wait_for_room(len, deadline)?;
            let ws = self.ws.as_mut().expect("connected above");
            if is_lost(ws) {
                self.retire();
                continue;
            }
            match ws.queue(borrowed(&msg)) {
                Ok(end) => {
                    // A write error loses the connection; the message is
                    // kept and goes on the next one.
                    let _ = ws.pump_writes();
                    self.works();
                    self.unsent_bytes += len;
                    self.unsent.push_back(Unsent {
                        msg: msg.into_owned(),
                        end: Some(end),
                    });
                    self.prune();
                    return Ok(());
                }
                Err(_) if is_lost(ws) => self.retire(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes the current connection (no reconnect after it). Messages it
    /// did not write stay kept ([`Reconnecting::unsent`]) for the next
    /// connection, if any call makes one.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<Option<CloseInfo>, Error> {
        let Some(ws) = self.ws.as_mut() else {
            return Ok(None);
        };
        let res = ws.close(code, reason);
        self.fresh = false;
        self.retire();
        res.map(Some)
    }
}

/// The connection is gone, or will be once the events before its end are
/// decoded: it takes no more sends.
fn is_lost(ws: &WebSocket) -> bool {
    ws.client.eof || !ws.client.is_open()
}

/// A 4xx that another try will not change (408 timeout and 429 too many
/// requests are about this moment, not the request).
fn is_refusal(status: u16) -> bool {
    (400..500).contains(&status) && status != 408 && status != 429
}

fn borrowed<'a>(m: &'a Message<'_>) -> Message<'a> {
    match m {
        Message::Text(t) => Message::Text(Cow::Borrowed(t)),
        Message::Binary(b) => Message::Binary(Cow::Borrowed(b)),
    }
}

fn event_len(ev: &Event<'_>) -> usize {
    match ev {
        Event::Message(m) => m.as_bytes().len(),
        Event::Ping(p) | Event::Pong(p) => p.len(),
        Event::Close(_, r) => r.len(),
    }
}
