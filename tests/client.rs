//! The client over real loopback sockets: the blocking `WebSocket` against
//! `wsloop serve` and in-process servers (echo at the frame-length
//! boundaries, ping, both close directions, subprotocols, extra headers),
//! handshake failures against raw TCP "servers" (refused port, 403, 200,
//! wrong accept key, silence), the client heartbeat, URL errors,
//! `Reconnecting` with backoff, and the `wsloop client` binary.
//!
//! Every blocking call is bounded: read timeouts on every `WebSocket`, and
//! the few calls that have none (`Reconnecting::recv` on a fresh
//! connection, child processes) run under a watchdog.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use wsloop::client::{connect, connect_with, Backoff, ClientOptions, Reconnecting, WebSocket};
use wsloop::handshake::{accept_key, Request};
use wsloop::server::{ConnId, Ctx, Handler, Upgrade};
use wsloop::{CloseCode, Config, Error, Event, HandshakeError, Message};

const READ: Duration = Duration::from_secs(20);

fn ws_url(addr: SocketAddr) -> String {
    format!("ws://{addr}/")
}

/// Options with a short handshake timeout, so a failing test fails soon.
fn opts() -> ClientOptions {
    let mut o = ClientOptions::default();
    o.config.handshake_timeout = Duration::from_secs(5);
    o
}

/// Connects with `o` and sets a read timeout on the result.
fn open(addr: SocketAddr, o: &ClientOptions) -> WebSocket {
    open_ws(&ws_url(addr), o, READ)
}

/// Runs `f` on a thread and panics if it does not finish within `limit`
/// (the thread is left behind; the test fails either way).
fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = t.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match t.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!("sent nothing without panicking"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: not done within {limit:?}"),
    }
}

// ------------------------------------------------------------- servers

/// Echoes messages; "bye" makes the server close with 4000 "done". Offers
/// subprotocol "chat.v2" and records the `X-Test` header of each upgrade.
#[derive(Default)]
struct App {
    x_test: Arc<Mutex<Vec<Option<String>>>>,
    /// Sent to each connection when it opens.
    greeting: Option<&'static str>,
}

impl Handler for App {
    fn on_upgrade(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, req: &Request) -> Upgrade {
        self.x_test
            .lock()
            .unwrap()
            .push(req.header("x-test").map(str::to_owned));
        let protocol = req.protocols().find(|p| *p == "chat.v2").map(str::to_owned);
        Upgrade::Accept {
            protocol,
            headers: Vec::new(),
        }
    }

    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        if let Some(g) = self.greeting {
            let _ = ctx.send_text(id, g);
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        if matches!(&msg, Message::Text(t) if t == "bye") {
            ctx.close(id, CloseCode(4000), "done");
            return;
        }
        let _ = ctx.send(id, msg);
    }
}

/// A raw TCP "server" for one connection: reads the request head, passes
/// it to `respond`, writes what that returns (nothing for `None`), then
/// keeps the connection open without reading for `hold` and closes it.
/// The thread returns the request head.
fn raw_server(
    respond: impl FnOnce(&str) -> Option<Vec<u8>> + Send + 'static,
    hold: Duration,
) -> (SocketAddr, thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let t = thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = Vec::new();
        let mut chunk = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        if let Some(bytes) = respond(&head) {
            let _ = s.write_all(&bytes);
        }
        thread::sleep(hold);
        head
    });
    (addr, t)
}

