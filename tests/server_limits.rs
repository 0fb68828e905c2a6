//! Limits and timers over real sockets: backpressure and the overflow
//! policy, handshake timeout, heartbeat, idle timeout, max_connections,
//! and the close codes for oversized, non-UTF-8 and unmasked input. The
//! streaming app is `Pusher` (tests/common/pusher.rs).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use wsloop::frame::OpCode;
use wsloop::{CloseCode, Config, OverflowPolicy};

/// Another client is echoed while one connection is stalled (the caller
/// keeps it stalled until this returns: a loop tied up by it fails here).
fn check_other_client_is_served(addr: std::net::SocketAddr) -> TestClient {
    let mut other = connect(addr);
    other.set_timeout(Duration::from_secs(10));
    for i in 0..5 {
        other.send_text(&format!("are you there {i}"));
        other.expect_text(&format!("are you there {i}"));
    }
    other.set_timeout(READ_TIMEOUT);
    other
}

/// A streaming app: sends until `Full`, resumes in `on_drain`. A send
/// that returned `Full` must lead to `on_drain` once the queue is written
/// out, however it is written (even in one go into the socket buffers),
/// or the stream stalls for good after the first `Full`.
#[test]
fn backpressure_full_then_drain() {
    // 16 MiB: well above what loopback socket buffers of a non-reading
    // peer absorb (the receive buffer only grows when the peer reads).
    const TOTAL: usize = 256;
    let (h, stats) = Pusher::new();
    let cfg = small_queue_config(OverflowPolicy::Close(CloseCode::POLICY));
    let (limit, low) = (cfg.write_buffer_limit, cfg.write_buffer_low);
    let srv = start_server(cfg, h);

    let mut flood = connect(srv.addr);
    flood.send_text(&format!("flood {TOTAL}"));

    // The stream stalls: the kernel buffers fill, then the queue passes
    // the high water mark and the handler stops at `Full`.
    wait_until(Duration::from_secs(20), "a send refused with Full", || {
        stats.full.load(Ordering::SeqCst) >= 1
    });
    let stalled_at = wait_stall(&stats.accepted, Duration::from_secs(20));
    eprintln!(
        "stalled after {stalled_at} of {TOTAL} messages ({} KiB)",
        (stalled_at * CHUNK) >> 10
    );
    assert!(
        stalled_at < TOTAL,
        "the non-reading client absorbed everything: test cannot see backpressure"
    );
    assert!(
        stats.full.load(Ordering::SeqCst) >= 1,
        "no send reported Full"
    );
    assert_eq!(stats.errors.load(Ordering::SeqCst), 0);
    // A stall is only right while the queue is above the low water mark:
    // once it is below, the app must have been told (on_drain).
    let id = stats.opened.lock().unwrap()[0];
    let (tx, rx) = std::sync::mpsc::channel();
    srv.handle
        .run(move |ctx| tx.send(ctx.buffered(id)).unwrap())
        .unwrap();
    let queued = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap()
        .expect("flood connection open");
    assert!(
        queued > low || stats.drains.load(Ordering::SeqCst) > 0,
        "stream stalled after a Full send, yet the queue is {queued} bytes (low water mark {low}) \
         and on_drain was never called"
    );

    let other = check_other_client_is_served(srv.addr);

    // The flood client resumes reading: everything arrives in order and
    // on_drain restarted the stream.
    flood.set_timeout(Duration::from_secs(3));
    let drains_before = stats.drains.load(Ordering::SeqCst);
    flood.expect_numbered(0, TOTAL, CHUNK);
    assert!(
        stats.drains.load(Ordering::SeqCst) > drains_before,
        "on_drain was not called after the client resumed reading"
    );
    let max = stats.max_buffered.load(Ordering::SeqCst);
    eprintln!(
        "max buffered {max}, drains {}",
        stats.drains.load(Ordering::SeqCst)
    );
    stats.assert_queue_bounded(limit);
    assert_eq!(stats.errors.load(Ordering::SeqCst), 0);

    // The connection is still fine.
    flood.set_timeout(READ_TIMEOUT);
    flood.send_text("done?");
    flood.expect_text("done?");
    flood.close_and_wait(1000);
    other.close_and_wait(1000);
}

