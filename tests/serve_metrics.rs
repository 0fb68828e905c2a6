//! `wsloop serve --metrics` and `--metrics-addr`: Prometheus text that
//! promtool accepts, scraped while traffic flows, with counters that move
//! as the traffic says (messages, refusals by status, closes by code,
//! handshake failures, ping timeouts, read pauses), summed over
//! `--threads` loops.

mod common;
mod opsutil;

use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use common::*;
use opsutil::*;

const TOKEN: &str = "s3cret-token";

fn client(addr: SocketAddr) -> TestClient {
    TestClient::connect_with(addr, &format!("/?token={TOKEN}"), &[])
}

/// `n` text messages of assorted sizes, each echoed before the next.
fn echo(c: &mut TestClient, tag: usize, n: usize) -> u64 {
    let mut wire = 0;
    for i in 0..n {
        let m = format!("{tag}:{i}:{}", "x".repeat(i % 200));
        c.send_text(&m);
        c.expect_text(&m);
        // Client frames: 2 header bytes (+2 past 125 bytes) and a mask.
        wire += (m.len() + 6 + if m.len() > 125 { 2 } else { 0 }) as u64;
    }
    wire
}

#[test]
fn counters_follow_the_traffic_and_promtool_accepts_every_scrape() {
    let srv = BinServer::spawn(&["--metrics", "--token", TOKEN, "--max-message", "1K"]);
    let addr = srv.addr;

    // The token guards the metrics as it guards upgrades.
    let r = get_with_token(addr, "/metrics", None);
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.header("www-authenticate").is_some(), "{r:?}");
    let r = get_with_token(addr, "/metrics", Some("wrong"));
    assert_eq!(r.status, 401, "{r:?}");
    let first = scrape(addr, Some(TOKEN));
    promtool_check(&first);
    assert_eq!(value(&first, "wsloop_event_loops"), Some(1.0), "{first}");
    assert_eq!(value(&first, "wsloop_ready"), Some(1.0), "{first}");
    assert_eq!(count(&first, "wsloop_messages_received_total"), 0);

    // An upgrade without the token: 401, counted with the two above.
    match TestClient::try_connect(addr) {
        Err(r) => assert_eq!(r.status, 401, "{r:?}"),
        Ok(_) => panic!("upgraded without the token"),
    }
    // A request that is not HTTP: 400, a handshake failure.
    let r = http_raw(addr, b"NOT HTTP AT ALL\r\n\r\n");
    assert_eq!(r.status, 400, "{r:?}");

    // Load: four clients echo while the metrics are scraped.
    const CLIENTS: usize = 4;
    const EACH: usize = 300;
    let load: Vec<_> = (0..CLIENTS)
        .map(|t| {
            thread::spawn(move || {
                let mut c = client(addr);
                let wire = echo(&mut c, t, EACH);
                c.close_and_wait(1000);
                wire
            })
        })
        .collect();
    let mut last = 0;
    let mut scrapes = 0;
    while !load.iter().all(|t| t.is_finished()) || scrapes < 3 {
        let text = scrape(addr, Some(TOKEN));
        promtool_check(&text);
        let n = count(&text, "wsloop_messages_received_total");
        assert!(n >= last, "messages_received went back from {last} to {n}");
        assert!(n <= (CLIENTS * EACH) as u64, "{n} messages counted");
        last = n;
        scrapes += 1;
    }
    let sent_wire: u64 = load.into_iter().map(|t| t.join().unwrap()).sum();

    // One message over --max-message: close 1009.
    let mut big = client(addr);
    big.send_text(&"y".repeat(2000));
    let (code, _) = big.expect_close();
    assert_eq!(code, Some(1009));
    big.close(1009, "");
    big.expect_eof(Duration::from_secs(5));

    let text = scrape(addr, Some(TOKEN));
    promtool_check(&text);
    eprintln!("{scrapes} scrapes during the load; at the end:\n{text}");
    let n = (CLIENTS * EACH) as u64;
    assert_eq!(count(&text, "wsloop_messages_received_total"), n, "{text}");
    assert_eq!(count(&text, "wsloop_messages_sent_total"), n, "{text}");
    assert!(count(&text, "wsloop_received_bytes_total") >= sent_wire + 2000);
    assert_eq!(count(&text, "wsloop_upgrades_total"), CLIENTS as u64 + 1);
    assert_eq!(
        count(&text, "wsloop_refusals_total{status=\"401\"}"),
        3,
        "two scrapes and an upgrade without the token: {text}"
    );
    assert_eq!(count(&text, "wsloop_refusals_total{status=\"400\"}"), 1);
    assert_eq!(
        count(
            &text,
            "wsloop_handshake_failures_total{reason=\"malformed\"}"
        ),
        1,
        "{text}"
    );
    assert_eq!(
        count(&text, "wsloop_closes_total{code=\"1000\"}"),
        CLIENTS as u64
    );
    assert_eq!(
        count(&text, "wsloop_closes_total{code=\"1009\"}"),
        1,
        "{text}"
    );
    assert_eq!(count(&text, "wsloop_connections_open"), 0, "{text}");
    assert_eq!(count(&text, "wsloop_handler_panics_total"), 0);
    srv.assert_no_panic();
}