fn switching_protocols(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// A port nobody listens on.
fn closed_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

// --------------------------------------------------------------- echo

const SIZES: [usize; 6] = [0, 125, 126, 65535, 65536, 16 << 20];

#[test]
fn echo_text_and_binary_at_length_boundaries_via_wsloop_serve() {
    let srv = BinServer::spawn(&[]);
    let mut ws = open(srv.addr, &opts());
    echo_round(&mut ws, &SIZES);
    // Several in flight at once come back in order.
    for n in [1usize, 126, 70_000, 3] {
        ws.send(Message::Binary(pattern(n, 9).into())).unwrap();
    }
    for n in [1usize, 126, 70_000, 3] {
        expect_binary(&mut ws, &pattern(n, 9));
    }
    ws.send_text("héllo wörld ✓").unwrap();
    expect_text(&mut ws, "héllo wörld ✓");
    let info = ws.close(CloseCode::NORMAL, "").unwrap();
    assert_eq!(
        (info.code, info.clean),
        (CloseCode::NORMAL, true),
        "{info:?}"
    );
}

#[test]
fn echo_against_in_process_server() {
    let srv = start_server(Config::default(), App::default());
    let mut ws = open(srv.addr, &opts());
    for (i, &n) in SIZES.iter().enumerate() {
        let bin = pattern(n, i as u8);
        ws.send_binary(&bin).unwrap();
        expect_binary(&mut ws, &bin);
    }
    let info = ws.close(CloseCode::NORMAL, "").unwrap();
    assert!(info.clean, "{info:?}");
    srv.stop(Duration::from_secs(5));
}

#[test]
fn ping_gets_a_pong_event() {
    let srv = BinServer::spawn(&[]);
    let mut ws = open(srv.addr, &opts());
    ping_expect_pong(&mut ws, b"are you there");
    // Still usable after.
    ws.send_text("after ping").unwrap();
    expect_text(&mut ws, "after ping");
    let info = ws.close(CloseCode::NORMAL, "").unwrap();
    assert!(info.clean, "{info:?}");
}

// -------------------------------------------------------------- close

#[test]
fn close_initiated_by_server() {
    let srv = start_server(Config::default(), App::default());
    let mut ws = open(srv.addr, &opts());
    ws.send_text("first").unwrap();
    expect_text(&mut ws, "first");
    ws.send_text("bye").unwrap();
    match ws.recv() {
        Ok(Event::Close(code, reason)) => {
            assert_eq!(code, CloseCode(4000));
            assert_eq!(reason, "done");
        }
        other => panic!("expected Close(4000, \"done\"), got {other:?}"),
    }
    let info = ws
        .close_info()
        .cloned()
        .expect("close_info after the server's close");
    assert_eq!(
        (info.code, info.reason.as_str(), info.clean),
        (CloseCode(4000), "done", true),
        "{info:?}"
    );
    // The server closes TCP; then the connection is over.
    match ws.recv() {
        Err(Error::ConnectionClosed) => {}
        other => panic!("expected Err(ConnectionClosed) after the close, got {other:?}"),
    }
    assert!(ws.close_info().unwrap().clean);
    assert!(matches!(ws.send_text("late"), Err(Error::ConnectionClosed)));
    srv.stop(Duration::from_secs(5));
}

#[test]
fn close_initiated_by_client() {
    let srv = start_server(Config::default(), App::default());
    let mut ws = open(srv.addr, &opts());
    ws.send_text("x").unwrap();
    expect_text(&mut ws, "x");
    let info = ws.close(CloseCode(4321), "client done").unwrap();
    // Clean: the server's close came back (a close that timed out is not).
    assert_eq!((info.code, info.clean), (CloseCode(4321), true), "{info:?}");
    assert_eq!(ws.close_info(), Some(&info));
    assert!(matches!(ws.send_text("late"), Err(Error::ConnectionClosed)));
    srv.stop(Duration::from_secs(5));
}

// --------------------------------------------------------- handshake

#[test]
fn connect_to_closed_port_fails_fast() {
    let addr = closed_port();
    let start = Instant::now();
    let r = within(
        Duration::from_secs(10),
        "connect to a closed port",
        move || connect_with(&ws_url(addr), &opts()).map(|_| ()),
    );
    let took = start.elapsed();
    match r {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        other => panic!("expected Err(Io(ConnectionRefused)), got {other:?}"),
    }
    // Not retried until the 5 s handshake timeout.
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

fn refused_with(status_line: &str, body: &str, status: u16) {
    let resp = format!(
        "HTTP/1.1 {status_line}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (addr, t) = raw_server(move |_| Some(resp.into_bytes()), Duration::ZERO);
    let r = within(Duration::from_secs(10), "connect", move || {
        connect_with(&ws_url(addr), &opts()).map(|_| ())
    });
    match r {
        Err(e @ Error::Handshake(HandshakeError::Status(s))) => {
            assert_eq!(s, status);
            let shown = e.to_string();
            assert!(
                shown.contains(&status.to_string()),
                "Display does not name {status}: {shown}"
            );
        }
        other => panic!("expected Err(Handshake(Status({status}))), got {other:?}"),
    }
    let head = t.join().unwrap();
    assert!(head.starts_with("GET / HTTP/1.1\r\n"), "{head:?}");
}

#[test]
fn status_403_is_a_handshake_error() {
    refused_with("403 Forbidden", "go away\n", 403);
}

#[test]
fn status_200_is_a_handshake_error() {
    refused_with("200 OK", "ok\n", 200);
}

#[test]
fn wrong_accept_key_is_rejected() {
    let (addr, _t) = raw_server(
        |head| {
            // The accept value of some other key.
            let _ = request_key(head);
            Some(switching_protocols(&accept_key(
                b"dGhlIHNhbXBsZSBub25jZQ==",
            )))
        },
        Duration::from_secs(3),
    );
    let r = within(Duration::from_secs(10), "connect", move || {
        connect_with(&ws_url(addr), &opts()).map(|_| ())
    });
    assert!(
        matches!(r, Err(Error::Handshake(HandshakeError::BadAccept))),
        "expected Err(Handshake(BadAccept)), got {r:?}"
    );
}

#[test]
fn silent_server_times_out_the_handshake() {
    // Silent for 30 s, then it hangs up: a Timeout (not the hang-up's
    // error) shows the client gave up by itself, long before.
    let (addr, _t) = raw_server(|_| None, Duration::from_secs(30));
    let mut o = opts();
    o.config.handshake_timeout = Duration::from_millis(300);
    let start = Instant::now();
    let r = within(Duration::from_secs(20), "connect", move || {
        connect_with(&ws_url(addr), &o).map(|_| ())
    });
    let took = start.elapsed();
    assert!(
        matches!(r, Err(Error::Handshake(HandshakeError::Timeout))),
        "expected Err(Handshake(Timeout)), got {r:?} after {took:?}"
    );
    assert!(
        took >= Duration::from_millis(300),
        "handshake_timeout 300 ms, gave up after {took:?}"
    );
}

#[test]
fn subprotocol_negotiation() {
    let srv = start_server(Config::default(), App::default());
    let mut o = opts();
    o.protocols = vec!["chat.v1".into(), "chat.v2".into()];
    let mut ws = open(srv.addr, &o);
    assert_eq!(ws.protocol(), Some("chat.v2"));
    ws.close(CloseCode::NORMAL, "").unwrap();
    // Nothing offered that the server takes: no protocol.
    o.protocols = vec!["chat.v1".into()];
    let mut ws = open(srv.addr, &o);
    assert_eq!(ws.protocol(), None);
    ws.close(CloseCode::NORMAL, "").unwrap();
    let mut ws = open(srv.addr, &opts());
    assert_eq!(ws.protocol(), None);
    ws.close(CloseCode::NORMAL, "").unwrap();
    srv.stop(Duration::from_secs(5));
}

#[test]
fn extra_headers_reach_the_server() {
    let app = App::default();
    let seen = app.x_test.clone();
    let srv = start_server(Config::default(), app);
    let mut o = opts();
    o.headers = vec![
        ("X-Test".into(), "hello 123".into()),
        ("Origin".into(), "http://example.test".into()),
    ];
    let mut ws = open(srv.addr, &o);
    ws.send_text("ping").unwrap();
    expect_text(&mut ws, "ping");
    ws.close(CloseCode::NORMAL, "").unwrap();
    let mut ws = open(srv.addr, &opts());
    ws.close(CloseCode::NORMAL, "").unwrap();
    srv.stop(Duration::from_secs(5));
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Some("hello 123".to_owned()), None]
    );
}

#[test]
fn url_errors() {
    for bad in [
        "http://x",
        "ws://127.0.0.1:badport",
        "ws://host:99999/",
        "ws://",
        "127.0.0.1:80",
    ] {
        match connect(bad) {
            Err(Error::Url(msg)) => assert!(!msg.is_empty()),
            Err(other) => panic!("{bad}: expected Error::Url, got {other:?}"),
            Ok(_) => panic!("{bad}: connected"),
        }
    }
}

// ---------------------------------------------------------- heartbeat

#[test]
fn heartbeat_declares_a_silent_server_dead() {
    // Completes the upgrade, then neither reads nor writes.
    let (addr, _t) = raw_server(
        |head| {
            Some(switching_protocols(&accept_key(
                request_key(head).as_bytes(),
            )))
        },
        Duration::from_secs(30),
    );
    let mut o = opts();
    o.config.ping_interval = Some(Duration::from_millis(100));
    o.config.pong_timeout = Duration::from_millis(100);
    // Before the connect, so before the client's timers start.
    let start = Instant::now();
    let mut ws = connect_with(&ws_url(addr), &o).expect("connect");
    // The heartbeat must end it before this read timeout (a Timeout
    // error), and before the server hangs up at 30 s.
    ws.set_read_timeout(Some(Duration::from_secs(10)));
    let r = ws.recv();
    let took = start.elapsed();
    match &r {
        Err(Error::Timeout(_)) | Ok(Event::Message(_) | Event::Ping(_) | Event::Pong(_)) => {
            panic!("expected the connection declared dead, got {r:?} after {took:?}")
        }
        Err(_) | Ok(Event::Close(..)) => {}
    }
    assert!(
        took >= Duration::from_millis(200),
        "ping_interval 100 ms + pong_timeout 100 ms, but declared dead after {took:?}"
    );
    let info = ws
        .close_info()
        .cloned()
        .expect("close_info after a dead connection");
    assert!(!info.clean, "{info:?}");
    assert_eq!(info.code, CloseCode::ABNORMAL, "{info:?}");
}

// ---------------------------------------------------------- reconnect

#[test]
fn reconnects_after_server_restart() {
    let mut config = Config::default();
    // The client does not read while the server shuts down: don't wait
    // long for its close reply.
    config.shutdown_timeout = Duration::from_millis(500);
    let app = || App {
        greeting: Some("welcome"),
        ..App::default()
    };
    let srv = start_server_at("127.0.0.1:0".parse().unwrap(), config.clone(), app());
    let addr = srv.addr;
    let mut o = opts();
    // A fresh connection has no read timeout; the heartbeat bounds it.
    o.config.ping_interval = Some(Duration::from_secs(1));
    o.config.pong_timeout = Duration::from_secs(1);
    let backoff = Backoff {
        base: Duration::from_millis(50),
        factor: 2.0,
        cap: Duration::from_millis(400),
        jitter: 0.1,
        max_attempts: Some(20),
    };
    let mut rc = Reconnecting::new(&ws_url(addr), o, backoff);
    rc.ensure()
        .expect("first connect")
        .set_read_timeout(Some(READ));
    assert_eq!(rc.connects(), 1);
    let text = |ev: Result<Event<'static>, Error>| match ev {
        Ok(Event::Message(Message::Text(t))) => t.into_owned(),
        other => panic!("expected a text message, got {other:?}"),
    };
    assert_eq!(text(rc.recv()), "welcome");
    rc.send_text("one").unwrap();
    assert_eq!(text(rc.recv()), "one");

    srv.stop(Duration::from_secs(5));
    // The new server comes up ~300 ms later, while the client retries.
    let restart = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        start_server_at(addr, config, app())
    });
    let (rc, got) = within(Duration::from_secs(20), "reconnect", move || {
        let got = text(rc.recv());
        (rc, got)
    });
    let mut rc = rc;
    let srv2 = restart.join().expect("restart thread");
    assert_eq!(got, "welcome", "first event of the new connection");
    assert_eq!(rc.connects(), 2);
    rc.ensure().unwrap().set_read_timeout(Some(READ));
    rc.send_text("two").unwrap();
    assert_eq!(text(rc.recv()), "two");
    let info = rc
        .close(CloseCode::NORMAL, "")
        .unwrap()
        .expect("was connected");
    assert!(info.clean, "{info:?}");
    assert_eq!(rc.connects(), 2);
    srv2.stop(Duration::from_secs(5));
}

