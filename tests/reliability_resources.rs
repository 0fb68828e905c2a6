//! Resource exhaustion against the `wsloop serve` binary (so memory, fds
//! and CPU are the server's alone, read from /proc): slowloris handshakes,
//! peers that send but never read, a ping flood whose pongs are never
//! read, thousands of connections reset, the open-file limit reached
//! (EMFILE), and far more connections than max_connections.
//!
//! Each test asserts what would break if the server misbehaved: memory
//! over the configured bound, fds not given back, CPU burnt while nothing
//! can be done, a bystander not served, a message lost or reordered.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use wsloop::frame::OpCode;

/// Round trips of `n` small messages on a fresh connection: (median, max).
fn probe_latency(addr: SocketAddr, n: usize) -> (Duration, Duration) {
    let mut c = connect(addr);
    c.set_timeout(Duration::from_secs(10));
    let mut rtts = Vec::with_capacity(n);
    for i in 0..n {
        let m = format!("probe {i}");
        let t = Instant::now();
        c.send_text(&m);
        c.expect_text(&m);
        rtts.push(t.elapsed());
    }
    c.close_and_wait(1000);
    rtts.sort();
    (rtts[n / 2], rtts[n - 1])
}

/// A bystander gets 20 echoes while `while_what` goes on. The callers
/// keep the misbehaving peers as they are until this returns (they do
/// not read, or their handshakes hang), so a server tied up by them
/// fails here; how fast the echoes come is printed, not asserted (the
/// machine may be busy).
fn assert_served(addr: SocketAddr, while_what: &str) {
    let (p50, max) = probe_latency(addr, 20);
    eprintln!("bystander round trip while {while_what}: p50 {p50:?}, max {max:?}");
}

/// Samples the server's VmRSS every 10 ms until stopped; returns the max.
struct RssWatch {
    stop: Arc<AtomicBool>,
    max: Arc<AtomicU64>,
    t: Option<JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: u32) -> RssWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let max = Arc::new(AtomicU64::new(0));
        let (s, m) = (stop.clone(), max.clone());
        let t = thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                if let Some(kib) = proc_status_kib(pid, "VmRSS") {
                    m.fetch_max(kib, Ordering::SeqCst);
                }
                thread::sleep(Duration::from_millis(10));
            }
        });
        RssWatch {
            stop,
            max,
            t: Some(t),
        }
    }
    fn max_kib(&self) -> u64 {
        self.max.load(Ordering::SeqCst)
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.t.take() {
            let _ = t.join();
        }
    }
}

/// Server CPU ticks (1/100 s) used during a second in which `state` (what
/// the server's work would change: socket queues, its fds) did not
/// change. A second in which it did (the server was still catching up,
/// late on a busy machine) is measured again, for up to 30 s: the CPU
/// asserted on is that of a server with nothing it can do.
fn idle_cpu_ticks<T: PartialEq + std::fmt::Debug>(pid: u32, mut state: impl FnMut() -> T) -> u64 {
    let start = Instant::now();
    loop {
        let (s0, a) = (state(), proc_cpu_ticks(pid));
        thread::sleep(Duration::from_secs(1));
        let (b, s1) = (proc_cpu_ticks(pid), state());
        if s0 == s1 {
            return b - a;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the server's state kept changing for 30 s: {s0:?} -> {s1:?}"
        );
    }
}

/// The receive and send queues of both sides of every connection to
/// `port`, sorted.
fn all_queues(port: u16) -> Vec<(u64, u64)> {
    let mut q = server_socket_queues(port);
    q.extend(peer_socket_queues(port));
    q.sort();
    q
}

fn wait_fds(srv: &BinServer, at_most: usize, within: Duration, what: &str) {
    wait_until(
        within,
        &format!("{what}: at most {at_most} server fds"),
        || srv.fds() <= at_most,
    );
}

