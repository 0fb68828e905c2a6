//! `TestClient`: a blocking WebSocket client over `std::net::TcpStream`,
//! built on wsloop's codec, that can also send what a real client must
//! not (unmasked frames, raw bytes).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use wsloop::frame::{parse_header, OpCode};
use wsloop::handshake::{ClientRequest, Head, Response, ResponseReader};

use super::frames::{close_payload, frame_bytes, numbered, upgrade_request, Frame, Msg};
use super::http::{parse_http, HttpReply};
use super::net::{is_timeout, read_until_eof, tcp_connect, READ_TIMEOUT};

/// A blocking WebSocket client for tests. Panics (with context) on
/// anything unexpected; the `try_` methods return errors instead.
pub struct TestClient {
    pub stream: TcpStream,
    /// Received bytes not yet parsed into frames.
    buf: Vec<u8>,
    /// The server's 101 response.
    pub response: Response,
    /// Fragments of a message in progress (opcode, bytes).
    partial: Option<(OpCode, Vec<u8>)>,
}

/// Connects and completes the upgrade on `/`.
pub fn connect(addr: SocketAddr) -> TestClient {
    TestClient::connect_with(addr, "/", &[])
}

impl TestClient {
    /// Connects, sends the upgrade request for `target` followed by `extra`
    /// bytes in the same write, and reads the 101 response.
    pub fn connect_with(addr: SocketAddr, target: &str, extra: &[u8]) -> TestClient {
        let mut stream = tcp_connect(addr);
        let (req, mut bytes) = upgrade_request(addr, target);
        bytes.extend_from_slice(extra);
        stream.write_all(&bytes).expect("write upgrade request");
        Self::finish_handshake(stream, &req)
    }

