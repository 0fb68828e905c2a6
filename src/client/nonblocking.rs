//! The non-blocking [`Client`]: one outbound socket in the caller's mio
//! `Poll`, through connect, upgrade, messages and close.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::close::CloseCode;
use crate::config::Config;
use crate::error::{ApiError, Error, HandshakeError};
use crate::handshake::{generate_key, ClientRequest, Head, ResponseReader};
use crate::protocol::{CloseInfo, Connection, Event, Message, Role, SendStatus};
use crate::stream::Stream;

use super::{ClientOptions, Url};

#[derive(Debug)]
pub(super) enum State {
    /// TCP connect in progress; the request is queued.
    Connecting,
    /// Request sent (or being sent), reading the response.
    Handshake,
    Open,
    /// Close handshake done or connection failed: flush, then wait for
    /// the server to close TCP (RFC 6455 §7.1.1) until the deadline.
    Draining {
        deadline: Instant,
    },
    Done,
}

/// A non-blocking WebSocket client on one mio `TcpStream`.
#[derive(Debug)]
pub struct Client {
    stream: Stream,
    pub(super) state: State,
    pub(super) config: Arc<Config>,
    request: ClientRequest,
    /// The upgrade request not written yet, from `pre_pos` on (its own
    /// exact-size buffer: a queue chunk is 4 KiB, and thousands of them
    /// freed after the handshake leave the heap full of holes).
    pre: Vec<u8>,
    pre_pos: usize,
    reader: ResponseReader,
    conn: Option<Connection>,
    deadline: Instant,
    /// Input read but not decoded yet, from `pending_pos` on.
    pending: Vec<u8>,
    pending_pos: usize,
    /// Reading stopped because `pending` is full.
    read_stalled: bool,
    /// EOF (or a read error) seen while input was still undecoded: the
    /// events before it are handed out first.
    pub(super) eof: bool,
    /// The read error that ends the connection once that input is decoded.
    eof_error: Option<Error>,
    /// Bytes of the connection's frames handed to the transport so far:
    /// a frame that ends at or before this offset has left the write queue.
    pub(super) written: u64,
    now: Instant,
    protocol: Option<String>,
    pub(super) error: Option<Error>,
    close_info: Option<CloseInfo>,
}

impl Client {
    /// Starts connecting to `addr` for `url` (resolved by the caller).
    pub fn connect_addr(
        addr: SocketAddr,
        url: &Url,
        opts: &ClientOptions,
        now: Instant,
    ) -> Result<Client, Error> {
        opts.config.validate()?;
        let stream = if url.secure {
            #[cfg(feature = "tls")]
            {
                let cfg = match &opts.tls {
                    Some(c) => c.clone(),
                    None => crate::tls::client_config(None)?,
                };
                let name = crate::tls::server_name(&url.host)?;
                let conn = rustls::ClientConnection::new(cfg, name)
                    .map_err(|e| Error::Tls(e.to_string()))?;
                Stream::tls(TcpStream::connect(addr)?, conn.into())
            }
            #[cfg(not(feature = "tls"))]
            return Err(Error::Url(
                "wss:// needs the `tls` feature, which this build does not have".into(),
            ));
        } else {
            Stream::plain(TcpStream::connect(addr)?)
        };
        let mut headers = opts.headers.clone();
        if opts.config.deflate.enabled {
            headers.push((
                "Sec-WebSocket-Extensions".into(),
                crate::extension::client_offer(&opts.config.deflate),
            ));
        }
        let request = ClientRequest {
            host: url.host_header(),
            target: url.target.clone(),
            key: generate_key(),
            protocols: opts.protocols.clone(),
            headers,
        };
        let mut pre = Vec::new();
        request.write(&mut pre);
        Ok(Client {
            stream,
            state: State::Connecting,
            config: Arc::new(opts.config.clone()),
            request,
            pre,
            pre_pos: 0,
            reader: ResponseReader::new(),
            conn: None,
            deadline: now + opts.config.handshake_timeout,
            pending: Vec::new(),
            pending_pos: 0,
            read_stalled: false,
            eof: false,
            eof_error: None,
            written: 0,
            now,
            protocol: None,
            error: None,
            close_info: None,
        })
    }

