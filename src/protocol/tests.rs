//! Unit tests of the sans-IO connection.
//!
//! Every input is fed whole, in two reads cut at every byte position, and a
//! byte at a time; the events (and the frames sent back) must not change.
//! Timers run on a fake clock: a base `Instant` plus offsets.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{CloseInfo, Connection, Event, Message, Role, SendStatus};
use crate::close::CloseCode;
use crate::config::{Config, OverflowPolicy};
use crate::error::{ApiError, CapacityError, Error, ProtocolError};
use crate::frame::{parse_header, write_frame, FrameHeader, OpCode};
use crate::handshake::{
    generate_key, write_accept_response, ClientRequest, Head, RequestReader, ResponseReader,
};
use crate::mask::apply_mask;
use crate::test_util::Rng;

// ------------------------------------------------------------- helpers

/// An [`Event`] detached from the input, or the error `poll_event` returned.
#[derive(Clone, PartialEq, Eq)]
enum Ev {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(u16, String),
    Err(ProtocolError),
}

impl From<Event<'_>> for Ev {
    fn from(ev: Event<'_>) -> Ev {
        match ev {
            Event::Message(Message::Text(t)) => Ev::Text(t.into_owned()),
            Event::Message(Message::Binary(b)) => Ev::Binary(b.into_owned()),
            Event::Ping(p) => Ev::Ping(p.into_owned()),
            Event::Pong(p) => Ev::Pong(p.into_owned()),
            Event::Close(code, reason) => Ev::Close(code.0, reason.into_owned()),
        }
    }
}

/// Long payloads are shown by length and a few bytes, so that a failure
/// message stays readable.
impl std::fmt::Debug for Ev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn bytes(f: &mut std::fmt::Formatter<'_>, kind: &str, b: &[u8]) -> std::fmt::Result {
            if b.len() <= 16 {
                write!(f, "{kind}({:?})", String::from_utf8_lossy(b))
            } else {
                let tail = &b[b.len() - 4..];
                write!(f, "{kind}({} bytes: {:x?}..{tail:x?})", b.len(), &b[..8])
            }
        }
        match self {
            Ev::Text(t) => bytes(f, "Text", t.as_bytes()),
            Ev::Binary(b) => bytes(f, "Binary", b),
            Ev::Ping(b) => bytes(f, "Ping", b),
            Ev::Pong(b) => bytes(f, "Pong", b),
            Ev::Close(code, reason) => write!(f, "Close({code}, {reason:?})"),
            Ev::Err(e) => write!(f, "Err({e:?})"),
        }
    }
}

fn text(s: &str) -> Ev {
    Ev::Text(s.to_owned())
}

fn cfg(c: Config) -> Arc<Config> {
    Arc::new(c)
}

fn default_cfg() -> Arc<Config> {
    cfg(Config::default())
}

/// Feeds `bytes` to `conn` as separate reads cut at `cuts` (ascending
/// positions), polling each read until `Ok(None)`, and returns the events.
/// Checks that `Ok(None)` means the read was used up and that an error is
/// returned at most once.
fn feed(conn: &mut Connection, bytes: &[u8], cuts: &[usize], now: Instant) -> Vec<Ev> {
    let mut evs = Vec::new();
    let mut errors = 0;
    let mut start = 0;
    for end in cuts.iter().copied().chain([bytes.len()]) {
        let mut buf = bytes[start..end].to_vec();
        start = end;
        let mut input = &mut buf[..];
        let mut polls = 0;
        loop {
            polls += 1;
            assert!(polls <= end + 2, "poll_event does not make progress");
            match conn.poll_event(&mut input, now) {
                Ok(Some(ev)) => evs.push(Ev::from(ev)),
                Ok(None) => break,
                Err(Error::Protocol(e)) => {
                    errors += 1;
                    assert_eq!(errors, 1, "error returned twice: {e:?}");
                    assert!(input.is_empty(), "input kept after an error");
                    evs.push(Ev::Err(e));
                }
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert!(
            input.is_empty(),
            "Ok(None) with {} bytes unconsumed",
            input.len()
        );
    }
    evs
}

/// The masking key of test client frames.
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A frame as the peer of `to` sends it: masked with `KEY` when it goes to
/// a server, unmasked when it goes to a client.
fn frame_to(to: Role, fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mask = match to {
        Role::Server => Some(KEY),
        Role::Client => None,
    };
    raw_frame(fin, 0, op, mask, payload)
}

/// A client-to-server frame masked with `key`.
fn client_frame(key: [u8; 4], fin: bool, op: OpCode, payload: &[u8]) -> Vec<u8> {
    raw_frame(fin, 0, op, Some(key), payload)
}

/// Any frame, encoded with `crate::frame::write_frame`.
fn raw_frame(fin: bool, rsv: u8, op: OpCode, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let h = FrameHeader {
        fin,
        rsv,
        opcode: op,
        mask,
        payload_len: payload.len() as u64,
    };
    let mut out = Vec::new();
    write_frame(&h, payload, &mut out);
    out
}

/// A close frame payload.
fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// Parses whole frames from `buf`, unmasking payloads.
fn parse_frames(mut buf: &[u8]) -> Vec<(FrameHeader, Vec<u8>)> {
    let mut frames = Vec::new();
    while !buf.is_empty() {
        let (h, n) = parse_header(buf)
            .expect("valid header")
            .expect("whole header");
        let len = h.payload_len as usize;
        let mut payload = buf[n..n + len].to_vec();
        if let Some(k) = h.mask {
            apply_mask(&mut payload, k, 0);
        }
        frames.push((h, payload));
        buf = &buf[n + len..];
    }
    frames
}

/// Drains `conn`'s output into frames.
fn sent_frames(conn: &mut Connection) -> Vec<(FrameHeader, Vec<u8>)> {
    let mut out = Vec::new();
    conn.drain_output(&mut out);
    parse_frames(&out)
}

/// Frames as (opcode, fin, payload), for comparing across masking keys.
fn summary(frames: &[(FrameHeader, Vec<u8>)]) -> Vec<(OpCode, bool, Vec<u8>)> {
    frames
        .iter()
        .map(|(h, p)| (h.opcode, h.fin, p.clone()))
        .collect()
}

/// Checks that frames sent by `role` are masked exactly when it is a client.
fn assert_masking(role: Role, frames: &[(FrameHeader, Vec<u8>)]) {
    for (h, _) in frames {
        assert_eq!(
            h.mask.is_some(),
            role == Role::Client,
            "{role:?} sent {h:?}"
        );
    }
}

/// The code in a close frame payload.
fn code_of(payload: &[u8]) -> u16 {
    u16::from_be_bytes([payload[0], payload[1]])
}

/// Ways to cut an input of `len` bytes: whole, in two reads at every
/// position, and a byte at a time.
///
/// Inputs above 2 KiB (the 64 KiB frames) are cut at every position of
/// their first and last KiB (headers, frame boundaries, the start and end
/// of the payload) and every 61st position in between: cutting a 64 KiB
/// input at all 65537 positions costs minutes in a debug build, and the
/// middle of a payload is uniform. 61 is coprime with the 4-byte mask
/// period and the 13-byte character cycle of [`text_of_len`], so the
/// cuts still fall at every mask phase and inside every kind of character.
fn cut_patterns(len: usize) -> Vec<Vec<usize>> {
    const EDGE: usize = 1024;
    let mut all = vec![Vec::new()];
    if len <= 2 * EDGE {
        all.extend((0..=len).map(|i| vec![i]));
    } else {
        let middle = (EDGE + 1..len - EDGE).filter(|i| i % 61 == 0);
        all.extend(
            (0..=EDGE)
                .chain(middle)
                .chain(len - EDGE..=len)
                .map(|i| vec![i]),
        );
    }
    all.push((1..len).collect());
    all
}

/// Feeds `bytes` to a fresh connection of `role` cut in every pattern of
/// [`cut_patterns`]: the events must be `expect` each time, and the frames
/// sent in reply the same each time. Returns those frames.
fn assert_all_splits(
    role: Role,
    config: &Arc<Config>,
    bytes: &[u8],
    expect: &[Ev],
) -> Vec<(OpCode, bool, Vec<u8>)> {
    let now = Instant::now();
    let mut reply = None;
    for cuts in cut_patterns(bytes.len()) {
        let mut conn = Connection::new(role, config.clone(), now);
        let got = feed(&mut conn, bytes, &cuts, now);
        if got != expect {
            let shown = if cuts.len() > 3 {
                format!("{} cuts", cuts.len())
            } else {
                format!("{cuts:?}")
            };
            panic!("{role:?}, input cut at {shown}:\n got {got:?}\nwant {expect:?}");
        }
        let frames = sent_frames(&mut conn);
        assert_masking(role, &frames);
        let frames = summary(&frames);
        match &reply {
            None => reply = Some(frames),
            Some(r) => assert_eq!(
                &frames,
                r,
                "{role:?}: replies differ at cuts {:?}",
                &cuts[..cuts.len().min(3)]
            ),
        }
        if !conn.is_closed() {
            // Input that ends at a frame boundary leaves nothing behind.
            assert!(
                conn.rx.is_none(),
                "{role:?}: receive state kept after whole frames"
            );
            assert_eq!(conn.hdr_len, 0);
        }
    }
    reply.unwrap_or_default()
}

/// Text of exactly `n` bytes mixing 1- to 4-byte characters, so that
/// splits fall inside characters.
fn text_of_len(n: usize) -> String {
    let chars = ['a', 'é', '€', '𝄞', 'z', 'κ'];
    let mut s = String::with_capacity(n);
    let mut i = 0;
    while s.len() < n {
        let c = chars[i % chars.len()];
        i += 1;
        s.push(if s.len() + c.len_utf8() <= n { c } else { 'a' });
    }
    assert_eq!(s.len(), n);
    s
}

fn binary_of_len(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + 7) as u8).collect()
}

// ------------------------------------------- same events at every split

/// Text and binary frames at the lengths where the length encoding
/// changes (7 bits, 16 bits, 64 bits).
fn single_frames_survive_every_split(role: Role) {
    let config = default_cfg();
    for len in [0, 1, 125, 126, 65535, 65536] {
        let t = text_of_len(len);
        let bytes = frame_to(role, true, OpCode::Text, t.as_bytes());
        assert_all_splits(role, &config, &bytes, &[Ev::Text(t)]);
        let b = binary_of_len(len);
        let bytes = frame_to(role, true, OpCode::Binary, &b);
        assert_all_splits(role, &config, &bytes, &[Ev::Binary(b)]);
    }
}

