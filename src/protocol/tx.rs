//! The send path: frames queued for the peer, within the write queue's
//! limits (the overflow policy applies when a send would pass them).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use super::{CloseInfo, Connection, Message, SendStatus, State};
use crate::close::{encode_close_payload, truncate_reason, CloseCode, MAX_REASON};
use crate::config::OverflowPolicy;
use crate::error::{ApiError, CapacityError, Error};
use crate::frame::{parse_header, FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use crate::role::Role;

impl Connection {
    pub(super) fn header(&self, opcode: OpCode, len: usize) -> FrameHeader {
        FrameHeader {
            mask: match self.role {
                Role::Client => Some(crate::rand::mask_key()),
                Role::Server => None,
            },
            ..FrameHeader::new(opcode, len as u64)
        }
    }

    pub(super) fn push_close(&mut self, code: CloseCode, reason: &str) {
        let mut payload = Vec::new();
        encode_close_payload(code, reason, &mut payload);
        self.out
            .push_frame(&self.header(OpCode::Close, payload.len()), &payload);
    }

    /// The refusals that do not depend on how a whole message is encoded,
    /// made before anything (the compressor included) is touched.
    pub(super) fn check_message(&self, len: usize) -> Result<(), Error> {
        if !self.is_open() {
            return Err(Error::ConnectionClosed);
        }
        if self.sending_fragments {
            return Err(ApiError::MessageInProgress.into());
        }
        self.check_size(len)
    }

    fn check_size(&self, len: usize) -> Result<(), Error> {
        let max = self.config.max_message_size;
        if len > max {
            return Err(Error::Capacity(CapacityError::SendTooLarge {
                size: len,
                max,
            }));
        }
        Ok(())
    }

    /// Checks that a frame of `frame_len` bytes (header included) fits the
    /// write queue, applying the overflow policy if not. The last check of
    /// every send: nothing may have changed before it (under the policy
    /// `Close` the connection closes; the frame is still not queued).
    pub(super) fn admit(&mut self, frame_len: usize) -> Result<(), Error> {
        let c = &self.config;
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

    pub(super) fn status(&self) -> SendStatus {
        if self.out.len() > self.config.write_buffer_high {
            SendStatus::Full
        } else {
            SendStatus::Queued
        }
    }

    /// Queues a text message.
    pub fn send_text(&mut self, text: &str) -> Result<SendStatus, Error> {
        self.send_data(OpCode::Text, Cow::Borrowed(text.as_bytes()))
    }

    /// Queues a binary message.
    pub fn send_binary(&mut self, data: &[u8]) -> Result<SendStatus, Error> {
        self.send_data(OpCode::Binary, Cow::Borrowed(data))
    }

    /// Queues a message; an owned payload is queued without a copy.
    pub fn send(&mut self, msg: Message<'_>) -> Result<SendStatus, Error> {
        match msg {
            Message::Text(Cow::Borrowed(t)) => self.send_text(t),
            Message::Text(Cow::Owned(t)) => self.send_data(OpCode::Text, Cow::Owned(t.into())),
            Message::Binary(b) => self.send_data(OpCode::Binary, b),
        }
    }

    /// One whole message, compressed if deflate wants it.
    fn send_data(&mut self, op: OpCode, data: Cow<'_, [u8]>) -> Result<SendStatus, Error> {
        self.check_message(data.len())?;
        if let Some(status) = self.send_compressed(op, &data)? {
            return Ok(status);
        }
        let h = self.header(op, data.len());
        self.admit(h.encoded_len() + data.len())?;
        match data {
            Cow::Borrowed(b) => self.out.push_frame(&h, b),
            Cow::Owned(v) => self.out.push_frame_owned(&h, v),
        }
        Ok(self.status())
    }

    /// Queues one frame of a message the application fragments itself:
    /// the first frame has opcode Text or Binary, the rest Continuation,
    /// the last has `fin` set. Control frames ([`Connection::ping`] and
    /// friends) may go between; other messages may not
    /// ([`ApiError::MessageInProgress`]). The frames are not compressed.
    pub fn send_frame(
        &mut self,
        opcode: OpCode,
        payload: &[u8],
        fin: bool,
    ) -> Result<SendStatus, Error> {
        if opcode.is_control() {
            return Err(ApiError::ControlOpcode(opcode).into());
        }
        if !self.is_open() {
            return Err(Error::ConnectionClosed);
        }
        match (opcode == OpCode::Continuation, self.sending_fragments) {
            (true, false) => return Err(ApiError::NoMessageInProgress.into()),
            (false, true) => return Err(ApiError::MessageInProgress.into()),
            _ => {}
        }
        self.check_size(payload.len())?;
        let h = FrameHeader {
            fin,
            ..self.header(opcode, payload.len())
        };
        self.admit(h.encoded_len() + payload.len())?;
        self.out.push_frame(&h, payload);
        // Only a queued frame moves the message on.
        self.sending_fragments = !fin;
        Ok(self.status())
    }

    /// Queues a frame encoded once for many receivers (see
    /// [`encode_shared`]). Server only: client frames need their own mask.
    pub fn send_shared(&mut self, frame: Arc<[u8]>) -> Result<SendStatus, Error> {
        if self.role == Role::Client {
            return Err(ApiError::SharedOnClient.into());
        }
        // One whole frame of an uncompressed message, nothing else: the
        // bytes go on the wire as they are.
        let payload_len = match parse_header(&frame) {
            Ok(Some((h, n)))
                if h.fin
                    && h.rsv == 0
                    && h.mask.is_none()
                    && matches!(h.opcode, OpCode::Text | OpCode::Binary)
                    && n as u64 + h.payload_len == frame.len() as u64 =>
            {
                h.payload_len as usize
            }
            _ => return Err(ApiError::NotASharedFrame.into()),
        };
        // The message size limit is on the payload, not the header.
        self.check_message(payload_len)?;
        self.admit(frame.len())?;
        self.out.push_shared(frame);
        Ok(self.status())
    }

    /// Queues a ping (payload at most 125 bytes), within the write queue
    /// limit like any send. (The automatic pong to a peer's ping is not
    /// refused: the peer is not read while the queue is above its high
    /// water mark, which bounds those.)
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.control_frame(OpCode::Ping, payload)
    }

    /// Queues an unsolicited pong (payload at most 125 bytes).
    pub fn pong(&mut self, payload: &[u8]) -> Result<(), Error> {
        self.control_frame(OpCode::Pong, payload)
    }

    fn control_frame(&mut self, op: OpCode, payload: &[u8]) -> Result<(), Error> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(ApiError::ControlPayloadTooLong(payload.len()).into());
        }
        if !self.is_open() {
            return Err(Error::ConnectionClosed);
        }
        let h = self.header(op, payload.len());
        self.admit(h.encoded_len() + payload.len())?;
        self.out.push_frame(&h, payload);
        Ok(())
    }

    /// Like [`Connection::close`], but refuses what `close` would adjust:
    /// a reason over 123 bytes ([`ApiError::CloseReasonTooLong`]), a code
    /// that may not be sent, or 1005 with a reason
    /// ([`ApiError::InvalidCloseCode`]), and a close already sent or
    /// received ([`Error::ConnectionClosed`]).
    pub fn try_close(&mut self, code: CloseCode, reason: &str, now: Instant) -> Result<(), Error> {
        let sendable =
            code.is_valid_on_wire() || (code == CloseCode::NO_STATUS && reason.is_empty());
        if !sendable {
            return Err(ApiError::InvalidCloseCode(code.0).into());
        }
        if reason.len() > MAX_REASON {
            return Err(ApiError::CloseReasonTooLong(reason.len()).into());
        }
        if !self.is_open() {
            return Err(Error::ConnectionClosed);
        }
        self.close(code, reason, now);
        Ok(())
    }

    /// Starts the closing handshake: queues a close frame and waits up to
    /// `close_timeout` from `now` for the peer's. Does nothing if a close
    /// was already sent or received.
    ///
    /// It never fails, because closing must always be possible (timeouts,
    /// shutdown, a handler's error path): a reason over 123 bytes is cut
    /// at a character boundary, a code that may not be sent becomes 1011,
    /// 1005 sends an empty close. [`Connection::try_close`] refuses
    /// those instead.
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
        self.timeout_moved = true;
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
