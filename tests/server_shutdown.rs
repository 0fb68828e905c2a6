//! Graceful shutdown of the `wsloop serve` binary on SIGTERM: every client
//! gets what the server had queued for it when the signal came (echoes
//! still in the server's own queue included), then close 1001; the
//! process exits 0 as soon as everyone has answered, or at its shutdown
//! timeout when a client never reads.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use wsloop::frame::OpCode;

fn message(i: usize, j: usize) -> String {
    format!("client {i} message {j} {}", "x".repeat(j * 10))
}

/// Binary message `i` of `size` bytes: a pattern with `i` in its first 8
/// bytes.
fn heavy(i: usize, size: usize) -> Vec<u8> {
    let mut p = pattern(size, i as u8);
    p[..8].copy_from_slice(&(i as u64).to_be_bytes());
    p
}

/// The next `n` messages of `c` are heavy messages `from..from + n`.
fn expect_heavy(c: &mut TestClient, from: usize, n: usize, size: usize) {
    for i in from..from + n {
        match c.recv_data() {
            Msg::Binary(b) => assert!(b == heavy(i, size), "echo {i} is not message {i}"),
            other => panic!("echo {i}: got {other:?}"),
        }
    }
}

/// Unread and unsent bytes (`rx`, `tx`) of the server's side and of the
/// client's side of `c`'s connection.
fn queues(srv: &BinServer, c: &TestClient) -> ((u64, u64), (u64, u64)) {
    let port = c.stream.local_addr().unwrap().port();
    let one = |v: Vec<TcpSocket>, side: &str| {
        let s = v
            .into_iter()
            .find(|s| s.state == TCP_ESTABLISHED)
            .unwrap_or_else(|| panic!("no established {side} socket for port {port}"));
        (s.rx, s.tx)
    };
    let server = tcp_sockets(srv.addr.port())
        .into_iter()
        .filter(|s| s.peer_port == port)
        .collect();
    let client = all_tcp_sockets()
        .into_iter()
        .filter(|s| s.local_port == port && s.peer_port == srv.addr.port())
        .collect();
    (one(server, "server"), one(client, "client"))
}

/// SIGTERM while echoes are still queued: 50 clients with 5 messages
/// each, and one that sent 16 MiB and has not read (its echoes fill the
/// socket buffers and the rest waits in the server's own queue). Every
/// message the server had read before the signal reaches its client, in
/// order, then close 1001; a connection in its handshake is closed, no
/// new session is opened, and once every client has answered the
/// process exits 0 at once (long before its 30 s deadline).
#[test]
fn sigterm_closes_every_client_with_1001_after_its_echoes() {
    const N: usize = 50;
    const M: usize = 5;
    const HEAVY_MSGS: usize = 256;
    const HEAVY_SIZE: usize = 64 << 10;
    let mut srv = BinServer::spawn(&[
        "--shutdown-timeout",
        "30s",
        // Above the heavy client's 16 MiB: the server reads all of it.
        "--write-high",
        "64M",
        "--write-limit",
        "128M",
    ]);
    let port = srv.addr.port();

    let mut clients: Vec<TestClient> = (0..N).map(|_| connect(srv.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        for j in 0..M {
            c.send_text(&message(i, j));
        }
    }
    let mut big = connect(srv.addr);
    let mut w = big.stream.try_clone().unwrap();
    let writer = thread::spawn(move || {
        for i in 0..HEAVY_MSGS {
            w.write_all(&frame_bytes(
                OpCode::Binary,
                &heavy(i, HEAVY_SIZE),
                true,
                true,
            ))
            .unwrap();
        }
    });
    // One connection still in its handshake: it must not hold up exit.
    let mut half = tcp_connect(srv.addr);
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    writer.join().expect("heavy writer");
    // Everything sent has been read by the server: each echo is queued in
    // the server, in its socket buffers or at the client.
    wait_until(
        Duration::from_secs(20),
        "the server to read everything",
        || {
            let q = server_socket_queues(port);
            q.len() >= N + 2 && q.iter().all(|&(rx, _)| rx == 0)
        },
    );
    let owed: u64 = (0..N)
        .map(|i| (0..M).map(|j| 2 + message(i, j).len() as u64).sum::<u64>())
        .sum::<u64>()
        + (HEAVY_MSGS * (HEAVY_SIZE + 4)) as u64;
    let at_clients: u64 = peer_socket_queues(port).iter().map(|q| q.0).sum();
    let in_server_kernel: u64 = server_socket_queues(port).iter().map(|q| q.1).sum();
    eprintln!(
        "at the signal: {} KiB of echoes owed; {} KiB at the clients, {} KiB in the server's \
         socket buffers, the rest queued in the server",
        owed >> 10,
        at_clients >> 10,
        in_server_kernel >> 10
    );
    assert!(
        at_clients + in_server_kernel < owed,
        "every echo had left the server before the signal: a shutdown that dropped its queues \
         would pass"
    );

    let t = Instant::now();
    srv.signal("TERM");
    big.set_timeout(Duration::from_secs(10));
    expect_heavy(&mut big, 0, HEAVY_MSGS, HEAVY_SIZE);
    let (code, reason) = big.expect_close();
    assert_eq!(code, Some(1001), "heavy client: reason {reason:?}");
    for (i, c) in clients.iter_mut().enumerate() {
        for j in 0..M {
            c.expect_text(&message(i, j));
        }
        let (code, reason) = c.expect_close();
        assert_eq!(code, Some(1001), "client {i}: reason {reason:?}");
    }
    // No new session once shutdown began: the port refuses connections,
    // or the upgrade is answered 503.
    match TcpStream::connect_timeout(&srv.addr, Duration::from_secs(5)) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
        Err(e) => panic!("connecting during shutdown: {e}"),
        Ok(probe) => {
            drop(probe);
            match TestClient::try_connect(srv.addr) {
                Ok(_) => panic!("a WebSocket was opened during shutdown"),
                Err(r) => assert_eq!(r.status, 503, "upgrade during shutdown: {r:?}"),
            }
        }
    }
    let mut raw = Vec::new();
    assert!(
        read_until_eof(&mut half, Duration::from_secs(10), &mut raw),
        "the half-open handshake was not closed"
    );
    drop(half);
    clients.push(big);
    for c in clients.iter_mut() {
        c.close(1001, "");
    }
    // After the server's FIN, close our side too (as real clients do): the
    // server waits for that, or for its deadline.
    for mut c in clients.drain(..) {
        c.expect_eof(Duration::from_secs(10));
    }
    // Well before the 30 s deadline: the server saw that everyone was done.
    let status = srv.wait_exit(Duration::from_secs(20));
    let log = srv.log_text();
    assert!(
        status.is_some(),
        "no exit within 20 s of SIGTERM though every client closed; log:\n{log}"
    );
    assert!(
        status.unwrap().success(),
        "exit status {status:?}; log:\n{log}"
    );
    eprintln!("exited 0 {:?} after SIGTERM", t.elapsed());
}

