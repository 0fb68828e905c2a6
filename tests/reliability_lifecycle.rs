//! Connection and process lifecycle under misbehaving peers: half-close
//! after a close frame, TCP resets in the middle of frames and of the
//! close handshake, close handshakes that never finish, peers that stop
//! reading forever, and SIGTERM with a thousand clients and messages in
//! flight or with every kind of stuck peer at once.
//!
//! tests/server_shutdown.rs covers SIGTERM with 50 clients and one whose
//! echoes wait in the server's queue, a client still sending, and one
//! peer that never reads; tests/server_limits.rs a server close that is
//! never answered.

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use wsloop::frame::OpCode;
use wsloop::server::{ConnId, Ctx, Handler};
use wsloop::{CloseCode, CloseInfo, Config, Message};

/// Echoes; closes with 4000 on "bye"; on "sleep", blocks the loop until
/// the test releases it (see `stall_loop`); records every close and when.
#[derive(Clone, Default)]
struct Life {
    closes: Arc<Mutex<Vec<(Instant, CloseInfo)>>>,
    messages: Arc<AtomicUsize>,
    /// (the loop is blocked in "sleep", the test released it)
    stall: Arc<(Mutex<(bool, bool)>, Condvar)>,
}

impl Life {
    /// Lets a loop blocked by "sleep" go on.
    fn release(&self) {
        let (m, cv) = &*self.stall;
        m.lock().unwrap().1 = true;
        cv.notify_all();
    }

    fn closes(&self) -> Vec<CloseInfo> {
        self.closes
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.1.clone())
            .collect()
    }
}

impl Handler for Life {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        self.messages.fetch_add(1, Ordering::SeqCst);
        if matches!(&msg, Message::Text(t) if t == "bye") {
            ctx.close(id, CloseCode(4000), "bye");
            return;
        }
        if matches!(&msg, Message::Text(t) if t == "sleep") {
            // Blocks the loop on purpose (see `stall_loop`), 20 s at most.
            let (m, cv) = &*self.stall;
            let mut st = m.lock().unwrap();
            st.0 = true;
            cv.notify_all();
            st = cv
                .wait_timeout_while(st, Duration::from_secs(20), |st| !st.1)
                .unwrap()
                .0;
            *st = (false, false);
            drop(st);
            let _ = ctx.send_text(id, "slept");
            return;
        }
        let _ = ctx.send(id, msg);
    }
    fn on_close(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, info: &CloseInfo) {
        self.closes
            .lock()
            .unwrap()
            .push((Instant::now(), info.clone()));
    }
}

fn close_frame(code: u16) -> Vec<u8> {
    frame_bytes(OpCode::Close, &close_payload(code, ""), true, true)
}

/// Blocks the loop (a handler that waits for `Life::release`), so that
/// what a test sends meanwhile arrives in one batch: the close frame and
/// the FIN after it are then seen by the same readiness event.
fn stall_loop(busy: &mut TestClient, life: &Life) {
    busy.send_text("sleep");
    let (m, cv) = &*life.stall;
    let st = cv
        .wait_timeout_while(m.lock().unwrap(), Duration::from_secs(10), |st| !st.0)
        .unwrap()
        .0;
    assert!(st.0, "the loop did not start the sleep within 10 s");
}

/// Waits until the server's side of `c` has both the close frame (unread
/// bytes) and the FIN (CLOSE_WAIT) waiting for it.
fn wait_close_and_fin_queued(port: u16, c: &TestClient) {
    let ours = c.stream.local_addr().unwrap().port();
    wait_until(
        Duration::from_secs(10),
        "the close frame and the FIN at the server",
        || {
            tcp_sockets(port)
                .iter()
                .any(|s| s.peer_port == ours && s.state == TCP_CLOSE_WAIT && s.rx > 0)
        },
    );
}

