//! permessage-deflate glue (RFC 7692): compressed sends, and inflating
//! received messages into the message in progress.

use super::{Connection, SendStatus, RSV1};
#[cfg(feature = "deflate")]
use crate::deflate::{DeflateState, InflateError};
#[cfg(feature = "deflate")]
use crate::error::CapacityError;
use crate::error::{Error, ProtocolError};
use crate::frame::OpCode;
#[cfg(feature = "deflate")]
use crate::{frame::FrameHeader, role::Role};

impl Connection {
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

    /// Decompresses `data` into the message in progress (`end`: the
    /// message's last frame is done), validating text as it comes out.
    #[cfg(feature = "deflate")]
    pub(super) fn inflate(&mut self, data: &[u8], end: bool) -> Result<(), ProtocolError> {
        let max = self.config.max_message_size;
        let (Some(rx), Some(d)) = (self.rx.as_mut(), self.deflate.as_mut()) else {
            return Err(ProtocolError::ReservedBits(RSV1));
        };
        let (msg, mut utf8) = rx.inflate_target();
        let mut check = |piece: &[u8]| match &mut utf8 {
            Some(v) => v.feed(piece).is_ok(),
            None => true,
        };
        let r = if end {
            d.finish(msg, max, &mut check)
        } else {
            d.decompress(data, msg, max, &mut check)
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
    pub(super) fn inflate(&mut self, _data: &[u8], _end: bool) -> Result<(), ProtocolError> {
        // RSV1 is rejected before a message can be marked compressed.
        Err(ProtocolError::ReservedBits(RSV1))
    }

    /// Sends a whole message compressed if deflate is on and wants it;
    /// `Ok(None)` to send it as is. The caller made every check that does
    /// not depend on the compressed size ([`Connection::check_message`]).
    ///
    /// The write queue limit does: the message is compressed before it is
    /// known to fit. A refusal after that must not leave the message in
    /// the compressor's window (with context takeover, later messages would
    /// refer to bytes the peer never got, and it would inflate wrong
    /// bytes), so the context is forgotten: the next message starts from an
    /// empty window, which costs ratio once, never correctness. A queue
    /// that would refuse even the smallest frame refuses before compressing,
    /// so a sender that keeps a full queue does not lose its context.
    #[cfg(feature = "deflate")]
    pub(super) fn send_compressed(
        &mut self,
        op: OpCode,
        data: &[u8],
    ) -> Result<Option<SendStatus>, Error> {
        if !self.deflate.as_ref().is_some_and(|d| d.wants(data.len())) {
            return Ok(None);
        }
        // A 1-byte payload (an empty message compresses to 0x00).
        let mask = if self.role == Role::Client { 4 } else { 0 };
        self.admit(2 + mask + 1)?;
        let mut z = Vec::with_capacity(data.len() / 2 + 64);
        if let Some(d) = self.deflate.as_mut() {
            d.compress(data, &mut z);
        }
        let h = FrameHeader {
            rsv: RSV1,
            ..self.header(op, z.len())
        };
        if let Err(e) = self.admit(h.encoded_len() + z.len()) {
            if let Some(d) = self.deflate.as_mut() {
                d.forget_tx_context();
            }
            return Err(e);
        }
        self.out.push_frame_owned(&h, z);
        Ok(Some(self.status()))
    }

    #[cfg(not(feature = "deflate"))]
    pub(super) fn send_compressed(
        &mut self,
        _op: OpCode,
        _data: &[u8],
    ) -> Result<Option<SendStatus>, Error> {
        Ok(None)
    }
}
