//! Graceful shutdown of the `wsloop serve` binary on SIGTERM: every client
//! gets what was queued for it, then close 1001; the process exits 0 within
//! its shutdown timeout even when a client never reads.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use wsloop::frame::OpCode;

/// Waits until `c`'s socket holds at least `bytes` unread bytes (the
/// server has read our messages and written the echoes).
fn wait_readable(c: &TestClient, bytes: usize, within: Duration) {
    let start = Instant::now();
    let mut buf = vec![0u8; bytes];
    c.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    loop {
        match c.stream.peek(&mut buf) {
            Ok(n) if n >= bytes => break,
            Ok(0) => panic!("EOF before the echoes arrived"),
            _ => {}
        }
        assert!(
            start.elapsed() < within,
            "echoes did not arrive within {within:?}"
        );
        thread::sleep(Duration::from_millis(2));
    }
    c.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
}

fn message(i: usize, j: usize) -> String {
    format!("client {i} message {j} {}", "x".repeat(j * 10))
}

#[test]
fn sigterm_closes_every_client_with_1001_after_its_echoes() {
    const N: usize = 50;
    const M: usize = 5;
    let mut srv = BinServer::spawn(&["--shutdown-timeout", "5s"]);

    let mut clients: Vec<TestClient> = (0..N).map(|_| connect(srv.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        for j in 0..M {
            c.send_text(&message(i, j));
        }
    }
    // One connection still in its handshake: it must not hold up exit.
    let mut half = tcp_connect(srv.addr);
    half.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    // Every message has been read by the server and echoed before the
    // signal (frames under 126 bytes: 2 header bytes each).
    for (i, c) in clients.iter().enumerate() {
        let bytes: usize = (0..M).map(|j| 2 + message(i, j).len()).sum();
        wait_readable(c, bytes, Duration::from_secs(5));
    }

    let t = Instant::now();
    srv.signal("TERM");
    for (i, c) in clients.iter_mut().enumerate() {
        for j in 0..M {
            c.expect_text(&message(i, j));
        }
        let (code, reason) = c.expect_close();
        assert_eq!(code, Some(1001), "client {i}: reason {reason:?}");
    }
    // New connections are refused once shutdown began.
    assert!(
        TcpStream::connect_timeout(&srv.addr, Duration::from_millis(500)).is_err(),
        "a connection was accepted during shutdown"
    );
    let mut raw = Vec::new();
    assert!(
        read_until_eof(&mut half, Duration::from_secs(2), &mut raw),
        "the half-open handshake was not closed"
    );
    drop(half);
    for c in clients.iter_mut() {
        c.close(1001, "");
    }
    // After the server's FIN, close our side too (as real clients do): the
    // server waits for that, or for its deadline.
    for mut c in clients.drain(..) {
        c.expect_eof(Duration::from_secs(3));
    }
    let status = srv.wait_exit(Duration::from_secs(5));
    let took = t.elapsed();
    let log = srv.log_text();
    assert!(
        status.is_some(),
        "no exit within 5 s of SIGTERM; log:\n{log}"
    );
    assert!(
        status.unwrap().success(),
        "exit status {status:?}; log:\n{log}"
    );
    eprintln!("exited 0 {took:?} after SIGTERM");
    assert!(
        took < Duration::from_secs(3),
        "clients all replied, yet exit took {took:?}"
    );
}

/// A client that sent a lot and reads only after the signal: the echoes
/// it gets are an intact, in-order prefix of what it sent (nothing
/// queued is cut), then close 1001.
#[test]
fn sigterm_with_much_queued_for_a_slow_reader() {
    const COUNT: usize = 16;
    const SIZE: usize = 512 << 10;
    let mut srv = BinServer::spawn(&["--shutdown-timeout", "5s"]);
    let mut c = connect(srv.addr);
    let mut w = c.stream.try_clone().unwrap();
    let writer = thread::spawn(move || {
        for i in 0..COUNT {
            let mut p = pattern(SIZE, i as u8);
            p[..8].copy_from_slice(&(i as u64).to_be_bytes());
            // The server may stop reading once it closed: a failed write is
            // fine.
            if w.write_all(&frame_bytes(OpCode::Binary, &p, true, true))
                .is_err()
            {
                return i;
            }
        }
        COUNT
    });
    // Let the server fill its queue for us.
    wait_readable(&c, 64 << 10, Duration::from_secs(5));
    thread::sleep(Duration::from_millis(300));

    let t = Instant::now();
    srv.signal("TERM");
    c.set_timeout(Duration::from_secs(5));
    let mut got = 0;
    let (code, reason) = loop {
        match c.recv() {
            Msg::Binary(b) => {
                let mut want = pattern(SIZE, got as u8);
                want[..8].copy_from_slice(&(got as u64).to_be_bytes());
                assert!(b == want, "echo {got} is not message {got}");
                got += 1;
            }
            Msg::Close(code, reason) => break (code, reason),
            other => panic!("unexpected {other:?}"),
        }
    };
    eprintln!("{got} of {COUNT} echoes before close {code:?}");
    assert_eq!(code, Some(1001), "reason {reason:?}");
    assert!(got >= 1, "nothing echoed");
    // Stop sending data (the writer ends once the server read it all),
    // then answer the close.
    let sent = writer.join().unwrap();
    assert!(got <= sent);
    let _ = c.try_send_raw(&frame_bytes(
        OpCode::Close,
        &close_payload(1001, ""),
        true,
        true,
    ));
    c.expect_eof(Duration::from_secs(5));
    drop(c);
    let status = srv.wait_exit(Duration::from_secs(7));
    let log = srv.log_text();
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} after {:?}; log:\n{log}",
        t.elapsed()
    );
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "exit took {:?} though the client closed",
        t.elapsed()
    );
}

/// A client that never reads while much is queued for it: the process
/// still exits 0 once --shutdown-timeout passes.
#[test]
fn sigterm_with_a_client_that_never_reads() {
    const TIMEOUT_S: u64 = 2;
    let mut srv = BinServer::spawn(&[
        "--shutdown-timeout",
        &format!("{TIMEOUT_S}s"),
        "--close-timeout",
        "60s",
    ]);
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
    wait_readable(&stuck, 64 << 10, Duration::from_secs(5));
    thread::sleep(Duration::from_millis(300));

    let t = Instant::now();
    srv.signal("TERM");
    // The well-behaved client closes quickly and is not held up.
    assert_eq!(ok.expect_close().0, Some(1001));
    ok.close(1001, "");
    ok.expect_eof(Duration::from_secs(2));
    drop(ok);

    let status = srv.wait_exit(Duration::from_secs(TIMEOUT_S + 2));
    let took = t.elapsed();
    let log = srv.log_text();
    assert!(
        status.is_some(),
        "no exit within {}s of SIGTERM; log:\n{log}",
        TIMEOUT_S + 2
    );
    assert!(
        status.unwrap().success(),
        "exit status {status:?}; log:\n{log}"
    );
    eprintln!("exited 0 {took:?} after SIGTERM with a stuck client");
    assert!(
        took >= Duration::from_millis(TIMEOUT_S * 1000 - 500),
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
    let mut srv = BinServer::spawn(&["--threads", "2", "--shutdown-timeout", "5s"]);
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
    let status = srv.wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?}; log:\n{}",
        srv.log_text()
    );

    for (args, want) in [
        (&["--threads", "0"][..], "--threads must be at least 1"),
        (&["--threads", "two"][..], "two"),
        (
            &["--threads", "2", "--app", "chat"][..],
            "--threads needs --app echo",
        ),
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
