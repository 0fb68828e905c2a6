//! The sans-IO connection: one WebSocket's state machine, after the opening
//! handshake. No sockets, no clocks, no threads.
//!
//! # Using a [`Connection`]
//!
//! Inputs (`handle_*` and sends):
//! - [`Connection::poll_event`] takes received bytes (a mutable slice: frames
//!   are unmasked in place) and returns the next [`Event`]. Call it until it
//!   returns `Ok(None)`: by then every byte was consumed, and an incomplete
//!   tail was copied into the connection.
//! - [`Connection::payload_buf`] and [`Connection::payload_filled`]: while a
//!   large binary frame arrives, the rest of its payload can be read
//!   straight into the message instead of into a read buffer and copied.
//! - [`Connection::send_text`], [`Connection::send_binary`],
//!   [`Connection::ping`], [`Connection::close`] and friends queue frames.
//! - [`Connection::handle_timeout`] drives heartbeats and the close timeout.
//!
//! A send that returns an error changed nothing: not the write queue, not
//! the compressor's window, not the message in progress. The one exception
//! is the overflow policy `Close`, which closes the connection when the
//! write queue would pass its limit. A caller's mistake (a control opcode
//! given to `send_frame`, a new message inside a fragmented one, a ping
//! over 125 bytes) is an [`Error::Api`], never a [`ProtocolError`], which
//! means the peer broke the protocol.
//!
//! Outputs (`poll_*` and getters):
//! - [`Connection::write_to`] writes queued bytes to any `io::Write`.
//! - [`Connection::poll_timeout`] says when to call `handle_timeout` next.
//! - [`Connection::is_closed`]: once true and nothing is left to write, the
//!   transport should be closed (a server closes TCP first, RFC 6455 §7.1.1).
//!
//! Messages contained whole in the input are handed out borrowing it (no
//! copy). Only a fragmented message in progress, or a frame cut by the end
//! of the input, is copied into the connection (the rest of a large binary
//! frame can be read straight into it instead: `payload_buf`). A normal close is an event,
//! never an error. A protocol violation fails the connection (§7.1.7): a
//! close frame with the matching code is queued, the error is returned
//! once, and no more input is processed.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use crate::buffer::WriteQueue;
use crate::close::CloseCode;
use crate::config::Config;
use crate::deflate::DeflateState;
use crate::error::{Error, ProtocolError};
use crate::frame::{OpCode, MAX_HEADER_LEN};
pub use crate::role::Role;

mod deflate;
mod rx;
mod tx;

pub use tx::encode_shared;

/// RSV1: the message is compressed (permessage-deflate).
const RSV1: u8 = 0b100;

/// A complete message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    /// UTF-8 text.
    Text(Cow<'a, str>),
    /// Binary data.
    Binary(Cow<'a, [u8]>),
}

impl Message<'_> {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// Detaches the message from the input buffer.
    pub fn into_owned(self) -> Message<'static> {
        match self {
            Message::Text(t) => Message::Text(Cow::Owned(t.into_owned())),
            Message::Binary(b) => Message::Binary(Cow::Owned(b.into_owned())),
        }
    }
}

