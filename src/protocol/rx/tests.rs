//! The direct-read path (`payload_buf` / `payload_filled`) against plain
//! input, and the text path that checks UTF-8 once.
//!
//! `pump` plays the event loop as the server's read path would with the
//! direct reads: read into the offered slice when there is one, else into
//! a read buffer; then poll every event. Reads take a random number of
//! bytes, as a socket would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{CapacityError, Error, ProtocolError};
use crate::frame::{write_frame, FrameHeader, OpCode};
use crate::protocol::{Connection, Event, Message, Role};
use crate::test_util::Rng;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// A first read with a 14-byte header and more than 64 KiB of payload:
/// enough arrived for direct reads to start.
const ARRIVED: usize = 70_000;

fn frame(opcode: OpCode, fin: bool, payload: &[u8], out: &mut Vec<u8>) {
    let h = FrameHeader {
        fin,
        mask: Some(KEY),
        ..FrameHeader::new(opcode, payload.len() as u64)
    };
    write_frame(&h, payload, out);
}

fn bytes(rng: &mut Rng, len: usize) -> Vec<u8> {
    (0..len).map(|_| rng.next() as u8).collect()
}

#[derive(Debug, PartialEq, Eq)]
enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
}

fn own(ev: Event<'_>) -> Ev {
    match ev {
        Event::Message(Message::Text(t)) => Ev::Text(t.into_owned()),
        Event::Message(Message::Binary(b)) => Ev::Binary(b.into_owned()),
        Event::Ping(p) => Ev::Ping(p.into_owned()),
        other => panic!("unexpected {other:?}"),
    }
}

/// Feeds `wire` with reads of 1..=`max_read` bytes; direct reads when
/// offered (if `direct`). Returns the events and how many bytes went in by
/// direct reads.
fn pump(
    conn: &mut Connection,
    wire: &[u8],
    rng: &mut Rng,
    max_read: usize,
    direct: bool,
) -> Result<(Vec<Ev>, usize), Error> {
    let now = Instant::now();
    let mut events = Vec::new();
    let (mut pos, mut direct_bytes) = (0, 0);
    let mut scratch = vec![0u8; max_read];
    while pos < wire.len() {
        let want = 1 + rng.below(max_read);
        let offered = if direct { conn.payload_buf() } else { None };
        let mut input: &mut [u8] = if let Some(buf) = offered {
            let n = want.min(buf.len()).min(wire.len() - pos);
            buf[..n].copy_from_slice(&wire[pos..pos + n]);
            conn.payload_filled(n);
            direct_bytes += n;
            pos += n;
            &mut []
        } else {
            let n = want.min(wire.len() - pos);
            scratch[..n].copy_from_slice(&wire[pos..pos + n]);
            pos += n;
            &mut scratch[..n]
        };
        while let Some(ev) = conn.poll_event(&mut input, now)? {
            events.push(own(ev));
        }
    }
    Ok((events, direct_bytes))
}

fn server(config: Config) -> Connection {
    Connection::new(Role::Server, Arc::new(config), Instant::now())
}

#[test]
fn direct_reads_deliver_what_copied_input_delivers() {
    let mut rng = Rng::new(3);
    for round in 0..12 {
        let len = 300 * 1024 + rng.below(4096);
        let big = bytes(&mut rng, len);
        let half = big.len() / 2;
        let mut wire = Vec::new();
        frame(OpCode::Binary, true, &big, &mut wire);
        frame(OpCode::Ping, true, b"p", &mut wire);
        // A fragmented binary message, a ping between its frames.
        frame(OpCode::Binary, false, &big[..half], &mut wire);
        frame(OpCode::Ping, true, b"q", &mut wire);
        frame(OpCode::Continuation, true, &big[half..], &mut wire);
        frame(OpCode::Text, true, "héllo".as_bytes(), &mut wire);
        let expect = vec![
            Ev::Binary(big.clone()),
            Ev::Ping(b"p".to_vec()),
            Ev::Ping(b"q".to_vec()),
            Ev::Binary(big.clone()),
            Ev::Text("héllo".into()),
        ];
        let max_read = [100 * 1024, 256 * 1024, 7000][round % 3];
        let mut conn = server(Config::default());
        let (events, direct) = pump(&mut conn, &wire, &mut rng, max_read, true).unwrap();
        assert_eq!(events, expect, "round {round}");
        assert!(
            direct >= big.len() / 4,
            "round {round}: {direct} bytes direct"
        );
        assert!(conn.rx.is_none(), "receive state kept");
        let mut plain = server(Config::default());
        let (events, none) = pump(&mut plain, &wire, &mut rng, max_read, false).unwrap();
        assert_eq!((events, none), (expect, 0));
    }
}

