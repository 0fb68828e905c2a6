//! The loop driven one pass at a time over real loopback sockets: accepting
//! under pressure, and owed reads across a reused slab key.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mio::Events;

use super::accept::ACCEPTS_PER_CALL;
use super::entry::kill;
use super::{ConnId, Ctx, Handler, Server};
use crate::config::Config;
use crate::protocol::Message;

struct Nothing;

impl Handler for Nothing {
    fn on_message(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, _msg: Message<'_>) {}
}

fn server() -> Server<Nothing> {
    Server::bind("127.0.0.1:0", Config::default(), Nothing).unwrap()
}

fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap()
}

/// Runs passes until `done` holds (at most 5 s of them).
fn turn_until(s: &mut Server<Nothing>, what: &str, mut done: impl FnMut(&Server<Nothing>) -> bool) {
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    while !done(s) {
        assert!(start.elapsed() < Duration::from_secs(5), "never: {what}");
        let timeout = s.next_timeout().map(|t| t.min(Duration::from_millis(50)));
        s.turn(&mut events, timeout.or(Some(Duration::from_millis(50))))
            .unwrap();
    }
}

#[test]
fn one_listener_event_accepts_a_bounded_batch_and_the_rest_follow() {
    let mut s = server();
    let n = 3 * ACCEPTS_PER_CALL + 5;
    // All of them wait in the backlog before the loop looks: one edge.
    let clients: Vec<TcpStream> = (0..n).map(|_| connect(s.local_addr())).collect();
    let mut events = Events::with_capacity(1024);
    while s.core.slab.is_empty() {
        s.turn(&mut events, Some(Duration::from_secs(5))).unwrap();
    }
    let first = s.core.slab.len();
    assert!(
        first <= 2 * ACCEPTS_PER_CALL,
        "one pass accepted {first} of {n} connections"
    );
    // No new connection (no new edge): the rest are still taken, without
    // the loop sleeping on them.
    assert_eq!(s.next_timeout(), Some(Duration::ZERO));
    turn_until(&mut s, "the whole backlog accepted", |s| {
        s.core.slab.len() == n
    });
    drop(clients);
}

#[test]
fn a_listener_event_during_the_accept_back_off_waits_for_its_end() {
    let mut s = server();
    // As after EMFILE: accepting paused for a while.
    s.accept_resume = Some(Instant::now() + Duration::from_secs(3600));
    let _c = connect(s.local_addr());
    let mut events = Events::with_capacity(16);
    for _ in 0..5 {
        s.turn(&mut events, Some(Duration::from_millis(50)))
            .unwrap();
    }
    assert!(
        s.core.slab.is_empty(),
        "accepted during the back-off (a listener event retried accept)"
    );
    // The pause ends: the connection that waited is taken then, although
    // no new event arrives for it.
    s.accept_resume = Some(Instant::now());
    turn_until(&mut s, "the accept after the back-off", |s| {
        s.core.slab.len() == 1
    });
}

#[test]
fn a_read_owed_to_a_closed_connection_is_not_paid_to_the_next_in_its_slot() {
    let mut s = server();
    let a = connect(s.local_addr());
    turn_until(&mut s, "A accepted", |s| s.core.slab.len() == 1);
    let (key, gen_a) = s.core.slab.iter().map(|(k, e)| (k, e.gen)).next().unwrap();
    // A is owed a read (say it resumed after backpressure), then ends.
    s.core.owe_read(key);
    // Owed once, however often it is asked (the list stays within the
    // number of entries).
    s.core.owe_read(key);
    assert_eq!(s.core.pending_reads, vec![(key, gen_a)]);
    kill(&mut s.core, &mut s.handler, key, "test");
    s.core.reap();
    drop(a);
    // B takes the same slot before the owed read is paid.
    let _b = connect(s.local_addr());
    turn_until(&mut s, "B accepted", |s| s.core.slab.len() == 1);
    let gen_b = s.core.slab[key].gen;
    assert_ne!(gen_a, gen_b, "B reuses A's slot with a new generation");
    assert!(
        !s.core.take_owed_read(key, gen_a),
        "A's owed read would go to B"
    );
    assert!(s.core.take_owed_read(key, gen_b));
}

#[test]
fn requests_from_other_threads_run_a_budget_per_pass_and_the_loop_does_not_sleep_on_the_rest() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let mut s = server();
    let handle = s.handle();
    let ran = Arc::new(AtomicUsize::new(0));
    const N: usize = 1000;
    for _ in 0..N {
        let ran = ran.clone();
        handle
            .run(move |_| {
                ran.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
    }
    let mut events = Events::with_capacity(16);
    s.turn(&mut events, Some(Duration::from_secs(5))).unwrap();
    let first = ran.load(Ordering::SeqCst);
    assert!(
        first > 0 && first < N,
        "one pass ran {first} of {N} requests"
    );
    // Only the first request woke the loop: it must not sleep on the rest.
    for _ in 0..N {
        if ran.load(Ordering::SeqCst) == N {
            break;
        }
        let timeout = s.next_timeout();
        assert_eq!(timeout, Some(Duration::ZERO));
        s.turn(&mut events, timeout).unwrap();
    }
    assert_eq!(ran.load(Ordering::SeqCst), N);
}