#[test]
fn single_frames_to_server_survive_every_split() {
    single_frames_survive_every_split(Role::Server);
}

#[test]
fn single_frames_to_client_survive_every_split() {
    single_frames_survive_every_split(Role::Client);
}

#[test]
fn rfc_5_7_fragmented_hello_survives_every_split() {
    // The unmasked example exactly as printed in RFC 6455 §5.7.
    let wire = [0x01, 0x03, 0x48, 0x65, 0x6c, 0x80, 0x02, 0x6c, 0x6f];
    assert_all_splits(Role::Client, &default_cfg(), &wire, &[text("Hello")]);
    // The same from a client, masked.
    let mut wire = client_frame(KEY, false, OpCode::Text, b"Hel");
    wire.extend(client_frame(
        [1, 2, 3, 4],
        true,
        OpCode::Continuation,
        b"lo",
    ));
    assert_all_splits(Role::Server, &default_cfg(), &wire, &[text("Hello")]);
    // And the single-frame example, masked (RFC 6455 §5.7).
    let wire = [
        0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
    ];
    assert_all_splits(Role::Server, &default_cfg(), &wire, &[text("Hello")]);
}

#[test]
fn ping_inside_fragmented_message_survives_every_split() {
    for role in [Role::Server, Role::Client] {
        let mut wire = frame_to(role, false, OpCode::Text, b"Hel");
        wire.extend(frame_to(role, true, OpCode::Ping, b"ping"));
        wire.extend(frame_to(role, true, OpCode::Pong, b"pong"));
        wire.extend(frame_to(role, true, OpCode::Continuation, b"lo"));
        let replies = assert_all_splits(
            role,
            &default_cfg(),
            &wire,
            &[
                Ev::Ping(b"ping".to_vec()),
                Ev::Pong(b"pong".to_vec()),
                text("Hello"),
            ],
        );
        assert_eq!(replies, [(OpCode::Pong, true, b"ping".to_vec())]);
    }
}

#[test]
fn characters_split_across_fragments_and_empty_fragments() {
    for role in [Role::Server, Role::Client] {
        // "a€𝄞b" with "€" cut after its first byte and "𝄞" after its third.
        let s = "a€𝄞b".as_bytes();
        let mut wire = frame_to(role, false, OpCode::Text, &s[..2]);
        wire.extend(frame_to(role, false, OpCode::Continuation, &[]));
        wire.extend(frame_to(role, false, OpCode::Continuation, &s[2..7]));
        wire.extend(frame_to(role, true, OpCode::Continuation, &s[7..]));
        // An empty fragmented binary message, and an empty text one.
        wire.extend(frame_to(role, false, OpCode::Binary, &[]));
        wire.extend(frame_to(role, true, OpCode::Continuation, &[]));
        wire.extend(frame_to(role, false, OpCode::Text, &[]));
        wire.extend(frame_to(role, true, OpCode::Continuation, &[]));
        assert_all_splits(
            role,
            &default_cfg(),
            &wire,
            &[text("a€𝄞b"), Ev::Binary(Vec::new()), text("")],
        );
    }
}

/// The receive path takes a `str` unchecked when unmasking found only
/// ASCII (src/ascii.rs): one byte of 0x80 or more anywhere, in a whole
/// frame or a piece of one, in one fragment or the next, must send the
/// text through the full check, with the same answer as before.
#[test]
fn one_non_ascii_byte_anywhere_goes_through_the_utf8_check() {
    let now = Instant::now();
    let run = |role, wire: &[u8], cuts: &[usize]| {
        let mut conn = Connection::new(role, default_cfg(), now);
        feed(&mut conn, wire, cuts, now)
    };
    for role in [Role::Server, Role::Client] {
        for len in [1, 2, 7, 8, 9, 15, 16, 127, 128, 129, 143, 200] {
            let ascii: Vec<u8> = (0..len).map(|i| b' ' + (i % 95) as u8).collect();
            for pos in 0..len {
                // 'é' (c3 a9) at `pos`: valid; 0xff or a lone c3: invalid.
                let mut valid = ascii.clone();
                valid.splice(pos..pos + 1, "é".bytes());
                let mut ff = ascii.clone();
                ff[pos] = 0xff;
                let mut lone = ascii.clone();
                lone[pos] = 0xc3;
                let want = text(std::str::from_utf8(&valid).unwrap());
                let bad = Ev::Err(ProtocolError::InvalidUtf8);
                for (payload, expect) in [(&valid, &want), (&ff, &bad), (&lone, &bad)] {
                    let wire = frame_to(role, true, OpCode::Text, payload);
                    let hdr = wire.len() - payload.len();
                    for cuts in [vec![], vec![hdr + pos], vec![hdr + pos + 1]] {
                        assert_eq!(
                            run(role, &wire, &cuts),
                            std::slice::from_ref(expect),
                            "{role:?} len {len} pos {pos} cuts {cuts:?}"
                        );
                    }
                    // Two fragments, cut just after the odd byte: the
                    // second is ASCII (or empty) and must still finish, or
                    // fail, the character the first left open.
                    let mut wire = frame_to(role, false, OpCode::Text, &payload[..=pos]);
                    wire.extend(frame_to(
                        role,
                        true,
                        OpCode::Continuation,
                        &payload[pos + 1..],
                    ));
                    assert_eq!(
                        run(role, &wire, &[]),
                        std::slice::from_ref(expect),
                        "{role:?} fragments len {len} pos {pos}"
                    );
                }
            }
        }
    }
}

#[test]
fn close_frame_survives_every_split_and_ends_input() {
    for role in [Role::Server, Role::Client] {
        let mut wire = frame_to(role, true, OpCode::Binary, b"before");
        wire.extend(frame_to(
            role,
            true,
            OpCode::Close,
            &close_payload(1000, "bye"),
        ));
        // Everything after the close is ignored.
        wire.extend(frame_to(role, true, OpCode::Text, b"after"));
        wire.extend(frame_to(role, true, OpCode::Ping, b"p"));
        let replies = assert_all_splits(
            role,
            &default_cfg(),
            &wire,
            &[
                Ev::Binary(b"before".to_vec()),
                Ev::Close(1000, "bye".into()),
            ],
        );
        // The close is echoed with the same code (RFC 6455 §5.5.1).
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].0, OpCode::Close);
        assert_eq!(code_of(&replies[0].2), 1000);

        // An empty close is reported as 1005 and answered with an empty close.
        let wire = frame_to(role, true, OpCode::Close, &[]);
        let replies = assert_all_splits(
            role,
            &default_cfg(),
            &wire,
            &[Ev::Close(1005, String::new())],
        );
        assert_eq!(replies, [(OpCode::Close, true, Vec::new())]);
    }
}

#[test]
fn random_streams_give_the_same_events_at_random_cuts() {
    let mut rng = Rng::new(42);
    let config = default_cfg();
    for round in 0..300 {
        let role = if round % 2 == 0 {
            Role::Server
        } else {
            Role::Client
        };
        let mut wire = Vec::new();
        let mut expect = Vec::new();
        let mut pongs = Vec::new();
        for _ in 0..1 + rng.below(6) {
            let is_text = rng.below(2) == 0;
            let len = [0, 1, 5, 125, 126, 300, 70_000][rng.below(7)];
            let payload = if is_text {
                text_of_len(len).into_bytes()
            } else {
                binary_of_len(len)
            };
            // Cut the message into fragments, possibly at character middles.
            let nfrag = 1 + rng.below(4);
            let mut cuts: Vec<usize> = (1..nfrag).map(|_| rng.below(len + 1)).collect();
            cuts.sort_unstable();
            let mut start = 0;
            for (i, end) in cuts.iter().copied().chain([len]).enumerate() {
                let op = match (i, is_text) {
                    (0, true) => OpCode::Text,
                    (0, false) => OpCode::Binary,
                    _ => OpCode::Continuation,
                };
                wire.extend(frame_to(
                    role,
                    end == len && i == nfrag - 1,
                    op,
                    &payload[start..end],
                ));
                start = end;
                // Control frames may come between fragments.
                if i + 1 < nfrag && rng.below(3) == 0 {
                    let p = binary_of_len(rng.below(126));
                    wire.extend(frame_to(role, true, OpCode::Ping, &p));
                    expect.push(Ev::Ping(p.clone()));
                    pongs.push((OpCode::Pong, true, p));
                }
            }
            expect.push(if is_text {
                Ev::Text(String::from_utf8(payload).unwrap())
            } else {
                Ev::Binary(payload)
            });
        }
        for _ in 0..4 {
            let mut cuts: Vec<usize> = (0..rng.below(8))
                .map(|_| rng.below(wire.len() + 1))
                .collect();
            cuts.sort_unstable();
            let now = Instant::now();
            let mut conn = Connection::new(role, config.clone(), now);
            assert_eq!(
                feed(&mut conn, &wire, &cuts, now),
                expect,
                "round {round} cuts {cuts:?}"
            );
            assert_eq!(summary(&sent_frames(&mut conn)), pongs);
            assert!(conn.rx.is_none() && conn.hdr_len == 0);
        }
    }
}

// ------------------------------------------------------------ auto pong

#[test]
fn ping_is_answered_with_same_payload() {
    for role in [Role::Server, Role::Client] {
        for payload in [&b""[..], b"hello", &[0xab; 125]] {
            let now = Instant::now();
            let mut conn = Connection::new(role, default_cfg(), now);
            let wire = frame_to(role, true, OpCode::Ping, payload);
            assert_eq!(
                feed(&mut conn, &wire, &[], now),
                [Ev::Ping(payload.to_vec())]
            );
            let mut out = Vec::new();
            conn.drain_output(&mut out);
            let (h, n) = parse_header(&out).unwrap().unwrap();
            assert_eq!(h.opcode, OpCode::Pong);
            assert!(h.fin);
            assert_eq!(h.payload_len, payload.len() as u64);
            assert_eq!(out.len(), n + payload.len(), "exactly one frame");
            let mut got = out[n..].to_vec();
            match role {
                Role::Server => assert_eq!(h.mask, None),
                Role::Client => apply_mask(&mut got, h.mask.expect("client pong masked"), 0),
            }
            assert_eq!(got, payload);
            assert!(conn.is_open());
        }
    }
}

#[test]
fn no_pong_after_our_close() {
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, default_cfg(), now);
    conn.close(CloseCode::NORMAL, "", now);
    let wire = frame_to(Role::Server, true, OpCode::Ping, b"x");
    assert_eq!(feed(&mut conn, &wire, &[], now), [Ev::Ping(b"x".to_vec())]);
    // Nothing may follow our close frame (RFC 6455 §5.5.1).
    let frames = sent_frames(&mut conn);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0.opcode, OpCode::Close);
}

