//! The chat's Redis backplane over real processes: a `redis-server` started
//! on a free loopback port (installed with apt-get if missing), two
//! `wsloop serve --app chat --redis redis://127.0.0.1:PORT` instances, and
//! members on each. Room messages cross both ways exactly once in `seq`
//! order, broadcasts cross, replay with `since` works across a server
//! restart (history is in Redis) and reports the gap, and when Redis stops
//! local delivery goes on and cross-instance delivery resumes once it is
//! back. `WSLOOP_SKIP_REDIS=1` skips these tests.
#![cfg(feature = "redis")]

mod common;
mod redisproc;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use redisproc::*;
use serde_json::{json, Value};

/// [`wait_backplane`] with a probe that waits [`BACKPLANE_WAIT`] for each
/// reply.
fn backplane_up(addr: SocketAddr, within: Duration) {
    wait_backplane_as(Peer::connect_backplane(addr), addr, within);
}

fn setup() -> Option<(Redis, BinServer, BinServer)> {
    let bin = redis_server()?;
    let redis = Redis::start(bin);
    let a = instance(&redis, &[]);
    let b = instance(&redis, &[]);
    backplane_up(a.addr, BACKPLANE_WAIT);
    backplane_up(b.addr, BACKPLANE_WAIT);
    Some((redis, a, b))
}

/// Reads room messages of `room` until `n` have arrived; panics on
/// anything else.
fn collect(p: &mut Peer, room: &str, n: usize) -> Vec<Value> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let m = p.recv();
        assert_eq!(m["type"], "message", "{}: unexpected {m}", p.id);
        assert_eq!(m["room"], room);
        assert!(m.get("local").is_none(), "{}: local-only {m}", p.id);
        got.push(m);
    }
    got
}

fn assert_seqs(got: &[Value], first: u64, who: &str) {
    let seqs: Vec<u64> = got.iter().map(seq).collect();
    let want: Vec<u64> = (first..first + got.len() as u64).collect();
    if seqs != want {
        let dups = seqs.len() - seqs.iter().collect::<HashSet<_>>().len();
        panic!("{who}: seqs not {first}.. exactly once in order ({dups} duplicates): {seqs:?}");
    }
}

// ------------------------------------------------------------------ tests

