//! Close codes and close frame payloads (RFC 6455 §5.5.1, §7.4).

use std::fmt;

/// A close status code. Any `u16` can be held; [`CloseCode::is_valid_on_wire`]
/// says whether it may appear in a close frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: normal closure.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, page navigation).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: protocol error.
    pub const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    /// 1003: a data type the endpoint cannot accept.
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// 1005: no status code was present (never sent on the wire).
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: closed without a close frame (never sent on the wire).
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: data inconsistent with the message type (bad UTF-8).
    pub const INVALID_DATA: CloseCode = CloseCode(1007);
    /// 1008: a policy was violated.
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: a message too big to process.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1010: (client) an expected extension was not negotiated.
    pub const EXTENSION: CloseCode = CloseCode(1010);
    /// 1011: an unexpected condition in the server.
    pub const INTERNAL: CloseCode = CloseCode(1011);
    /// 1012: the service is restarting.
    pub const RESTART: CloseCode = CloseCode(1012);
    /// 1013: try again later (overload).
    pub const TRY_AGAIN: CloseCode = CloseCode(1013);

    /// Whether this code may be sent in a close frame: 1000–1003, 1007–1014
    /// and 3000–4999. 1004–1006, 1015, below 1000 and 1016–2999 may not.
    pub fn is_valid_on_wire(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u16> for CloseCode {
    fn from(c: u16) -> Self {
        CloseCode(c)
    }
}

/// A parsed close frame payload: the code and reason the peer sent.
/// An empty payload is reported as code 1005 with an empty reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFrame<'a> {
    /// The status code (1005 if the payload was empty).
    pub code: CloseCode,
    /// The reason, UTF-8, at most 123 bytes.
    pub reason: &'a str,
}

/// Why a close frame payload is invalid. A peer's invalid close is a
/// protocol error: `From` maps each to its [`ProtocolError`] (which names
/// the close code to fail the connection with).
///
/// [`ProtocolError`]: crate::ProtocolError
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseFrameError {
    /// A one-byte payload.
    LengthOne,
    /// A code that may not be sent on the wire.
    InvalidCode(u16),
    /// A reason that is not UTF-8.
    InvalidReason,
}

impl fmt::Display for CloseFrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseFrameError::LengthOne => f.write_str("close payload of 1 byte"),
            CloseFrameError::InvalidCode(c) => write!(f, "invalid close code {c}"),
            CloseFrameError::InvalidReason => f.write_str("close reason is not UTF-8"),
        }
    }
}

impl std::error::Error for CloseFrameError {}

/// Parses and validates a close frame payload (already unmasked).
pub fn parse_close_payload(payload: &[u8]) -> Result<CloseFrame<'_>, CloseFrameError> {
    match payload.len() {
        0 => Ok(CloseFrame {
            code: CloseCode::NO_STATUS,
            reason: "",
        }),
        1 => Err(CloseFrameError::LengthOne),
        _ => {
            let code = CloseCode(u16::from_be_bytes([payload[0], payload[1]]));
            if !code.is_valid_on_wire() {
                return Err(CloseFrameError::InvalidCode(code.0));
            }
            let reason =
                std::str::from_utf8(&payload[2..]).map_err(|_| CloseFrameError::InvalidReason)?;
            Ok(CloseFrame { code, reason })
        }
    }
}

/// Longest reason that fits a control frame (125 − 2 bytes of code).
pub const MAX_REASON: usize = 123;

/// Writes a close payload for `code` and `reason` into `out` (cleared first).
/// The reason is cut at a character boundary to fit 123 bytes. Code 1005
/// produces an empty payload.
pub fn encode_close_payload(code: CloseCode, reason: &str, out: &mut Vec<u8>) {
    out.clear();
    if code == CloseCode::NO_STATUS {
        return;
    }
    out.extend_from_slice(&code.0.to_be_bytes());
    out.extend_from_slice(truncate_reason(reason).as_bytes());
}

