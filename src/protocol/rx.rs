//! The receive path: frame headers cut across reads, payloads arriving in
//! pieces (copied from the caller's input, or read straight into the
//! message: [`Connection::payload_buf`]), message reassembly, and the
//! peer's control frames.

use std::borrow::Cow;

use super::{CloseInfo, Connection, Event, Message, State, RSV1};
use crate::ascii::{unmask_ascii, unmask_text};
use crate::close::parse_close_payload;
use crate::error::{CapacityError, ProtocolError};
use crate::frame::{parse_header, FrameHeader, OpCode, MAX_HEADER_LEN};
use crate::mask::apply_mask;
use crate::role::Role;
use crate::utf8::Utf8Validator;

/// Direct reads ([`Connection::payload_buf`]) start once this much of a
/// message arrived, for frames with at least this much left to come: below
/// that, one read into the caller's buffer that also takes the next frames
/// is cheaper than a read of its own.
const DIRECT_MIN: usize = 64 * 1024;
/// A message buffer starts at most this large: memory follows the bytes
/// received, never a declared size alone.
const STEP: usize = 256 * 1024;

/// Receive state that exists only while a frame or message is incomplete
/// (`Connection::rx` is `None` otherwise: an idle connection owns no
/// buffers). A partial header is not here: it fits a fixed array.
#[derive(Debug, Default)]
pub(super) struct Rx {
    /// The frame whose payload is still arriving.
    frame: Option<InFrame>,
    /// The data message being reassembled.
    message: Option<InMessage>,
    /// A binary message's payload so far, or a compressed one's inflated
    /// bytes, then `spare` initialized bytes that are not payload (a pooled
    /// buffer's old contents, or room offered for a direct read), so a
    /// large message is written into without zeroing it first.
    pub(super) msg: Vec<u8>,
    /// Bytes at the end of `msg` that are not payload (0 for a compressed
    /// message: the inflater appends).
    spare: usize,
    /// An uncompressed text message so far: checked as it arrives and kept
    /// as a `String`, so the whole is never checked again.
    pub(super) text: String,
    /// Spare bytes handed out by `payload_buf` (0: none).
    offered: usize,
    /// How many of them the caller filled (`payload_filled`).
    filled: usize,
}

/// A frame whose payload is still arriving.
#[derive(Debug)]
enum InFrame {
    /// A data frame: its payload goes to the message in progress.
    Data(Progress),
    /// A control frame, and its payload so far (at most 125 bytes).
    Control(Progress, Vec<u8>),
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    header: FrameHeader,
    remaining: u64,
    offset: usize,
}

/// A data message in progress: a fragmented or compressed one, or a lone
/// frame arriving in pieces.
#[derive(Debug)]
struct InMessage {
    kind: Kind,
    /// Frames counted against `max_fragments` (a lone frame counts none).
    fragments: usize,
    /// RSV1 was set on its first frame: payloads go through the inflater.
    compressed: bool,
}

#[derive(Debug)]
enum Kind {
    /// Text, validated as it arrives (into `Rx::text`, unless compressed).
    Text(Utf8Validator),
    Binary,
}

impl InMessage {
    fn new(opcode: OpCode, compressed: bool) -> Self {
        InMessage {
            kind: match opcode {
                OpCode::Text => Kind::Text(Utf8Validator::new()),
                _ => Kind::Binary,
            },
            fragments: 0,
            compressed,
        }
    }
}

impl Rx {
    /// Payload bytes of the message so far.
    fn received(&self) -> usize {
        self.msg.len() - self.spare + self.text.len()
    }

    /// A buffer for a binary message expected to reach `expect` bytes.
    fn start_msg(&mut self, expect: usize) {
        self.msg = crate::buffer::message_buffer_initialized(expect, STEP);
        self.spare = self.msg.len();
    }

    /// Where inflated bytes go: the message buffer and, for text, the
    /// validator they must pass.
    #[cfg(feature = "deflate")]
    pub(super) fn inflate_target(&mut self) -> (&mut Vec<u8>, Option<&mut Utf8Validator>) {
        let utf8 = match self.message.as_mut().map(|m| &mut m.kind) {
            Some(Kind::Text(v)) => Some(v),
            _ => None,
        };
        // Nothing is offered for compressed messages; stay exact anyway.
        self.msg
            .truncate(self.msg.len() - std::mem::take(&mut self.spare));
        (&mut self.msg, utf8)
    }
}

