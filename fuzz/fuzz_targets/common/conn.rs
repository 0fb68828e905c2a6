//! Drives one `Connection` (server or client role) with a fuzzer-chosen
//! sequence of operations, and a twin that gets the same operations with
//! every received batch in one piece. Checked after every step:
//!
//! - no panic, no spin (each `poll_event` call makes progress), no event
//!   once the connection is closed, an error is returned once;
//! - every text received is valid UTF-8 when checked again;
//! - the twins agree (events, errors, state, output): how the bytes were
//!   cut into reads changes nothing;
//! - the write queue stays under `write_buffer_limit + max_message_size`
//!   plus what one read can add (pongs), when the loop honours
//!   `wants_read()`;
//! - after `handle_timeout(now)`, the next timeout is in the future;
//! - everything written parses as frames masked for the role, at most one
//!   close frame and nothing after it; a peer's close received while open
//!   gets exactly one close frame echoing its code; a protocol error while
//!   open sends exactly one close frame with the error's code.
//!
//! The input format is a hand-written decoder over `arbitrary::Unstructured`
//! rather than `#[derive(Arbitrary)]`, so that seed files can be written by
//! hand (see `fuzz/gen_corpus.py`). It is documented on [`Op::decode`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use arbitrary::Unstructured;
use wsloop::close::parse_close_payload;
use wsloop::frame::{parse_header, write_frame, FrameHeader, OpCode};
use wsloop::mask::apply_mask_reference;
use wsloop::protocol::{Connection, Event, Message, Role};
use wsloop::{CloseCode, Config, Error, OverflowPolicy};

/// Most payload bytes one input may generate with `Fill` (keeps runs fast).
const FILL_BUDGET: usize = 1 << 20;
/// Largest single `Fill`: past every limit of the test config (64 KiB
/// frames and messages, 256 KiB write queue).
const FILL_MAX: usize = 320 << 10;

pub fn byte(u: &mut Unstructured) -> u8 {
    u.arbitrary::<u8>().unwrap_or(0)
}

pub fn u16le(u: &mut Unstructured) -> u16 {
    u16::from_le_bytes([byte(u), byte(u)])
}

pub fn u24le(u: &mut Unstructured) -> usize {
    usize::from(byte(u)) | usize::from(byte(u)) << 8 | usize::from(byte(u)) << 16
}

/// Up to `n` bytes (fewer if the input runs out).
pub fn take(u: &mut Unstructured, n: usize) -> Vec<u8> {
    let n = n.min(u.len());
    u.bytes(n).map(<[u8]>::to_vec).unwrap_or_default()
}

/// A payload: `fill` = byte, 24-bit length (mod `FILL_MAX + 1`, cut to the
/// budget); else a
/// 16-bit length and that many bytes.
pub fn payload(u: &mut Unstructured, fill: bool, budget: &mut usize) -> Vec<u8> {
    if fill {
        let b = byte(u);
        let n = (u24le(u) % (FILL_MAX + 1)).min(*budget);
        *budget -= n;
        vec![b; n]
    } else {
        let n = usize::from(u16le(u));
        take(u, n)
    }
}

/// Cut points: a count (byte, mod 8) and that many 16-bit positions.
pub fn cuts(u: &mut Unstructured, len: usize) -> Vec<usize> {
    let n = byte(u) % 8;
    let mut c: Vec<usize> = (0..n).map(|_| usize::from(u16le(u)) % (len + 1)).collect();
    c.sort_unstable();
    c
}

