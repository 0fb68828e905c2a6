//! Broadcasts through Redis are one numbered stream kept like a room's
//! (issue 16, item 2), with a real `redis-server` (installed with apt-get
//! if missing; `WSLOOP_SKIP_REDIS=1` skips): broadcasts sent on two
//! servers reach members on both in one `seq` order, each once; a member
//! that reconnects (to either server) with `broadcast_since` gets exactly
//! what it missed, then live ones, while broadcasts keep coming; a `since`
//! older than kept gets a `gap` on room "*"; Redis restarted empty gives
//! a new `broadcast_epoch` (a second `welcome`) and a reset `gap`.
#![cfg(feature = "redis")]

mod common;
mod redisproc;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use common::*;
use redisproc::*;
use serde_json::json;
use wsloop::client::connect;

fn broadcast(p: &mut Peer, text: &str) {
    p.send(json!({"type": "broadcast", "text": text}));
}

/// The next broadcast, skipping nothing: anything else fails.
fn next_broadcast(p: &mut Peer) -> (u64, String) {
    let b = p.expect("broadcast");
    assert!(b.get("local").is_none(), "through Redis: {b}");
    (seq(&b), b["text"].as_str().expect("text").to_owned())
}

/// Reconnects with `broadcast_since`/`broadcast_epoch`.
fn reconnect(addr: SocketAddr, since: u64, epoch: &str) -> Peer {
    let url = format!("ws://{addr}/ws?broadcast_since={since}&broadcast_epoch={epoch}");
    Peer::from_ws(connect(&url).expect("reconnect"))
}

/// Where the welcome says the broadcast stream stands.
fn stream(p: &Peer) -> (u64, String) {
    let w = &p.welcome;
    let seq = w["broadcast_seq"].as_u64();
    let epoch = w["broadcast_epoch"].as_str();
    match (seq, epoch) {
        (Some(s), Some(e)) if !e.is_empty() => (s, e.to_owned()),
        _ => panic!("the welcome names the broadcast stream: {w}"),
    }
}

fn servers(redis: &Redis, args: &[&str]) -> Vec<BinServer> {
    let s: Vec<BinServer> = (0..2).map(|_| instance(redis, args)).collect();
    for srv in &s {
        wait_backplane(srv.addr, BACKPLANE_WAIT);
    }
    s
}

#[test]
fn broadcasts_from_two_servers_reach_members_on_both_in_one_order_exactly_once() {
    let Some(bin) = redis_server() else {
        return;
    };
    let redis = Redis::start(bin);
    let srv = servers(&redis, &[]);
    let mut listeners: Vec<Peer> = (0..4)
        .map(|i| Peer::connect_backplane(srv[i % 2].addr))
        .collect();
    for l in &listeners {
        assert_eq!(stream(l).0, 0, "{}", l.welcome);
    }
    let epoch = stream(&listeners[0]).1;
    for l in &listeners {
        assert_eq!(stream(l).1, epoch, "one stream for both servers");
    }
    const EACH: usize = 60;
    // One sender per server, at once; each also receives everything.
    let senders: Vec<_> = (0..2)
        .map(|k| {
            let mut p = Peer::connect_backplane(srv[k].addr);
            thread::spawn(move || {
                for i in 0..EACH {
                    broadcast(&mut p, &format!("s{k}-{i}"));
                }
                (0..2 * EACH)
                    .map(|_| next_broadcast(&mut p))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut got: Vec<Vec<(u64, String)>> = listeners
        .iter_mut()
        .map(|l| (0..2 * EACH).map(|_| next_broadcast(l)).collect())
        .collect();
    for s in senders {
        got.push(s.join().expect("sender"));
    }
    let first = got[0].clone();
    let seqs: Vec<u64> = first.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=2 * EACH as u64).collect::<Vec<_>>());
    let texts: HashSet<&str> = first.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts.len(), 2 * EACH, "each broadcast once");
    for k in 0..2 {
        let mine: Vec<&str> = first
            .iter()
            .map(|(_, t)| t.as_str())
            .filter(|t| t.starts_with(&format!("s{k}-")))
            .collect();
        let sent: Vec<String> = (0..EACH).map(|i| format!("s{k}-{i}")).collect();
        assert_eq!(mine, sent, "sender {k}'s broadcasts in its order");
    }
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &first, "member {i} saw another order");
    }
    for l in &mut listeners {
        l.silent(Duration::from_millis(300));
    }
    for s in &srv {
        s.assert_no_panic();
    }
}

