//! Frame headers (RFC 6455 §5.2): parse from a byte slice, encode into a
//! stack array.
//!
//! [`parse_header`] works like httparse: it returns `Ok(None)` when more
//! bytes are needed (nothing is consumed) and the header with its length
//! once the whole header is present. Checks that hold for every endpoint
//! are made here: known opcodes, control frames short and unfragmented,
//! lengths minimally encoded and below 2^63. Checks that depend on the role
//! or on extensions (masking, RSV bits) are the caller's, see
//! [`FrameHeader::check_role`].
//!
//! Lengths that are not minimally encoded are rejected: §5.2 says "the
//! minimal number of bytes MUST be used to encode the length".

use crate::error::ProtocolError;

/// Largest encoded header: 2 + 8 (length) + 4 (mask).
pub const MAX_HEADER_LEN: usize = 14;

/// Largest control frame payload.
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// A frame opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues a fragmented message.
    Continuation,
    /// 0x1: UTF-8 text.
    Text,
    /// 0x2: binary data.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
}

impl OpCode {
    /// Decodes the low four bits of the first header byte.
    pub fn from_u8(v: u8) -> Result<OpCode, ProtocolError> {
        Ok(match v {
            0 => OpCode::Continuation,
            1 => OpCode::Text,
            2 => OpCode::Binary,
            8 => OpCode::Close,
            9 => OpCode::Ping,
            10 => OpCode::Pong,
            other => return Err(ProtocolError::UnknownOpcode(other)),
        })
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0,
            OpCode::Text => 1,
            OpCode::Binary => 2,
            OpCode::Close => 8,
            OpCode::Ping => 9,
            OpCode::Pong => 10,
        }
    }

    /// Close, ping and pong are control frames.
    pub fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// A frame header, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1..RSV3 as the bits 0b100, 0b010, 0b001.
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on client-to-server frames.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
}

impl FrameHeader {
    /// An unmasked single-frame header.
    pub fn new(opcode: OpCode, payload_len: u64) -> Self {
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode,
            mask: None,
            payload_len,
        }
    }

    /// How many bytes [`encode_header`] writes for this header.
    pub fn encoded_len(&self) -> usize {
        let len = match self.payload_len {
            0..=125 => 2,
            126..=0xffff => 4,
            _ => 10,
        };
        len + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Role and extension checks: `expect_masked` is true on the server
    /// (client frames must be masked) and false on the client (server frames
    /// must not be). `allowed_rsv` holds the RSV bits negotiated extensions
    /// may use.
    pub fn check_role(&self, expect_masked: bool, allowed_rsv: u8) -> Result<(), ProtocolError> {
        if self.rsv & !allowed_rsv != 0 {
            return Err(ProtocolError::ReservedBits(self.rsv));
        }
        match (expect_masked, self.mask.is_some()) {
            (true, false) => Err(ProtocolError::UnmaskedFrame),
            (false, true) => Err(ProtocolError::MaskedFrame),
            _ => Ok(()),
        }
    }
}

/// Parses a frame header from the start of `buf`.
///
/// `Ok(None)`: not enough bytes yet. `Ok(Some((header, n)))`: the header
/// takes the first `n` bytes. Errors are reported as soon as the offending
/// byte is present, even if the header is incomplete.
pub fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, ProtocolError> {
    let Some(&b0) = buf.first() else {
        return Ok(None);
    };
    let fin = b0 & 0x80 != 0;
    let rsv = (b0 >> 4) & 0x7;
    let opcode = OpCode::from_u8(b0 & 0x0f)?;
    if opcode.is_control() && !fin {
        return Err(ProtocolError::FragmentedControl);
    }
    let Some(&b1) = buf.get(1) else {
        return Ok(None);
    };
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7f;
    if opcode.is_control() && len7 > 125 {
        return Err(ProtocolError::ControlTooLong(u64::from(len7)));
    }
    let (payload_len, mut pos) = match len7 {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            let n = u64::from(u16::from_be_bytes([b[0], b[1]]));
            if n < 126 {
                return Err(ProtocolError::NonMinimalLength);
            }
            (n, 4)
        }
        127 => {
            // The high bit is in the first length byte: fail early.
            if let Some(&hi) = buf.get(2) {
                if hi & 0x80 != 0 {
                    return Err(ProtocolError::LengthOverflow);
                }
            }
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let n = u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]);
            if n <= 0xffff {
                return Err(ProtocolError::NonMinimalLength);
            }
            (n, 10)
        }
        n => (u64::from(n), 2),
    };
    let mask = if masked {
        let Some(k) = buf.get(pos..pos + 4) else {
            return Ok(None);
        };
        pos += 4;
        Some([k[0], k[1], k[2], k[3]])
    } else {
        None
    };
    Ok(Some((
        FrameHeader {
            fin,
            rsv,
            opcode,
            mask,
            payload_len,
        },
        pos,
    )))
}

