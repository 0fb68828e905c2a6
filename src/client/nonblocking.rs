//! The non-blocking [`Client`]: one outbound socket in the caller's mio
//! `Poll`, through connect, upgrade, messages and close.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::close::CloseCode;
use crate::config::Config;
use crate::error::{ApiError, Error, HandshakeError};
use crate::extension::DeflateParams;
use crate::handshake::{generate_key, ClientRequest, ResponseReader};
use crate::protocol::{CloseInfo, Connection, Event, Message, SendStatus};
use crate::stream::Stream;

use super::readbuf::{give_read_buf, take_read_buf};
use super::upgrade::Upgrade;
use super::{ClientOptions, Url};

/// `repr(u8)`: a tag byte of its own, so asking for a state is one
/// compare (without it the tag hides in `deadline`'s nanoseconds, and a
/// `match` decodes it with a subtract and a conditional move).
#[derive(Debug)]
#[repr(u8)]
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
///
/// An idle client owns no buffer: the read buffer is lent by a per-thread
/// pool while input waits to be decoded, and the [`Config`] is shared by
/// the clients made from one [`ClientOptions`].
#[derive(Debug)]
pub struct Client {
    stream: Stream,
    pub(super) state: State,
    pub(super) config: Arc<Config>,
    pub(super) upgrade: Option<Box<Upgrade>>,
    pub(super) conn: Option<Connection>,
    /// Input read but not decoded yet: `input[input_pos..input_end]`. The
    /// buffer (from the pool, or the bytes that came with the response) is
    /// held only while undecoded input is in it, and never grows: a
    /// client holds at most one read buffer of input.
    pub(super) input: Vec<u8>,
    pub(super) input_pos: usize,
    pub(super) input_end: usize,
    /// Reading stopped because `input` is full.
    read_stalled: bool,
    /// Driven by `handle_event`: a short read ends reading (see there).
    edge: bool,
    /// A readiness event said the server's side ended: read to the end.
    read_closed: bool,
    /// EOF (or a read error) seen while input was still undecoded: the
    /// events before it are handed out first.
    pub(super) eof: bool,
    /// The read error that ends the connection once that input is decoded.
    eof_error: Option<Error>,
    /// Bytes of the connection's frames handed to the transport so far:
    /// a frame that ends at or before this offset has left the write queue.
    pub(super) written: u64,
    pub(super) now: Instant,
    pub(super) protocol: Option<Box<str>>,
    /// The permessage-deflate parameters agreed in the upgrade.
    pub(super) deflate: Option<DeflateParams>,
    /// From `connect_addr` to the answer's arrival, once upgraded.
    pub(super) upgrade_time: Option<Duration>,
    pub(super) error: Option<Error>,
    close_info: Option<Box<CloseInfo>>,
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
        let tcp = TcpStream::connect(addr)?;
        if opts.nodelay {
            tcp.set_nodelay(true)?;
        }
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
                Stream::tls(tcp, conn.into())
            }
            #[cfg(not(feature = "tls"))]
            return Err(Error::Url(
                "wss:// needs the `tls` feature, which this build does not have".into(),
            ));
        } else {
            Stream::plain(tcp)
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
            config: opts.shared_config(),
            upgrade: Some(Box::new(Upgrade {
                request,
                pre,
                pre_pos: 0,
                reader: ResponseReader::new(),
                started: now,
                deadline: now + opts.config.handshake_timeout,
            })),
            conn: None,
            input: Vec::new(),
            input_pos: 0,
            input_end: 0,
            read_stalled: false,
            edge: false,
            read_closed: false,
            eof: false,
            eof_error: None,
            written: 0,
            now,
            protocol: None,
            deflate: None,
            upgrade_time: None,
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
        self.close_info.as_deref()
    }

    /// The error that ended the connection, if any (handshake refused,
    /// protocol error, I/O error).
    pub fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// The next event received, decoded from the input now (replies such
    /// as pongs and the close echo are queued; call [`Client::flush`]).
    /// Call it until it returns `None`. A message that arrived in one
    /// frame is copied out of the read buffer once; see
    /// [`Client::next_event_with`] for no copy.
    pub fn next_event(&mut self) -> Option<Event<'static>> {
        self.next_event_with(into_owned)
    }

    /// [`Client::next_event`] without a copy: `f` gets the event
    /// borrowed, a message that arrived in one frame straight from the read
    /// buffer (one that came in fragments, or cut by the end of a read, is
    /// the connection's own buffer, moved out). Returns what `f` returned;
    /// `None` when no complete event is held. Call it until then.
    pub fn next_event_with<R>(&mut self, f: impl FnOnce(Event<'_>) -> R) -> Option<R> {
        loop {
            if let (true, Some(conn)) = (self.input_pos < self.input_end, self.conn.as_mut()) {
                let mut input = &mut self.input[self.input_pos..self.input_end];
                let before = input.len();
                let res = conn.poll_event(&mut input, self.now);
                self.input_pos += before - input.len();
                match res {
                    Ok(Some(ev)) => {
                        // Only an event that closed the connection changes
                        // the client's state, and a close frame is the one
                        // event that does (a protocol error is an `Err`).
                        // Asked of the event, which `f` matches on too, so
                        // the test folds into `f`'s own.
                        let closed = matches!(ev, Event::Close(..));
                        debug_assert_eq!(closed, conn.is_closed(), "{ev:?}");
                        let r = f(ev);
                        if closed {
                            let now = self.now;
                            self.after_conn(now);
                        }
                        return Some(r);
                    }
                    // Every byte was taken (a cut frame's start is kept
                    // by the connection).
                    Ok(None) => self.input_pos = self.input_end,
                    Err(e) => {
                        self.error = Some(e);
                        self.input_pos = self.input_end;
                    }
                }
                continue;
            }
            self.release_input();
            let now = self.now;
            self.after_conn(now);
            if self.eof {
                let err = self.eof_error.take();
                self.finish(err);
                return None;
            }
            if !self.read_stalled || !matches!(self.state, State::Open) {
                return None;
            }
            self.read_input();
            if self.input_pos == self.input_end {
                return None;
            }
        }
    }

    /// Bytes of undecoded input this client holds (at most one read
    /// buffer).
    #[cfg(test)]
    pub(super) fn input_held(&self) -> usize {
        self.input.len()
    }

    /// Where the last frame queued ends, in the connection's output (see
    /// `written`).
    pub(super) fn queued_end(&self) -> u64 {
        self.written + self.conn.as_ref().map_or(0, |c| c.buffered()) as u64
    }

    /// Bytes queued for writing.
    pub fn buffered(&self) -> usize {
        self.upgrade.as_ref().map_or(0, |u| u.pre.len() - u.pre_pos)
            + self.conn.as_ref().map_or(0, |c| c.buffered())
    }

    /// Inlined into every send: the open case is two compares, the
    /// refusal is out of line.
    #[inline]
    fn open_conn(&mut self) -> Result<&mut Connection, Error> {
        match (&self.state, self.conn.as_mut()) {
            (State::Open, Some(c)) => Ok(c),
            (state, _) => Err(not_open(state)),
        }
    }

    /// The connection a message is queued on. Only the connection's own
    /// state is asked: the client's adds nothing for a message, since a
    /// client holds a connection only once upgraded, and one that is not
    /// `State::Open` any more holds a closed connection, which refuses
    /// with `ConnectionClosed` before anything else (as `open_conn`
    /// would). One compare fewer on every send.
    #[inline]
    fn message_conn(&mut self) -> Result<&mut Connection, Error> {
        debug_assert!(
            matches!(self.state, State::Open) || self.conn.as_ref().is_none_or(|c| c.is_closed()),
            "a client that is not open holds an open connection"
        );
        match self.conn.as_mut() {
            Some(c) => Ok(c),
            None => Err(not_open(&self.state)),
        }
    }

    /// Queues a text message.
    pub fn send_text(&mut self, text: &str) -> Result<SendStatus, Error> {
        self.message_conn()?.send_text(text)
    }

    /// Queues a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<SendStatus, Error> {
        self.message_conn()?.send_binary(data)
    }

    /// Queues a message.
    pub fn send(&mut self, msg: Message<'_>) -> Result<SendStatus, Error> {
        self.message_conn()?.send(msg)
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
            State::Connecting | State::Handshake => self.upgrade.as_ref().map(|u| u.deadline),
            State::Open => self.conn.as_ref().and_then(|c| c.poll_timeout()),
            State::Draining { deadline } => Some(*deadline),
            State::Done => None,
        }
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &self.state {
            State::Connecting | State::Handshake
                if self.upgrade.as_ref().is_none_or(|u| now >= u.deadline) =>
            {
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
                self.close_info = c.close_info().cloned().map(Box::new);
            }
        }
        if self.close_info.is_none() {
            self.close_info = Some(Box::new(CloseInfo {
                code: CloseCode::ABNORMAL,
                reason: self
                    .error
                    .as_ref()
                    .map_or_else(|| "connection ended".to_owned(), |e| e.to_string()),
                clean: false,
            }));
        }
        self.stream.shutdown();
        self.state = State::Done;
        self.upgrade = None;
        self.release_input();
    }

    /// Does all the I/O the socket allows now: finishes the connect, writes
    /// queued bytes, reads input. Call it on every event for the client's
    /// token (and after queuing sends). Input is decoded lazily by
    /// [`Client::next_event`], so the application answers each message
    /// before later frames are looked at.
    pub fn handle_io(&mut self, now: Instant) {
        self.edge = false;
        self.io(now);
    }

    /// [`Client::handle_io`] for one readiness event of the client's
    /// token, which tells more: a read shorter than asked for emptied the
    /// socket (the next bytes come with a new event), so reading stops
    /// there instead of reading once more to `WouldBlock`, one `recv` per
    /// event saved; after an event that says the server's side closed, it
    /// reads to the end.
    pub fn handle_event(&mut self, ev: &mio::event::Event, now: Instant) {
        self.edge = true;
        self.read_closed |= ev.is_read_closed() || ev.is_error();
        self.io(now);
    }

    fn io(&mut self, now: Instant) {
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
        if let Err(e) = self.flush() {
            self.write_failed(e);
        }
    }

    /// A write failed: the connection is over, but what the server sent
    /// before is still read and handed out first (as after an EOF).
    pub(super) fn write_failed(&mut self, e: io::Error) {
        if matches!(self.state, State::Open) {
            self.read_input();
            if matches!(self.state, State::Open) && self.input_pos < self.input_end {
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

    /// Reads until the socket would block (driven by `handle_event`: or a
    /// short read emptied it) or the read buffer is full of undecoded input (the application decides the pace: decoding it all
    /// reads on).
    fn read_input(&mut self) {
        self.read_stalled = false;
        loop {
            if matches!(self.state, State::Done) || self.eof {
                break;
            }
            if self.input_pos == self.input_end {
                (self.input_pos, self.input_end) = (0, 0);
            }
            if self.input_end == self.input.len() && !self.make_room() {
                self.read_stalled = true;
                return;
            }
            let asked = self.input.len() - self.input_end;
            let n = match self.stream.read(&mut self.input[self.input_end..]) {
                Ok(0) => {
                    let err = match self.state {
                        State::Handshake => Some(Error::Handshake(HandshakeError::Eof)),
                        _ => None,
                    };
                    if matches!(self.state, State::Open) && self.input_pos < self.input_end {
                        // Decode what arrived before the EOF first.
                        self.eof = true;
                        return;
                    }
                    return self.finish(err);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // After the close handshake a reset is just the end.
                Err(_) if matches!(self.state, State::Draining { .. }) => return self.finish(None),
                Err(e) if matches!(self.state, State::Open) && self.input_pos < self.input_end => {
                    // Like an EOF: what arrived before the error is
                    // decoded and handed out first, not dropped.
                    self.eof = true;
                    self.eof_error = Some(e.into());
                    return;
                }
                Err(e) => return self.finish(Some(e.into())),
            };
            match self.state {
                State::Handshake => {
                    let buf = std::mem::take(&mut self.input);
                    self.handshake_input(&buf[..n]);
                    give_read_buf(buf);
                }
                State::Open => self.input_end += n,
                // Nobody decodes after the close: what the server sends is
                // dropped.
                _ => {}
            }
            if self.edge && !self.read_closed && n < asked && self.stream.drained() {
                break;
            }
        }
        self.release_input();
    }

    /// Makes room to read after what is held: false if a whole read
    /// buffer of input waits to be decoded. The input is moved to the
    /// front of a whole read buffer: it was the exact-size bytes that came
    /// with the response, or undecoded input at the end of the buffer.
    fn make_room(&mut self) -> bool {
        let size = self.config.read_buffer_size.max(1);
        let (pos, end) = (self.input_pos, self.input_end);
        let held = end - pos;
        if held >= size {
            return false;
        }
        if self.input.len() == size {
            self.input.copy_within(pos..end, 0);
        } else {
            let mut buf = take_read_buf(size);
            // Most often nothing is held: no call to copy nothing.
            if held > 0 {
                buf[..held].copy_from_slice(&self.input[pos..end]);
            }
            give_read_buf(std::mem::replace(&mut self.input, buf));
        }
        (self.input_pos, self.input_end) = (0, held);
        true
    }

    /// Gives the read buffer back to the pool once all its input is
    /// decoded: an idle client holds none.
    fn release_input(&mut self) {
        if self.input_pos >= self.input_end || !matches!(self.state, State::Open) {
            give_read_buf(std::mem::take(&mut self.input));
            (self.input_pos, self.input_end) = (0, 0);
        }
    }

    /// Inlined: after each event, a compare rather than a call.
    #[inline]
    fn after_conn(&mut self, now: Instant) {
        if let (State::Open, Some(c)) = (&self.state, &self.conn) {
            if c.is_closed() {
                self.on_closed(now);
            }
        }
    }

    #[cold]
    fn on_closed(&mut self, now: Instant) {
        let Some(c) = &self.conn else { return };
        self.close_info = c.close_info().cloned().map(Box::new);
        if self
            .close_info
            .as_ref()
            .is_some_and(|i| i.code == CloseCode::ABNORMAL)
        {
            // No close handshake (dead peer, timeout): nothing to wait for.
            self.finish(None);
            return;
        }
        self.state = State::Draining {
            deadline: now + self.config.close_timeout,
        };
    }

    /// Writes what is queued; `Ok` even if some is left (the socket is full).
    #[inline]
    pub fn flush(&mut self) -> io::Result<()> {
        // Called two or three times per readiness event, most often with
        // nothing queued: then a few compares, not a call.
        if self.upgrade.is_none()
            && self.conn.as_ref().is_none_or(|c| !c.wants_write())
            && !self.stream.has_pending()
        {
            return Ok(());
        }
        self.write_queued()
    }

    fn write_queued(&mut self) -> io::Result<()> {
        if matches!(self.state, State::Connecting | State::Done) {
            return Ok(());
        }
        self.stream.flush_records()?;
        if let Some(up) = self.upgrade.as_mut() {
            while up.pre_pos < up.pre.len() {
                match self.stream.write(&up.pre[up.pre_pos..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => up.pre_pos += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            // Sent: only the request's key is still needed.
            up.pre = Vec::new();
            up.pre_pos = 0;
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

#[cold]
fn not_open(state: &State) -> Error {
    match state {
        // The caller's mistake, not the server's.
        State::Connecting | State::Handshake => Error::Api(ApiError::NotUpgraded),
        _ => Error::ConnectionClosed,
    }
}

fn into_owned(ev: Event<'_>) -> Event<'static> {
    match ev {
        Event::Message(m) => Event::Message(m.into_owned()),
        Event::Ping(p) => Event::Ping(p.into_owned().into()),
        Event::Pong(p) => Event::Pong(p.into_owned().into()),
        Event::Close(c, r) => Event::Close(c, r.into_owned().into()),
    }
}
