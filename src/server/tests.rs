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

// Large frames read straight into their message (`payload_buf`): the
// payloads must come out as sent, whatever the pieces they arrive in, and
// `bytes_direct` shows that the direct path was taken.

use std::io::{Read, Write};

use super::read::MAX_READS_PER_EVENT;
use crate::frame::{parse_header, write_frame, FrameHeader, OpCode};

/// Keeps what arrives, and the order of events.
#[derive(Default)]
struct Record {
    msgs: Vec<Vec<u8>>,
    log: Vec<String>,
}

impl Handler for Record {
    fn on_message(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, msg: Message<'_>) {
        self.log.push(format!("message {}", msg.as_bytes().len()));
        self.msgs.push(msg.as_bytes().to_vec());
    }
    fn on_ping(&mut self, _ctx: &mut Ctx<'_>, _id: ConnId, payload: &[u8]) {
        self.log.push(format!("ping {}", payload.len()));
    }
}

fn turn_record_until(
    s: &mut Server<Record>,
    what: &str,
    mut done: impl FnMut(&Server<Record>) -> bool,
) {
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    while !done(s) {
        assert!(start.elapsed() < Duration::from_secs(10), "never: {what}");
        s.turn(&mut events, Some(Duration::from_millis(50)))
            .unwrap();
    }
}

/// A small read buffer: many reads per message, and direct reads capped
/// at its size.
fn record_server(max_message: usize) -> Server<Record> {
    let config = Config {
        read_buffer_size: 4096,
        max_message_size: max_message,
        max_frame_size: max_message,
        ..Config::default()
    };
    Server::bind("127.0.0.1:0", config, Record::default()).unwrap()
}

/// Connects and upgrades; the client has read the 101 response.
fn open(s: &mut Server<Record>) -> TcpStream {
    let mut c = connect(s.local_addr());
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    turn_record_until(s, "the upgrade", |s| s.core.stats.upgrades == 1);
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        c.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    c
}

