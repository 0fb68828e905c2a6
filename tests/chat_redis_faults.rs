//! The chat's Redis backplane under faults, with a real `redis-server`
//! (installed with apt-get if missing; `WSLOOP_SKIP_REDIS=1` skips):
//! - Redis paused (SIGSTOP) with a batch in flight, longer than the I/O
//!   timeout: the batch is sent again until Redis answers, and stored and
//!   delivered once (not also delivered locally);
//! - a full publish queue refuses messages with an error to retry, and
//!   every message is then either refused or delivered, once;
//! - a graceful shutdown (SIGTERM) waits until Redis has the queued
//!   messages.
#![cfg(feature = "redis")]

mod common;
mod redisproc;

use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use redisproc::*;
use serde_json::{json, Value};

/// Everything `p` receives until nothing came for `quiet` (or `max`).
fn drain(p: &mut Peer, quiet: Duration, max: Duration) -> Vec<Value> {
    let start = Instant::now();
    let mut got = Vec::new();
    while start.elapsed() < max {
        match p.try_recv(quiet) {
            Some(v) => got.push(v),
            None => break,
        }
    }
    got
}

/// Room messages by text: how many times each arrived, numbered and
/// local.
#[derive(Default, Debug)]
struct Seen {
    numbered: HashMap<String, Vec<u64>>,
    local: HashMap<String, usize>,
}

fn seen(msgs: &[Value]) -> Seen {
    let mut s = Seen::default();
    for m in msgs.iter().filter(|m| m["type"] == "message") {
        let text = m["text"].as_str().unwrap().to_owned();
        if m["local"] == true {
            assert!(m.get("seq").is_none(), "{m}");
            *s.local.entry(text).or_default() += 1;
        } else {
            s.numbered.entry(text).or_default().push(seq(m));
        }
    }
    s
}

impl Seen {
    /// Each text at most once, in either form.
    fn assert_once(&self, who: &str) {
        for (t, seqs) in &self.numbered {
            assert_eq!(seqs.len(), 1, "{who}: {t:?} numbered {seqs:?}");
            assert!(
                !self.local.contains_key(t),
                "{who}: {t:?} numbered and local"
            );
        }
        for (t, n) in &self.local {
            assert_eq!(*n, 1, "{who}: {t:?} local {n} times");
        }
    }
}

fn setup(args: &[&str]) -> Option<(Redis, BinServer, BinServer)> {
    let redis = Redis::start(redis_server()?);
    let a = instance(&redis, args);
    let b = instance(&redis, args);
    wait_backplane(a.addr, BACKPLANE_WAIT);
    wait_backplane(b.addr, BACKPLANE_WAIT);
    Some((redis, a, b))
}

#[test]
fn a_batch_whose_reply_is_lost_is_stored_and_delivered_once() {
    let Some((mut redis, a_srv, b_srv)) = setup(&[]) else {
        return;
    };
    let mut a = Peer::connect_backplane(a_srv.addr);
    let mut a2 = Peer::connect_backplane(a_srv.addr);
    let mut b = Peer::connect_backplane(b_srv.addr);
    for p in [&mut a, &mut a2, &mut b] {
        p.join("f");
    }
    a.say("f", "m0");
    for p in [&mut a, &mut a2, &mut b] {
        assert_eq!(seq(&p.expect("message")), 1);
    }

    // Redis stops answering with m1 in flight, longer than the 5 s I/O
    // timeout; m2 comes once the instance has noticed.
    redis.pause();
    a.say("f", "m1");
    let paused = Instant::now();
    wait_until(Duration::from_secs(30), "the stall to be noticed", || {
        a_srv.log_text().contains("no reply for") || paused.elapsed() > Duration::from_secs(7)
    });
    thread::sleep(Duration::from_millis(300));
    a.say("f", "m2");
    thread::sleep(Duration::from_secs(2));
    redis.resume();

    let quiet = Duration::from_secs(3);
    let max = Duration::from_secs(30);
    let (ga, ga2, gb) = (
        drain(&mut a, quiet, max),
        drain(&mut a2, quiet, max),
        drain(&mut b, quiet, max),
    );
    for (who, got) in [("a", &ga), ("a2", &ga2), ("b", &gb)] {
        let s = seen(got);
        s.assert_once(who);
        // m1 went to Redis before the stall: numbered, seq 2, for all.
        assert_eq!(s.numbered.get("m1"), Some(&vec![2]), "{who}: {got:?}");
        assert!(!s.local.contains_key("m1"), "{who}: {got:?}");
    }
    // m2 was sent while the instance knew Redis was away: here only.
    for (who, got) in [("a", &ga), ("a2", &ga2)] {
        assert_eq!(seen(got).local.get("m2"), Some(&1), "{who}: {got:?}");
    }
    assert!(!seen(&gb).local.contains_key("m2") && !seen(&gb).numbered.contains_key("m2"));
    // Delivery goes on, numbered, after the outage.
    a.say("f", "m3");
    for p in [&mut a, &mut a2, &mut b] {
        let m = p.expect("message");
        assert_eq!((seq(&m), m["text"].as_str()), (3, Some("m3")), "{m}");
    }
    for srv in [&a_srv, &b_srv] {
        srv.assert_no_panic();
    }
}

