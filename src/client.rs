//! The client: the same sans-IO [`Connection`] driven for one outbound
//! socket.
//!
//! - [`Client`] is non-blocking: register it in your own mio `Poll`, call
//!   [`Client::handle_io`] on its events and [`Client::handle_timeout`] at
//!   [`Client::poll_timeout`], take events with [`Client::next_event`].
//! - [`WebSocket`] is the blocking convenience API: [`connect`], then
//!   `send_*`, `recv`, `close`, each bounded by timeouts.
//! - [`Reconnecting`] reconnects after an unexpected close or network error
//!   with exponential backoff and jitter ([`Backoff`]).

use std::io::{self, Read};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::buffer::WriteQueue;
use crate::close::CloseCode;
use crate::config::Config;
use crate::error::{Error, HandshakeError};
use crate::handshake::{generate_key, ClientRequest, Head, ResponseReader};
use crate::protocol::{CloseInfo, Connection, Event, Message, Role, SendStatus};
use crate::stream::Stream;

/// A parsed `ws://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// `wss://` (needs TLS).
    pub secure: bool,
    /// Host name or address (IPv6 without brackets).
    pub host: String,
    /// Port (default 80, or 443 for wss).
    pub port: u16,
    /// Path and query, starting with `/`.
    pub target: String,
}

