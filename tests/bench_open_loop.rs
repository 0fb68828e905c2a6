//! `wsloop bench` for real traffic: the open loop (`--rate`) measures from
//! each message's scheduled time, so a slow server shows in the latency;
//! chat mode checks every delivery's room sequence number; the upgrade
//! carries `--header`, `--origin` and `--protocol`; `--progress` and the
//! JSON series count each second; bad values are named.
//!
//! Latency assertions are lower bounds only (a busy machine makes things
//! slower, never faster).

mod common;

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use wsloop::handshake::Request;
use wsloop::server::{ConnId, Ctx, Handle, Handler, Upgrade};
use wsloop::{Config, Message};

/// What the delaying server holds back.
type Held = (ConnId, Message<'static>, Instant);

/// An echo server that answers each message `delay` after it came, from
/// another thread (in order: every message waits the same time). Its
/// upgrade records the request's `X-Bench`, `Origin` and subprotocols and
/// chooses `bench.v1` when offered.
struct DelayEcho {
    delay: Duration,
    held: Sender<Held>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Handler for DelayEcho {
    fn on_upgrade(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, req: &Request) -> Upgrade {
        let offered: Vec<&str> = req.protocols().collect();
        self.seen.lock().unwrap().push(format!(
            "x-bench={:?} origin={:?} protocols={offered:?}",
            req.header("x-bench"),
            req.origin()
        ));
        Upgrade::Accept {
            protocol: offered.contains(&"bench.v1").then(|| "bench.v1".to_owned()),
            headers: Vec::new(),
        }
    }

    fn on_message(&mut self, _ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        let _ = self
            .held
            .send((id, msg.into_owned(), Instant::now() + self.delay));
    }
}

/// Sends what `held` gets when it is due.
fn answer_later(held: Receiver<Held>, handle: Handle) {
    for (id, msg, due) in held {
        thread::sleep(due.saturating_duration_since(Instant::now()));
        if handle.send(id, msg).is_err() {
            return; // the server stopped
        }
    }
}

struct Delayed {
    server: ServerThread<DelayEcho>,
    seen: Arc<Mutex<Vec<String>>>,
}

fn delay_server(delay: Duration) -> Delayed {
    let (tx, rx) = mpsc::channel();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let mut config = Config::default();
    config.idle_timeout = None;
    config.ping_interval = None;
    let server = start_server(
        config,
        DelayEcho {
            delay,
            held: tx,
            seen: seen.clone(),
        },
    );
    let handle = server.handle.clone();
    thread::spawn(move || answer_later(rx, handle));
    Delayed { server, seen }
}

fn bench(args: &[&str]) -> BinRun {
    run_wsloop("bench", args, None, Duration::from_secs(60))
}

/// The JSON summary of a run that must have succeeded.
fn summary(out: &BinRun) -> Value {
    assert_eq!(out.code, Some(0), "{out:?}");
    let v: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"));
    assert_eq!(v["errors"], 0, "{v}");
    v
}

fn num(v: &Value, path: &[&str]) -> f64 {
    let mut at = v;
    for k in path {
        at = &at[*k];
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {v}"))
}

/// A server that answers 50 ms late: the open loop's round trips include
/// the 50 ms.
#[test]
fn open_loop_latency_includes_the_servers_delay() {
    let srv = delay_server(Duration::from_millis(50));
    let url = format!("ws://{}/", srv.server.addr);
    let out = bench(&[
        &url,
        "--rate",
        "200",
        "--conns",
        "4",
        "--duration",
        "1s",
        "--warmup",
        "0",
        "--json",
    ]);
    let v = summary(&out);
    assert!(num(&v, &["msgs"]) > 0.0, "{v}");
    let p50 = num(&v, &["rtt_us", "p50"]);
    assert!(p50 >= 50_000.0, "p50 {p50} µs below the 50 ms delay: {v}");
    assert_eq!(v["rate"], 200, "{v}");
    assert_eq!(v["unsent"], 0, "{v}");
    assert_eq!(v["unanswered"], 0, "{v}");
    // 200 due in the second, each sent and echoed once.
    assert_eq!(v["sent"], 200, "{v}");
    assert_eq!(v["msgs"], 200, "{v}");
    // The rate is over the time the answers took, not the window alone.
    assert!(num(&v, &["answered_s"]) >= 1.0, "{v}");
}

/// Coordinated omission: one connection may have one message in flight,
/// the server takes 50 ms per message, and 40 are due in the first second.
/// The bench cannot send them on time; it sends each as soon as it can
/// (none skipped), says how far behind it fell, and times each from when
/// it was due: message k goes out at about 50·k ms and is answered at
/// 50·(k+1) ms, though due at 25·k ms, so half wait over 500 ms. Timed
/// from when they went out, every one would look like 50 ms.
#[test]
fn open_loop_counts_queueing_behind_a_slow_server() {
    let srv = delay_server(Duration::from_millis(50));
    let url = format!("ws://{}/", srv.server.addr);
    let out = bench(&[
        &url,
        "--rate",
        "40",
        "--conns",
        "1",
        "--pipeline",
        "1",
        "--duration",
        "1s",
        "--warmup",
        "0",
        "--json",
    ]);
    let v = summary(&out);
    let p50 = num(&v, &["rtt_us", "p50"]);
    assert!(
        p50 >= 250_000.0,
        "p50 {p50} µs: the wait behind the slow server is missing: {v}"
    );
    assert_eq!(v["sent"], 40, "every message due is sent: {v}");
    assert_eq!(v["unsent"], 0, "{v}");
    assert_eq!(v["msgs"], 40, "every one answered and measured: {v}");
    let lag = num(&v, &["lag_us", "max"]);
    assert!(
        lag >= 500_000.0,
        "behind by at most {lag} µs: the backlog is not reported: {v}"
    );
}

/// `--header`, `--origin` and `--protocol` are on the upgrade request; the
/// server must choose one of the subprotocols offered.
#[test]
fn upgrade_carries_headers_origin_and_protocols() {
    let srv = delay_server(Duration::ZERO);
    let url = format!("ws://{}/", srv.server.addr);
    let out = bench(&[
        &url,
        "--conns",
        "2",
        "--duration",
        "300ms",
        "--warmup",
        "0",
        "--header",
        "X-Bench: yes please",
        "--origin",
        "https://example.com",
        "--protocol",
        "other",
        "--protocol",
        "bench.v1",
        "--json",
    ]);
    let v = summary(&out);
    assert_eq!(v["open"], 2, "{v}");
    let seen = srv.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for s in &seen {
        assert_eq!(
            s,
            r#"x-bench=Some("yes please") origin=Some("https://example.com") protocols=["other", "bench.v1"]"#
        );
    }

    // A server that chooses none of them: no connection counts as open.
    let out = bench(&[
        &url,
        "--conns",
        "2",
        "--duration",
        "300ms",
        "--warmup",
        "0",
        "--protocol",
        "nobody.v9",
    ]);
    assert_eq!(out.code, Some(3), "{out:?}");
    assert!(
        out.stdout
            .contains("chose none of the subprotocols offered"),
        "{out:?}"
    );
}

/// Chat mode against `wsloop serve --app chat`: 12 members in 3 rooms (4
/// each) publish 200 a second; every publish due in the measured second is
/// delivered to the 4 members of its room, once and in order.
#[test]
fn chat_mode_delivers_every_message_once_in_order() {
    let srv = BinServer::spawn(&["--app", "chat"]);
    let url = format!("ws://{}/ws", srv.addr);
    let out = bench(&[
        &url,
        "--mode",
        "chat",
        "--conns",
        "12",
        "--rooms",
        "3",
        "--rate",
        "200",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--json",
    ]);
    let v = summary(&out);
    assert_eq!(v["mode"], "chat", "{v}");
    for k in ["gaps", "duplicates", "reorders", "undelivered", "unsent"] {
        assert_eq!(v[k], 0, "{k}: {v}");
    }
    // Due in the window: slots 40 to 239 (0.2 s to 1.2 s at 200/s), each
    // to 4 members; 240 published in all.
    assert_eq!(v["deliveries"], 800, "{v}");
    assert_eq!(v["sent"], 240, "{v}");
    assert!(num(&v, &["latency_us", "p50"]) > 0.0, "{v}");
}

/// A chat server that skips sequence numbers and delivers some messages
/// twice: the bench reports both and fails.
struct BadChat {
    seq: u64,
}

impl Handler for BadChat {
    fn on_open(&mut self, ctx: &mut Ctx<'_>, id: ConnId) {
        let _ = ctx.send_text(id, r#"{"type":"welcome","id":"1"}"#);
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        let Message::Text(t) = msg else { return };
        let v: Value = serde_json::from_str(&t).unwrap();
        let room = v["room"].as_str().unwrap().to_owned();
        if v["type"] == "join" {
            ctx.join(id, &room);
            let joined = format!(r#"{{"type":"joined","room":"{room}","seq":0,"epoch":"e"}}"#);
            let _ = ctx.send_text(id, &joined);
            return;
        }
        self.seq += 1;
        if self.seq % 10 == 5 {
            self.seq += 1; // number 5, 15, ... never sent
        }
        let text = v["text"].as_str().unwrap();
        let out = format!(
            r#"{{"type":"message","room":"{room}","seq":{},"from":"1","text":"{text}","ts":0}}"#,
            self.seq
        );
        let copies = if self.seq.is_multiple_of(10) { 2 } else { 1 };
        for _ in 0..copies {
            ctx.publish(&room, &Message::Text(out.clone().into()));
        }
    }
}

#[test]
fn chat_mode_reports_gaps_and_duplicates() {
    let mut config = Config::default();
    config.idle_timeout = None;
    config.ping_interval = None;
    let srv = start_server(config, BadChat { seq: 0 });
    let url = format!("ws://{}/ws", srv.addr);
    let out = bench(&[
        &url,
        "--mode",
        "chat",
        "--conns",
        "2",
        "--rate",
        "100",
        "--duration",
        "500ms",
        "--warmup",
        "0",
        "--json",
    ]);
    assert_eq!(out.code, Some(1), "errors were counted: {out:?}");
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("JSON");
    assert!(num(&v, &["gaps"]) >= 2.0, "{v}");
    assert!(num(&v, &["duplicates"]) >= 2.0, "{v}");
    assert_eq!(v["reorders"], 0, "{v}");
    assert!(num(&v, &["errors"]) >= 4.0, "{v}");
}

/// `--progress` prints a line a second although stderr is a pipe, and the
/// JSON series has one entry a second whose counts add up to the totals.
#[test]
fn progress_lines_and_series_count_each_second() {
    let srv = BinServer::spawn(&["--idle-timeout", "0", "--ping-interval", "0"]);
    let url = format!("ws://{}/", srv.addr);
    let out = bench(&[
        &url,
        "--rate",
        "100",
        "--conns",
        "2",
        "--duration",
        "2500ms",
        "--warmup",
        "0",
        "--progress",
        "--json",
    ]);
    let v = summary(&out);
    let lines = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("bench echo: "))
        .count();
    assert!(lines >= 2, "progress lines: {out:?}");
    assert!(!out.stderr.contains('\r'), "redrawn, not lines: {out:?}");
    let series = v["series"].as_array().expect("series");
    assert!(series.len() >= 3, "{v}");
    for (i, s) in series.iter().enumerate() {
        assert_eq!(s["t"], i as u64, "{v}");
    }
    let sum = |k: &str| series.iter().map(|s| s[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!(sum("sent"), v["sent"].as_u64().unwrap(), "{v}");
    assert_eq!(sum("sent"), 250, "2.5 s at 100/s: {v}");
    assert_eq!(sum("received"), 250, "{v}");
}

/// Bad values are refused before anything connects, naming the flag and
/// the value.
#[test]
fn bad_values_name_the_flag() {
    let url = "ws://127.0.0.1:9/";
    for (args, flag, value) in [
        (vec!["--rate", "0"], "--rate", "0"),
        (vec!["--rate", "fast"], "--rate", "fast"),
        (vec!["--header", "NoColon"], "--header", "NoColon"),
        (vec!["--header", "Bad Name: x"], "--header", "Bad Name: x"),
        (vec!["--header", "Host: evil"], "--header", "Host: evil"),
        (vec!["--header", "X-A: b\u{1}c"], "--header", "X-A: b\u{1}c"),
        (vec!["--origin", "example.com"], "--origin", "example.com"),
        (
            vec!["--origin", "https://a.com/path"],
            "--origin",
            "https://a.com/path",
        ),
        (vec!["--protocol", "a b"], "--protocol", "a b"),
        (vec!["--protocol", "a,b"], "--protocol", "a,b"),
        (vec!["--mode", "chat", "--rooms", "0"], "--rooms", "0"),
        (vec!["--mode", "latency", "--rate", "10"], "--rate", "10"),
        (vec!["--rooms", "2"], "--rooms", "2"),
        (
            vec!["--mode", "chat", "--conns", "2", "--rooms", "3"],
            "--rooms",
            "3",
        ),
    ] {
        let mut all = vec![url];
        all.extend_from_slice(&args);
        let out = bench(&all);
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(out.stderr.contains(flag), "{args:?} names {flag}: {out:?}");
        assert!(
            out.stderr.contains(value),
            "{args:?} names {value}: {out:?}"
        );
        assert!(!out.stderr.contains("panicked"), "{args:?}: {out:?}");
    }
}
