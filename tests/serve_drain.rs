//! Draining on SIGTERM: at once `/readyz` answers 503 and a new upgrade
//! gets 503 with Retry-After (the listener stays open for that), while
//! `/healthz` stays 200; open connections get what was queued for them,
//! then close 1001; the process exits once every WebSocket has closed
//! (a request that arrived during the drain does not hold it up), and a
//! second signal exits at once with 128 + the signal.

mod common;
mod opsutil;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use opsutil::*;

fn message(i: usize) -> String {
    format!("message {i} {}", "z".repeat(i * 7))
}

/// Waits until `c`'s socket holds `bytes` unread bytes (the server has
/// read what `c` sent and written the echoes).
fn wait_readable(c: &TestClient, bytes: usize) {
    let mut buf = vec![0u8; bytes];
    c.stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    wait_until(
        Duration::from_secs(10),
        "the echoes",
        || matches!(c.stream.peek(&mut buf), Ok(n) if n >= bytes),
    );
    c.stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
}

#[test]
fn during_the_drain_new_sessions_get_503_and_open_ones_their_data_then_1001() {
    const M: usize = 40;
    // Long enough that the probes below always fall inside the drain: a
    // client that never answers the close holds it until this deadline.
    let mut srv = BinServer::spawn(&["--shutdown-timeout", "60s", "--metrics"]);
    let addr = srv.addr;
    let r = http_get(addr, "/readyz");
    assert_eq!(
        (r.status, r.body_text().as_str()),
        (200, "ready\n"),
        "{r:?}"
    );

    let mut a = connect(addr);
    for i in 0..M {
        a.send_text(&message(i));
    }
    wait_readable(&a, (0..M).map(|i| 2 + message(i).len()).sum());
    // Never reads, never answers the close: the drain lasts while it is
    // connected.
    let holder = connect(addr);

    srv.signal("TERM");
    wait_until(Duration::from_secs(10), "/readyz to answer 503", || {
        http_get(addr, "/readyz").status == 503
    });
    let r = http_get(addr, "/readyz");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("5"), "{r:?}");
    match TestClient::try_connect(addr) {
        Err(r) => {
            assert_eq!(r.status, 503, "{r:?}");
            assert_eq!(r.header("retry-after"), Some("5"), "{r:?}");
        }
        Ok(_) => panic!("a WebSocket was opened during the drain"),
    }
    // Liveness is not readiness.
    assert_eq!(http_get(addr, "/healthz").status, 200);
    let text = scrape(addr, None);
    assert_eq!(value(&text, "wsloop_draining"), Some(1.0), "{text}");
    assert_eq!(value(&text, "wsloop_ready"), Some(0.0), "{text}");
    assert!(
        count(&text, "wsloop_refusals_total{status=\"503\"}") >= 2,
        "{text}"
    );
    promtool_check(&text);

    // What was queued for `a` arrives whole, then the close.
    for i in 0..M {
        a.expect_text(&message(i));
    }
    let (code, reason) = a.expect_close();
    assert_eq!(code, Some(1001), "reason {reason:?}");
    a.close(1001, "");
    a.expect_eof(Duration::from_secs(10));
    assert!(
        srv.child.try_wait().unwrap().is_none(),
        "exited while a connection was still draining; log:\n{}",
        srv.log_text()
    );
    // Impatient: a second signal ends it at once, as a shell reports a
    // death by SIGTERM.
    srv.signal("TERM");
    let status = srv.wait_exit(Duration::from_secs(10));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(143),
        "log:\n{}",
        srv.log_text()
    );
    drop(holder);
}

#[test]
fn the_drain_ends_when_the_last_websocket_closes_whatever_else_is_connected() {
    let mut srv = BinServer::spawn(&["--shutdown-timeout", "60s"]);
    let addr = srv.addr;
    let mut a = connect(addr);
    let t = Instant::now();
    srv.signal("TERM");
    let (code, _) = a.expect_close();
    assert_eq!(code, Some(1001));
    // Arrives during the drain and never finishes its request; and a
    // health check in between.
    let mut half = tcp_connect(addr);
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    assert_eq!(http_get(addr, "/healthz").status, 200);
    a.close(1001, "");
    a.expect_eof(Duration::from_secs(10));
    let status = srv.wait_exit(Duration::from_secs(30));
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}; log:\n{}",
        srv.log_text()
    );
    let took = t.elapsed();
    eprintln!("exited {took:?} after SIGTERM");
    assert!(
        took < Duration::from_secs(45),
        "the half-sent request held the exit up to the deadline ({took:?})"
    );
    drop(half);
}