impl Connection {
    /// Space to read the next payload bytes into, straight into the message
    /// (no copy from the caller's read buffer): `Some` while an
    /// uncompressed binary frame with at least 64 KiB left is arriving, at
    /// least 64 KiB of its message arrived, and no filled bytes wait for
    /// [`Connection::poll_event`].
    ///
    /// Use it after `poll_event` returned `Ok(None)`: read into the slice,
    /// call [`Connection::payload_filled`] with the count, then `poll_event`
    /// (an empty input is fine) for the events. The slice is never longer
    /// than the rest of the frame, so the read takes nothing of the next
    /// one. Its contents are unspecified. If the read fails or would block,
    /// nothing needs undoing: ask again, or feed input as usual.
    ///
    /// Text is not offered: it is checked as it is copied, once, where a
    /// direct read would need a second look to make a `String` in safe
    /// code. Memory follows what arrived: the slice is never longer than
    /// the message received so far (it is zeroed before the read, unless a
    /// pooled buffer's old bytes are reused).
    #[inline]
    pub fn payload_buf(&mut self) -> Option<&mut [u8]> {
        // Asked before every read: most find no frame in progress, and
        // that answer stays inline in the read loop.
        self.rx.as_ref()?;
        self.payload_room()
    }

    fn payload_room(&mut self) -> Option<&mut [u8]> {
        if self.is_closed() {
            return None;
        }
        let rx = self.rx.as_deref_mut()?;
        let (Some(InFrame::Data(p)), Some(m)) = (&rx.frame, &rx.message) else {
            return None;
        };
        if rx.filled > 0 || m.compressed || !matches!(m.kind, Kind::Binary) {
            return None;
        }
        // Below max_frame_size, a usize.
        let remaining = p.remaining as usize;
        let start = rx.msg.len() - rx.spare;
        if remaining < DIRECT_MIN || start < DIRECT_MIN {
            return None;
        }
        // Room is zeroed before the bytes come (safe code cannot read into
        // uninitialized memory), so offer no more than already arrived: a
        // peer that declares a large frame and stalls commits nothing.
        let want = remaining.min(start);
        if rx.spare < want {
            // Zeroes only what no earlier message initialized.
            rx.msg.resize(start + want, 0);
            rx.spare = want;
        }
        rx.offered = want;
        Some(&mut rx.msg[start..start + want])
    }

    /// Says that the first `n` bytes of the slice from
    /// [`Connection::payload_buf`] were filled with received bytes. They
    /// are unmasked, checked and delivered by the next
    /// [`Connection::poll_event`].
    ///
    /// # Panics
    ///
    /// If `n` is more than the length of that slice, or bytes are already
    /// filled and not yet polled: a caller's bug, like an out-of-bounds
    /// index.
    pub fn payload_filled(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        let rx = self.rx.as_deref_mut();
        let ok = rx.is_some_and(|rx| {
            let fits = rx.filled == 0 && n <= rx.offered;
            if fits {
                rx.filled = n;
            }
            fits
        });
        assert!(
            ok,
            "payload_filled({n}): more than the slice from payload_buf holds"
        );
    }

    /// True if directly read bytes wait to be processed.
    pub(super) fn has_filled(&self) -> bool {
        self.rx.as_ref().is_some_and(|rx| rx.filled > 0)
    }

