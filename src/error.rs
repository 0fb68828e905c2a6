//! Errors. One top-level [`Error`] with small `Copy` sub-enums; each protocol
//! error maps to its close code in one place ([`ProtocolError::close_code`]).

use std::fmt;
use std::io;

use crate::close::{CloseCode, CloseFrameError};
use crate::frame::OpCode;

/// Everything that can go wrong in wsloop.
///
/// A normal close is never an error: it is an event.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The peer broke RFC 6455. The connection was failed with the close code
    /// from [`ProtocolError::close_code`].
    Protocol(ProtocolError),
    /// The opening handshake was refused or malformed.
    Handshake(HandshakeError),
    /// A configured limit was exceeded.
    Capacity(CapacityError),
    /// A configuration value is invalid.
    Config(ConfigError),
    /// The caller misused the API (not the peer's fault). Nothing was sent
    /// and the connection is as it was.
    Api(ApiError),
    /// The connection is closed (or closing) and cannot send or receive.
    ConnectionClosed,
    /// A socket error.
    Io(io::Error),
    /// A URL could not be used.
    Url(String),
    /// The operation did not finish in time.
    Timeout(&'static str),
    /// TLS setup or verification failed (the reason is named).
    Tls(String),
    /// A reconnecting client gave up.
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        last: Box<Error>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Protocol(e) => write!(f, "protocol error: {e}"),
            Error::Handshake(e) => write!(f, "handshake failed: {e}"),
            Error::Capacity(e) => write!(f, "{e}"),
            Error::Config(e) => write!(f, "invalid configuration: {e}"),
            Error::Api(e) => write!(f, "API misuse: {e}"),
            Error::ConnectionClosed => f.write_str("connection closed"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Url(e) => write!(f, "bad URL: {e}"),
            Error::Timeout(what) => write!(f, "timed out: {what}"),
            Error::Tls(why) => write!(f, "TLS: {why}"),
            Error::GaveUp { attempts, last } => {
                write!(f, "gave up after {attempts} attempts: {last}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::GaveUp { last, .. } => Some(last.as_ref()),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        if let Some(tls) = e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<crate::stream::TlsFailure>())
        {
            return Error::Tls(tls.0.clone());
        }
        Error::Io(e)
    }
}
impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e)
    }
}
impl From<CloseFrameError> for Error {
    fn from(e: CloseFrameError) -> Self {
        Error::Protocol(e.into())
    }
}
impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        Error::Handshake(e)
    }
}
impl From<CapacityError> for Error {
    fn from(e: CapacityError) -> Self {
        match e {
            CapacityError::FrameTooLarge { .. }
            | CapacityError::MessageTooLarge { .. }
            | CapacityError::TooManyFragments { .. } => Error::Protocol(ProtocolError::Capacity(e)),
            _ => Error::Capacity(e),
        }
    }
}
impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}
impl From<ApiError> for Error {
    fn from(e: ApiError) -> Self {
        Error::Api(e)
    }
}

/// A violation of RFC 6455 by the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1, RSV2 or RSV3 set without a negotiated extension.
    ReservedBits(u8),
    /// Opcode 3–7 or 11–15.
    UnknownOpcode(u8),
    /// A control frame with FIN clear.
    FragmentedControl,
    /// A control frame whose payload exceeds 125 bytes.
    ControlTooLong(u64),
    /// A client frame without a mask (server side).
    UnmaskedFrame,
    /// A server frame with a mask (client side).
    MaskedFrame,
    /// A 64-bit length with the most significant bit set.
    LengthOverflow,
    /// A length not in its minimal encoding (RFC 6455 §5.2).
    NonMinimalLength,
    /// A continuation frame with no message in progress.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is unfinished.
    ExpectedContinuation,
    /// Text that is not UTF-8.
    InvalidUtf8,
    /// A close frame with a one-byte payload.
    CloseLengthOne,
    /// A close code that may not be sent on the wire.
    InvalidCloseCode(u16),
    /// A close reason that is not UTF-8.
    InvalidCloseReason,
    /// A frame, message or fragment count over the configured limit.
    Capacity(CapacityError),
    /// Data after the peer's close frame.
    DataAfterClose,
    /// A compressed message that does not decompress.
    InvalidCompressedData,
}

