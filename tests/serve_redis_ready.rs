//! The chat with `--redis` is ready only while its link to Redis is up:
//! `/readyz` answers 503 while Redis is down and 200 again once the link is
//! back, and the metrics show the link and its queue. Uses a real
//! `redis-server` (installed with apt-get if missing; `WSLOOP_SKIP_REDIS=1`
//! skips).
#![cfg(feature = "redis")]

mod common;
mod opsutil;
mod redisproc;

use std::time::Duration;

use common::*;
use opsutil::*;
use redisproc::*;

fn ready(srv: &BinServer) -> u16 {
    http_get(srv.addr, "/readyz").status
}

#[test]
fn readyz_follows_the_redis_link() {
    let Some(bin) = redis_server() else {
        return;
    };
    let mut redis = Redis::start(bin);
    let srv = instance(&redis, &["--metrics"]);
    wait_until(Duration::from_secs(20), "/readyz 200 with Redis up", || {
        ready(&srv) == 200
    });
    let text = scrape(srv.addr, None);
    promtool_check(&text);
    assert_eq!(value(&text, "wsloop_chat_redis_up"), Some(1.0), "{text}");
    assert_eq!(value(&text, "wsloop_chat_redis_queue_messages"), Some(0.0));
    assert_eq!(
        value(&text, "wsloop_chat_redis_reconnects_total"),
        Some(0.0),
        "{text}"
    );

    redis.kill();
    wait_until(
        Duration::from_secs(30),
        "/readyz 503 with Redis down",
        || ready(&srv) == 503,
    );
    let r = http_get(srv.addr, "/readyz");
    assert_eq!(r.body_text(), "not ready\n", "{r:?}");
    // Liveness is not readiness: the process is fine.
    assert_eq!(http_get(srv.addr, "/healthz").status, 200);
    let text = scrape(srv.addr, None);
    assert_eq!(value(&text, "wsloop_chat_redis_up"), Some(0.0), "{text}");
    assert_eq!(value(&text, "wsloop_ready"), Some(0.0), "{text}");

    redis.restart();
    wait_until(
        Duration::from_secs(60),
        "/readyz 200 with Redis back",
        || ready(&srv) == 200,
    );
    wait_backplane(srv.addr, Duration::from_secs(30));
    // The connections that saw Redis go (publish, subscribe or both)
    // came back, once each.
    let text = scrape(srv.addr, None);
    promtool_check(&text);
    let n = value(&text, "wsloop_chat_redis_reconnects_total").unwrap_or(0.0);
    assert!((1.0..=2.0).contains(&n), "{n} reconnects\n{text}");
    srv.assert_no_panic();
}