// --------------------------------------------------- protocol violations

/// Feeds `bad` followed by valid frames, cut in every pattern, to a
/// connection of `role`: the events are `before` then the error; the
/// connection is failed with `code`, exactly one close frame with that code
/// is queued after the replies to `before`, and nothing after the bad bytes
/// is processed.
fn assert_fails(
    role: Role,
    config: Config,
    bad: &[u8],
    before: &[Ev],
    err: ProtocolError,
    code: u16,
) {
    assert_eq!(err.close_code(), CloseCode(code), "{err:?}");
    let config = cfg(config);
    let mut wire = bad.to_vec();
    wire.extend(frame_to(role, true, OpCode::Text, b"after"));
    wire.extend(frame_to(role, true, OpCode::Ping, b"after"));
    let mut expect = before.to_vec();
    expect.push(Ev::Err(err));
    let now = Instant::now();
    for cuts in cut_patterns(wire.len()) {
        let mut conn = Connection::new(role, config.clone(), now);
        let got = feed(&mut conn, &wire, &cuts, now);
        assert_eq!(
            got,
            expect,
            "{role:?} cuts {:?}",
            &cuts[..cuts.len().min(3)]
        );
        assert!(conn.is_closed());
        assert!(!conn.is_open() && !conn.wants_read());
        assert_eq!(conn.poll_timeout(), None);
        let info = conn.close_info().unwrap();
        assert_eq!((info.code, info.clean), (CloseCode(code), false));
        let frames = sent_frames(&mut conn);
        assert_masking(role, &frames);
        let (last, rest) = frames.split_last().expect("a close frame");
        assert_eq!(last.0.opcode, OpCode::Close);
        assert_eq!(code_of(&last.1), code);
        assert!(std::str::from_utf8(&last.1[2..]).is_ok());
        assert!(
            rest.iter().all(|(h, _)| h.opcode == OpCode::Pong),
            "{rest:?}"
        );
        // Failed for good: more input is swallowed, nothing is sent.
        let more = frame_to(role, true, OpCode::Ping, b"x");
        assert_eq!(feed(&mut conn, &more, &[], now), []);
        assert!(!conn.wants_write());
        assert!(conn.rx.is_none());
        assert!(matches!(conn.send_text("x"), Err(Error::ConnectionClosed)));
    }
}

fn server_fails(bad: &[u8], err: ProtocolError, code: u16) {
    assert_fails(Role::Server, Config::default(), bad, &[], err, code);
}

#[test]
fn reserved_bits_fail_with_1002() {
    for rsv in [1, 2, 4, 7] {
        for role in [Role::Server, Role::Client] {
            let mask = (role == Role::Server).then_some(KEY);
            let bad = raw_frame(true, rsv, OpCode::Text, mask, b"x");
            assert_fails(
                role,
                Config::default(),
                &bad,
                &[],
                ProtocolError::ReservedBits(rsv),
                1002,
            );
            let bad = raw_frame(true, rsv, OpCode::Ping, mask, b"x");
            assert_fails(
                role,
                Config::default(),
                &bad,
                &[],
                ProtocolError::ReservedBits(rsv),
                1002,
            );
        }
    }
}

#[test]
fn unknown_opcodes_fail_with_1002() {
    for op in [3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15] {
        let mut bad = vec![0x80 | op, 0x81];
        bad.extend_from_slice(&KEY);
        bad.push(b'x' ^ KEY[0]);
        server_fails(&bad, ProtocolError::UnknownOpcode(op), 1002);
        // Caught from the first byte alone.
        let mut conn = Connection::new(Role::Server, default_cfg(), Instant::now());
        let got = feed(&mut conn, &bad[..1], &[], Instant::now());
        assert_eq!(got, [Ev::Err(ProtocolError::UnknownOpcode(op))]);
    }
}

#[test]
fn masking_violations_fail_with_1002() {
    // Unmasked client frame to a server.
    let bad = frame_to(Role::Client, true, OpCode::Text, b"hi");
    server_fails(&bad, ProtocolError::UnmaskedFrame, 1002);
    let bad = frame_to(Role::Client, true, OpCode::Ping, b"");
    server_fails(&bad, ProtocolError::UnmaskedFrame, 1002);
    // Masked server frame to a client.
    let bad = frame_to(Role::Server, true, OpCode::Binary, b"hi");
    assert_fails(
        Role::Client,
        Config::default(),
        &bad,
        &[],
        ProtocolError::MaskedFrame,
        1002,
    );
}

#[test]
fn bad_control_frames_fail_with_1002() {
    for op in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
        let bad = client_frame(KEY, false, op, b"");
        server_fails(&bad, ProtocolError::FragmentedControl, 1002);
        let bad = client_frame(KEY, true, op, &[b'a'; 126]);
        server_fails(&bad, ProtocolError::ControlTooLong(126), 1002);
    }
    // A ping of exactly 125 bytes is fine.
    let ok = client_frame(KEY, true, OpCode::Ping, &[b'a'; 125]);
    assert_all_splits(
        Role::Server,
        &default_cfg(),
        &ok,
        &[Ev::Ping(vec![b'a'; 125])],
    );
}

#[test]
fn fragmentation_violations_fail_with_1002() {
    let bad = client_frame(KEY, true, OpCode::Continuation, b"x");
    server_fails(&bad, ProtocolError::UnexpectedContinuation, 1002);
    let bad = client_frame(KEY, false, OpCode::Continuation, b"x");
    server_fails(&bad, ProtocolError::UnexpectedContinuation, 1002);

    // A continuation after a finished fragmented message.
    let mut bad = client_frame(KEY, false, OpCode::Text, b"Hel");
    bad.extend(client_frame(KEY, true, OpCode::Continuation, b"lo"));
    bad.extend(client_frame(KEY, true, OpCode::Continuation, b"!"));
    assert_fails(
        Role::Server,
        Config::default(),
        &bad,
        &[text("Hello")],
        ProtocolError::UnexpectedContinuation,
        1002,
    );

    // A new data frame inside a fragmented message, even after a ping.
    for (first, second) in [
        (OpCode::Text, OpCode::Text),
        (OpCode::Text, OpCode::Binary),
        (OpCode::Binary, OpCode::Text),
    ] {
        for fin in [true, false] {
            let mut bad = client_frame(KEY, false, first, b"a");
            bad.extend(client_frame(KEY, true, OpCode::Ping, b"p"));
            bad.extend(client_frame(KEY, fin, second, b"b"));
            assert_fails(
                Role::Server,
                Config::default(),
                &bad,
                &[Ev::Ping(b"p".to_vec())],
                ProtocolError::ExpectedContinuation,
                1002,
            );
        }
    }
}

#[test]
fn invalid_utf8_fails_with_1007() {
    for role in [Role::Server, Role::Client] {
        let fails = |bad: &[u8], before: &[Ev]| {
            assert_fails(
                role,
                Config::default(),
                bad,
                before,
                ProtocolError::InvalidUtf8,
                1007,
            )
        };
        // In a single frame, and after a good message.
        fails(&frame_to(role, true, OpCode::Text, b"ok\xff"), &[]);
        let mut bad = frame_to(role, true, OpCode::Text, "κόσμε".as_bytes());
        bad.extend(frame_to(role, true, OpCode::Text, b"\xc0\x80"));
        fails(&bad, &[text("κόσμε")]);
        // A single frame that ends inside a character.
        fails(&frame_to(role, true, OpCode::Text, b"a\xe2\x82"), &[]);
        // Across fragments: a character cut by a fragment boundary and
        // continued wrongly.
        let mut bad = frame_to(role, false, OpCode::Text, b"a\xe2\x82");
        bad.extend(frame_to(role, true, OpCode::Continuation, b"A"));
        fails(&bad, &[]);
        // A message that ends inside a character.
        let mut bad = frame_to(role, false, OpCode::Text, b"a\xe2");
        bad.extend(frame_to(role, true, OpCode::Continuation, b""));
        fails(&bad, &[]);
        // Binary messages are not checked.
        let wire = frame_to(role, true, OpCode::Binary, b"\xff");
        assert_all_splits(role, &default_cfg(), &wire, &[Ev::Binary(vec![0xff])]);
    }
}

/// Autobahn 6.4.x: the error is reported as soon as the first impossible
/// byte arrives, before the rest of the frame.
#[test]
fn invalid_utf8_detected_at_first_impossible_byte() {
    // "κόσμε" then F4 90, which can start no character (above U+10FFFF).
    let payload = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited";
    let bad = 12; // index of 0x90 in the payload
    for role in [Role::Server, Role::Client] {
        // One frame: the header and the payload up to the bad byte.
        let wire = frame_to(role, true, OpCode::Text, payload);
        let hdr = wire.len() - payload.len();
        for cuts in cut_patterns(hdr + bad) {
            let now = Instant::now();
            let mut conn = Connection::new(role, default_cfg(), now);
            assert_eq!(feed(&mut conn, &wire[..hdr + bad], &cuts, now), []);
            assert!(conn.is_open());
            assert_eq!(
                feed(&mut conn, &wire[hdr + bad..hdr + bad + 1], &[], now),
                [Ev::Err(ProtocolError::InvalidUtf8)]
            );
            let frames = sent_frames(&mut conn);
            assert_eq!(code_of(&frames.last().unwrap().1), 1007);
        }
        // Fragments: a whole first fragment, then a second that goes bad.
        let mut wire = frame_to(role, false, OpCode::Text, &payload[..11]);
        let first = wire.len();
        let second = frame_to(role, true, OpCode::Continuation, &payload[11..]);
        let hdr2 = second.len() - (payload.len() - 11);
        wire.extend(second);
        let upto = first + hdr2 + (bad - 11);
        let now = Instant::now();
        let mut conn = Connection::new(role, default_cfg(), now);
        assert_eq!(feed(&mut conn, &wire[..upto], &[], now), []);
        assert_eq!(
            feed(&mut conn, &wire[upto..upto + 1], &[], now),
            [Ev::Err(ProtocolError::InvalidUtf8)]
        );
    }
}