#[test]
fn a_peer_that_never_answers_pings_and_one_that_never_reads_are_counted() {
    let srv = BinServer::spawn(&[
        "--metrics",
        "--ping-interval",
        "1s",
        "--pong-timeout",
        "1s",
        "--write-high",
        "64K",
    ]);
    let addr = srv.addr;
    // Never reads: no pong, and its echoes pile up until reading it pauses.
    let mute = connect(addr);
    let mut w = mute.stream.try_clone().unwrap();
    let writer = thread::spawn(move || {
        use std::io::Write;
        let frame = frame_bytes(wsloop::frame::OpCode::Binary, &[7u8; 16 << 10], true, true);
        // Until the socket buffers fill or the server drops us.
        for _ in 0..256 {
            if w.write_all(&frame).is_err() {
                break;
            }
        }
    });
    let mut text = String::new();
    wait_until(
        Duration::from_secs(30),
        "a read pause and a ping timeout",
        || {
            text = scrape(addr, None);
            count(&text, "wsloop_read_pauses_total") >= 1
                && count(&text, "wsloop_ping_timeouts_total") == 1
        },
    );
    promtool_check(&text);
    assert_eq!(
        count(&text, "wsloop_closes_total{code=\"1006\"}"),
        1,
        "{text}"
    );
    mute.stream.shutdown(std::net::Shutdown::Both).ok();
    writer.join().unwrap();
}

#[test]
fn a_separate_metrics_listener_sums_every_loop() {
    let maddr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let srv = BinServer::spawn(&["--threads", "2", "--metrics-addr", &maddr.to_string()]);
    let addr = srv.addr;
    // Not on the main port without --metrics.
    assert_eq!(http_get(addr, "/metrics").status, 426);
    // Only metrics on the metrics port.
    assert_eq!(http_get(maddr, "/").status, 404);
    match TestClient::try_connect(maddr) {
        Err(r) => assert_eq!(r.status, 404, "{r:?}"),
        Ok(_) => panic!("upgraded on the metrics port"),
    }
    const CLIENTS: usize = 40;
    const EACH: usize = 25;
    let mut clients: Vec<TestClient> = (0..CLIENTS).map(|_| connect(addr)).collect();
    for (t, c) in clients.iter_mut().enumerate() {
        echo(c, t, EACH);
    }
    // The listener reads what the loops published: within about a second.
    let want = (CLIENTS * EACH) as u64;
    let mut text = String::new();
    wait_until(Duration::from_secs(10), "every echo counted", || {
        text = scrape(maddr, None);
        count(&text, "wsloop_messages_received_total") == want
            && count(&text, "wsloop_connections_open") == CLIENTS as u64
    });
    promtool_check(&text);
    assert_eq!(value(&text, "wsloop_event_loops"), Some(2.0), "{text}");
    assert_eq!(count(&text, "wsloop_messages_sent_total"), want, "{text}");
    for c in clients {
        c.close_and_wait(1000);
    }
    wait_until(Duration::from_secs(10), "every close counted", || {
        text = scrape(maddr, None);
        count(&text, "wsloop_closes_total{code=\"1000\"}") == CLIENTS as u64
    });
}

#[test]
fn the_chat_adds_its_members_and_publishes() {
    let srv = BinServer::spawn(&["--app", "chat", "--metrics"]);
    let mut a = Peer::connect(srv.addr);
    let mut b = Peer::connect(srv.addr);
    a.join("r");
    b.join("r");
    for i in 0..3 {
        a.say("r", &format!("hello {i}"));
        assert_eq!(b.expect("message")["text"], format!("hello {i}"));
    }
    a.send(serde_json::json!({"type": "broadcast", "text": "all"}));
    assert_eq!(b.expect("broadcast")["text"], "all");
    // Refused (not a member): not a publish.
    b.send(serde_json::json!({"type": "message", "room": "elsewhere", "text": "x"}));
    b.expect("error");
    let text = scrape(srv.addr, None);
    promtool_check(&text);
    assert_eq!(value(&text, "wsloop_chat_members"), Some(2.0), "{text}");
    assert_eq!(
        count(&text, "wsloop_chat_publishes_total{kind=\"room\"}"),
        3,
        "{text}"
    );
    assert_eq!(
        count(&text, "wsloop_chat_publishes_total{kind=\"broadcast\"}"),
        1,
        "{text}"
    );
    assert_eq!(value(&text, "wsloop_ready"), Some(1.0), "{text}");
    assert!(value(&text, "wsloop_chat_redis_up").is_none(), "{text}");
}
