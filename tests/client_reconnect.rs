//! `Reconnecting` at its edges: binary messages, a refused upgrade, what
//! was sent when the connection is lost, and the bound on what it keeps.

mod fake_peer;

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use fake_peer::{accept, listen, number_of, numbered, Peer};
use wsloop::client::{Backoff, ClientOptions, Reconnecting};
use wsloop::frame::OpCode;
use wsloop::{CloseCode, Error, Event, HandshakeError, Message};

fn fast_backoff(max_attempts: u32) -> Backoff {
    Backoff {
        base: Duration::from_millis(10),
        factor: 1.0,
        cap: Duration::from_millis(10),
        jitter: 0.0,
        max_attempts: Some(max_attempts),
    }
}

#[test]
fn reconnecting_sends_binary_and_text() {
    let (l, addr) = listen();
    let server = thread::spawn(move || {
        let mut p = Peer::new(accept(&l));
        p.upgrade(b"");
        let mut frames = Vec::new();
        loop {
            match p.read_frame().unwrap() {
                Some((OpCode::Close, _)) => break,
                Some(f) => frames.push(f),
                None => panic!("EOF before the close"),
            }
        }
        p.write_close(1000);
        frames
    });
    let mut rc = Reconnecting::new(
        &format!("ws://{addr}/"),
        ClientOptions::default(),
        fast_backoff(3),
    );
    rc.send_binary(&[0, 1, 2, 255]).unwrap();
    rc.send_text("text").unwrap();
    rc.send(Message::Binary(vec![7; 300].into())).unwrap();
    let info = rc.close(CloseCode::NORMAL, "").unwrap().unwrap();
    assert!(info.clean, "{info:?}");
    let frames = server.join().unwrap();
    assert_eq!(
        frames,
        vec![
            (OpCode::Binary, vec![0, 1, 2, 255]),
            (OpCode::Text, b"text".to_vec()),
            (OpCode::Binary, vec![7; 300]),
        ]
    );
    assert_eq!(rc.unsent(), 0);
}

