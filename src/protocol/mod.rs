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
//! - [`Connection::send_text`], [`Connection::send_binary`],
//!   [`Connection::ping`], [`Connection::close`] and friends queue frames.
//! - [`Connection::handle_timeout`] drives heartbeats and the close timeout.
//!
//! Outputs (`poll_*` and getters):
//! - [`Connection::write_to`] writes queued bytes to any `io::Write`.
//! - [`Connection::poll_timeout`] says when to call `handle_timeout` next.
//! - [`Connection::is_closed`]: once true and nothing is left to write, the
//!   transport should be closed (a server closes TCP first, RFC 6455 §7.1.1).
//!
//! Messages contained whole in the input are handed out borrowing it (no
//! copy). Only a fragmented message in progress, or a frame cut by the end
//! of the input, is copied into the connection. A normal close is an event,
//! never an error. A protocol violation fails the connection (§7.1.7): a
//! close frame with the matching code is queued, the error is returned
//! once, and no more input is processed.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use crate::buffer::WriteQueue;
use crate::close::{encode_close_payload, parse_close_payload, truncate_reason, CloseCode};
use crate::config::{Config, OverflowPolicy};
use crate::deflate::DeflateState;
use crate::error::{CapacityError, Error, ProtocolError};
use crate::frame::{parse_header, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use crate::mask::apply_mask;
pub use crate::role::Role;
use crate::utf8::Utf8Validator;

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

/// A frame whose payload is still arriving.
#[derive(Debug, Clone, Copy)]
struct InFrame {
    header: FrameHeader,
    remaining: u64,
    offset: usize,
}

/// Receive state that exists only while a frame or message is incomplete.
#[derive(Debug, Default)]
struct Rx {
    frame: Option<InFrame>,
    /// Kind of the fragmented message in progress.
    msg_kind: Option<OpCode>,
    msg: Vec<u8>,
    fragments: usize,
    utf8: Utf8Validator,
    /// Payload of a control frame split across reads.
    ctrl: Vec<u8>,
    /// The message in progress is compressed (RSV1 on its first frame).
    compressed: bool,
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
    rx: Option<Box<Rx>>,
    last_recv: Instant,
    ping_sent: Option<Instant>,
    /// RSV bits that negotiated extensions may use.
    allowed_rsv: u8,
    /// permessage-deflate state, when negotiated.
    deflate: Option<Box<DeflateState>>,
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
        }
    }

    /// Turns on permessage-deflate with the negotiated parameters (RSV1
    /// marks compressed messages from then on).
    #[cfg(feature = "deflate")]
    pub fn enable_deflate(&mut self, params: &crate::extension::DeflateParams) {
        self.deflate = Some(Box::new(DeflateState::new(
            self.role,
            params,
            &self.config.deflate,
        )));
        self.allowed_rsv = RSV1;
    }

    /// True if permessage-deflate is in use.
    pub fn deflate_enabled(&self) -> bool {
        self.deflate.is_some()
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

    /// Acts on the timers due at `now`: sends a heartbeat ping, drops a
    /// peer whose pong is late, closes an idle connection, gives up on a
    /// close handshake that takes too long.
    pub fn handle_timeout(&mut self, now: Instant) {
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
    pub fn poll_event<'a>(
        &mut self,
        input: &mut &'a mut [u8],
        now: Instant,
    ) -> Result<Option<Event<'a>>, Error> {
        if !input.is_empty() {
            self.last_recv = now;
            self.ping_sent = None;
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

    fn read_event<'a>(
        &mut self,
        input: &mut &'a mut [u8],
    ) -> Result<Option<Event<'a>>, ProtocolError> {
        loop {
            if self.is_closed() {
                *input = &mut [];
                return Ok(None);
            }
            if let Some(frame) = self.rx.as_ref().and_then(|rx| rx.frame) {
                if input.is_empty() {
                    return Ok(None);
                }
                if let Some(ev) = self.continue_frame(frame, input)? {
                    return Ok(Some(ev));
                }
                continue;
            }
            let Some(header) = self.next_header(input)? else {
                return Ok(None);
            };
            self.check_header(&header)?;
            let len = header.payload_len as usize; // checked against limits above
            if input.len() >= len {
                let (payload, rest) = std::mem::take(input).split_at_mut(len);
                *input = rest;
                if let Some(key) = header.mask {
                    apply_mask(payload, key, 0);
                }
                if let Some(ev) = self.whole_frame(&header, payload)? {
                    return Ok(Some(ev));
                }
            } else {
                let rx = self.rx.get_or_insert_with(Box::default);
                rx.frame = Some(InFrame {
                    header,
                    remaining: header.payload_len,
                    offset: 0,
                });
            }
        }
    }

    /// Takes the next frame header from the saved partial header and
    /// `input`. Returns `None` (saving the bytes) if it is incomplete.
    fn next_header(&mut self, input: &mut &mut [u8]) -> Result<Option<FrameHeader>, ProtocolError> {
        let have = self.hdr_len as usize;
        if have == 0 {
            match parse_header(input)? {
                Some((h, n)) => {
                    *input = &mut std::mem::take(input)[n..];
                    Ok(Some(h))
                }
                None => {
                    self.hdr[..input.len()].copy_from_slice(input);
                    self.hdr_len = input.len() as u8;
                    *input = &mut [];
                    Ok(None)
                }
            }
        } else {
            let take = (MAX_HEADER_LEN - have).min(input.len());
            self.hdr[have..have + take].copy_from_slice(&input[..take]);
            match parse_header(&self.hdr[..have + take])? {
                Some((h, n)) => {
                    self.hdr_len = 0;
                    *input = &mut std::mem::take(input)[n - have..];
                    Ok(Some(h))
                }
                None => {
                    self.hdr_len = (have + take) as u8;
                    *input = &mut std::mem::take(input)[take..];
                    Ok(None)
                }
            }
        }
    }

    fn check_header(&mut self, h: &FrameHeader) -> Result<(), ProtocolError> {
        h.check_role(self.role == Role::Server, self.allowed_rsv)?;
        // RSV1 only marks the first frame of a compressed data message.
        if h.rsv & RSV1 != 0 && (h.opcode.is_control() || h.opcode == OpCode::Continuation) {
            return Err(ProtocolError::ReservedBits(h.rsv));
        }
        let compressed = h.rsv & RSV1 != 0;
        let c = &self.config;
        if h.payload_len > c.max_frame_size as u64 {
            return Err(ProtocolError::Capacity(CapacityError::FrameTooLarge {
                size: h.payload_len,
                max: c.max_frame_size,
            }));
        }
        if h.opcode.is_control() {
            return Ok(());
        }
        let in_progress = self.rx.as_ref().and_then(|rx| rx.msg_kind).is_some();
        match (h.opcode, in_progress) {
            (OpCode::Continuation, false) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, true) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            _ => {}
        }
        let so_far = self.rx.as_ref().map_or(0, |rx| rx.msg.len() as u64);
        // A compressed message's limit applies to what it decompresses to
        // (checked while inflating); its wire size is bounded per frame.
        let message_compressed = compressed
            || (h.opcode == OpCode::Continuation
                && self.rx.as_ref().is_some_and(|rx| rx.compressed));
        if !message_compressed && so_far + h.payload_len > c.max_message_size as u64 {
            return Err(ProtocolError::Capacity(CapacityError::MessageTooLarge {
                size: so_far + h.payload_len,
                max: c.max_message_size,
            }));
        }
        if in_progress || !h.fin || compressed {
            let rx = self.rx.get_or_insert_with(Box::default);
            if in_progress || !h.fin {
                rx.fragments += 1;
                if rx.fragments > c.max_fragments {
                    return Err(ProtocolError::Capacity(CapacityError::TooManyFragments {
                        max: c.max_fragments,
                    }));
                }
            }
            if h.opcode != OpCode::Continuation {
                rx.msg_kind = Some(h.opcode);
                rx.compressed = compressed;
                rx.utf8.reset();
            }
        }
        Ok(())
    }

    /// A frame whose payload is all in `payload` (unmasked).
    fn whole_frame<'a>(
        &mut self,
        h: &FrameHeader,
        payload: &'a mut [u8],
    ) -> Result<Option<Event<'a>>, ProtocolError> {
        match h.opcode {
            OpCode::Text | OpCode::Binary if h.fin && h.rsv & RSV1 == 0 => {
                // The common case: a whole message, handed out in place.
                self.release_rx_if_idle();
                Ok(Some(Event::Message(if h.opcode == OpCode::Text {
                    let s = std::str::from_utf8(payload).map_err(|_| ProtocolError::InvalidUtf8)?;
                    Message::Text(Cow::Borrowed(s))
                } else {
                    Message::Binary(Cow::Borrowed(payload))
                })))
            }
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                self.append_fragment(payload)?;
                if h.fin {
                    self.finish_message().map(Some)
                } else {
                    Ok(None)
                }
            }
            _ => self.control(h.opcode, Cow::Borrowed(payload)),
        }
    }

    /// Feeds part of a frame's payload from `input`.
    fn continue_frame<'a>(
        &mut self,
        mut f: InFrame,
        input: &mut &'a mut [u8],
    ) -> Result<Option<Event<'a>>, ProtocolError> {
        let n = (f.remaining.min(input.len() as u64)) as usize;
        let (chunk, rest) = std::mem::take(input).split_at_mut(n);
        *input = rest;
        if let Some(key) = f.header.mask {
            apply_mask(chunk, key, f.offset);
        }
        f.offset += n;
        f.remaining -= n as u64;
        if f.header.opcode.is_control() {
            self.rx
                .as_mut()
                .expect("frame in progress")
                .ctrl
                .extend_from_slice(chunk);
        } else {
            self.append_fragment(chunk)?;
        }
        let rx = self.rx.as_mut().expect("frame in progress");
        if f.remaining > 0 {
            rx.frame = Some(f);
            return Ok(None);
        }
        rx.frame = None;
        let h = f.header;
        if h.opcode.is_control() {
            let payload = std::mem::take(&mut rx.ctrl);
            // Unless a fragmented message is in progress, the connection is
            // idle again and owns no receive state.
            self.release_rx_if_idle();
            return self.control(h.opcode, Cow::Owned(payload));
        }
        if h.fin {
            return self.finish_message().map(Some);
        }
        Ok(None)
    }

    /// Adds payload bytes to the message in progress (a lone unfinished
    /// frame counts as one), validating text as it arrives.
    fn append_fragment(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        let rx = self.rx.get_or_insert_with(Box::default);
        let kind = match rx.msg_kind {
            Some(k) => k,
            None => {
                // A single frame arriving in pieces.
                let k = rx.frame.map_or(OpCode::Binary, |f| f.header.opcode);
                rx.msg_kind = Some(k);
                rx.utf8.reset();
                k
            }
        };
        if rx.compressed {
            return self.inflate(data, false);
        }
        if kind == OpCode::Text {
            rx.utf8.feed(data).map_err(|_| ProtocolError::InvalidUtf8)?;
        }
        if rx.msg.capacity() == 0 {
            let expect = rx.frame.map_or(0, |f| f.header.payload_len as usize);
            rx.msg = crate::buffer::message_buffer(expect, 256 * 1024);
        }
        rx.msg.extend_from_slice(data);
        Ok(())
    }

    fn finish_message<'a>(&mut self) -> Result<Event<'a>, ProtocolError> {
        if self.rx.as_ref().is_some_and(|rx| rx.compressed) {
            self.inflate(&[], true)?;
        }
        let rx = self.rx.as_mut().expect("message in progress");
        rx.compressed = false;
        let kind = rx.msg_kind.take().unwrap_or(OpCode::Binary);
        let data = std::mem::take(&mut rx.msg);
        rx.fragments = 0;
        let complete = rx.utf8.is_complete();
        rx.utf8.reset();
        self.release_rx_if_idle();
        if kind == OpCode::Text {
            if !complete {
                return Err(ProtocolError::InvalidUtf8);
            }
            let s = String::from_utf8(data).map_err(|_| ProtocolError::InvalidUtf8)?;
            Ok(Event::Message(Message::Text(Cow::Owned(s))))
        } else {
            Ok(Event::Message(Message::Binary(Cow::Owned(data))))
        }
    }

    /// Decompresses `data` into the message in progress (`end`: the
    /// message's last frame is done), validating text as it comes out.
    #[cfg(feature = "deflate")]
    fn inflate(&mut self, data: &[u8], end: bool) -> Result<(), ProtocolError> {
        use crate::deflate::InflateError;
        let max = self.config.max_message_size;
        let (Some(rx), Some(d)) = (self.rx.as_mut(), self.deflate.as_mut()) else {
            return Err(ProtocolError::ReservedBits(RSV1));
        };
        let text = rx.msg_kind == Some(OpCode::Text);
        let utf8 = &mut rx.utf8;
        let mut check = |piece: &[u8]| !text || utf8.feed(piece).is_ok();
        let r = if end {
            d.finish(&mut rx.msg, max, &mut check)
        } else {
            d.decompress(data, &mut rx.msg, max, &mut check)
        };
        r.map_err(|e| match e {
            InflateError::Corrupt => ProtocolError::InvalidCompressedData,
            InflateError::Utf8 => ProtocolError::InvalidUtf8,
            InflateError::TooBig(size) => {
                ProtocolError::Capacity(CapacityError::MessageTooLarge { size, max })
            }
        })
    }

    #[cfg(not(feature = "deflate"))]
    fn inflate(&mut self, _data: &[u8], _end: bool) -> Result<(), ProtocolError> {
        // RSV1 is rejected before a message can be marked compressed.
        Err(ProtocolError::ReservedBits(RSV1))
    }

    /// Compresses a message if deflate is on and it is worth it; returns
    /// the payload to send and whether it is compressed.
    #[cfg(feature = "deflate")]
    fn maybe_compress(&mut self, data: &[u8]) -> Option<Vec<u8>> {
        let d = self.deflate.as_mut()?;
        if !d.wants(data.len()) {
            return None;
        }
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        d.compress(data, &mut out);
        Some(out)
    }

    #[cfg(not(feature = "deflate"))]
    fn maybe_compress(&mut self, _data: &[u8]) -> Option<Vec<u8>> {
        None
    }

    /// Sends a compressed message if deflate applies; `Ok(None)` if not.
    fn send_compressed(&mut self, op: OpCode, data: &[u8]) -> Result<Option<SendStatus>, Error> {
        if !self.is_open() {
            return Err(Error::ConnectionClosed);
        }
        let Some(z) = self.maybe_compress(data) else {
            return Ok(None);
        };
        let h = FrameHeader {
            rsv: RSV1,
            ..self.header(op, z.len())
        };
        self.admit(data.len(), h.encoded_len() + z.len())?;
        self.out.push_frame_owned(&h, z);
        Ok(Some(self.status()))
    }

    fn release_rx_if_idle(&mut self) {
        if let Some(rx) = &self.rx {
            if rx.frame.is_none() && rx.msg_kind.is_none() {
                self.rx = None;
            }
        }
    }

    fn control<'a>(
        &mut self,
        op: OpCode,
        payload: Cow<'a, [u8]>,
    ) -> Result<Option<Event<'a>>, ProtocolError> {
        match op {
            OpCode::Ping => {
                if self.is_open() {
                    self.out
                        .push_frame(&self.header(OpCode::Pong, payload.len()), &payload);
                }
                Ok(Some(Event::Ping(payload)))
            }
            OpCode::Pong => Ok(Some(Event::Pong(payload))),
            _ => {
                let code = parse_close_payload(&payload)?.code;
                let reason: Cow<'a, str> = match payload {
                    Cow::Borrowed(b) if b.len() > 2 => Cow::Borrowed(
                        std::str::from_utf8(&b[2..])
                            .map_err(|_| ProtocolError::InvalidCloseReason)?,
                    ),
                    Cow::Owned(v) if v.len() > 2 => Cow::Owned(
                        String::from_utf8(v[2..].to_vec())
                            .map_err(|_| ProtocolError::InvalidCloseReason)?,
                    ),
                    _ => Cow::Borrowed(""),
                };
                let clean = match &self.state {
                    State::Open => {
                        // Echo the code (RFC 6455 §5.5.1); an empty close
                        // gets an empty reply.
                        self.push_close(code, "");
                        true
                    }
                    State::Closing { .. } => true,
                    State::Closed(_) => return Ok(None),
                };
                self.rx = None;
                self.state = State::Closed(Box::new(CloseInfo {
                    code,
                    reason: reason.to_string(),
                    clean,
                }));
                Ok(Some(Event::Close(code, reason)))
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

    // -------------------------------------------------------------- sends

    fn header(&self, opcode: OpCode, len: usize) -> FrameHeader {
        FrameHeader {
            mask: match self.role {
                Role::Client => Some(crate::rand::mask_key()),
                Role::Server => None,
            },
            ..FrameHeader::new(opcode, len as u64)
        }
    }

    fn push_close(&mut self, code: CloseCode, reason: &str) {
        let mut payload = Vec::new();
        encode_close_payload(code, reason, &mut payload);
        self.out
            .push_frame(&self.header(OpCode::Close, payload.len()), &payload);
    }

    /// Checks that a frame of `frame_len` bytes (header included) carrying
    /// `payload_len` bytes may be queued, applying the overflow policy if
    /// not.
    fn admit(&mut self, payload_len: usize, frame_len: usize) -> Result<(), Error> {
        if !self.is_open() {
            return Err(Error::ConnectionClosed);
        }
        let c = &self.config;
        if payload_len > c.max_message_size {
            return Err(Error::Capacity(CapacityError::SendTooLarge {
                size: payload_len,
                max: c.max_message_size,
            }));
        }
        let buffered = self.out.len();
        if buffered > 0 && buffered + frame_len > c.write_buffer_limit {
            let err = CapacityError::WriteBufferLimit {
                buffered,
                limit: c.write_buffer_limit,
            };
            if let OverflowPolicy::Close(code) = c.overflow {
                // What is queued stays queued; the close goes after it and
                // the close timeout bounds how long a non-reader holds it.
                let reason = err.to_string();
                self.push_close(code, truncate_reason(&reason));
                self.state = State::Closed(Box::new(CloseInfo {
                    code,
                    reason,
                    clean: false,
                }));
            }
            return Err(Error::Capacity(err));
        }
        Ok(())
    }

    fn status(&self) -> SendStatus {
        if self.out.len() > self.config.write_buffer_high {
            SendStatus::Full
        } else {
            SendStatus::Queued
        }
    }

    /// Queues a text message.
    pub fn send_text(&mut self, text: &str) -> Result<SendStatus, Error> {
        if self.deflate.is_some() {
            if let Some(s) = self.send_compressed(OpCode::Text, text.as_bytes())? {
                return Ok(s);
            }
        }
        self.send_frame(OpCode::Text, text.as_bytes(), true)
    }

    /// Queues a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<SendStatus, Error> {
        if self.deflate.is_some() {
            if let Some(s) = self.send_compressed(OpCode::Binary, data)? {
                return Ok(s);
            }
        }
        self.send_frame(OpCode::Binary, data, true)
    }

    /// Queues a message; an owned payload is queued without a copy.
    pub fn send(&mut self, msg: Message<'_>) -> Result<SendStatus, Error> {
        let (op, data) = match msg {
            Message::Text(Cow::Borrowed(t)) => return self.send_text(t),
            Message::Binary(Cow::Borrowed(b)) => return self.send_binary(b),
            Message::Text(Cow::Owned(t)) => (OpCode::Text, t.into_bytes()),
            Message::Binary(Cow::Owned(b)) => (OpCode::Binary, b),
        };
        if self.deflate.is_some() {
            if let Some(s) = self.send_compressed(op, &data)? {
                return Ok(s);
            }
        }
        let h = self.header(op, data.len());
        self.admit(data.len(), h.encoded_len() + data.len())?;
        self.out.push_frame_owned(&h, data);
        Ok(self.status())
    }

    /// Queues one frame of a message the application fragments itself:
    /// the first frame has opcode Text or Binary, the rest Continuation,
    /// the last has `fin` set.
    pub fn send_frame(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        fin: bool,
    ) -> Result<SendStatus, Error> {
        if opcode.is_control() {
            return Err(Error::Protocol(ProtocolError::UnknownOpcode(
                opcode.as_u8(),
            )));
        }
        let h = FrameHeader {
            fin,
            ..self.header(opcode, payload.len())
        };
        self.admit(payload.len(), h.encoded_len() + payload.len())?;
        self.out.push_frame(&h, payload);
        Ok(self.status())
    }

    /// Queues a frame encoded once for many receivers (see
    /// [`encode_shared`]). Server only: client frames need their own mask.
    pub fn send_shared(&mut self, frame: Arc<[u8]>) -> Result<SendStatus, Error> {
        if self.role == Role::Client {
            return Err(Error::Protocol(ProtocolError::UnmaskedFrame));
        }
        // The message size limit is on the payload, not the header.
        let payload_len = match parse_header(&frame) {
            Ok(Some((h, _))) => h.payload_len as usize,
            _ => frame.len(),
        };
        self.admit(payload_len, frame.len())?;
        self.out.push_shared(frame);
        Ok(self.status())
    }

    /// Queues a ping (payload at most 125 bytes).
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.control_frame(OpCode::Ping, payload)
    }

    /// Queues an unsolicited pong (payload at most 125 bytes).
    pub fn pong(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.control_frame(OpCode::Pong, payload)
    }

    fn control_frame(&mut self, op: OpCode, payload: &[u8]) -> Result<(), Error> {
        if !self.is_open() {
            return Err(Error::ConnectionClosed);
        }
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(Error::Protocol(ProtocolError::ControlTooLong(
                payload.len() as u64,
            )));
        }
        self.out
            .push_frame(&self.header(op, payload.len()), payload);
        Ok(())
    }

    /// Starts the closing handshake: queues a close frame (reason cut to
    /// 123 bytes) and waits up to `close_timeout` from `now` for the
    /// peer's. Does nothing if a close was already sent or received.
    pub fn close(&mut self, code: CloseCode, reason: &str, now: Instant) {
        self.close_until(code, reason, now + self.config.close_timeout);
    }

    /// Like [`Connection::close`], waiting for the peer's close until
    /// `deadline` (a graceful shutdown gives slow readers its whole
    /// deadline to receive what was queued before the close).
    pub fn close_until(&mut self, code: CloseCode, reason: &str, deadline: Instant) {
        if !self.is_open() {
            return;
        }
        let code = if code.is_valid_on_wire() || code == CloseCode::NO_STATUS {
            code
        } else {
            CloseCode::INTERNAL
        };
        self.push_close(code, reason);
        self.state = State::Closing {
            deadline,
            info: Box::new(CloseInfo {
                code,
                reason: truncate_reason(reason).to_owned(),
                clean: false,
            }),
        };
    }
}

/// Encodes a server-to-client message frame once, to be queued on many
/// connections with [`Connection::send_shared`].
pub fn encode_shared(msg: &Message<'_>) -> Arc<[u8]> {
    let (op, data) = match msg {
        Message::Text(t) => (OpCode::Text, t.as_bytes()),
        Message::Binary(b) => (OpCode::Binary, &b[..]),
    };
    let mut out = Vec::with_capacity(data.len() + MAX_HEADER_LEN);
    crate::frame::write_frame(&FrameHeader::new(op, data.len() as u64), data, &mut out);
    out.into()
}

#[cfg(test)]
mod tests;