/// The client sends its close frame and at once shuts down its sending
/// side (TCP half-close), as some clients do. It can still read: the
/// server's close reply must reach it, then EOF, and the close is clean.
/// (The loop is stalled until both are at the server, so that they are
/// read in one go, as happens under load.)
#[test]
fn half_close_right_after_the_close_frame() {
    let life = Life::default();
    let srv = start_server(Config::default(), life.clone());
    let mut busy = connect(srv.addr);
    let mut c = connect(srv.addr);
    c.send_text("hello");
    c.expect_text("hello");
    stall_loop(&mut busy, &life);
    c.send_raw(&close_frame(1000));
    half_close(&c.stream);
    wait_close_and_fin_queued(srv.addr.port(), &c);
    life.release();
    match c.try_recv() {
        Ok(Some(Msg::Close(Some(1000), _))) => {}
        other => panic!("no close reply after close + half-close: {other:?}"),
    }
    c.expect_eof(Duration::from_secs(10));
    wait_until(Duration::from_secs(10), "on_close", || {
        life.closes().len() == 1
    });
    let info = &life.closes()[0];
    assert!(info.clean && info.code == CloseCode::NORMAL, "{info:?}");
    busy.expect_text("slept");
    busy.close_and_wait(1000);
}

/// The same while the server still has a 2 MiB echo queued for the peer:
/// the echo (accepted before the close) is delivered whole, then the
/// close reply.
#[test]
fn half_close_after_close_with_an_echo_still_queued() {
    let life = Life::default();
    let srv = start_server(Config::default(), life.clone());
    let mut busy = connect(srv.addr);
    let mut c = connect(srv.addr);
    let big = pattern(2 << 20, 5);
    c.send_binary(&big);
    // Wait until the server has read it all and queued the echo.
    wait_until(Duration::from_secs(5), "the message to be handled", || {
        life.messages.load(Ordering::SeqCst) == 1
    });
    stall_loop(&mut busy, &life);
    c.send_raw(&close_frame(1000));
    half_close(&c.stream);
    wait_close_and_fin_queued(srv.addr.port(), &c);
    life.release();
    c.expect_binary(&big);
    match c.try_recv() {
        Ok(Some(Msg::Close(Some(1000), _))) => {}
        other => panic!("no close reply: {other:?}"),
    }
    c.expect_eof(Duration::from_secs(10));
    wait_until(Duration::from_secs(10), "on_close", || {
        life.closes().len() == 1
    });
    assert!(life.closes()[0].clean, "{:?}", life.closes());
    busy.expect_text("slept");
    busy.close_and_wait(1000);
}

/// The server closes; the client answers and half-closes at once. The
/// server finishes promptly (not at close-timeout, 60 s) and reports a
/// clean close with its code.
#[test]
fn server_close_answered_then_half_close_is_prompt_and_clean() {
    let life = Life::default();
    let mut cfg = Config::default();
    cfg.close_timeout = Duration::from_secs(60);
    let srv = start_server(cfg, life.clone());
    let mut c = connect(srv.addr);
    c.send_text("bye");
    assert_eq!(c.expect_close(), (Some(4000), "bye".to_owned()));
    let t = Instant::now();
    c.send_raw(&close_frame(4000));
    half_close(&c.stream);
    c.expect_eof(Duration::from_secs(10));
    wait_until(Duration::from_secs(10), "on_close", || {
        life.closes().len() == 1
    });
    let (at, info) = life.closes.lock().unwrap()[0].clone();
    assert!(info.clean && info.code.0 == 4000, "{info:?}");
    assert!(
        at.saturating_duration_since(t) < Duration::from_secs(10),
        "on_close {:?} after the answer",
        at.saturating_duration_since(t)
    );
}