#[test]
fn bad_close_frames_fail() {
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
    ] {
        let bad = client_frame(KEY, true, OpCode::Close, &close_payload(code, ""));
        server_fails(&bad, ProtocolError::InvalidCloseCode(code), 1002);
    }
    let bad = client_frame(KEY, true, OpCode::Close, &[0x03]);
    server_fails(&bad, ProtocolError::CloseLengthOne, 1002);
    let mut p = close_payload(1000, "ok");
    p.push(0xff);
    let bad = client_frame(KEY, true, OpCode::Close, &p);
    server_fails(&bad, ProtocolError::InvalidCloseReason, 1007);
    // Every valid code is accepted and echoed.
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
    ] {
        let wire = client_frame(KEY, true, OpCode::Close, &close_payload(code, "é"));
        let replies = assert_all_splits(
            Role::Server,
            &default_cfg(),
            &wire,
            &[Ev::Close(code, "é".into())],
        );
        assert_eq!(code_of(&replies[0].2), code);
    }
}

#[test]
fn length_encoding_violations_fail_with_1002() {
    // 2^63: the most significant bit of a 64-bit length must be 0.
    let mut bad = vec![0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0];
    bad.extend_from_slice(&KEY);
    server_fails(&bad, ProtocolError::LengthOverflow, 1002);
    // Caught from the first length byte.
    let mut conn = Connection::new(Role::Server, default_cfg(), Instant::now());
    assert_eq!(
        feed(&mut conn, &bad[..3], &[], Instant::now()),
        [Ev::Err(ProtocolError::LengthOverflow)]
    );
    // A length that fits 7 bits sent in 16.
    let mut bad = vec![0x82, 0xfe, 0x00, 0x05];
    bad.extend_from_slice(&KEY);
    bad.extend_from_slice(&[0; 5]);
    server_fails(&bad, ProtocolError::NonMinimalLength, 1002);
}

#[test]
fn frame_over_max_frame_size_fails_with_1009_before_its_payload() {
    // 2^62 bytes declared and nothing more sent: failed at once, nothing
    // allocated for it.
    let mut hdr = vec![0x82, 0xff];
    hdr.extend_from_slice(&(1u64 << 62).to_be_bytes());
    hdr.extend_from_slice(&KEY);
    let err = ProtocolError::Capacity(CapacityError::FrameTooLarge {
        size: 1 << 62,
        max: Config::default().max_frame_size,
    });
    server_fails(&hdr, err, 1009);
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, default_cfg(), now);
    assert_eq!(feed(&mut conn, &hdr, &[], now), [Ev::Err(err)]);
    assert!(conn.rx.is_none());

    // A small limit: exactly the limit passes, one more byte fails.
    let small = || Config {
        max_frame_size: 100,
        ..Config::default()
    };
    let ok = client_frame(KEY, true, OpCode::Binary, &[1; 100]);
    assert_all_splits(
        Role::Server,
        &cfg(small()),
        &ok,
        &[Ev::Binary(vec![1; 100])],
    );
    let bad = client_frame(KEY, true, OpCode::Binary, &[1; 101]);
    let err = ProtocolError::Capacity(CapacityError::FrameTooLarge {
        size: 101,
        max: 100,
    });
    assert_fails(Role::Server, small(), &bad, &[], err, 1009);
}

#[test]
fn huge_allowed_frame_does_not_reserve_its_declared_size() {
    let config = cfg(Config {
        max_frame_size: 1 << 40,
        max_message_size: 1 << 40,
        ..Config::default()
    });
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, config, now);
    let mut wire = vec![0x82, 0xff];
    wire.extend_from_slice(&(1u64 << 40).to_be_bytes());
    wire.extend_from_slice(&KEY);
    wire.extend_from_slice(&[0; 10]);
    assert_eq!(feed(&mut conn, &wire, &[], now), []);
    let rx = conn.rx.as_ref().expect("frame in progress");
    assert_eq!(rx.msg.len(), 10);
    assert!(
        rx.msg.capacity() <= 256 * 1024,
        "reserved {}",
        rx.msg.capacity()
    );
}

#[test]
fn message_over_max_message_size_fails_with_1009() {
    let small = || Config {
        max_message_size: 10,
        ..Config::default()
    };
    let mut ok = client_frame(KEY, false, OpCode::Text, b"hello");
    ok.extend(client_frame(KEY, true, OpCode::Continuation, b"world"));
    assert_all_splits(Role::Server, &cfg(small()), &ok, &[text("helloworld")]);

    let mut bad = client_frame(KEY, false, OpCode::Text, b"hello");
    bad.extend(client_frame(KEY, false, OpCode::Continuation, b"world"));
    bad.extend(client_frame(KEY, true, OpCode::Continuation, b"!"));
    let err = ProtocolError::Capacity(CapacityError::MessageTooLarge { size: 11, max: 10 });
    assert_fails(Role::Server, small(), &bad, &[], err, 1009);
    // A single frame over the message limit but under the frame limit.
    let bad = client_frame(KEY, true, OpCode::Binary, &[0; 11]);
    let err = ProtocolError::Capacity(CapacityError::MessageTooLarge { size: 11, max: 10 });
    assert_fails(Role::Server, small(), &bad, &[], err, 1009);
}

#[test]
fn too_many_fragments_fail_with_1009() {
    let three = || Config {
        max_fragments: 3,
        ..Config::default()
    };
    let mut ok = client_frame(KEY, false, OpCode::Binary, b"a");
    ok.extend(client_frame(KEY, false, OpCode::Continuation, b"b"));
    ok.extend(client_frame(KEY, true, OpCode::Continuation, b"c"));
    // The count restarts with each message.
    let twice = [ok.clone(), ok.clone()].concat();
    assert_all_splits(
        Role::Server,
        &cfg(three()),
        &twice,
        &[Ev::Binary(b"abc".to_vec()), Ev::Binary(b"abc".to_vec())],
    );
    let mut bad = client_frame(KEY, false, OpCode::Binary, b"a");
    for _ in 0..2 {
        bad.extend(client_frame(KEY, false, OpCode::Continuation, b"b"));
        // Control frames in between do not count.
        bad.extend(client_frame(KEY, true, OpCode::Pong, b""));
    }
    bad.extend(client_frame(KEY, true, OpCode::Continuation, b"c"));
    let err = ProtocolError::Capacity(CapacityError::TooManyFragments { max: 3 });
    let pong = Ev::Pong(Vec::new());
    assert_fails(
        Role::Server,
        three(),
        &bad,
        &[pong.clone(), pong],
        err,
        1009,
    );
}

#[test]
fn failure_while_closing_sends_no_second_close() {
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, default_cfg(), now);
    conn.close(CloseCode::GOING_AWAY, "bye", now);
    let bad = client_frame(KEY, true, OpCode::Text, b"\xff");
    assert_eq!(
        feed(&mut conn, &bad, &[], now),
        [Ev::Err(ProtocolError::InvalidUtf8)]
    );
    let frames = sent_frames(&mut conn);
    assert_eq!(frames.len(), 1);
    assert_eq!(code_of(&frames[0].1), 1001);
    assert_eq!(conn.close_info().unwrap().code, CloseCode::INVALID_DATA);
}

// --------------------------------------------- client ↔ server with a clock

/// A client and a server connection joined in memory, with a fake clock.
struct Pair {
    client: Connection,
    server: Connection,
    now: Instant,
    rng: Rng,
    client_events: Vec<Ev>,
    server_events: Vec<Ev>,
    /// Every frame that went to the client, and to the server.
    to_client: Vec<(FrameHeader, Vec<u8>)>,
    to_server: Vec<(FrameHeader, Vec<u8>)>,
}

impl Pair {
    /// Runs the opening handshake with `crate::handshake`, fed a byte at a
    /// time. The server greets the client in the same write as its 101.
    fn connect(client_config: Config, server_config: Config) -> Pair {
        let now = Instant::now();
        let (client_config, server_config) = (cfg(client_config), cfg(server_config));
        let creq = ClientRequest {
            host: "example.com:9001".into(),
            target: "/chat?room=a".into(),
            key: generate_key(),
            ..ClientRequest::default()
        };
        let mut wire = Vec::new();
        creq.write(&mut wire);

        let mut reader = RequestReader::new();
        let mut request = None;
        for (i, b) in wire.iter().enumerate() {
            let max = (server_config.max_handshake_bytes, server_config.max_headers);
            match reader.feed(std::slice::from_ref(b), max.0, max.1).unwrap() {
                Head::Partial => assert!(i + 1 < wire.len(), "head not found"),
                Head::Complete(req, rest) => {
                    assert_eq!(i + 1, wire.len(), "head ended early");
                    assert!(rest.is_empty());
                    request = Some(req);
                }
            }
        }
        let request = request.unwrap();
        assert_eq!(request.path(), "/chat");
        let key = request.validate_upgrade().unwrap();
        assert_eq!(key, creq.key);
        let mut wire = Vec::new();
        write_accept_response(key, None, &[], &mut wire);
        let mut server = Connection::new(Role::Server, server_config, now);
        assert_eq!(server.send_text("welcome").unwrap(), SendStatus::Queued);
        server.drain_output(&mut wire);

        let mut reader = ResponseReader::new();
        let (response, rest) = match reader.feed(&wire, 8192, 64).unwrap() {
            Head::Complete(r, rest) => (r, rest),
            Head::Partial => panic!("partial response"),
        };
        assert_eq!(response.validate(&creq), Ok(None));
        let mut client = Connection::new(Role::Client, client_config, now);
        let client_events = feed(&mut client, &rest, &[], now);
        assert_eq!(client_events, [text("welcome")]);
        Pair {
            client,
            server,
            now,
            rng: Rng::new(9),
            client_events: Vec::new(),
            server_events: Vec::new(),
            to_client: Vec::new(),
            to_server: Vec::new(),
        }
    }

    fn at(&mut self, since_start: Duration, start: Instant) {
        self.now = start + since_start;
    }

    fn random_cuts(&mut self, len: usize) -> Vec<usize> {
        let mut cuts: Vec<usize> = (0..self.rng.below(5))
            .map(|_| self.rng.below(len + 1))
            .collect();
        cuts.sort_unstable();
        cuts
    }

    /// Moves what the client queued to the server.
    fn client_to_server(&mut self) -> bool {
        let mut bytes = Vec::new();
        self.client.drain_output(&mut bytes);
        let frames = parse_frames(&bytes);
        assert_masking(Role::Client, &frames);
        self.to_server.extend(frames);
        let cuts = self.random_cuts(bytes.len());
        let evs = feed(&mut self.server, &bytes, &cuts, self.now);
        self.server_events.extend(evs);
        !bytes.is_empty()
    }