#[derive(Debug)]
pub enum Op {
    /// Raw bytes from the peer, read in pieces.
    Feed(Vec<u8>, Vec<usize>),
    /// A frame from the peer, encoded properly (optionally with the wrong
    /// masking for the role), read in pieces.
    Frame(Vec<u8>, Vec<usize>),
    SendText(String),
    SendBinary(Vec<u8>),
    SendFrame(OpCode, Vec<u8>, bool),
    SendOwned(Message<'static>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, String),
    AdvanceTime(u64),
    HandleTimeout,
    /// Stop (true) or resume (false) draining output after each step: a
    /// peer that does not read.
    Stall(bool),
    Drain,
}

impl Op {
    /// Format: a tag byte (mod 13), then
    /// - 0 Feed: cuts, u16 length, bytes
    /// - 1 Frame: flags (bit 0 fin, 1 wrong masking, 2 RSV from the next
    ///   byte, 3 fill payload), [rsv], opcode (low 4 bits), key (4),
    ///   payload, cuts
    /// - 2 SendText: u16 length, bytes (lossy UTF-8)
    /// - 3 SendBinary: fill flag byte, payload
    /// - 4 SendFrame: opcode selector, fin byte, u16 length, bytes
    /// - 5 SendOwned: flags (bit 0 text, bit 1 fill), payload
    /// - 6 Ping / 7 Pong: u8 length, bytes
    /// - 8 Close: u16 code (LE), u8 length, reason bytes (lossy UTF-8)
    /// - 9 AdvanceTime: u16 milliseconds
    /// - 10 HandleTimeout, 11 Stall: byte (bit 0), 12 Drain
    pub fn decode(u: &mut Unstructured, role: Role, budget: &mut usize) -> Op {
        match byte(u) % 13 {
            0 => {
                let c = byte(u) % 8;
                let raw_cuts: Vec<u16> = (0..c).map(|_| u16le(u)).collect();
                let n = usize::from(u16le(u));
                let data = take(u, n);
                let mut cuts: Vec<usize> = raw_cuts
                    .iter()
                    .map(|&c| usize::from(c) % (data.len() + 1))
                    .collect();
                cuts.sort_unstable();
                Op::Feed(data, cuts)
            }
            1 => {
                let flags = byte(u);
                let rsv = if flags & 4 != 0 { byte(u) & 7 } else { 0 };
                let op = byte(u) & 0x0f;
                let key = [byte(u), byte(u), byte(u), byte(u)];
                let body = payload(u, flags & 8 != 0, budget);
                let masked = (role == Role::Server) != (flags & 2 != 0);
                let mut wire = Vec::new();
                let b0 = (flags & 1) << 7 | rsv << 4 | op;
                let b1 = if masked { 0x80 } else { 0 };
                // Encode by hand: the opcode may be one `OpCode` cannot hold.
                match body.len() {
                    n @ 0..=125 => wire.extend_from_slice(&[b0, b1 | n as u8]),
                    n @ 126..=0xffff => {
                        wire.extend_from_slice(&[b0, b1 | 126]);
                        wire.extend_from_slice(&(n as u16).to_be_bytes());
                    }
                    n => {
                        wire.extend_from_slice(&[b0, b1 | 127]);
                        wire.extend_from_slice(&(n as u64).to_be_bytes());
                    }
                }
                if masked {
                    wire.extend_from_slice(&key);
                }
                let body_at = wire.len();
                wire.extend_from_slice(&body);
                if masked {
                    apply_mask_reference(&mut wire[body_at..], key, 0);
                }
                let c = cuts(u, wire.len());
                Op::Frame(wire, c)
            }
            2 => {
                let n = usize::from(u16le(u));
                Op::SendText(String::from_utf8_lossy(&take(u, n)).into_owned())
            }
            3 => {
                let fill = byte(u) & 1 != 0;
                Op::SendBinary(payload(u, fill, budget))
            }
            4 => {
                let op = match byte(u) % 4 {
                    0 => OpCode::Continuation,
                    1 => OpCode::Text,
                    2 => OpCode::Binary,
                    _ => OpCode::Ping,
                };
                let fin = byte(u) & 1 != 0;
                let n = usize::from(u16le(u));
                Op::SendFrame(op, take(u, n), fin)
            }
            5 => {
                let flags = byte(u);
                let data = payload(u, flags & 2 != 0, budget);
                Op::SendOwned(if flags & 1 != 0 {
                    Message::Text(String::from_utf8_lossy(&data).into_owned().into())
                } else {
                    Message::Binary(data.into())
                })
            }
            6 => {
                let n = usize::from(byte(u));
                Op::Ping(take(u, n))
            }
            7 => {
                let n = usize::from(byte(u));
                Op::Pong(take(u, n))
            }
            8 => {
                let code = u16le(u);
                let n = usize::from(byte(u));
                Op::Close(code, String::from_utf8_lossy(&take(u, n)).into_owned())
            }
            9 => Op::AdvanceTime(u64::from(u16le(u))),
            10 => Op::HandleTimeout,
            11 => Op::Stall(byte(u) & 1 != 0),
            _ => Op::Drain,
        }
    }
}

/// An event or error, detached from the input buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, String),
    Err(String),
    /// The result of a send, ping or close call.
    Sent(String),
}

