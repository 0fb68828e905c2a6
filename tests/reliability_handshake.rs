//! Handshake abuse over real sockets: bad and odd upgrade requests get the
//! right status and a close, odd-but-valid ones are accepted, oversized
//! heads are cut at the limit without waiting, dribbled requests work but
//! cannot stretch the handshake timeout, frames that ride with the request
//! are processed (or not, when the upgrade is refused), and garbage or TLS
//! on the plain port gets a 4xx or a close without hurting anyone.
//!
//! What tests/server_echo.rs already covers is not repeated here (version
//! 8, POST, a short key, one TLS-looking record, the request plus two
//! frames in one write, a request written byte by byte without pauses).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use wsloop::frame::OpCode;
use wsloop::handshake::{accept_key, generate_key, Request};
use wsloop::server::{ConnId, Ctx, Handler, Upgrade};
use wsloop::{Config, Message};

/// Echoes; refuses upgrades to `/forbidden` with 403; counts messages.
#[derive(Clone, Default)]
struct Gate {
    messages: Arc<AtomicUsize>,
    opened: Arc<AtomicUsize>,
}

impl Handler for Gate {
    fn on_upgrade(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, req: &Request) -> Upgrade {
        if req.path() == "/forbidden" {
            Upgrade::reject(403, "no")
        } else {
            Upgrade::accept()
        }
    }
    fn on_open(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId) {
        self.opened.fetch_add(1, Ordering::SeqCst);
    }
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        self.messages.fetch_add(1, Ordering::SeqCst);
        let _ = ctx.send(id, msg);
    }
}

/// A config whose handshake timeout is long, so that an answer within a
/// second or two cannot be the timeout's 408.
fn patient() -> Config {
    let mut c = Config::default();
    c.handshake_timeout = Duration::from_secs(30);
    c
}

