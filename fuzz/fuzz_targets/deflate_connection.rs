//! A server `Connection` with permessage-deflate on, fed compressed
//! messages (made by a client `Connection` with the same parameters, then
//! fragmented, interleaved with pings, mutated), raw frames and raw bytes,
//! in pieces. The server echoes every message; its output goes to a reader
//! (a client `Connection` with the same parameters).
//!
//! Checked (besides what `common::conn::feed` checks: no spin, no event
//! after close, messages at most `max_message_size`, one error then
//! nothing):
//! - while every input so far was well-formed ("pristine"), a compressed
//!   message arrives unchanged when it fits the limits with margin, and an
//!   oversized one (a compression bomb included) fails the connection with
//!   1009;
//! - a failure is always 1002, 1007 or 1009, and the reader receives a
//!   close frame with that code;
//! - everything the server writes decodes at the reader without error,
//!   echoes in order and unchanged (the server's compressor, with or
//!   without context takeover, at any window size);
//! - `buffered()` stays below what the step fed plus one message.
//!
//! `FUZZ_ALLOW_EMPTY_DEFLATE=1` keeps empty messages away from the
//! compressors (an issue now fixed: with context takeover, an empty message
//! after another one was sent as an empty payload, which the receiver
//! decoded as the start of a stored block; see
//! `fuzz/regressions/deflate_connection-1.bin`).
//!
//! Input: four bytes of setup, then operations until the input runs out.
//! - setup: flags (bit 0 server_no_context_takeover, bit 1
//!   client_no_context_takeover, bit 2 max_frame_size 1024 instead of
//!   16 KiB, bit 3 max_fragments 4 instead of 1000, bit 4 server min_size
//!   64 instead of 0), server window bits (9 + b % 7), client window bits
//!   (9 + b % 7), level (b % 10).
//! - op tag (mod 5):
//!   - 0 compressed message: kind (bit 0 text, bits 1-2 payload: 0/1
//!     bytes with a u16 length, 2 fill byte × u24 length, 3 noise seed ×
//!     u24 length; lengths mod 24 KiB + 1 within a 256 KiB budget), payload,
//!     shape (bits 0-2 extra fragments, bit 3 mutate, bit 4 clear RSV1 on
//!     the first frame, bit 5 set RSV1 on the second, bit 6 a ping between
//!     the first two), a u16 cut per extra fragment, with mutate: what
//!     (mod 4: xor, truncate, append, insert), u16 position, byte; a
//!     masking key (4); read pieces: max size (u16, 0 = whole), seed byte
//!   - 1 raw frame: b0 byte (FIN, RSV, opcode as on the wire), u16 length,
//!     bytes, masking key, read pieces as above
//!   - 2 raw bytes: u16 length, bytes
//!   - 3 server sends: kind and payload as in 0
//!   - 4 peer closes: u16 code, read pieces as above
#![no_main]

mod common;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use arbitrary::Unstructured;
use common::conn::{byte, feed, take, u16le, u24le, Ev, Record};
use libfuzzer_sys::fuzz_target;
use wsloop::extension::DeflateParams;
use wsloop::frame::{parse_header, FrameHeader};
use wsloop::mask::apply_mask_reference;
use wsloop::protocol::{Connection, Event, Message, Role};
use wsloop::{Config, OverflowPolicy};

// Small limits: every path (bombs, messages over the limit, a full write
// queue) is reached with little data, and instrumented zlib is what takes
// the time of a run.
const MAX_MESSAGE: usize = 16 << 10;
const FILL_MAX: usize = 24 << 10;
const BUDGET: usize = 256 << 10;
const MAX_OPS: usize = 64;

struct Payload {
    text: bool,
    data: Vec<u8>,
}

fn payload(u: &mut Unstructured, budget: &mut usize) -> Payload {
    let kind = byte(u);
    let text = kind & 1 != 0;
    let data = match (kind >> 1) & 3 {
        2 => {
            let b = byte(u);
            let n = (u24le(u) % (FILL_MAX + 1)).min(*budget);
            *budget -= n;
            vec![if text { b & 0x7f } else { b }; n]
        }
        3 => {
            let mut rng = common::Rng::new(u64::from(byte(u)) + 1);
            let n = (u24le(u) % (FILL_MAX + 1)).min(*budget);
            *budget -= n;
            (0..n)
                .map(|_| {
                    let b = rng.next() as u8;
                    if text {
                        b & 0x7f
                    } else {
                        b
                    }
                })
                .collect()
        }
        _ => {
            let n = usize::from(u16le(u));
            take(u, n)
        }
    };
    if text {
        let s = String::from_utf8_lossy(&data).into_owned();
        Payload {
            text,
            data: s.into_bytes(),
        }
    } else {
        Payload { text, data }
    }
}

