//! One connection of the echo bench: a [`wsloop::client::Client`] driven
//! by readiness events through connect and upgrade, then every echo
//! checked, timed and (closed loop) replaced. In chat mode the connection
//! is a room member (`chat`).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io;
use std::time::Instant;

use wsloop::client::Client;
use wsloop::handshake::reason_phrase;
use wsloop::{Error, Event, HandshakeError, Message, SendStatus};

use crate::chat::{Member, Reply};
use crate::options::Mode;
use crate::plan::Plan;
use crate::stats::Stats;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum St {
    New,
    /// The client connects: TCP, TLS, the upgrade.
    Upgrading,
    /// Chat: upgraded, waiting for the welcome and the join's answer.
    Joining,
    Open,
    Done,
}

/// What the open loop and the phases need of a connection's WebSocket:
/// a [`Client`], or, in `pace`'s unit tests, a bare sans-IO
/// [`Connection`](wsloop::Connection) (no socket: what is queued stays
/// queued).
pub(crate) trait Ws {
    fn is_open(&self) -> bool;
    fn buffered(&self) -> usize;
    fn send_text(&mut self, text: &str) -> Result<SendStatus, Error>;
    fn send_binary(&mut self, data: &[u8]) -> Result<SendStatus, Error>;
    /// Writes what is queued, as far as the socket takes it.
    fn flush(&mut self) -> io::Result<()>;
}

impl Ws for Client {
    fn is_open(&self) -> bool {
        Client::is_open(self)
    }
    fn buffered(&self) -> usize {
        Client::buffered(self)
    }
    fn send_text(&mut self, text: &str) -> Result<SendStatus, Error> {
        Client::send_text(self, text)
    }
    fn send_binary(&mut self, data: &[u8]) -> Result<SendStatus, Error> {
        Client::send_binary(self, data)
    }
    fn flush(&mut self) -> io::Result<()> {
        Client::flush(self)
    }
}

