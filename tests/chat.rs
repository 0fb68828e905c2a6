//! `wsloop serve --app chat` over real loopback sockets: the JSON protocol,
//! rooms, replay with `since` across leaves and reconnects, broadcast to
//! 5,000 connections, token and Origin checks, the rate limit, the demo
//! page, and (through scripts/browser-test.sh) a headless Chromium driving
//! the page. Room membership in the library (`Ctx::join`/`publish`, leaving
//! on close) is checked in-process too.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use wsloop::client::{connect, connect_with, ClientOptions};
use wsloop::error::HandshakeError;
use wsloop::server::{ConnId, Ctx, Handler};
use wsloop::{CloseCode, Config, Error, Message};

fn ws_url(addr: SocketAddr, query: &str) -> String {
    format!("ws://{addr}/ws{query}")
}

fn chat(args: &[&str]) -> BinServer {
    let mut all = vec!["--app", "chat"];
    all.extend_from_slice(args);
    BinServer::spawn(&all)
}

// -------------------------------------------------------------- protocol

#[test]
fn rooms_members_receive_non_members_do_not_and_leave_works() {
    let srv = chat(&[]);
    let mut a = Peer::connect(srv.addr);
    let mut b = Peer::connect(srv.addr);
    let mut c = Peer::connect(srv.addr);
    assert!(
        a.id != b.id && b.id != c.id && a.id != c.id,
        "ids are unique"
    );
    a.join("r1");
    b.join("r1");
    c.join("r2");

    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    a.send(json!({"type": "message", "room": "r1", "text": "hello r1"}));
    for p in [&mut a, &mut b] {
        let m = p.expect("message");
        assert_eq!(m["room"], "r1");
        assert_eq!(m["text"], "hello r1");
        assert_eq!(m["from"].as_str(), Some(a_id.as_str()));
        assert_eq!(seq(&m), 1);
    }
    c.silent(Duration::from_millis(300));

    // Sequence numbers are per room.
    c.send(json!({"type": "message", "room": "r2", "text": "hello r2"}));
    let m = c.expect("message");
    assert_eq!((seq(&m), m["from"].as_str()), (1, Some(c.id.as_str())));

    b.send(json!({"type": "leave", "room": "r1"}));
    assert_eq!(b.expect("left")["room"], "r1");
    a.send(json!({"type": "message", "room": "r1", "text": "after b left"}));
    let m = a.expect("message");
    assert_eq!((seq(&m), m["text"].as_str()), (2, Some("after b left")));
    b.silent(Duration::from_millis(300));
    c.silent(Duration::from_millis(10));

    // Broadcast reaches everyone, in a room or not, sender included.
    b.send(json!({"type": "broadcast", "text": "to all"}));
    for p in [&mut a, &mut b, &mut c] {
        let m = p.expect("broadcast");
        assert_eq!(m["text"], "to all");
        assert_eq!(m["from"].as_str(), Some(b_id.as_str()));
    }
}

#[test]
fn errors_keep_the_connection_open() {
    let srv = chat(&[]);
    let mut p = Peer::connect(srv.addr);
    p.ws.send_text("{not json").unwrap();
    assert!(p.expect("error")["message"]
        .as_str()
        .unwrap()
        .contains("invalid JSON"));
    p.error(json!(["a", "list"]), "JSON object");
    p.error(json!({"room": "r"}), "missing field \"type\"");
    p.error(json!({"type": "dance"}), "unknown type \"dance\"");
    p.error(json!({"type": "join"}), "missing field \"room\"");
    p.error(
        json!({"type": "message", "room": "r"}),
        "missing field \"text\"",
    );
    p.error(json!({"type": "broadcast"}), "missing field \"text\"");
    p.error(json!({"type": "join", "room": 5}), "must be a string");
    p.error(json!({"type": "join", "room": ""}), "invalid room");
    p.error(
        json!({"type": "join", "room": "r", "since": -1}),
        "whole number",
    );
    p.error(
        json!({"type": "message", "room": "nope", "text": "x"}),
        "not in room \"nope\"",
    );
    p.error(json!({"type": "leave", "room": "nope"}), "not in room");
    p.error(
        json!({"type": "message", "room": "r", "text": "x".repeat(5000)}),
        "too long",
    );
    p.ws.send_binary(b"\x00\x01").unwrap();
    p.expect("error");
    // Still open and working.
    p.join("r");
    p.send(json!({"type": "message", "room": "r", "text": "still here"}));
    assert_eq!(p.expect("message")["text"], "still here");
    let info = p.ws.close(CloseCode::NORMAL, "bye").unwrap();
    assert_eq!(info.code, CloseCode::NORMAL);
}