#[test]
fn reconnect_gives_up_after_max_attempts() {
    let addr = closed_port();
    let backoff = Backoff {
        base: Duration::from_millis(50),
        factor: 2.0,
        cap: Duration::from_millis(400),
        jitter: 0.1,
        max_attempts: Some(3),
    };
    let mut rc = Reconnecting::new(&ws_url(addr), opts(), backoff);
    let start = Instant::now();
    let (rc, r) = within(Duration::from_secs(10), "give up", move || {
        let r = rc.ensure().map(|_| ());
        (rc, r)
    });
    let took = start.elapsed();
    let e = r.expect_err("no server, yet connected");
    let msg = e.to_string();
    assert!(
        msg.contains("3 attempts"),
        "error does not name the attempts: {msg}"
    );
    // Three attempts, two waits: 50 ms and 100 ms, ±10%.
    assert!(
        took >= Duration::from_millis(135) && took < Duration::from_secs(5),
        "expected ~150 ms of backoff, took {took:?}"
    );
    assert_eq!(rc.connects(), 0);
}

// ----------------------------------------------------- wsloop client

/// `wsloop client <args>` with stdin from a file holding `input`: all of
/// it and the EOF are there from the start, as in `printf … | wsloop client`.
fn client_piped(args: &[&str], input: &[u8], limit: Duration) -> BinRun {
    let path = unique_tmp_path("client-stdin", "");
    std::fs::write(&path, input).unwrap();
    let stdin = std::fs::File::open(&path).unwrap();
    let mut child = wsloop_command("client", args)
        .stdin(stdin)
        .spawn()
        .expect("spawn wsloop client");
    let out = read_all(child.stdout.take().unwrap());
    let err = read_all(child.stderr.take().unwrap());
    let run = finish_run(&mut child, limit, "wsloop client, piped stdin", out, err);
    let _ = std::fs::remove_file(&path);
    run
}