/// A masked client frame.
fn frame(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
    let h = FrameHeader {
        fin,
        rsv: 0,
        opcode,
        mask: Some([0x37, 0xfa, 0x21, 0x3d]),
        payload_len: payload.len() as u64,
    };
    let mut out = Vec::new();
    write_frame(&h, payload, &mut out);
    out
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// Writes `wire` in pieces of the given sizes (cycled), each read by the
/// server before the next is written.
fn send_in_pieces(s: &mut Server<Record>, c: &mut TcpStream, wire: &[u8], sizes: &[usize]) {
    let base = s.core.stats.bytes_in;
    let mut pos = 0;
    for &size in sizes.iter().cycle() {
        if pos == wire.len() {
            break;
        }
        let end = (pos + size).min(wire.len());
        c.write_all(&wire[pos..end]).unwrap();
        pos = end;
        let want = base + pos as u64;
        turn_record_until(s, "a piece read", |s| s.core.stats.bytes_in >= want);
    }
}

/// Reads server frames until one with `opcode`; returns its payload.
fn read_until(c: &mut TcpStream, opcode: OpCode, got: &mut Vec<u8>) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    loop {
        while let Some((h, n)) = parse_header(got).unwrap() {
            let end = n + h.payload_len as usize;
            if got.len() < end {
                break;
            }
            let payload = got[n..end].to_vec();
            got.drain(..end);
            if h.opcode == opcode {
                return payload;
            }
        }
        let n = c.read(&mut buf).unwrap();
        assert!(n > 0, "EOF before a {opcode:?} frame");
        got.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn a_large_message_arriving_in_many_pieces_is_read_straight_into_its_buffer() {
    let mut s = record_server(1 << 20);
    let mut c = open(&mut s);
    let payload = pattern(600 << 10, 1);
    let wire = frame(OpCode::Binary, true, &payload);
    // One byte at a time through the header and again past the point
    // where direct reads start (64 KiB), then uneven pieces.
    let (head, rest) = wire.split_at(66 << 10);
    send_in_pieces(&mut s, &mut c, &head[..300], &[1]);
    send_in_pieces(
        &mut s,
        &mut c,
        &head[300..head.len() - 500],
        &[7, 1000, 4096, 9000],
    );
    send_in_pieces(&mut s, &mut c, &head[head.len() - 500..], &[1]);
    send_in_pieces(&mut s, &mut c, &rest[..300], &[1]);
    send_in_pieces(&mut s, &mut c, &rest[300..], &[3, 65536, 4095, 1, 20000]);
    assert_eq!(s.handler.msgs.len(), 1);
    assert!(s.handler.msgs[0] == payload, "the message differs");
    let direct = s.core.stats.bytes_direct;
    assert!(
        // From 64 KiB received to 64 KiB left (the rest is copied).
        direct >= 400 << 10 && direct <= payload.len() as u64,
        "{direct} bytes read directly"
    );
}

#[test]
fn a_frame_of_exactly_the_limit_is_read_directly_and_one_byte_more_is_refused_before_its_payload() {
    const LIMIT: usize = 256 << 10;
    let mut s = record_server(LIMIT);
    let mut c = open(&mut s);
    let payload = pattern(LIMIT, 2);
    send_in_pieces(
        &mut s,
        &mut c,
        &frame(OpCode::Binary, true, &payload),
        &[8192],
    );
    assert!(s.handler.msgs == [payload], "the message differs");
    let direct = s.core.stats.bytes_direct;
    assert!(direct >= 128 << 10, "{direct} bytes read directly");

    // The header alone: refused with 1009 before any payload is sent.
    let over = frame(OpCode::Binary, true, &pattern(LIMIT + 1, 3));
    let hdr_len = parse_header(&over).unwrap().unwrap().1;
    send_in_pieces(&mut s, &mut c, &over[..hdr_len], &[hdr_len]);
    let close = read_until(&mut c, OpCode::Close, &mut Vec::new());
    assert_eq!(u16::from_be_bytes([close[0], close[1]]), 1009);
    assert_eq!(s.core.stats.bytes_direct, direct);
    assert_eq!(s.handler.msgs.len(), 1);
}

#[test]
fn control_frames_between_fragments_of_a_directly_read_message_are_answered_in_order() {
    let mut s = record_server(1 << 20);
    let mut c = open(&mut s);
    let parts = [
        pattern(150 << 10, 4),
        pattern(200 << 10, 5),
        pattern(100 << 10, 6),
    ];
    let mut wire = frame(OpCode::Binary, false, &parts[0]);
    wire.extend(frame(OpCode::Ping, true, b"a"));
    wire.extend(frame(OpCode::Continuation, false, &parts[1]));
    wire.extend(frame(OpCode::Ping, true, b"bb"));
    wire.extend(frame(OpCode::Continuation, true, &parts[2]));
    send_in_pieces(&mut s, &mut c, &wire, &[16 << 10, 1, 5000]);
    assert_eq!(s.handler.log, ["ping 1", "ping 2", "message 460800"]);
    assert!(s.handler.msgs[0] == parts.concat(), "the message differs");
    let direct = s.core.stats.bytes_direct;
    // The first fragment alone could give at most 86 KiB: the others'
    // payloads were read directly too.
    assert!(direct >= 150 << 10, "{direct} bytes read directly");
    let mut got = Vec::new();
    assert_eq!(read_until(&mut c, OpCode::Pong, &mut got), b"a");
    assert_eq!(read_until(&mut c, OpCode::Pong, &mut got), b"bb");
}

#[test]
fn a_pass_reads_no_more_of_a_large_frame_than_of_small_ones() {
    let mut s = record_server(2 << 20);
    let mut c = open(&mut s);
    let payload = pattern(2 << 20, 7);
    let wire = frame(OpCode::Binary, true, &payload);
    // The peer has far more queued than one pass may take.
    let writer = std::thread::spawn(move || c.write_all(&wire).map(|_| c));
    // An event's reads, and an owed read's, each at most the read buffer.
    let bound = (2 * MAX_READS_PER_EVENT * 4096) as u64;
    let mut events = Events::with_capacity(1024);
    let start = Instant::now();
    let mut most = 0;
    while s.handler.msgs.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "never delivered");
        let before = s.core.stats.bytes_in;
        s.turn(&mut events, Some(Duration::from_millis(50)))
            .unwrap();
        most = most.max(s.core.stats.bytes_in - before);
    }
    let _c = writer.join().unwrap().unwrap();
    assert!(most <= bound, "one pass read {most} bytes (bound {bound})");
    assert!(s.handler.msgs[0] == payload, "the message differs");
    assert!(s.core.stats.bytes_direct >= 1 << 20);
}

// Timers: the loop asks a connection for its next deadline only when it
// may have moved earlier (`Connection::take_timeout_moved`); a deadline
// that moves later leaves the old timer to fire early. These fail if a
// move to an earlier deadline goes unnoticed: the timer set before would
// then fire at the later one.

fn timer_server(config: Config) -> Server<Record> {
    Server::bind("127.0.0.1:0", config, Record::default()).unwrap()
}

/// With ping_interval far below pong_timeout, the peer's pong moves the
/// deadline from the pong's (30 s away) to the next ping's (200 ms).
#[test]
fn after_a_pong_the_next_ping_comes_at_the_ping_interval_not_the_pong_deadline() {
    let mut s = timer_server(Config {
        ping_interval: Some(Duration::from_millis(200)),
        pong_timeout: Duration::from_secs(30),
        idle_timeout: None,
        ..Config::default()
    });
    let mut c = open(&mut s);
    let mut got = Vec::new();
    let out = s.core.stats.bytes_out;
    turn_record_until(&mut s, "the first ping", |s| s.core.stats.bytes_out > out);
    read_until(&mut c, OpCode::Ping, &mut got);
    c.write_all(&frame(OpCode::Pong, true, b"")).unwrap();
    let (read, out) = (s.core.stats.bytes_in, s.core.stats.bytes_out);
    turn_record_until(&mut s, "the pong read", |s| s.core.stats.bytes_in > read);
    // The timer now stands at the next ping, not at the pong deadline
    // 30 s after the first ping (the scheduled deadline, not a clock).
    let key = s.core.slab.iter().next().map(|(k, _)| k).unwrap();
    let away = timer_away(&s, key).expect("a timer after the pong");
    assert!(
        away <= Duration::from_millis(200),
        "the next timer is {away:?} away, not at the ping interval"
    );
    turn_record_until(&mut s, "the second ping", |s| s.core.stats.bytes_out > out);
    read_until(&mut c, OpCode::Ping, &mut got);
}