/// An echo peer that sends 16 MiB without reading: the server stops
/// reading it once its queue passes the high water mark, memory stays
/// bounded, others are served, and when the peer reads again everything
/// comes back in order and `on_drain` is called.
fn echo_to_a_peer_that_does_not_read(limit: usize) {
    const TOTAL: usize = 256;
    let (h, stats) = Pusher::new();
    let mut cfg = small_queue_config(OverflowPolicy::Close(CloseCode::POLICY));
    cfg.write_buffer_limit = limit;
    let high = cfg.write_buffer_high;
    let srv = start_server(cfg, h);

    let mut c = connect(srv.addr);
    let mut w = c.stream.try_clone().unwrap();
    let writer = thread::spawn(move || {
        use std::io::Write;
        for i in 0..TOTAL {
            w.write_all(&frame_bytes(OpCode::Binary, &Pusher::chunk(i), true, true))?;
        }
        Ok::<_, std::io::Error>(())
    });

    // (A stall is only looked for once a send was refused: a loop that is
    // merely slow on a busy machine is not a stall.)
    wait_until(Duration::from_secs(20), "a send refused with Full", || {
        stats.full.load(Ordering::SeqCst) >= 1
    });
    let stalled_at = wait_stall(&stats.accepted, Duration::from_secs(20));
    eprintln!("echo stalled after {stalled_at} of {TOTAL} messages");
    assert!(
        stalled_at < TOTAL,
        "everything was echoed into socket buffers: no backpressure seen"
    );
    assert!(!writer.is_finished(), "the writer was not held back");
    assert!(
        stats.full.load(Ordering::SeqCst) >= 1,
        "no send reported Full"
    );
    let drains_before = stats.drains.load(Ordering::SeqCst);

    let other = check_other_client_is_served(srv.addr);

    c.set_timeout(Duration::from_secs(5));
    c.expect_numbered(0, TOTAL, CHUNK);
    writer.join().unwrap().expect("writer");
    let max = stats.max_buffered.load(Ordering::SeqCst);
    let drains = stats.drains.load(Ordering::SeqCst);
    eprintln!(
        "max buffered {} KiB (high {} KiB), drains {drains_before} before reading, {drains} after",
        max >> 10,
        high >> 10
    );
    stats.assert_queue_bounded(limit);
    assert!(
        drains > drains_before,
        "on_drain was not called after the peer resumed reading"
    );
    assert_eq!(stats.errors.load(Ordering::SeqCst), 0, "a send failed");
    assert!(stats.closes().is_empty(), "closed: {:?}", stats.closes());
    c.close_and_wait(1000);
    other.close_and_wait(1000);
}

#[test]
fn backpressure_echo_to_a_peer_that_does_not_read() {
    echo_to_a_peer_that_does_not_read(8 << 20);
}

/// The same with write_buffer_limit 1 MiB (4 x high): reading is paused
/// above high as soon as the queue passes it, within the loop turn that
/// read the messages, so an echo can never get near the limit (a pause
/// decided only when the queue is flushed lets one turn read and echo
/// several MiB, and the peer is closed with 1008).
#[test]
fn backpressure_read_pause_holds_queue_near_high_water_mark() {
    echo_to_a_peer_that_does_not_read(1 << 20);
}

#[test]
fn overflow_close_policy() {
    const BURST: usize = 40; // 2.5 MiB in one callback, limit 1 MiB
    let (h, stats) = Pusher::new();
    let cfg = small_queue_config(OverflowPolicy::Close(CloseCode::POLICY));
    let limit = cfg.write_buffer_limit;
    let srv = start_server(cfg, h);
    let mut c = connect(srv.addr);
    c.send_text(&format!("burst {BURST}"));
    // Do not read until the burst is over.
    let accepted = stats.expect_burst_cut_at_limit(BURST, limit);

    // What was queued before the overflow arrives, then close 1008.
    c.expect_numbered(0, accepted, CHUNK);
    let (code, reason) = c.expect_close();
    assert_eq!(code, Some(1008), "reason {reason:?}");
    c.expect_eof(Duration::from_secs(10));
    wait_until(Duration::from_secs(10), "on_close", || {
        !stats.closes().is_empty()
    });
    assert_eq!(stats.closes()[0].code, CloseCode::POLICY);
}

