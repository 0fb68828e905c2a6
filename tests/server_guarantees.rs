//! The server loop's guarantees at the edges (issue 15): a subprotocol the
//! client did not offer is refused, room membership ends with the
//! connection, the cross-thread `Handle` is bounded and cannot starve the
//! sockets, a panicking handler costs one connection, ids are unique across
//! servers, and the timer heap stays bounded under churn.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use wsloop::frame::OpCode;
use wsloop::handshake::Request;
use wsloop::server::{ConnId, Ctx, Handle, Handler, HttpResponse, Upgrade};
use wsloop::{CapacityError, CloseInfo, Config, Error, Message};

/// Echoes, and misbehaves on request: by upgrade path and by message text.
#[derive(Default, Clone)]
struct Edgy {
    opened: Arc<Mutex<Vec<ConnId>>>,
    closed: Arc<Mutex<Vec<(ConnId, CloseInfo)>>>,
    paths: Arc<Mutex<HashMap<ConnId, String>>>,
    messages: Arc<AtomicUsize>,
}

impl Edgy {
    fn opened(&self) -> Vec<ConnId> {
        self.opened.lock().unwrap().clone()
    }
    fn closed(&self) -> Vec<(ConnId, CloseInfo)> {
        self.closed.lock().unwrap().clone()
    }
}

impl Handler for Edgy {
    fn on_upgrade(&mut self, ctx: &mut Ctx<'_>, id: ConnId, req: &Request) -> Upgrade {
        self.paths.lock().unwrap().insert(id, req.path().to_owned());
        match req.path() {
            "/bad-protocol" => Upgrade::Accept {
                protocol: Some("nonsense".into()),
                headers: Vec::new(),
            },
            "/good-protocol" => Upgrade::Accept {
                protocol: req.protocols().next().map(str::to_owned),
                headers: Vec::new(),
            },
            "/join-then-reject" => {
                assert!(ctx.join(id, "lobby"), "join during on_upgrade");
                Upgrade::reject(403, "not today")
            }
            "/panic-upgrade" => panic!("on_upgrade blew up (on purpose)"),
            _ => Upgrade::accept(),
        }
    }

    fn on_http(&mut self, req: &Request) -> HttpResponse {
        if req.path() == "/panic" {
            panic!("on_http blew up (on purpose)");
        }
        HttpResponse::text(200, "ok\n")
    }

    fn on_open(&mut self, _ctx: &mut Ctx<'_>, id: ConnId) {
        self.opened.lock().unwrap().push(id);
        if self.paths.lock().unwrap().get(&id).map(String::as_str) == Some("/panic-open") {
            panic!("on_open blew up (on purpose)");
        }
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        self.messages.fetch_add(1, Ordering::SeqCst);
        if matches!(&msg, Message::Text(t) if t == "boom") {
            panic!("on_message blew up (on purpose)");
        }
        let _ = ctx.send(id, msg);
    }

    fn on_close(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, info: &CloseInfo) {
        self.closed.lock().unwrap().push((id, info.clone()));
        let path = self.paths.lock().unwrap().remove(&id);
        if path.as_deref() == Some("/panic-on-close") {
            panic!("on_close blew up (on purpose)");
        }
    }
}

/// Runs `f` on the loop thread and returns its result.
fn on_loop<T: Send + 'static>(
    handle: &Handle,
    f: impl FnOnce(&mut Ctx<'_>) -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    handle
        .run(move |ctx| {
            let _ = tx.send(f(ctx));
        })
        .expect("Handle::run");
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the loop did not run the closure")
}

/// Sends an upgrade request for `target` with `extra` header lines and
/// returns the status and head of the answer (without waiting for EOF).
fn upgrade_head(addr: SocketAddr, target: &str, extra: &str) -> (u16, String, TcpStream) {
    let mut s = tcp_connect(addr);
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("reading the answer to {target}: {e}"),
        }
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head, s)
}

fn echo_once(c: &mut TestClient, text: &str) {
    c.send_text(text);
    c.expect_text(text);
}

// 3b: the handler's subprotocol must be one the client offered.

#[test]
fn a_subprotocol_the_client_did_not_offer_is_refused_with_500() {
    let srv = start_server(Config::default(), Edgy::default());
    for extra in ["Sec-WebSocket-Protocol: chat, superchat\r\n", ""] {
        let (status, head, _s) = upgrade_head(srv.addr, "/bad-protocol", extra);
        assert_eq!(status, 500, "offered {extra:?}; got {head}");
        assert!(
            !head.to_ascii_lowercase().contains("nonsense"),
            "the unoffered protocol must not be sent: {head}"
        );
    }
    // Choosing an offered one still works.
    let (status, head, _s) = upgrade_head(
        srv.addr,
        "/good-protocol",
        "Sec-WebSocket-Protocol: superchat, chat\r\n",
    );
    assert_eq!(status, 101, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-protocol: superchat"),
        "{head}"
    );
}

// 7: room membership ends with the connection, on every path.

