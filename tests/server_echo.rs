//! The server over real loopback sockets: echo at the frame-length
//! boundaries, fragmentation, control frames, both close directions, the
//! opening handshake and plain HTTP, and many connections at once.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use wsloop::frame::OpCode;
use wsloop::server::{ConnId, Ctx, Handler};
use wsloop::{CloseCode, CloseInfo, Config, Message};

/// Echoes everything; "bye" makes the server close with 4001.
#[derive(Default)]
struct Echo {
    opened: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Handler for Echo {
    fn on_open(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId) {
        self.opened.fetch_add(1, Ordering::SeqCst);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        if matches!(&msg, Message::Text(t) if t == "bye") {
            ctx.close(id, CloseCode(4001), "bye to you");
            return;
        }
        let _ = ctx.send(id, msg);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, _info: &CloseInfo) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

const SIZES: [usize; 6] = [0, 125, 126, 65535, 65536, 16 << 20];

/// A close timeout (60 s) that a test waiting 10 s for the server to close
/// TCP cannot mistake for closing at once.
fn patient_close() -> Config {
    let mut c = Config::default();
    c.close_timeout = Duration::from_secs(60);
    c
}

#[test]
fn echo_text_and_binary_at_length_boundaries() {
    let srv = start_server(Config::default(), Echo::default());
    let mut c = connect(srv.addr);
    c.set_timeout(Duration::from_secs(20));
    for (i, &n) in SIZES.iter().enumerate() {
        let text = text_pattern(n, i as u8);
        c.send_text(&text);
        c.expect_text(&text);
        let bin = pattern(n, i as u8);
        c.send_binary(&bin);
        c.expect_binary(&bin);
    }
    // Several messages in flight at once come back in order.
    for n in [1usize, 126, 70_000, 3] {
        c.send_binary(&pattern(n, 9));
    }
    for n in [1usize, 126, 70_000, 3] {
        c.expect_binary(&pattern(n, 9));
    }
    c.close_and_wait(1000);
    srv.stop(Duration::from_secs(5));
}

#[test]
fn echo_on_the_binary() {
    let srv = BinServer::spawn(&[]);
    let mut c = connect(srv.addr);
    c.set_timeout(Duration::from_secs(20));
    for &n in &SIZES {
        let bin = pattern(n, 3);
        c.send_binary(&bin);
        c.expect_binary(&bin);
    }
    c.send_text("héllo wörld ✓");
    c.expect_text("héllo wörld ✓");
    c.close_and_wait(1000);

    // One byte over the default 16 MiB message limit: 1009.
    let mut c = connect(srv.addr);
    let _ = c.try_send_raw(&frame_bytes(
        OpCode::Binary,
        &vec![0u8; (16 << 20) + 1],
        true,
        true,
    ));
    assert_eq!(c.expect_close().0, Some(1009));
    c.close(1009, "");
    c.expect_eof(Duration::from_secs(5));
}

#[test]
fn handle_broadcast_and_send_from_another_thread() {
    let echo = Echo::default();
    let opened = echo.opened.clone();
    let srv = start_server(Config::default(), echo);
    let mut clients: Vec<TestClient> = (0..3).map(|_| connect(srv.addr)).collect();
    assert_eq!(opened.load(Ordering::SeqCst), 3);
    let h = srv.handle.clone();
    std::thread::spawn(move || {
        h.broadcast(Message::Text("to everyone".into())).unwrap();
        h.broadcast(Message::Binary(pattern(100_000, 4).into()))
            .unwrap();
    })
    .join()
    .unwrap();
    for c in &mut clients {
        c.expect_text("to everyone");
        c.expect_binary(&pattern(100_000, 4));
    }
    // Run a closure on the loop: send to every open connection by id.
    let (tx, rx) = std::sync::mpsc::channel();
    srv.handle
        .run(move |ctx| {
            tx.send(ctx.connections()).unwrap();
        })
        .unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 3);
    for c in clients {
        c.close_and_wait(1000);
    }
    srv.stop(Duration::from_secs(5));
}

#[test]
fn fragmented_message_with_interleaved_ping() {
    let srv = start_server(Config::default(), Echo::default());
    let mut c = connect(srv.addr);
    c.send_frame(OpCode::Text, b"Hel", false);
    c.ping(b"in-between");
    c.send_frame(OpCode::Continuation, "lo, wörld".as_bytes(), false);
    c.send_frame(OpCode::Continuation, b" and more", true);
    // The pong is queued when the ping is read, before the message ends.
    assert_eq!(c.recv(), Msg::Pong(b"in-between".to_vec()));
    assert_eq!(c.recv(), Msg::Text("Hello, wörld and more".into()));

    // A multi-byte character split across fragments, and binary fragments.
    let s = "€uro";
    let b = s.as_bytes();
    c.send_frame(OpCode::Text, &b[..1], false);
    c.send_frame(OpCode::Continuation, &b[1..2], false);
    c.send_frame(OpCode::Continuation, &b[2..], true);
    c.expect_text(s);
    let big = pattern(200_000, 1);
    c.send_frame(OpCode::Binary, &big[..70_000], false);
    c.send_frame(OpCode::Continuation, &[], false);
    c.send_frame(OpCode::Continuation, &big[70_000..], true);
    c.expect_binary(&big);
    c.close_and_wait(1000);
}

#[test]
fn ping_pong() {
    let srv = start_server(Config::default(), Echo::default());
    let mut c = connect(srv.addr);
    for payload in [&b""[..], b"x", &[7u8; 125][..]] {
        c.ping(payload);
        assert_eq!(c.recv(), Msg::Pong(payload.to_vec()));
    }
    // An unsolicited pong is ignored; the connection still works.
    c.pong(b"unsolicited");
    c.send_text("after pong");
    assert_eq!(c.recv(), Msg::Text("after pong".into()));
    c.close_and_wait(1000);
}

#[test]
fn close_initiated_by_client() {
    // The server closes TCP at once: long before this close timeout.
    let srv = start_server(patient_close(), Echo::default());
    let mut c = connect(srv.addr);
    c.send_text("one");
    c.expect_text("one");
    c.close(1000, "done here");
    let (code, _reason) = c.expect_close();
    assert_eq!(code, Some(1000), "the server echoes the close code");
    // The server closes TCP first (RFC 6455 §7.1.1).
    c.expect_eof(Duration::from_secs(10));

    // A close with no payload gets an empty close back.
    let mut c = connect(srv.addr);
    c.send_frame(OpCode::Close, &[], true);
    assert_eq!(c.expect_close(), (None, String::new()));
    c.expect_eof(Duration::from_secs(10));

    // An application code is echoed too.
    let mut c = connect(srv.addr);
    c.close(4321, "custom");
    assert_eq!(c.expect_close().0, Some(4321));
    c.expect_eof(Duration::from_secs(10));
}

/// After a clean close handshake the server closes its socket at once: it
/// does not hold the descriptor until the client's FIN, which a client may
/// send late or never.
#[test]
fn socket_released_right_after_a_clean_close() {
    // A close timeout far beyond the wait below: only an immediate release
    // passes.
    let srv = BinServer::spawn(&["--close-timeout", "60s"]);
    let mut c = connect(srv.addr);
    c.send_text("one");
    c.expect_text("one");
    let inode = srv.server_side_inode(&c.stream);
    assert!(srv.socket_inodes().contains(&inode), "server side {inode}");
    c.close(1000, "");
    assert_eq!(c.expect_close().0, Some(1000));
    // Well before the close timeout, with our side still open.
    wait_until(
        Duration::from_secs(10),
        "the server to close its socket",
        || !srv.socket_inodes().contains(&inode),
    );
    c.expect_eof(Duration::from_secs(10));
}

#[test]
fn close_initiated_by_server() {
    let echo = Echo::default();
    let closed = echo.closed.clone();
    let srv = start_server(patient_close(), echo);
    let mut c = connect(srv.addr);
    c.send_text("hello");
    c.expect_text("hello");
    c.send_text("bye");
    assert_eq!(c.expect_close(), (Some(4001), "bye to you".to_owned()));
    c.close(4001, "");
    // Our answer ends it: TCP closed long before the close timeout.
    c.expect_eof(Duration::from_secs(10));
    let start = Instant::now();
    while closed.load(Ordering::SeqCst) < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "on_close not called"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn request_and_first_frames_in_one_write() {
    let srv = start_server(Config::default(), Echo::default());
    let mut extra = frame_bytes(OpCode::Text, b"early", true, true);
    extra.extend(frame_bytes(OpCode::Binary, &pattern(300, 1), true, true));
    // And half of a third frame: the rest follows later.
    let third = frame_bytes(OpCode::Text, b"split across writes", true, true);
    extra.extend_from_slice(&third[..5]);
    let mut c = TestClient::connect_with(srv.addr, "/", &extra);
    c.expect_text("early");
    c.expect_binary(&pattern(300, 1));
    c.send_raw(&third[5..]);
    c.expect_text("split across writes");
    c.close_and_wait(1000);
}

#[test]
fn request_sent_a_byte_at_a_time() {
    let srv = start_server(Config::default(), Echo::default());
    let mut s = tcp_connect(srv.addr);
    let (req, mut bytes) = upgrade_request(srv.addr, "/slow?x=1");
    bytes.extend(frame_bytes(OpCode::Text, b"slowly", true, true));
    for b in &bytes {
        use std::io::Write;
        s.write_all(std::slice::from_ref(b)).unwrap();
    }
    let mut c = TestClient::finish_handshake(s, &req);
    c.expect_text("slowly");
    c.close_and_wait(1000);
}

#[test]
fn http_on_the_binary() {
    let srv = BinServer::spawn(&[]);
    let a = srv.addr;

    let r = http_get(a, "/healthz");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body_text().trim(), "ok");

    let r = http_get(a, "/");
    assert_eq!(r.status, 426, "{r:?}");
    assert_eq!(r.header("sec-websocket-version"), Some("13"));

    let key = wsloop::handshake::generate_key();
    let upgrade = |method: &str, version: &str| {
        format!(
            "{method} / HTTP/1.1\r\nHost: {a}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n\r\n"
        )
    };
    let r = http_raw(a, upgrade("GET", "8").as_bytes());
    assert_eq!(r.status, 426, "{r:?}");
    assert_eq!(r.header("sec-websocket-version"), Some("13"), "{r:?}");

    let r = http_raw(a, upgrade("POST", "13").as_bytes());
    assert_eq!(r.status, 405, "{r:?}");

    // A bad key and garbage get 400, not a hang.
    let r = http_raw(
        a,
        format!(
            "GET / HTTP/1.1\r\nHost: {a}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 400, "{r:?}");
    let r = http_raw(
        a,
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
    );
    assert_eq!(r.status, 400, "{r:?}");

    // The server still upgrades after all that.
    let mut c = connect(a);
    c.send_text("still here");
    c.expect_text("still here");
    c.close_and_wait(1000);
}

#[test]
fn thousand_concurrent_connections() {
    const N: usize = 1000;
    let echo = Echo::default();
    let (opened, closed) = (echo.opened.clone(), echo.closed.clone());
    let srv = start_server(Config::default(), echo);
    let start = Instant::now();

    // Connect and send every request first, then read every response, so
    // all N are open at once.
    let mut pending = Vec::with_capacity(N);
    for _ in 0..N {
        let mut s = tcp_connect(srv.addr);
        let (req, bytes) = upgrade_request(srv.addr, "/");
        use std::io::Write;
        s.write_all(&bytes).unwrap();
        pending.push((s, req));
    }
    let mut clients: Vec<TestClient> = pending
        .into_iter()
        .map(|(s, req)| TestClient::finish_handshake(s, &req))
        .collect();
    assert_eq!(opened.load(Ordering::SeqCst), N);
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_text(&format!("message from client {i}"));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect_text(&format!("message from client {i}"));
    }
    // A second round, binary, so every connection has been used twice.
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_binary(&(i as u32).to_be_bytes());
    }
    for (i, c) in clients.iter_mut().enumerate() {
        c.expect_binary(&(i as u32).to_be_bytes());
    }
    eprintln!(
        "{N} connections opened and echoed twice in {:?}",
        start.elapsed()
    );

    // Half close cleanly, half just drop TCP: every one is reported closed.
    for (i, c) in clients.iter_mut().enumerate() {
        if i % 2 == 0 {
            c.close(1000, "");
        }
    }
    for (i, c) in clients.iter_mut().enumerate() {
        if i % 2 == 0 {
            assert_eq!(c.expect_close().0, Some(1000));
        }
    }
    drop(clients);
    let t = Instant::now();
    while closed.load(Ordering::SeqCst) < N {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "only {} of {N} on_close calls",
            closed.load(Ordering::SeqCst)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    srv.stop(Duration::from_secs(5));
}