#[test]
fn overflow_drop_policy() {
    const BURST: usize = 40;
    let (h, stats) = Pusher::new();
    let cfg = small_queue_config(OverflowPolicy::Drop);
    let limit = cfg.write_buffer_limit;
    let srv = start_server(cfg, h);
    let mut c = connect(srv.addr);
    c.send_text(&format!("burst {BURST}"));
    let accepted = stats.wait_burst(BURST);
    let dropped = stats.errors.load(Ordering::SeqCst);
    eprintln!("accepted {accepted}, dropped {dropped}");
    assert!(dropped > 0 && accepted < BURST, "nothing was dropped");
    stats.assert_queue_bounded(limit);

    // The accepted messages arrive; the dropped ones do not; the
    // connection stays open and usable.
    c.expect_numbered(0, accepted, CHUNK);
    c.send_text("still open");
    c.expect_text("still open");
    assert!(
        stats.closes().is_empty(),
        "connection was closed: {:?}",
        stats.closes()
    );
    // Once drained, a burst under the limit goes through whole.
    stats.accepted.store(0, Ordering::SeqCst);
    c.send_text("burst 4");
    c.expect_numbered(0, 4, CHUNK);
    c.close_and_wait(1000);
}

#[test]
fn handshake_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let mut cfg = Config::default();
    cfg.handshake_timeout = TIMEOUT;
    let (h, stats) = Pusher::new();
    let srv = start_server(cfg, h);

    // Before the connects, so before the accepts that start the timers.
    let t = Instant::now();
    let half = tcp_connect(srv.addr);
    let silent = tcp_connect(srv.addr);
    {
        use std::io::Write;
        (&half)
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
            .unwrap();
    }
    for (name, mut s) in [("half request", half), ("silent", silent)] {
        let mut raw = Vec::new();
        let eof = read_until_eof(&mut s, Duration::from_secs(10), &mut raw);
        let took = t.elapsed();
        assert!(
            eof,
            "{name}: not closed within 10 s (handshake timeout {TIMEOUT:?}; got {:?})",
            String::from_utf8_lossy(&raw)
        );
        assert!(took >= TIMEOUT, "{name}: closed too early, after {took:?}");
        if !raw.is_empty() {
            assert_eq!(parse_http(&raw).status, 408, "{name}");
        }
    }
    assert!(stats.opened.lock().unwrap().is_empty());
    // A prompt client is unaffected, however long it then waits.
    let mut c = connect(srv.addr);
    thread::sleep(TIMEOUT + Duration::from_millis(200));
    c.send_text("after the handshake timeout");
    c.expect_text("after the handshake timeout");
    c.close_and_wait(1000);
}

/// A peer that reads but never answers pings is dropped, not before
/// ping_interval + pong_timeout; one that answers (connected earlier, so
/// its timers would run out first) outlives it. The pong timeout is long
/// (2 s) so that a busy machine cannot make the answering peer late.
#[test]
fn heartbeat_drops_a_peer_that_does_not_pong() {
    const INTERVAL: Duration = Duration::from_millis(250);
    const PONG: Duration = Duration::from_secs(2);
    let mut cfg = Config::default();
    cfg.ping_interval = Some(INTERVAL);
    cfg.pong_timeout = PONG;
    cfg.idle_timeout = None;
    let (h, stats) = Pusher::new();
    let srv = start_server(cfg, h);

    // A peer that answers every ping, on its own thread, until the silent
    // one has been dropped.
    let addr = srv.addr;
    let dropped = Arc::new(AtomicBool::new(false));
    let (open_tx, open_rx) = mpsc::channel();
    let good = {
        let dropped = dropped.clone();
        thread::spawn(move || {
            let mut c = connect(addr);
            open_tx.send(()).unwrap();
            c.set_timeout(Duration::from_millis(50));
            let start = Instant::now();
            let mut pings = 0;
            while pings < 3 || !dropped.load(Ordering::SeqCst) {
                match c.try_recv() {
                    Ok(Some(Msg::Ping(p))) => {
                        pings += 1;
                        c.pong(&p);
                    }
                    Ok(Some(other)) => panic!("answering peer got {other:?}"),
                    Ok(None) => panic!(
                        "answering peer was disconnected after {:?}, {pings} pings",
                        start.elapsed()
                    ),
                    Err(e) if is_timeout(&e) => {}
                    Err(e) => panic!("answering peer: {e}"),
                }
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "answering peer: {pings} pings, silent peer not dropped, in 30 s"
                );
            }
            c.set_timeout(READ_TIMEOUT);
            c.send_text("still here");
            c.expect_text("still here");
            c.close_and_wait(1000);
            pings
        })
    };
    open_rx
        .recv_timeout(READ_TIMEOUT)
        .expect("answering peer open");

    // A peer that reads but never answers pings. (The time is taken before
    // its connect, so before the server's timers for it start.)
    let start = Instant::now();
    let mut bad = connect(srv.addr);
    bad.set_timeout(Duration::from_secs(10));
    let mut pings = 0;
    loop {
        match bad.try_recv() {
            Ok(Some(Msg::Ping(_))) => pings += 1,
            Ok(Some(other)) => panic!("silent peer got {other:?}"),
            Ok(None) => break,
            Err(e) => panic!("silent peer: no EOF ({e}) after {:?}", start.elapsed()),
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "silent peer still connected after 20 s ({pings} pings)"
        );
    }
    let took = start.elapsed();
    dropped.store(true, Ordering::SeqCst);
    eprintln!("silent peer dropped after {took:?} ({pings} ping)");
    assert!(pings >= 1, "no ping before the drop");
    assert!(
        took >= INTERVAL + PONG,
        "dropped after {took:?}, before ping_interval + pong_timeout"
    );

    let good_pings = good.join().expect("answering peer");
    assert!(good_pings >= 3, "answering peer saw {good_pings} pings");
    let closes = stats.closes();
    assert_eq!(closes.len(), 2, "{closes:?}");
    assert!(
        closes
            .iter()
            .any(|c| c.code == CloseCode::ABNORMAL && !c.clean),
        "silent peer's close info: {closes:?}"
    );
}