impl ProtocolError {
    /// The close code with which the connection is failed for this error.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::InvalidUtf8 | ProtocolError::InvalidCloseReason => {
                CloseCode::INVALID_DATA
            }
            ProtocolError::Capacity(_) => CloseCode::TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedBits(b) => {
                write!(f, "reserved bits 0x{b:x} set without an extension")
            }
            ProtocolError::UnknownOpcode(o) => write!(f, "unknown opcode {o}"),
            ProtocolError::FragmentedControl => f.write_str("fragmented control frame"),
            ProtocolError::ControlTooLong(n) => {
                write!(f, "control frame of {n} bytes exceeds 125")
            }
            ProtocolError::UnmaskedFrame => f.write_str("client frame not masked"),
            ProtocolError::MaskedFrame => f.write_str("server frame masked"),
            ProtocolError::LengthOverflow => f.write_str("64-bit length with high bit set"),
            ProtocolError::NonMinimalLength => f.write_str("length not minimally encoded"),
            ProtocolError::UnexpectedContinuation => {
                f.write_str("continuation frame without a message in progress")
            }
            ProtocolError::ExpectedContinuation => {
                f.write_str("new data frame inside a fragmented message")
            }
            ProtocolError::InvalidUtf8 => f.write_str("invalid UTF-8 in text"),
            ProtocolError::CloseLengthOne => f.write_str("close payload of 1 byte"),
            ProtocolError::InvalidCloseCode(c) => write!(f, "invalid close code {c}"),
            ProtocolError::InvalidCloseReason => f.write_str("close reason is not UTF-8"),
            ProtocolError::Capacity(e) => write!(f, "{e}"),
            ProtocolError::DataAfterClose => f.write_str("data after close frame"),
            ProtocolError::InvalidCompressedData => {
                f.write_str("compressed message does not decompress")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

impl From<CloseFrameError> for ProtocolError {
    fn from(e: CloseFrameError) -> Self {
        match e {
            CloseFrameError::LengthOne => ProtocolError::CloseLengthOne,
            CloseFrameError::InvalidCode(c) => ProtocolError::InvalidCloseCode(c),
            CloseFrameError::InvalidReason => ProtocolError::InvalidCloseReason,
        }
    }
}

/// A configured limit was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CapacityError {
    /// A frame's declared payload is larger than `max_frame_size`.
    FrameTooLarge {
        /// Declared payload length.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// A message grew larger than `max_message_size`.
    MessageTooLarge {
        /// Size reached.
        size: u64,
        /// The limit.
        max: usize,
    },
    /// A message arrived in more than `max_fragments` frames.
    TooManyFragments {
        /// The limit.
        max: usize,
    },
    /// The write queue is above its high water mark: try again after drain.
    WriteBufferFull {
        /// Bytes queued.
        buffered: usize,
        /// The high water mark.
        high: usize,
    },
    /// The write queue would pass its hard limit.
    WriteBufferLimit {
        /// Bytes queued.
        buffered: usize,
        /// The hard limit.
        limit: usize,
    },
    /// The message to send is larger than `max_message_size`.
    SendTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A server [`Handle`](crate::server::Handle) call found the loop's
    /// queue of requests from other threads full (`Config::command_queue_len`
    /// or `command_queue_bytes`): the loop is behind. Nothing was queued;
    /// retry later (after a short sleep), or drop the message.
    CommandQueueFull {
        /// Requests waiting.
        commands: usize,
        /// Payload bytes waiting.
        bytes: usize,
        /// `Config::command_queue_len`.
        max_commands: usize,
        /// `Config::command_queue_bytes`.
        max_bytes: usize,
    },
}

impl fmt::Display for CapacityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapacityError::FrameTooLarge { size, max } => {
                write!(f, "frame of {size} bytes exceeds max_frame_size {max}")
            }
            CapacityError::MessageTooLarge { size, max } => {
                write!(f, "message of {size} bytes exceeds max_message_size {max}")
            }
            CapacityError::TooManyFragments { max } => {
                write!(f, "message exceeds max_fragments {max}")
            }
            CapacityError::WriteBufferFull { buffered, high } => {
                write!(
                    f,
                    "write buffer full: {buffered} bytes queued, high water mark {high}"
                )
            }
            CapacityError::WriteBufferLimit { buffered, limit } => {
                write!(
                    f,
                    "write buffer limit: {buffered} bytes queued, hard limit {limit}"
                )
            }
            CapacityError::SendTooLarge { size, max } => {
                write!(f, "message of {size} bytes exceeds max_message_size {max}")
            }
            CapacityError::CommandQueueFull {
                commands,
                bytes,
                max_commands,
                max_bytes,
            } => write!(
                f,
                "server command queue full: {commands} requests ({bytes} bytes) waiting for the \
                 event loop, limits command_queue_len {max_commands} and command_queue_bytes \
                 {max_bytes}; retry later"
            ),
        }
    }
}