#[test]
fn name_from_the_upgrade_url_is_shown() {
    let srv = chat(&[]);
    let mut p = Peer::from_ws(connect(&ws_url(srv.addr, "?name=Ann%20Lee")).unwrap());
    assert_eq!(p.welcome["name"], "Ann Lee");
    p.join("r");
    p.send(json!({"type": "message", "room": "r", "text": "hi"}));
    let m = p.expect("message");
    assert_eq!(
        (m["name"].as_str(), m["from"].as_str()),
        (Some("Ann Lee"), Some(p.id.as_str()))
    );
}

// ---------------------------------------------------------------- replay

/// Sends `n` messages ("m1", "m2", ...) to `room` from its own
/// connection, spaced out.
fn spawn_sender(
    addr: SocketAddr,
    room: &'static str,
    n: usize,
    gap: Duration,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut s = Peer::connect(addr);
        s.join(room);
        for i in 1..=n {
            s.send(json!({"type": "message", "room": room, "text": format!("m{i}")}));
            thread::sleep(gap);
        }
        // Its own copies tell that the server took every message.
        for i in 1..=n {
            let m = s.expect("message");
            assert_eq!(m["text"], format!("m{i}"));
        }
    })
}

/// Returns once `room` has had message `seq` (as a member joined now
/// sees it: in its `joined`, or live).
fn wait_for_seq(addr: SocketAddr, room: &str, seq_at_least: u64) {
    let mut probe = Peer::connect(addr);
    if seq(&probe.join(room)) >= seq_at_least {
        return;
    }
    while seq(&probe.expect("message")) < seq_at_least {}
}

fn assert_exactly_once_in_order(seqs: &[u64], n: u64) {
    let want: Vec<u64> = (1..=n).collect();
    if seqs != want {
        let dups = seqs.len() - seqs.iter().collect::<HashSet<_>>().len();
        let missing: Vec<u64> = want.iter().filter(|s| !seqs.contains(s)).copied().collect();
        panic!(
            "seqs not 1..={n} exactly once in order: {} received, {dups} duplicates, missing {missing:?}",
            seqs.len()
        );
    }
}

#[test]
fn replay_after_leave_and_rejoin_sees_every_message_once_in_order() {
    let srv = chat(&[]);
    const N: u64 = 300;
    let mut b = Peer::connect(srv.addr);
    let j = b.join("stream");
    assert_eq!(j["seq"], 0);
    let epoch = j["epoch"].as_str().unwrap().to_owned();
    let sender = spawn_sender(srv.addr, "stream", N as usize, Duration::from_millis(2));

    let mut seqs = Vec::new();
    collect_until(&mut b, 60, &mut seqs);
    // Leave mid-stream; messages sent before "left" still arrive.
    leave_recording(&mut b, "stream", &mut seqs);
    // Messages go on without us: another member sees the room pass the
    // last one we got.
    let last = *seqs.last().unwrap();
    wait_for_seq(srv.addr, "stream", last + 1);
    b.send(json!({"type": "join", "room": "stream", "since": last, "epoch": epoch}));
    let j = b.expect("joined");
    assert_eq!(j["epoch"], epoch.as_str());
    assert!(seq(&j) > last, "the stream went on while away: {j}");
    collect_until(&mut b, N, &mut seqs);
    assert_exactly_once_in_order(&seqs, N);
    b.silent(Duration::from_millis(200));
    sender.join().expect("sender thread");
}