/// A client that is still sending (32 MiB) and has not read when the
/// signal comes; the server has paused reading it (write-high 4 MiB).
/// The messages the server had read are all echoed, in order, then close
/// 1001 (at least as many as the socket queues at the signal show it had
/// read: more than its socket buffers alone could still deliver).
#[test]
fn sigterm_with_much_queued_for_a_slow_reader() {
    const COUNT: usize = 64;
    const SIZE: usize = 512 << 10;
    // Masked client frames have a 14-byte header, the echoes 10 bytes.
    const SENT_FRAME: u64 = SIZE as u64 + 14;
    const ECHO_FRAME: u64 = SIZE as u64 + 10;
    let mut srv = BinServer::spawn(&[
        "--shutdown-timeout",
        "30s",
        "--write-high",
        "4M",
        "--write-limit",
        "16M",
    ]);
    let mut c = connect(srv.addr);
    let mut w = c.stream.try_clone().unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let done_w = done.clone();
    let writer = thread::spawn(move || {
        for i in 0..COUNT {
            // The server stops reading once it closed: a failed write is
            // fine.
            if w.write_all(&frame_bytes(OpCode::Binary, &heavy(i, SIZE), true, true))
                .is_err()
            {
                break;
            }
            done_w.fetch_add(1, Ordering::SeqCst);
        }
    });
    // Wait until the server has paused reading us (unread bytes on its
    // side) and nothing moves any more.
    let start = Instant::now();
    let mut last = None;
    let mut still = Instant::now();
    let (srv_q, cli_q, sent) = loop {
        let (s, cq) = queues(&srv, &c);
        let now = (s, cq, done.load(Ordering::SeqCst));
        if last != Some(now) {
            last = Some(now);
            still = Instant::now();
        } else if s.0 > 0 && still.elapsed() > Duration::from_millis(500) {
            break now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the server never paused reading: {now:?}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    // Bytes the server has read: at least the whole frames the writer
    // finished, less what is still in the two socket buffers on the way.
    let read = (sent as u64 * SENT_FRAME).saturating_sub(cli_q.1 + srv_q.0);
    let read_msgs = (read / SENT_FRAME) as usize;
    // What a server that dropped its own queue could still deliver: the
    // echoes in its send buffer and at the client.
    let in_kernel = (srv_q.1 + cli_q.0).div_ceil(ECHO_FRAME) as usize;
    eprintln!(
        "at the signal: {sent} of {COUNT} sent, at least {read_msgs} read by the server, \
         {in_kernel} echoes' worth in socket buffers"
    );
    assert!(
        read_msgs > in_kernel,
        "the server's own queue holds no whole echo: the test cannot see it dropped"
    );

    let t = Instant::now();
    srv.signal("TERM");
    c.set_timeout(Duration::from_secs(10));
    let mut got = 0;
    let (code, reason) = loop {
        match c.recv() {
            Msg::Binary(b) => {
                assert!(b == heavy(got, SIZE), "echo {got} is not message {got}");
                got += 1;
            }
            Msg::Close(code, reason) => break (code, reason),
            other => panic!("unexpected {other:?}"),
        }
    };
    eprintln!("{got} echoes before close {code:?}");
    assert_eq!(code, Some(1001), "reason {reason:?}");
    assert!(
        got >= read_msgs,
        "{got} echoes, but the server had read at least {read_msgs} messages before the signal"
    );
    // Answer the close; the writer ends once the server has closed.
    let _ = c.try_send_raw(&frame_bytes(
        OpCode::Close,
        &close_payload(1001, ""),
        true,
        true,
    ));
    c.expect_eof(Duration::from_secs(10));
    drop(c);
    writer.join().unwrap();
    assert!(got <= done.load(Ordering::SeqCst) + 1);
    // Well before the 30 s deadline: the client closed.
    let status = srv.wait_exit(Duration::from_secs(20));
    let log = srv.log_text();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} after {:?}; log:\n{log}",
        t.elapsed()
    );
}

