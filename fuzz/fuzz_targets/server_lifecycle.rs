//! The real `wsloop::server::Server` (the mio loop, one per process, on
//! 127.0.0.1) driven over TCP by one connection per input: an upgrade
//! request with frames in the same write, half-closes, reads, pauses (so
//! the server's small write queue pauses its reads or overflows), HTTP
//! requests, leftover bytes. Checked:
//!
//! - no panic in the server thread;
//! - everything the server sends is an HTTP response head (after a 101,
//!   unmasked frames with valid opcodes; otherwise no more than the
//!   declared body);
//! - the server still completes a fresh handshake and echoes a message:
//!   every `HEALTH_EVERY` inputs, and after any input that ended in an
//!   unexpected way (a write or the final drain ran out of time).
//!
//! Input format: a flags byte (bit 0: the target writes an upgrade request
//! in front of the first `Write`, so frames follow in the same write), then
//! ops, a tag byte (mod 4) each:
//! - 0 Write: u16 length (LE, mod 4097), that many input bytes;
//! - 1 HalfClose: shut down our writing side;
//! - 2 Read: byte; reads up to (byte + 1) * 64 bytes, waiting at most 2 ms;
//! - 3 Pause: byte; sleeps byte % 4 ms without reading.
//!
//! `FUZZ_TRACE=1` prints what came back for each input.
//!
//! Each input is bounded: `INPUT_BUDGET` for the ops, then `DRAIN_BUDGET`
//! to read until the server closes.
#![no_main]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use wsloop::frame::parse_header;
use wsloop::handshake::Request;
use wsloop::protocol::Message;
use wsloop::server::{ConnId, Ctx, Handler, HttpResponse, Server};
use wsloop::{CloseCode, Config};

const UPGRADE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Version: 13\r\n\r\n";
const INPUT_BUDGET: Duration = Duration::from_millis(100);
const DRAIN_BUDGET: Duration = Duration::from_millis(300);
const HEALTH_EVERY: u64 = 64;

/// Echoes, plus commands that reach the other paths of the loop: "close"
/// closes, "join..." joins a room and publishes there, "many..." echoes
/// 32 times (fills the write queue). No panicking command: libFuzzer's
/// panic hook aborts even on a panic the loop catches.
struct Lifecycle;

impl Handler for Lifecycle {
    fn on_http(&mut self, req: &Request) -> HttpResponse {
        if req.path() == "/healthz" {
            HttpResponse::text(200, "ok\n")
        } else {
            HttpResponse::text(404, "no\n")
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        let bytes: &[u8] = match &msg {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        };
        if bytes == b"close" {
            ctx.close(id, CloseCode::NORMAL, "bye");
        } else if bytes.starts_with(b"join") {
            ctx.join(id, "room");
            ctx.publish("room", &msg);
        } else if bytes.starts_with(b"many") {
            for _ in 0..32 {
                let _ = ctx.send(id, msg.clone());
            }
        } else {
            let _ = ctx.send(id, msg);
        }
    }
}

fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Small limits: reads pause and queues overflow within one input.
            let mut config = Config::default();
            config.max_frame_size = 4096;
            config.max_message_size = 4096;
            config.max_handshake_bytes = 1024;
            config.max_headers = 16;
            config.handshake_timeout = Duration::from_millis(150);
            config.idle_timeout = Some(Duration::from_secs(2));
            config.close_timeout = Duration::from_millis(200);
            config.write_buffer_high = 8 << 10;
            config.write_buffer_low = 2 << 10;
            config.write_buffer_limit = 32 << 10;
            config.read_buffer_size = 4096;
            let server = Server::bind("127.0.0.1:0", config, Lifecycle).expect("bind");
            tx.send(server.local_addr()).unwrap();
            // Runs until the process exits; libFuzzer does not wait for it.
            let _ = server.run();
        });
        rx.recv().expect("server thread died before binding")
    })
}

fn byte(data: &[u8], at: &mut usize) -> Option<u8> {
    let b = *data.get(*at)?;
    *at += 1;
    Some(b)
}

/// A masked client frame.
fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let key = [1, 2, 3, 4];
    let mut v = vec![0x80 | opcode, 0x80 | payload.len() as u8];
    v.extend_from_slice(&key);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    v
}

/// The head's length, status and Content-Length, or None while partial.
fn parse_head(out: &[u8]) -> Option<(usize, u16, Option<usize>)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(out) {
        Ok(httparse::Status::Complete(n)) => {
            let len = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .map(|h| {
                    std::str::from_utf8(h.value)
                        .ok()
                        .and_then(|v| v.trim().parse().ok())
                        .expect("bad Content-Length")
                });
            Some((n, resp.code.expect("no status"), len))
        }
        Ok(httparse::Status::Partial) => None,
        Err(e) => panic!(
            "server sent a bad HTTP head ({e}): {:?}",
            String::from_utf8_lossy(out)
        ),
    }
}