#[test]
fn replay_after_reconnect_sees_every_message_once_in_order() {
    let srv = chat(&[]);
    const N: u64 = 200;
    let mut b = Peer::connect(srv.addr);
    let epoch = b.join("re")["epoch"].as_str().unwrap().to_owned();
    let sender = spawn_sender(srv.addr, "re", N as usize, Duration::from_millis(2));
    let mut seqs = Vec::new();
    collect_until(&mut b, 50, &mut seqs);
    // Drop the connection (no leave), come back as a new connection.
    b.ws.close(CloseCode::GOING_AWAY, "reconnecting").unwrap();
    thread::sleep(Duration::from_millis(100));
    let mut b = Peer::connect(srv.addr);
    b.send(json!({"type": "join", "room": "re", "since": seqs.last(), "epoch": epoch}));
    b.expect("joined");
    collect_until(&mut b, N, &mut seqs);
    assert_exactly_once_in_order(&seqs, N);
    sender.join().expect("sender thread");
}

#[test]
fn join_since_older_than_kept_reports_the_gap() {
    let srv = chat(&[]);
    let mut a = Peer::connect(srv.addr);
    a.join("big");
    for i in 1..=1050 {
        a.send(json!({"type": "message", "room": "big", "text": format!("m{i}")}));
    }
    for _ in 1..=1050 {
        a.expect("message");
    }
    let mut b = Peer::connect(srv.addr);
    b.send(json!({"type": "join", "room": "big", "since": 10}));
    assert_eq!(seq(&b.expect("joined")), 1050);
    let g = b.expect("gap");
    assert_eq!(
        (g["room"].as_str(), g["from"].as_u64()),
        (Some("big"), Some(51))
    );
    assert!(g.get("reset").is_none(), "{g}");
    for s in 51..=1050 {
        let m = b.expect("message");
        assert_eq!(seq(&m), s);
    }
    b.silent(Duration::from_millis(200));

    // Caught up exactly: nothing replayed, no gap.
    b.send(json!({"type": "join", "room": "big", "since": 1050}));
    b.expect("joined");
    b.silent(Duration::from_millis(200));

    // A since from another history (a restarted server) is a reset: all
    // that is kept is replayed.
    let mut c = Peer::connect(srv.addr);
    c.send(json!({"type": "join", "room": "big", "since": 7, "epoch": "not-this-one"}));
    c.expect("joined");
    let g = c.expect("gap");
    assert_eq!(
        (g["from"].as_u64(), g["reset"].as_bool()),
        (Some(51), Some(true))
    );
    assert_eq!(seq(&c.expect("message")), 51);

    // A room never used, joined with since 0: nothing, no gap.
    let mut d = Peer::connect(srv.addr);
    d.send(json!({"type": "join", "room": "new", "since": 0}));
    assert_eq!(d.expect("joined")["seq"], 0);
    d.silent(Duration::from_millis(200));
}

// ---------------------------------------------------------- 5,000 members

/// The next text message of a raw test client, parsed.
fn raw_json(c: &mut TestClient) -> Value {
    match c.recv_data() {
        Msg::Text(t) => serde_json::from_str(&t).unwrap(),
        other => panic!("expected text, got {other:?}"),
    }
}