/// How far the timer set for entry `key` is from the pass's clock (the
/// scheduled deadline, not a measured time).
fn timer_away<H: Handler>(s: &Server<H>, key: usize) -> Option<Duration> {
    let at = s.core.slab[key].timer_at?;
    let due = s.core.epoch + Duration::from_nanos(at.get());
    Some(due.saturating_duration_since(s.core.now))
}

/// A close started by the handler waits close_timeout (300 ms) for the
/// peer's close, not until the idle deadline (60 s away).
#[test]
fn a_close_started_on_the_loop_times_out_at_close_timeout_not_the_idle_deadline() {
    let mut s = timer_server(Config {
        ping_interval: None,
        idle_timeout: Some(Duration::from_secs(60)),
        close_timeout: Duration::from_millis(300),
        ..Config::default()
    });
    let mut c = open(&mut s);
    let key = s.core.slab.iter().next().map(|(k, _)| k).unwrap();
    let id = s.core.id(key);
    let mut events = Events::with_capacity(16);
    s.turn(&mut events, Some(Duration::ZERO)).unwrap();
    let out = s.core.stats.bytes_out;
    Ctx { core: &mut s.core }.close(id, crate::CloseCode::NORMAL, "bye");
    let mut got = Vec::new();
    turn_record_until(&mut s, "the close sent", |s| s.core.stats.bytes_out > out);
    // The timer stands at the close timeout, not at the idle deadline
    // (the scheduled deadline, not a clock).
    let away = timer_away(&s, key).expect("a timer after the close");
    assert!(
        away <= Duration::from_millis(300),
        "the next timer is {away:?} away, not at the close timeout"
    );
    // The peer reads the close frame and never answers it.
    read_until(&mut c, OpCode::Close, &mut got);
    turn_record_until(&mut s, "the close handshake given up", |s| s.core.open == 0);
}

/// An open connection whose timer was dropped without its timeout being
/// handled (no `take_timeout_moved` flag) gets one again at its next
/// flush: `schedule` asks the connection whenever no timer is set.
#[test]
fn an_open_connection_without_a_timer_gets_one_at_its_next_flush() {
    let mut s = timer_server(Config {
        ping_interval: None,
        idle_timeout: Some(Duration::from_secs(60)),
        ..Config::default()
    });
    let mut c = open(&mut s);
    let key = s.core.slab.iter().next().map(|(k, _)| k).unwrap();
    let mut events = Events::with_capacity(16);
    s.turn(&mut events, Some(Duration::ZERO)).unwrap();
    assert!(
        s.core.slab[key].timer_at.is_some(),
        "no idle timer after the upgrade"
    );
    s.core.slab[key].timer_at = None;
    // A message from the peer: read, flushed, scheduled.
    c.write_all(&frame(OpCode::Binary, true, b"tick")).unwrap();
    let read = s.core.stats.bytes_in;
    turn_record_until(&mut s, "the message read", |s| s.core.stats.bytes_in > read);
    s.turn(&mut events, Some(Duration::ZERO)).unwrap();
    assert!(
        s.core.slab[key].timer_at.is_some(),
        "the idle deadline was not scheduled again"
    );
}

/// A `Handle::run` closure that queues its own next step (as the chat's
/// Redis poster does, chat/src/redis/poster.rs `drain`, to spread its work
/// over passes) gets one step per pass of the loop: the sockets are served
/// in between. `run_commands` used to take the new closure from the
/// channel in the same call, up to 256 steps back to back.
#[test]
fn a_run_closure_queued_by_a_run_closure_waits_for_the_next_pass() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn again(ctx: &mut Ctx<'_>, runs: Arc<AtomicUsize>) {
        runs.fetch_add(1, Ordering::SeqCst);
        let h = ctx.handle();
        let r = runs.clone();
        // As poster.rs does: schedule the rest first, then work.
        let _ = h.run(move |ctx| again(ctx, r));
    }

    let mut s = server();
    let runs = Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    s.handle().run(move |ctx| again(ctx, r)).unwrap();
    let mut events = Events::with_capacity(16);
    s.turn(&mut events, Some(Duration::ZERO)).unwrap();
    let n = runs.load(Ordering::SeqCst);
    assert_eq!(n, 1, "one turn of the loop ran {n} self-queued passes");
}