#[test]
fn a_full_publish_queue_asks_to_retry_and_nothing_is_lost_or_doubled() {
    let Some((mut redis, a_srv, b_srv)) = setup(&["--redis-queue", "16K"]) else {
        return;
    };
    let mut a = Peer::connect_backplane(a_srv.addr);
    let mut b = Peer::connect_backplane(b_srv.addr);
    a.join("q");
    b.join("q");
    redis.pause();
    // Each message weighs about 3 KiB in the queue: a few fill 16 KiB.
    let pad = "x".repeat(1000);
    let n = 30;
    for i in 0..n {
        a.say("q", &format!("m{i} {pad}"));
    }
    let mut refused = Vec::new();
    let mut early = Vec::new();
    // The refusals come at once; delivery waits for Redis.
    for v in drain(&mut a, Duration::from_millis(500), Duration::from_secs(5)) {
        if v["type"] == "error" {
            assert_eq!(v["retry"], true, "{v}");
            assert!(v["message"].as_str().unwrap().contains("retry"), "{v}");
            refused.push(v);
        } else {
            early.push(v);
        }
    }
    assert!(!refused.is_empty(), "nothing refused");
    redis.resume();
    let mut ga = early;
    ga.extend(drain(
        &mut a,
        Duration::from_secs(3),
        Duration::from_secs(30),
    ));
    let gb = drain(&mut b, Duration::from_secs(3), Duration::from_secs(30));
    let (sa, sb) = (seen(&ga), seen(&gb));
    sa.assert_once("a");
    sb.assert_once("b");
    // Every message is refused or delivered, never both, never twice.
    let delivered = sa.numbered.len() + sa.local.len();
    assert_eq!(
        delivered + refused.len(),
        n,
        "{} delivered + {} refused",
        delivered,
        refused.len()
    );
    for t in sa.numbered.keys() {
        assert!(sb.numbered.contains_key(t), "b lacks {t:?}");
    }
    // Numbered from 1, without a hole.
    let mut seqs: Vec<u64> = sb.numbered.values().flatten().copied().collect();
    seqs.sort();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    eprintln!(
        "{n} sent: {} refused (retry), {} numbered, {} local",
        refused.len(),
        sa.numbered.len(),
        sa.local.len()
    );
}

#[test]
fn graceful_shutdown_flushes_queued_messages_to_redis() {
    let Some((mut redis, mut a_srv, b_srv)) = setup(&["--shutdown-timeout", "20s"]) else {
        return;
    };
    let mut a = Peer::connect_backplane(a_srv.addr);
    let mut b = Peer::connect_backplane(b_srv.addr);
    a.join("s");
    b.join("s");
    redis.pause();
    const N: usize = 20;
    for i in 1..=N {
        a.say("s", &format!("m{i}"));
    }
    thread::sleep(Duration::from_millis(300));
    // The sender leaves: nothing holds the shutdown but the queue.
    drop(a);
    thread::sleep(Duration::from_millis(300));
    // SIGTERM while Redis holds none of them; it comes back a second later,
    // well within the shutdown deadline.
    a_srv.signal("TERM");
    thread::sleep(Duration::from_secs(1));
    redis.resume();
    let st = a_srv
        .wait_exit(Duration::from_secs(25))
        .expect("A exits within its shutdown deadline");
    assert!(st.success(), "{st}: {}", a_srv.log_text());
    let got = drain(&mut b, Duration::from_secs(3), Duration::from_secs(30));
    let s = seen(&got);
    s.assert_once("b");
    let mut texts: Vec<(u64, String)> = s.numbered.iter().map(|(t, q)| (q[0], t.clone())).collect();
    texts.sort();
    let want: Vec<(u64, String)> = (1..=N).map(|i| (i as u64, format!("m{i}"))).collect();
    assert_eq!(texts, want, "b got every queued message once, in order");
    assert!(
        a_srv.log_text().contains("flushed to Redis"),
        "{}",
        a_srv.log_text()
    );
    // Redis has them too: a new member replays them.
    let mut c = Peer::connect_backplane(b_srv.addr);
    c.send(json!({"type": "join", "room": "s", "since": 0}));
    assert_eq!(seq(&c.expect("joined")), N as u64);
    for i in 1..=N {
        assert_eq!(c.expect("message")["text"], format!("m{i}"));
    }
}