/// 500 connections that send half a request and stop: a normal client is
/// served while all 500 are still held, and the handshake timeout frees
/// them all (fds back to the baseline), none before it.
#[test]
fn slowloris_500_freed_by_the_handshake_timeout() {
    const N: usize = 500;
    const TIMEOUT: Duration = Duration::from_secs(3);
    let srv = BinServer::spawn(&["--handshake-timeout", "3s"]);
    let base = srv.fds();
    // Before the first connect, so before every accept: no timer can
    // have started earlier.
    let t = Instant::now();
    let mut lorises = Vec::with_capacity(N);
    for i in 0..N {
        let mut s = tcp_connect(srv.addr);
        s.write_all(format!("GET /{i} HTTP/1.1\r\nHost: x\r\nX-Slow: ").as_bytes())
            .unwrap();
        lorises.push(s);
    }
    eprintln!("{N} slow handshakes open after {:?}", t.elapsed());
    wait_until(
        Duration::from_secs(10),
        "the server to hold a descriptor for each slow handshake",
        || srv.fds() >= base + N,
    );
    assert_served(srv.addr, "500 handshakes hang");
    // The bystander was served while every slow handshake was still held.
    let held = srv.fds();
    assert!(
        held >= base + N,
        "only {held} fds ({base} idle) after the bystander: a slow handshake was let go before \
         the handshake timeout, or the bystander was only served once they were ({:?} after \
         the first connect)",
        t.elapsed()
    );
    for (i, s) in lorises.iter_mut().enumerate() {
        let mut raw = Vec::new();
        assert!(
            read_until_eof(s, Duration::from_secs(10), &mut raw),
            "slow handshake {i} still open {:?} after the first connect",
            t.elapsed()
        );
        if i == 0 {
            let at = t.elapsed();
            assert!(
                at >= TIMEOUT,
                "the first slow handshake was closed {at:?} after its connect, before the timeout"
            );
        }
        if !raw.is_empty() {
            assert_eq!(parse_http(&raw).status, 408, "slow handshake {i}");
        }
    }
    eprintln!("all {N} closed {:?} after the first connect", t.elapsed());
    drop(lorises);
    wait_fds(&srv, base, Duration::from_secs(10), "after the slowloris");
    assert_served(srv.addr, "after the slowloris");
    srv.assert_no_panic();
}