/// An idle connection is closed with 1001, not before idle_timeout; one
/// that sends every 100 ms (connected earlier, so its timer would run out
/// first) is still open afterwards.
#[test]
fn idle_timeout_closes_with_1001() {
    const IDLE: Duration = Duration::from_millis(1500);
    let mut cfg = Config::default();
    cfg.idle_timeout = Some(IDLE);
    cfg.ping_interval = None;
    let (h, stats) = Pusher::new();
    let srv = start_server(cfg, h);

    let addr = srv.addr;
    let idle_closed = Arc::new(AtomicBool::new(false));
    let (open_tx, open_rx) = mpsc::channel();
    let busy = {
        let idle_closed = idle_closed.clone();
        thread::spawn(move || {
            // Never idle: sends every 100 ms until the idle one is closed.
            let mut c = connect(addr);
            open_tx.send(()).unwrap();
            let mut i = 0;
            while !idle_closed.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(100));
                c.send_text(&format!("tick {i}"));
                c.expect_text(&format!("tick {i}"));
                i += 1;
            }
            c.send_text("after the idle one");
            c.expect_text("after the idle one");
            c.close_and_wait(1000);
        })
    };
    open_rx
        .recv_timeout(READ_TIMEOUT)
        .expect("busy client open");

    let start = Instant::now();
    let mut idle = connect(srv.addr);
    idle.set_timeout(Duration::from_secs(10));
    let (code, reason) = idle.expect_close();
    let took = start.elapsed();
    idle_closed.store(true, Ordering::SeqCst);
    assert_eq!(code, Some(1001), "reason {reason:?}");
    assert!(took >= IDLE, "closed after {took:?}, before idle_timeout");
    idle.close(1001, "");
    idle.expect_eof(Duration::from_secs(10));
    busy.join().expect("busy client");
    wait_until(Duration::from_secs(10), "two on_close", || {
        stats.closes().len() == 2
    });
    assert!(stats
        .closes()
        .iter()
        .any(|c| c.code == CloseCode::GOING_AWAY && c.clean));
}

#[test]
fn close_timeout_drops_a_peer_that_does_not_answer_close() {
    let mut cfg = Config::default();
    cfg.close_timeout = Duration::from_millis(300);
    let (h, stats) = Pusher::new();
    let srv = start_server(cfg, h);
    let mut c = connect(srv.addr);
    // Before the "bye" that makes the server close, so before its timer.
    let start = Instant::now();
    c.send_text("bye");
    assert_eq!(c.expect_close(), (Some(4002), "bye".to_owned()));
    // No reply: the server gives up after close_timeout and closes TCP.
    let took = start.elapsed() + c.expect_eof(Duration::from_secs(10));
    assert!(took >= Duration::from_millis(300), "closed after {took:?}");
    wait_until(Duration::from_secs(10), "on_close", || {
        !stats.closes().is_empty()
    });
    let info = &stats.closes()[0];
    assert!(!info.clean, "{info:?}");
    assert_eq!(info.code, CloseCode::ABNORMAL, "{info:?}");
}