    /// Moves what the server queued to the client.
    fn server_to_client(&mut self) -> bool {
        let mut bytes = Vec::new();
        self.server.drain_output(&mut bytes);
        let frames = parse_frames(&bytes);
        assert_masking(Role::Server, &frames);
        self.to_client.extend(frames);
        let cuts = self.random_cuts(bytes.len());
        let evs = feed(&mut self.client, &bytes, &cuts, self.now);
        self.client_events.extend(evs);
        !bytes.is_empty()
    }

    /// Moves bytes both ways until neither side has anything to write.
    fn transfer(&mut self) {
        loop {
            let a = self.client_to_server();
            let b = self.server_to_client();
            if !a && !b {
                break;
            }
        }
    }
}

fn no_timers() -> Config {
    Config {
        idle_timeout: None,
        ping_interval: None,
        ..Config::default()
    }
}

#[test]
fn session_messages_both_ways() {
    let mut p = Pair::connect(no_timers(), no_timers());
    // A fragmented text with a ping in the middle.
    p.client.send_frame(OpCode::Text, b"Hel", false).unwrap();
    p.client.ping(b"are you there").unwrap();
    p.client
        .send_frame(OpCode::Continuation, b"lo", true)
        .unwrap();
    p.transfer();
    assert_eq!(
        p.server_events,
        [Ev::Ping(b"are you there".to_vec()), text("Hello")]
    );
    assert_eq!(p.client_events, [Ev::Pong(b"are you there".to_vec())]);

    // Messages both ways, borrowed and owned.
    p.server_events.clear();
    p.client_events.clear();
    p.client.send_binary(&[1, 2, 3]).unwrap();
    p.client
        .send(Message::Text(Cow::Owned("owned".into())))
        .unwrap();
    p.client
        .send(Message::Binary(Cow::Owned(binary_of_len(20_000))))
        .unwrap();
    p.server.send_text("to client").unwrap();
    p.server
        .send(Message::Binary(Cow::Borrowed(&[9; 70_000])))
        .unwrap();
    p.server.pong(b"unsolicited").unwrap();
    p.transfer();
    assert_eq!(
        p.server_events,
        [
            Ev::Binary(vec![1, 2, 3]),
            text("owned"),
            Ev::Binary(binary_of_len(20_000))
        ]
    );
    assert_eq!(
        p.client_events,
        [
            text("to client"),
            Ev::Binary(vec![9; 70_000]),
            Ev::Pong(b"unsolicited".to_vec())
        ]
    );
    assert!(p.client.is_open() && p.server.is_open());
    assert_eq!((p.client.buffered(), p.server.buffered()), (0, 0));
    // Each client frame has its own masking key.
    let keys: std::collections::HashSet<_> =
        p.to_server.iter().map(|(h, _)| h.mask.unwrap()).collect();
    assert!(keys.len() > 1);
}

#[test]
fn close_initiated_by_client() {
    let mut p = Pair::connect(no_timers(), no_timers());
    let start = p.now;
    p.client.close(CloseCode::NORMAL, "done", p.now);
    assert!(!p.client.is_open() && !p.client.is_closed());
    assert_eq!(
        p.client.poll_timeout(),
        Some(start + Config::default().close_timeout)
    );
    assert!(matches!(
        p.client.send_text("late"),
        Err(Error::ConnectionClosed)
    ));
    // Data the server sends before it sees the close still arrives.
    p.server.send_text("in flight").unwrap();
    p.at(Duration::from_millis(10), start);
    p.transfer();
    assert_eq!(p.server_events, [Ev::Close(1000, "done".into())]);
    assert_eq!(
        p.client_events,
        [text("in flight"), Ev::Close(1000, String::new())]
    );
    // The server's reply echoes the code.
    let (h, payload) = p.to_client.last().unwrap();
    assert_eq!((h.opcode, code_of(payload)), (OpCode::Close, 1000));
    let expect = |reason: &str| CloseInfo {
        code: CloseCode::NORMAL,
        reason: reason.into(),
        clean: true,
    };
    assert_eq!(p.server.close_info(), Some(&expect("done")));
    assert_eq!(p.client.close_info(), Some(&expect("")));
    for c in [&p.client, &p.server] {
        assert!(c.is_closed() && !c.wants_read());
        assert_eq!(c.poll_timeout(), None);
    }
    assert!(matches!(
        p.server.send_text("x"),
        Err(Error::ConnectionClosed)
    ));
    assert!(matches!(p.server.ping(b""), Err(Error::ConnectionClosed)));
}

#[test]
fn close_initiated_by_server() {
    let mut p = Pair::connect(no_timers(), no_timers());
    p.server.close(CloseCode(4000), "bye", p.now);
    // A second close does nothing.
    p.server.close(CloseCode::INTERNAL, "again", p.now);
    p.transfer();
    assert_eq!(p.client_events, [Ev::Close(4000, "bye".into())]);
    assert_eq!(p.server_events, [Ev::Close(4000, String::new())]);
    let closes: Vec<_> = p
        .to_client
        .iter()
        .filter(|(h, _)| h.opcode == OpCode::Close)
        .collect();
    assert_eq!(closes.len(), 1);
    assert_eq!(code_of(&p.to_server.last().unwrap().1), 4000);
    for c in [&p.client, &p.server] {
        let info = c.close_info().unwrap();
        assert_eq!((info.code, info.clean), (CloseCode(4000), true));
    }
}

#[test]
fn close_times_out_when_peer_never_answers() {
    let config = no_timers();
    let close_timeout = config.close_timeout;
    let mut p = Pair::connect(config, no_timers());
    let start = p.now;
    p.client.close(CloseCode::NORMAL, "", start);
    let mut lost = Vec::new();
    p.client.drain_output(&mut lost);
    assert_eq!(p.client.poll_timeout(), Some(start + close_timeout));
    p.client
        .handle_timeout(start + close_timeout - Duration::from_millis(1));
    assert!(!p.client.is_closed());
    p.client.handle_timeout(start + close_timeout);
    assert!(p.client.is_closed());
    let info = p.client.close_info().unwrap();
    assert_eq!((info.code, info.clean), (CloseCode::ABNORMAL, false));
    assert_eq!(p.client.poll_timeout(), None);
}

#[test]
fn close_codes_that_cannot_be_sent_are_replaced() {
    let now = Instant::now();
    // 1006 may not be sent: it becomes 1011. 1005 sends an empty close.
    for (asked, sent) in [
        (1006u16, Some(1011u16)),
        (1005, None),
        (999, Some(1011)),
        (3001, Some(3001)),
    ] {
        let mut conn = Connection::new(Role::Server, default_cfg(), now);
        conn.close(CloseCode(asked), &"x".repeat(200), now);
        let frames = sent_frames(&mut conn);
        assert_eq!(frames.len(), 1);
        let payload = &frames[0].1;
        match sent {
            Some(code) => {
                assert_eq!(code_of(payload), code);
                assert_eq!(payload.len(), 125, "reason cut to 123 bytes");
            }
            None => assert!(payload.is_empty()),
        }
    }
}

/// `take_timeout_moved` says when `poll_timeout` may have become earlier
/// (at first, when a timeout was handled, when a close starts, when the
/// peer speaks while a ping is out), and not when data only moves the time
/// of the last receipt: deadlines only move later then.
#[test]
fn timeout_moved_is_said_whenever_the_next_deadline_may_be_earlier() {
    let secs = Duration::from_secs;
    let config = Config {
        ping_interval: Some(secs(10)),
        pong_timeout: secs(30),
        idle_timeout: Some(secs(60)),
        close_timeout: secs(5),
        ..Config::default()
    };
    let start = Instant::now();
    let mut conn = Connection::new(Role::Server, Arc::new(config), start);
    assert!(
        conn.take_timeout_moved(),
        "a new connection has a deadline to ask for"
    );
    assert!(!conn.take_timeout_moved(), "said once");
    assert_eq!(conn.poll_timeout(), Some(start + secs(10)));
    let data = frame_to(Role::Server, true, OpCode::Binary, b"x");
    feed(&mut conn, &data, &[], start + secs(1));
    assert!(!conn.take_timeout_moved());
    assert_eq!(conn.poll_timeout(), Some(start + secs(11)), "later");
    conn.handle_timeout(start + secs(11));
    assert!(conn.take_timeout_moved(), "a timeout was handled");
    assert_eq!(conn.poll_timeout(), Some(start + secs(41)), "the pong's");
    let pong = frame_to(Role::Server, true, OpCode::Pong, b"");
    feed(&mut conn, &pong, &[], start + secs(12));
    assert!(
        conn.take_timeout_moved(),
        "the pong came: the next ping is sooner"
    );
    assert_eq!(conn.poll_timeout(), Some(start + secs(22)));
    feed(&mut conn, &data, &[], start + secs(13));
    assert!(!conn.take_timeout_moved());
    conn.close(CloseCode::NORMAL, "", start + secs(14));
    assert!(conn.take_timeout_moved(), "a close started");
    assert_eq!(conn.poll_timeout(), Some(start + secs(19)));
}

#[test]
fn heartbeat_ping_and_pong_timeout() {
    let server_config = Config {
        ping_interval: Some(Duration::from_secs(10)),
        pong_timeout: Duration::from_secs(5),
        idle_timeout: None,
        ..Config::default()
    };
    let secs = Duration::from_secs;

    // The peer answers: the connection stays open.
    let mut p = Pair::connect(no_timers(), server_config.clone());
    let start = p.now;
    assert_eq!(p.server.poll_timeout(), Some(start + secs(10)));
    p.server.handle_timeout(start + secs(9));
    assert!(!p.server.wants_write());
    p.at(secs(10), start);
    p.server.handle_timeout(p.now);
    assert_eq!(p.server.poll_timeout(), Some(start + secs(15)));
    p.at(secs(11), start);
    p.transfer();
    assert_eq!(p.to_client.len(), 1);
    assert_eq!(p.to_client[0].0.opcode, OpCode::Ping);
    assert_eq!(p.client_events, [Ev::Ping(Vec::new())]);
    assert_eq!(p.server_events, [Ev::Pong(Vec::new())]);
    p.server.handle_timeout(start + secs(15));
    assert!(p.server.is_open());
    assert!(!p.server.wants_write());
    // The next ping is due an interval after the pong.
    assert_eq!(p.server.poll_timeout(), Some(start + secs(21)));

    // The peer never answers: dropped after pong_timeout, with 1006.
    let mut p = Pair::connect(no_timers(), server_config);
    let start = p.now;
    p.server.handle_timeout(start + secs(10));
    let frames = sent_frames(&mut p.server);
    assert_eq!(summary(&frames), [(OpCode::Ping, true, Vec::new())]);
    // No second ping while one is outstanding.
    p.server.handle_timeout(start + secs(12));
    assert!(!p.server.wants_write());
    p.server
        .handle_timeout(start + secs(15) - Duration::from_millis(1));
    assert!(p.server.is_open());
    p.server.handle_timeout(start + secs(15));
    assert!(p.server.is_closed());
    let info = p.server.close_info().unwrap();
    assert_eq!((info.code, info.clean), (CloseCode::ABNORMAL, false));
    assert_eq!(p.server.buffered(), 0);
}