/// A client that never reads while much is queued for it: a
/// well-behaved client is closed and let go while the process still
/// waits for the stuck one, and the process exits 0 once
/// --shutdown-timeout passes, not before.
#[test]
fn sigterm_with_a_client_that_never_reads() {
    const TIMEOUT: Duration = Duration::from_secs(5);
    let mut srv = BinServer::spawn(&["--shutdown-timeout", "5s", "--close-timeout", "60s"]);
    let mut ok = connect(srv.addr);
    let stuck = connect(srv.addr);
    let mut w = stuck.stream.try_clone().unwrap();
    let writer = thread::spawn(move || {
        // 12 MiB of echo requests; this blocks once the server stops
        // reading us, and fails once the process is gone.
        let frame = frame_bytes(OpCode::Binary, &pattern(1 << 20, 1), true, true);
        for _ in 0..12 {
            if w.write_all(&frame).is_err() {
                break;
            }
        }
    });
    // Echoes wait in the server's send buffer: the stuck client's buffer
    // is full.
    wait_until(
        Duration::from_secs(10),
        "echoes the stuck client does not read",
        || queues(&srv, &stuck).0 .1 > 0,
    );

    let t = Instant::now();
    srv.signal("TERM");
    // The well-behaved client is closed and let go while the server still
    // waits for the stuck one.
    assert_eq!(ok.expect_close().0, Some(1001));
    ok.close(1001, "");
    ok.expect_eof(Duration::from_secs(10));
    drop(ok);
    assert!(
        srv.child.try_wait().unwrap().is_none(),
        "the process had exited before the well-behaved client was let go ({:?} after SIGTERM)",
        t.elapsed()
    );

    let status = srv.wait_exit(TIMEOUT + Duration::from_secs(10));
    let took = t.elapsed();
    let log = srv.log_text();
    assert!(
        status.is_some(),
        "no exit within {:?} of SIGTERM; log:\n{log}",
        TIMEOUT + Duration::from_secs(10)
    );
    assert!(
        status.unwrap().success(),
        "exit status {status:?}; log:\n{log}"
    );
    eprintln!("exited 0 {took:?} after SIGTERM with a stuck client");
    assert!(
        took >= TIMEOUT - Duration::from_millis(500),
        "gave up on the stuck client after {took:?}, before --shutdown-timeout"
    );
    drop(stuck);
    let _ = writer.join();
}

/// `--threads 2`: two event loops share the port; every connection is
/// served, and SIGTERM shuts both loops down (close 1001 to each client,
/// exit 0). Bad values are refused with the value named.
#[test]
fn threads_share_the_port_and_shut_down_together() {
    let mut srv = BinServer::spawn(&["--threads", "2", "--shutdown-timeout", "30s"]);
    let loops = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/task", srv.pid()))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|c| c.trim().to_owned())
            .filter(|c| c.starts_with("loop-"))
            .collect()
    };
    // The port accepts as soon as it is bound, a moment before the loop
    // threads start.
    wait_until(Duration::from_secs(5), "two event loop threads", || {
        loops().len() >= 2
    });
    assert_eq!(loops().len(), 2, "event loop threads: {:?}", loops());

    let mut clients: Vec<TestClient> = (0..40).map(|_| connect(srv.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send_text(&message(i, 1));
        c.expect_text(&message(i, 1));
    }
    srv.signal("TERM");
    for (i, c) in clients.iter_mut().enumerate() {
        let (code, reason) = c.expect_close();
        assert_eq!(code, Some(1001), "client {i}: reason {reason:?}");
        c.close(1001, "");
    }
    // Once every client has answered, well before the 30 s deadline.
    let status = srv.wait_exit(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}; log:\n{}",
        srv.log_text()
    );

    for (args, want) in [
        (&["--threads", "0"][..], "--threads must be at least 1"),
        (&["--threads", "two"][..], "two"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wsloop"))
            .arg("serve")
            .args(["--addr", "127.0.0.1:9"])
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
