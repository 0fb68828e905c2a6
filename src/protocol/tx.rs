//! The send path: frames queued for the peer, within the write queue's
//! limits (the overflow policy applies when a send would pass them).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use super::{CloseInfo, Connection, Message, SendStatus, State};
use crate::close::{encode_close_payload, truncate_reason, CloseCode};
use crate::config::OverflowPolicy;
use crate::error::{CapacityError, Error, ProtocolError};
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

    /// Checks that a frame of `frame_len` bytes (header included) carrying
    /// `payload_len` bytes may be queued, applying the overflow policy if
    /// not.
    pub(super) fn admit(&mut self, payload_len: usize, frame_len: usize) -> Result<(), Error> {
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

    pub(super) fn status(&self) -> SendStatus {
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