#[test]
fn idle_timeout_closes_with_1001() {
    let server_config = Config {
        idle_timeout: Some(Duration::from_secs(60)),
        ping_interval: None,
        ..Config::default()
    };
    let secs = Duration::from_secs;
    let mut p = Pair::connect(no_timers(), server_config);
    let start = p.now;
    assert_eq!(p.server.poll_timeout(), Some(start + secs(60)));
    // Anything received resets the idle timer.
    p.at(secs(30), start);
    p.client.send_text("still here").unwrap();
    p.transfer();
    assert_eq!(p.server.poll_timeout(), Some(start + secs(90)));
    p.server.handle_timeout(start + secs(60));
    assert!(p.server.is_open() && !p.server.wants_write());
    p.at(secs(90), start);
    p.server.handle_timeout(p.now);
    assert!(!p.server.is_open() && !p.server.is_closed());
    assert_eq!(
        p.server.poll_timeout(),
        Some(p.now + Config::default().close_timeout)
    );
    p.transfer();
    assert_eq!(p.client_events, [Ev::Close(1001, "idle timeout".into())]);
    let info = p.server.close_info().unwrap();
    assert_eq!((info.code, info.clean), (CloseCode::GOING_AWAY, true));
    assert!(p.client.is_closed());
}

#[test]
fn transport_closed_without_handshake() {
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, default_cfg(), now);
    conn.send_text("unsent").unwrap();
    conn.handle_transport_closed("EOF");
    assert!(conn.is_closed() && !conn.wants_write());
    assert_eq!(
        conn.close_info(),
        Some(&CloseInfo {
            code: CloseCode::ABNORMAL,
            reason: "EOF".into(),
            clean: false
        })
    );
    // A clean close is not overwritten.
    let mut conn = Connection::new(Role::Server, default_cfg(), now);
    let wire = client_frame(KEY, true, OpCode::Close, &close_payload(1000, ""));
    feed(&mut conn, &wire, &[], now);
    conn.handle_transport_closed("EOF");
    assert_eq!(conn.close_info().unwrap().code, CloseCode::NORMAL);
}

// ------------------------------------------------ backpressure, overflow

fn small_queue(overflow: OverflowPolicy) -> Arc<Config> {
    cfg(Config {
        write_buffer_high: 100,
        write_buffer_low: 50,
        write_buffer_limit: 200,
        overflow,
        ..Config::default()
    })
}

#[test]
fn sends_report_full_above_high_water_mark() {
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, small_queue(OverflowPolicy::Drop), now);
    assert!(conn.wants_read());
    // 2 + 48 = 50 bytes a frame.
    assert_eq!(conn.send_binary(&[0; 48]).unwrap(), SendStatus::Queued);
    assert_eq!(conn.send_binary(&[0; 48]).unwrap(), SendStatus::Queued);
    assert_eq!(conn.buffered(), 100);
    assert!(conn.wants_read(), "at the mark is not above it");
    assert_eq!(conn.send_binary(&[0; 8]).unwrap(), SendStatus::Full);
    assert_eq!(conn.buffered(), 110);
    assert!(!conn.wants_read(), "a peer that does not read is not read");
    let mut out = Vec::new();
    conn.drain_output(&mut out);
    assert_eq!(out.len(), 110);
    assert!(conn.wants_read());
    assert_eq!(conn.send_text("x").unwrap(), SendStatus::Queued);
}

#[test]
fn overflow_close_fails_the_connection() {
    let now = Instant::now();
    let mut conn = Connection::new(
        Role::Server,
        small_queue(OverflowPolicy::Close(CloseCode::TRY_AGAIN)),
        now,
    );
    for _ in 0..3 {
        conn.send_binary(&[7; 48]).unwrap();
    }
    assert_eq!(conn.buffered(), 150);
    // 150 + 2 + 48 = 200: exactly the limit is allowed.
    assert_eq!(conn.send_binary(&[7; 48]).unwrap(), SendStatus::Full);
    let err = conn.send_binary(&[7; 1]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Capacity(CapacityError::WriteBufferLimit {
                buffered: 200,
                limit: 200
            })
        ),
        "{err:?}"
    );
    assert!(conn.is_closed());
    let info = conn.close_info().unwrap();
    assert_eq!((info.code, info.clean), (CloseCode::TRY_AGAIN, false));
    // What was queued stays queued, the close goes after it.
    let frames = sent_frames(&mut conn);
    assert_eq!(frames.len(), 5);
    assert!(frames[..4]
        .iter()
        .all(|(h, p)| h.opcode == OpCode::Binary && p == &[7; 48]));
    assert_eq!(frames[4].0.opcode, OpCode::Close);
    assert_eq!(code_of(&frames[4].1), 1013);
    assert!(matches!(conn.send_text("x"), Err(Error::ConnectionClosed)));
}

#[test]
fn overflow_drop_keeps_the_connection() {
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, small_queue(OverflowPolicy::Drop), now);
    for _ in 0..3 {
        conn.send_binary(&[7; 48]).unwrap();
    }
    // The header counts: 150 + 2 + 49 = 201 is over the limit.
    let err = conn.send_binary(&[7; 49]).unwrap_err();
    assert!(
        matches!(err, Error::Capacity(CapacityError::WriteBufferLimit { .. })),
        "{err:?}"
    );
    let err = conn
        .send(Message::Text(Cow::Owned("y".repeat(60))))
        .unwrap_err();
    assert!(
        matches!(err, Error::Capacity(CapacityError::WriteBufferLimit { .. })),
        "{err:?}"
    );
    assert!(conn.is_open());
    assert_eq!(conn.buffered(), 150);
    let frames = sent_frames(&mut conn);
    assert_eq!(frames.len(), 3, "the dropped messages were not queued");
    assert_eq!(conn.send_binary(&[7; 49]).unwrap(), SendStatus::Queued);
}

/// The write queue limit holds for the caller's pings and pongs too: a
/// loop of pings to a peer that does not read cannot grow it unbounded.
#[test]
fn caller_control_frames_respect_the_write_queue_limit() {
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, small_queue(OverflowPolicy::Drop), now);
    for _ in 0..3 {
        conn.send_binary(&[7; 48]).unwrap();
    }
    // 150 + 2 + 48 = 200 fits; 150 + 2 + 49 does not.
    let err = conn.ping(&[1; 49]).unwrap_err();
    assert!(
        matches!(err, Error::Capacity(CapacityError::WriteBufferLimit { .. })),
        "{err:?}"
    );
    let err = conn.pong(&[1; 125]).unwrap_err();
    assert!(
        matches!(err, Error::Capacity(CapacityError::WriteBufferLimit { .. })),
        "{err:?}"
    );
    assert_eq!(conn.buffered(), 150);
    assert!(conn.is_open());
    conn.ping(&[1; 48]).unwrap();
    assert_eq!(conn.buffered(), 200);
    // Under the policy Close, the connection closes as for any send.
    let mut conn = Connection::new(
        Role::Server,
        small_queue(OverflowPolicy::Close(CloseCode::POLICY)),
        now,
    );
    for _ in 0..4 {
        conn.send_binary(&[7; 48]).unwrap();
    }
    assert!(matches!(
        conn.ping(b"x"),
        Err(Error::Capacity(CapacityError::WriteBufferLimit { .. }))
    ));
    assert!(conn.is_closed());
    assert_eq!(conn.close_info().unwrap().code, CloseCode::POLICY);
}

#[test]
fn empty_queue_takes_any_message_up_to_max_message_size() {
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, small_queue(OverflowPolicy::Drop), now);
    assert_eq!(conn.send_binary(&[0; 1000]).unwrap(), SendStatus::Full);
    let config = cfg(Config {
        max_message_size: 10,
        ..Config::default()
    });
    let mut conn = Connection::new(Role::Server, config, now);
    conn.send_text("0123456789").unwrap();
    let err = conn.send_text("0123456789a").unwrap_err();
    assert!(
        matches!(
            err,
            Error::Capacity(CapacityError::SendTooLarge { size: 11, max: 10 })
        ),
        "{err:?}"
    );
    // A shared frame is measured by its payload, not its header.
    let frame = super::encode_shared(&Message::Text("0123456789".into()));
    conn.send_shared(frame).unwrap();
}