#[test]
fn rooms_joined_in_on_upgrade_are_left_when_the_upgrade_is_rejected() {
    let srv = start_server(Config::default(), Edgy::default());
    let (status, head, _s) = upgrade_head(srv.addr, "/join-then-reject", "");
    assert_eq!(status, 403, "{head}");
    let members = on_loop(&srv.handle, |ctx| ctx.room_members("lobby"));
    assert!(
        members.is_empty(),
        "a rejected connection stays in its room: {members:?}"
    );
}

#[test]
fn a_closed_connection_cannot_join_a_room() {
    let mut config = Config::default();
    // The failed connection waits (draining) for the peer's EOF.
    config.close_timeout = Duration::from_secs(60);
    let app = Edgy::default();
    let srv = start_server(config, app.clone());
    let mut c = connect(srv.addr);
    wait_until(Duration::from_secs(5), "the open", || {
        app.opened().len() == 1
    });
    let id = app.opened()[0];
    // An unmasked frame fails the connection (1002); the client keeps its
    // TCP side open, so the entry stays, draining.
    c.send_raw(&frame_bytes(OpCode::Text, b"x", true, false));
    assert_eq!(c.expect_close().0, Some(1002));
    wait_until(Duration::from_secs(5), "on_close", || {
        app.closed().len() == 1
    });
    let (joined, members) = on_loop(&srv.handle, move |ctx| {
        (ctx.join(id, "late"), ctx.room_members("late"))
    });
    assert!(!joined, "join of a closed connection must be refused");
    assert!(members.is_empty(), "{members:?}");
    drop(c);
}

// 8: the cross-thread handle is bounded and cannot starve the sockets.

