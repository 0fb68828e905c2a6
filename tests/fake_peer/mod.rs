//! A scripted WebSocket server on a blocking std socket (plain or TLS), for
//! the client tests: it answers the upgrade with whatever the test says,
//! reads and writes frames when the test says, so the test decides exactly
//! when the server reads, stops reading or closes.
#![allow(dead_code)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use wsloop::frame::{parse_header, write_frame, FrameHeader, OpCode};
use wsloop::handshake::accept_key;
use wsloop::mask::apply_mask;

/// How long any read of a test peer may block: a stuck test fails instead
/// of hanging.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A listener on 127.0.0.1 with a port the system picks.
pub fn listen() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// Accepts one connection, with read and write timeouts set.
pub fn accept(l: &TcpListener) -> TcpStream {
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// One server side of a WebSocket connection over `S`.
pub struct Peer<S: Read + Write> {
    pub s: S,
    buf: Vec<u8>,
}

/// Message `i` of a numbered stream: `size` bytes (at least 8) starting
/// with `i`, then a pattern that depends on `i`.
pub fn numbered(i: usize, size: usize) -> Vec<u8> {
    let mut v: Vec<u8> = (0..size)
        .map(|k| (k as u8).wrapping_mul(31) ^ i as u8)
        .collect();
    v[..8].copy_from_slice(&(i as u64).to_be_bytes());
    v
}

/// The number of a [`numbered`] message, after checking its pattern.
pub fn number_of(v: &[u8]) -> usize {
    let i = u64::from_be_bytes(v[..8].try_into().unwrap()) as usize;
    assert_eq!(v, &numbered(i, v.len())[..], "message {i} is corrupted");
    i
}

impl<S: Read + Write> Peer<S> {
    pub fn new(s: S) -> Self {
        Peer { s, buf: Vec::new() }
    }

    /// Reads the upgrade request and answers `101` with a correct accept
    /// key and the `extra` header lines (each ending in `\r\n`).
    pub fn upgrade(&mut self, extra: &[u8]) {
        let head = self.read_head();
        let mut resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
            accept_key(request_key(&head).as_bytes())
        )
        .into_bytes();
        resp.extend_from_slice(extra);
        resp.extend_from_slice(b"\r\n");
        self.s.write_all(&resp).unwrap();
        self.s.flush().unwrap();
    }

    /// Reads the upgrade request and answers with `status_line` (say
    /// `401 Unauthorized`) and an empty body.
    pub fn refuse(&mut self, status_line: &str) {
        self.read_head();
        let resp = format!("HTTP/1.1 {status_line}\r\nContent-Length: 0\r\n\r\n");
        self.s.write_all(resp.as_bytes()).unwrap();
        self.s.flush().unwrap();
    }

    fn read_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(self.buf[..end + 4].to_vec()).unwrap();
                self.buf.drain(..end + 4);
                return head;
            }
            assert!(self.fill().unwrap() > 0, "EOF before the upgrade request");
        }
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 << 10];
        let n = self.s.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    /// The next client frame, unmasked. `Ok(None)` at EOF, even in the
    /// middle of a frame (a frame cut by the EOF never arrived).
    pub fn read_frame(&mut self) -> io::Result<Option<(OpCode, Vec<u8>)>> {
        loop {
            if let Some((h, n)) = parse_header(&self.buf).expect("a valid client frame") {
                let len = h.payload_len as usize;
                if self.buf.len() >= n + len {
                    let mut payload = self.buf[n..n + len].to_vec();
                    let key = h.mask.expect("client frames are masked");
                    apply_mask(&mut payload, key, 0);
                    self.buf.drain(..n + len);
                    return Ok(Some((h.opcode, payload)));
                }
            }
            if self.fill()? == 0 {
                return Ok(None);
            }
        }
    }

    /// Reads data messages until a close frame or EOF; returns the
    /// binary payloads and whether a close frame came.
    pub fn read_messages(&mut self) -> (Vec<Vec<u8>>, bool) {
        let mut out = Vec::new();
        loop {
            match self.read_frame().expect("read a frame") {
                Some((OpCode::Binary | OpCode::Text, p)) => out.push(p),
                Some((OpCode::Close, _)) => return (out, true),
                Some(_) => {}
                None => return (out, false),
            }
        }
    }

    /// Writes an unmasked frame.
    pub fn write_frame(&mut self, opcode: OpCode, payload: &[u8]) {
        let mut out = Vec::new();
        write_frame(
            &FrameHeader::new(opcode, payload.len() as u64),
            payload,
            &mut out,
        );
        self.s.write_all(&out).unwrap();
        self.s.flush().unwrap();
    }

    /// Writes a close frame with `code`.
    pub fn write_close(&mut self, code: u16) {
        self.write_frame(OpCode::Close, &code.to_be_bytes());
    }
}

/// The `Sec-WebSocket-Key` of a request head.
fn request_key(head: &str) -> String {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("sec-websocket-key")
                .then(|| v.trim().to_owned())
        })
        .expect("a Sec-WebSocket-Key header")
}