    /// Connects and upgrades; a non-101 answer is returned as the HTTP
    /// reply (read to EOF) instead of panicking.
    pub fn try_connect(addr: SocketAddr) -> Result<TestClient, HttpReply> {
        let mut stream = tcp_connect(addr);
        let (req, bytes) = upgrade_request(addr, "/");
        stream.write_all(&bytes).expect("write upgrade request");
        let mut raw = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = match stream.read(&mut chunk) {
                Ok(0) => return Err(parse_http(&raw)),
                Ok(n) => n,
                Err(e) => panic!("reading the handshake response: {e}"),
            };
            raw.extend_from_slice(&chunk[..n]);
            if let Ok(Head::Complete(resp, rest)) = ResponseReader::new().feed(&raw, 8192, 64) {
                if resp.status != 101 {
                    read_until_eof(&mut stream, READ_TIMEOUT, &mut raw);
                    return Err(parse_http(&raw));
                }
                resp.validate(&req).expect("valid 101");
                return Ok(Self::upgraded(stream, resp, rest));
            }
        }
    }

    /// Reads and checks the 101 response for `req` (already sent).
    pub fn finish_handshake(mut stream: TcpStream, req: &ClientRequest) -> TestClient {
        let mut reader = ResponseReader::new();
        let mut chunk = [0u8; 4096];
        loop {
            let n = match stream.read(&mut chunk) {
                Ok(0) => panic!("EOF before the handshake response"),
                Ok(n) => n,
                Err(e) => panic!("reading the handshake response: {e}"),
            };
            match reader
                .feed(&chunk[..n], 8192, 64)
                .expect("parse handshake response")
            {
                Head::Partial => continue,
                Head::Complete(resp, rest) => {
                    if let Err(e) = resp.validate(req) {
                        panic!("bad handshake response ({e}): {resp:?}");
                    }
                    return Self::upgraded(stream, resp, rest);
                }
            }
        }
    }

    /// A client on `stream` after the 101 `response`; `rest` are the
    /// bytes read past it.
    fn upgraded(stream: TcpStream, response: Response, rest: Vec<u8>) -> TestClient {
        TestClient {
            stream,
            buf: rest,
            response,
            partial: None,
        }
    }

    pub fn set_timeout(&mut self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// Like `send_raw`, but reports the error (the server may have closed).
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn send_frame(&mut self, opcode: OpCode, payload: &[u8], fin: bool) {
        self.send_raw(&frame_bytes(opcode, payload, fin, true));
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(OpCode::Text, text.as_bytes(), true);
    }

    pub fn send_binary(&mut self, data: &[u8]) {
        self.send_frame(OpCode::Binary, data, true);
    }

    pub fn ping(&mut self, payload: &[u8]) {
        self.send_frame(OpCode::Ping, payload, true);
    }

    pub fn pong(&mut self, payload: &[u8]) {
        self.send_frame(OpCode::Pong, payload, true);
    }

    pub fn close(&mut self, code: u16, reason: &str) {
        self.send_frame(OpCode::Close, &close_payload(code, reason), true);
    }

    /// Reads more bytes into the buffer. `Ok(0)` is EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// The next frame, `Ok(None)` on a clean EOF between frames. A timeout
    /// is an error of kind `WouldBlock` or `TimedOut`.
    pub fn try_read_frame(&mut self) -> io::Result<Option<Frame>> {
        loop {
            let parsed = parse_header(&self.buf).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad frame from server: {e}"),
                )
            })?;
            if let Some((h, n)) = parsed {
                if h.mask.is_some() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "server sent a masked frame",
                    ));
                }
                if h.rsv != 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "server set RSV bits",
                    ));
                }
                let len = h.payload_len as usize;
                if self.buf.len() >= n + len {
                    let payload = self.buf[n..n + len].to_vec();
                    self.buf.drain(..n + len);
                    return Ok(Some(Frame {
                        fin: h.fin,
                        opcode: h.opcode,
                        payload,
                    }));
                }
                // Make room for the whole frame at once.
                self.buf.reserve(n + len - self.buf.len());
            }
            if self.fill()? == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("EOF inside a frame ({} bytes pending)", self.buf.len()),
                ));
            }
        }
    }

    /// The next frame; panics on EOF, timeout or a bad frame.
    pub fn read_frame(&mut self) -> Frame {
        match self.try_read_frame() {
            Ok(Some(f)) => f,
            Ok(None) => panic!("EOF while waiting for a frame"),
            Err(e) => panic!("reading a frame: {e}"),
        }
    }

    /// The next message (fragments reassembled) or control frame; `Ok(None)`
    /// on EOF.
    pub fn try_recv(&mut self) -> io::Result<Option<Msg>> {
        loop {
            let Some(f) = self.try_read_frame()? else {
                return Ok(None);
            };
            fn invalid(m: &str) -> io::Error {
                io::Error::new(io::ErrorKind::InvalidData, m.to_owned())
            }
            let bad = |m: &str| Err(invalid(m));
            let (op, data) = match f.opcode {
                OpCode::Ping => return Ok(Some(Msg::Ping(f.payload))),
                OpCode::Pong => return Ok(Some(Msg::Pong(f.payload))),
                OpCode::Close => {
                    let p = f.payload;
                    return Ok(Some(match p.len() {
                        0 => Msg::Close(None, String::new()),
                        1 => return bad("close payload of one byte"),
                        _ => Msg::Close(
                            Some(u16::from_be_bytes([p[0], p[1]])),
                            String::from_utf8(p[2..].to_vec())
                                .map_err(|_| invalid("close reason not UTF-8"))?,
                        ),
                    }));
                }
                OpCode::Continuation => match self.partial.take() {
                    None => return bad("continuation without a message in progress"),
                    Some((op, mut data)) => {
                        data.extend_from_slice(&f.payload);
                        (op, data)
                    }
                },
                op @ (OpCode::Text | OpCode::Binary) => {
                    if self.partial.is_some() {
                        return bad("new message while a fragmented one is in progress");
                    }
                    (op, f.payload)
                }
            };
            if !f.fin {
                self.partial = Some((op, data));
                continue;
            }
            return Ok(Some(if op == OpCode::Text {
                Msg::Text(String::from_utf8(data).map_err(|_| invalid("text not UTF-8"))?)
            } else {
                Msg::Binary(data)
            }));
        }
    }

    /// The next message or control frame; panics on EOF or timeout.
    pub fn recv(&mut self) -> Msg {
        match self.try_recv() {
            Ok(Some(m)) => m,
            Ok(None) => panic!("EOF while waiting for a message"),
            Err(e) => panic!("waiting for a message: {e}"),
        }
    }

    /// The next data message, skipping pings and pongs.
    pub fn recv_data(&mut self) -> Msg {
        loop {
            match self.recv() {
                Msg::Ping(_) | Msg::Pong(_) => continue,
                m => return m,
            }
        }
    }

    /// Expects a text message equal to `want`.
    pub fn expect_text(&mut self, want: &str) {
        match self.recv_data() {
            Msg::Text(t) if t == want => {}
            other => panic!("expected Text({} bytes), got {other:?}", want.len()),
        }
    }

    /// Expects a binary message equal to `want`.
    pub fn expect_binary(&mut self, want: &[u8]) {
        match self.recv_data() {
            Msg::Binary(b) if b == want => {}
            Msg::Binary(b) => panic!(
                "binary echo differs: got {} bytes, want {} (first difference at {:?})",
                b.len(),
                want.len(),
                b.iter().zip(want).position(|(a, b)| a != b)
            ),
            other => panic!("expected Binary({} bytes), got {other:?}", want.len()),
        }
    }

    /// Expects a close frame (skipping pings and pongs, but no data) and
    /// returns its code and reason.
    pub fn expect_close(&mut self) -> (Option<u16>, String) {
        loop {
            match self.recv() {
                Msg::Ping(_) | Msg::Pong(_) => continue,
                Msg::Close(c, r) => return (c, r),
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Expects EOF (or a reset) within `within`, discarding anything that
    /// arrives first. Returns how long it took.
    pub fn expect_eof(&mut self, within: Duration) -> Duration {
        let start = Instant::now();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let left = within.saturating_sub(start.elapsed());
            if left.is_zero() {
                panic!("no EOF within {within:?}");
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut chunk) {
                Ok(0) => return start.elapsed(),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return start.elapsed(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if is_timeout(&e) => panic!("no EOF within {within:?}"),
                Err(e) => panic!("waiting for EOF: {e}"),
            }
        }
    }

    /// Expects messages `from..from + n` of a [`numbered`] stream of
    /// `size`-byte messages, in order (pings and pongs skipped).
    pub fn expect_numbered(&mut self, from: usize, n: usize, size: usize) {
        for i in from..from + n {
            let m = loop {
                match self.try_recv() {
                    Ok(Some(Msg::Ping(_) | Msg::Pong(_))) => continue,
                    Ok(Some(m)) => break m,
                    Ok(None) => panic!("EOF while waiting for numbered message {i}"),
                    Err(e) => panic!(
                        "waiting for numbered message {i} (of {from}..{}): {e}",
                        from + n
                    ),
                }
            };
            match m {
                Msg::Binary(b) => {
                    assert_eq!(b.len(), size, "message {i}: length");
                    let got = u64::from_be_bytes(b[..8].try_into().unwrap()) as usize;
                    assert_eq!(got, i, "messages lost or out of order");
                    assert!(b == numbered(i, size), "message {i} corrupted");
                }
                other => panic!("expected numbered message {i}, got {other:?}"),
            }
        }
    }

    /// Bytes that arrive within `wait` (stops early at EOF).
    pub fn read_raw(&mut self, wait: Duration) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        read_until_eof(&mut self.stream, wait, &mut out);
        out
    }

    /// Reads and answers everything until the server's close, replies to
    /// it and waits for EOF. For tidy endings.
    pub fn close_and_wait(mut self, code: u16) {
        self.close(code, "");
        let _ = self.expect_close();
        self.expect_eof(Duration::from_secs(5));
    }
}
