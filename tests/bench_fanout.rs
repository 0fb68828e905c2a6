//! The fan-out driver (`wsloop_bench::fanout`, `bench/examples/fanout.rs`)
//! against `wsloop serve --app chat`: a small run in room and broadcast
//! mode delivers every message, and a connection that fails (refused, the
//! upgrade refused, the server gone before or after the upgrade, a close
//! from the server) stops the run with what failed and which connection.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::thread;

use common::*;
use wsloop_bench::fanout::{run, Options};

fn options(url: String, broadcast: bool) -> Options {
    Options {
        url,
        conns: 200,
        messages: 20,
        size: 16,
        broadcast,
        runs: 2,
        wave: 50,
        debug: false,
    }
}

#[test]
fn room_and_broadcast_runs_deliver_every_message() {
    let srv = BinServer::spawn(&["--app", "chat"]);
    let url = format!("ws://{}/ws", srv.addr);
    for broadcast in [false, true] {
        run(&options(url.clone(), broadcast))
            .unwrap_or_else(|e| panic!("broadcast {broadcast}: {e}"));
    }
    srv.assert_no_panic();
}

/// A raw TCP server: reads each upgrade request, writes `answer(key)`
/// (the request's Sec-WebSocket-Key) and closes TCP.
fn raw_server(answer: fn(&str) -> Vec<u8>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().unwrap();
    // The accept thread outlives the test; it holds nothing else.
    thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            let head = read_request_head(&mut s).unwrap_or_default();
            let key = find_request_key(&head).unwrap_or_default();
            let _ = s.write_all(&answer(&key));
        }
    });
    addr
}

fn upgrade(key: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\n\r\n",
        wsloop::handshake::accept_key(key.as_bytes())
    )
    .into_bytes()
}

#[test]
fn a_failed_connection_is_named() {
    fn nothing(_: &str) -> Vec<u8> {
        Vec::new()
    }
    fn upgrade_then_close(key: &str) -> Vec<u8> {
        let mut v = upgrade(key);
        // A close frame, 1001, unmasked.
        v.extend_from_slice(&[0x88, 0x02, 0x03, 0xe9]);
        v
    }
    let srv = BinServer::spawn(&["--app", "chat"]);
    let refused = format!("ws://127.0.0.1:{}/ws", free_port());
    for (url, want) in [
        (refused, "Connection refused"),
        (
            format!("ws://{}/elsewhere", srv.addr),
            "connection 0: upgrade refused: server answered HTTP 404 instead of 101",
        ),
        (
            format!("ws://{}/ws", raw_server(nothing)),
            "connection 0: server closed",
        ),
        (
            format!("ws://{}/ws", raw_server(upgrade)),
            "connection 0: server closed",
        ),
        (
            format!("ws://{}/ws", raw_server(upgrade_then_close)),
            "the server closed a connection",
        ),
    ] {
        let o = Options {
            conns: 1,
            ..options(url.clone(), false)
        };
        let e = run(&o).err().unwrap_or_else(|| panic!("{url}: no error"));
        assert!(e.contains(want), "{url}: {e:?}, wanted {want:?}");
    }
}