#[test]
fn direct_reads_keep_the_mask_phase_at_every_offset() {
    let mut rng = Rng::new(5);
    let big = bytes(&mut rng, 200 * 1024);
    let mut wire = Vec::new();
    frame(OpCode::Binary, true, &big, &mut wire);
    // Payload offsets 65536..=65539 and two more: every key phase.
    for first in [65_550, 65_551, 65_552, 65_553, ARRIVED + 1, ARRIVED + 3] {
        let mut conn = server(Config::default());
        let now = Instant::now();
        let mut head = wire[..first].to_vec();
        assert!(conn.poll_event(&mut &mut head[..], now).unwrap().is_none());
        let (mut pos, mut reads) = (first, 0);
        let mut got = None;
        // Direct reads of odd sizes, then whatever is left as input.
        while let Some(buf) = conn.payload_buf() {
            let n = buf.len().min(4093);
            buf[..n].copy_from_slice(&wire[pos..pos + n]);
            conn.payload_filled(n);
            pos += n;
            reads += 1;
            if let Some(ev) = conn.poll_event(&mut &mut [][..], now).unwrap() {
                got = Some(own(ev));
            }
        }
        assert!(reads > 10, "first read {first}: {reads} direct reads");
        let mut rest = wire[pos..].to_vec();
        if let Some(ev) = conn.poll_event(&mut &mut rest[..], now).unwrap() {
            got = Some(own(ev));
        }
        assert_eq!(got, Some(Ev::Binary(big.clone())), "first read {first}");
    }
}

#[test]
fn offer_follows_what_arrived_not_the_declared_size() {
    let config = Config {
        max_frame_size: 1 << 40,
        max_message_size: 1 << 40,
        ..Config::default()
    };
    let mut conn = server(config);
    let now = Instant::now();
    let mut wire = vec![0x82, 0xff];
    wire.extend_from_slice(&(1u64 << 40).to_be_bytes());
    wire.extend_from_slice(&KEY);
    wire.extend_from_slice(&[0; 10]);
    assert!(conn.poll_event(&mut &mut wire[..], now).unwrap().is_none());
    // A peer that declares a huge frame and stalls gets no zeroed room.
    assert!(conn.payload_buf().is_none());
    let mut more = vec![0; 64 << 10];
    assert!(conn.poll_event(&mut &mut more[..], now).unwrap().is_none());
    let mut received = 10 + (64 << 10);
    for _ in 0..6 {
        let buf = conn.payload_buf().expect("a large frame is offered");
        let len = buf.len();
        assert!(len <= received, "offered {len} after {received}");
        conn.payload_filled(len);
        received += len;
        assert!(conn.poll_event(&mut &mut [][..], now).unwrap().is_none());
        let msg = &conn.rx.as_ref().unwrap().msg;
        assert!(msg.len() <= 2 * received, "{} after {received}", msg.len());
        let cap = msg.capacity();
        assert!(
            cap <= (256 << 10).max(4 * received),
            "capacity {cap} after {received}"
        );
    }
}