/// Six peers each send 16 MiB of echo requests and never read (loopback
/// socket buffers absorb about 6 MiB a connection, so the rest must wait).
/// With write-high 256 KiB and write-limit 1 MiB, the server stops reading
/// them: its RSS stays under 6 x (limit + two messages) + 24 MiB (it would
/// grow by ~60 MiB without backpressure), it burns no CPU while they are
/// stalled, a bystander is served meanwhile, and when they read, every echo
/// arrives in order.
#[test]
fn non_reading_senders_keep_server_memory_bounded() {
    const PEERS: usize = 6;
    const SIZE: usize = 64 << 10;
    const COUNT: usize = 256; // 16 MiB each
    let srv = BinServer::spawn(&["--write-high", "256K", "--write-limit", "1M"]);
    let rss0 = srv.rss_kib();
    let watch = RssWatch::start(srv.pid());
    let mut peers = Vec::new();
    let mut writers = Vec::new();
    for _ in 0..PEERS {
        let c = connect(srv.addr);
        let mut w = c.stream.try_clone().unwrap();
        writers.push(thread::spawn(move || {
            for i in 0..COUNT {
                w.write_all(&frame_bytes(OpCode::Binary, &numbered(i, SIZE), true, true))?;
            }
            Ok::<_, std::io::Error>(())
        }));
        peers.push(c);
    }
    // Wait for the stall: the server stops reading, the writers block.
    let mut last = 0;
    let mut still = Instant::now();
    let t = Instant::now();
    while still.elapsed() < Duration::from_millis(500) {
        let q: u64 = server_socket_queues(srv.addr.port())
            .iter()
            .map(|q| q.0)
            .sum();
        if q != last {
            last = q;
            still = Instant::now();
        }
        assert!(t.elapsed() < Duration::from_secs(20), "never stalled");
        thread::sleep(Duration::from_millis(20));
    }
    let srv_q = server_socket_queues(srv.addr.port());
    let peer_q = peer_socket_queues(srv.addr.port());
    eprintln!(
        "stalled: server side unread {} KiB, unsent {} KiB; peer side unread {} KiB, unsent {} KiB; {} writers done",
        srv_q.iter().map(|q| q.0).sum::<u64>() >> 10,
        srv_q.iter().map(|q| q.1).sum::<u64>() >> 10,
        peer_q.iter().map(|q| q.0).sum::<u64>() >> 10,
        peer_q.iter().map(|q| q.1).sum::<u64>() >> 10,
        writers.iter().filter(|w| w.is_finished()).count()
    );
    assert!(
        writers.iter().filter(|w| !w.is_finished()).count() == PEERS,
        "a writer finished: 16 MiB went through without the peer reading"
    );
    let port = srv.addr.port();
    let ticks = idle_cpu_ticks(srv.pid(), || all_queues(port));
    eprintln!("stalled: server used {ticks} ticks in 1 s");
    assert!(
        ticks <= 20,
        "server used {ticks}% CPU while every peer was stalled"
    );
    assert_served(srv.addr, "6 peers do not read");
    let max = watch.max_kib();
    let bound = rss0 + (PEERS as u64) * ((1 << 10) + 2 * (SIZE as u64 >> 10)) + (24 << 10);
    eprintln!(
        "server RSS {} MiB before, max {} MiB while stalled (bound {} MiB)",
        rss0 >> 10,
        max >> 10,
        bound >> 10
    );
    assert!(max <= bound, "RSS {max} KiB over the bound {bound} KiB");
    // They read now: everything, in order.
    for c in peers.iter_mut() {
        c.set_timeout(Duration::from_secs(10));
        c.expect_numbered(0, COUNT, SIZE);
    }
    for w in writers {
        w.join().unwrap().expect("writer");
    }
    for c in peers {
        c.close_and_wait(1000);
    }
    drop(watch);
    srv.assert_no_panic();
}