/// Everything the server sent: an HTTP head, then frames after a 101 or
/// at most the declared body otherwise. A partial tail is fine (we may
/// have stopped reading).
fn check_output(out: &[u8]) {
    let n = out.len().min(9);
    assert_eq!(
        &out[..n],
        &b"HTTP/1.1 "[..n],
        "not HTTP: {:?}",
        String::from_utf8_lossy(out)
    );
    let Some((head, status, body)) = parse_head(out) else {
        return;
    };
    let mut rest = &out[head..];
    if status != 101 {
        let body = body.expect("HTTP answer without Content-Length");
        assert!(
            rest.len() <= body,
            "{} bytes after a {body}-byte body",
            rest.len() - body
        );
        return;
    }
    loop {
        match parse_header(rest) {
            Ok(None) => return,
            Ok(Some((h, n))) => {
                assert!(h.mask.is_none(), "server sent a masked frame");
                let end = n as u64 + h.payload_len;
                if end > rest.len() as u64 {
                    return;
                }
                rest = &rest[end as usize..];
            }
            Err(e) => panic!("server sent an invalid frame: {e:?}"),
        }
    }
}

/// A fresh connection completes the handshake and gets its message back.
fn health(addr: SocketAddr) {
    let mut s = TcpStream::connect(addr).expect("server no longer accepts");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut req = UPGRADE.to_vec();
    req.extend(client_frame(1, b"health"));
    s.write_all(&req).unwrap();
    let want: &[u8] = b"\x81\x06health";
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        if let Some((head, status, _)) = parse_head(&out) {
            assert_eq!(status, 101, "health check refused");
            if out.len() >= head + want.len() {
                assert_eq!(&out[head..head + want.len()], want, "health echo wrong");
                break;
            }
        }
        match s.read(&mut buf) {
            Ok(0) => panic!(
                "server closed the health check: {:?}",
                String::from_utf8_lossy(&out)
            ),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("health check: {e}"),
        }
    }
    let _ = s.write_all(&client_frame(8, &[0x03, 0xe8]));
}

fn run(data: &[u8], addr: SocketAddr) -> bool {
    let mut at = 0;
    let flags = byte(data, &mut at).unwrap_or(0);
    let mut prefix = if flags & 1 != 0 {
        UPGRADE.to_vec()
    } else {
        Vec::new()
    };
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_nodelay(true);
    s.set_write_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    let mut expected = true;
    let mut write_open = true;
    while let Some(tag) = byte(data, &mut at) {
        if start.elapsed() > INPUT_BUDGET {
            break;
        }
        match tag % 4 {
            0 => {
                let lo = byte(data, &mut at).unwrap_or(0);
                let hi = byte(data, &mut at).unwrap_or(0);
                let n = usize::from(u16::from_le_bytes([lo, hi])) % 4097;
                let n = n.min(data.len() - at);
                prefix.extend_from_slice(&data[at..at + n]);
                at += n;
                if !write_open {
                    prefix.clear();
                    continue;
                }
                match s.write_all(&prefix) {
                    Ok(()) => {}
                    // The server paused reading (its queue is full) or closed.
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        expected = false;
                        break;
                    }
                    Err(_) => break,
                }
                prefix.clear();
            }
            1 => {
                let _ = s.shutdown(Shutdown::Write);
                write_open = false;
            }
            2 => {
                let want = (usize::from(byte(data, &mut at).unwrap_or(0)) + 1) * 64;
                s.set_read_timeout(Some(Duration::from_millis(2))).unwrap();
                match s.read(&mut buf[..want]) {
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
            _ => {
                let ms = byte(data, &mut at).unwrap_or(0) % 4;
                std::thread::sleep(Duration::from_millis(u64::from(ms)));
            }
        }
    }
    // Drain until the server closes, so its side of the connection is gone
    // (and freed) before the next input.
    let _ = s.shutdown(Shutdown::Write);
    let end = Instant::now() + DRAIN_BUDGET;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            expected = false;
            break;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            // A reset: the server closed with our bytes unread.
            Err(_) => break,
        }
    }
    if std::env::var_os("FUZZ_TRACE").is_some() {
        eprintln!(
            "{} ms, expected end: {expected}, got {} bytes: {:?}",
            start.elapsed().as_millis(),
            out.len(),
            String::from_utf8_lossy(&out[..out.len().min(300)])
        );
    }
    check_output(&out);
    expected
}

fuzz_target!(|data: &[u8]| {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let addr = server();
    let expected = run(data, addr);
    if !expected
        || RUNS
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(HEALTH_EVERY)
    {
        health(addr);
    }
});
