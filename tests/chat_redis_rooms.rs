//! Each server subscribes only to the rooms with members on it, with a
//! real `redis-server` (installed with apt-get if missing;
//! `WSLOOP_SKIP_REDIS=1` skips). Three servers, 300 rooms, each room's
//! members on one server: Redis counts exactly one subscriber per room
//! channel and no pattern subscription, so a message reaches only the
//! server whose members are in its room (the others spend nothing on it).
//! A member joining on a second server adds its subscription; the last
//! one leaving there removes it.
#![cfg(feature = "redis")]

mod common;
mod redisproc;

use std::time::Duration;

use common::*;
use redisproc::*;
use serde_json::json;

/// The integer at the end of a RESP reply (`PUBSUB NUMSUB`'s count,
/// `PUBSUB NUMPAT`).
fn last_int(reply: &str) -> i64 {
    reply
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(':'))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no integer in {reply:?}"))
}

fn subscribers(redis: &Redis, room: &str) -> i64 {
    last_int(&redis.command(&["PUBSUB", "NUMSUB", &format!("wsloop:chat:room:{room}")]))
}

#[test]
fn servers_subscribe_only_to_rooms_with_members_there() {
    let Some(bin) = redis_server() else {
        return;
    };
    let redis = Redis::start(bin);
    let servers: Vec<BinServer> = (0..3).map(|_| instance(&redis, &[])).collect();
    for s in &servers {
        wait_backplane(s.addr, BACKPLANE_WAIT);
    }
    // 100 rooms per server, 25 per connection.
    let mut members = Vec::new();
    for (k, s) in servers.iter().enumerate() {
        for c in 0..4 {
            let mut p = Peer::connect_backplane(s.addr);
            for r in 0..25 {
                p.join(&format!("k{k}-{}", c * 25 + r));
            }
            members.push(p);
        }
    }
    assert_eq!(last_int(&redis.command(&["PUBSUB", "NUMPAT"])), 0);
    for k in 0..3 {
        for r in 0..100 {
            assert_eq!(subscribers(&redis, &format!("k{k}-{r}")), 1, "k{k}-{r}");
        }
    }

    // 100 messages into each of server 0's rooms: the others hear none.
    let cpu = |s: &BinServer| proc_cpu_ticks(s.pid());
    let before: Vec<u64> = servers.iter().map(cpu).collect();
    for round in 0..100 {
        for (c, p) in members.iter_mut().take(4).enumerate() {
            for r in 0..25 {
                p.say(&format!("k0-{}", c * 25 + r), &format!("m{round}"));
            }
        }
    }
    for p in members.iter_mut().take(4) {
        for _ in 0..100 * 25 {
            p.expect("message");
        }
    }
    let spent: Vec<u64> = servers
        .iter()
        .zip(&before)
        .map(|(s, b)| cpu(s) - b)
        .collect();
    eprintln!("10,000 messages in server 0's 100 rooms: CPU ticks (1/100 s) per server {spent:?}");
    for p in members.iter_mut().skip(4) {
        p.silent(Duration::from_millis(50));
    }

    // A member of k0-7 on server 1: its subscription comes and goes.
    let mut guest = Peer::connect_backplane(servers[1].addr);
    guest.join("k0-7");
    assert_eq!(subscribers(&redis, "k0-7"), 2);
    members[0].say("k0-7", "to both");
    assert_eq!(guest.expect("message")["text"], "to both");
    assert_eq!(members[0].expect("message")["text"], "to both");
    guest.send(json!({"type": "leave", "room": "k0-7"}));
    guest.expect("left");
    wait_until(Duration::from_secs(5), "server 1 to unsubscribe", || {
        subscribers(&redis, "k0-7") == 1
    });
    // And on close.
    guest.join("k0-8");
    assert_eq!(subscribers(&redis, "k0-8"), 2);
    drop(guest);
    wait_until(Duration::from_secs(5), "server 1 to unsubscribe", || {
        subscribers(&redis, "k0-8") == 1
    });
}