/// Something the peer did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<'a> {
    /// A message arrived.
    Message(Message<'a>),
    /// A ping arrived; the pong is already queued.
    Ping(Cow<'a, [u8]>),
    /// A pong arrived.
    Pong(Cow<'a, [u8]>),
    /// The peer's close frame arrived: code (1005 if none) and reason. The
    /// reply is queued if we had not sent a close; the connection is now
    /// closed.
    Close(CloseCode, Cow<'a, str>),
}

/// Result of queuing a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendStatus {
    /// Queued; the queue is below its high water mark.
    Queued,
    /// Queued, but the queue is above its high water mark: stop sending to
    /// this connection until it drains.
    Full,
}

/// Why and how the connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseInfo {
    /// The code: the peer's (or ours, if we closed or failed the
    /// connection). 1006 when there was no close handshake.
    pub code: CloseCode,
    /// The reason that went with the code.
    pub reason: String,
    /// True if the close handshake completed (both close frames exchanged).
    pub clean: bool,
}

#[derive(Debug)]
enum State {
    Open,
    /// We sent a close frame and wait for the peer's until `deadline`.
    Closing {
        deadline: Instant,
        info: Box<CloseInfo>,
    },
    /// Done: flush what is queued, then close the transport.
    Closed(Box<CloseInfo>),
}

/// One WebSocket connection's protocol state. See the module docs.
#[derive(Debug)]
pub struct Connection {
    config: Arc<Config>,
    role: Role,
    state: State,
    out: WriteQueue,
    /// Header bytes cut by the end of the last input.
    hdr: [u8; MAX_HEADER_LEN],
    hdr_len: u8,
    /// Allocated only while a frame or fragmented message is in progress.
    rx: Option<Box<rx::Rx>>,
    last_recv: Instant,
    ping_sent: Option<Instant>,
    /// RSV bits that negotiated extensions may use.
    allowed_rsv: u8,
    /// permessage-deflate state, when negotiated.
    deflate: Option<Box<DeflateState>>,
    /// A message sent with `send_frame` is unfinished: only its
    /// continuations (and control frames) may be sent until its last frame.
    sending_fragments: bool,
    /// `poll_timeout` may now be earlier than it was (see
    /// [`Connection::take_timeout_moved`]).
    timeout_moved: bool,
}

impl Connection {
    /// A connection whose opening handshake finished at `now`.
    pub fn new(role: Role, config: Arc<Config>, now: Instant) -> Self {
        Connection {
            config,
            role,
            state: State::Open,
            out: WriteQueue::new(),
            hdr: [0; MAX_HEADER_LEN],
            hdr_len: 0,
            rx: None,
            last_recv: now,
            ping_sent: None,
            allowed_rsv: 0,
            deflate: None,
            sending_fragments: false,
            timeout_moved: true,
        }
    }

    // ------------------------------------------------------------ getters

    /// Server or client.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The configuration.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// True while messages can be sent (no close sent or received).
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// True once the close handshake is done, the connection failed, or a
    /// timeout hit: write what is queued, then close the transport.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed(_))
    }

    /// How the connection ended, once [`Connection::is_closed`].
    pub fn close_info(&self) -> Option<&CloseInfo> {
        match &self.state {
            State::Closed(info) => Some(info),
            _ => None,
        }
    }

    /// Bytes queued for writing.
    pub fn buffered(&self) -> usize {
        self.out.len()
    }

    /// True when there is something to write.
    #[inline]
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// True when the queue is below the high water mark and the connection
    /// still reads (backpressure: a peer that does not read is not read).
    pub fn wants_read(&self) -> bool {
        !self.is_closed() && self.out.len() <= self.config.write_buffer_high
    }

    // ------------------------------------------------------------- output

    /// Writes queued bytes to `w` until done or `w` would block.
    pub fn write_to<W: std::io::Write + ?Sized>(&mut self, w: &mut W) -> std::io::Result<usize> {
        self.out.write_to(w)
    }

    /// Queues raw bytes ahead of any later frame: the server's handshake
    /// response, so it shares the connection's write queue.
    pub fn push_raw(&mut self, bytes: &[u8]) {
        self.out.push_slice(bytes);
    }

    /// Moves all queued bytes to `out` (in-memory transports, tests).
    pub fn drain_output(&mut self, out: &mut Vec<u8>) {
        self.out.drain_into(out);
    }

    /// When [`Connection::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Open => {
                let c = &self.config;
                let idle = c.idle_timeout.map(|d| self.last_recv + d);
                let heartbeat = match self.ping_sent {
                    Some(sent) => Some(sent + c.pong_timeout),
                    None => c.ping_interval.map(|d| self.last_recv + d),
                };
                match (idle, heartbeat) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            State::Closing { deadline, .. } => Some(*deadline),
            State::Closed(_) => None,
        }
    }

    /// True once after [`Connection::poll_timeout`] may have become
    /// earlier than it was, or than `None` (a close started, a heartbeat
    /// ping went out or the peer spoke while one was out, a timeout was
    /// handled; and at first). Otherwise only the time of the last receipt
    /// moved, which moves deadlines later: a timer set for what
    /// `poll_timeout` said before fires early, finds nothing to do, and
    /// asks again. So a caller that keeps one timer per connection need not
    /// ask `poll_timeout` after every event, only when this says so, when
    /// it has no timer set, or when its timer fired.
    pub(crate) fn take_timeout_moved(&mut self) -> bool {
        std::mem::take(&mut self.timeout_moved)
    }

    /// [`Connection::take_timeout_moved`] without taking it.
    pub(crate) fn timeout_moved(&self) -> bool {
        self.timeout_moved
    }

    /// Acts on the timers due at `now`: sends a heartbeat ping, drops a
    /// peer whose pong is late, closes an idle connection, gives up on a
    /// close handshake that takes too long.
    pub fn handle_timeout(&mut self, now: Instant) {
        // Whatever it does, the next deadline is to be asked for again.
        self.timeout_moved = true;
        match &mut self.state {
            State::Open => {
                let c = &*self.config;
                let (pong_timeout, idle_timeout, ping_interval) =
                    (c.pong_timeout, c.idle_timeout, c.ping_interval);
                if let Some(sent) = self.ping_sent {
                    if now >= sent + pong_timeout {
                        self.abort(CloseCode::ABNORMAL, "no pong within pong_timeout");
                        return;
                    }
                }
                if let Some(idle) = idle_timeout {
                    if now >= self.last_recv + idle {
                        self.close(CloseCode::GOING_AWAY, "idle timeout", now);
                        return;
                    }
                }
                if let (None, Some(interval)) = (self.ping_sent, ping_interval) {
                    if now >= self.last_recv + interval {
                        self.ping_sent = Some(now);
                        self.out.push_frame(&self.header(OpCode::Ping, 0), &[]);
                    }
                }
            }
            State::Closing { deadline, info } => {
                if now >= *deadline {
                    let info = CloseInfo {
                        code: CloseCode::ABNORMAL,
                        reason: format!("close handshake timed out ({})", info.reason),
                        clean: false,
                    };
                    self.state = State::Closed(Box::new(info));
                }
            }
            State::Closed(_) => {}
        }
    }

    /// The transport ended (EOF or error) without a close handshake.
    pub fn handle_transport_closed(&mut self, reason: &str) {
        if !self.is_closed() {
            self.out.clear();
            self.state = State::Closed(Box::new(CloseInfo {
                code: CloseCode::ABNORMAL,
                reason: reason.to_owned(),
                clean: false,
            }));
        }
    }

    // -------------------------------------------------------------- input

    /// Processes received bytes and returns the next event, consuming
    /// `input` as it goes. Returns `Ok(None)` once `input` is used up (an
    /// incomplete frame is kept inside) or the connection is closed (the
    /// rest of `input` is discarded). A protocol error fails the connection
    /// and is returned once.
    #[inline]
    pub fn poll_event<'a>(
        &mut self,
        input: &mut &'a mut [u8],
        now: Instant,
    ) -> Result<Option<Event<'a>>, Error> {
        // Asked once more after the last event of every read: without
        // input and with no frame in progress (so no directly read bytes
        // either) there is nothing to do, and that answer stays inline in
        // the caller's loop.
        if input.is_empty() && self.rx.is_none() {
            return Ok(None);
        }
        self.process_input(input, now)
    }

    fn process_input<'a>(
        &mut self,
        input: &mut &'a mut [u8],
        now: Instant,
    ) -> Result<Option<Event<'a>>, Error> {
        if !input.is_empty() || self.has_filled() {
            self.last_recv = now;
            // The heartbeat deadline goes from the pong's to the next
            // ping's, which may be sooner.
            if self.ping_sent.take().is_some() {
                self.timeout_moved = true;
            }
        }
        match self.read_event(input) {
            Ok(ev) => Ok(ev),
            Err(e) => {
                *input = &mut [];
                self.fail(&e);
                Err(Error::Protocol(e))
            }
        }
    }

    /// Fails the connection for a protocol error (RFC 6455 §7.1.7).
    fn fail(&mut self, e: &ProtocolError) {
        let code = e.close_code();
        let reason = e.to_string();
        if self.is_open() {
            self.push_close(code, &reason);
        }
        self.rx = None;
        self.state = State::Closed(Box::new(CloseInfo {
            code,
            reason,
            clean: false,
        }));
    }

    /// Ends the connection at once, without a close handshake.
    fn abort(&mut self, code: CloseCode, reason: &str) {
        self.out.clear();
        self.rx = None;
        self.state = State::Closed(Box::new(CloseInfo {
            code,
            reason: reason.to_owned(),
            clean: false,
        }));
    }
}

#[cfg(test)]
mod tests;