impl std::error::Error for CapacityError {}

/// Why an opening handshake failed. On the server side each maps to an HTTP
/// status ([`HandshakeError::status`]); on the client side it says what was
/// wrong with the server's response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// httparse could not parse the request or response.
    Malformed,
    /// The request method is not GET.
    MethodNotGet,
    /// The request is not HTTP/1.1.
    HttpVersion,
    /// No Host header.
    MissingHost,
    /// `Upgrade: websocket` missing.
    MissingUpgrade,
    /// `Connection: upgrade` missing.
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Key` missing.
    MissingKey,
    /// `Sec-WebSocket-Key` is not 16 bytes of base64.
    BadKey,
    /// `Sec-WebSocket-Version` missing or not 13.
    UnsupportedVersion,
    /// The request's headers are larger than `max_handshake_bytes`.
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// More headers than `max_headers`.
    TooManyHeaders {
        /// The limit.
        max: usize,
    },
    /// The handshake did not finish within `handshake_timeout`.
    Timeout,
    /// (Client) the server answered with a status other than 101.
    Status(u16),
    /// (Client) `Sec-WebSocket-Accept` missing or wrong.
    BadAccept,
    /// (Client) the server chose a subprotocol that was not offered.
    UnrequestedProtocol,
    /// (Client) the server chose an extension that was not offered.
    UnrequestedExtension,
    /// (Client) the server's `Sec-WebSocket-Extensions` is not UTF-8 or
    /// has an entry that does not parse (RFC 6455 §9.1).
    MalformedExtensions,
    /// The connection ended before the handshake finished.
    Eof,
}

impl HandshakeError {
    /// The HTTP status a server answers with for this error.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::MethodNotGet => 405,
            HandshakeError::UnsupportedVersion => 426,
            HandshakeError::TooLarge { .. } | HandshakeError::TooManyHeaders { .. } => 431,
            HandshakeError::Timeout => 408,
            _ => 400,
        }
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Malformed => f.write_str("malformed HTTP message"),
            HandshakeError::MethodNotGet => f.write_str("method must be GET"),
            HandshakeError::HttpVersion => f.write_str("HTTP version must be 1.1"),
            HandshakeError::MissingHost => f.write_str("missing Host header"),
            HandshakeError::MissingUpgrade => f.write_str("missing 'Upgrade: websocket'"),
            HandshakeError::MissingConnectionUpgrade => {
                f.write_str("missing 'Connection: upgrade'")
            }
            HandshakeError::MissingKey => f.write_str("missing Sec-WebSocket-Key"),
            HandshakeError::BadKey => {
                f.write_str("Sec-WebSocket-Key is not 16 bytes encoded in base64")
            }
            HandshakeError::UnsupportedVersion => f.write_str("Sec-WebSocket-Version must be 13"),
            HandshakeError::TooLarge { max } => {
                write!(f, "request headers exceed max_handshake_bytes {max}")
            }
            HandshakeError::TooManyHeaders { max } => {
                write!(f, "more than max_headers {max} headers")
            }
            HandshakeError::Timeout => f.write_str("handshake not finished in time"),
            HandshakeError::Status(s) => write!(f, "server answered HTTP {s} instead of 101"),
            HandshakeError::BadAccept => f.write_str("Sec-WebSocket-Accept missing or wrong"),
            HandshakeError::UnrequestedProtocol => {
                f.write_str("server chose a subprotocol that was not offered")
            }
            HandshakeError::UnrequestedExtension => {
                f.write_str("server chose an extension that was not offered")
            }
            HandshakeError::MalformedExtensions => {
                f.write_str("server's Sec-WebSocket-Extensions does not parse")
            }
            HandshakeError::Eof => f.write_str("connection closed during the handshake"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// An invalid [`Config`](crate::Config) value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The field at fault.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// A call the API does not allow, refused before anything was queued: the
/// caller's mistake, where a [`ProtocolError`] is the peer's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiError {
    /// `send_frame` with a control opcode: use `ping`, `pong` or `close`.
    ControlOpcode(OpCode),
    /// `send_shared` on a client: each client frame needs its own masking
    /// key (RFC 6455 §5.3), so a frame cannot be shared.
    SharedOnClient,
    /// `send_shared` with bytes that are not one whole unmasked,
    /// uncompressed text or binary frame (as `encode_shared` makes).
    NotASharedFrame,
    /// A ping or pong payload of this many bytes: at most 125 fit a
    /// control frame (RFC 6455 §5.5).
    ControlPayloadTooLong(usize),
    /// A close reason of this many bytes: at most 123 fit a close frame
    /// (125 bytes, 2 of them the code).
    CloseReasonTooLong(usize),
    /// A close code that may not be sent in a close frame (RFC 6455 §7.4),
    /// or 1005 (no code) with a reason.
    InvalidCloseCode(u16),
    /// A new message while a fragmented one started with `send_frame` is
    /// unfinished: send its remaining frames first (RFC 6455 §5.4).
    MessageInProgress,
    /// A continuation frame with no fragmented message started.
    NoMessageInProgress,
    /// (Client) a send before the upgrade finished: wait for
    /// `Client::is_upgraded`.
    NotUpgraded,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::ControlOpcode(op) => write!(
                f,
                "send_frame takes data opcodes only, not {op:?}: use ping, pong or close"
            ),
            ApiError::SharedOnClient => {
                f.write_str("send_shared on a client: client frames are masked one by one")
            }
            ApiError::NotASharedFrame => f.write_str(
                "send_shared takes one whole unmasked text or binary frame (see encode_shared)",
            ),
            ApiError::ControlPayloadTooLong(n) => {
                write!(f, "control frame payload of {n} bytes exceeds 125")
            }
            ApiError::CloseReasonTooLong(n) => {
                write!(f, "close reason of {n} bytes exceeds 123")
            }
            ApiError::InvalidCloseCode(c) => write!(
                f,
                "close code {c} may not be sent (valid: 1000-1003, 1007-1014, 3000-4999; \
                 1005 only without a reason)"
            ),
            ApiError::MessageInProgress => f.write_str(
                "a fragmented message is unfinished: send its continuation frames first",
            ),
            ApiError::NoMessageInProgress => {
                f.write_str("continuation frame without a fragmented message started")
            }
            ApiError::NotUpgraded => f.write_str("send before the upgrade finished"),
        }
    }
}

impl std::error::Error for ApiError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::parse_close_payload;

    #[test]
    fn close_frame_errors_map_to_protocol_errors() {
        let cases: [(&[u8], ProtocolError); 3] = [
            (b"\x03", ProtocolError::CloseLengthOne),
            (b"\x03\xed", ProtocolError::InvalidCloseCode(1005)),
            (b"\x03\xe8\xff", ProtocolError::InvalidCloseReason),
        ];
        for (payload, want) in cases {
            let e = parse_close_payload(payload).unwrap_err();
            assert_eq!(ProtocolError::from(e), want);
            assert_eq!(e.to_string(), want.to_string());
            assert!(matches!(Error::from(e), Error::Protocol(p) if p == want));
        }
    }
}