/// A server that answers every upgrade with `status_line`; counts them.
struct Refuser {
    addr: std::net::SocketAddr,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Refuser {
    fn start(status_line: &'static str) -> Refuser {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (count.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false).unwrap();
                        s.set_read_timeout(Some(fake_peer::IO_TIMEOUT)).unwrap();
                        c.fetch_add(1, Ordering::SeqCst);
                        Peer::new(s).refuse(status_line);
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Refuser {
            addr,
            count,
            stop,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.take().unwrap().join().unwrap();
        self.count.load(Ordering::SeqCst)
    }
}

/// 401, 403 and 404 stop the retries at once with an error naming the
/// status; with `set_retry_refusals(true)`, or for 429, it retries until
/// `max_attempts`.
#[test]
fn refused_upgrade_stops_the_retries() {
    for (line, code) in [
        ("401 Unauthorized", 401),
        ("403 Forbidden", 403),
        ("404 Not Found", 404),
    ] {
        let srv = Refuser::start(line);
        let mut rc = Reconnecting::new(
            &format!("ws://{}/", srv.addr),
            ClientOptions::default(),
            fast_backoff(4),
        );
        let e = rc.recv().expect_err("a refused upgrade");
        assert!(
            matches!(e, Error::Handshake(HandshakeError::Status(s)) if s == code),
            "{line}: {e:?}"
        );
        assert!(e.to_string().contains(&code.to_string()), "{e}");
        let e = rc.send_text("x").expect_err("a refused upgrade");
        assert!(
            matches!(e, Error::Handshake(HandshakeError::Status(s)) if s == code),
            "{line}: {e:?}"
        );
        assert_eq!(srv.stop(), 2, "{line}: one attempt per call");
    }

    for (line, retry) in [("401 Unauthorized", true), ("429 Too Many Requests", false)] {
        let srv = Refuser::start(line);
        let mut rc = Reconnecting::new(
            &format!("ws://{}/", srv.addr),
            ClientOptions::default(),
            fast_backoff(4),
        );
        rc.set_retry_refusals(retry);
        match rc.recv() {
            Err(Error::GaveUp { attempts: 4, last }) => {
                assert!(last.to_string().contains(&line[..3]), "{last}");
            }
            other => panic!("{line}: want GaveUp after 4 attempts, got {other:?}"),
        }
        assert_eq!(srv.stop(), 4, "{line}");
    }
}

/// After giving up, the next call starts over with `max_attempts` new
/// attempts (not one).
#[test]
fn giving_up_starts_over_on_the_next_call() {
    let srv = Refuser::start("429 Too Many Requests");
    let mut rc = Reconnecting::new(
        &format!("ws://{}/", srv.addr),
        ClientOptions::default(),
        fast_backoff(3),
    );
    for round in 1..=2 {
        match rc.recv() {
            Err(Error::GaveUp { attempts: 3, .. }) => {}
            other => panic!("round {round}: want GaveUp after 3 attempts, got {other:?}"),
        }
        assert_eq!(srv.count.load(Ordering::SeqCst), 3 * round, "round {round}");
    }
    srv.stop();
}

/// A server that upgrades and drops the connection at once is retried
/// with backoff until `max_attempts`, not reconnected to in a busy loop
/// forever.
#[test]
fn a_server_that_drops_every_connection_is_given_up_on() {
    let (l, addr) = listen();
    l.set_nonblocking(true).unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (c, st) = (count.clone(), stop.clone());
    let server = thread::spawn(move || {
        while !st.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(fake_peer::IO_TIMEOUT)).unwrap();
                    c.fetch_add(1, Ordering::SeqCst);
                    Peer::new(s).upgrade(b"");
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut rc = Reconnecting::new(
            &format!("ws://{addr}/"),
            ClientOptions::default(),
            fast_backoff(4),
        );
        let _ = tx.send(rc.recv().map(|ev| format!("{ev:?}")));
    });
    let res = rx.recv_timeout(Duration::from_secs(30));
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
    match res {
        Ok(Err(Error::GaveUp { attempts: 4, .. })) => {}
        Ok(other) => panic!("want GaveUp after 4 attempts, got {other:?}"),
        Err(_) => panic!(
            "still reconnecting after 30 s ({} connections)",
            count.load(Ordering::SeqCst)
        ),
    }
    assert_eq!(count.load(Ordering::SeqCst), 4);
}

/// Small watermarks, so a few messages fill the client's queue.
fn small_queue_opts() -> ClientOptions {
    let mut o = ClientOptions::default();
    o.config.write_buffer_high = 256 << 10;
    o.config.write_buffer_low = 64 << 10;
    o.config.write_buffer_limit = 4 << 20;
    o
}

/// The first server sends a message, stops reading so the client's queue
/// fills, then sends FIN (gone, no close frame) and reads what reached it.
/// The messages still queued in the client go out again on the second
/// connection: between the two servers every message arrives exactly once,
/// in order; the first server's message is still received.
#[test]
fn messages_queued_when_the_connection_is_lost_go_out_after_the_reconnect() {
    const N: usize = 300;
    const SIZE: usize = 64 << 10;
    let (l, addr) = listen();
    let server = thread::spawn(move || {
        let mut p1 = Peer::new(accept(&l));
        p1.upgrade(b"");
        p1.write_frame(OpCode::Text, b"from the first server");
        // The client sends far more than the socket buffers hold meanwhile.
        thread::sleep(Duration::from_secs(1));
        p1.s.shutdown(std::net::Shutdown::Write).unwrap();
        // Still not reading the first connection: the client, stalled on
        // its full queue, must notice the loss and come back with what it
        // still holds. (Reading first would let a fast reader drain it
        // before the client ever looked, on a busy machine.)
        let mut p2 = Peer::new(accept(&l));
        p2.upgrade(b"");
        let (got1, closed) = p1.read_messages();
        assert!(!closed, "the client closed the first connection itself");
        let (got2, closed) = p2.read_messages();
        assert!(closed, "EOF before the client's close");
        p2.write_close(1000);
        (got1, got2)
    });
    let mut rc = Reconnecting::new(
        &format!("ws://{addr}/"),
        small_queue_opts(),
        fast_backoff(5),
    );
    for i in 0..N {
        if let Err(e) = rc.send_binary(&numbered(i, SIZE)) {
            panic!("send {i}: {e:?}");
        }
    }
    match rc.recv() {
        Ok(Event::Message(Message::Text(t))) => assert_eq!(t, "from the first server"),
        other => panic!("want the first server's message, got {other:?}"),
    }
    let info = rc.close(CloseCode::NORMAL, "done").unwrap().unwrap();
    assert!(info.clean, "{info:?}");
    assert_eq!(rc.unsent(), 0);
    assert_eq!(rc.connects(), 2);
    let (got1, got2) = server.join().unwrap();
    let n1: Vec<usize> = got1.iter().map(|m| number_of(m)).collect();
    let n2: Vec<usize> = got2.iter().map(|m| number_of(m)).collect();
    assert!(
        n1.len() < N,
        "the first server got everything: nothing tested"
    );
    let all: Vec<usize> = n1.iter().chain(&n2).copied().collect();
    assert_eq!(
        all,
        (0..N).collect::<Vec<_>>(),
        "first server got {}..{:?}, second {:?}..{:?}",
        n1.first().copied().unwrap_or(0),
        n1.last(),
        n2.first(),
        n2.last()
    );
}

/// With a server that does not read, what the client keeps is bounded: a
/// send past the bound waits for the write timeout and fails, keeping
/// nothing; once the server reads, every accepted message arrives once.
#[test]
fn kept_messages_are_bounded_and_a_refused_send_keeps_nothing() {
    const SIZE: usize = 1000;
    let (l, addr) = listen();
    let (read_tx, read_rx) = mpsc::channel::<()>();
    let server = thread::spawn(move || {
        let mut p = Peer::new(accept(&l));
        p.upgrade(b"");
        read_rx.recv_timeout(Duration::from_secs(120)).unwrap();
        let (got, closed) = p.read_messages();
        assert!(closed, "EOF before the client's close");
        p.write_close(1000);
        got
    });
    let mut rc = Reconnecting::new(
        &format!("ws://{addr}/"),
        ClientOptions::default(),
        fast_backoff(3),
    );
    rc.set_unsent_limits(8, 1 << 20);
    rc.set_write_timeout(Some(Duration::from_secs(1)));
    let mut refused = None;
    // Far more than the socket buffers take.
    for i in 0..100_000 {
        match rc.send_binary(&numbered(i, SIZE)) {
            Ok(()) => assert!(rc.unsent() <= 8, "{} kept", rc.unsent()),
            Err(Error::Timeout(_)) => {
                refused = Some(i);
                break;
            }
            Err(e) => panic!("send {i}: {e:?}"),
        }
    }
    let refused = refused.expect("100 MB went to a server that reads nothing");
    assert_eq!(rc.unsent(), 8);
    read_tx.send(()).unwrap();
    // The refused message, sent again, now goes through.
    rc.send_binary(&numbered(refused, SIZE)).unwrap();
    let info = rc.close(CloseCode::NORMAL, "").unwrap().unwrap();
    assert!(info.clean, "{info:?}");
    let got: Vec<usize> = server
        .join()
        .unwrap()
        .iter()
        .map(|m| number_of(m))
        .collect();
    assert_eq!(got, (0..=refused).collect::<Vec<_>>());
}