#[test]
fn broadcast_and_room_publish_reach_5000_connections() {
    const N: usize = 5000;
    let srv = chat(&[]);
    let start = Instant::now();
    // One fd per client here (TestClient is a bare TcpStream), N in the
    // server process: far below the 20,000 open-file limit.
    let mut clients: Vec<TestClient> = (0..N)
        .map(|_| {
            let mut c = TestClient::connect_with(srv.addr, "/ws", &[]);
            assert_eq!(raw_json(&mut c)["type"], "welcome");
            c
        })
        .collect();
    eprintln!("{N} connections open in {:?}", start.elapsed());

    let mut sender = Peer::connect(srv.addr);
    let t = Instant::now();
    sender.send(json!({"type": "broadcast", "text": "fan-out"}));
    for c in clients.iter_mut() {
        let m = raw_json(c);
        assert_eq!(
            (m["type"].as_str(), m["text"].as_str()),
            (Some("broadcast"), Some("fan-out"))
        );
    }
    let took = t.elapsed();
    sender.expect("broadcast");
    eprintln!(
        "broadcast to {} connections delivered in {took:?} ({:.0} deliveries/s, \
         read one by one by this test)",
        N + 1,
        (N + 1) as f64 / took.as_secs_f64()
    );

    // Every client joins one room; one message reaches all of them.
    for c in clients.iter_mut() {
        c.send_text(r#"{"type":"join","room":"all"}"#);
    }
    for c in clients.iter_mut() {
        assert_eq!(raw_json(c)["type"], "joined");
    }
    sender.join("all");
    let t = Instant::now();
    sender.send(json!({"type": "message", "room": "all", "text": "room fan-out"}));
    for c in clients.iter_mut() {
        let m = raw_json(c);
        assert_eq!(
            (m["type"].as_str(), m["seq"].as_u64()),
            (Some("message"), Some(1))
        );
    }
    eprintln!(
        "room message to {} members delivered in {:?}",
        N + 1,
        t.elapsed()
    );
    sender.expect("message");
    drop(clients);
}

// ------------------------------------------------- library rooms in-process

/// A handler exposing the library's rooms: "join R", "leave R", "pub R T".
struct Rooms;

impl Handler for Rooms {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        let Message::Text(t) = msg else { return };
        let mut it = t.splitn(3, ' ');
        match (it.next(), it.next(), it.next()) {
            (Some("join"), Some(r), None) => {
                ctx.join(id, r);
                let _ = ctx.send_text(id, "ok");
            }
            (Some("leave"), Some(r), None) => {
                let reply = if ctx.leave(id, r) { "ok" } else { "not in" };
                let _ = ctx.send_text(id, reply);
            }
            (Some("pub"), Some(r), Some(text)) => {
                let n = ctx.publish(r, &Message::Text(text.to_owned().into()));
                let _ = ctx.send_text(id, &format!("sent to {n}"));
            }
            _ => {}
        }
    }
}

fn members(handle: &wsloop::server::Handle, room: &'static str) -> usize {
    let (tx, rx) = mpsc::channel();
    handle
        .run(move |ctx| {
            let _ = tx.send(ctx.room_members(room).len());
        })
        .unwrap();
    rx.recv_timeout(CHAT_WAIT).expect("loop answered")
}

#[test]
fn library_rooms_publish_leave_and_leave_on_close() {
    let srv = start_server(Config::default(), Rooms);
    let mut a = common::connect(srv.addr);
    let mut b = common::connect(srv.addr);
    let mut c = common::connect(srv.addr);
    for x in [&mut a, &mut b] {
        x.send_text("join r");
        x.expect_text("ok");
    }
    assert_eq!(members(&srv.handle, "r"), 2);
    c.send_text("pub r hi");
    c.expect_text("sent to 2");
    a.expect_text("hi");
    b.expect_text("hi");
    // The non-member got nothing: its next message is the answer to this.
    c.send_text("pub nowhere x");
    c.expect_text("sent to 0");

    b.send_text("leave r");
    b.expect_text("ok");
    b.send_text("leave r");
    b.expect_text("not in");
    a.send_text("pub r two");
    a.expect_text("two");
    a.expect_text("sent to 1");

    // Closing leaves every room (and empty rooms go away).
    b.send_text("join r");
    b.expect_text("ok");
    assert_eq!(members(&srv.handle, "r"), 2);
    a.close_and_wait(1000);
    let start = Instant::now();
    while members(&srv.handle, "r") != 1 {
        assert!(
            start.elapsed() < CHAT_WAIT,
            "closed connection still in the room"
        );
        thread::sleep(Duration::from_millis(10));
    }
    drop(b); // TCP lost without a close frame
    let start = Instant::now();
    while members(&srv.handle, "r") != 0 {
        assert!(
            start.elapsed() < CHAT_WAIT,
            "lost connection still in the room"
        );
        thread::sleep(Duration::from_millis(10));
    }
    c.send_text("pub r anyone");
    c.expect_text("sent to 0");
    c.close_and_wait(1000);
    srv.stop(CHAT_WAIT);
}