#[cfg(test)]
impl Ws for wsloop::Connection {
    fn is_open(&self) -> bool {
        wsloop::Connection::is_open(self)
    }
    fn buffered(&self) -> usize {
        wsloop::Connection::buffered(self)
    }
    fn send_text(&mut self, text: &str) -> Result<SendStatus, Error> {
        wsloop::Connection::send_text(self, text)
    }
    fn send_binary(&mut self, data: &[u8]) -> Result<SendStatus, Error> {
        wsloop::Connection::send_binary(self, data)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

pub(crate) struct Conn<W = Client> {
    pub(crate) st: St,
    pub(crate) ws: Option<W>,
    /// When the attempt started: the connect timeout counts from here, up
    /// to the chat join's answer.
    pub(crate) started: Instant,
    /// Send times of the messages in flight, oldest first (echoes come back
    /// in order); in open loop their scheduled times.
    pub(crate) sent: VecDeque<Instant>,
    pub(crate) send_seq: u64,
    recv_seq: u64,
    /// The server sent a close frame on its own (already counted).
    server_closed: bool,
    /// Chat mode: the member's room and what it has been delivered.
    pub(crate) chat: Option<Box<Member>>,
    /// Open loop: messages are due that it could not take yet (see `pace`).
    pub(crate) behind: bool,
    /// Open loop: something was queued in this round of sends.
    pub(crate) touched: bool,
}

impl<W> Conn<W> {
    pub(crate) fn new(now: Instant) -> Self {
        Conn {
            st: St::New,
            ws: None,
            started: now,
            sent: VecDeque::new(),
            send_seq: 0,
            recv_seq: 0,
            server_closed: false,
            chat: None,
            behind: false,
            touched: false,
        }
    }
}

/// When messages are sent and counted.
pub(crate) struct Window {
    /// Closed loop: send a new message for each echo.
    pub(crate) sending: bool,
    pub(crate) closing: bool,
    /// The start of the load: open-loop schedules count from here.
    pub(crate) go: Instant,
    pub(crate) from: Instant,
    pub(crate) to: Instant,
}

pub(crate) enum Step {
    Go,
    End(Option<Cow<'static, str>>),
}

fn end(kind: impl Into<Cow<'static, str>>) -> Step {
    Step::End(Some(kind.into()))
}

/// Queues the next message on `ws`.
pub(crate) fn send_next(
    ws: &mut impl Ws,
    sent: &mut VecDeque<Instant>,
    seq: &mut u64,
    id: u64,
    plan: &Plan,
    now: Instant,
) -> Result<(), Error> {
    if plan.payload.text {
        ws.send_text(plan.payload.str(id, *seq))?;
    } else {
        ws.send_binary(plan.payload.bytes(id, *seq))?;
    }
    sent.push_back(now);
    *seq += 1;
    Ok(())
}

/// Why `Client::connect_addr` failed, as the report counts it.
pub(crate) fn connect_error(e: Error) -> Cow<'static, str> {
    match e {
        Error::Io(e) => format!("connect: {e}").into(),
        Error::Tls(why) => format!("connect: TLS setup: {why}").into(),
        e => format!("connect: {e}").into(),
    }
}

/// Handles one readiness event for connection `c` (global id `id`).
pub(crate) fn drive(
    c: &mut Conn,
    id: u64,
    plan: &Plan,
    win: &Window,
    stats: &mut Stats,
    ev: &mio::event::Event,
    now: Instant,
) -> Step {
    let Some(ws) = c.ws.as_mut() else {
        return Step::End(None);
    };
    let connecting = ws.is_connecting();
    ws.handle_event(ev, now);
    if c.st == St::Upgrading {
        if !ws.is_upgraded() {
            return outcome(c, connecting);
        }
        if let Err(kind) = upgraded(c, id, plan, stats) {
            return Step::End(Some(kind));
        }
    }
    if let Err(kind) = frames(c, id, plan, win, stats, now) {
        return Step::End(Some(kind));
    }
    outcome(c, false)
}

/// Whether the connection goes on after its I/O and input: an error the
/// client met (during the connect if `connecting`), or its end.
fn outcome(c: &mut Conn, connecting: bool) -> Step {
    let Some(ws) = c.ws.as_mut() else {
        return Step::End(None);
    };
    let upgraded = ws.is_upgraded();
    if ws.is_done() && upgraded && (c.server_closed || ws.close_info().is_some_and(|i| i.clean)) {
        return Step::End(None);
    }
    if let Some(e) = ws.take_error() {
        return Step::End(Some(error_kind(e, upgraded, connecting)));
    }
    if !ws.is_done() {
        Step::Go
    } else if upgraded {
        end("connection lost: the server closed TCP without a close handshake")
    } else {
        end("handshake: the server closed the connection before answering")
    }
}

/// The report's name for an error that ended a client.
fn error_kind(e: Error, upgraded: bool, connecting: bool) -> Cow<'static, str> {
    match e {
        Error::Handshake(HandshakeError::Status(s)) => {
            format!("handshake: server answered HTTP {s} {}", reason_phrase(s)).into()
        }
        Error::Handshake(HandshakeError::Eof) => {
            "handshake: the server closed the connection before answering".into()
        }
        Error::Handshake(e) => format!("handshake: {e}").into(),
        Error::Io(e) if connecting => format!("connect: {e}").into(),
        Error::Io(e) if !upgraded => format!("handshake: {e}").into(),
        Error::Io(e) => format!("connection lost: {e}").into(),
        e if !upgraded => format!("handshake: {e}").into(),
        e @ Error::Tls(_) => format!("connection lost: {e}").into(),
        // (Error's own text already says "protocol error: ".)
        e => e.to_string().into(),
    }
}

/// The upgrade succeeded: checks what the server agreed to and counts the
/// connection as open.
fn upgraded(
    c: &mut Conn,
    id: u64,
    plan: &Plan,
    stats: &mut Stats,
) -> Result<(), Cow<'static, str>> {
    let Some(ws) = c.ws.as_ref() else {
        return Err("handshake: lost state".into());
    };
    if plan.client.config.deflate.enabled && ws.deflate().is_none() {
        return Err(
            "handshake: the server declined permessage-deflate (--deflate); \
                    enable it there (wsloop serve --deflate) or drop --deflate"
                .into(),
        );
    }
    if !plan.client.protocols.is_empty() && ws.protocol().is_none() {
        return Err(
            "handshake: the server chose none of the subprotocols offered (--protocol)".into(),
        );
    }
    stats
        .handshake
        .record(ws.upgrade_time().unwrap_or_default());
    stats.opened += 1;
    if plan.mode == Mode::Chat {
        // Still connecting until the join is answered.
        c.st = St::Joining;
        c.chat = Some(Box::new(Member::new(id, plan)));
    } else {
        c.st = St::Open;
    }
    if !matches!(plan.mode, Mode::Connect | Mode::Chat) {
        c.sent = VecDeque::with_capacity(plan.pipeline);
    }
    Ok(())
}

/// What a message asks of the connection once the client lends no more
/// (small and `Copy`: the chat reply and an error wait beside it).
#[derive(Clone, Copy)]
enum Got {
    Nothing,
    /// An echo was checked: closed loop sends the next message.
    Echo,
    /// The server's close frame: the connection may not send any more.
    Close,
    /// Chat: act on the member's reply.
    Chat,
    /// The connection must end (why is beside it).
    Fail,
}