    /// Registers the socket (readable and writable, edge-triggered).
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        registry.register(
            &mut self.stream.sock,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )
    }

    /// Removes the socket from `registry`.
    pub fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        registry.deregister(&mut self.stream.sock)
    }

    /// True once the upgrade succeeded and until a close is sent or received.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open) && self.conn.as_ref().is_some_and(|c| c.is_open())
    }

    /// True once the upgrade succeeded (even if the connection has closed
    /// since).
    pub fn is_upgraded(&self) -> bool {
        self.conn.is_some()
    }

    /// True when the connection is over (TCP closed or abandoned).
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// The subprotocol the server chose.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Why the connection ended, once it has.
    pub fn close_info(&self) -> Option<&CloseInfo> {
        self.close_info.as_ref()
    }

    /// The error that ended the connection, if any (handshake refused,
    /// protocol error, I/O error).
    pub fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// The next event received, decoded from the input now (replies such
    /// as pongs and the close echo are queued; call [`Client::flush`]).
    pub fn next_event(&mut self) -> Option<Event<'static>> {
        let ev = self.decode_one();
        let now = self.now;
        self.after_conn(now);
        if ev.is_none() {
            if self.eof {
                let err = self.eof_error.take();
                self.finish(err);
            } else if self.read_stalled {
                self.read_input();
                return self.next_event_again();
            }
        }
        ev
    }

    fn next_event_again(&mut self) -> Option<Event<'static>> {
        let ev = self.decode_one();
        let now = self.now;
        self.after_conn(now);
        ev
    }

    /// Where the last frame queued ends, in the connection's output (see
    /// `written`).
    pub(super) fn queued_end(&self) -> u64 {
        self.written + self.conn.as_ref().map_or(0, |c| c.buffered()) as u64
    }

    /// Bytes queued for writing.
    pub fn buffered(&self) -> usize {
        self.pre.len() - self.pre_pos + self.conn.as_ref().map_or(0, |c| c.buffered())
    }

    fn open_conn(&mut self) -> Result<&mut Connection, Error> {
        match (&self.state, self.conn.as_mut()) {
            (State::Open, Some(c)) => Ok(c),
            // The caller's mistake, not the server's.
            (State::Connecting | State::Handshake, _) => Err(Error::Api(ApiError::NotUpgraded)),
            _ => Err(Error::ConnectionClosed),
        }
    }

    /// Queues a text message.
    pub fn send_text(&mut self, text: &str) -> Result<SendStatus, Error> {
        self.open_conn()?.send_text(text)
    }

    /// Queues a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<SendStatus, Error> {
        self.open_conn()?.send_binary(data)
    }

    /// Queues a message.
    pub fn send(&mut self, msg: Message<'_>) -> Result<SendStatus, Error> {
        self.open_conn()?.send(msg)
    }

    /// Queues a ping.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.open_conn()?.ping(payload)
    }

    /// Starts the close handshake.
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) {
        match self.state {
            State::Open => {
                if let Some(c) = self.conn.as_mut() {
                    c.close(code, reason, now);
                }
            }
            State::Connecting | State::Handshake => self.finish(None),
            _ => {}
        }
    }

    /// When [`Client::handle_timeout`] must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Connecting | State::Handshake => Some(self.deadline),
            State::Open => self.conn.as_ref().and_then(|c| c.poll_timeout()),
            State::Draining { deadline } => Some(*deadline),
            State::Done => None,
        }
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &self.state {
            State::Connecting | State::Handshake if now >= self.deadline => {
                self.finish(Some(Error::Handshake(HandshakeError::Timeout)));
            }
            State::Open => {
                self.now = now;
                if let Some(c) = self.conn.as_mut() {
                    c.handle_timeout(now);
                }
                self.after_conn(now);
                if let Err(e) = self.flush() {
                    self.write_failed(e);
                }
            }
            State::Draining { deadline } if now >= *deadline => self.finish(None),
            _ => {}
        }
    }

    pub(super) fn finish(&mut self, err: Option<Error>) {
        if let Some(e) = err {
            if self.error.is_none() {
                self.error = Some(e);
            }
        }
        if let Some(c) = self.conn.as_mut() {
            c.handle_transport_closed("connection ended");
            if self.close_info.is_none() {
                self.close_info = c.close_info().cloned();
            }
        }
        if self.close_info.is_none() {
            self.close_info = Some(CloseInfo {
                code: CloseCode::ABNORMAL,
                reason: self
                    .error
                    .as_ref()
                    .map_or_else(|| "connection ended".to_owned(), |e| e.to_string()),
                clean: false,
            });
        }
        self.stream.shutdown();
        self.state = State::Done;
    }

    /// Does all the I/O the socket allows now: finishes the connect, writes
    /// queued bytes, reads input. Call it on every event for the client's
    /// token (and after queuing sends). Input is decoded lazily by
    /// [`Client::next_event`], so the application answers each message
    /// before later frames are looked at.
    pub fn handle_io(&mut self, now: Instant) {
        self.now = now;
        if let State::Connecting = self.state {
            match self.stream.sock.take_error() {
                Ok(Some(e)) | Err(e) => return self.finish(Some(e.into())),
                Ok(None) => {}
            }
            match self.stream.sock.peer_addr() {
                Ok(_) => self.state = State::Handshake,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => return self.finish(Some(e.into())),
            }
        }
        if let Err(e) = self.flush() {
            return self.write_failed(e);
        }
        self.read_input();
        if matches!(self.state, State::Draining { .. }) {
            // Nobody decodes after the close: drop what the server sends.
            self.pending = Vec::new();
            self.pending_pos = 0;
        }
        if let Err(e) = self.flush() {
            self.write_failed(e);
        }
    }

    /// A write failed: the connection is over, but what the server sent
    /// before is still read and handed out first (as after an EOF).
    pub(super) fn write_failed(&mut self, e: io::Error) {
        if matches!(self.state, State::Open) {
            self.read_input();
            if matches!(self.state, State::Open) && self.pending_pos < self.pending.len() {
                self.eof = true;
                if self.eof_error.is_none() {
                    self.eof_error = Some(e.into());
                }
                return;
            }
        }
        if !matches!(self.state, State::Done) {
            self.finish(Some(e.into()));
        }
    }

    /// Reads until the socket would block or enough undecoded input is
    /// held (the application decides the pace).
    fn read_input(&mut self) {
        // The read buffer is only scratch (what is read is decoded or
        // copied at once), so the clients of a thread share one: an idle
        // client owns no read buffer.
        let size = self.config.read_buffer_size.max(1);
        let mut buf = READ_SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
        if buf.len() < size {
            buf.resize(size, 0);
        }
        self.read_input_with(&mut buf[..size]);
        READ_SCRATCH.with(|s| *s.borrow_mut() = buf);
    }

    fn read_input_with(&mut self, buf: &mut [u8]) {
        let cap = self.config.max_message_size.saturating_add(buf.len());
        self.read_stalled = false;
        loop {
            if matches!(self.state, State::Done) || self.eof {
                return;
            }
            if self.pending.len() - self.pending_pos > cap {
                self.read_stalled = true;
                return;
            }
            let n = match self.stream.read(buf) {
                Ok(0) => {
                    let err = match self.state {
                        State::Handshake => Some(Error::Handshake(HandshakeError::Eof)),
                        _ => None,
                    };
                    if matches!(self.state, State::Open) && self.pending_pos < self.pending.len() {
                        // Decode what arrived before the EOF first.
                        self.eof = true;
                        return;
                    }
                    return self.finish(err);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // After the close handshake a reset is just the end.
                Err(_) if matches!(self.state, State::Draining { .. }) => return self.finish(None),
                Err(e)
                    if matches!(self.state, State::Open)
                        && self.pending_pos < self.pending.len() =>
                {
                    // Like an EOF: what arrived before the error is
                    // decoded and handed out first, not dropped.
                    self.eof = true;
                    self.eof_error = Some(e.into());
                    return;
                }
                Err(e) => return self.finish(Some(e.into())),
            };
            match self.state {
                State::Handshake => self.handshake_input(&buf[..n]),
                State::Open => self.pending.extend_from_slice(&buf[..n]),
                _ => {}
            }
        }
    }

    fn handshake_input(&mut self, data: &[u8]) {
        let c = &self.config;
        match self.reader.feed(data, c.max_handshake_bytes, c.max_headers) {
            Ok(Head::Partial) => {}
            Ok(Head::Complete(resp, rest)) => {
                match resp.validate_with(&self.request, &self.config.deflate) {
                    Ok((protocol, _deflate)) => {
                        self.protocol = protocol;
                        self.state = State::Open;
                        #[allow(unused_mut)]
                        let mut conn = Connection::new(Role::Client, self.config.clone(), self.now);
                        #[cfg(feature = "deflate")]
                        if let Some(p) = _deflate {
                            conn.enable_deflate(&p);
                        }
                        self.conn = Some(conn);
                        // The request and the response's bytes are not
                        // needed any more: an idle client keeps neither.
                        self.reader = ResponseReader::new();
                        self.request = ClientRequest::default();
                        // Frames that came with the response.
                        self.pending = rest;
                        self.pending_pos = 0;
                    }
                    Err(e) => self.finish(Some(e.into())),
                }
            }
            Err(e) => self.finish(Some(e.into())),
        }
    }

    /// Decodes the next event from the input held.
    fn decode_one(&mut self) -> Option<Event<'static>> {
        let conn = self.conn.as_mut()?;
        while self.pending_pos < self.pending.len() {
            let mut input = &mut self.pending[self.pending_pos..];
            let before = input.len();
            let res = conn.poll_event(&mut input, self.now);
            self.pending_pos += before - input.len();
            match res {
                Ok(Some(ev)) => return Some(into_owned(ev)),
                Ok(None) => {}
                Err(e) => {
                    self.error = Some(e);
                    break;
                }
            }
        }
        // Released, not kept at the size of the largest burst: an idle
        // client holds no input buffer.
        self.pending = Vec::new();
        self.pending_pos = 0;
        None
    }

    fn after_conn(&mut self, now: Instant) {
        if let (State::Open, Some(c)) = (&self.state, &self.conn) {
            if c.is_closed() {
                self.close_info = c.close_info().cloned();
                if self
                    .close_info
                    .as_ref()
                    .is_some_and(|i| i.code == CloseCode::ABNORMAL)
                {
                    // No close handshake (dead peer, timeout): nothing to
                    // wait for.
                    self.finish(None);
                    return;
                }
                self.state = State::Draining {
                    deadline: now + self.config.close_timeout,
                };
            }
        }
    }

    /// Writes what is queued; `Ok` even if some is left (the socket is full).
    pub fn flush(&mut self) -> io::Result<()> {
        if matches!(self.state, State::Connecting | State::Done) {
            return Ok(());
        }
        self.stream.flush_records()?;
        while self.pre_pos < self.pre.len() {
            match self.stream.write(&self.pre[self.pre_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.pre_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if !self.pre.is_empty() {
            self.pre = Vec::new();
            self.pre_pos = 0;
        }
        if let Some(c) = self.conn.as_mut() {
            let before = c.buffered();
            let res = c.write_to(&mut self.stream);
            // Counted even when the write fails part way.
            self.written += (before - c.buffered()) as u64;
            res?;
        }
        Ok(())
    }
}

thread_local! {
    /// The read buffer `read_input` lends to each client of this thread.
    static READ_SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn into_owned(ev: Event<'_>) -> Event<'static> {
    match ev {
        Event::Message(m) => Event::Message(m.into_owned()),
        Event::Ping(p) => Event::Ping(p.into_owned().into()),
        Event::Pong(p) => Event::Pong(p.into_owned().into()),
        Event::Close(c, r) => Event::Close(c, r.into_owned().into()),
    }
}