// ---------------------------------------------------- token, Origin, limits

/// Sends an upgrade request for `target` with extra header lines and reads
/// the answer to EOF (or just the head, for a 101).
fn upgrade(addr: SocketAddr, target: &str, headers: &[&str]) -> (u16, String, Option<String>) {
    let (_, mut bytes) = upgrade_request(addr, target);
    // Insert the extra headers before the blank line.
    bytes.truncate(bytes.len() - 2);
    for h in headers {
        bytes.extend_from_slice(h.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    let mut s = tcp_connect(addr);
    std::io::Write::write_all(&mut s, &bytes).unwrap();
    // The head first: a 101 stays open, a refusal is followed by EOF.
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        match std::io::Read::read(&mut s, &mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading the answer to {target}: {e}"),
        }
    }
    if parse_http(&raw).status != 101 {
        assert!(
            read_until_eof(&mut s, Duration::from_secs(10), &mut raw),
            "no EOF after a refusal"
        );
    }
    let reply = parse_http(&raw);
    (
        reply.status,
        reply.body_text(),
        reply.header("www-authenticate").map(str::to_owned),
    )
}

#[test]
fn token_is_required_when_set() {
    let srv = chat(&["--token", "s3cr/et"]);
    let (status, body, auth) = upgrade(srv.addr, "/ws", &[]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("token"), "{body}");
    assert!(auth.unwrap().starts_with("Bearer"));
    assert_eq!(upgrade(srv.addr, "/ws?token=wrong", &[]).0, 401);
    assert_eq!(upgrade(srv.addr, "/ws?token=s3cr", &[]).0, 401);
    assert_eq!(
        upgrade(srv.addr, "/ws", &["Authorization: Bearer nope"]).0,
        401
    );
    assert_eq!(
        upgrade(srv.addr, "/ws", &["Authorization: Basic s3cr/et"]).0,
        401
    );
    assert_eq!(upgrade(srv.addr, "/ws?token=s3cr/et", &[]).0, 101);
    assert_eq!(upgrade(srv.addr, "/ws?token=s3cr%2Fet", &[]).0, 101);
    assert_eq!(
        upgrade(srv.addr, "/ws", &["Authorization: Bearer s3cr/et"]).0,
        101
    );

    // With wsloop's client: the refusal is the 401, before any frame.
    match connect(&ws_url(srv.addr, "?token=x")) {
        Err(Error::Handshake(HandshakeError::Status(401))) => {}
        other => panic!("expected a 401 refusal, got {other:?}"),
    }
    let mut opts = ClientOptions::default();
    opts.headers
        .push(("Authorization".into(), "Bearer s3cr/et".into()));
    let mut p = Peer::from_ws(connect_with(&ws_url(srv.addr, ""), &opts).unwrap());
    p.join("r");
    // The page and health check need no token.
    assert_eq!(http_get(srv.addr, "/healthz").status, 200);
    assert_eq!(http_get(srv.addr, "/").status, 200);
}

#[test]
fn origin_allow_list() {
    let srv = chat(&[
        "--allowed-origin",
        "https://chat.example.com",
        "--allowed-origin",
        "http://localhost:8080",
    ]);
    let (status, body, _) = upgrade(srv.addr, "/ws", &["Origin: https://evil.example.com"]);
    assert_eq!(status, 403);
    assert!(body.contains("evil.example.com"), "{body}");
    assert_eq!(
        upgrade(srv.addr, "/ws", &["Origin: https://chat.example.com"]).0,
        101
    );
    assert_eq!(
        upgrade(srv.addr, "/ws", &["Origin: http://localhost:8080"]).0,
        101
    );
    assert_eq!(
        upgrade(srv.addr, "/ws", &["Origin: http://localhost:8081"]).0,
        403
    );
    // Non-browser clients send no Origin.
    assert_eq!(upgrade(srv.addr, "/ws", &[]).0, 101);

    let mut opts = ClientOptions::default();
    opts.headers
        .push(("Origin".into(), "https://evil.example.com".into()));
    match connect_with(&ws_url(srv.addr, ""), &opts) {
        Err(Error::Handshake(HandshakeError::Status(403))) => {}
        other => panic!("expected a 403 refusal, got {other:?}"),
    }

    // Origin and token together: each refusal has its own status.
    let srv = chat(&["--allowed-origin", "https://ok.example", "--token", "t"]);
    assert_eq!(
        upgrade(srv.addr, "/ws?token=t", &["Origin: https://bad.example"]).0,
        403
    );
    assert_eq!(
        upgrade(srv.addr, "/ws", &["Origin: https://ok.example"]).0,
        401
    );
    assert_eq!(
        upgrade(srv.addr, "/ws?token=t", &["Origin: https://ok.example"]).0,
        101
    );
}

#[test]
fn rate_limit_closes_with_1008() {
    let srv = chat(&["--rate-messages", "5"]);
    let mut p = Peer::connect(srv.addr);
    for i in 0..30 {
        // The server may close before all are sent.
        if p.ws
            .send_text(&json!({"type": "join", "room": format!("r{i}")}).to_string())
            .is_err()
        {
            break;
        }
    }
    let mut joined = 0;
    loop {
        match p.ws.recv_message() {
            Ok(_) => joined += 1,
            Err(Error::ConnectionClosed) => break,
            Err(e) => panic!("expected a close, got {e}"),
        }
    }
    let info = p.ws.close_info().expect("closed").clone();
    assert_eq!(info.code, CloseCode::POLICY, "{info:?}");
    assert!(info.reason.contains("rate limit"), "{info:?}");
    assert!(
        (5..30).contains(&joined),
        "{joined} joins answered before the close"
    );

    // Bytes per second: a message larger than a second's worth never fits.
    let srv = chat(&["--rate-bytes", "1K"]);
    let mut p = Peer::connect(srv.addr);
    p.join("r");
    let _ = p
        .ws
        .send_text(&json!({"type": "message", "room": "r", "text": "x".repeat(2000)}).to_string());
    match p.ws.recv_message() {
        Err(Error::ConnectionClosed) => {}
        other => panic!("expected a close, got {other:?}"),
    }
    assert_eq!(p.ws.close_info().unwrap().code, CloseCode::POLICY);
}

/// Over the rate with `--rate-action drop`: some of 30 joins sent at once
/// are answered, the rest dropped; the connection stays open, and once
/// the bucket refills a join is answered again. (Answers come in order,
/// so every answer to the 30 is in before the later join's.)
#[test]
fn rate_limit_drop_keeps_the_connection() {
    let srv = chat(&["--rate-messages", "5", "--rate-action", "drop"]);
    let mut p = Peer::connect(srv.addr);
    for i in 0..30 {
        p.send(json!({"type": "join", "room": format!("r{i}")}));
    }
    let mut answered = 0;
    let start = Instant::now();
    let mut tries = 0;
    'later: loop {
        // The bucket refills at 5 a second: sooner or later one gets in.
        thread::sleep(Duration::from_millis(300));
        tries += 1;
        p.send(json!({"type": "join", "room": format!("later{tries}")}));
        while let Some(m) = p.try_recv(Duration::from_millis(300)) {
            assert_eq!(m["type"], "joined", "{m}");
            if m["room"].as_str().unwrap().starts_with("later") {
                break 'later;
            }
            answered += 1;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no join answered in 20 s ({tries} tries)"
        );
    }
    assert!((5..30).contains(&answered), "{answered} of 30 answered");
}