/// Cut points for reading `len` bytes: a u16 max piece size (0: whole) and
/// a seed.
fn read_cuts(u: &mut Unstructured, len: usize) -> Vec<usize> {
    let max = usize::from(u16le(u));
    let seed = u64::from(byte(u));
    let mut cuts = Vec::new();
    let mut at = 0;
    for n in common::chunk_sizes(len, max, seed) {
        at += n;
        if at < len {
            cuts.push(at);
        }
    }
    cuts.dedup();
    cuts
}

fn masked_frame(b0: u8, payload: &[u8], key: [u8; 4], out: &mut Vec<u8>) {
    let b1 = 0x80u8;
    match payload.len() {
        n @ 0..=125 => out.extend_from_slice(&[b0, b1 | n as u8]),
        n @ 126..=0xffff => {
            out.extend_from_slice(&[b0, b1 | 126]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.extend_from_slice(&[b0, b1 | 127]);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&key);
    let at = out.len();
    out.extend_from_slice(payload);
    apply_mask_reference(&mut out[at..], key, 0);
}

/// The one frame a client `Connection` wrote: header and unmasked payload.
fn one_frame(bytes: &[u8]) -> (FrameHeader, Vec<u8>) {
    let (h, n) = parse_header(bytes).expect("peer frame").expect("whole");
    let len = h.payload_len as usize;
    assert_eq!(bytes.len(), n + len, "peer wrote one frame");
    let mut p = bytes[n..].to_vec();
    apply_mask_reference(&mut p, h.mask.expect("client masks"), 0);
    (h, p)
}

struct Reader {
    conn: Connection,
    expect: VecDeque<Payload>,
    close: Option<u16>,
}

impl Reader {
    /// Decodes what the server wrote; it must all be valid.
    fn take(&mut self, server: &mut Connection, now: Instant) {
        let mut buf = Vec::new();
        server.drain_output(&mut buf);
        let mut input: &mut [u8] = &mut buf;
        loop {
            match self.conn.poll_event(&mut input, now) {
                Ok(None) => break,
                Ok(Some(Event::Message(m))) => {
                    let want = self
                        .expect
                        .pop_front()
                        .unwrap_or_else(|| panic!("unexpected message from server: {m:?}"));
                    let (text, data) = match &m {
                        Message::Text(t) => (true, t.as_bytes()),
                        Message::Binary(b) => (false, &b[..]),
                    };
                    assert_eq!(text, want.text, "echo kind");
                    assert!(
                        data == want.data,
                        "echo of {} bytes changed: got {:?}, want {:?}",
                        want.data.len(),
                        &data[..data.len().min(64)],
                        &want.data[..want.data.len().min(64)]
                    );
                }
                Ok(Some(Event::Close(c, _))) => {
                    assert!(self.close.is_none(), "two close frames");
                    self.close = Some(c.0);
                }
                Ok(Some(_)) => {}
                Err(e) => panic!("server output does not decode: {e:?}"),
            }
        }
    }
}

/// False with `FUZZ_ALLOW_EMPTY_DEFLATE` set: empty messages are not sent.
fn send_empty() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FUZZ_ALLOW_EMPTY_DEFLATE").is_none())
}

fn config(flags: u8, level: u8) -> Config {
    let mut c = Config::default();
    c.max_frame_size = if flags & 4 != 0 { 1024 } else { 16 << 10 };
    c.max_message_size = MAX_MESSAGE;
    c.max_fragments = if flags & 8 != 0 { 4 } else { 1000 };
    c.write_buffer_low = 4 << 10;
    c.write_buffer_high = 16 << 10;
    c.write_buffer_limit = 64 << 10;
    c.overflow = OverflowPolicy::Drop;
    c.idle_timeout = None;
    c.ping_interval = None;
    c.deflate.enabled = true;
    c.deflate.min_size = if flags & 16 != 0 { 64 } else { 0 };
    c.deflate.level = u32::from(level % 10);
    c
}

fuzz_target!(|data: &[u8]| common::isolated(|| run(data)));

fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let flags = byte(&mut u);
    let params = DeflateParams {
        server_no_context_takeover: flags & 1 != 0,
        client_no_context_takeover: flags & 2 != 0,
        server_max_window_bits: 9 + byte(&mut u) % 7,
        client_max_window_bits: 9 + byte(&mut u) % 7,
    };
    let level = byte(&mut u);
    let scfg = config(flags, level);
    scfg.validate().expect("valid config");
    let scfg = Arc::new(scfg);
    let now = Instant::now();
    let mut server = Connection::new(Role::Server, scfg.clone(), now);
    server.enable_deflate(&params);

    // The peer only compresses: no size limits of its own.
    let mut pcfg = config(0, level);
    pcfg.max_message_size = 1 << 20;
    pcfg.max_frame_size = 1 << 20;
    pcfg.write_buffer_limit = 4 << 20;
    pcfg.deflate.min_size = 0;
    let mut peer = Connection::new(Role::Client, Arc::new(pcfg), now);
    peer.enable_deflate(&params);

    // The reader takes any frame size: the server's limits are on input.
    // Its message limit is larger too: a message near the limit that does
    // not compress is longer compressed, and `Connection` checks the
    // compressed length against `max_message_size` as well (reported).
    let mut rcfg = config(0, level);
    rcfg.max_frame_size = 1 << 20;
    rcfg.max_message_size = 1 << 20;
    let mut reader = Reader {
        conn: Connection::new(Role::Client, Arc::new(rcfg), now),
        expect: VecDeque::new(),
        close: None,
    };
    reader.conn.enable_deflate(&params);

    let mut budget = BUDGET;
    let mut pristine = true;
    let mut rec = Record::default();
    let max_frame = scfg.max_frame_size;
    let max_fragments = scfg.max_fragments;

    for _ in 0..MAX_OPS {
        if u.is_empty() || server.is_closed() {
            break;
        }
        let mut wire = Vec::new();
        // What a pristine server must do with this step's message:
        // Some(true) deliver it, Some(false) fail with 1009, None either.
        let mut outcome: Option<(bool, Payload)> = None;
        let cuts;
        match byte(&mut u) % 5 {
            0 => {
                let msg = payload(&mut u, &mut budget);
                if msg.data.is_empty() && !send_empty() {
                    continue;
                }
                let r = if msg.text {
                    peer.send_text(std::str::from_utf8(&msg.data).unwrap())
                } else {
                    peer.send_binary(&msg.data)
                };
                r.expect("peer send");
                let mut out = Vec::new();
                peer.drain_output(&mut out);
                let (h, mut z) = one_frame(&out);
                assert_eq!(h.rsv, 4, "peer compressed");
                let shape = byte(&mut u);
                let extra = usize::from(shape & 7);
                let mut at: Vec<usize> = (0..extra)
                    .map(|_| usize::from(u16le(&mut u)) % (z.len() + 1))
                    .collect();
                at.sort_unstable();
                let mut clean = shape & 0x30 == 0;
                if shape & 8 != 0 {
                    clean = false;
                    let what = byte(&mut u) % 4;
                    let pos = usize::from(u16le(&mut u)) % (z.len() + 1);
                    let b = byte(&mut u);
                    match what {
                        0 if pos < z.len() => z[pos] ^= b | 1,
                        0 => z.push(b),
                        1 => z.truncate(pos),
                        2 => z.push(b),
                        _ => z.insert(pos, b),
                    }
                    for c in &mut at {
                        *c = (*c).min(z.len());
                    }
                }
                let key = [byte(&mut u), byte(&mut u), byte(&mut u), byte(&mut u)];
                let op = h.opcode.as_u8();
                let mut starts = vec![0];
                starts.extend_from_slice(&at);
                let mut ends = at.clone();
                ends.push(z.len());
                let n = starts.len();
                let mut fits = n <= max_fragments;
                for (i, (&s, &e)) in starts.iter().zip(&ends).enumerate() {
                    let fin = if i + 1 == n { 0x80 } else { 0 };
                    let mut rsv = 0;
                    if (i == 0 && shape & 0x10 == 0) || (i == 1 && shape & 0x20 != 0) {
                        rsv = 0x40;
                    }
                    let opcode = if i == 0 { op } else { 0 };
                    masked_frame(fin | rsv | opcode, &z[s..e], key, &mut wire);
                    fits &= e - s <= max_frame;
                    if i == 0 && n > 1 && shape & 0x40 != 0 {
                        masked_frame(0x89, b"between", key, &mut wire);
                    }
                }
                let len = msg.data.len();
                if clean {
                    if len > MAX_MESSAGE {
                        outcome = Some((false, msg));
                    } else if fits && len + z.len() <= MAX_MESSAGE {
                        outcome = Some((true, msg));
                    }
                } else {
                    pristine = false;
                }
                cuts = read_cuts(&mut u, wire.len());
            }
            1 => {
                let b0 = byte(&mut u);
                let n = usize::from(u16le(&mut u));
                let body = take(&mut u, n);
                let key = [byte(&mut u), byte(&mut u), byte(&mut u), byte(&mut u)];
                // A well-formed ping or pong leaves the stream intact.
                let benign = matches!(b0, 0x89 | 0x8a) && body.len() <= 125;
                pristine &= benign;
                masked_frame(b0, &body, key, &mut wire);
                cuts = read_cuts(&mut u, wire.len());
            }
            2 => {
                let n = usize::from(u16le(&mut u));
                wire = take(&mut u, n);
                pristine = false;
                cuts = Vec::new();
            }
            3 => {
                let msg = payload(&mut u, &mut budget);
                if msg.data.len() <= MAX_MESSAGE && (send_empty() || !msg.data.is_empty()) {
                    let r = if msg.text {
                        server.send_text(std::str::from_utf8(&msg.data).unwrap())
                    } else {
                        server.send_binary(&msg.data)
                    };
                    if r.is_ok() {
                        reader.expect.push_back(msg);
                    }
                }
                cuts = Vec::new();
            }
            _ => {
                let code = u16le(&mut u);
                let mut p = code.to_be_bytes().to_vec();
                p.extend_from_slice(b"bye");
                masked_frame(0x88, &p, [1, 2, 3, 4], &mut wire);
                cuts = read_cuts(&mut u, wire.len());
            }
        }
        if wire.is_empty() {
            reader.take(&mut server, now);
            continue;
        }
        let was_open = server.is_open();
        let evs = feed(&mut server, &wire, &cuts, now, &mut rec);
        let mut failed = None;
        let mut messages = Vec::new();
        for ev in evs {
            match ev {
                Ev::Text(t) => messages.push(Payload {
                    text: true,
                    data: t.into_bytes(),
                }),
                Ev::Binary(b) => messages.push(Payload {
                    text: false,
                    data: b,
                }),
                Ev::Err(e) => failed = Some(e),
                _ => {}
            }
        }
        if let (true, Some((deliver, want))) = (pristine, &outcome) {
            if *deliver {
                assert!(failed.is_none(), "{} bytes: {failed:?}", want.data.len());
                assert_eq!(messages.len(), 1, "one message");
                assert_eq!(messages[0].text, want.text);
                assert!(messages[0].data == want.data, "message changed");
            } else {
                assert!(messages.is_empty(), "an oversized message arrived");
                assert_eq!(
                    rec.failed_while_open,
                    Some(1009),
                    "{} bytes: {failed:?}",
                    want.data.len()
                );
            }
        }
        if was_open {
            if let Some(code) = rec.failed_while_open {
                assert!(
                    [1002, 1007, 1009].contains(&code),
                    "failed with {code}: {failed:?}"
                );
            }
        }
        // Echo, as a server would.
        for m in messages {
            if !server.is_open() {
                break;
            }
            if m.data.is_empty() && !send_empty() {
                continue;
            }
            let r = if m.text {
                server.send_text(std::str::from_utf8(&m.data).unwrap())
            } else {
                server.send_binary(&m.data)
            };
            if r.is_ok() {
                reader.expect.push_back(m);
            }
        }
        assert!(
            server.buffered() <= wire.len() + 2 * MAX_MESSAGE + 1024,
            "{} bytes queued after a {}-byte step",
            server.buffered(),
            wire.len()
        );
        reader.take(&mut server, now);
    }
    reader.take(&mut server, now);
    if let Some(code) = rec.failed_while_open {
        assert_eq!(
            reader.close,
            Some(code),
            "the close frame carries the error's code"
        );
    }
    assert!(
        reader.expect.is_empty(),
        "{} echoes missing",
        reader.expect.len()
    );
}
