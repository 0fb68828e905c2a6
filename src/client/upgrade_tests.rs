//! What the upgrade settled, as the client reports it: the negotiated
//! permessage-deflate parameters and how long the upgrade took.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use mio::{Events, Poll, Token};

use super::{Client, ClientOptions, Url};
use crate::handshake::accept_key;

/// A server that answers one upgrade with `extensions` (if any) and
/// returns the request it read.
fn serve(extensions: Option<&'static str>) -> (SocketAddr, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut req = Vec::new();
        let mut b = [0u8; 1024];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let k = s.read(&mut b).expect("read request");
            assert!(k > 0, "EOF before the end of the request");
            req.extend_from_slice(&b[..k]);
        }
        let text = String::from_utf8_lossy(&req).into_owned();
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key:"))
            .expect("key")
            .trim()
            .to_string();
        let ext = extensions
            .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
            .unwrap_or_default();
        let resp = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n{ext}\r\n",
            accept_key(key.as_bytes())
        );
        s.write_all(resp.as_bytes()).expect("write response");
        // Holds the connection until the client is done with it.
        let _ = s.read(&mut b);
        text
    });
    (addr, t)
}

/// Connects with `opts` at `t0` and drives the client, always at
/// `t0 + 5 s`, until it is upgraded (or done, or 10 s pass).
fn upgrade(addr: SocketAddr, opts: &ClientOptions, t0: Instant) -> Client {
    let url = Url::parse(&format!("ws://{addr}/")).expect("url");
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(8);
    let mut c = Client::connect_addr(addr, &url, opts, t0).expect("connect");
    c.register(poll.registry(), Token(0)).expect("register");
    assert_eq!((c.deflate(), c.upgrade_time()), (None, None));
    assert!(c.is_connecting(), "connecting until handle_io sees it done");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !c.is_upgraded() && !c.is_done() && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .expect("poll");
        c.handle_io(t0 + Duration::from_secs(5));
    }
    assert!(c.is_upgraded(), "not upgraded: {:?}", c.take_error());
    assert!(!c.is_connecting());
    c
}

#[test]
fn the_upgrade_time_runs_from_connect_to_the_answer() {
    let (addr, server) = serve(None);
    let c = upgrade(addr, &ClientOptions::default(), Instant::now());
    assert_eq!(c.upgrade_time(), Some(Duration::from_secs(5)));
    assert_eq!(c.deflate(), None);
    drop(c);
    let req = server.join().expect("server");
    assert!(!req.contains("permessage-deflate"), "{req}");
}

#[cfg(feature = "deflate")]
#[test]
fn the_negotiated_deflate_parameters_are_reported() {
    let (addr, server) = serve(Some(
        "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; \
         client_max_window_bits=11",
    ));
    let mut opts = ClientOptions::default();
    opts.config.deflate.enabled = true;
    let c = upgrade(addr, &opts, Instant::now());
    assert_eq!(
        c.deflate(),
        Some(crate::extension::DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: false,
            server_max_window_bits: 10,
            client_max_window_bits: 11,
        })
    );
    drop(c);
    server.join().expect("server");
}

#[cfg(feature = "deflate")]
#[test]
fn a_declined_deflate_offer_is_reported_as_none() {
    let (addr, server) = serve(None);
    let mut opts = ClientOptions::default();
    opts.config.deflate.enabled = true;
    let c = upgrade(addr, &opts, Instant::now());
    assert_eq!(c.deflate(), None);
    drop(c);
    let req = server.join().expect("server");
    assert!(req.contains("permessage-deflate"), "{req}");
}

/// A server that accepts and never answers: once TCP is up the client is
/// no longer connecting, but not upgraded (a handshake timeout, not a
/// connect one).
#[test]
fn connected_but_unanswered_is_not_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let url = Url::parse(&format!("ws://{addr}/")).expect("url");
    let mut poll = Poll::new().expect("poll");
    let mut events = Events::with_capacity(8);
    let now = Instant::now();
    let mut c = Client::connect_addr(addr, &url, &ClientOptions::default(), now).expect("connect");
    c.register(poll.registry(), Token(0)).expect("register");
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.is_connecting() && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(50)))
            .expect("poll");
        for ev in events.iter() {
            c.handle_event(ev, now);
        }
    }
    assert!(!c.is_connecting());
    assert!(!c.is_upgraded() && !c.is_done());
    drop(listener);
}