/// `reason` cut to at most [`MAX_REASON`] bytes at a character boundary.
pub fn truncate_reason(reason: &str) -> &str {
    if reason.len() <= MAX_REASON {
        return reason;
    }
    let mut end = MAX_REASON;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IANA WebSocket Close Code Number Registry (RFC 6455 §11.7, with
    /// the later 1012–1015), and whether each code may be sent in a close
    /// frame: 1004 is reserved, 1005, 1006 and 1015 "MUST NOT be set as a
    /// status code in a Close control frame" (§7.4.1).
    const REGISTRY: [(u16, &str, bool); 16] = [
        (1000, "Normal Closure", true),
        (1001, "Going Away", true),
        (1002, "Protocol error", true),
        (1003, "Unsupported Data", true),
        (1004, "Reserved", false),
        (1005, "No Status Rcvd", false),
        (1006, "Abnormal Closure", false),
        (1007, "Invalid frame payload data", true),
        (1008, "Policy Violation", true),
        (1009, "Message Too Big", true),
        (1010, "Mandatory Ext.", true),
        (1011, "Internal Server Error", true),
        (1012, "Service Restart", true),
        (1013, "Try Again Later", true),
        (1014, "Bad Gateway", true),
        (1015, "TLS handshake", false),
    ];

    /// Whether `code` may be sent, from RFC 6455 §7.4.2: 0–999 are not
    /// used; 1000–2999 are the protocol's, valid only once registered;
    /// 3000–3999 are for libraries and frameworks, 4000–4999 for private
    /// use (both valid); nothing above 4999 is defined.
    fn sendable_per_rfc(code: u16) -> bool {
        if let Some(&(_, _, ok)) = REGISTRY.iter().find(|(c, _, _)| *c == code) {
            return ok;
        }
        (3000..5000).contains(&code)
    }

    #[test]
    fn close_codes_follow_the_rfc_and_the_registry() {
        for code in 0..=u16::MAX {
            let want = sendable_per_rfc(code);
            assert_eq!(CloseCode(code).is_valid_on_wire(), want, "code {code}");
            let p = code_payload(code);
            if want {
                assert_eq!(parse_close_payload(&p).unwrap().code, CloseCode(code));
            } else {
                assert_eq!(
                    parse_close_payload(&p),
                    Err(CloseFrameError::InvalidCode(code))
                );
            }
        }
        // The named constants are the registry's codes.
        for (konst, name) in [
            (CloseCode::NORMAL, "Normal Closure"),
            (CloseCode::GOING_AWAY, "Going Away"),
            (CloseCode::PROTOCOL_ERROR, "Protocol error"),
            (CloseCode::UNSUPPORTED, "Unsupported Data"),
            (CloseCode::NO_STATUS, "No Status Rcvd"),
            (CloseCode::ABNORMAL, "Abnormal Closure"),
            (CloseCode::INVALID_DATA, "Invalid frame payload data"),
            (CloseCode::POLICY, "Policy Violation"),
            (CloseCode::TOO_BIG, "Message Too Big"),
            (CloseCode::EXTENSION, "Mandatory Ext."),
            (CloseCode::INTERNAL, "Internal Server Error"),
            (CloseCode::RESTART, "Service Restart"),
            (CloseCode::TRY_AGAIN, "Try Again Later"),
        ] {
            let entry = REGISTRY.iter().find(|(_, n, _)| *n == name).unwrap();
            assert_eq!(konst.0, entry.0, "{name}");
        }
    }

    fn code_payload(code: u16) -> Vec<u8> {
        code.to_be_bytes().to_vec()
    }

    #[test]
    fn close_payload_shapes() {
        assert_eq!(parse_close_payload(&[]).unwrap().code, CloseCode::NO_STATUS);
        assert_eq!(parse_close_payload(&[3]), Err(CloseFrameError::LengthOne));
        let f = parse_close_payload(b"\x03\xe8bye").unwrap();
        assert_eq!((f.code, f.reason), (CloseCode::NORMAL, "bye"));
        assert_eq!(
            parse_close_payload(b"\x03\xe8\xff"),
            Err(CloseFrameError::InvalidReason)
        );
    }

    #[test]
    fn encode_truncates_at_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let mut out = Vec::new();
        encode_close_payload(CloseCode::NORMAL, &reason, &mut out);
        assert!(out.len() <= 125);
        let f = parse_close_payload(&out).unwrap();
        assert_eq!(f.reason.len(), 122);
        encode_close_payload(CloseCode::NO_STATUS, "x", &mut out);
        assert!(out.is_empty());
    }
}