#[test]
fn messages_cross_instances_both_ways_exactly_once_in_order() {
    let Some((_redis, a_srv, b_srv)) = setup() else {
        return;
    };
    let t0 = Instant::now();
    let mut a = Peer::connect_backplane(a_srv.addr);
    let mut b = Peer::connect_backplane(b_srv.addr);
    let mut outsider = Peer::connect_backplane(b_srv.addr);
    // Ids are unique across instances (random instance prefix).
    let (pa, pb) = (
        a.id.split('-').next().unwrap().to_owned(),
        b.id.split('-').next().unwrap().to_owned(),
    );
    assert_ne!(pa, pb, "instance prefixes differ: {} {}", a.id, b.id);
    assert_ne!(a.id, b.id);
    assert_eq!(a.join("r")["seq"], 0);
    assert_eq!(b.join("r")["seq"], 0);

    // One message each way first.
    let a_id = a.id.clone();
    assert!(a_id.starts_with(&pa), "{a_id}");
    a.say("r", "hello from A");
    for p in [&mut a, &mut b] {
        let m = p.expect("message");
        assert_eq!((seq(&m), m["text"].as_str()), (1, Some("hello from A")));
        assert_eq!(m["from"].as_str(), Some(a_id.as_str()));
    }
    b.say("r", "hello from B");
    for p in [&mut a, &mut b] {
        let m = p.expect("message");
        assert_eq!((seq(&m), m["text"].as_str()), (2, Some("hello from B")));
    }

    // Both send at once: each sees the same 2N messages, numbered 3.. in
    // order, each once, each sender's own order kept.
    const N: usize = 200;
    let run = |mut p: Peer, tag: &'static str| {
        thread::spawn(move || {
            for i in 1..=N {
                p.say("r", &format!("{tag}{i}"));
                if i % 20 == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            let got = collect(&mut p, "r", 2 * N);
            (p, got)
        })
    };
    let (ta, tb) = (run(a, "a"), run(b, "b"));
    let (mut a, got_a) = ta.join().expect("A side");
    let (mut b, got_b) = tb.join().expect("B side");
    assert_seqs(&got_a, 3, "member on A");
    assert_seqs(&got_b, 3, "member on B");
    let texts = |g: &[Value]| -> Vec<String> {
        g.iter()
            .map(|m| m["text"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(texts(&got_a), texts(&got_b), "same order on both instances");
    for tag in ["a", "b"] {
        let mine: Vec<String> = texts(&got_a)
            .into_iter()
            .filter(|t| t.starts_with(tag))
            .collect();
        let want: Vec<String> = (1..=N).map(|i| format!("{tag}{i}")).collect();
        assert_eq!(mine, want, "{tag}'s messages once each, in its order");
    }
    a.silent(Duration::from_millis(300));
    b.silent(Duration::from_millis(10));
    outsider.silent(Duration::from_millis(10));

    // Broadcasts cross too, once, to everyone (sender included).
    a.send(json!({"type": "broadcast", "text": "to all from A"}));
    for p in [&mut a, &mut b, &mut outsider] {
        let m = p.expect("broadcast");
        assert_eq!(m["text"], "to all from A");
        assert!(m.get("local").is_none(), "{m}");
    }
    outsider.send(json!({"type": "broadcast", "text": "to all from B"}));
    for p in [&mut a, &mut b, &mut outsider] {
        assert_eq!(p.expect("broadcast")["text"], "to all from B");
    }
    for p in [&mut a, &mut b, &mut outsider] {
        p.silent(Duration::from_millis(200));
    }

    // Leave works across: B's member no longer gets A's messages.
    b.send(json!({"type": "leave", "room": "r"}));
    b.expect("left");
    a.say("r", "after b left");
    assert_eq!(seq(&a.expect("message")), 3 + 2 * N as u64);
    b.silent(Duration::from_millis(300));
    eprintln!(
        "cross-instance exchange of {} messages checked in {:?}",
        2 * N + 3,
        t0.elapsed()
    );
}

#[test]
fn replay_with_since_across_a_server_restart_and_gap() {
    let Some((redis, a_srv, b_srv)) = setup() else {
        return;
    };
    let mut a = Peer::connect_backplane(a_srv.addr);
    a.join("h");
    let mut b = Peer::connect_backplane(b_srv.addr);
    let epoch = b.join("h")["epoch"].as_str().unwrap().to_owned();
    for i in 1..=5 {
        a.say("h", &format!("m{i}"));
    }
    let seen = collect(&mut b, "h", 5);
    assert_seqs(&seen, 1, "b before the restart");
    collect(&mut a, "h", 5);

    // Instance B goes away (killed: no goodbye); A's member keeps talking.
    drop(b);
    drop(b_srv);
    for i in 6..=12 {
        a.say("h", &format!("m{i}"));
    }
    collect(&mut a, "h", 7);

    // A new B process: its history is Redis's, so the rejoin replays 6..12
    // exactly once, then live messages follow with no gap.
    let b_srv = instance(&redis, &[]);
    backplane_up(b_srv.addr, BACKPLANE_WAIT);
    let mut b = Peer::connect_backplane(b_srv.addr);
    b.send(json!({"type": "join", "room": "h", "since": 5, "epoch": epoch}));
    let j = b.expect("joined");
    assert_eq!((seq(&j), j["epoch"].as_str()), (12, Some(epoch.as_str())));
    let replay = collect(&mut b, "h", 7);
    assert_seqs(&replay, 6, "replay after the restart");
    for m in &replay {
        assert_eq!(m["text"], format!("m{}", seq(m)));
    }
    a.say("h", "m13");
    let live = collect(&mut b, "h", 1);
    assert_eq!((seq(&live[0]), live[0]["text"].as_str()), (13, Some("m13")));
    b.silent(Duration::from_millis(300));
    collect(&mut a, "h", 1);

    // While B's member is joined, a rejoin with since replays again
    // (as without Redis), and nothing twice afterwards.
    b.send(json!({"type": "join", "room": "h", "since": 11, "epoch": epoch}));
    assert_eq!(seq(&b.expect("joined")), 13);
    assert_seqs(&collect(&mut b, "h", 2), 12, "rejoin replay");
    a.say("h", "m14");
    assert_eq!(seq(&collect(&mut b, "h", 1)[0]), 14);
    b.silent(Duration::from_millis(300));
    collect(&mut a, "h", 1);

    // Redis keeps the last 1,000 of a room: an older since gets the gap.
    let t = Instant::now();
    for i in 1..=1005 {
        a.send(json!({"type": "message", "room": "h", "text": format!("m{}", 14 + i)}));
        if i % 100 == 0 {
            collect(&mut a, "h", 100);
        }
    }
    collect(&mut a, "h", 5);
    eprintln!("1005 messages through Redis in {:?}", t.elapsed());
    let mut c = Peer::connect_backplane(b_srv.addr);
    c.send(json!({"type": "join", "room": "h", "since": 3, "epoch": epoch}));
    assert_eq!(seq(&c.expect("joined")), 1019);
    let g = c.expect("gap");
    assert_eq!(
        (g["room"].as_str(), g["from"].as_u64(), g.get("reset")),
        (Some("h"), Some(20), None),
        "{g}"
    );
    let kept = collect(&mut c, "h", 1000);
    assert_seqs(&kept, 20, "kept history");
    c.silent(Duration::from_millis(300));
    // B's joined member got the 1005 live, in order.
    assert_seqs(&collect(&mut b, "h", 1005), 15, "live on B");

    // A since from another history is a reset: everything kept.
    let mut d = Peer::connect_backplane(a_srv.addr);
    d.send(json!({"type": "join", "room": "h", "since": 7, "epoch": "not-this-one"}));
    d.expect("joined");
    let g = d.expect("gap");
    assert_eq!(
        (g["from"].as_u64(), g["reset"].as_bool()),
        (Some(20), Some(true))
    );
    assert_eq!(seq(&d.expect("message")), 20);
}

#[test]
fn catching_up_mid_stream_across_instances_sees_every_message_once() {
    let Some((_redis, a_srv, b_srv)) = setup() else {
        return;
    };
    const N: u64 = 300;
    let mut b = Peer::connect_backplane(b_srv.addr);
    let epoch = b.join("s")["epoch"].as_str().unwrap().to_owned();
    // A sender on A streams m1..mN.
    let sender = {
        let addr = a_srv.addr;
        thread::spawn(move || {
            let mut s = Peer::connect_backplane(addr);
            s.join("s");
            for i in 1..=N {
                s.say("s", &format!("m{i}"));
                thread::sleep(Duration::from_millis(2));
            }
            let got = collect(&mut s, "s", N as usize);
            assert_seqs(&got, 1, "sender");
        })
    };
    let mut seqs = Vec::new();
    collect_until(&mut b, 60, &mut seqs);
    // Leave mid-stream (what was sent before "left" still arrives), come
    // back with since.
    leave_recording(&mut b, "s", &mut seqs);
    // The stream goes on without us: a member on the other instance sees
    // the room pass the last message we got.
    {
        let last = *seqs.last().unwrap();
        let mut probe = Peer::connect_backplane(a_srv.addr);
        if seq(&probe.join("s")) <= last {
            while seq(&probe.expect("message")) <= last {}
        }
    }
    b.send(json!({"type": "join", "room": "s", "since": seqs.last(), "epoch": epoch}));
    let j = b.expect("joined");
    assert!(seq(&j) > *seqs.last().unwrap(), "the stream went on: {j}");
    collect_until(&mut b, 150, &mut seqs);
    // Drop the connection and come back on the other instance.
    drop(b);
    thread::sleep(Duration::from_millis(100));
    let mut b = Peer::connect_backplane(a_srv.addr);
    b.send(json!({"type": "join", "room": "s", "since": seqs.last(), "epoch": epoch}));
    b.expect("joined");
    collect_until(&mut b, N, &mut seqs);
    let want: Vec<u64> = (1..=N).collect();
    assert_eq!(seqs, want, "every message once, in order");
    b.silent(Duration::from_millis(300));
    sender.join().expect("sender thread");
}

#[test]
fn redis_outage_keeps_local_delivery_and_resumes_after() {
    let Some((mut redis, a_srv, b_srv)) = setup() else {
        return;
    };
    let mut a = Peer::connect_backplane(a_srv.addr);
    let mut a2 = Peer::connect_backplane(a_srv.addr);
    let mut b = Peer::connect_backplane(b_srv.addr);
    for p in [&mut a, &mut a2, &mut b] {
        p.join("o");
    }
    a.say("o", "before");
    for p in [&mut a, &mut a2, &mut b] {
        assert_eq!(seq(&p.expect("message")), 1);
    }

    redis.stop();
    let down = Instant::now();
    // Local delivery goes on: A's members hear each other, marked local
    // and without seq; B's member hears nothing from A (and the reverse).
    // (Once each instance has noticed: a message may go out before.)
    for srv in [&a_srv, &b_srv] {
        wait_until(
            Duration::from_secs(10),
            "the instance to notice the outage",
            || srv.log_text().contains("redis backplane down"),
        );
    }
    a.say("o", "while down");
    for p in [&mut a, &mut a2] {
        let m = p.expect("message");
        assert_eq!(
            (m["text"].as_str(), m["local"].as_bool(), m.get("seq")),
            (Some("while down"), Some(true), None),
            "{m}"
        );
    }
    b.say("o", "B while down");
    let m = b.expect("message");
    assert_eq!(
        (m["text"].as_str(), m["local"].as_bool()),
        (Some("B while down"), Some(true))
    );
    a.send(json!({"type": "broadcast", "text": "bcast while down"}));
    for p in [&mut a, &mut a2] {
        let m = p.expect("broadcast");
        assert_eq!(m["local"], true, "{m}");
    }
    // A join while down is answered at once, from what this instance knows.
    let mut late = Peer::connect_backplane(a_srv.addr);
    late.send(json!({"type": "join", "room": "o"}));
    let j = late.expect("joined");
    assert_eq!((j["local"].as_bool(), seq(&j)), (Some(true), 1), "{j}");
    a.say("o", "to late");
    for p in [&mut a, &mut a2, &mut late] {
        assert_eq!(p.expect("message")["text"], "to late");
    }
    b.silent(Duration::from_millis(300));
    a.silent(Duration::from_millis(10));

    // Redis comes back, empty (no persistence): each instance reconnects
    // by itself.
    redis.restart();
    let up = Instant::now();
    backplane_up(a_srv.addr, Duration::from_secs(15));
    backplane_up(b_srv.addr, Duration::from_secs(15));
    let resumed = up.elapsed();
    eprintln!(
        "Redis down for {:?}; both instances back {resumed:?} after it returned",
        up - down
    );
    // The room's history started over: members are told (new epoch,
    // reset gap), once.
    // So did the broadcast stream's: a new welcome and a reset gap on
    // "*", in their own order relative to the room's.
    for p in [&mut a, &mut a2, &mut b, &mut late] {
        let got: Vec<Value> = (0..4).map(|_| p.recv()).collect();
        let (stream, room): (Vec<&Value>, Vec<&Value>) = got
            .iter()
            .partition(|m| m["type"] == "welcome" || m["room"] == "*");
        assert_eq!((stream.len(), room.len()), (2, 2), "{got:?}");
        assert_eq!(stream[0]["broadcast_seq"], 0, "{got:?}");
        assert_eq!(stream[1]["reset"], true, "{got:?}");
        let (j, g) = (room[0], room[1]);
        assert_eq!(j["type"], "joined", "{got:?}");
        assert_eq!((seq(j), j.get("local")), (0, None), "{j}");
        assert_eq!(
            (g["type"].as_str(), g["from"].as_u64(), g["reset"].as_bool()),
            (Some("gap"), Some(1), Some(true))
        );
    }
    // Delivery across instances resumes, exactly once, both ways.
    a.say("o", "after from A");
    for p in [&mut a, &mut a2, &mut b, &mut late] {
        let m = p.expect("message");
        assert_eq!(
            (seq(&m), m["text"].as_str()),
            (1, Some("after from A")),
            "{m}"
        );
    }
    b.say("o", "after from B");
    for p in [&mut a, &mut a2, &mut b, &mut late] {
        let m = p.expect("message");
        assert_eq!(
            (seq(&m), m["text"].as_str()),
            (2, Some("after from B")),
            "{m}"
        );
    }
    b.send(json!({"type": "broadcast", "text": "bcast after"}));
    for p in [&mut a, &mut a2, &mut b, &mut late] {
        let m = p.expect("broadcast");
        assert!(m.get("local").is_none(), "{m}");
    }
    for p in [&mut a, &mut a2, &mut b, &mut late] {
        p.silent(Duration::from_millis(200));
    }
    assert!(
        a_srv.log_text().contains("redis backplane down"),
        "the outage is logged: {}",
        a_srv.log_text()
    );
}

#[test]
fn redis_flag_is_checked() {
    for (args, want) in [
        (&["--app", "chat", "--redis", "http://x"][..], "--redis"),
        (
            &["--redis", "redis://127.0.0.1:1"],
            "--redis needs --app chat",
        ),
        (&["--app", "chat", "--redis"], "--redis needs a value"),
    ] {
        let out = run_wsloop("serve", args, None, BACKPLANE_WAIT);
        let err = &out.stderr;
        assert_eq!(out.code, Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let help = run_wsloop("serve", &["--help"], None, BACKPLANE_WAIT).stdout;
    assert!(help.contains("--redis URL"));
}