#[test]
fn offered_only_for_large_uncompressed_binary_frames() {
    let now = Instant::now();
    let start = |op: OpCode, len: usize, first: usize| {
        let mut conn = server(Config::default());
        let mut wire = Vec::new();
        frame(op, true, &vec![b'a'; len], &mut wire);
        wire.truncate(first);
        assert!(conn.poll_event(&mut &mut wire[..], now).unwrap().is_none());
        conn
    };
    assert!(server(Config::default()).payload_buf().is_none());
    let offered = |op, len, first| start(op, len, first).payload_buf().is_some();
    assert!(offered(OpCode::Binary, 200 << 10, ARRIVED));
    // Text is checked as it is copied, once.
    assert!(!offered(OpCode::Text, 200 << 10, ARRIVED));
    // Less than 64 KiB left: a read into the caller's buffer is better.
    assert!(!offered(OpCode::Binary, 130 << 10, ARRIVED));
    assert!(offered(OpCode::Binary, 140 << 10, ARRIVED));
    // Less than 64 KiB arrived: the room would be zeroed for a peer that
    // may never send it.
    assert!(!offered(OpCode::Binary, 200 << 10, 14));
    assert!(!offered(OpCode::Binary, 200 << 10, 14 + (64 << 10) - 1));
    assert!(offered(OpCode::Binary, 200 << 10, 14 + (64 << 10)));
    // Filled bytes must be polled before the next offer.
    let mut conn = start(OpCode::Binary, 200 << 10, ARRIVED);
    conn.payload_buf().unwrap();
    conn.payload_filled(1);
    assert!(conn.payload_buf().is_none());
    // Closing: the peer's frames are still read. Closed: nothing is.
    let mut conn = start(OpCode::Binary, 200 << 10, ARRIVED);
    conn.close(crate::close::CloseCode::NORMAL, "", now);
    assert!(conn.payload_buf().is_some());
    conn.handle_transport_closed("gone");
    assert!(conn.payload_buf().is_none());
}

#[test]
fn an_unused_offer_is_dropped_when_input_comes_instead() {
    let mut rng = Rng::new(4);
    let big = bytes(&mut rng, 150 * 1024);
    let mut wire = Vec::new();
    frame(OpCode::Binary, true, &big, &mut wire);
    let now = Instant::now();
    let mut conn = server(Config::default());
    let mut head = wire[..ARRIVED].to_vec();
    assert!(conn.poll_event(&mut &mut head[..], now).unwrap().is_none());
    // Offered, filled with garbage that is never reported filled.
    let buf = conn.payload_buf().unwrap();
    buf.fill(0xee);
    let mut rest = wire[ARRIVED..].to_vec();
    let ev = conn.poll_event(&mut &mut rest[..], now).unwrap().map(own);
    assert_eq!(ev, Some(Ev::Binary(big)));
}

#[test]
fn stale_pooled_bytes_never_reach_a_message() {
    // Pooled large buffers keep their old bytes (initialized, so direct
    // reads need not zero them); none of them may show in a message.
    let mut rng = Rng::new(6);
    // The pooled buffer is taken, old bytes and all.
    crate::buffer::pool_give(vec![0xab; 2 << 20]);
    let big = bytes(&mut rng, 1 << 20);
    let mut wire = Vec::new();
    frame(OpCode::Binary, true, &big, &mut wire);
    let mut conn = server(Config::default());
    let now = Instant::now();
    let mut head = wire[..114].to_vec();
    assert!(conn.poll_event(&mut &mut head[..], now).unwrap().is_none());
    let rx = conn.rx.as_ref().unwrap();
    assert_eq!((rx.msg.len(), rx.spare), (2 << 20, (2 << 20) - 100));
    let mut more = wire[114..ARRIVED].to_vec();
    assert!(conn.poll_event(&mut &mut more[..], now).unwrap().is_none());
    // Offered out of the old bytes: nothing zeroed, nothing grown.
    assert_eq!(conn.payload_buf().unwrap().len(), ARRIVED - 14);
    assert_eq!(conn.rx.as_ref().unwrap().msg.len(), 2 << 20);
    let mut rest = wire[ARRIVED..].to_vec();
    let ev = conn.poll_event(&mut &mut rest[..], now).unwrap().map(own);
    assert_eq!(ev, Some(Ev::Binary(big)));
    for round in 0..8 {
        for _ in 0..3 {
            crate::buffer::pool_give(vec![0xab; (1 << 20) + rng.below(1 << 20)]);
        }
        let len = [70_000, 200_000, 1 << 20, 300_001][round % 4];
        let big = bytes(&mut rng, len);
        let mut wire = Vec::new();
        frame(OpCode::Binary, false, &big[..len / 3], &mut wire);
        frame(OpCode::Continuation, true, &big[len / 3..], &mut wire);
        let max_read = [5000, 64 << 10, 256 << 10][round % 3];
        let mut conn = server(Config::default());
        let direct = round % 2 == 0;
        let (events, _) = pump(&mut conn, &wire, &mut rng, max_read, direct).unwrap();
        assert_eq!(events, [Ev::Binary(big)], "round {round}");
    }
}