/// Resets (RST) in the middle of a frame, of a fragmented message, of a
/// large echo being written, and of the server's close handshake: each is
/// reported once as 1006, not clean; the server goes on serving.
#[test]
fn tcp_reset_mid_frame_and_mid_close() {
    let life = Life::default();
    let srv = start_server(Config::default(), life.clone());
    let a = srv.addr;
    let mut bystander = connect(a);

    let upgrade = |extra: &[u8]| {
        let (_, req) = upgrade_request(a, "/");
        let mut s = connect_and_wait_reply(a, &req);
        // The 101 stays unread, so that closing resets.
        if !extra.is_empty() {
            s.write_all(extra).unwrap();
        }
        s
    };
    let half_frame = frame_bytes(OpCode::Binary, &pattern(64 << 10, 1), true, true);
    let s1 = upgrade(&half_frame[..30_000]);
    let s2 = upgrade(&frame_bytes(OpCode::Text, b"first fragment ", false, true));
    // A whole 600 KiB message: its echo is being written when we reset.
    let s3 = upgrade(&frame_bytes(
        OpCode::Binary,
        &pattern(600 << 10, 2),
        true,
        true,
    ));
    // Server-initiated close, then reset instead of answering.
    let s4 = upgrade(&frame_bytes(OpCode::Text, b"bye", true, true));
    // The server has read (and so handled) what each sent.
    wait_until(
        Duration::from_secs(10),
        "the server to read what the four sent",
        || server_socket_queues(a.port()).iter().all(|q| q.0 == 0),
    );
    for s in [s1, s2, s3, s4] {
        close_with_rst(s);
    }
    wait_until(Duration::from_secs(10), "four on_close", || {
        life.closes().len() == 4
    });
    thread::sleep(Duration::from_millis(200));
    let closes = life.closes();
    assert_eq!(
        closes.len(),
        4,
        "on_close called more than once: {closes:?}"
    );
    for info in &closes {
        assert!(!info.clean, "{info:?}");
        assert_eq!(info.code, CloseCode::ABNORMAL, "{info:?}");
    }
    bystander.send_text("unaffected");
    bystander.expect_text("unaffected");
    bystander.close_and_wait(1000);
}

/// Close handshakes that never end: each connection is let go at
/// close-timeout (500 ms; well before the 5 s default), fds and all,
/// while the peer keeps its socket:
/// - the peer's close was answered, but it never closes TCP;
/// - the peer sent close, then keeps sending data frames;
/// - the server closed, the peer keeps sending data and never answers.
#[test]
fn close_handshakes_that_never_end_are_cut_at_close_timeout() {
    let srv = BinServer::spawn(&["--close-timeout", "500ms"]);
    let base = srv.fds();
    let mut a = connect(srv.addr);
    a.send_raw(&close_frame(1000));
    assert_eq!(a.expect_close().0, Some(1000));
    // The server closes TCP first (its FIN), and we keep ours open.
    a.expect_eof(Duration::from_secs(4));

    let mut b = connect(srv.addr);
    b.send_raw(&close_frame(1000));
    let mut bw = b.stream.try_clone().unwrap();
    let chatter = thread::spawn(move || {
        let f = frame_bytes(OpCode::Text, b"after my close", true, true);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if bw.write_all(&f).is_err() {
                return t.elapsed();
            }
            thread::sleep(Duration::from_millis(20));
        }
        t.elapsed()
    });

    // Under the 5 s default: the configured 500 ms applies.
    let t = Instant::now();
    wait_until(
        Duration::from_secs(4),
        "fds back after the close timeouts",
        || srv.fds() <= base,
    );
    eprintln!("both let go {:?} after the close", t.elapsed());
    let chatted = chatter.join().unwrap();
    eprintln!("data after close refused after {chatted:?}");
    assert!(
        chatted < Duration::from_secs(10),
        "the server kept reading data after close"
    );
    drop((a, b));
    srv.assert_no_panic();
}

/// A peer that floods and never reads is paused (not read); it cannot
/// hold its slot and buffers forever: the heartbeat (ping, then
/// pong-timeout) drops it even though it never goes quiet on its side,
/// and its fd is gone after close-timeout more.
#[test]
fn a_peer_that_never_reads_is_dropped_by_the_heartbeat() {
    let srv = BinServer::spawn(&[
        "--ping-interval",
        "300ms",
        "--pong-timeout",
        "300ms",
        "--write-high",
        "256K",
        "--write-limit",
        "1M",
        "--close-timeout",
        "500ms",
    ]);
    let base = srv.fds();
    let c = connect(srv.addr);
    let inode = srv.server_side_inode(&c.stream);
    assert!(srv.socket_inodes().contains(&inode), "server side {inode}");
    let mut w = c.stream.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let f = frame_bytes(OpCode::Binary, &pattern(64 << 10, 3), true, true);
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(20) {
            if w.write_all(&f).is_err() {
                return true;
            }
        }
        false
    });
    let t = Instant::now();
    wait_until(
        Duration::from_secs(10),
        "the non-reader to be dropped",
        || !srv.socket_inodes().contains(&inode),
    );
    eprintln!("non-reader dropped after {:?}", t.elapsed());
    assert!(srv.fds() <= base, "{} fds, {base} before", srv.fds());
    drop(c);
    assert!(writer.join().unwrap(), "the writer was never cut off");
    srv.assert_no_panic();
}