/// The API error a call returned; panics on anything else.
fn api_err<T: std::fmt::Debug>(r: Result<T, Error>) -> ApiError {
    match r {
        Err(Error::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn control_frames_checked_on_send() {
    let now = Instant::now();
    let mut conn = Connection::new(Role::Client, default_cfg(), now);
    assert_eq!(
        api_err(conn.ping(&[0; 126])),
        ApiError::ControlPayloadTooLong(126)
    );
    assert_eq!(
        api_err(conn.pong(&[0; 300])),
        ApiError::ControlPayloadTooLong(300)
    );
    for op in [OpCode::Ping, OpCode::Pong, OpCode::Close] {
        assert_eq!(
            api_err(conn.send_frame(op, b"", true)),
            ApiError::ControlOpcode(op)
        );
    }
    assert!(!conn.wants_write(), "a refused control frame was queued");
    assert!(conn.is_open());
    conn.ping(&[0; 125]).unwrap();
    conn.pong(&[1; 125]).unwrap();
    assert_eq!(
        summary(&sent_frames(&mut conn)),
        [
            (OpCode::Ping, true, vec![0; 125]),
            (OpCode::Pong, true, vec![1; 125])
        ]
    );
}

#[test]
fn shared_frames() {
    let now = Instant::now();
    // Refused on a client: its frames need their own masks.
    let mut client = Connection::new(Role::Client, default_cfg(), now);
    let frame = super::encode_shared(&Message::Text("hi".into()));
    assert_eq!(
        api_err(client.send_shared(frame.clone())),
        ApiError::SharedOnClient
    );
    assert!(!client.wants_write());
    // On a server, the same bytes as a plain send, small and large.
    for msg in [
        Message::Text("hi".into()),
        Message::Binary(Cow::Owned(binary_of_len(5000))),
    ] {
        let mut a = Connection::new(Role::Server, default_cfg(), now);
        let mut b = Connection::new(Role::Server, default_cfg(), now);
        a.send_shared(super::encode_shared(&msg)).unwrap();
        b.send(msg.clone()).unwrap();
        let (mut x, mut y) = (Vec::new(), Vec::new());
        a.drain_output(&mut x);
        b.drain_output(&mut y);
        assert_eq!(x, y);
        assert_eq!(summary(&parse_frames(&x))[0].2, msg.as_bytes());
    }
    // Bytes that are not one whole unmasked message frame are refused:
    // they would put a stray, masked, cut or compressed frame on the wire.
    let whole = raw_frame(true, 0, OpCode::Text, None, b"hi");
    let bad: [Vec<u8>; 8] = [
        raw_frame(true, 0, OpCode::Text, Some(KEY), b"hi"),
        raw_frame(false, 0, OpCode::Text, None, b"hi"),
        raw_frame(true, 0, OpCode::Continuation, None, b"hi"),
        raw_frame(true, 0, OpCode::Ping, None, b"hi"),
        raw_frame(true, 4, OpCode::Binary, None, b"hi"),
        whole[..whole.len() - 1].to_vec(),
        [whole.clone(), whole.clone()].concat(),
        Vec::new(),
    ];
    for frame in bad {
        let mut server = Connection::new(Role::Server, default_cfg(), now);
        assert_eq!(
            api_err(server.send_shared(frame.clone().into())),
            ApiError::NotASharedFrame,
            "{frame:x?}"
        );
        assert!(!server.wants_write(), "{frame:x?} was queued");
    }
}

// ------------------------------------------------ send-side fragmentation

/// RFC 6455 §5.4: once a fragmented message is started, only its
/// continuations and control frames may be sent until its last frame.
#[test]
fn send_side_fragmentation_is_tracked() {
    let mut p = Pair::connect(no_timers(), no_timers());
    // A stray continuation.
    for fin in [true, false] {
        assert_eq!(
            api_err(p.client.send_frame(OpCode::Continuation, b"x", fin)),
            ApiError::NoMessageInProgress
        );
    }
    p.client.send_frame(OpCode::Text, b"Hel", false).unwrap();
    // A new message while it is unfinished, by every send path.
    let refused = [
        p.client.send_text("no"),
        p.client.send_binary(b"no"),
        p.client.send(Message::Text(Cow::Owned("no".into()))),
        p.client.send(Message::Binary(Cow::Owned(b"no".to_vec()))),
        p.client.send_frame(OpCode::Text, b"no", true),
        p.client.send_frame(OpCode::Binary, b"no", false),
    ];
    for r in refused {
        assert_eq!(api_err(r), ApiError::MessageInProgress);
    }
    // Control frames may come between fragments.
    p.client.ping(b"p").unwrap();
    p.client.pong(b"q").unwrap();
    p.client
        .send_frame(OpCode::Continuation, b"l", false)
        .unwrap();
    p.client
        .send_frame(OpCode::Continuation, b"o", true)
        .unwrap();
    // Finished: a continuation is stray again, a new message is fine.
    assert_eq!(
        api_err(p.client.send_frame(OpCode::Continuation, b"!", true)),
        ApiError::NoMessageInProgress
    );
    p.client.send_text("next").unwrap();
    // The server: a shared frame is a new message too.
    p.server.send_frame(OpCode::Binary, b"a", false).unwrap();
    let shared = super::encode_shared(&Message::Text("x".into()));
    assert_eq!(
        api_err(p.server.send_shared(shared.clone())),
        ApiError::MessageInProgress
    );
    p.server
        .send_frame(OpCode::Continuation, b"b", true)
        .unwrap();
    p.server.send_shared(shared).unwrap();
    p.transfer();
    assert_eq!(
        p.server_events,
        [
            Ev::Ping(b"p".to_vec()),
            Ev::Pong(b"q".to_vec()),
            text("Hello"),
            text("next")
        ]
    );
    assert_eq!(
        p.client_events,
        [
            Ev::Binary(b"ab".to_vec()),
            text("x"),
            Ev::Pong(b"p".to_vec())
        ]
    );
    // Nothing refused reached the wire.
    assert_eq!(
        summary(&p.to_server),
        [
            (OpCode::Text, false, b"Hel".to_vec()),
            (OpCode::Ping, true, b"p".to_vec()),
            (OpCode::Pong, true, b"q".to_vec()),
            (OpCode::Continuation, false, b"l".to_vec()),
            (OpCode::Continuation, true, b"o".to_vec()),
            (OpCode::Text, true, b"next".to_vec()),
        ]
    );
    assert!(p.client.is_open() && p.server.is_open());
}

/// A frame refused by the write queue limit does not change what message
/// is in progress: a refused first frame starts nothing, a refused last
/// frame ends nothing.
#[test]
fn refused_frames_leave_the_fragmentation_state_as_it_was() {
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, small_queue(OverflowPolicy::Drop), now);
    for _ in 0..3 {
        conn.send_binary(&[7; 48]).unwrap();
    }
    // 150 + 2 + 60 > 200.
    let err = conn.send_frame(OpCode::Text, &[b'a'; 60], false);
    assert!(
        matches!(
            err,
            Err(Error::Capacity(CapacityError::WriteBufferLimit { .. }))
        ),
        "{err:?}"
    );
    assert_eq!(
        api_err(conn.send_frame(OpCode::Continuation, b"b", true)),
        ApiError::NoMessageInProgress
    );
    assert_eq!(conn.buffered(), 150);
    let mut wire = Vec::new();
    conn.drain_output(&mut wire);
    conn.send_frame(OpCode::Text, &[b'a'; 60], false).unwrap();
    // 62 + 127 + 62 > 200.
    conn.ping(&[0; 125]).unwrap();
    let buffered = conn.buffered();
    let err = conn.send_frame(OpCode::Continuation, &[b'b'; 60], true);
    assert!(
        matches!(
            err,
            Err(Error::Capacity(CapacityError::WriteBufferLimit { .. }))
        ),
        "{err:?}"
    );
    assert_eq!(conn.buffered(), buffered);
    // Still in progress.
    assert_eq!(api_err(conn.send_text("new")), ApiError::MessageInProgress);
    conn.drain_output(&mut wire);
    conn.send_frame(OpCode::Continuation, &[b'b'; 60], true)
        .unwrap();
    conn.send_text("new").unwrap();
    conn.drain_output(&mut wire);
    let mut peer = Connection::new(Role::Client, default_cfg(), now);
    let mut expect = vec![Ev::Binary(vec![7; 48]); 3];
    expect.push(Ev::Ping(vec![0; 125]));
    expect.push(text(&("a".repeat(60) + &"b".repeat(60))));
    expect.push(text("new"));
    assert_eq!(feed(&mut peer, &wire, &[], now), expect);
}

// --------------------------------------------------------- owned messages

#[test]
fn whole_frames_are_borrowed_and_fragmented_messages_owned() {
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, default_cfg(), now);
    // A whole frame: borrowed, pointing into the input buffer.
    let mut buf = client_frame(KEY, true, OpCode::Text, b"hello");
    let range = buf.as_ptr_range();
    let mut input = &mut buf[..];
    match conn.poll_event(&mut input, now).unwrap() {
        Some(Event::Message(Message::Text(Cow::Borrowed(s)))) => {
            assert_eq!(s, "hello");
            assert!(range.contains(&s.as_ptr()), "not in the input");
        }
        other => panic!("{other:?}"),
    }
    let mut buf = client_frame(KEY, true, OpCode::Binary, b"bin");
    let mut input = &mut buf[..];
    assert!(matches!(
        conn.poll_event(&mut input, now).unwrap(),
        Some(Event::Message(Message::Binary(Cow::Borrowed(b"bin"))))
    ));
    let mut buf = client_frame(KEY, true, OpCode::Ping, b"p");
    let mut input = &mut buf[..];
    assert!(matches!(
        conn.poll_event(&mut input, now).unwrap(),
        Some(Event::Ping(Cow::Borrowed(b"p")))
    ));

    // A fragmented message: owned.
    let mut buf = client_frame(KEY, false, OpCode::Text, b"Hel");
    buf.extend(client_frame(KEY, true, OpCode::Continuation, b"lo"));
    let mut input = &mut buf[..];
    match conn.poll_event(&mut input, now).unwrap() {
        Some(Event::Message(Message::Text(Cow::Owned(s)))) => assert_eq!(s, "Hello"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(conn.poll_event(&mut input, now), Ok(None)));

    // A single frame cut by the end of a read: owned.
    let mut buf = client_frame(KEY, true, OpCode::Binary, b"split");
    let (a, b) = buf.split_at_mut(8);
    let mut input = a;
    assert!(matches!(conn.poll_event(&mut input, now), Ok(None)));
    let mut input = b;
    match conn.poll_event(&mut input, now).unwrap() {
        Some(Event::Message(Message::Binary(Cow::Owned(v)))) => assert_eq!(v, b"split"),
        other => panic!("{other:?}"),
    }

    // A close frame's reason: borrowed when whole.
    let mut buf = client_frame(KEY, true, OpCode::Close, &close_payload(1000, "bye"));
    let mut input = &mut buf[..];
    assert!(matches!(
        conn.poll_event(&mut input, now).unwrap(),
        Some(Event::Close(CloseCode::NORMAL, Cow::Borrowed("bye")))
    ));
}

#[test]
fn receive_state_is_released_after_split_frames() {
    // An idle connection owns no receive buffers, whatever came before.
    for op in [OpCode::Ping, OpCode::Pong, OpCode::Binary, OpCode::Text] {
        let now = Instant::now();
        let mut conn = Connection::new(Role::Server, default_cfg(), now);
        let wire = client_frame(KEY, true, op, b"abc");
        let evs = feed(&mut conn, &wire, &[7], now);
        assert_eq!(evs.len(), 1);
        assert!(conn.rx.is_none(), "{op:?}: receive state kept");
        // A split header alone is kept in the fixed array, not allocated.
        let evs = feed(&mut conn, &wire[..3], &[], now);
        assert!(evs.is_empty());
        assert!(conn.rx.is_none() && conn.hdr_len == 3);
    }
}

// ------------------------------------------------------------ close checks

#[test]
fn try_close_refuses_what_close_would_change() {
    let now = Instant::now();
    let mut conn = Connection::new(Role::Server, default_cfg(), now);
    let cases = [
        (
            CloseCode::NORMAL,
            "x".repeat(124),
            ApiError::CloseReasonTooLong(124),
        ),
        (
            CloseCode::NORMAL,
            "é".repeat(62),
            ApiError::CloseReasonTooLong(124),
        ),
        (
            CloseCode::ABNORMAL,
            String::new(),
            ApiError::InvalidCloseCode(1006),
        ),
        (
            CloseCode(1015),
            String::new(),
            ApiError::InvalidCloseCode(1015),
        ),
        (
            CloseCode(999),
            String::new(),
            ApiError::InvalidCloseCode(999),
        ),
        (
            CloseCode::NO_STATUS,
            "why".into(),
            ApiError::InvalidCloseCode(1005),
        ),
    ];
    for (code, reason, want) in cases {
        assert_eq!(api_err(conn.try_close(code, &reason, now)), want);
        assert!(conn.is_open() && !conn.wants_write());
    }
    let reason = "x".repeat(123);
    conn.try_close(CloseCode(4000), &reason, now).unwrap();
    assert!(!conn.is_open());
    assert!(matches!(
        conn.try_close(CloseCode::NORMAL, "", now),
        Err(Error::ConnectionClosed)
    ));
    let frames = sent_frames(&mut conn);
    assert_eq!(frames.len(), 1);
    assert_eq!(code_of(&frames[0].1), 4000);
    assert_eq!(&frames[0].1[2..], reason.as_bytes());
    // 1005 without a reason sends an empty close.
    let mut conn = Connection::new(Role::Client, default_cfg(), now);
    conn.try_close(CloseCode::NO_STATUS, "", now).unwrap();
    assert_eq!(
        summary(&sent_frames(&mut conn)),
        [(OpCode::Close, true, Vec::new())]
    );
}

// ------------------------------------------------------ permessage-deflate

/// A client and a server with permessage-deflate, context takeover both
/// ways, every message compressed.
#[cfg(feature = "deflate")]
fn deflate_pair(config: Config) -> Pair {
    use crate::extension::{DeflateConfig, DeflateParams};
    let now = Instant::now();
    let config = cfg(Config {
        deflate: DeflateConfig {
            enabled: true,
            min_size: 0,
            ..DeflateConfig::default()
        },
        ..config
    });
    let params = DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: 15,
        client_max_window_bits: 15,
    };
    let mut client = Connection::new(Role::Client, config.clone(), now);
    let mut server = Connection::new(Role::Server, config, now);
    client.enable_deflate(&params);
    server.enable_deflate(&params);
    Pair {
        client,
        server,
        now,
        rng: Rng::new(9),
        client_events: Vec::new(),
        server_events: Vec::new(),
        to_client: Vec::new(),
        to_server: Vec::new(),
    }
}

#[cfg(feature = "deflate")]
impl Pair {
    /// The connection of `role`, and the events its peer received.
    fn side(&mut self, role: Role) -> (&mut Connection, &mut Vec<Ev>) {
        match role {
            Role::Server => (&mut self.server, &mut self.client_events),
            Role::Client => (&mut self.client, &mut self.server_events),
        }
    }
}

/// Bytes that do not compress: their compressed form is a little longer.
#[cfg(feature = "deflate")]
fn noise(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next() as u8).collect()
}

