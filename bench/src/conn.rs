//! One connection of the echo bench, driven by readiness events: connect,
//! upgrade, then check every echo, time it and (closed loop) replace it.
//! In chat mode the connection is a room member (`chat`).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Instant;

use wsloop::handshake::{ClientRequest, Head, ResponseReader};
use wsloop::stream::Stream;
use wsloop::{Connection, Event, HandshakeError, Message, Role};

use crate::chat::{Member, Reply};
use crate::dial;
use crate::options::Mode;
use crate::plan::{Plan, Server};
use crate::stats::Stats;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum St {
    New,
    Connecting,
    Handshake,
    /// Chat: upgraded, waiting for the welcome and the join's answer.
    Joining,
    Open,
    Done,
}

/// Upgrade state, dropped once open.
pub(crate) struct Hs {
    req: ClientRequest,
    out: Vec<u8>,
    written: usize,
    reader: ResponseReader,
    pub(crate) started: Instant,
}

impl Hs {
    pub(crate) fn new(plan: &Plan, server: &Server, now: Instant) -> Box<Hs> {
        let (req, out) = dial::request(
            &server.url.host_header(),
            &server.url.target,
            &plan.config.deflate,
            &plan.protocols,
            &plan.headers,
        );
        Box::new(Hs {
            req,
            out,
            written: 0,
            reader: ResponseReader::new(),
            started: now,
        })
    }
}

