//! A client driven by `handle_event`: reading stops after a short read,
//! yet nothing is stranded: an EOF that came with the data, and input left
//! in the socket while the read buffer was full, are still read.

use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::input_tests::{frame, serve};
use super::{Client, ClientOptions, Url};
use crate::protocol::{Event, Message};

/// Drives `c` with `handle_event` only, taking every event, until it is
/// done or `limit` passes; the sizes of the binary messages received.
fn drive(c: &mut Client, poll: &mut Poll, limit: Duration, pause: Duration) -> Vec<usize> {
    let mut events = Events::with_capacity(8);
    let mut got = Vec::new();
    let deadline = Instant::now() + limit;
    while !c.is_done() && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .expect("poll");
        for ev in events.iter() {
            c.handle_event(ev, Instant::now());
        }
        // Lets the server's bytes (and its FIN) pile up in the socket.
        std::thread::sleep(pause);
        while let Some(n) = c.next_event_with(|ev| match ev {
            Event::Message(Message::Binary(b)) => b.len(),
            other => panic!("unexpected {other:?}"),
        }) {
            got.push(n);
        }
        let _ = c.flush();
    }
    got
}

fn open(addr: std::net::SocketAddr, opts: &ClientOptions, poll: &Poll) -> Client {
    let url = Url::parse(&format!("ws://{addr}/")).expect("url");
    let mut c = Client::connect_addr(addr, &url, opts, Instant::now()).expect("connect");
    c.register(poll.registry(), Token(0)).expect("register");
    c
}

/// The server answers, sends three messages and closes TCP at once, so
/// the data and the FIN come with one readiness event: a short read gets
/// the data, and the EOF is read too although no event follows.
#[test]
fn an_eof_that_came_with_the_data_is_read() {
    let mut out = Vec::new();
    for n in [10, 20, 30] {
        out.extend(frame(0x2, &vec![1u8; n]));
    }
    let (addr, server) = serve(out, Duration::ZERO);
    let mut poll = Poll::new().expect("poll");
    let mut c = open(addr, &ClientOptions::default(), &poll);
    let got = drive(
        &mut c,
        &mut poll,
        Duration::from_secs(10),
        Duration::from_millis(100),
    );
    assert_eq!(got, [10, 20, 30]);
    assert!(c.is_done(), "the EOF was not seen");
    server.join().expect("server");
}

/// 400 KB sent at once into a 16 KiB read buffer: reading stalls while
/// the buffer is full, and input left in the socket then (no new event
/// will announce it) is read as the buffer is decoded. Nothing is lost.
#[test]
fn input_left_in_the_socket_by_a_full_buffer_is_read() {
    const COUNT: usize = 40;
    const SIZE: usize = 10_000;
    let mut out = Vec::new();
    for i in 0..COUNT {
        out.extend(frame(0x2, &[i as u8; SIZE]));
    }
    let (addr, server) = serve(out, Duration::from_secs(2));
    let mut opts = ClientOptions::default();
    opts.config.read_buffer_size = 16 << 10;
    let mut poll = Poll::new().expect("poll");
    let mut c = open(addr, &opts, &poll);
    let got = drive(&mut c, &mut poll, Duration::from_secs(10), Duration::ZERO);
    assert_eq!(got, vec![SIZE; COUNT]);
    assert!(c.is_done(), "the EOF was not seen");
    server.join().expect("server");
}