/// The messages received on an open connection: check each echo, time it,
/// and replace it; then write what was queued.
fn frames(
    c: &mut Conn,
    id: u64,
    plan: &Plan,
    win: &Window,
    stats: &mut Stats,
    now: Instant,
) -> Result<(), Cow<'static, str>> {
    let Conn {
        st,
        ws,
        sent,
        send_seq,
        recv_seq,
        server_closed,
        chat,
        ..
    } = c;
    let Some(ws) = ws.as_mut() else {
        return Ok(());
    };
    let latency = plan.mode == Mode::Latency;
    let open_loop = plan.open_loop();
    // Closed loop: each echo is replaced by a new message.
    let replace = win.sending && !open_loop;
    // Only a close frame ends `is_open` here (an error ends the loop).
    let mut open = ws.is_open();
    let mut reply = Reply::Nothing;
    let mut failed: Cow<'static, str> = Cow::Borrowed("");
    // Each message is borrowed from the client's read buffer: checked in
    // place, no copy.
    while let Some(got) = ws.next_event_with(|ev| match ev {
        Event::Message(m) => {
            if let Some(member) = chat.as_mut() {
                let Message::Text(json) = &m else {
                    stats.error("chat: a binary message from the server");
                    return Got::Nothing;
                };
                return match member.on_text(json, plan, win, stats, now) {
                    Ok(r) => {
                        reply = r;
                        Got::Chat
                    }
                    Err(kind) => {
                        failed = kind;
                        Got::Fail
                    }
                };
            }
            let t = if latency { Instant::now() } else { now };
            stats.msgs_all += 1;
            let Some(at) = sent.pop_front() else {
                stats.error("unexpected message: none in flight");
                return Got::Nothing;
            };
            let (bytes, is_text) = match &m {
                Message::Text(s) => (s.as_bytes(), true),
                Message::Binary(b) => (&b[..], false),
            };
            let ok = plan.payload.verify(bytes, is_text, id, *recv_seq);
            *recv_seq += 1;
            if !ok {
                stats.error(if is_text != plan.payload.text {
                    "payload mismatch: wrong message type"
                } else if bytes.len() != plan.payload.size {
                    "payload mismatch: wrong length"
                } else {
                    "payload mismatch: wrong content"
                });
            } else {
                // Open loop: `at` is when the message was due, and the
                // message belongs to the window it was due in; what
                // comes once closing has begun was already counted as
                // not answered.
                let key = if open_loop { at } else { t };
                let measured = !win.closing && key >= win.from && key < win.to;
                stats.received(t, at, bytes.len(), measured);
            }
            Got::Echo
        }
        Event::Close(code, reason) => {
            if !win.closing {
                *server_closed = true;
                stats.error(if reason.is_empty() {
                    format!("closed by the server: {code}")
                } else {
                    format!("closed by the server: {code} {reason}")
                });
            }
            Got::Close
        }
        Event::Ping(_) | Event::Pong(_) => Got::Nothing,
    }) {
        // An echo first: the one that comes per message (a compare, where
        // a `match` of all five is a jump through a table).
        if let Got::Echo = got {
            if replace && open {
                let now = if latency { Instant::now() } else { now };
                if let Err(e) = send_next(ws, sent, send_seq, id, plan, now) {
                    return Err(format!("send: {e}").into());
                }
                stats.sent += 1;
                stats.sec.sent += 1;
                if latency {
                    if let Err(e) = ws.flush() {
                        return Err(format!("write: {e}").into());
                    }
                }
            }
            continue;
        }
        match got {
            Got::Nothing | Got::Echo => {}
            Got::Close => open = ws.is_open(),
            Got::Fail => return Err(std::mem::take(&mut failed)),
            Got::Chat => match std::mem::replace(&mut reply, Reply::Nothing) {
                Reply::Nothing => {}
                Reply::Send(j) => {
                    if let Err(e) = ws.send_text(&j) {
                        return Err(format!("chat: send the join: {e}").into());
                    }
                }
                Reply::Joined => *st = St::Open,
            },
        }
    }
    // Nothing queued: a few compares in `flush` itself.
    if let Err(e) = ws.flush() {
        return Err(format!("write: {e}").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_named_by_phase() {
        let io = || Error::Io(io::ErrorKind::ConnectionRefused.into());
        let kind = |e, upgraded, connecting| error_kind(e, upgraded, connecting).into_owned();
        assert_eq!(
            kind(Error::Handshake(HandshakeError::Status(403)), false, false),
            "handshake: server answered HTTP 403 Forbidden"
        );
        assert_eq!(
            kind(Error::Handshake(HandshakeError::Eof), false, false),
            "handshake: the server closed the connection before answering"
        );
        assert_eq!(
            kind(Error::Handshake(HandshakeError::BadAccept), false, false),
            "handshake: Sec-WebSocket-Accept missing or wrong"
        );
        assert!(kind(io(), false, true).starts_with("connect: "));
        assert!(kind(io(), false, false).starts_with("handshake: "));
        assert!(kind(io(), true, false).starts_with("connection lost: "));
        assert!(kind(Error::Tls("bad".into()), false, false).starts_with("handshake: TLS: bad"));
        assert!(kind(Error::Tls("bad".into()), true, false).starts_with("connection lost: TLS: "));
        let e = Error::Protocol(wsloop::ProtocolError::MaskedFrame);
        assert_eq!(kind(e, true, false), "protocol error: server frame masked");
        assert_eq!(
            connect_error(Error::Tls("no roots".into())),
            "connect: TLS setup: no roots"
        );
    }
}