/// The standard upgrade headers with `(name, value)` pairs replaced or
/// removed (`None`), and extra lines appended.
fn request(
    addr: SocketAddr,
    first_line: &str,
    replace: &[(&str, Option<&str>)],
    extra: &[&str],
) -> String {
    let key = generate_key();
    let mut headers: Vec<(String, String)> = vec![
        ("Host".into(), addr.to_string()),
        ("Upgrade".into(), "websocket".into()),
        ("Connection".into(), "Upgrade".into()),
        ("Sec-WebSocket-Key".into(), key),
        ("Sec-WebSocket-Version".into(), "13".into()),
    ];
    for (name, value) in replace {
        let pos = headers.iter().position(|(n, _)| n == name);
        match (pos, value) {
            (Some(i), Some(v)) => headers[i].1 = (*v).to_owned(),
            (Some(i), None) => {
                headers.remove(i);
            }
            (None, Some(v)) => headers.push(((*name).to_owned(), (*v).to_owned())),
            (None, None) => {}
        }
    }
    let mut s = format!("{first_line}\r\n");
    for (n, v) in headers {
        s.push_str(&format!("{n}: {v}\r\n"));
    }
    for e in extra {
        s.push_str(e);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s
}

/// Sends `raw`; expects an HTTP response with one of `statuses`, then EOF,
/// all within `within` (far below the handshake timeout).
fn expect_refused(
    addr: SocketAddr,
    name: &str,
    raw: &[u8],
    statuses: &[u16],
    within: Duration,
) -> HttpReply {
    let t = Instant::now();
    let mut s = tcp_connect(addr);
    // The server may answer and close before reading everything.
    let _ = s.write_all(raw);
    let mut got = Vec::new();
    let eof = read_until_eof(&mut s, within, &mut got);
    assert!(
        eof,
        "{name}: no close within {within:?}; got {:?}",
        String::from_utf8_lossy(&got)
    );
    let r = parse_http(&got);
    assert!(
        statuses.contains(&r.status),
        "{name}: status {} (want one of {statuses:?}): {r:?}",
        r.status
    );
    assert!(r.status != 101, "{name}: upgraded");
    assert_eq!(
        r.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close"),
        "{name}: {r:?}"
    );
    assert!(t.elapsed() < within, "{name}: took {:?}", t.elapsed());
    r
}

/// Upgrades with `raw` (a complete request) and checks the 101 and an echo.
fn expect_upgraded(addr: SocketAddr, name: &str, raw: &str) {
    let key = request_key(raw);
    let mut s = tcp_connect(addr);
    s.write_all(raw.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            other => panic!(
                "{name}: response cut ({other:?}) after {:?}",
                String::from_utf8_lossy(&head)
            ),
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 101"),
        "{name}: not upgraded: {text:?}"
    );
    let want = accept_key(key.as_bytes());
    assert!(
        text.lines()
            .any(|l| l.split_once(':').is_some_and(|(n, v)| n
                .eq_ignore_ascii_case("sec-websocket-accept")
                && v.trim() == want)),
        "{name}: wrong or missing accept key in {text:?}"
    );
    s.write_all(&frame_bytes(OpCode::Text, name.as_bytes(), true, true))
        .unwrap();
    let mut want_frame = vec![0x81, name.len() as u8];
    want_frame.extend_from_slice(name.as_bytes());
    let mut got = vec![0u8; want_frame.len()];
    s.read_exact(&mut got)
        .unwrap_or_else(|e| panic!("{name}: no echo: {e}"));
    assert_eq!(got, want_frame, "{name}: echo");
}

#[test]
fn bad_upgrade_requests_get_the_right_status_then_close() {
    let gate = Gate::default();
    let srv = start_server(patient(), gate.clone());
    let a = srv.addr;
    let get = "GET / HTTP/1.1";
    // Far under the 30 s handshake timeout: answered at once, not timed
    // out, with room for a busy machine.
    let quick = Duration::from_secs(10);
    let cases: Vec<(&str, String, &[u16])> = vec![
        (
            "missing key",
            request(a, get, &[("Sec-WebSocket-Key", None)], &[]),
            &[400],
        ),
        (
            "key of 15 bytes",
            request(
                a,
                get,
                &[("Sec-WebSocket-Key", Some("AAAAAAAAAAAAAAAAAAAA"))],
                &[],
            ),
            &[400],
        ),
        (
            "key of 17 bytes",
            request(
                a,
                get,
                &[("Sec-WebSocket-Key", Some("AAAAAAAAAAAAAAAAAAAAAAA="))],
                &[],
            ),
            &[400],
        ),
        (
            "key not base64",
            request(
                a,
                get,
                &[("Sec-WebSocket-Key", Some("!!!!!!!!!!!!!!!!!!!!!!=="))],
                &[],
            ),
            &[400],
        ),
        (
            "two keys",
            request(
                a,
                get,
                &[],
                &["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="],
            ),
            &[400],
        ),
        (
            "empty key",
            request(a, get, &[("Sec-WebSocket-Key", Some(""))], &[]),
            &[400],
        ),
        (
            "missing version",
            request(a, get, &[("Sec-WebSocket-Version", None)], &[]),
            &[426],
        ),
        (
            "version 14",
            request(a, get, &[("Sec-WebSocket-Version", Some("14"))], &[]),
            &[426],
        ),
        (
            "version 0",
            request(a, get, &[("Sec-WebSocket-Version", Some("0"))], &[]),
            &[426],
        ),
        ("PUT", request(a, "PUT / HTTP/1.1", &[], &[]), &[405]),
        ("HEAD", request(a, "HEAD / HTTP/1.1", &[], &[]), &[405]),
        (
            "POST with a body",
            format!(
                "{}hello",
                request(a, "POST / HTTP/1.1", &[], &["Content-Length: 5"])
            ),
            &[405],
        ),
        (
            "HTTP/1.0",
            request(a, "GET / HTTP/1.0", &[], &[]),
            &[400, 505],
        ),
        (
            "missing Upgrade",
            request(a, get, &[("Upgrade", None)], &[]),
            &[400],
        ),
        (
            "Upgrade: h2c",
            request(a, get, &[("Upgrade", Some("h2c"))], &[]),
            &[400],
        ),
        (
            "missing Connection",
            request(a, get, &[("Connection", None)], &[]),
            &[400],
        ),
        (
            "Connection without upgrade",
            request(a, get, &[("Connection", Some("keep-alive"))], &[]),
            &[400],
        ),
        (
            "missing Host",
            request(a, get, &[("Host", None)], &[]),
            &[400],
        ),
    ];
    for (name, raw, statuses) in &cases {
        let r = expect_refused(a, name, raw.as_bytes(), statuses, quick);
        if r.status == 426 {
            assert_eq!(
                r.header("sec-websocket-version"),
                Some("13"),
                "{name}: 426 without Sec-WebSocket-Version: 13: {r:?}"
            );
        }
    }
    // No upgrade headers at all: plain HTTP, and the default answer is 426
    // naming the version.
    let r = expect_refused(
        a,
        "plain GET",
        format!("GET / HTTP/1.1\r\nHost: {a}\r\n\r\n").as_bytes(),
        &[426],
        quick,
    );
    assert_eq!(r.header("sec-websocket-version"), Some("13"), "{r:?}");
    assert_eq!(
        gate.opened.load(Ordering::SeqCst),
        0,
        "a bad request upgraded"
    );

    // And the server still upgrades.
    let mut c = connect(a);
    c.send_text("still here");
    c.expect_text("still here");
    c.close_and_wait(1000);
}

#[test]
fn header_tokens_in_odd_case_and_lists_are_accepted() {
    let srv = start_server(patient(), Gate::default());
    let a = srv.addr;
    let key = generate_key();
    let v = |lines: &[&str]| -> String {
        let mut s = String::from("GET /odd HTTP/1.1\r\n");
        for l in lines {
            s.push_str(l);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s
    };
    let host = format!("Host: {a}");
    let k = format!("Sec-WebSocket-Key: {key}");
    let k_lower = format!("sec-websocket-key: {key}");
    let k_odd = format!("sEC-wEBsOCKET-kEY: {key}");
    let k_spaces = format!("Sec-WebSocket-Key:    {key}   ");
    let cases: Vec<(&str, String)> = vec![
        (
            "lower case names and upper case values",
            v(&[
                &host,
                "upgrade: WEBSOCKET",
                "connection: UPGRADE",
                &k_lower,
                "sec-websocket-version: 13",
            ]),
        ),
        (
            "mixed case names",
            v(&[
                &host,
                "UPGRADE: WebSocket",
                "CONNECTION: Upgrade",
                &k_odd,
                "SEC-WEBSOCKET-VERSION: 13",
            ]),
        ),
        (
            "Connection list",
            v(&[
                &host,
                "Upgrade: websocket",
                "Connection: keep-alive, Upgrade",
                &k,
                "Sec-WebSocket-Version: 13",
            ]),
        ),
        (
            "Connection list without spaces",
            v(&[
                &host,
                "Upgrade: websocket",
                "Connection: keep-alive,upgrade,TE",
                &k,
                "Sec-WebSocket-Version: 13",
            ]),
        ),
        (
            "Connection on two lines",
            v(&[
                &host,
                "Upgrade: websocket",
                "Connection: keep-alive",
                "Connection: Upgrade",
                &k,
                "Sec-WebSocket-Version: 13",
            ]),
        ),
        (
            "Upgrade list",
            v(&[
                &host,
                "Upgrade: foo/2, WebSocket",
                "Connection: Upgrade",
                &k,
                "Sec-WebSocket-Version: 13",
            ]),
        ),
        (
            "extra white space around values",
            v(&[
                &host,
                "Upgrade:websocket",
                "Connection:\t Upgrade \t",
                &k_spaces,
                "Sec-WebSocket-Version:   13  ",
            ]),
        ),
        (
            "unknown headers, Origin, protocols, extensions",
            v(&[
                &host,
                "Upgrade: websocket",
                "Connection: Upgrade",
                &k,
                "Sec-WebSocket-Version: 13",
                "Origin: http://example.com",
                "Sec-WebSocket-Protocol: chat, superchat",
                "Sec-WebSocket-Extensions: x-unknown; a=1",
                "X-Anything: café (obs-text)",
                "Cookie: a=b; c=d",
            ]),
        ),
    ];
    for (name, raw) in &cases {
        expect_upgraded(a, name, raw);
    }
}

#[test]
fn oversized_heads_get_431_without_waiting_then_close() {
    let srv = start_server(patient(), Gate::default());
    let a = srv.addr;
    // Far under the 30 s handshake timeout: answered at once, not timed
    // out, with room for a busy machine.
    let quick = Duration::from_secs(10);
    let limit = Config::default().max_handshake_bytes;
    let long_path = format!("GET /{} HTTP/1.1", "p".repeat(limit + 100));
    expect_refused(
        a,
        "long request line",
        request(a, &long_path, &[], &[]).as_bytes(),
        &[431, 414, 400],
        quick,
    );
    let big = format!("X-Big: {}", "v".repeat(limit + 100));
    expect_refused(
        a,
        "one huge header",
        request(a, "GET / HTTP/1.1", &[], &[&big]).as_bytes(),
        &[431, 400],
        quick,
    );
    let many: Vec<String> = (0..100).map(|i| format!("X-H{i}: {i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    expect_refused(
        a,
        "100 headers",
        request(a, "GET / HTTP/1.1", &[], &many).as_bytes(),
        &[431, 400],
        quick,
    );

    // A head that never ends: answered once it passes the limit, without
    // waiting for the (30 s) handshake timeout or for more bytes. The
    // connection stays open on our side.
    let mut s = tcp_connect(a);
    let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    while head.len() <= limit + 16 {
        head.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let t = Instant::now();
    s.write_all(&head).unwrap();
    let mut got = Vec::new();
    assert!(
        read_until_eof(&mut s, quick, &mut got),
        "no close after {} bytes of an unfinished head; got {:?}",
        head.len(),
        String::from_utf8_lossy(&got)
    );
    let r = parse_http(&got);
    assert!(matches!(r.status, 431 | 400), "{r:?}");
    eprintln!(
        "unfinished head of {} bytes refused after {:?}",
        head.len(),
        t.elapsed()
    );

    // At the limits is fine: 64 header fields in all, and a head just
    // under max_handshake_bytes.
    let max_headers = Config::default().max_headers;
    let fill: Vec<String> = (0..max_headers - 5)
        .map(|i| format!("X-H{i}: {i}"))
        .collect();
    let fill: Vec<&str> = fill.iter().map(String::as_str).collect();
    expect_upgraded(
        a,
        "64 header fields",
        &request(a, "GET / HTTP/1.1", &[], &fill),
    );
    let base = request(a, "GET / HTTP/1.1", &[], &["X-Pad: "]).len();
    let pad = format!("X-Pad: {}", "z".repeat(limit - base));
    let near = request(a, "GET / HTTP/1.1", &[], &[&pad]);
    assert_eq!(near.len(), limit);
    expect_upgraded(a, "head of exactly max_handshake_bytes", &near);
}

/// Each byte in its own TCP segment and its own read (1 ms apart), the
/// request and then a frame: the upgrade and the message work.
#[test]
fn request_and_frame_one_byte_per_read() {
    let gate = Gate::default();
    let srv = start_server(patient(), gate.clone());
    let mut s = tcp_connect(srv.addr);
    let (req, mut bytes) = upgrade_request(srv.addr, "/dribble");
    bytes.extend(frame_bytes(
        OpCode::Text,
        "dribbled ✓".as_bytes(),
        true,
        true,
    ));
    dribble(&mut s, &bytes);
    let mut c = TestClient::finish_handshake(s, &req);
    c.expect_text("dribbled ✓");
    // And a frame whose every byte is its own segment after the upgrade.
    let f = frame_bytes(OpCode::Binary, &pattern(300, 3), true, true);
    dribble(&mut c.stream, &f);
    c.expect_binary(&pattern(300, 3));
    c.close_and_wait(1000);
}

/// Writes `bytes` one at a time, each its own segment, 1 ms apart: each
/// its own read while the machine is not busy. (A busy server may read
/// a few at once: waiting for each read, through /proc/net/tcp, takes
/// tens of seconds on a loaded machine. The parsers' unit tests split
/// every input at every position.)
fn dribble(s: &mut TcpStream, bytes: &[u8]) {
    s.set_nodelay(true).unwrap();
    for b in bytes {
        s.write_all(std::slice::from_ref(b)).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
}

/// A peer that keeps sending a byte every 20 ms but never finishes its
/// head (slowloris that "makes progress") is still cut at the handshake
/// timeout: progress does not extend it.
#[test]
fn dribbling_a_head_forever_does_not_extend_the_handshake_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(500);
    let mut cfg = Config::default();
    cfg.handshake_timeout = TIMEOUT;
    let srv = start_server(cfg, Gate::default());
    // Before the connect, so before the accept that starts the timer.
    let t = Instant::now();
    let s = tcp_connect(srv.addr);
    let mut w = s.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let mut head = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 1000));
        for b in head {
            if w.write_all(&[b]).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    });
    let mut s = s;
    let mut got = Vec::new();
    // The writer makes progress for 20 s: a timeout that progress
    // extended would not end it within 10 s.
    let eof = read_until_eof(&mut s, Duration::from_secs(10), &mut got);
    let took = t.elapsed();
    assert!(
        eof,
        "a dribbling head kept its connection for 10 s (timeout 500 ms)"
    );
    assert!(took >= TIMEOUT, "closed after {took:?}, before the timeout");
    if !got.is_empty() {
        assert_eq!(parse_http(&got).status, 408);
    }
    drop(s);
    writer.join().unwrap();
}

/// The request followed, in one write, by a ping, a fragmented message
/// with a ping between its fragments, and a close: all processed in order.
#[test]
fn request_plus_control_and_fragmented_frames_in_one_packet() {
    let gate = Gate::default();
    let srv = start_server(patient(), gate.clone());
    let mut extra = frame_bytes(OpCode::Ping, b"p1", true, true);
    extra.extend(frame_bytes(OpCode::Text, b"frag", false, true));
    extra.extend(frame_bytes(OpCode::Ping, b"p2", true, true));
    extra.extend(frame_bytes(OpCode::Continuation, b"mented", true, true));
    extra.extend(frame_bytes(
        OpCode::Close,
        &close_payload(1000, "done"),
        true,
        true,
    ));
    let mut c = TestClient::connect_with(srv.addr, "/", &extra);
    assert_eq!(c.recv(), Msg::Pong(b"p1".to_vec()));
    assert_eq!(c.recv(), Msg::Pong(b"p2".to_vec()));
    assert_eq!(c.recv(), Msg::Text("fragmented".into()));
    assert_eq!(c.recv(), Msg::Close(Some(1000), String::new()));
    c.expect_eof(Duration::from_secs(10));
    assert_eq!(gate.messages.load(Ordering::SeqCst), 1);
}

/// Frames sent with an upgrade request the handler refuses must not reach
/// the handler.
#[test]
fn frames_after_a_refused_upgrade_are_not_processed() {
    let gate = Gate::default();
    let srv = start_server(patient(), gate.clone());
    let (_, mut bytes) = upgrade_request(srv.addr, "/forbidden");
    for i in 0..10 {
        bytes.extend(frame_bytes(
            OpCode::Text,
            format!("sneaky {i}").as_bytes(),
            true,
            true,
        ));
    }
    let r = expect_refused(
        srv.addr,
        "refused upgrade with frames",
        &bytes,
        &[403],
        Duration::from_secs(10),
    );
    assert_eq!(r.body_text().trim(), "no");
    assert_eq!(gate.opened.load(Ordering::SeqCst), 0);
    assert_eq!(
        gate.messages.load(Ordering::SeqCst),
        0,
        "frames of a refused upgrade were handled"
    );
}

/// A TLS 1.2/1.3 ClientHello as browsers send it (SNI "localhost"),
/// truncated extensions are fine: the server sees its first bytes.
fn tls_client_hello() -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend(pattern(32, 7)); // random
    body.push(32);
    body.extend(pattern(32, 9)); // session id
    body.extend([0x00, 0x06, 0x13, 0x01, 0x13, 0x02, 0xc0, 0x2f]); // suites
    body.extend([0x01, 0x00]); // compression: null
    let sni = b"localhost";
    let mut ext = vec![0x00, 0x00];
    let l = sni.len() as u16;
    ext.extend((l + 5).to_be_bytes());
    ext.extend((l + 3).to_be_bytes());
    ext.push(0);
    ext.extend(l.to_be_bytes());
    ext.extend(sni);
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut hs = vec![0x01, 0x00];
    hs.extend((body.len() as u16).to_be_bytes());
    hs.extend(body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    rec
}

/// Garbage, TLS and other protocols on the plain port: a 4xx or a close
/// within 10 s (the handshake timeout is 30 s), never an upgrade, no
/// panic, and the binary keeps serving.
#[test]
fn garbage_and_tls_on_a_plain_port() {
    let srv = BinServer::spawn(&["--handshake-timeout", "30s"]);
    let a = srv.addr;
    let mut random = Vec::new();
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for _ in 0..4096 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        random.push(x as u8);
    }
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("TLS ClientHello", tls_client_hello()),
        ("first byte of a TLS record", vec![0x16]),
        (
            "SSLv2 hello",
            vec![
                0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
            ],
        ),
        ("random bytes", random),
        ("NUL bytes", vec![0; 64]),
        (
            "HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        ),
        (
            "a WebSocket frame instead of a request",
            frame_bytes(OpCode::Text, b"hello", true, true),
        ),
        ("bad request line", b"GET\r\n\r\n".to_vec()),
        (
            "space in method",
            b"G T / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        ("bare LF garbage", b"\n\n\n\x01\x02\x03\n\n".to_vec()),
        (
            "header without colon",
            b"GET / HTTP/1.1\r\nHost x\r\n\r\n".to_vec(),
        ),
        (
            "control characters in a header",
            b"GET / HTTP/1.1\r\nHost: \x01\x02\r\n\r\n".to_vec(),
        ),
        ("SSH banner", b"SSH-2.0-OpenSSH_9.6\r\n".to_vec()),
        ("20 KB of token characters, no space", vec![b'A'; 20_000]),
    ];
    for (name, bytes) in &cases {
        let t = Instant::now();
        let mut s = tcp_connect(a);
        let _ = s.write_all(bytes);
        let mut got = Vec::new();
        let eof = read_until_eof(&mut s, Duration::from_secs(10), &mut got);
        assert!(
            eof,
            "{name}: connection still open after {:?}; got {:?}",
            t.elapsed(),
            String::from_utf8_lossy(&got)
        );
        if !got.is_empty() {
            let r = parse_http(&got);
            assert!(
                (400..500).contains(&r.status),
                "{name}: status {}",
                r.status
            );
        }
        eprintln!(
            "{name}: {} after {:?}",
            if got.is_empty() {
                "closed".to_owned()
            } else {
                parse_http(&got).status.to_string()
            },
            t.elapsed()
        );
    }
    // A ClientHello cut after its record header, then the peer waits: the
    // server need not wait for the rest to know it is not HTTP.
    let mut s = tcp_connect(a);
    s.write_all(&tls_client_hello()[..5]).unwrap();
    let mut got = Vec::new();
    assert!(
        read_until_eof(&mut s, Duration::from_secs(10), &mut got),
        "a TLS record header kept the connection waiting"
    );

    let mut c = connect(a);
    c.send_text("after the garbage");
    c.expect_text("after the garbage");
    c.close_and_wait(1000);
    srv.assert_no_panic();
}