/// SIGTERM with 1,000 small clients and 5 heavy ones whose echoes (10 MiB
/// each, never read before the signal; loopback socket buffers take about
/// 5 MiB of that) are still queued in the server: every message the
/// server had read before the signal is delivered, in order, then close
/// 1001; the process exits 0 as soon as all have answered, well before
/// its 60 s shutdown timeout. (write-high is raised so the server reads
/// the heavy clients whole before the signal.)
#[test]
fn sigterm_with_1000_clients_and_messages_in_flight() {
    const SMALL: usize = 1000;
    const HEAVY: usize = 5;
    const M: usize = 5;
    const HEAVY_MSGS: usize = 160;
    const HEAVY_SIZE: usize = 64 << 10;
    let mut srv = BinServer::spawn(&[
        "--shutdown-timeout",
        "60s",
        "--write-high",
        "16M",
        "--write-limit",
        "64M",
    ]);
    let port = srv.addr.port();
    let msg = |i: usize, j: usize| format!("client {i} message {j} {}", "m".repeat(50 + j));
    let heavy_msg = |i: usize, j: usize| {
        let mut v = pattern(HEAVY_SIZE, (i * 31 + j) as u8);
        v[..16].copy_from_slice(&[(i as u64).to_be_bytes(), (j as u64).to_be_bytes()].concat());
        v
    };
    let mut small: Vec<TestClient> = Vec::with_capacity(SMALL);
    for i in 0..SMALL {
        let mut c = connect(srv.addr);
        let mut bytes = Vec::new();
        for j in 0..M {
            bytes.extend(frame_bytes(OpCode::Text, msg(i, j).as_bytes(), true, true));
        }
        c.send_raw(&bytes);
        small.push(c);
    }
    let mut heavy: Vec<TestClient> = Vec::with_capacity(HEAVY);
    for i in 0..HEAVY {
        let mut c = connect(srv.addr);
        let mut w = c.stream.try_clone().unwrap();
        for j in 0..HEAVY_MSGS {
            w.write_all(&frame_bytes(OpCode::Binary, &heavy_msg(i, j), true, true))
                .unwrap();
        }
        c.set_timeout(Duration::from_secs(10));
        heavy.push(c);
    }
    // Everything we sent has been read by the server (nothing unread on
    // its side): each echo is accepted, queued or written.
    wait_until(
        Duration::from_secs(20),
        "the server to read everything",
        || {
            let q = server_socket_queues(port);
            q.len() >= SMALL + HEAVY && q.iter().all(|&(rx, _)| rx == 0)
        },
    );
    let total: u64 = (SMALL * (0..M).map(|j| 2 + msg(0, j).len()).sum::<usize>()
        + HEAVY * HEAVY_MSGS * (HEAVY_SIZE + 10)) as u64;
    let at_peers: u64 = peer_socket_queues(port).iter().map(|q| q.0).sum();
    let in_server_kernel: u64 = server_socket_queues(port).iter().map(|q| q.1).sum();
    eprintln!(
        "at the signal: {} KiB of echoes owed; {} KiB at the clients, {} KiB in the server's \
         socket buffers, the rest ({} KiB) queued in the server",
        total >> 10,
        at_peers >> 10,
        in_server_kernel >> 10,
        total.saturating_sub(at_peers + in_server_kernel) >> 10
    );
    assert!(
        at_peers + in_server_kernel < total,
        "every echo had left the server before the signal: nothing in flight to test"
    );

    let t = Instant::now();
    srv.signal("TERM");
    for (i, c) in heavy.iter_mut().enumerate() {
        for j in 0..HEAVY_MSGS {
            let want = heavy_msg(i, j);
            match c.recv_data() {
                Msg::Binary(b) => assert!(b == want, "heavy client {i}: echo {j} wrong"),
                other => panic!("heavy client {i}: echo {j}: {other:?}"),
            }
        }
        let (code, reason) = c.expect_close();
        assert_eq!(code, Some(1001), "heavy client {i}: {reason}");
        c.send_raw(&close_frame(1001));
    }
    for (i, c) in small.iter_mut().enumerate() {
        for j in 0..M {
            c.expect_text(&msg(i, j));
        }
        let (code, reason) = c.expect_close();
        assert_eq!(code, Some(1001), "client {i}: {reason}");
        c.send_raw(&close_frame(1001));
    }
    for mut c in small.into_iter().chain(heavy) {
        c.expect_eof(Duration::from_secs(5));
    }
    let status = srv.wait_exit(Duration::from_secs(40));
    let took = t.elapsed();
    let log = srv.log_text();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} {took:?} after SIGTERM (deadline 60 s); log:\n{log}"
    );
    eprintln!("1,005 clients drained and closed; exit 0 {took:?} after SIGTERM");
    assert!(!log.contains("panicked"), "{log}");
}

