//! Shared helpers for the integration tests: a small blocking WebSocket test
//! client over `std::net::TcpStream` built on wsloop's codec, an in-process
//! server on a thread, and the `wsloop serve` binary on a free port.
//!
//! Every read has a timeout, so no test can hang: a helper that waits too
//! long panics with what it was waiting for.
#![allow(dead_code)]

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use wsloop::frame::{parse_header, write_frame, FrameHeader, OpCode};
use wsloop::handshake::{generate_key, ClientRequest, Head, Response, ResponseReader};
use wsloop::server::{Handle, Handler, Server};
use wsloop::Config;

/// Default read timeout of a [`TestClient`].
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

// ------------------------------------------------------------------ frames

/// One frame as received (server frames are unmasked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload: Vec<u8>,
}

/// What [`TestClient::recv`] returns: a whole (reassembled) message or a
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

/// The upgrade request for `addr` (path `/`).
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

// ------------------------------------------------------------------ client

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

/// Opens a TCP connection with a timeout.
pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
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
                return Ok(TestClient {
                    stream,
                    buf: rest,
                    response: resp,
                    partial: None,
                });
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
                    return TestClient {
                        stream,
                        buf: rest,
                        response: resp,
                        partial: None,
                    };
                }
            }
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

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Appends what arrives on `s` to `out` until EOF (true) or `wait`
/// passes (false).
pub fn read_until_eof(s: &mut TcpStream, wait: Duration, out: &mut Vec<u8>) -> bool {
    let start = Instant::now();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = wait.saturating_sub(start.elapsed());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

// -------------------------------------------------------------------- HTTP

/// A plain HTTP response read to EOF.
#[derive(Debug)]
pub struct HttpReply {
    pub status: u16,
    pub head: Response,
    pub body: Vec<u8>,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` as is and reads the response until the server closes.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> HttpReply {
    let mut s = tcp_connect(addr);
    s.write_all(request).expect("write HTTP request");
    let mut raw = Vec::new();
    assert!(
        read_until_eof(&mut s, READ_TIMEOUT, &mut raw),
        "no EOF after the HTTP response; got {:?}",
        String::from_utf8_lossy(&raw)
    );
    parse_http(&raw)
}

pub fn parse_http(raw: &[u8]) -> HttpReply {
    match ResponseReader::new().feed(raw, 64 * 1024, 64) {
        Ok(Head::Complete(head, body)) => {
            if let Some(len) = head.header("content-length") {
                assert_eq!(
                    len.parse::<usize>().ok(),
                    Some(body.len()),
                    "Content-Length vs body"
                );
            }
            HttpReply {
                status: head.status,
                head,
                body,
            }
        }
        other => panic!(
            "not an HTTP response ({other:?}): {:?}",
            String::from_utf8_lossy(raw)
        ),
    }
}

/// `GET path` without an upgrade.
pub fn http_get(addr: SocketAddr, path: &str) -> HttpReply {
    http_raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes(),
    )
}

// ---------------------------------------------------------- in-process server

/// A [`Server`] running on its own thread.
pub struct ServerThread<H: Handler + Send + 'static> {
    pub addr: SocketAddr,
    pub handle: Handle,
    pub thread: Option<JoinHandle<H>>,
}

/// Binds 127.0.0.1:0 with `config` and runs `handler` on a new thread.
pub fn start_server<H: Handler + Send + 'static>(config: Config, handler: H) -> ServerThread<H> {
    let (tx, rx) = mpsc::channel();
    let thread = thread::Builder::new()
        .name("wsloop-server".into())
        .spawn(move || {
            let server = Server::bind("127.0.0.1:0", config, handler).expect("bind test server");
            tx.send((server.local_addr(), server.handle())).unwrap();
            server.run().expect("server run")
        })
        .unwrap();
    let (addr, handle) = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("server thread did not start");
    ServerThread {
        addr,
        handle,
        thread: Some(thread),
    }
}

impl<H: Handler + Send + 'static> ServerThread<H> {
    /// Graceful shutdown; returns the handler. Panics if the loop does not
    /// stop within `within`.
    pub fn stop(mut self, within: Duration) -> H {
        self.handle.shutdown().expect("shutdown");
        let t = self.thread.take().unwrap();
        let start = Instant::now();
        while !t.is_finished() {
            assert!(
                start.elapsed() < within,
                "server did not stop within {within:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
        t.join().expect("server thread panicked")
    }
}

impl<H: Handler + Send + 'static> Drop for ServerThread<H> {
    fn drop(&mut self) {
        // Ask it to stop but do not wait: a failing test must not hang.
        if self.thread.is_some() {
            let _ = self.handle.shutdown();
        }
    }
}

// ------------------------------------------------------------- the binary

/// `wsloop serve` on a free loopback port, killed when dropped.
pub struct BinServer {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl BinServer {
    /// Starts `wsloop serve --addr 127.0.0.1:PORT <args>` and waits until
    /// it accepts connections.
    pub fn spawn(args: &[&str]) -> BinServer {
        for attempt in 0..5 {
            let port = free_port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("wsloop-serve-{}-{port}.log", std::process::id()));
            let log_file = std::fs::File::create(&log).expect("create server log");
            let child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
                .args(["serve", "--addr", &addr.to_string()])
                .args(args)
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .expect("spawn wsloop serve");
            let mut srv = BinServer { child, addr, log };
            if srv.wait_ready(attempt) {
                return srv;
            }
        }
        panic!("could not start wsloop serve");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the server accepts connections and has closed the
    /// connections that showed it. False if the server exited (most likely
    /// the port was taken between probe and bind).
    fn wait_ready(&mut self, attempt: usize) -> bool {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                eprintln!(
                    "wsloop serve exited early ({status}), attempt {attempt}: {}",
                    self.log_text()
                );
                return false;
            }
            if let Ok(probe) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) {
                self.hang_up(probe);
                return true;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "wsloop serve did not accept within 10 s: {}",
                self.log_text()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Hangs up the readiness probe and waits for the server to close its
    /// side, so that counts of its descriptors taken next do not include
    /// the probe. Panics if it does not within 10 s.
    fn hang_up(&self, mut probe: TcpStream) {
        probe
            .shutdown(Shutdown::Write)
            .expect("shut down the probe");
        probe
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        match probe.read(&mut [0u8; 64]) {
            // EOF, or a reset: the server has let go of it either way.
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!(
                "readiness probe: wanted the server to close it, got {other:?}: {}",
                self.log_text()
            ),
        }
    }

    /// Inodes of the sockets the server holds a descriptor for (cheap to
    /// poll, unlike /proc/net/tcp on a host with many sockets).
    pub fn socket_inodes(&self) -> Vec<u64> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| {
                d.filter_map(|f| std::fs::read_link(f.ok()?.path()).ok())
                    .filter_map(|l| {
                        let l = l.to_string_lossy().into_owned();
                        l.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The inode of the server's side of `client`'s connection (0 until
    /// the server has accepted it).
    pub fn server_side_inode(&self, client: &TcpStream) -> u64 {
        let ours = client.local_addr().expect("client address").port();
        tcp_sockets(self.addr.port())
            .into_iter()
            .find(|s| s.peer_port == ours && s.state != TCP_LISTEN)
            .map_or(0, |s| s.inode)
    }

    /// Sends a signal by name (TERM, INT, KILL) with kill(1).
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(st.success(), "kill -{sig} {} failed", self.pid());
    }

    /// Waits up to `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return Some(st);
            }
            if start.elapsed() >= within {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for BinServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill(); // SIGKILL to this child's PID only
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Shuts down our write side (half close), as a peer that is done sending.
pub fn half_close(s: &TcpStream) {
    let _ = s.shutdown(Shutdown::Write);
}

// ------------------------------------------------- reliability test helpers

/// Waits until `f` holds, polling every 5 ms; panics naming `what` after
/// `within`.
pub fn wait_until(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < within,
            "timed out after {within:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmData`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Open file descriptors of a process.
pub fn proc_fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// User plus system CPU time of a process, in clock ticks (1/100 s).
pub fn proc_cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name may contain spaces: fields start after ") ".
    let rest = &s[s.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ") ".
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

/// `st` of /proc/net/tcp: established, listening, waiting out TIME_WAIT.
pub const TCP_ESTABLISHED: u8 = 0x01;
pub const TCP_LISTEN: u8 = 0x0A;
pub const TCP_TIME_WAIT: u8 = 0x06;

/// One IPv4 TCP socket of this host, from /proc/net/tcp.
#[derive(Debug, Clone)]
pub struct TcpSocket {
    pub local_port: u16,
    pub peer_port: u16,
    /// `st`: 0x01 established, 0x0A listening, ... (include/net/tcp_states.h).
    pub state: u8,
    /// Bytes in the send and receive queues.
    pub tx: u64,
    pub rx: u64,
    /// 0 while a connection waits in the listen queue, unaccepted.
    pub inode: u64,
}

/// Every IPv4 TCP socket of this host.
pub fn all_tcp_sockets() -> Vec<TcpSocket> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port_of = |a: &str| u16::from_str_radix(a.rsplit_once(':')?.1, 16).ok();
    let hex = |v: &str| u64::from_str_radix(v, 16).ok();
    tcp.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let (tx, rx) = f[4].split_once(':')?;
            Some(TcpSocket {
                local_port: port_of(f[1])?,
                peer_port: port_of(f[2])?,
                state: u8::from_str_radix(f[3], 16).ok()?,
                tx: hex(tx)?,
                rx: hex(rx)?,
                inode: f[9].parse().ok()?,
            })
        })
        .collect()
}

/// The IPv4 TCP sockets of this host whose local port is `port`.
pub fn tcp_sockets(port: u16) -> Vec<TcpSocket> {
    let mut all = all_tcp_sockets();
    all.retain(|s| s.local_port == port);
    all
}

/// Receive and send queue bytes (`rx`, `tx`) of every established TCP
/// socket on this host whose local port is `port` (the server's side of
/// its connections).
pub fn server_socket_queues(port: u16) -> Vec<(u64, u64)> {
    tcp_sockets(port)
        .into_iter()
        .filter(|s| s.state == TCP_ESTABLISHED)
        .map(|s| (s.rx, s.tx))
        .collect()
}

/// Receive and send queue bytes (`rx`, `tx`) of every established TCP
/// socket on this host connected to remote port `port` (the clients' side
/// of a server's connections).
pub fn peer_socket_queues(port: u16) -> Vec<(u64, u64)> {
    all_tcp_sockets()
        .into_iter()
        .filter(|s| s.peer_port == port && s.state == TCP_ESTABLISHED)
        .map(|s| (s.rx, s.tx))
        .collect()
}

/// Closes `s` so that Linux sends a RST instead of a FIN: a socket closed
/// with unread bytes in its receive buffer is reset (RFC 2525 §2.17).
/// Panics if nothing is waiting to be read (the close would be a FIN).
pub fn close_with_rst(s: TcpStream) {
    let mut b = [0u8; 1];
    s.set_nonblocking(true).unwrap();
    let n = s.peek(&mut b).unwrap_or(0);
    assert!(n > 0, "close_with_rst needs unread data (else it is a FIN)");
    drop(s);
}

/// Writes `request` and returns the socket once the server's first reply
/// bytes are waiting unread in it (ready for [`close_with_rst`]).
pub fn connect_and_wait_reply(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let mut s = tcp_connect(addr);
    s.write_all(request).expect("write request");
    let mut b = [0u8; 1];
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let n = s.peek(&mut b).expect("waiting for the server's reply");
    assert!(n > 0, "EOF instead of a reply");
    s
}

impl BinServer {
    /// Like [`BinServer::spawn`], with the server's open-file limit lowered
    /// to `nofile` (`ulimit -n` in a shell that then execs the server, so
    /// the child's pid is the server's).
    pub fn spawn_with_fd_limit(nofile: u32, args: &[&str]) -> BinServer {
        for attempt in 0..5 {
            let port = free_port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("wsloop-serve-{}-{port}.log", std::process::id()));
            let log_file = std::fs::File::create(&log).expect("create server log");
            let mut cmd = format!(
                "ulimit -n {nofile} && exec '{}' serve --addr {addr}",
                env!("CARGO_BIN_EXE_wsloop")
            );
            for a in args {
                assert!(!a.contains('\''), "argument with a quote: {a}");
                cmd.push_str(&format!(" '{a}'"));
            }
            let child = Command::new("sh")
                .args(["-c", &cmd])
                .env("RUST_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .expect("spawn sh -c 'ulimit -n ...; exec wsloop serve'");
            let mut srv = BinServer { child, addr, log };
            if srv.wait_ready(attempt) {
                return srv;
            }
        }
        panic!("could not start wsloop serve with ulimit -n {nofile}");
    }

    /// VmRSS of the server in KiB.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS").expect("VmRSS of the server")
    }

    /// Open fds of the server.
    pub fn fds(&self) -> usize {
        proc_fd_count(self.pid())
    }

    /// Panics if the server's log shows a panic.
    pub fn assert_no_panic(&self) {
        let log = self.log_text();
        assert!(
            !log.contains("panicked"),
            "the server panicked; log:\n{log}"
        );
    }
}