#[test]
fn a_flooding_handle_sees_full_and_echoes_keep_flowing() {
    let app = Edgy::default();
    let srv = start_server(Config::default(), app.clone());
    let mut sink = connect(srv.addr);
    wait_until(Duration::from_secs(5), "the sink's open", || {
        app.opened().len() == 1
    });
    let target = app.opened()[0];
    let mut echo = connect(srv.addr);
    echo.set_timeout(Duration::from_secs(20));
    echo_once(&mut echo, "warm-up");

    // The sink reads (and drops) whatever the producer sends it.
    let received = Arc::new(AtomicUsize::new(0));
    let sink_sock = sink.stream.try_clone().unwrap();
    let sink_reader = {
        let received = received.clone();
        sink.set_timeout(Duration::from_secs(30));
        thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n @ 1..) = sink.stream.read(&mut buf) {
                received.fetch_add(n, Ordering::Relaxed);
            }
        })
    };

    // Stall the loop so the queue can only fill: the producer must be told
    // `Full` long before it has queued far more than the default limits.
    let (release_tx, release_rx) = mpsc::channel::<()>();
    srv.handle
        .run(move |_ctx| {
            let _ = release_rx.recv_timeout(Duration::from_secs(30));
        })
        .unwrap();
    let payload = vec![7u8; 16 * 1024];
    let mut queued = 0usize;
    let full = loop {
        match srv
            .handle
            .send(target, Message::Binary(payload.clone().into()))
        {
            Ok(()) => queued += payload.len(),
            Err(e) => break e,
        }
        assert!(
            queued <= 256 << 20,
            "queued {queued} bytes for a stalled loop and was never told Full"
        );
    };
    assert!(
        matches!(
            full,
            Error::Capacity(CapacityError::CommandQueueFull { .. })
        ),
        "{full}"
    );
    assert!(full.to_string().contains("queue"), "{full}");
    release_tx.send(()).unwrap();

    // Now flood for real (retrying on Full) while the client echoes.
    let stop = Arc::new(AtomicBool::new(false));
    let (fulls, sent) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let producer = {
        let (stop, fulls, sent, handle) = (
            stop.clone(),
            fulls.clone(),
            sent.clone(),
            srv.handle.clone(),
        );
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let r = if sent.load(Ordering::Relaxed) % 2 == 0 {
                    handle.send(target, Message::Binary(payload.clone().into()))
                } else {
                    // To every connection: the echo client skips these.
                    handle.broadcast(Message::Binary(vec![1u8; 16].into()))
                };
                match r {
                    Ok(()) => {
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(Error::Capacity(CapacityError::CommandQueueFull { .. })) => {
                        fulls.fetch_add(1, Ordering::Relaxed);
                        thread::yield_now();
                    }
                    Err(e) => panic!("producer: {e}"),
                }
            }
        })
    };
    for i in 0..50 {
        let text = format!("echo {i}");
        echo.send_text(&text);
        loop {
            match echo.recv_data() {
                Msg::Binary(b) if b == [1u8; 16] => continue,
                Msg::Text(t) => {
                    assert_eq!(t, text);
                    break;
                }
                other => panic!("echo {i}: got {other:?}"),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    assert!(sent.load(Ordering::Relaxed) > 0);
    assert!(received.load(Ordering::Relaxed) > 0, "the sink got nothing");
    let _ = sink_sock.shutdown(std::net::Shutdown::Both);
    let _ = sink_reader.join();
}

// 9: a panicking handler costs one connection, not the server.

#[test]
fn a_panic_in_on_message_closes_that_connection_with_1011_only() {
    let app = Edgy::default();
    let srv = start_server(Config::default(), app.clone());
    let mut good = connect(srv.addr);
    let mut bad = connect(srv.addr);
    echo_once(&mut good, "before");
    echo_once(&mut bad, "fine so far");
    bad.send_text("boom");
    let (code, reason) = bad.expect_close();
    assert_eq!(code, Some(1011), "{reason}");
    assert!(reason.contains("internal error"), "{reason}");
    // The other connection, and new ones, are served as before.
    echo_once(&mut good, "after");
    let mut late = connect(srv.addr);
    echo_once(&mut late, "hello");
    // Its close handshake completes as any other, and on_close is called.
    bad.close(1011, "");
    bad.expect_eof(Duration::from_secs(5));
    wait_until(Duration::from_secs(5), "on_close of the failed one", || {
        !app.closed().is_empty()
    });
    let closes = app.closed();
    assert_eq!(closes.len(), 1, "{closes:?}");
    assert_eq!(closes[0].1.code.0, 1011);
    echo_once(&mut good, "after the close");
}

#[test]
fn panics_in_other_callbacks_cost_one_request_or_connection() {
    let app = Edgy::default();
    let srv = start_server(Config::default(), app.clone());
    let mut good = connect(srv.addr);
    let (status, head, _s) = upgrade_head(srv.addr, "/panic-upgrade", "");
    assert_eq!(status, 500, "{head}");
    let reply = http_get(srv.addr, "/panic");
    assert_eq!(reply.status, 500);
    echo_once(&mut good, "still here");
    // In on_open: the 101 is out, then close 1011.
    let mut c = TestClient::connect_with(srv.addr, "/panic-open", &[]);
    let (code, reason) = c.expect_close();
    assert_eq!(code, Some(1011), "{reason}");
    echo_once(&mut good, "still here after on_open");
    // A panic in on_close: the connection was ending anyway.
    let c = TestClient::connect_with(srv.addr, "/panic-on-close", &[]);
    c.close_and_wait(1000);
    echo_once(&mut good, "still here after on_close");
    // A closure run from another thread that panics.
    srv.handle
        .run(|_ctx| panic!("Run closure blew up (on purpose)"))
        .unwrap();
    echo_once(&mut good, "still here after a Run closure");
}

// 10: ids are unique across the loops of one process.

#[test]
fn connection_ids_differ_across_servers() {
    let (a, b) = (Edgy::default(), Edgy::default());
    let sa = start_server(Config::default(), a.clone());
    let sb = start_server(Config::default(), b.clone());
    let _ca = connect(sa.addr);
    let _cb = connect(sb.addr);
    wait_until(Duration::from_secs(5), "both opens", || {
        a.opened().len() == 1 && b.opened().len() == 1
    });
    let (ia, ib) = (a.opened()[0], b.opened()[0]);
    assert_ne!(ia, ib, "the first connection of two servers");
    assert_ne!(ia.to_string(), ib.to_string());
    assert_ne!(ia.as_u64(), ib.as_u64());
    // An id from one server names nothing on the other.
    let sent = on_loop(&sb.handle, move |ctx| {
        ctx.send_text(ia, "wrong loop").is_ok()
    });
    assert!(!sent, "an id of server A reached a connection of server B");
}

// 11: the timer heap stays within a small multiple of the live entries.

#[test]
fn the_timer_heap_stays_bounded_under_connection_churn() {
    let mut config = Config::default();
    // Dead entries' timers would otherwise sit in the heap this long.
    config.handshake_timeout = Duration::from_secs(600);
    let srv = start_server(config, Edgy::default());
    let start = Instant::now();
    let mut worst = (0usize, 0usize);
    let mut total = 0;
    while total < 5000 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "only {total} connections in 120 s"
        );
        // Connections that never finish a handshake: each sets a timer.
        let batch: Vec<TcpStream> = (0..100).map(|_| tcp_connect(srv.addr)).collect();
        // A ping round trip over a real upgrade too, now and then.
        if total % 1000 == 0 {
            let mut c = connect(srv.addr);
            echo_once(&mut c, "churn");
            c.close_and_wait(1000);
        }
        drop(batch);
        total += 100;
        let (live, heap) = on_loop(&srv.handle, |ctx| ctx.debug_timer_counts());
        if heap > worst.1 {
            worst = (live, heap);
        }
        assert!(
            heap <= 3 * live + 256,
            "after {total} connections: {heap} timers for {live} live entries"
        );
    }
    wait_until(Duration::from_secs(10), "every entry gone", || {
        on_loop(&srv.handle, |ctx| ctx.debug_timer_counts()).0 == 0
    });
    let (live, heap) = on_loop(&srv.handle, |ctx| ctx.debug_timer_counts());
    assert!(heap <= 256, "{heap} timers left for {live} entries");
    eprintln!("worst: {} timers for {} live entries", worst.1, worst.0);
}