pub(crate) struct Conn {
    pub(crate) st: St,
    pub(crate) sock: Option<Stream>,
    pub(crate) hs: Option<Box<Hs>>,
    pub(crate) ws: Option<Connection>,
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

impl Conn {
    pub(crate) fn new() -> Self {
        Conn {
            st: St::New,
            sock: None,
            hs: None,
            ws: None,
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

/// Queues the next message on `c`.
pub(crate) fn send_next(
    ws: &mut Connection,
    sent: &mut VecDeque<Instant>,
    seq: &mut u64,
    id: u64,
    plan: &Plan,
    now: Instant,
) -> Result<(), wsloop::Error> {
    if plan.payload.text {
        ws.send_text(plan.payload.str(id, *seq))?;
    } else {
        ws.send_binary(plan.payload.bytes(id, *seq))?;
    }
    sent.push_back(now);
    *seq += 1;
    Ok(())
}

/// Handles one readiness event for connection `c` (global id `id`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn drive(
    c: &mut Conn,
    id: u64,
    buf: &mut [u8],
    plan: &Plan,
    win: &Window,
    stats: &mut Stats,
    now: Instant,
    readable: bool,
    to_eof: bool,
) -> Step {
    if c.st == St::Connecting {
        let Some(sock) = c.sock.as_mut() else {
            return Step::End(None);
        };
        match dial::connected(&sock.sock) {
            Ok(true) => {}
            Ok(false) => return Step::Go,
            Err(e) => return end(format!("connect: {e}")),
        }
        if let Err(e) = sock.sock.set_nodelay(true) {
            return end(format!("connect: TCP_NODELAY: {e}"));
        }
        c.st = St::Handshake;
    }
    if let Some(sock) = c.sock.as_mut() {
        // TLS records left over when the socket was full (a no-op for
        // plain TCP).
        if let Err(e) = sock.flush_records() {
            let phase = if c.ws.is_some() {
                "write"
            } else {
                "handshake: write"
            };
            return end(format!("{phase}: {e}"));
        }
    }
    if c.st == St::Handshake {
        let (Some(sock), Some(hs)) = (c.sock.as_mut(), c.hs.as_mut()) else {
            return Step::End(None);
        };
        while hs.written < hs.out.len() {
            match sock.write(&hs.out[hs.written..]) {
                Ok(0) => return end("handshake: the socket took no bytes"),
                Ok(n) => hs.written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Go,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return end(format!("handshake: write: {e}")),
            }
        }
    }
    if readable || to_eof {
        loop {
            let Some(sock) = c.sock.as_mut() else {
                return Step::End(None);
            };
            let n = match sock.read(buf) {
                Ok(0) => return eof(c, None),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return eof(c, Some(e)),
            };
            if let Err(kind) = input(c, id, &mut buf[..n], plan, win, stats, now) {
                return Step::End(Some(kind));
            }
            if n < buf.len() && !to_eof && !c.sock.as_ref().is_some_and(Stream::is_tls) {
                // Drained for now: the next arrival is a new edge. (Not
                // with TLS: a short read may leave records in the socket
                // that rustls has not taken yet.)
                break;
            }
        }
    }
    if let (Some(ws), Some(sock)) = (c.ws.as_mut(), c.sock.as_mut()) {
        if ws.wants_write() {
            if let Err(e) = ws.write_to(sock) {
                return end(format!("write: {e}"));
            }
        }
    }
    Step::Go
}

/// The server's side of TCP ended (`e` is `None` for EOF).
fn eof(c: &Conn, e: Option<io::Error>) -> Step {
    match (&c.ws, e) {
        (None, None) => end("handshake: the server closed the connection before answering"),
        (None, Some(e)) => end(format!("handshake: read: {e}")),
        (Some(ws), e) => {
            if c.server_closed || ws.close_info().is_some_and(|i| i.clean) {
                Step::End(None)
            } else {
                match e {
                    None => end("connection lost: the server closed TCP without a close handshake"),
                    Some(e) => end(format!("connection lost: {e}")),
                }
            }
        }
    }
}

/// Bytes received on `c`: the upgrade response, then frames.
fn input(
    c: &mut Conn,
    id: u64,
    data: &mut [u8],
    plan: &Plan,
    win: &Window,
    stats: &mut Stats,
    now: Instant,
) -> Result<(), Cow<'static, str>> {
    if c.st == St::Handshake {
        let Some(hs) = c.hs.as_mut() else {
            return Err("handshake: lost state".into());
        };
        let cfg = &plan.config;
        match hs
            .reader
            .feed(data, cfg.max_handshake_bytes, cfg.max_headers)
        {
            Ok(Head::Partial) => return Ok(()),
            Ok(Head::Complete(resp, mut rest)) => {
                let (protocol, deflate) = match resp.validate_with(&hs.req, &cfg.deflate) {
                    Ok(chosen) => chosen,
                    Err(e) => {
                        return Err(match e {
                            HandshakeError::Status(s) => format!(
                                "handshake: server answered HTTP {s} {}",
                                wsloop::handshake::reason_phrase(s)
                            )
                            .into(),
                            e => format!("handshake: {e}").into(),
                        })
                    }
                };
                if cfg.deflate.enabled && deflate.is_none() {
                    return Err(
                        "handshake: the server declined permessage-deflate (--deflate); \
                                enable it there (wsloop serve --deflate) or drop --deflate"
                            .into(),
                    );
                }
                if !plan.protocols.is_empty() && protocol.is_none() {
                    return Err(
                        "handshake: the server chose none of the subprotocols offered (--protocol)"
                            .into(),
                    );
                }
                stats
                    .handshake
                    .record(now.saturating_duration_since(hs.started));
                stats.opened += 1;
                if plan.mode == Mode::Chat {
                    // Still connecting until the join is answered; the
                    // upgrade state keeps the attempt's start time.
                    c.st = St::Joining;
                    c.chat = Some(Box::new(Member::new(id, plan)));
                } else {
                    c.hs = None;
                    c.st = St::Open;
                }
                #[cfg_attr(not(feature = "deflate"), allow(unused_mut))]
                let mut ws = Connection::new(Role::Client, plan.config.clone(), now);
                #[cfg(feature = "deflate")]
                if let Some(p) = &deflate {
                    ws.enable_deflate(p);
                }
                c.ws = Some(ws);
                if !matches!(plan.mode, Mode::Connect | Mode::Chat) {
                    c.sent = VecDeque::with_capacity(plan.pipeline);
                }
                if rest.is_empty() {
                    return Ok(());
                }
                return frames(c, id, &mut rest, plan, win, stats, now);
            }
            Err(e) => return Err(format!("handshake: {e}").into()),
        }
    }
    frames(c, id, data, plan, win, stats, now)
}

/// Frames received on an open connection: check each echo, time it, and
/// replace it.
fn frames(
    c: &mut Conn,
    id: u64,
    data: &mut [u8],
    plan: &Plan,
    win: &Window,
    stats: &mut Stats,
    now: Instant,
) -> Result<(), Cow<'static, str>> {
    let Conn {
        st,
        hs,
        ws,
        sock,
        sent,
        send_seq,
        recv_seq,
        server_closed,
        chat,
        ..
    } = c;
    let (Some(ws), Some(sock)) = (ws.as_mut(), sock.as_mut()) else {
        return Ok(());
    };
    let latency = plan.mode == Mode::Latency;
    let open_loop = plan.open_loop();
    let mut input = data;
    loop {
        match ws.poll_event(&mut input, now) {
            Ok(None) => return Ok(()),
            Ok(Some(Event::Message(m))) => {
                if let Some(member) = chat.as_mut() {
                    let Message::Text(json) = &m else {
                        stats.error("chat: a binary message from the server");
                        continue;
                    };
                    match member.on_text(json, plan, win, stats, now)? {
                        Reply::Nothing => {}
                        Reply::Send(j) => {
                            if let Err(e) = ws.send_text(&j) {
                                return Err(format!("chat: send the join: {e}").into());
                            }
                        }
                        Reply::Joined => {
                            *st = St::Open;
                            *hs = None;
                        }
                    }
                    continue;
                }
                let t = if latency { Instant::now() } else { now };
                stats.msgs_all += 1;
                let Some(at) = sent.pop_front() else {
                    stats.error("unexpected message: none in flight");
                    continue;
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
                if win.sending && !open_loop && ws.is_open() {
                    let now = if latency { Instant::now() } else { now };
                    if let Err(e) = send_next(ws, sent, send_seq, id, plan, now) {
                        return Err(format!("send: {e}").into());
                    }
                    stats.sent += 1;
                    stats.sec.sent += 1;
                    if latency {
                        if let Err(e) = ws.write_to(sock) {
                            return Err(format!("write: {e}").into());
                        }
                    }
                }
            }
            Ok(Some(Event::Close(code, reason))) => {
                if !win.closing {
                    *server_closed = true;
                    stats.error(if reason.is_empty() {
                        format!("closed by the server: {code}")
                    } else {
                        format!("closed by the server: {code} {reason}")
                    });
                }
            }
            Ok(Some(Event::Ping(_) | Event::Pong(_))) => {}
            Err(e) => return Err(format!("protocol error: {e}").into()),
        }
    }
}