/// An in-process echo server handler that records what happened: opens,
/// messages, and every `on_close` with its info.
#[derive(Default, Clone)]
pub struct Recorder {
    pub opened: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub messages: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub closes: std::sync::Arc<std::sync::Mutex<Vec<wsloop::CloseInfo>>>,
}

impl Recorder {
    pub fn closes(&self) -> Vec<wsloop::CloseInfo> {
        self.closes.lock().unwrap().clone()
    }
    pub fn opened(&self) -> usize {
        self.opened.load(std::sync::atomic::Ordering::SeqCst)
    }
    pub fn messages(&self) -> usize {
        self.messages.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Handler for Recorder {
    fn on_open(&mut self, _ctx: &mut wsloop::server::Ctx<'_>, _id: wsloop::server::ConnId) {
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
    fn on_message(
        &mut self,
        ctx: &mut wsloop::server::Ctx<'_>,
        id: wsloop::server::ConnId,
        msg: wsloop::Message<'_>,
    ) {
        self.messages
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let _ = ctx.send(id, msg);
    }
    fn on_close(
        &mut self,
        _ctx: &mut wsloop::server::Ctx<'_>,
        _id: wsloop::server::ConnId,
        info: &wsloop::CloseInfo,
    ) {
        self.closes.lock().unwrap().push(info.clone());
    }
}

// ------------------------------------------------------------ Python venv

/// True (and says so) when `WSLOOP_SKIP_PYTHON=1` asks to skip `what`.
pub fn skip_python(what: &str) -> bool {
    let skip = std::env::var("WSLOOP_SKIP_PYTHON").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("WSLOOP_SKIP_PYTHON=1: skipping {what}");
    }
    skip
}

/// The python of the venv with `websockets` (scripts/python-venv.sh,
/// target/py-venv), created once per test process. Panics with a clear
/// message if it cannot be created.
pub fn python_venv() -> PathBuf {
    static CACHED: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);
    let mut cached = CACHED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = cached.as_ref() {
        return p.clone();
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = Command::new("sh")
        .arg(root.join("scripts/python-venv.sh"))
        .env("WSLOOP_PY_VENV", root.join("target/py-venv"))
        .stderr(Stdio::piped())
        .output()
        .expect("run scripts/python-venv.sh");
    if !venv.status.success() {
        panic!(
            "could not create the Python venv with `websockets` (scripts/python-venv.sh \
             exited {}; no network?). Set WSLOOP_SKIP_PYTHON=1 to skip this test.\n{}",
            venv.status,
            String::from_utf8_lossy(&venv.stderr)
        );
    }
    let stdout = String::from_utf8_lossy(&venv.stdout);
    let path = PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("python-venv.sh printed no path")
            .trim(),
    );
    *cached = Some(path.clone());
    path
}

/// What a run of the `wsloop` binary printed, and its exit code.
pub struct BinRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for BinRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\nstdout: {}\nstderr: {}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// `wsloop SUB ARGS`, with `input` on stdin then EOF (no stdin at all for
/// `None`); panics if it has not exited `within`.
pub fn run_wsloop(sub: &str, args: &[&str], input: Option<&str>, within: Duration) -> BinRun {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .arg(sub)
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn wsloop {sub}: {e}"));
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = rx
        .recv_timeout(within)
        .unwrap_or_else(|_| panic!("wsloop {sub} did not exit within {within:?}"))
        .unwrap();
    BinRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `wsloop client ARGS` used interactively: writes `lines` to its stdin,
/// waits until as many lines came back on stdout (10 s each), then ends
/// stdin like ^D and waits up to `exit_within` for the exit. Panics, with
/// both outputs, if the lines do not come back or it does not exit (then
/// it is killed: this child's PID only). (Not `printf … | wsloop client`:
/// the client sends its close as soon as stdin ends, and a peer may answer
/// a close at once, dropping echoes it has not sent yet, as RFC 6455
/// §5.5.1 allows.)
pub fn client_session(args: &[&str], lines: &[&str], exit_within: Duration) -> BinRun {
    let mut child = Command::new(env!("CARGO_BIN_EXE_wsloop"))
        .arg("client")
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsloop client");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    });
    let (tx, rx) = mpsc::channel();
    let out = thread::spawn(move || {
        let mut all = String::new();
        for line in io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(());
        }
        all
    });
    for l in lines {
        stdin.write_all(format!("{l}\n").as_bytes()).unwrap();
    }
    stdin.flush().unwrap();
    let mut fail = None;
    for i in 0..lines.len() {
        if rx.recv_timeout(Duration::from_secs(10)).is_err() {
            fail = Some(format!("only {i} of {} lines came back", lines.len()));
            break;
        }
    }
    if fail.is_none() {
        // The echoes are in and the client is idle: now end stdin.
        thread::sleep(Duration::from_millis(100));
        drop(stdin);
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return BinRun {
                    code: st.code(),
                    stdout: out.join().unwrap(),
                    stderr: err.join().unwrap(),
                };
            }
            if start.elapsed() > exit_within {
                fail = Some(format!(
                    "did not exit within {exit_within:?} after stdin ended"
                ));
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = child.kill(); // this child's PID only
    let _ = child.wait();
    panic!(
        "wsloop client {args:?}: {}; stdout:\n{}\nstderr:\n{}",
        fail.unwrap_or_default(),
        out.join().unwrap(),
        err.join().unwrap()
    );
}

/// Runs the venv's Python on `script` (a path from the crate root) with
/// `args`, against `srv`, to completion: stdout and stderr together make
/// the returned report (also printed). Panics, with the report and the
/// server's log, if the script fails or runs longer than `within` (then
/// it is killed: this child's PID only).
pub fn run_python_client(
    script: &str,
    args: &[String],
    within: Duration,
    srv: &BinServer,
) -> String {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out_path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "py-client-{}-{}.out",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    let out = std::fs::File::create(&out_path).expect("create the script's output file");
    let mut child = Command::new(python_venv())
        .arg(root.join(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > within {
            let _ = child.kill(); // this child's PID only
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let report = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    eprintln!("--- {script} {args:?}:\n{report}");
    match status {
        None => panic!(
            "{script} {args:?} did not finish within {within:?}:\n{report}\nserver log:\n{}",
            srv.log_text()
        ),
        Some(st) => assert!(
            st.success(),
            "{script} {args:?} failed ({st}):\n{report}\nserver log:\n{}",
            srv.log_text()
        ),
    }
    report
}

/// A Python test server (tests/py/*_server.py) on a free loopback port: it
/// prints `PORT n` first, then any report lines, which arrive on
/// [`PyServer::next_line`]. Killed when dropped (the scripts also stop by
/// themselves when their stdin closes).
pub struct PyServer {
    child: Child,
    _stdin: std::process::ChildStdin,
    pub addr: SocketAddr,
    lines: mpsc::Receiver<String>,
    stderr: PathBuf,
}

impl PyServer {
    /// Runs the venv's Python on `script` (a path from the crate root) with
    /// `args` and waits up to 30 s for the port it reports.
    pub fn spawn(script: &str, args: &[String]) -> PyServer {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let stderr = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "py-server-{}-{}.err",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let mut child = Command::new(python_venv())
            .arg(root.join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("create the server's stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("run {script}: {e}"));
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(30));
        let mut srv = PyServer {
            child,
            _stdin: stdin,
            addr: "127.0.0.1:0".parse().unwrap(),
            lines,
            stderr,
        };
        let port: u16 = match first.as_deref().map(str::trim) {
            Ok(l) if l.starts_with("PORT ") => l[5..].parse().expect("port number"),
            other => panic!(
                "{script} did not report its port ({other:?}); stderr:\n{}",
                srv.stderr_text()
            ),
        };
        srv.addr.set_port(port);
        srv
    }

    /// The next line the server printed, which must start with `prefix`;
    /// returns the rest, trimmed. Waits up to 10 s.
    pub fn next_line(&self, prefix: &str) -> String {
        let l = self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|e| {
                panic!(
                    "no {prefix} line from the server ({e}): {}",
                    self.stderr_text()
                )
            });
        l.strip_prefix(prefix)
            .unwrap_or_else(|| panic!("expected {prefix}, got {l:?}"))
            .trim()
            .to_owned()
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The next data message on `ws` (a client of this server), skipping
    /// pings and pongs; panics with the server's stderr on anything else.
    pub fn next_message(&self, ws: &mut wsloop::client::WebSocket) -> wsloop::Message<'static> {
        loop {
            match ws.recv() {
                Ok(wsloop::Event::Message(m)) => return m,
                Ok(wsloop::Event::Ping(_) | wsloop::Event::Pong(_)) => continue,
                other => panic!(
                    "expected a message, got {other:?}; server stderr:\n{}",
                    self.stderr_text()
                ),
            }
        }
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill(); // this child's PID only
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.stderr);
    }
}