#[test]
fn binary_client_echoes_piped_stdin() {
    let srv = BinServer::spawn(&[]);
    let run = client_piped(
        &[&ws_url(srv.addr)],
        "hello\nwörld ✓\n".as_bytes(),
        Duration::from_secs(10),
    );
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert_eq!(run.stdout, "hello\nwörld ✓\n", "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("closed: 1000"),
        "stderr:\n{}",
        run.stderr
    );
}

#[test]
fn binary_client_exits_when_stdin_ends_after_the_echoes() {
    let srv = BinServer::spawn(&[]);
    let run = client_session(
        &[&ws_url(srv.addr)],
        &["hello", "wörld ✓"],
        Duration::from_secs(5),
    );
    assert_eq!(run.code, Some(0), "stderr:\n{}", run.stderr);
    assert_eq!(run.stdout, "hello\nwörld ✓\n", "stderr:\n{}", run.stderr);
}

#[test]
fn binary_client_closed_port_exits_3() {
    let addr = closed_port();
    let run = client_piped(&[&ws_url(addr)], b"never sent\n", Duration::from_secs(15));
    assert_eq!(run.code, Some(3), "stderr:\n{}", run.stderr);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "expected one line on stderr, got:\n{}",
        run.stderr
    );
    assert!(lines[0].contains(&addr.to_string()), "{}", lines[0]);
    assert_eq!(run.stdout, "");
}

#[test]
fn binary_client_403_exits_3_naming_the_status() {
    let body = "forbidden\n";
    let resp = format!(
        "HTTP/1.1 403 Forbidden\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (addr, t) = raw_server(move |_| Some(resp.into_bytes()), Duration::ZERO);
    let run = client_piped(&[&ws_url(addr)], b"x\n", Duration::from_secs(15));
    assert_eq!(run.code, Some(3), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("403"),
        "stderr does not name 403:\n{}",
        run.stderr
    );
    let lines = run.stderr.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(
        lines, 1,
        "expected one line on stderr, got:\n{}",
        run.stderr
    );
    assert_eq!(run.stdout, "");
    t.join().unwrap();
}

#[test]
fn binary_client_bad_flag_value_exits_2() {
    let run = client_piped(
        &["--ping-interval", "abc", "ws://127.0.0.1:9/"],
        b"",
        Duration::from_secs(10),
    );
    assert_eq!(run.code, Some(2), "stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("--ping-interval") && run.stderr.contains("abc"),
        "stderr does not name the flag and value:\n{}",
        run.stderr
    );
    assert_eq!(run.stderr.lines().count(), 1, "stderr:\n{}", run.stderr);
    assert_eq!(run.stdout, "");
}
