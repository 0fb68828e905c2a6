//! The opening handshake (RFC 6455 §4): parse and check the upgrade request
//! and build the response on the server; build the request and check the
//! response on the client.
//!
//! Heads are parsed with httparse once the blank line that ends them has
//! arrived; [`RequestReader`] and [`ResponseReader`] look for it only in the
//! new bytes, so a request sent a byte at a time is not re-scanned from the
//! start. Bytes after the head belong to the WebSocket stream and are
//! returned to the caller.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use sha1::{Digest, Sha1};

mod reader;
mod request;
mod response;

pub use reader::{Head, Header};
pub use request::{
    parse_request, parse_request_head, reason_phrase, write_accept_response, write_error_response,
    write_http_response, Request, RequestReader,
};
pub use response::{parse_response, parse_response_head, ClientRequest, Response, ResponseReader};

const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(key);
    h.update(GUID);
    B64.encode(h.finalize())
}

/// A fresh random `Sec-WebSocket-Key` (16 random bytes in base64).
pub fn generate_key() -> String {
    let mut raw = [0u8; 16];
    crate::rand::fill(&mut raw);
    B64.encode(raw)
}

#[cfg(test)]
pub(crate) mod tests;