impl Ev {
    pub fn of(ev: Event<'_>) -> Ev {
        match ev {
            Event::Message(Message::Text(t)) => Ev::Text(t.into_owned()),
            Event::Message(Message::Binary(b)) => Ev::Binary(b.into_owned()),
            Event::Ping(p) => Ev::Ping(p.into_owned()),
            Event::Pong(p) => Ev::Pong(p.into_owned()),
            Event::Close(c, r) => Ev::Close(c.0, r.into_owned()),
        }
    }
}

/// What happened to the side whose output is checked.
#[derive(Debug, Default)]
pub struct Record {
    /// The peer's close code, received while we were open.
    pub peer_close_while_open: Option<u16>,
    /// The close code of a protocol error raised while we were open.
    pub failed_while_open: Option<u16>,
}

/// Feeds `data` in the pieces given by `cuts` and returns what happened.
pub fn feed(
    conn: &mut Connection,
    data: &[u8],
    cuts: &[usize],
    now: Instant,
    rec: &mut Record,
) -> Vec<Ev> {
    let max_message = conn.config().max_message_size;
    let mut evs = Vec::new();
    let mut start = 0;
    for &end in cuts.iter().chain(std::iter::once(&data.len())) {
        let mut buf = data[start..end].to_vec();
        start = end;
        let len = buf.len();
        let mut input: &mut [u8] = &mut buf;
        let mut calls = 0;
        loop {
            calls += 1;
            // Each event uses at least one byte of this read.
            assert!(
                calls <= len + 2,
                "poll_event spins: {calls} calls for {len} bytes"
            );
            let was_open = conn.is_open();
            let was_closed = conn.is_closed();
            match conn.poll_event(&mut input, now) {
                Ok(None) => {
                    assert!(input.is_empty(), "Ok(None) with {} bytes left", input.len());
                    break;
                }
                Ok(Some(ev)) => {
                    assert!(!was_closed, "event {ev:?} after the connection closed");
                    let ev = Ev::of(ev);
                    match &ev {
                        Ev::Text(t) => {
                            assert!(t.len() <= max_message);
                            // Checked again: ASCII text becomes a `str`
                            // unchecked (src/ascii.rs).
                            assert!(std::str::from_utf8(t.as_bytes()).is_ok(), "text {t:x?}");
                        }
                        Ev::Binary(b) => assert!(b.len() <= max_message),
                        Ev::Ping(p) | Ev::Pong(p) => assert!(p.len() <= 125),
                        Ev::Close(code, reason) => {
                            assert!(conn.is_closed(), "Close event but not closed");
                            let c = CloseCode(*code);
                            assert!(
                                c.is_valid_on_wire() || c == CloseCode::NO_STATUS,
                                "close code {code}"
                            );
                            assert!(reason.len() <= 123);
                            if was_open {
                                rec.peer_close_while_open = Some(*code);
                            }
                        }
                        Ev::Err(_) | Ev::Sent(_) => unreachable!(),
                    }
                    evs.push(ev);
                }
                Err(e) => {
                    assert!(!was_closed, "error {e:?} after the connection closed");
                    assert!(conn.is_closed(), "error {e:?} but not closed");
                    let Error::Protocol(pe) = &e else {
                        panic!("poll_event returned a non-protocol error {e:?}");
                    };
                    if was_open {
                        rec.failed_while_open = Some(pe.close_code().0);
                    }
                    assert_eq!(conn.close_info().map(|i| i.code), Some(pe.close_code()));
                    evs.push(Ev::Err(format!("{e:?}")));
                    // Once failed, nothing more comes out.
                    assert!(input.is_empty());
                    let mut more = [0x81u8, 0x00];
                    let mut rest: &mut [u8] = &mut more;
                    assert!(matches!(conn.poll_event(&mut rest, now), Ok(None)));
                    break;
                }
            }
        }
    }
    evs
}

/// Frames in `bytes`, with payloads unmasked. Panics on anything that is
/// not a whole frame sent correctly by `role`.
pub fn parse_frames(bytes: &[u8], role: Role) -> Vec<(FrameHeader, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (h, n) = match parse_header(rest) {
            Ok(Some(x)) => x,
            other => panic!(
                "output does not parse: {other:?} at {:x?}",
                &rest[..rest.len().min(16)]
            ),
        };
        assert_eq!(
            h.mask.is_some(),
            role == Role::Client,
            "masking of {h:?} for {role:?}"
        );
        assert_eq!(h.rsv, 0);
        let len = h.payload_len as usize;
        assert!(rest.len() - n >= len, "output ends inside a frame");
        let mut payload = rest[n..n + len].to_vec();
        if let Some(key) = h.mask {
            apply_mask_reference(&mut payload, key, 0);
        }
        rest = &rest[n + len..];
        frames.push((FrameHeader { mask: None, ..h }, payload));
    }
    frames
}