#[test]
fn a_member_reconnecting_with_broadcast_since_gets_exactly_what_it_missed_then_live() {
    let Some(bin) = redis_server() else {
        return;
    };
    let redis = Redis::start(bin);
    let srv = servers(&redis, &[]);
    let mut stay = Peer::connect_backplane(srv[0].addr);
    let mut a = Peer::connect_backplane(srv[0].addr);
    let (start, epoch) = stream(&a);
    assert_eq!(start, 0);
    // Broadcasts keep coming from server 1 while `a` hops between the
    // servers: each reconnect's replay races live broadcasts.
    const N: usize = 200;
    let mut sender = Peer::connect_backplane(srv[1].addr);
    let sending = thread::spawn(move || {
        for i in 0..N {
            broadcast(&mut sender, &format!("n{i}"));
            thread::sleep(Duration::from_millis(3));
        }
        sender
    });
    let mut seen: Vec<(u64, String)> = Vec::new();
    let mut hops = 0;
    while seen.len() < N {
        // A few live ones, then away for a while, then back on the other
        // server with what it has.
        for _ in 0..(7 + hops % 5).min(N - seen.len()) {
            seen.push(next_broadcast(&mut a));
        }
        if seen.len() == N {
            break;
        }
        drop(a);
        thread::sleep(Duration::from_millis(25));
        hops += 1;
        let last = seen.last().map_or(0, |(s, _)| *s);
        a = reconnect(srv[hops % 2].addr, last, &epoch);
        let (at, e) = stream(&a);
        assert_eq!(e, epoch, "{}", a.welcome);
        assert!(at >= last, "welcome {at} before what it had ({last})");
    }
    let sender = sending.join().expect("sender");
    let want: Vec<(u64, String)> = (0..N).map(|i| (i as u64 + 1, format!("n{i}"))).collect();
    assert_eq!(seen, want, "after {hops} reconnects: each once, in order");
    a.silent(Duration::from_millis(300));
    let kept: Vec<(u64, String)> = (0..N).map(|_| next_broadcast(&mut stay)).collect();
    assert_eq!(kept, want);

    // Then live: the next one once.
    let mut sender = sender;
    broadcast(&mut sender, "after");
    assert_eq!(next_broadcast(&mut a), (N as u64 + 1, "after".to_owned()));
    a.silent(Duration::from_millis(300));
    assert!(hops >= 5, "only {hops} reconnects");
    for s in &srv {
        s.assert_no_panic();
    }
}

#[test]
fn older_than_kept_is_a_gap_and_redis_restarted_empty_is_a_new_epoch_with_a_reset_gap() {
    let Some(bin) = redis_server() else {
        return;
    };
    let mut redis = Redis::start(bin);
    let srv = servers(&redis, &["--history", "3"]);
    let mut a = Peer::connect_backplane(srv[0].addr);
    let mut b = Peer::connect_backplane(srv[1].addr);
    let (_, epoch) = stream(&a);
    for i in 1..=5 {
        broadcast(&mut b, &format!("b{i}"));
    }
    for p in [&mut a, &mut b] {
        for i in 1..=5 {
            assert_eq!(next_broadcast(p), (i, format!("b{i}")));
        }
    }
    // Since 1, with 3..5 kept: told what is gone, then the kept ones.
    let mut c = reconnect(srv[0].addr, 1, &epoch);
    assert_eq!(stream(&c), (5, epoch.clone()));
    let g = c.expect("gap");
    assert_eq!(
        (g["room"].as_str(), g["from"].as_u64(), g.get("reset")),
        (Some("*"), Some(3), None),
        "{g}"
    );
    for i in 3..=5 {
        assert_eq!(next_broadcast(&mut c), (i, format!("b{i}")));
    }
    c.silent(Duration::from_millis(200));
    drop(c);

    // Redis loses everything: members are told the stream started over
    // (a new welcome, then a reset gap), once.
    redis.kill();
    redis.restart();
    let mut fresh = None;
    for p in [&mut a, &mut b] {
        let w = p.expect("welcome");
        assert_eq!(w["id"].as_str(), Some(p.id.as_str()), "{w}");
        let e = w["broadcast_epoch"].as_str().expect("epoch").to_owned();
        assert_ne!(e, epoch, "{w}");
        assert_eq!(w["broadcast_seq"], 0, "{w}");
        assert_eq!(*fresh.get_or_insert(e.clone()), e, "one new stream");
        let g = p.expect("gap");
        assert_eq!(
            (g["room"].as_str(), g["reset"].as_bool()),
            (Some("*"), Some(true)),
            "{g}"
        );
    }
    let fresh = fresh.expect("two members");
    // Through Redis again (both links back), numbered from 1.
    wait_backplane(srv[0].addr, BACKPLANE_WAIT);
    wait_backplane(srv[1].addr, BACKPLANE_WAIT);
    broadcast(&mut a, "new1");
    for p in [&mut a, &mut b] {
        assert_eq!(next_broadcast(p), (1, "new1".to_owned()));
        p.silent(Duration::from_millis(200));
    }
    // A member back with the old epoch: a reset gap, then all kept.
    let mut d = reconnect(srv[1].addr, 5, &epoch);
    assert_eq!(stream(&d), (1, fresh));
    let g = d.expect("gap");
    assert_eq!(
        (g["room"].as_str(), g["reset"].as_bool()),
        (Some("*"), Some(true))
    );
    assert_eq!(next_broadcast(&mut d), (1, "new1".to_owned()));
    d.silent(Duration::from_millis(200));
    for s in &srv {
        s.assert_no_panic();
    }
}
