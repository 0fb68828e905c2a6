//! permessage-deflate glue (RFC 7692): compressed sends, and inflating
//! received messages into the message in progress.

use super::{Connection, SendStatus, RSV1};
#[cfg(feature = "deflate")]
use crate::deflate::{DeflateState, InflateError};
#[cfg(feature = "deflate")]
use crate::error::CapacityError;
use crate::error::{Error, ProtocolError};
use crate::frame::{FrameHeader, OpCode};

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

    /// Compresses a message if deflate is on and it is worth it: the
    /// payload to send compressed, or `None` to send it as is.
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
    pub(super) fn send_compressed(
        &mut self,
        op: OpCode,
        data: &[u8],
    ) -> Result<Option<SendStatus>, Error> {
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
}
