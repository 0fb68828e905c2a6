//! The blocking [`WebSocket`]: a [`Client`] with its own `Poll`, every call
//! bounded by a timeout.

use std::borrow::Cow;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use crate::close::CloseCode;
use crate::error::{Error, HandshakeError};
use crate::protocol::{CloseInfo, Event, Message};

use super::nonblocking::State;
use super::{Client, ClientOptions, Url};

/// A blocking WebSocket client. Every call is bounded: `recv` by
/// [`WebSocket::set_read_timeout`], sends by
/// [`WebSocket::set_write_timeout`], connecting by `handshake_timeout`,
/// closing by `close_timeout`.
///
/// Sends apply backpressure: while more than `write_buffer_high` bytes are
/// queued (the server reads more slowly than we send), a send waits until
/// the queue drains to `write_buffer_low`, so a fast sender never reaches
/// `write_buffer_limit` and its overflow policy.
#[derive(Debug)]
pub struct WebSocket {
    pub(super) client: Client,
    poll: Poll,
    events: Events,
    read_timeout: Option<Duration>,
    write_timeout: Option<Duration>,
}

const TOKEN: Token = Token(0);

/// How long a send waits for a server that does not read, by default.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// The most bytes a message of `len` bytes can take on the wire: the
/// largest header, and deflate's worst case for data it cannot compress
/// (zlib's `deflateBound`).
fn worst_frame_len(len: usize) -> usize {
    len.saturating_add(len >> 12)
        .saturating_add(len >> 14)
        .saturating_add(64)
}

/// Connects to `url` with default options and waits for the upgrade.
pub fn connect(url: &str) -> Result<WebSocket, Error> {
    connect_with(url, &ClientOptions::default())
}