#[test]
fn a_direct_read_counts_as_activity() {
    let config = Config {
        idle_timeout: Some(Duration::from_secs(10)),
        ping_interval: None,
        ..Config::default()
    };
    let t0 = Instant::now();
    let mut conn = Connection::new(Role::Server, Arc::new(config), t0);
    let mut wire = Vec::new();
    frame(OpCode::Binary, true, &vec![1; 200 << 10], &mut wire);
    let mut head = wire[..ARRIVED].to_vec();
    assert!(conn.poll_event(&mut &mut head[..], t0).unwrap().is_none());
    let t1 = t0 + Duration::from_secs(5);
    let buf = conn.payload_buf().unwrap();
    buf[..10].copy_from_slice(&wire[ARRIVED..ARRIVED + 10]);
    conn.payload_filled(10);
    assert!(conn.poll_event(&mut &mut [][..], t1).unwrap().is_none());
    assert_eq!(conn.poll_timeout(), Some(t1 + Duration::from_secs(10)));
}

#[test]
fn message_limit_holds_across_direct_reads() {
    let config = Config {
        max_message_size: 300 << 10,
        ..Config::default()
    };
    let mut rng = Rng::new(8);
    let part = bytes(&mut rng, 200 << 10);
    let mut wire = Vec::new();
    frame(OpCode::Binary, false, &part, &mut wire);
    frame(OpCode::Continuation, true, &part, &mut wire);
    let mut conn = server(config);
    let err = pump(&mut conn, &wire, &mut rng, 64 << 10, true).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Protocol(ProtocolError::Capacity(CapacityError::MessageTooLarge {
                size: 409_600,
                max: 307_200
            }))
        ),
        "{err:?}"
    );
}

#[test]
#[should_panic(expected = "more than the slice from payload_buf holds")]
fn filling_more_than_offered_panics() {
    let mut conn = server(Config::default());
    let mut wire = Vec::new();
    frame(OpCode::Binary, true, &vec![0; 200 << 10], &mut wire);
    let mut head = wire[..ARRIVED].to_vec();
    conn.poll_event(&mut &mut head[..], Instant::now()).unwrap();
    let len = conn.payload_buf().unwrap().len();
    conn.payload_filled(len + 1);
}

#[test]
fn text_in_pieces_arrives_whole_and_fails_fast() {
    let mut rng = Rng::new(12);
    let text = "añb€c𝄞d ".repeat(3000);
    let mut wire = Vec::new();
    frame(OpCode::Text, false, &text.as_bytes()[..5001], &mut wire);
    frame(
        OpCode::Continuation,
        true,
        &text.as_bytes()[5001..],
        &mut wire,
    );
    for max_read in [1, 7, 100, 5000, 1 << 20] {
        let mut conn = server(Config::default());
        let (events, _) = pump(&mut conn, &wire, &mut rng, max_read, true).unwrap();
        assert_eq!(events, [Ev::Text(text.clone())], "reads of {max_read}");
    }
    // An impossible byte fails the read that brings it, not the last one.
    let mut bad = text.as_bytes()[..9000].to_vec();
    bad[4000] = 0xff;
    let mut wire = Vec::new();
    frame(OpCode::Text, true, &bad, &mut wire);
    let mut conn = server(Config::default());
    let now = Instant::now();
    let at = wire.len() - bad.len() + 4000;
    let mut first = wire[..at].to_vec();
    assert!(conn.poll_event(&mut &mut first[..], now).unwrap().is_none());
    let mut second = wire[at..at + 1].to_vec();
    let err = conn.poll_event(&mut &mut second[..], now).unwrap_err();
    assert!(
        matches!(err, Error::Protocol(ProtocolError::InvalidUtf8)),
        "{err:?}"
    );
}