    pub(super) fn read_event<'a>(
        &mut self,
        input: &mut &'a mut [u8],
    ) -> Result<Option<Event<'a>>, ProtocolError> {
        loop {
            if self.is_closed() {
                *input = &mut [];
                return Ok(None);
            }
            if self.rx.as_ref().is_some_and(|rx| rx.offered > 0) {
                if let Some(ev) = self.take_filled()? {
                    return Ok(Some(ev));
                }
            }
            // Nothing to do without input: a partial header or payload waits.
            if input.is_empty() {
                return Ok(None);
            }
            if let Some(frame) = self.rx.as_mut().and_then(|rx| rx.frame.take()) {
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
                if let Some(ev) = self.whole_frame(&header, payload)? {
                    return Ok(Some(ev));
                }
            } else {
                self.start_frame(header);
            }
        }
    }

    /// Ends a direct read: the filled bytes become payload (unmasked in
    /// place), the rest of the offered space stays spare.
    fn take_filled<'a>(&mut self) -> Result<Option<Event<'a>>, ProtocolError> {
        let Some(rx) = self.rx.as_deref_mut() else {
            return Ok(None);
        };
        if rx.offered == 0 {
            return Ok(None);
        }
        let (n, start) = (rx.filled, rx.msg.len() - rx.spare);
        (rx.offered, rx.filled) = (0, 0);
        let Some(InFrame::Data(p)) = rx.frame.take_if(|_| n > 0) else {
            return Ok(None);
        };
        rx.spare -= n;
        if let Some(key) = p.header.mask {
            apply_mask(&mut rx.msg[start..start + n], key, p.offset);
        }
        self.data_advanced(p, n)
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

    /// Checks a header against the role, extensions, limits and the
    /// message in progress, and starts a fragmented or compressed message.
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
        let message = self.rx.as_ref().and_then(|rx| rx.message.as_ref());
        let in_progress = message.is_some();
        match (h.opcode, in_progress) {
            (OpCode::Continuation, false) => return Err(ProtocolError::UnexpectedContinuation),
            (OpCode::Text | OpCode::Binary, true) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            _ => {}
        }
        // A compressed message's limit applies to what it decompresses to
        // (checked while inflating); its wire size is bounded per frame.
        let message_compressed = compressed || message.is_some_and(|m| m.compressed);
        let so_far = self.rx.as_ref().map_or(0, |rx| rx.received() as u64);
        if !message_compressed && so_far + h.payload_len > c.max_message_size as u64 {
            return Err(ProtocolError::Capacity(CapacityError::MessageTooLarge {
                size: so_far + h.payload_len,
                max: c.max_message_size,
            }));
        }
        if in_progress || !h.fin || compressed {
            let rx = self.rx.get_or_insert_with(Box::default);
            // A continuation finds its message; a first frame starts one.
            let m = rx
                .message
                .get_or_insert_with(|| InMessage::new(h.opcode, compressed));
            if in_progress || !h.fin {
                m.fragments += 1;
                if m.fragments > c.max_fragments {
                    return Err(ProtocolError::Capacity(CapacityError::TooManyFragments {
                        max: c.max_fragments,
                    }));
                }
            }
        }
        Ok(())
    }

    /// Keeps a checked header whose payload has not all arrived.
    fn start_frame(&mut self, header: FrameHeader) {
        let progress = Progress {
            header,
            remaining: header.payload_len,
            offset: 0,
        };
        let rx = self.rx.get_or_insert_with(Box::default);
        rx.frame = Some(if header.opcode.is_control() {
            InFrame::Control(progress, Vec::new())
        } else {
            // A lone frame arriving in pieces is a message of its own.
            rx.message
                .get_or_insert_with(|| InMessage::new(header.opcode, false));
            InFrame::Data(progress)
        });
    }

    /// A frame whose payload is all in `payload` (still masked).
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
                    let s = unmask_text(payload, h.mask, 0).ok_or(ProtocolError::InvalidUtf8)?;
                    Message::Text(Cow::Borrowed(s))
                } else {
                    unmask(payload, h.mask, 0);
                    Message::Binary(Cow::Borrowed(payload))
                })))
            }
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                self.append_fragment(payload, h.mask, 0, 0)?;
                if h.fin {
                    self.finish_message().map(Some)
                } else {
                    Ok(None)
                }
            }
            _ => {
                unmask(payload, h.mask, 0);
                self.control(h.opcode, Cow::Borrowed(payload))
            }
        }
    }

    /// Feeds part of a frame's payload from `input` (not empty).
    fn continue_frame<'a>(
        &mut self,
        frame: InFrame,
        input: &mut &'a mut [u8],
    ) -> Result<Option<Event<'a>>, ProtocolError> {
        let (mut p, ctrl) = match frame {
            InFrame::Data(p) => (p, None),
            InFrame::Control(p, payload) => (p, Some(payload)),
        };
        let n = (p.remaining.min(input.len() as u64)) as usize;
        let (chunk, rest) = std::mem::take(input).split_at_mut(n);
        *input = rest;
        let offset = p.offset;
        p.offset += n;
        p.remaining -= n as u64;
        let h = p.header;
        match ctrl {
            Some(mut payload) => {
                unmask(chunk, h.mask, offset);
                payload.extend_from_slice(chunk);
                if p.remaining > 0 {
                    self.rx_mut().frame = Some(InFrame::Control(p, payload));
                    return Ok(None);
                }
                // Unless a fragmented message is in progress, the
                // connection is idle again and owns no receive state.
                self.release_rx_if_idle();
                self.control(h.opcode, Cow::Owned(payload))
            }
            None => {
                self.append_fragment(chunk, h.mask, offset, h.payload_len as usize)?;
                self.data_advanced(p, 0)
            }
        }
    }

    /// `n` more payload bytes of a data frame are in the message (`p`
    /// already counts any others): keeps the frame, or ends it and, if it
    /// is the last, the message.
    fn data_advanced<'a>(
        &mut self,
        mut p: Progress,
        n: usize,
    ) -> Result<Option<Event<'a>>, ProtocolError> {
        p.offset += n;
        p.remaining -= n as u64;
        if p.remaining > 0 {
            self.rx_mut().frame = Some(InFrame::Data(p));
            return Ok(None);
        }
        if p.header.fin {
            return self.finish_message().map(Some);
        }
        Ok(None)
    }

    fn rx_mut(&mut self) -> &mut Rx {
        self.rx.as_mut().expect("frame or message in progress")
    }

    /// Adds payload bytes to the message in progress, unmasking them with
    /// `key` (`offset`: where `data` starts in the frame payload) and
    /// validating text as it arrives. `expect` is the declared size of a
    /// frame arriving in pieces (0 for a whole frame), to size the buffer.
    fn append_fragment(
        &mut self,
        data: &mut [u8],
        key: Option<[u8; 4]>,
        offset: usize,
        expect: usize,
    ) -> Result<(), ProtocolError> {
        let max = self.config.max_message_size;
        let rx = self.rx.as_deref_mut().expect("message in progress");
        let m = rx.message.as_mut().expect("message in progress");
        if m.compressed {
            unmask(data, key, offset);
            return self.inflate(data, false);
        }
        if let Kind::Text(utf8) = &mut m.kind {
            if rx.text.capacity() == 0 {
                // An empty buffer converts without a check.
                let buf = crate::buffer::message_buffer(expect, STEP);
                rx.text = String::from_utf8(buf).unwrap_or_default();
            }
            // A character split across pieces adds up to 3 bytes held back.
            let more = room_to_grow(rx.text.len(), rx.text.capacity(), data.len() + 3, max);
            rx.text.reserve_exact(more);
            // ASCII is seen while unmasking; other bytes are checked.
            let fed = match unmask_ascii(data, key, offset) {
                Ok(s) => utf8.feed_str(s, &mut rx.text),
                Err(bytes) => utf8.feed_into(bytes, &mut rx.text),
            };
            return fed.map_err(|_| ProtocolError::InvalidUtf8);
        }
        unmask(data, key, offset);
        if rx.msg.capacity() == 0 {
            rx.start_msg(expect);
        }
        let start = rx.msg.len() - rx.spare;
        if rx.spare >= data.len() {
            rx.msg[start..start + data.len()].copy_from_slice(data);
            rx.spare -= data.len();
        } else {
            rx.msg.truncate(start);
            let more = room_to_grow(start, rx.msg.capacity(), data.len(), max);
            rx.msg.reserve_exact(more);
            rx.msg.extend_from_slice(data);
            rx.spare = 0;
        }
        Ok(())
    }

    fn finish_message<'a>(&mut self) -> Result<Event<'a>, ProtocolError> {
        let rx = self.rx.as_ref().and_then(|rx| rx.message.as_ref());
        if rx.is_some_and(|m| m.compressed) {
            self.inflate(&[], true)?;
        }
        let rx = self.rx_mut();
        let m = rx.message.take().expect("message in progress");
        let mut data = std::mem::take(&mut rx.msg);
        data.truncate(data.len() - std::mem::take(&mut rx.spare));
        let text = std::mem::take(&mut rx.text);
        self.release_rx_if_idle();
        match m.kind {
            Kind::Text(utf8) => {
                if !utf8.is_complete() {
                    return Err(ProtocolError::InvalidUtf8);
                }
                if !m.compressed {
                    return Ok(Event::Message(Message::Text(Cow::Owned(text))));
                }
                // Inflated text was checked as it came out, but the
                // inflater writes bytes: making them a `String` checks again.
                let s = String::from_utf8(data).map_err(|_| ProtocolError::InvalidUtf8)?;
                Ok(Event::Message(Message::Text(Cow::Owned(s))))
            }
            Kind::Binary => Ok(Event::Message(Message::Binary(Cow::Owned(data)))),
        }
    }

    fn release_rx_if_idle(&mut self) {
        if let Some(rx) = &self.rx {
            if rx.frame.is_none() && rx.message.is_none() {
                self.rx = None;
            }
        }
    }

    /// A whole control frame from the peer.
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
}

#[cfg(test)]
mod tests;

/// How much to reserve so `add` more bytes fit after `len`: doubling, as
/// `Vec` does, but never past `max` (the message limit, checked before the
/// bytes get here), so a message's buffer costs at most what the limit
/// says. 0 when they fit already.
fn room_to_grow(len: usize, cap: usize, add: usize, max: usize) -> usize {
    let need = len.saturating_add(add);
    if need <= cap {
        return 0;
    }
    need.max(cap.saturating_mul(2).min(max)) - len
}

/// Unmasks `data` (at `offset` in its frame payload) if the frame was
/// masked.
#[inline]
fn unmask(data: &mut [u8], key: Option<[u8; 4]>, offset: usize) {
    if let Some(key) = key {
        apply_mask(data, key, offset);
    }
}
