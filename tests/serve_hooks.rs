//! The library's side of readiness and metrics, for any application: a
//! `Handler` says whether it is ready (`Handler::ready`) and adds its own
//! metrics (`Handler::metrics`); the loop answers `serve_readiness` and
//! `serve_metrics` paths itself and counts overflows, panics and requests
//! from other threads.

mod common;
mod opsutil;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use opsutil::*;
use wsloop::server::{ConnId, Ctx, Handler, MetricsWriter};
use wsloop::{Config, Message, OverflowPolicy};

#[derive(Clone, Default)]
struct App {
    ready: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
}

impl Handler for App {
    fn on_message(&mut self, ctx: &mut Ctx<'_>, id: ConnId, msg: Message<'_>) {
        match msg.as_bytes() {
            b"panic" => panic!("asked to"),
            b"flood" => {
                for _ in 0..100 {
                    if ctx.send_binary(id, &[1u8; 1000]).is_err() {
                        self.refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
            _ => {
                let _ = ctx.send(id, msg);
            }
        }
    }

    fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn metrics(&self, out: &mut MetricsWriter) {
        out.gauge(
            "app_ready",
            "1 if the app says so.",
            &[],
            self.ready() as u8 as f64,
        );
        out.counter(
            "app_refused_sends_total",
            "Sends the app saw refused.",
            &[("why", "full")],
            self.refused.load(Ordering::SeqCst),
        );
    }
}

#[test]
fn handler_readiness_and_metrics_and_what_the_loop_counts() {
    let app = App::default();
    app.ready.store(true, Ordering::SeqCst);
    let mut config = Config::default();
    config.write_buffer_high = 2048;
    config.write_buffer_low = 512;
    config.write_buffer_limit = 4096;
    config.overflow = OverflowPolicy::Drop;
    let srv = spawn_server(loopback(), config, app.clone(), |s| {
        s.serve_readiness("/readyz")
            .serve_metrics("/metrics", Some("tk".into()))
    });
    let addr = srv.addr;

    let r = http_get(addr, "/readyz");
    assert_eq!((r.status, r.body_text().as_str()), (200, "ready\n"));
    // HEAD: the same head, no body.
    let mut s = tcp_connect(addr);
    std::io::Write::write_all(&mut s, b"HEAD /readyz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    assert!(read_until_eof(&mut s, Duration::from_secs(5), &mut raw));
    let raw = String::from_utf8(raw).unwrap();
    assert!(
        raw.starts_with("HTTP/1.1 200 ")
            && raw.contains("Content-Length: 6\r\n")
            && raw.ends_with("\r\n\r\n"),
        "{raw:?}"
    );
    let post = http_raw(addr, b"POST /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(post.status, 405, "{post:?}");
    // Other paths still reach the handler (its default on_http: 426).
    assert_eq!(http_get(addr, "/elsewhere").status, 426);

    app.ready.store(false, Ordering::SeqCst);
    let r = http_get(addr, "/readyz");
    assert_eq!((r.status, r.body_text().as_str()), (503, "not ready\n"));
    let text = scrape(addr, Some("tk"));
    assert_eq!(value(&text, "wsloop_ready"), Some(0.0), "{text}");
    assert_eq!(value(&text, "app_ready"), Some(0.0), "{text}");
    app.ready.store(true, Ordering::SeqCst);

    // Sends past the write queue limit: each one the app saw refused is
    // an overflow (policy drop).
    let mut c = connect(addr);
    c.send_text("flood");
    // The callback has returned (and counted) before anything is written.
    let mut got = 0;
    while got + app.refused.load(Ordering::SeqCst) < 100 {
        assert!(matches!(c.recv_data(), Msg::Binary(_)));
        got += 1;
    }
    let n = app.refused.load(Ordering::SeqCst);
    assert!(n > 0 && n < 100, "{n} refused");
    c.send_text("ping me");
    c.expect_text("ping me");
    // A panicking callback costs its connection (1011) and is counted.
    c.send_text("panic");
    assert_eq!(c.expect_close().0, Some(1011));
    c.close(1011, "");
    c.expect_eof(Duration::from_secs(5));
    // Requests from other threads.
    for _ in 0..3 {
        srv.handle.run(|_| {}).unwrap();
    }
    let mut text = String::new();
    wait_until(Duration::from_secs(5), "the handle's requests run", || {
        text = scrape(addr, Some("tk"));
        count(&text, "wsloop_handle_requests_total") == 3
    });
    promtool_check(&text);
    eprintln!("{text}");
    assert_eq!(
        count(&text, "wsloop_write_queue_overflows_total{policy=\"drop\"}"),
        n,
        "{text}"
    );
    assert_eq!(
        count(&text, "app_refused_sends_total{why=\"full\"}"),
        n,
        "{text}"
    );
    assert_eq!(count(&text, "wsloop_handler_panics_total"), 1, "{text}");
    assert_eq!(
        count(&text, "wsloop_closes_total{code=\"1011\"}"),
        1,
        "{text}"
    );
    assert_eq!(value(&text, "app_ready"), Some(1.0), "{text}");
    assert_eq!(value(&text, "wsloop_ready"), Some(1.0), "{text}");
    // 101 messages out (100 floods less the refused, one echo).
    assert_eq!(
        count(&text, "wsloop_messages_sent_total"),
        100 - n + 1,
        "{text}"
    );
    srv.stop(Duration::from_secs(10));
}

#[test]
fn requests_refused_by_a_full_handle_queue_are_counted() {
    let mut config = Config::default();
    config.command_queue_len = 1;
    let srv = spawn_server(loopback(), config, App::default(), |s| {
        s.serve_metrics("/metrics", None)
    });
    // Hold the loop inside a request: the next one waits in the queue
    // (one place), and every other is refused.
    let (started_tx, started) = std::sync::mpsc::channel();
    let (release, held) = std::sync::mpsc::channel::<()>();
    srv.handle
        .run(move |_| {
            started_tx.send(()).unwrap();
            let _ = held.recv_timeout(Duration::from_secs(30));
        })
        .unwrap();
    started.recv_timeout(Duration::from_secs(10)).unwrap();
    srv.handle.run(|_| {}).unwrap();
    let refused = (0..5).filter(|_| srv.handle.run(|_| {}).is_err()).count();
    assert_eq!(refused, 5);
    release.send(()).unwrap();
    let text = scrape(srv.addr, None);
    promtool_check(&text);
    assert_eq!(count(&text, "wsloop_handle_queue_full_total"), 5, "{text}");
    assert_eq!(count(&text, "wsloop_handle_requests_total"), 2, "{text}");
    srv.stop(Duration::from_secs(10));
}