/// Connects to `url` with `opts`, trying each resolved address in turn.
pub fn connect_with(url: &str, opts: &ClientOptions) -> Result<WebSocket, Error> {
    let parsed = Url::parse(url)?;
    let addrs: Vec<SocketAddr> = (parsed.host.as_str(), parsed.port)
        .to_socket_addrs()
        .map_err(|e| Error::Url(format!("'{url}': cannot resolve {}: {e}", parsed.host)))?
        .collect();
    let mut last = Error::Url(format!("'{url}': {} resolves to no address", parsed.host));
    for addr in addrs {
        match WebSocket::connect_addr(addr, &parsed, opts) {
            Ok(ws) => return Ok(ws),
            // A refusal from the server itself is final; try other
            // addresses only for network errors.
            Err(e @ Error::Handshake(_)) => return Err(e),
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl WebSocket {
    /// Connects to one address and waits for the upgrade.
    pub fn connect_addr(
        addr: SocketAddr,
        url: &Url,
        opts: &ClientOptions,
    ) -> Result<WebSocket, Error> {
        let now = Instant::now();
        let mut client = Client::connect_addr(addr, url, opts, now)?;
        let poll = Poll::new()?;
        client.register(poll.registry(), TOKEN)?;
        let mut ws = WebSocket {
            client,
            poll,
            events: Events::with_capacity(8),
            read_timeout: None,
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
        };
        while !ws.client.is_upgraded() {
            if ws.client.is_done() {
                return Err(ws
                    .client
                    .take_error()
                    .unwrap_or(Error::Handshake(HandshakeError::Eof)));
            }
            ws.wait(None)?;
        }
        Ok(ws)
    }

    /// Waits for I/O or the client's next timer, at most until `limit`.
    pub(super) fn wait(&mut self, limit: Option<Instant>) -> Result<(), Error> {
        let now = Instant::now();
        let next = match (self.client.poll_timeout(), limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = next.map(|t| t.saturating_duration_since(now));
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
        let now = Instant::now();
        self.client.handle_io(now);
        self.client.handle_timeout(now);
        Ok(())
    }

    /// Limits how long [`WebSocket::recv`] waits (`None`: forever, but the
    /// heartbeat, if configured, still detects a dead server).
    pub fn set_read_timeout(&mut self, t: Option<Duration>) {
        self.read_timeout = t;
    }

    /// Limits how long a send waits for the queue to drain (default
    /// [`DEFAULT_WRITE_TIMEOUT`]; `None`: as long as the connection lives).
    /// A send that times out returns [`Error::Timeout`] and queues nothing.
    pub fn set_write_timeout(&mut self, t: Option<Duration>) {
        self.write_timeout = t;
    }

    /// The send timeout (see [`WebSocket::set_write_timeout`]).
    pub fn write_timeout(&self) -> Option<Duration> {
        self.write_timeout
    }

    /// The subprotocol the server chose.
    pub fn protocol(&self) -> Option<&str> {
        self.client.protocol()
    }

    /// The underlying non-blocking client.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// Writes what the socket takes now. A failed write ends the
    /// connection (later calls say so) and is returned.
    pub(super) fn pump_writes(&mut self) -> Result<(), Error> {
        if let Err(e) = self.client.flush() {
            // The client keeps a copy for `recv` and `close_info`.
            let copy = io::Error::new(e.kind(), e.to_string());
            self.client.write_failed(copy);
            return Err(e.into());
        }
        Ok(())
    }

    /// Waits until a message of `len` bytes may be queued: the queue is at
    /// or below the high water mark (once above it, down to the low one)
    /// and the message fits under `write_buffer_limit`. Bounded by the
    /// write timeout.
    fn wait_for_room(&mut self, len: usize) -> Result<(), Error> {
        let c = &self.client.config;
        let (high, low, limit) = (
            c.write_buffer_high,
            c.write_buffer_low,
            c.write_buffer_limit,
        );
        let need = worst_frame_len(len);
        // A message is always accepted into an empty queue.
        let fits = |b: usize| b == 0 || b.saturating_add(need) <= limit;
        let b = self.client.buffered();
        if b <= high && fits(b) {
            return Ok(());
        }
        let deadline = self.write_timeout.map(|t| Instant::now() + t);
        loop {
            let b = self.client.buffered();
            if b <= low && fits(b) {
                return Ok(());
            }
            if self.client.eof || !self.client.is_open() {
                // Lost or closing: nothing more will drain; the send
                // reports why.
                return Ok(());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout("send: the server is not reading"));
            }
            self.wait(deadline)?;
        }
    }

    /// Queues `msg` once there is room (see [`WebSocket::wait_for_room`]),
    /// without writing it yet. Returns where its frame ends in the
    /// connection's output (compare with `Client::written`).
    pub(super) fn queue(&mut self, msg: Message<'_>) -> Result<u64, Error> {
        self.wait_for_room(msg.as_bytes().len())?;
        if self.client.eof {
            // The server is gone; the events before its EOF wait for recv.
            return Err(Error::ConnectionClosed);
        }
        self.client.send(msg)?;
        Ok(self.client.queued_end())
    }

    /// Sends a text message: queued, then written as far as the socket
    /// takes (the rest goes out during later calls). Waits first while the
    /// queue is full (see the type's docs); a send that returns an error
    /// other than an I/O error queued nothing.
    pub fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.send(Message::Text(Cow::Borrowed(text)))
    }

    /// Sends a binary message (see [`WebSocket::send_text`]).
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), Error> {
        self.send(Message::Binary(Cow::Borrowed(data)))
    }

    /// Sends a message (see [`WebSocket::send_text`]).
    pub fn send(&mut self, msg: Message<'_>) -> Result<(), Error> {
        self.queue(msg)?;
        self.pump_writes()
    }

    /// Sends a ping (control frames are small and skip the wait).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.client.ping(payload)?;
        self.pump_writes()
    }

    /// Blocks until everything queued is written (bounded by
    /// `close_timeout`).
    pub fn flush(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + self.client.config.close_timeout;
        while self.client.buffered() > 0 && !self.client.is_done() {
            if Instant::now() >= deadline {
                return Err(Error::Timeout("flush"));
            }
            self.wait(Some(deadline))?;
        }
        Ok(())
    }

    /// Waits for the next event: a message, ping, pong or the server's
    /// close. After the connection ends, returns `Err(ConnectionClosed)`
    /// (or the error that ended it).
    pub fn recv(&mut self) -> Result<Event<'static>, Error> {
        let deadline = self.read_timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(ev) = self.client.next_event() {
                // Pongs and the close echo go out now.
                if let Err(e) = self.client.flush() {
                    self.client.write_failed(e);
                }
                return Ok(ev);
            }
            if let Some(err) = self.client.error.take() {
                let _ = self.client.flush();
                return Err(err);
            }
            if !matches!(self.client.state, State::Open | State::Draining { .. }) {
                return Err(self.client.take_error().unwrap_or(Error::ConnectionClosed));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::Timeout("recv"));
            }
            self.wait(deadline)?;
        }
    }

    /// Waits for the next message, skipping pings and pongs. A close from
    /// the server returns `Err(ConnectionClosed)`; see
    /// [`WebSocket::close_info`].
    pub fn recv_message(&mut self) -> Result<Message<'static>, Error> {
        loop {
            match self.recv()? {
                Event::Message(m) => return Ok(m),
                Event::Close(..) => return Err(Error::ConnectionClosed),
                _ => {}
            }
        }
    }

    /// Closes: sends a close frame (after what is queued), waits for the
    /// server's and for the server to close TCP (bounded by
    /// `close_timeout`). Returns how the connection ended. Messages that
    /// arrive meanwhile are discarded: `recv` first what you need.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<CloseInfo, Error> {
        self.client.close(code, reason, Instant::now());
        self.pump_writes()?;
        let deadline = Instant::now() + self.client.config.close_timeout * 2;
        while !self.client.is_done() && Instant::now() < deadline {
            self.wait(Some(deadline))?;
            while self.client.next_event().is_some() {}
        }
        if !self.client.is_done() {
            self.client.finish(None);
        }
        Ok(self.client.close_info().cloned().unwrap_or(CloseInfo {
            code: CloseCode::ABNORMAL,
            reason: String::new(),
            clean: false,
        }))
    }

    /// How the connection ended, once it has.
    pub fn close_info(&self) -> Option<&CloseInfo> {
        self.client.close_info()
    }
}
