//! Frames, messages and test data as bytes.

use std::net::SocketAddr;

use wsloop::frame::{write_frame, FrameHeader, OpCode};
use wsloop::handshake::{generate_key, ClientRequest};

/// One frame as received (server frames are unmasked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload: Vec<u8>,
}

/// What `TestClient::recv` returns: a whole (reassembled) message or a
/// control frame.
#[derive(Clone, PartialEq, Eq)]
pub enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// Close code (None for an empty close payload) and reason.
    Close(Option<u16>, String),
}

impl std::fmt::Debug for Msg {
    // Payloads can be megabytes: show their size and a short prefix.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn short(b: &[u8]) -> String {
            let s = String::from_utf8_lossy(&b[..b.len().min(40)]).into_owned();
            format!(
                "{} bytes {:?}{}",
                b.len(),
                s,
                if b.len() > 40 { "…" } else { "" }
            )
        }
        match self {
            Msg::Text(t) => write!(f, "Text({})", short(t.as_bytes())),
            Msg::Binary(b) => write!(f, "Binary({})", short(b)),
            Msg::Ping(b) => write!(f, "Ping({})", short(b)),
            Msg::Pong(b) => write!(f, "Pong({})", short(b)),
            Msg::Close(c, r) => write!(f, "Close({c:?}, {r:?})"),
        }
    }
}

/// Encodes a frame. Client frames must be masked; `masked = false` makes
/// an invalid one on purpose.
pub fn frame_bytes(opcode: OpCode, payload: &[u8], fin: bool, masked: bool) -> Vec<u8> {
    let h = FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask: masked.then(wsloop::rand::mask_key),
        payload_len: payload.len() as u64,
    };
    let mut out = Vec::with_capacity(payload.len() + 14);
    write_frame(&h, payload, &mut out);
    out
}

/// A close frame payload: code then reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// Deterministic test data of `len` bytes (seeded, so two calls agree).
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8 ^ seed)
        .collect()
}

/// ASCII text of `len` bytes.
pub fn text_pattern(len: usize, seed: u8) -> String {
    (0..len)
        .map(|i| (b'a' + ((i + seed as usize) % 26) as u8) as char)
        .collect()
}

/// Message `i` of a numbered stream: `size` bytes (at least 8) of
/// [`pattern`] that start with `i` (u64, big endian), so a receiver can
/// tell a lost, reordered or corrupted one.
pub fn numbered(i: usize, size: usize) -> Vec<u8> {
    let mut v = pattern(size, i as u8);
    v[..8].copy_from_slice(&(i as u64).to_be_bytes());
    v
}

/// The upgrade request for `addr` and `target`, and its bytes.
pub fn upgrade_request(addr: SocketAddr, target: &str) -> (ClientRequest, Vec<u8>) {
    let req = ClientRequest {
        host: addr.to_string(),
        target: target.to_owned(),
        key: generate_key(),
        protocols: Vec::new(),
        headers: Vec::new(),
    };
    let mut bytes = Vec::new();
    req.write(&mut bytes);
    (req, bytes)
}