#[test]
fn max_connections_answers_503() {
    let mut cfg = Config::default();
    cfg.max_connections = Some(2);
    let (h, _stats) = Pusher::new();
    let srv = start_server(cfg, h);

    let a = connect(srv.addr);
    let mut b = connect(srv.addr);
    match TestClient::try_connect(srv.addr) {
        Ok(_) => panic!("third connection accepted with max_connections = 2"),
        Err(r) => assert_eq!(r.status, 503, "{r:?}"),
    }
    // The two keep working.
    b.send_text("b");
    b.expect_text("b");
    // After one leaves, a new one gets in (once its entry is gone).
    a.close_and_wait(1000);
    let start = Instant::now();
    let mut c = loop {
        match TestClient::try_connect(srv.addr) {
            Ok(c) => break c,
            Err(r) => {
                assert_eq!(r.status, 503);
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "no slot freed after a close"
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
    };
    c.send_text("c");
    c.expect_text("c");
    c.close_and_wait(1000);
    b.close_and_wait(1000);
}

/// Sends `bytes` on a fresh connection and expects the server to fail it
/// with `code`, then close TCP.
fn expect_failure(addr: std::net::SocketAddr, name: &str, bytes: &[u8], code: u16) {
    let mut c = connect(addr);
    // The server may stop reading mid-frame; a failed write is fine.
    let _ = c.try_send_raw(bytes);
    let got = c.expect_close();
    assert_eq!(got.0, Some(code), "{name}: {got:?}");
    c.close(code, "");
    c.expect_eof(Duration::from_secs(10));
}

#[test]
fn protocol_violations_get_the_right_close_code() {
    let mut cfg = Config::default();
    cfg.max_message_size = 1024;
    let (h, stats) = Pusher::new();
    let srv = start_server(cfg, h);
    let a = srv.addr;
    let masked = |op, p: &[u8], fin| frame_bytes(op, p, fin, true);

    // At the limit is fine.
    let mut c = connect(a);
    c.send_binary(&pattern(1024, 1));
    c.expect_binary(&pattern(1024, 1));
    let mut frags = masked(OpCode::Text, &[b'a'; 512], false);
    frags.extend(masked(OpCode::Continuation, &[b'b'; 512], true));
    c.send_raw(&frags);
    c.expect_text(&format!("{}{}", "a".repeat(512), "b".repeat(512)));
    c.close_and_wait(1000);

    expect_failure(
        a,
        "one frame over max_message_size",
        &masked(OpCode::Binary, &pattern(1025, 2), true),
        1009,
    );
    expect_failure(
        a,
        "big text frame",
        &masked(OpCode::Text, &[b'x'; 100_000], true),
        1009,
    );
    let mut frags = masked(OpCode::Binary, &[1; 600], false);
    frags.extend(masked(OpCode::Continuation, &[2; 600], true));
    expect_failure(a, "fragments over max_message_size", &frags, 1009);

    expect_failure(
        a,
        "invalid UTF-8",
        &masked(OpCode::Text, &[0xce, 0xba, 0xff, b'a'], true),
        1007,
    );
    let mut frags = masked(OpCode::Text, "κόσμε".as_bytes(), false);
    frags.extend(masked(OpCode::Continuation, &[0xed, 0xa0, 0x80], true)); // a surrogate
    expect_failure(a, "invalid UTF-8 in a fragment", &frags, 1007);
    expect_failure(
        a,
        "truncated UTF-8",
        &masked(OpCode::Text, &[b'a', 0xce], true),
        1007,
    );

    expect_failure(
        a,
        "unmasked frame",
        &frame_bytes(OpCode::Text, b"hello", true, false),
        1002,
    );
    expect_failure(
        a,
        "unmasked ping",
        &frame_bytes(OpCode::Ping, b"", true, false),
        1002,
    );
    let mut rsv = masked(OpCode::Text, b"hi", true);
    rsv[0] |= 0x40;
    expect_failure(a, "RSV1 without an extension", &rsv, 1002);
    expect_failure(
        a,
        "continuation with nothing to continue",
        &masked(OpCode::Continuation, b"x", true),
        1002,
    );

    wait_until(Duration::from_secs(10), "every on_close", || {
        stats.closes().len() == 11
    });
    let codes: Vec<u16> = stats.closes().iter().map(|c| c.code.0).collect();
    assert_eq!(
        codes,
        [1000, 1009, 1009, 1009, 1007, 1007, 1007, 1002, 1002, 1002, 1002]
    );
}