/// With context takeover, a message the compressor took in but the peer
/// never got would be referred to by later messages, and the peer would
/// inflate wrong bytes (or fail). A refused send must leave no trace: the
/// peer inflates exactly the accepted messages, byte for byte.
#[cfg(feature = "deflate")]
#[test]
fn refused_compressed_sends_leave_the_peer_inflating_exactly_the_accepted_ones() {
    for sender in [Role::Server, Role::Client] {
        let config = Config {
            max_message_size: 1000,
            write_buffer_high: 300,
            write_buffer_low: 100,
            write_buffer_limit: 600,
            overflow: OverflowPolicy::Drop,
            ..no_timers()
        };
        let mut p = deflate_pair(config);
        let mut rng = Rng::new(7);
        let first = b"a first message, accepted, a first message".to_vec();
        let too_large = noise(&mut rng, 1001);
        let queued = noise(&mut rng, 400);
        let refused = noise(&mut rng, 300);
        let big = noise(&mut rng, 700);
        let other = noise(&mut rng, 500);
        let owned = noise(&mut rng, 300);
        let mut expect = Vec::new();
        let (conn, _) = p.side(sender);
        conn.send_binary(&first).unwrap();
        expect.push(Ev::Binary(first));
        p.transfer();

        // Over max_message_size, then most of it again.
        let (conn, _) = p.side(sender);
        let before = conn.buffered();
        let err = conn.send_binary(&too_large).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Capacity(CapacityError::SendTooLarge {
                    size: 1001,
                    max: 1000
                })
            ),
            "{err:?}"
        );
        assert_eq!(conn.buffered(), before);
        conn.send_binary(&too_large[..1000]).unwrap();
        expect.push(Ev::Binary(too_large[..1000].to_vec()));
        p.transfer();
        assert_eq!(p.side(sender).1, &expect, "{sender:?} sending");

        // The write queue limit, known only once compressed (400 + 300
        // bytes and their headers pass 600), then the same message again.
        let (conn, _) = p.side(sender);
        conn.send_binary(&queued).unwrap();
        expect.push(Ev::Binary(queued));
        let before = conn.buffered();
        let err = conn.send_binary(&refused).unwrap_err();
        assert!(
            matches!(err, Error::Capacity(CapacityError::WriteBufferLimit { .. })),
            "{err:?}"
        );
        assert_eq!(conn.buffered(), before);
        assert!(conn.is_open());
        p.transfer();
        let (conn, _) = p.side(sender);
        conn.send_binary(&refused).unwrap();
        expect.push(Ev::Binary(refused));
        p.transfer();
        assert_eq!(p.side(sender).1, &expect, "{sender:?} sending");

        // A queue already past the limit (an empty queue takes any
        // message): refused whatever the compressed size.
        let (conn, _) = p.side(sender);
        conn.send_binary(&big).unwrap();
        expect.push(Ev::Binary(big.clone()));
        let err = conn.send_binary(&other).unwrap_err();
        assert!(
            matches!(err, Error::Capacity(CapacityError::WriteBufferLimit { .. })),
            "{err:?}"
        );
        p.transfer();
        // That refusal did not cost the context: the same 700 bytes again
        // are a back-reference of a few bytes.
        let (conn, _) = p.side(sender);
        conn.send_binary(&big).unwrap();
        expect.push(Ev::Binary(big));
        let mut wire = Vec::new();
        conn.drain_output(&mut wire);
        assert!(wire.len() < 50, "compressed to {} bytes", wire.len());
        let (peer, got) = match sender {
            Role::Server => (&mut p.client, &mut p.client_events),
            Role::Client => (&mut p.server, &mut p.server_events),
        };
        got.extend(feed(peer, &wire, &[], p.now));
        let (conn, _) = p.side(sender);
        conn.send_binary(&other).unwrap();
        expect.push(Ev::Binary(other));
        // An owned message, refused once compressed, then sent.
        let err = conn.send(Message::Binary(Cow::Owned(owned.clone())));
        assert!(
            matches!(
                err,
                Err(Error::Capacity(CapacityError::WriteBufferLimit { .. }))
            ),
            "{err:?}"
        );
        p.transfer();
        let (conn, _) = p.side(sender);
        conn.send(Message::Binary(Cow::Owned(owned.clone())))
            .unwrap();
        expect.push(Ev::Binary(owned));
        p.transfer();

        let (conn, got) = p.side(sender);
        assert_eq!(got, &expect, "{sender:?} sending");
        assert!(conn.is_open());
        let frames = match sender {
            Role::Server => &p.to_client,
            Role::Client => &p.to_server,
        };
        assert!(
            frames.iter().all(|(h, _)| h.rsv == 4),
            "every message compressed"
        );
        assert!(p.client.is_open() && p.server.is_open());
    }
}

/// A compressed send inside a fragmented message is refused before the
/// compressor sees it.
#[cfg(feature = "deflate")]
#[test]
fn compressed_send_inside_a_fragmented_message_is_refused() {
    let mut p = deflate_pair(no_timers());
    let mut rng = Rng::new(3);
    let words: String = (0..300)
        .map(|_| (b'a' + rng.below(26) as u8) as char)
        .collect();
    p.server.send_frame(OpCode::Text, b"Hel", false).unwrap();
    assert_eq!(
        api_err(p.server.send_text(&words)),
        ApiError::MessageInProgress
    );
    assert_eq!(
        api_err(p.server.send_binary(words.as_bytes())),
        ApiError::MessageInProgress
    );
    p.server.ping(b"between").unwrap();
    p.server
        .send_frame(OpCode::Continuation, b"lo", true)
        .unwrap();
    p.server.send_text(&words).unwrap();
    p.server.send_text(&words).unwrap();
    p.transfer();
    assert_eq!(
        p.client_events,
        [
            Ev::Ping(b"between".to_vec()),
            text("Hello"),
            text(&words),
            text(&words)
        ]
    );
    let rsv: Vec<u8> = p.to_client.iter().map(|(h, _)| h.rsv).collect();
    assert_eq!(rsv, [0, 0, 0, 4, 4]);
}

/// A message built from many fragments stays within `max_message_size`
/// of buffer (plus the first small step): doubling the buffer past the
/// limit would let one message cost up to twice what the limit says.
#[test]
fn fragmented_messages_never_reserve_past_max_message_size() {
    const MAX: usize = 1_000_000;
    const PIECE: usize = 70_000;
    for op in [OpCode::Binary, OpCode::Text] {
        let config = cfg(Config {
            max_message_size: MAX,
            max_frame_size: MAX,
            ..Config::default()
        });
        let now = Instant::now();
        let mut conn = Connection::new(Role::Server, config, now);
        let piece = vec![b'a'; PIECE];
        let mut sent = 0;
        let mut first = true;
        while sent + PIECE <= MAX {
            let o = if first { op } else { OpCode::Continuation };
            first = false;
            assert_eq!(
                feed(&mut conn, &client_frame(KEY, false, o, &piece), &[], now),
                []
            );
            sent += PIECE;
            let rx = conn.rx.as_ref().expect("message in progress");
            let cap = rx.msg.capacity().max(rx.text.capacity());
            assert!(
                cap <= MAX,
                "{op:?}: {cap} bytes reserved for {sent} received, max {MAX}"
            );
        }
        let last = vec![b'a'; MAX - sent];
        let evs = feed(
            &mut conn,
            &client_frame(KEY, true, OpCode::Continuation, &last),
            &[],
            now,
        );
        assert_eq!(evs.len(), 1, "{op:?}: {evs:?}");
    }
}
