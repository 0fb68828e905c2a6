//! `wsloop bench URL URL ... --mode chat`: the members are spread over
//! several chat servers, every room over all of them. Through Redis every
//! publish made on one server reaches the room's members on the others,
//! once and in order; without Redis the servers are apart, and the bench
//! reports what never crossed (which shows the members really were
//! spread).

mod common;
#[cfg(feature = "redis")]
mod redisproc;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn bench(urls: &[String], rest: &[&str]) -> (BinRun, Value) {
    let mut args: Vec<&str> = urls.iter().map(|u| u.as_str()).collect();
    args.extend_from_slice(rest);
    let out = run_wsloop("bench", &args, None, Duration::from_secs(60));
    let v: Value = serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {out:?}"));
    (out, v)
}

/// 30 members in 3 rooms publish 60 a second for 1 s after a 200 ms
/// warmup: due in the window are slots 12 to 71, each delivered to the 10
/// members of its room.
const LOAD: &[&str] = &[
    "--mode",
    "chat",
    "--conns",
    "30",
    "--rooms",
    "3",
    "--rate",
    "60",
    "--duration",
    "1s",
    "--warmup",
    "200ms",
    "--json",
];

#[cfg(feature = "redis")]
#[test]
fn members_on_three_servers_get_every_message_once_in_order() {
    use redisproc::*;
    let Some(bin) = redis_server() else {
        return;
    };
    let redis = Redis::start(bin);
    let servers: Vec<BinServer> = (0..3).map(|_| instance(&redis, &[])).collect();
    for s in &servers {
        wait_backplane(s.addr, BACKPLANE_WAIT);
    }
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("ws://{}/ws", s.addr))
        .collect();
    let (out, v) = bench(&urls, LOAD);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(v["errors"], 0, "{v}");
    for k in ["gaps", "duplicates", "reorders", "undelivered", "unsent"] {
        assert_eq!(v[k], 0, "{k}: {v}");
    }
    assert_eq!(v["deliveries"], 600, "{v}");
    assert_eq!(v["sent"], 72, "{v}");
    assert_eq!(v["url"], urls[0].as_str(), "{v}");
    let listed: Vec<&str> = v["urls"]
        .as_array()
        .unwrap_or_else(|| panic!("no urls: {v}"))
        .iter()
        .filter_map(|u| u.as_str())
        .collect();
    assert_eq!(listed, urls, "{v}");
    for s in &servers {
        s.assert_no_panic();
    }
}

#[test]
fn servers_without_redis_are_apart_and_the_bench_says_so() {
    let servers: Vec<BinServer> = (0..2)
        .map(|_| BinServer::spawn(&["--app", "chat"]))
        .collect();
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("ws://{}/ws", s.addr))
        .collect();
    let (out, v) = bench(&urls, LOAD);
    // Each room has members on both servers and each server numbers its
    // own publishes: a member gets its server's share in order, and the
    // other server's never.
    assert_eq!(out.code, Some(1), "{out:?}");
    for k in ["gaps", "duplicates", "reorders"] {
        assert_eq!(v[k], 0, "{k}: {v}");
    }
    let undelivered = v["undelivered"].as_u64().unwrap_or(0);
    let deliveries = v["deliveries"].as_u64().unwrap_or(0);
    assert!(undelivered > 0 && deliveries > 0, "{v}");
    assert!(
        out.stdout
            .contains("published but not delivered to a member by the end"),
        "{out:?}"
    );
}