fn config(sel: u8) -> Arc<Config> {
    let mut c = Config::default();
    c.max_frame_size = if sel & 1 != 0 { 1024 } else { 64 << 10 };
    c.max_message_size = 64 << 10;
    c.max_fragments = if sel & 2 != 0 { 4 } else { 1000 };
    c.write_buffer_low = 16 << 10;
    c.write_buffer_high = 64 << 10;
    c.write_buffer_limit = 256 << 10;
    c.overflow = match (sel >> 2) & 3 {
        0 => OverflowPolicy::Close(CloseCode::POLICY),
        1 => OverflowPolicy::Close(CloseCode::TRY_AGAIN),
        _ => OverflowPolicy::Drop,
    };
    c.idle_timeout = if sel & 16 != 0 {
        None
    } else {
        Some(Duration::from_secs(10))
    };
    c.ping_interval = if sel & 32 != 0 {
        None
    } else {
        Some(Duration::from_secs(3))
    };
    c.pong_timeout = Duration::from_secs(2);
    c.close_timeout = Duration::from_secs(1);
    c.validate().expect("fuzz config is valid");
    Arc::new(c)
}

/// The server's output is deterministic; the client's differs only in
/// masking keys.
fn same_output(a: &[u8], b: &[u8], role: Role) {
    match role {
        Role::Server => assert_eq!(a, b, "twins wrote different bytes"),
        Role::Client => assert_eq!(
            parse_frames(a, role),
            parse_frames(b, role),
            "twins wrote different frames"
        ),
    }
}

fn check_timeout_ahead(conn: &Connection, now: Instant) {
    if let Some(t) = conn.poll_timeout() {
        assert!(
            t > now,
            "handle_timeout left a timeout due {:?} ago",
            now - t
        );
    }
}