impl Url {
    /// Parses `ws://host[:port][/path][?query]` (or `wss://`).
    pub fn parse(s: &str) -> Result<Url, Error> {
        let bad = |why: &str| Error::Url(format!("'{s}': {why}"));
        let (secure, rest) = if let Some(r) = s.strip_prefix("ws://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("wss://") {
            (true, r)
        } else {
            return Err(bad("must start with ws:// or wss://"));
        };
        let (authority, target) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err(bad("user info is not supported"));
        }
        let default_port = if secure { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("junk after ']'")),
            };
            (h.to_owned(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad("bad port"))?),
                None => (authority.to_owned(), default_port),
            }
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        if target.contains(|c: char| c.is_ascii_whitespace() || c.is_ascii_control()) {
            return Err(bad("white space in the path"));
        }
        Ok(Url {
            secure,
            host,
            port,
            target,
        })
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        let default = if self.secure { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// What a client asks for, beyond the URL.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Limits and timeouts (handshake_timeout covers connect and upgrade;
    /// ping_interval/pong_timeout give a client-side heartbeat).
    pub config: Config,
    /// Subprotocols to offer.
    pub protocols: Vec<String>,
    /// Extra request headers (Origin, Authorization, Cookie, ...).
    pub headers: Vec<(String, String)>,
    /// TLS settings for wss:// (default: verify against the bundled
    /// Mozilla roots; see [`crate::tls`]).
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        let config = Config {
            // A client usually wants to hear about a dead server soon and
            // has no reason to close an idle connection itself.
            idle_timeout: None,
            read_buffer_size: 64 << 10,
            ..Config::default()
        };
        ClientOptions {
            config,
            protocols: Vec::new(),
            headers: Vec::new(),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

#[derive(Debug)]
enum State {
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
    state: State,
    config: Arc<Config>,
    request: ClientRequest,
    pre: WriteQueue,
    reader: ResponseReader,
    conn: Option<Connection>,
    deadline: Instant,
    buf: Vec<u8>,
    /// Input read but not decoded yet, from `pending_pos` on.
    pending: Vec<u8>,
    pending_pos: usize,
    /// Reading stopped because `pending` is full.
    read_stalled: bool,
    /// EOF seen while input was still undecoded.
    eof: bool,
    now: Instant,
    protocol: Option<String>,
    error: Option<Error>,
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
        let mut bytes = Vec::new();
        request.write(&mut bytes);
        let mut pre = WriteQueue::new();
        pre.push_slice(&bytes);
        Ok(Client {
            stream,
            state: State::Connecting,
            buf: vec![0; opts.config.read_buffer_size],
            config: Arc::new(opts.config.clone()),
            request,
            pre,
            reader: ResponseReader::new(),
            conn: None,
            deadline: now + opts.config.handshake_timeout,
            pending: Vec::new(),
            pending_pos: 0,
            read_stalled: false,
            eof: false,
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
                self.finish(None);
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

    /// Bytes queued for writing.
    pub fn buffered(&self) -> usize {
        self.pre.len() + self.conn.as_ref().map_or(0, |c| c.buffered())
    }

    fn open_conn(&mut self) -> Result<&mut Connection, Error> {
        match (&self.state, self.conn.as_mut()) {
            (State::Open, Some(c)) => Ok(c),
            (State::Connecting | State::Handshake, _) => Err(Error::Handshake(HandshakeError::Eof)),
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
                let _ = self.flush();
            }
            State::Draining { deadline } if now >= *deadline => self.finish(None),
            _ => {}
        }
    }

    fn finish(&mut self, err: Option<Error>) {
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
            return self.finish(Some(e.into()));
        }
        self.read_input();
        if matches!(self.state, State::Draining { .. }) {
            // Nobody decodes after the close: drop what the server sends.
            self.pending.clear();
            self.pending_pos = 0;
        }
        if let Err(e) = self.flush() {
            self.finish(Some(e.into()));
        }
    }

    /// Reads until the socket would block or enough undecoded input is
    /// held (the application decides the pace).
    fn read_input(&mut self) {
        let cap = self.config.max_message_size.saturating_add(self.buf.len());
        self.read_stalled = false;
        loop {
            if matches!(self.state, State::Done) {
                return;
            }
            if self.pending.len() - self.pending_pos > cap {
                self.read_stalled = true;
                return;
            }
            let n = match self.stream.read(&mut self.buf) {
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
                Err(e) => return self.finish(Some(e.into())),
            };
            match self.state {
                State::Handshake => self.handshake_input(n),
                State::Open => self.pending.extend_from_slice(&self.buf[..n]),
                _ => {}
            }
        }
    }

    fn handshake_input(&mut self, n: usize) {
        let c = &self.config;
        match self
            .reader
            .feed(&self.buf[..n], c.max_handshake_bytes, c.max_headers)
        {
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
        self.pending.clear();
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
        self.pre.write_to(&mut self.stream)?;
        if self.pre.is_empty() {
            if let Some(c) = self.conn.as_mut() {
                c.write_to(&mut self.stream)?;
            }
        }
        Ok(())
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

// ------------------------------------------------------------- blocking

/// A blocking WebSocket client. Every call is bounded: `recv` by
/// [`WebSocket::set_read_timeout`], connecting by `handshake_timeout`,
/// closing by `close_timeout`.
#[derive(Debug)]
pub struct WebSocket {
    client: Client,
    poll: Poll,
    events: Events,
    read_timeout: Option<Duration>,
}

const TOKEN: Token = Token(0);

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
    fn wait(&mut self, limit: Option<Instant>) -> Result<(), Error> {
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

    /// The subprotocol the server chose.
    pub fn protocol(&self) -> Option<&str> {
        self.client.protocol()
    }

    /// The underlying non-blocking client.
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    fn pump_writes(&mut self) -> Result<(), Error> {
        self.client.flush()?;
        Ok(())
    }

    /// Sends a text message (queued, then written as far as the socket
    /// takes; the rest goes out during later calls).
    pub fn send_text(&mut self, text: &str) -> Result<(), Error> {
        self.client.send_text(text)?;
        self.pump_writes()
    }

    /// Sends a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<(), Error> {
        self.client.send_binary(data)?;
        self.pump_writes()
    }

    /// Sends a message.
    pub fn send(&mut self, msg: Message<'_>) -> Result<(), Error> {
        self.client.send(msg)?;
        self.pump_writes()
    }

    /// Sends a ping.
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
                    self.client.finish(Some(e.into()));
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

    /// Closes: sends a close frame, waits for the server's and for the
    /// server to close TCP (bounded by `close_timeout`). Returns how the
    /// connection ended.
    pub fn close(&mut self, code: CloseCode, reason: &str) -> Result<CloseInfo, Error> {
        self.client.close(code, reason, Instant::now());
        self.client.flush()?;
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

// ------------------------------------------------------------ reconnect

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
    fn url_parsing() {
        let u = Url::parse("ws://example.com:9001/chat?x=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.target.as_str()),
            ("example.com", 9001, "/chat?x=1")
        );
        assert_eq!(u.host_header(), "example.com:9001");
        let u = Url::parse("ws://h?q").unwrap();
        assert_eq!((u.port, u.target.as_str()), (80, "/?q"));
        assert_eq!(u.host_header(), "h");
        let u = Url::parse("ws://[::1]:8080").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 8080));
        assert_eq!(u.host_header(), "[::1]:8080");
        assert!(Url::parse("wss://x").unwrap().secure);
        for bad in [
            "http://x",
            "ws://",
            "ws://x:notaport",
            "ws://[::1",
            "ws://a@b",
            "ws://x/a b",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

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