/// The `"seq"` of a chat message.
fn seq_of(t: &str) -> u64 {
    let at = t.find("\"seq\":").expect("seq") + 6;
    t[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Chat: a room member that never reads while a publisher floods the room
/// with 24 MiB. The overflow policy (close 1008) ends it; the server's RSS
/// stays bounded (history + limit); the publisher and a reading member get
/// every message in order; what the non-reader got is an unbroken prefix.
///
/// The limit is 4 MiB: a member that reads is closed too once it falls
/// that far behind, and with 1 MiB a reader starved of CPU by the tests
/// running beside it in CI was (once, closed 1008 at 1,047,552 bytes
/// queued). 4 MiB is still a sixth of the flood.
#[test]
fn overflow_policy_ends_a_room_member_that_never_reads() {
    const COUNT: usize = 6000;
    let srv = BinServer::spawn(&[
        "--app",
        "chat",
        "--write-high",
        "256K",
        "--write-limit",
        "4M",
        "--close-timeout",
        "1s",
    ]);
    let join = |c: &mut TestClient| {
        c.send_text(r#"{"type":"join","room":"hot"}"#);
        loop {
            if let Msg::Text(t) = c.recv_data() {
                if t.contains("\"joined\"") {
                    break;
                }
            }
        }
    };
    let open = || {
        let mut c = TestClient::connect_with(srv.addr, "/ws", &[]);
        assert!(matches!(c.recv_data(), Msg::Text(t) if t.contains("welcome")));
        c
    };
    let mut sleeper = open();
    join(&mut sleeper);
    let mut reader = open();
    join(&mut reader);
    let mut publisher = open();
    join(&mut publisher);
    let rss0 = srv.rss_kib();
    let watch = RssWatch::start(srv.pid());

    let text = "x".repeat(4000);
    let mut w = publisher.stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        for i in 0..COUNT {
            let m = format!(r#"{{"type":"message","room":"hot","text":"{i} {text}"}}"#);
            w.write_all(&frame_bytes(OpCode::Text, m.as_bytes(), true, true))
                .unwrap();
        }
    });
    fn read_all(c: &mut TestClient, who: &str) {
        for i in 0..COUNT {
            match c.recv_data() {
                Msg::Text(t) => assert_eq!(seq_of(&t), i as u64 + 1, "{who}: message {i}"),
                other => panic!("{who}: {other:?}"),
            }
        }
    }
    let rt = thread::spawn(move || {
        reader.set_timeout(Duration::from_secs(10));
        read_all(&mut reader, "reader");
        reader
    });
    publisher.set_timeout(Duration::from_secs(10));
    read_all(&mut publisher, "publisher");
    sender.join().unwrap();
    let reader = rt.join().unwrap();
    let max = watch.max_kib();
    // History keeps 1,000 messages of ~4 KiB; each connection's queue is
    // held to the 4 MiB limit.
    let bound = rss0 + (8 << 10) + 3 * (4 << 10) + (24 << 10);
    eprintln!(
        "chat RSS {} MiB before, max {} MiB during 24 MiB to a non-reader (bound {} MiB)",
        rss0 >> 10,
        max >> 10,
        bound >> 10
    );
    assert!(max <= bound, "RSS {max} KiB over {bound} KiB");

    // The non-reader: an unbroken prefix, then close 1008 (or the end of
    // TCP, if the close could not be written before close-timeout).
    sleeper.set_timeout(Duration::from_secs(5));
    let mut got = 0u64;
    let end = loop {
        match sleeper.try_recv() {
            Ok(Some(Msg::Text(t))) => {
                got += 1;
                assert_eq!(seq_of(&t), got, "non-reader: gap or reorder");
            }
            Ok(Some(Msg::Close(code, reason))) => break format!("close {code:?} {reason}"),
            Ok(Some(other)) => panic!("non-reader got {other:?}"),
            Ok(None) => break "EOF".to_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset".to_owned(),
            // Given up at close-timeout while a frame was half written.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break "EOF".to_owned(),
            Err(e) => panic!("non-reader after {got} messages: {e}"),
        }
    };
    eprintln!("non-reader got {got} of {COUNT} messages, then {end}");
    assert!((got as usize) < COUNT, "the non-reader was never cut off");
    assert!(
        end.starts_with("close Some(1008)") || end == "EOF" || end == "reset",
        "non-reader ended with {end}"
    );
    reader.close_and_wait(1000);
    publisher.close_and_wait(1000);
    drop(watch);
    srv.assert_no_panic();
}

/// 100,000 pings of 125 bytes (13 MB of pongs owed) from a peer that
/// never reads: the server stops reading it instead of queueing pongs
/// without bound (RSS bounded, no CPU burnt while stalled, a bystander
/// served), and when the peer reads, every pong is there, in order.
#[test]
fn ping_flood_without_reading_pongs() {
    const PINGS: usize = 100_000;
    let srv = BinServer::spawn(&["--write-high", "256K", "--write-limit", "1M"]);
    let rss0 = srv.rss_kib();
    let watch = RssWatch::start(srv.pid());
    let mut c = connect(srv.addr);
    let mut w = c.stream.try_clone().unwrap();
    let payload = |i: usize| {
        let mut p = format!("{i:>10}").into_bytes();
        p.resize(125, b'.');
        p
    };
    let writer = thread::spawn(move || {
        let mut buf = Vec::new();
        for i in 0..PINGS {
            buf.extend(frame_bytes(OpCode::Ping, &payload(i), true, true));
            if buf.len() > 64 << 10 {
                w.write_all(&buf)?;
                buf.clear();
            }
        }
        w.write_all(&buf)
    });
    let t = Instant::now();
    let mut last = 0;
    let mut still = Instant::now();
    while still.elapsed() < Duration::from_millis(500) {
        let q: u64 = server_socket_queues(srv.addr.port())
            .iter()
            .map(|q| q.0)
            .sum();
        if q != last {
            last = q;
            still = Instant::now();
        }
        assert!(t.elapsed() < Duration::from_secs(20), "never stalled");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(
        !writer.is_finished(),
        "all pings went through without reading a pong"
    );
    let port = srv.addr.port();
    let ticks = idle_cpu_ticks(srv.pid(), || all_queues(port));
    assert!(
        ticks <= 20,
        "server used {ticks}% CPU while the flooder was stalled"
    );
    assert_served(srv.addr, "a ping flooder does not read");
    let max = watch.max_kib();
    eprintln!(
        "ping flood: RSS {} MiB before, max {} MiB",
        rss0 >> 10,
        max >> 10
    );
    assert!(
        max <= rss0 + (16 << 10),
        "RSS grew by {} MiB",
        (max - rss0) >> 10
    );

    c.set_timeout(Duration::from_secs(10));
    for i in 0..PINGS {
        match c.recv() {
            Msg::Pong(p) => assert!(
                p == payload(i),
                "pong {i} is {:?}",
                String::from_utf8_lossy(&p[..10])
            ),
            other => panic!("pong {i}: {other:?}"),
        }
    }
    writer.join().unwrap().expect("writer");
    c.close_and_wait(1000);
    drop(watch);
    srv.assert_no_panic();
}

/// Checks once that closing a socket with unread data makes Linux send a
/// RST (what the reset tests rely on: std has no SO_LINGER).
fn check_rst_technique() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (mut b, _) = l.accept().unwrap();
    b.write_all(b"unread").unwrap();
    a.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    assert!(a.peek(&mut [0u8; 1]).unwrap() > 0);
    close_with_rst(a);
    b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let r = std::io::Read::read(&mut b, &mut [0u8; 8]);
    assert!(
        matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "closing with unread data did not reset the peer: {r:?}"
    );
}

/// 3,000 connections reset by the peer in every state: after the upgrade
/// (101 unread), in the middle of a frame, in the middle of a fragmented
/// message, and while the server writes a 400 KiB echo. The server gives
/// every fd back, its memory does not grow, and it keeps serving.
#[test]
fn thousands_of_connections_reset() {
    check_rst_technique();
    const BATCH: usize = 300;
    const BATCHES: usize = 10;
    let srv = BinServer::spawn(&[]);
    let base = srv.fds();
    let mut warm = connect(srv.addr);
    warm.send_binary(&pattern(1 << 20, 1));
    warm.expect_binary(&pattern(1 << 20, 1));
    let rss0 = srv.rss_kib();
    // Under write-high, so the server reads it all and is still writing
    // the echo (more than our receive buffer takes) when the reset comes.
    let big = frame_bytes(OpCode::Binary, &pattern(400 << 10, 2), true, true);
    let t = Instant::now();
    for batch in 0..BATCHES {
        let mut socks = Vec::with_capacity(BATCH);
        for i in 0..BATCH {
            let (_, req) = upgrade_request(srv.addr, "/");
            let mut s = connect_and_wait_reply(srv.addr, &req);
            match i % 4 {
                0 => {}
                1 => {
                    let f = frame_bytes(OpCode::Binary, &pattern(1000, 3), true, true);
                    s.write_all(&f[..500]).unwrap();
                }
                2 => {
                    s.write_all(&frame_bytes(OpCode::Text, b"first ", false, true))
                        .unwrap();
                }
                _ => {
                    // An echo is being written to us when we reset.
                    s.write_all(&big).unwrap();
                }
            }
            socks.push(s);
        }
        thread::sleep(Duration::from_millis(20));
        for s in socks {
            close_with_rst(s);
        }
        if batch == 0 {
            assert_served(srv.addr, "connections are being reset");
        }
    }
    eprintln!("{} connections reset in {:?}", BATCH * BATCHES, t.elapsed());
    // Longer than the 5 s close timeout: once in a clean-clone CI run two
    // reset connections were still held at 5 s (cause not found yet; see the
    // session note). Every fd must still come back.
    wait_fds(
        &srv,
        base + 1,
        Duration::from_secs(15),
        "after 3,000 resets",
    );
    let rss1 = srv.rss_kib();
    eprintln!("RSS {} KiB before, {} KiB after", rss0, rss1);
    assert!(
        rss1 < rss0 + (16 << 10),
        "RSS grew by {} MiB",
        (rss1 - rss0) >> 10
    );
    warm.send_text("still here");
    warm.expect_text("still here");
    warm.close_and_wait(1000);
    srv.assert_no_panic();
}

/// The server's open-file limit is 200 and 260 clients connect: accepts
/// fail with EMFILE. The server must not spin (CPU over a second of
/// saturation stays low), must keep serving the connections it has, and
/// must accept the waiting ones once fds are freed.
#[test]
fn emfile_no_busy_loop_and_service_resumes() {
    const CLIENTS: usize = 260;
    let srv = BinServer::spawn_with_fd_limit(200, &[]);
    let base = srv.fds();
    let mut pending: Vec<(TcpStream, wsloop::handshake::ClientRequest)> = Vec::new();
    for _ in 0..CLIENTS {
        let mut s = tcp_connect(srv.addr);
        let (req, bytes) = upgrade_request(srv.addr, "/");
        s.write_all(&bytes).unwrap();
        pending.push((s, req));
    }
    // Let the server take what it can.
    wait_until(Duration::from_secs(5), "the fd table to fill", || {
        srv.fds() >= 195
    });
    thread::sleep(Duration::from_millis(300));
    let fds = srv.fds();
    eprintln!("server fds: {base} idle, {fds} at saturation (limit 200)");
    let port = srv.addr.port();
    let ticks = idle_cpu_ticks(srv.pid(), || (srv.fds(), all_queues(port)));
    eprintln!("server CPU at EMFILE: {ticks} ticks in 1 s");
    assert!(ticks <= 20, "busy loop at EMFILE: {ticks}% CPU over 1 s");
    let log = srv.log_text();
    assert!(
        log.contains("accept:"),
        "EMFILE was not logged; log:\n{log}"
    );

    // Which clients got in? Those whose 101 is there.
    let mut served = Vec::new();
    let mut waiting = Vec::new();
    for (s, req) in pending {
        let mut b = [0u8; 1];
        s.set_nonblocking(true).unwrap();
        let ready = matches!(s.peek(&mut b), Ok(n) if n > 0);
        s.set_nonblocking(false).unwrap();
        if ready {
            served.push(TestClient::finish_handshake(s, &req));
        } else {
            waiting.push((s, req));
        }
    }
    eprintln!(
        "{} upgraded, {} waiting in the backlog",
        served.len(),
        waiting.len()
    );
    assert!(
        !waiting.is_empty(),
        "no client waits: the limit was not reached"
    );
    assert!(served.len() >= 150, "only {} upgraded", served.len());
    // The connections it has are served.
    for (i, c) in served.iter_mut().take(20).enumerate() {
        c.send_text(&format!("at the limit {i}"));
        c.expect_text(&format!("at the limit {i}"));
    }
    // Free 100 fds: the waiting clients get in and are served.
    for c in served.drain(..100) {
        c.close_and_wait(1000);
    }
    let t = Instant::now();
    for (i, (s, req)) in waiting.into_iter().enumerate() {
        let mut c = TestClient::finish_handshake(s, &req);
        c.send_text(&format!("resumed {i}"));
        c.expect_text(&format!("resumed {i}"));
        served.push(c);
    }
    // (Each handshake above waits READ_TIMEOUT at most: a server that did
    // not resume accepting fails there.)
    eprintln!("backlog served {:?} after fds were freed", t.elapsed());
    let mut fresh = connect(srv.addr);
    fresh.send_text("fresh");
    fresh.expect_text("fresh");
    fresh.close_and_wait(1000);
    for c in served {
        c.close_and_wait(1000);
    }
    wait_fds(&srv, base, Duration::from_secs(10), "after everyone left");
    srv.assert_no_panic();
}

/// max_connections 50 and 300 more clients at once: every extra one gets
/// 503 or a close, none an upgrade, none hangs; the 50 keep working; slots
/// freed are reusable, exactly up to the limit again.
#[test]
fn max_connections_under_a_rush() {
    const MAX: usize = 50;
    let srv = BinServer::spawn(&["--max-connections", "50"]);
    let base = srv.fds();
    let mut open: Vec<TestClient> = (0..MAX).map(|_| connect(srv.addr)).collect();
    let mut rush = Vec::new();
    for _ in 0..300 {
        let mut s = tcp_connect(srv.addr);
        let (_, bytes) = upgrade_request(srv.addr, "/");
        let _ = s.write_all(&bytes);
        rush.push(s);
    }
    let (mut refused_503, mut closed) = (0, 0);
    for (i, s) in rush.iter_mut().enumerate() {
        let mut raw = Vec::new();
        assert!(
            read_until_eof(s, Duration::from_secs(5), &mut raw),
            "extra connection {i} neither refused nor closed"
        );
        if raw.is_empty() {
            closed += 1;
        } else {
            let r = parse_http(&raw);
            assert_eq!(r.status, 503, "extra connection {i}: {r:?}");
            refused_503 += 1;
        }
    }
    eprintln!("rush of 300: {refused_503} got 503, {closed} were closed without an answer");
    assert!(refused_503 >= 1);
    drop(rush);
    for (i, c) in open.iter_mut().enumerate() {
        c.send_text(&format!("member {i}"));
        c.expect_text(&format!("member {i}"));
    }
    for c in open.drain(..10) {
        c.close_and_wait(1000);
    }
    wait_fds(
        &srv,
        base + MAX - 10,
        Duration::from_secs(10),
        "after 10 left",
    );
    for _ in 0..10 {
        open.push(connect(srv.addr));
    }
    match TestClient::try_connect(srv.addr) {
        Ok(_) => panic!("connection {} accepted with max_connections {MAX}", MAX + 1),
        Err(r) => assert_eq!(r.status, 503),
    }
    for c in open {
        c.close_and_wait(1000);
    }
    wait_fds(&srv, base, Duration::from_secs(10), "after everyone left");
    srv.assert_no_panic();
}

/// While accepts keep failing with EMFILE, the warning is logged once (as
/// STYLE.md asks), not on every 100 ms retry: a long fd exhaustion (an
/// attack) must not turn into a flood of log lines.
#[test]
fn emfile_is_logged_once_not_on_every_retry() {
    let srv = BinServer::spawn_with_fd_limit(64, &[]);
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut s = tcp_connect(srv.addr);
        let (_, bytes) = upgrade_request(srv.addr, "/");
        s.write_all(&bytes).unwrap();
        held.push(s);
    }
    wait_until(Duration::from_secs(5), "the fd table to fill", || {
        srv.fds() >= 62
    });
    thread::sleep(Duration::from_secs(2));
    let log = srv.log_text();
    let warnings = log.lines().filter(|l| l.contains("accept:")).count();
    eprintln!("{warnings} EMFILE warnings in 2 s");
    assert!(warnings >= 1, "EMFILE was not logged; log:\n{log}");
    assert!(
        warnings <= 2,
        "EMFILE logged {warnings} times in 2 s of exhaustion (once per retry); log:\n{}",
        log.lines()
            .filter(|l| l.contains("accept:"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    drop(held);
    srv.assert_no_panic();
}