pub fn run(data: &[u8], role: Role) {
    let mut u = Unstructured::new(data);
    let config = config(byte(&mut u));
    let start = Instant::now();
    let mut now = start;
    let mut a = Connection::new(role, config.clone(), now);
    let mut b = Connection::new(role, config.clone(), now);
    let mut rec = Record::default();
    let mut ignored = Record::default();
    let (mut sent_a, mut sent_b) = (Vec::new(), Vec::new());
    let mut stall = false;
    let mut budget = FILL_BUDGET;
    let mut steps = 0;
    while !u.is_empty() && steps < 2000 {
        steps += 1;
        let op = Op::decode(&mut u, role, &mut budget);
        let mut fed = 0;
        let (ev_a, ev_b) = match &op {
            Op::Feed(bytes, cuts) | Op::Frame(bytes, cuts) => {
                // An event loop stops reading a peer that does not read.
                if !a.is_closed() && !a.wants_read() {
                    (Vec::new(), Vec::new())
                } else {
                    fed = bytes.len();
                    let ea = feed(&mut a, bytes, cuts, now, &mut rec);
                    let eb = feed(&mut b, bytes, &[], now, &mut ignored);
                    (ea, eb)
                }
            }
            Op::SendText(t) => (vec![res(a.send_text(t))], vec![res(b.send_text(t))]),
            Op::SendBinary(d) => (vec![res(a.send_binary(d))], vec![res(b.send_binary(d))]),
            Op::SendFrame(op, d, fin) => (
                vec![res(a.send_frame(*op, d, *fin))],
                vec![res(b.send_frame(*op, d, *fin))],
            ),
            Op::SendOwned(m) => (vec![res(a.send(m.clone()))], vec![res(b.send(m.clone()))]),
            Op::Ping(p) => (vec![res(a.ping(p))], vec![res(b.ping(p))]),
            Op::Pong(p) => (vec![res(a.pong(p))], vec![res(b.pong(p))]),
            Op::Close(code, reason) => {
                let was_open = a.is_open();
                a.close(CloseCode(*code), reason, now);
                b.close(CloseCode(*code), reason, now);
                if was_open {
                    assert!(
                        !a.is_open() && !a.is_closed(),
                        "close() must leave the connection closing"
                    );
                    assert_eq!(a.poll_timeout(), Some(now + config.close_timeout));
                }
                (Vec::new(), Vec::new())
            }
            Op::AdvanceTime(ms) => {
                now += Duration::from_millis(*ms);
                for c in [&mut a, &mut b] {
                    if c.poll_timeout().is_some_and(|t| t <= now) {
                        c.handle_timeout(now);
                    }
                    check_timeout_ahead(c, now);
                }
                (Vec::new(), Vec::new())
            }
            Op::HandleTimeout => {
                a.handle_timeout(now);
                b.handle_timeout(now);
                check_timeout_ahead(&a, now);
                (Vec::new(), Vec::new())
            }
            Op::Stall(s) => {
                stall = *s;
                (Vec::new(), Vec::new())
            }
            Op::Drain => (Vec::new(), Vec::new()),
        };
        if trace() {
            let shown = format!("{op:?}");
            eprintln!(
                "{:>6}ms {}",
                (now - start).as_millis(),
                &shown[..shown.len().min(200)]
            );
            eprintln!(
                "         -> {ev_a:?} open={} closed={} queued={}",
                a.is_open(),
                a.is_closed(),
                a.buffered()
            );
        }
        assert_eq!(ev_a, ev_b, "twins disagree after {op:?}");

        // State.
        assert_eq!(a.is_open(), b.is_open());
        assert_eq!(a.is_closed(), b.is_closed());
        assert_eq!(a.close_info(), b.close_info());
        assert_eq!(a.close_info().is_some(), a.is_closed());
        assert_eq!(a.poll_timeout(), b.poll_timeout());
        assert_eq!(a.buffered(), b.buffered(), "twins queued different amounts");
        if a.is_closed() {
            assert_eq!(a.poll_timeout(), None);
            assert!(!a.wants_read());
            assert!(matches!(a.send_text("x"), Err(Error::ConnectionClosed)));
            assert!(matches!(b.send_text("x"), Err(Error::ConnectionClosed)));
        }

        // Bounded write queue.
        let bound = config.write_buffer_limit + config.max_message_size + 3 * fed + 1024;
        assert!(
            a.buffered() <= bound,
            "{} bytes queued, bound {bound}",
            a.buffered()
        );

        if !stall || matches!(op, Op::Drain) {
            let (mut oa, mut ob) = (Vec::new(), Vec::new());
            a.drain_output(&mut oa);
            b.drain_output(&mut ob);
            assert_eq!(a.buffered(), 0);
            same_output(&oa, &ob, role);
            sent_a.extend_from_slice(&oa);
            sent_b.extend_from_slice(&ob);
        }
    }
    let (mut oa, mut ob) = (Vec::new(), Vec::new());
    a.drain_output(&mut oa);
    b.drain_output(&mut ob);
    same_output(&oa, &ob, role);
    sent_a.extend_from_slice(&oa);

    // Everything written is frames; one close at most, and it is last.
    let frames = parse_frames(&sent_a, role);
    let closes: Vec<usize> = frames
        .iter()
        .enumerate()
        .filter(|(_, (h, _))| h.opcode == OpCode::Close)
        .map(|(i, _)| i)
        .collect();
    assert!(closes.len() <= 1, "{} close frames sent", closes.len());
    if let Some(&i) = closes.first() {
        assert_eq!(i + 1, frames.len(), "frames sent after the close frame");
        parse_close_payload(&frames[i].1).expect("our close frame is valid");
    }
    let sent_code = closes.first().map(|&i| {
        let p = &frames[i].1;
        if p.is_empty() {
            CloseCode::NO_STATUS.0
        } else {
            u16::from_be_bytes([p[0], p[1]])
        }
    });
    if let Some(code) = rec.peer_close_while_open {
        assert_eq!(
            sent_code,
            Some(code),
            "peer's close {code} not echoed exactly once"
        );
    }
    if let Some(code) = rec.failed_while_open {
        assert_eq!(
            sent_code,
            Some(code),
            "failure with {code} not sent exactly once"
        );
    }
    // The frames round-trip through write_frame.
    if role == Role::Server {
        let mut again = Vec::new();
        for (h, p) in &frames {
            write_frame(h, p, &mut again);
        }
        assert_eq!(again, sent_a);
    }
}

/// `FUZZ_TRACE=1` prints each step (for triage: run the target binary on
/// one input).
fn trace() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

fn res<T: std::fmt::Debug>(r: Result<T, Error>) -> Ev {
    Ev::Sent(format!("{r:?}"))
}