// ------------------------------------------------------------------- HTTP

#[test]
fn demo_page_health_and_paths() {
    let srv = chat(&[]);
    let page = http_get(srv.addr, "/");
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    let html = page.body_text();
    assert!(html.contains("<title>wsloop chat</title>"));
    assert!(html.contains("new WebSocket("));
    // Self-contained: nothing loaded from elsewhere.
    for bad in ["<script src", "http://", "https://"] {
        assert!(!html.contains(bad), "page refers to {bad}");
    }
    assert_eq!(http_get(srv.addr, "/healthz").body_text(), "ok\n");
    assert_eq!(http_get(srv.addr, "/nothing").status, 404);
    assert_eq!(http_get(srv.addr, "/ws").status, 426);
    // The WebSocket is at /ws only.
    assert_eq!(upgrade(srv.addr, "/", &[]).0, 404);
    assert_eq!(upgrade(srv.addr, "/ws?x=1", &[]).0, 101);
}

#[test]
fn echo_stays_the_default_and_bad_flags_are_named() {
    let srv = BinServer::spawn(&[]);
    let mut ws = connect(&format!("ws://{}/anything", srv.addr)).unwrap();
    ws.set_read_timeout(Some(CHAT_WAIT));
    ws.send_text("{\"type\":\"join\"}").unwrap();
    assert_eq!(
        ws.recv_message().unwrap(),
        Message::Text("{\"type\":\"join\"}".into())
    );
    // --token applies to echo as well.
    let srv = BinServer::spawn(&["--token", "t"]);
    assert_eq!(upgrade(srv.addr, "/", &[]).0, 401);
    assert_eq!(upgrade(srv.addr, "/?token=t", &[]).0, 101);

    for (args, want) in [
        (&["--app", "irc"][..], "--app"),
        (&["--rate-action", "drop"], "--rate-action needs"),
        (&["--rate-messages", "0"], "--rate-messages"),
        (
            &["--rate-action", "ban", "--rate-messages", "1"],
            "close or drop",
        ),
        (&["--allowed-origin", "example.com"], "--allowed-origin"),
        (&["--token", ""], "--token"),
    ] {
        let out = run_wsloop("serve", args, None, CHAT_WAIT);
        let err = &out.stderr;
        assert_eq!(out.code, Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let help = run_wsloop("serve", &["--help"], None, CHAT_WAIT).stdout;
    for flag in [
        "--app",
        "--token",
        "--allowed-origin",
        "--rate-messages",
        "--rate-bytes",
        "--rate-action",
    ] {
        assert!(help.contains(flag), "help lacks {flag}");
    }
}

// --------------------------------------------------------------- browser

/// Runs scripts/browser-test.sh: headless Chromium (installed with apt-get
/// if missing) drives the demo page, across a server restart. Skipped with
/// WSLOOP_SKIP_BROWSER=1.
#[test]
fn browser_demo_page() {
    if std::env::var_os("WSLOOP_SKIP_BROWSER").is_some_and(|v| v == "1") {
        eprintln!("WSLOOP_SKIP_BROWSER=1: browser test skipped");
        return;
    }
    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chat-demo.png");
    let log = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-test.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("bash")
        .arg(repo_root().join("scripts/browser-test.sh"))
        .env("WSLOOP_BIN", env!("CARGO_BIN_EXE_wsloop"))
        .env("SCREENSHOT", &shot)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("run scripts/browser-test.sh");
    // Installing Chromium the first time takes a few minutes; the test
    // itself well under one.
    let limit = Duration::from_secs(20 * 60);
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill(); // this child's PID only; its trap stops the server
            let _ = child.wait();
            panic!(
                "browser test did not finish within {limit:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(200));
    };
    let out = std::fs::read_to_string(&log).unwrap_or_default();
    match status.code() {
        Some(0) => {
            eprintln!("{out}");
            assert!(shot.exists(), "no screenshot at {}", shot.display());
        }
        Some(3) => panic!(
            "Chromium could not be installed (apt-get install chromium failed); \
             install it (Debian package `chromium`, /usr/bin/chromium) or set \
             WSLOOP_SKIP_BROWSER=1 to skip this test:\n{out}"
        ),
        Some(4) => panic!("playwright-core could not be installed with npm:\n{out}"),
        _ => panic!("browser test failed ({status}):\n{out}"),
    }
}