/// Encodes `h` into `out`, returning the number of bytes written (2–14).
pub fn encode_header(h: &FrameHeader, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
    out[0] = (u8::from(h.fin) << 7) | ((h.rsv & 7) << 4) | h.opcode.as_u8();
    let mask_bit = if h.mask.is_some() { 0x80 } else { 0 };
    let mut pos = match h.payload_len {
        n @ 0..=125 => {
            out[1] = mask_bit | n as u8;
            2
        }
        n @ 126..=0xffff => {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&(n as u16).to_be_bytes());
            4
        }
        n => {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&n.to_be_bytes());
            10
        }
    };
    if let Some(k) = h.mask {
        out[pos..pos + 4].copy_from_slice(&k);
        pos += 4;
    }
    pos
}

/// Appends a whole frame (header, then `payload` masked with the header's
/// key if any) to `out`.
pub fn write_frame(h: &FrameHeader, payload: &[u8], out: &mut Vec<u8>) {
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = encode_header(h, &mut hdr);
    out.reserve(n + payload.len());
    out.extend_from_slice(&hdr[..n]);
    let start = out.len();
    out.extend_from_slice(payload);
    if let Some(key) = h.mask {
        crate::mask::apply_mask(&mut out[start..], key, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses the header at the start of `buf` (a whole frame): every
    /// strict prefix of the header is `Ok(None)`, and every longer prefix
    /// gives the same header and length.
    fn parse_all(buf: &[u8]) -> (FrameHeader, usize) {
        let (h, n) = parse_header(buf).unwrap().unwrap();
        for i in 0..n {
            assert_eq!(parse_header(&buf[..i]), Ok(None), "prefix of {i} bytes");
        }
        for i in n..=buf.len() {
            assert_eq!(parse_header(&buf[..i]), Ok(Some((h, n))), "{i} bytes");
        }
        (h, n)
    }

    #[test]
    fn rfc_5_7_single_frame_unmasked_hello() {
        let wire = [0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        let (h, n) = parse_all(&wire);
        assert_eq!(n, 2);
        assert_eq!(h, FrameHeader::new(OpCode::Text, 5));
        assert_eq!(&wire[n..], b"Hello");
        let mut out = Vec::new();
        write_frame(&h, b"Hello", &mut out);
        assert_eq!(out, wire);
    }

    #[test]
    fn rfc_5_7_single_frame_masked_hello() {
        let wire = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, n) = parse_all(&wire);
        assert_eq!(n, 6);
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        let mut payload = wire[n..].to_vec();
        crate::mask::apply_mask(&mut payload, h.mask.unwrap(), 0);
        assert_eq!(payload, b"Hello");
        let mut out = Vec::new();
        write_frame(&h, b"Hello", &mut out);
        assert_eq!(out, wire);
    }

    #[test]
    fn rfc_5_7_fragmented_hel_lo() {
        let first = [0x01, 0x03, 0x48, 0x65, 0x6c];
        let second = [0x80, 0x02, 0x6c, 0x6f];
        let (h1, _) = parse_all(&first);
        assert!(!h1.fin);
        assert_eq!(h1.opcode, OpCode::Text);
        let (h2, _) = parse_all(&second);
        assert!(h2.fin);
        assert_eq!(h2.opcode, OpCode::Continuation);
    }

    #[test]
    fn rfc_5_7_ping_and_pong() {
        let ping = [0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f];
        assert_eq!(parse_all(&ping).0, FrameHeader::new(OpCode::Ping, 5));
        let pong = [
            0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        let (h, _) = parse_all(&pong);
        assert_eq!(h.opcode, OpCode::Pong);
        assert!(h.mask.is_some());
    }

    #[test]
    fn rfc_5_7_binary_256_and_64k() {
        let h256 = [0x82, 0x7e, 0x01, 0x00];
        assert_eq!(parse_all(&h256), (FrameHeader::new(OpCode::Binary, 256), 4));
        let h64k = [0x82, 0x7f, 0, 0, 0, 0, 0, 1, 0, 0];
        assert_eq!(
            parse_all(&h64k),
            (FrameHeader::new(OpCode::Binary, 65536), 10)
        );
        for (h, wire) in [(256u64, &h256[..]), (65536, &h64k[..])] {
            let mut out = [0u8; MAX_HEADER_LEN];
            let n = encode_header(&FrameHeader::new(OpCode::Binary, h), &mut out);
            assert_eq!(&out[..n], wire);
        }
    }

    #[test]
    fn rejects() {
        assert_eq!(parse_header(&[0x83]), Err(ProtocolError::UnknownOpcode(3)));
        assert_eq!(parse_header(&[0x8b]), Err(ProtocolError::UnknownOpcode(11)));
        assert_eq!(parse_header(&[0x09]), Err(ProtocolError::FragmentedControl));
        assert_eq!(
            parse_header(&[0x89, 0x7e]),
            Err(ProtocolError::ControlTooLong(126))
        );
        assert_eq!(
            parse_header(&[0x82, 0x7f, 0x80]),
            Err(ProtocolError::LengthOverflow)
        );
        assert_eq!(
            parse_header(&[0x82, 0x7e, 0x00, 0x7d]),
            Err(ProtocolError::NonMinimalLength)
        );
        assert_eq!(
            parse_header(&[0x82, 0x7f, 0, 0, 0, 0, 0, 0, 0xff, 0xff]),
            Err(ProtocolError::NonMinimalLength)
        );
        let (h, _) = parse_header(&[0xc2, 0x00]).unwrap().unwrap();
        assert_eq!(h.check_role(false, 0), Err(ProtocolError::ReservedBits(4)));
        assert_eq!(h.check_role(false, 4), Ok(()));
        assert_eq!(h.check_role(true, 4), Err(ProtocolError::UnmaskedFrame));
        let (m, _) = parse_header(&[0x82, 0x80, 1, 2, 3, 4]).unwrap().unwrap();
        assert_eq!(m.check_role(false, 0), Err(ProtocolError::MaskedFrame));
        assert_eq!(m.check_role(true, 0), Ok(()));
    }

    #[test]
    fn encode_parse_roundtrip() {
        for len in [
            0u64,
            1,
            125,
            126,
            127,
            0xffff,
            0x10000,
            1 << 40,
            (1 << 63) - 1,
        ] {
            for mask in [None, Some([9, 8, 7, 6])] {
                for op in [OpCode::Text, OpCode::Binary, OpCode::Continuation] {
                    let h = FrameHeader {
                        fin: len % 2 == 0,
                        rsv: (len % 8) as u8,
                        opcode: op,
                        mask,
                        payload_len: len,
                    };
                    let mut out = [0u8; MAX_HEADER_LEN];
                    let n = encode_header(&h, &mut out);
                    assert_eq!(n, h.encoded_len());
                    assert_eq!(parse_header(&out[..n]), Ok(Some((h, n))));
                    for i in 0..n {
                        assert_eq!(parse_header(&out[..i]), Ok(None), "{h:?} cut at {i}");
                    }
                }
            }
        }
    }
}
