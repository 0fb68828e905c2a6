//! A client sends messages, fragmented at fuzzer-chosen points with
//! `send_frame` (pings between fragments), and the server, reading the
//! client's bytes in fuzzer-chosen pieces, receives exactly those messages
//! and pings in order; the client receives the pongs; a close handshake
//! ends both cleanly.
//!
//! Input: max chunk (1 byte, 0 = whole), chunk seed (1), then messages:
//! flags (bit 0 text, 1 send whole via `send(Message)` with an owned
//! payload, 2 ping before the last fragment, 3 move bytes now, 4 fill
//! payload, 5 add the reserve of fill bytes to the budget, once), payload
//! (fill: byte + 24-bit length; else 16-bit length + bytes), cuts (count
//! mod 8, 16-bit positions).
#![no_main]

mod common;

use std::sync::Arc;
use std::time::Instant;

use arbitrary::Unstructured;
use common::conn::{byte, cuts, feed, payload, Ev, Record};
use common::{chunk_sizes, Rng};
use libfuzzer_sys::fuzz_target;
use wsloop::frame::OpCode;
use wsloop::protocol::{Connection, Message, Role};
use wsloop::{CloseCode, Config};

struct Pair {
    client: Connection,
    server: Connection,
    now: Instant,
    max_chunk: usize,
    rng: Rng,
    server_events: Vec<Ev>,
    client_events: Vec<Ev>,
}

impl Pair {
    fn transfer(&mut self) {
        let mut wire = Vec::new();
        self.client.drain_output(&mut wire);
        // Large transfers in larger pieces, or byte-sized reads dominate.
        let max = if wire.len() > 16 << 10 {
            self.max_chunk * 256
        } else {
            self.max_chunk
        };
        let sizes = chunk_sizes(wire.len(), max, self.rng.next());
        let mut cuts = Vec::new();
        let mut at = 0;
        for n in &sizes {
            at += n;
            cuts.push(at);
        }
        cuts.pop();
        let evs = feed(
            &mut self.server,
            &wire,
            &cuts,
            self.now,
            &mut Record::default(),
        );
        self.server_events.extend(evs);
        let mut back = Vec::new();
        self.server.drain_output(&mut back);
        let evs = feed(
            &mut self.client,
            &back,
            &[],
            self.now,
            &mut Record::default(),
        );
        self.client_events.extend(evs);
    }
}

fuzz_target!(|data: &[u8]| common::isolated(|| run(data)));

fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let max_chunk = usize::from(byte(&mut u));
    let seed = u64::from(byte(&mut u));
    let mut config = Config::default();
    config.idle_timeout = None;
    config.ping_interval = None;
    let config = Arc::new(config);
    let now = Instant::now();
    let mut p = Pair {
        client: Connection::new(Role::Client, config.clone(), now),
        server: Connection::new(Role::Server, config, now),
        now,
        max_chunk,
        rng: Rng::new(seed),
        server_events: Vec::new(),
        client_events: Vec::new(),
    };
    let mut expect_server = Vec::new();
    let mut expect_client = Vec::new();
    // Fill payloads: enough for by-reference queueing (16 KiB and up);
    // every byte is masked, unmasked and checked by instrumented code, so
    // a frame over 64 KiB takes the reserve, which an input asks for.
    let mut budget = 24 << 10;
    let mut reserve = 72 << 10;
    while !u.is_empty() {
        let flags = byte(&mut u);
        if flags & 32 != 0 {
            budget += std::mem::take(&mut reserve);
        }
        let text = flags & 1 != 0;
        let mut body = payload(&mut u, flags & 16 != 0, &mut budget);
        if text {
            body = String::from_utf8_lossy(&body).into_owned().into_bytes();
        }
        let splits = cuts(&mut u, body.len());
        let ping = flags & 4 != 0;
        let ping_payload = body[..body.len().min(125)].to_vec();
        let op = if text { OpCode::Text } else { OpCode::Binary };
        if flags & 2 != 0 {
            // One frame, payload queued without a copy.
            if ping {
                p.client.ping(&ping_payload).unwrap();
            }
            let msg = if text {
                Message::Text(String::from_utf8(body.clone()).unwrap().into())
            } else {
                Message::Binary(body.clone().into())
            };
            p.client.send(msg).unwrap();
        } else {
            let mut start = 0;
            let bounds: Vec<usize> = splits
                .iter()
                .copied()
                .chain(std::iter::once(body.len()))
                .collect();
            for (i, &end) in bounds.iter().enumerate() {
                let last = i + 1 == bounds.len();
                if last && ping {
                    p.client.ping(&ping_payload).unwrap();
                }
                let frame_op = if i == 0 { op } else { OpCode::Continuation };
                p.client
                    .send_frame(frame_op, &body[start..end], last)
                    .unwrap();
                start = end;
            }
        }
        if ping {
            expect_server.push(Ev::Ping(ping_payload.clone()));
            expect_client.push(Ev::Pong(ping_payload));
        }
        expect_server.push(if text {
            Ev::Text(String::from_utf8(body).unwrap())
        } else {
            Ev::Binary(body)
        });
        if flags & 8 != 0 {
            p.transfer();
        }
    }
    p.transfer();
    assert_eq!(p.server_events, expect_server);
    assert_eq!(p.client_events, expect_client);
    assert!(p.client.is_open() && p.server.is_open());
    assert_eq!((p.client.buffered(), p.server.buffered()), (0, 0));

    // Close handshake, started by the client.
    p.client.close(CloseCode::NORMAL, "bye", now);
    p.transfer();
    assert_eq!(p.server_events.last(), Some(&Ev::Close(1000, "bye".into())));
    assert_eq!(
        p.client_events.last(),
        Some(&Ev::Close(1000, String::new()))
    );
    for c in [&p.client, &p.server] {
        let info = c.close_info().expect("closed");
        assert!(info.clean && info.code == CloseCode::NORMAL, "{info:?}");
    }
}