/// SIGTERM while every kind of stuck peer is connected: one that never
/// reads (queue full), one that stopped mid-frame, one mid-handshake, one
/// that answered the close but never closes TCP, one that shut its
/// receive window and sent a close. The well-behaved client is closed with
/// 1001 and let go while the others still hold the process; the process
/// exits 0 at --shutdown-timeout (4 s), not before (it waits for them),
/// and not much later.
#[test]
fn sigterm_with_stuck_peers_honours_the_deadline() {
    const DEADLINE: Duration = Duration::from_secs(4);
    let mut srv = BinServer::spawn(&[
        "--shutdown-timeout",
        "4s",
        "--close-timeout",
        "60s",
        "--handshake-timeout",
        "60s",
        "--write-high",
        "256K",
        "--write-limit",
        "1M",
    ]);
    let a = srv.addr;
    let mut good = connect(a);
    // Never reads, floods.
    let flooder = connect(a);
    let mut fw = flooder.stream.try_clone().unwrap();
    let flood = thread::spawn(move || {
        let f = frame_bytes(OpCode::Binary, &pattern(64 << 10, 4), true, true);
        while fw.write_all(&f).is_ok() {}
    });
    // Stopped in the middle of a frame.
    let mut midframe = connect(a);
    let f = frame_bytes(OpCode::Binary, &pattern(10_000, 5), true, true);
    midframe.send_raw(&f[..5000]);
    // In its handshake.
    let mut handshaking = tcp_connect(a);
    handshaking
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        .unwrap();
    // Will answer the close, then keep TCP open.
    let mut keeper = connect(a);
    // Shut its receive side (reads nothing more), sent a close.
    let mut deaf = connect(a);
    deaf.send_raw(&close_frame(1000));
    let _ = deaf.stream.shutdown(Shutdown::Read);
    wait_until(Duration::from_secs(5), "the flooder to be paused", || {
        server_socket_queues(a.port()).iter().any(|q| q.0 > 0)
    });

    let t = Instant::now();
    srv.signal("TERM");
    assert_eq!(good.expect_close().0, Some(1001));
    good.send_raw(&close_frame(1001));
    good.expect_eof(Duration::from_secs(10));
    assert!(
        srv.child.try_wait().unwrap().is_none(),
        "the good client was let go only when the process exited ({:?} after SIGTERM)",
        t.elapsed()
    );
    assert_eq!(keeper.expect_close().0, Some(1001));
    keeper.send_raw(&close_frame(1001));
    let status = srv.wait_exit(DEADLINE + Duration::from_secs(10));
    let took = t.elapsed();
    let log = srv.log_text();
    assert!(
        status.is_some(),
        "no exit {:?} after SIGTERM; log:\n{log}",
        took
    );
    assert!(status.unwrap().success(), "exit {status:?}; log:\n{log}");
    eprintln!("exit 0 {took:?} after SIGTERM with stuck peers");
    assert!(
        took >= DEADLINE - Duration::from_millis(300),
        "exited after {took:?}, before the deadline, with the flooder's queue unsent"
    );
    assert!(
        took < DEADLINE + Duration::from_secs(10),
        "exit after {took:?}"
    );
    // The mid-frame peer got its close too.
    assert_eq!(midframe.expect_close().0, Some(1001));
    let mut raw = Vec::new();
    assert!(read_until_eof(
        &mut handshaking,
        Duration::from_secs(10),
        &mut raw
    ));
    drop((flooder, keeper, deaf));
    flood.join().unwrap();
}
