//! One side of an in-memory client↔server pair sends with permessage-deflate
//! and context takeover, and some of its calls are refused. The other side
//! must inflate exactly the accepted messages, in order, byte for byte: a
//! refused send changes nothing (not the write queue, not the compressor's
//! window, not the fragmentation state).
//!
//! Sends: whole messages (text or binary, borrowed or owned; literal bytes,
//! a repeated byte, noise, or an earlier message, accepted or not, with one
//! byte changed, which with context takeover compresses to references to
//! what came before), frames of a fragmented message, pings, and shared
//! frames from a server. Refusals: a message over `max_message_size`, the
//! write queue full (`OverflowPolicy::Drop`), a whole message while a
//! fragmented one is unfinished, a continuation without one.
//!
//! Checked after every call: a refusal is the error the rules give for it,
//! the connection stays open and its queue as it was; an accepted call
//! queues something, and says `Full` exactly when the queue is above its
//! high water mark; where the frame's size is known (uncompressed sends)
//! the queue limit refuses exactly when it must. On every transfer (all or
//! part of the queue, read in pieces) the receiver's events are exactly the
//! accepted messages and pings, in order, with no error, and its pongs come
//! back to the sender in order. At the end nothing is missing.
//!
//! Input: setup (4 bytes): flags (bit 0 the client sends, else the server;
//! bit 1 deflate min_size 64, else 0), sender window bits (9 + b % 7),
//! receiver window bits (9 + b % 7), level (b % 10). Then operations
//! (tag mod 5):
//! - 0 message: kind (bit 0 text, bit 1 owned, bits 2-3 source: 0 u8
//!   length and bytes, 1 fill byte and u16 length, 2 noise seed and u16
//!   length, 3 an earlier message (a byte: which, from the newest) with a
//!   byte changed (u16 position, byte)); lengths mod 3 KiB + 1
//! - 1 frame: selector (mod 3: continuation, text, binary; bit 7 fin), u8
//!   length and bytes
//! - 2 ping: u8 length (mod 126) and bytes
//! - 3 shared frame (server; a message from a client), payload as in 0
//! - 4 transfer: u16 most bytes the sender writes (0: all), u8 largest
//!   read (0: one read), seed
#![no_main]

mod common;

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::Instant;

use arbitrary::Unstructured;
use common::conn::{byte, feed, take, u16le, Ev, Record};
use common::{chunk_sizes, Rng};
use libfuzzer_sys::fuzz_target;
use wsloop::error::{ApiError, CapacityError};
use wsloop::extension::DeflateParams;
use wsloop::frame::OpCode;
use wsloop::protocol::{encode_shared, Connection, Message, Role, SendStatus};
use wsloop::{Config, Error, OverflowPolicy};

// Small sizes: every path is reached with little data, and instrumented
// zlib is what takes the time of a run.
const MAX_MESSAGE: usize = 2 << 10;
/// Past `MAX_MESSAGE`, so that some messages are refused for their size.
const FILL_MAX: usize = 3 << 10;
const BUDGET: usize = 16 << 10;
// A queue limit of one largest message: two sends without a transfer
// often fill it, some of them only once compressed.
const QUEUE_HIGH: usize = 1 << 10;
const QUEUE_LIMIT: usize = 2 << 10;
/// Earlier messages kept to send again, changed.
const HISTORY: usize = 4;

fn sender_config(flags: u8, level: u8) -> Config {
    let mut c = Config::default();
    c.max_message_size = MAX_MESSAGE;
    c.write_buffer_low = 256;
    c.write_buffer_high = QUEUE_HIGH;
    c.write_buffer_limit = QUEUE_LIMIT;
    c.overflow = OverflowPolicy::Drop;
    c.idle_timeout = None;
    c.ping_interval = None;
    c.deflate.enabled = true;
    c.deflate.min_size = if flags & 2 != 0 { 64 } else { 0 };
    c.deflate.level = u32::from(level % 10);
    c
}

/// The receiver takes whatever an accepted send can make.
fn receiver_config() -> Config {
    let mut c = Config::default();
    c.max_message_size = 1 << 20;
    c.max_frame_size = 1 << 20;
    c.max_fragments = 1 << 16;
    c.idle_timeout = None;
    c.ping_interval = None;
    c.deflate.enabled = true;
    c
}

/// Writes at most `room` bytes, then would block.
struct Limited<'a> {
    out: &'a mut Vec<u8>,
    room: usize,
}

impl Write for Limited<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.room);
        self.out.extend_from_slice(&buf[..n]);
        self.room -= n;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A frame header's length for a payload of `len` bytes.
fn header_len(len: usize, masked: bool) -> usize {
    let ext = match len {
        0..=125 => 0,
        126..=0xffff => 2,
        _ => 8,
    };
    2 + ext + if masked { 4 } else { 0 }
}

struct Payload {
    text: bool,
    data: Vec<u8>,
}

fn ascii(text: bool, b: u8) -> u8 {
    if text {
        b & 0x7f
    } else {
        b
    }
}

/// `n` cut to `FILL_MAX` and to what is left of the budget.
fn sized(n: usize, budget: &mut usize) -> usize {
    let n = (n % (FILL_MAX + 1)).min(*budget);
    *budget -= n;
    n
}

fn payload(
    u: &mut Unstructured,
    budget: &mut usize,
    history: &VecDeque<Payload>,
) -> (Payload, bool) {
    let kind = byte(u);
    let text = kind & 1 != 0;
    let owned = kind & 2 != 0;
    let data = match (kind >> 2) & 3 {
        0 => {
            let n = usize::from(byte(u));
            take(u, n)
        }
        1 => {
            let b = ascii(text, byte(u));
            vec![b; sized(usize::from(u16le(u)), budget)]
        }
        2 => {
            let mut rng = Rng::new(u64::from(byte(u)));
            let n = sized(usize::from(u16le(u)), budget);
            (0..n).map(|_| ascii(text, rng.next() as u8)).collect()
        }
        _ => {
            let back = usize::from(byte(u));
            let pos = usize::from(u16le(u));
            let b = ascii(text, byte(u));
            match history.len() {
                0 => Vec::new(),
                n => {
                    let mut d = history[n - 1 - back % n].data.clone();
                    *budget = budget.saturating_sub(d.len());
                    if !d.is_empty() {
                        let at = pos % d.len();
                        d[at] = b;
                    }
                    d
                }
            }
        }
    };
    let data = if text {
        String::from_utf8_lossy(&data).into_owned().into_bytes()
    } else {
        data
    };
    (Payload { text, data }, owned)
}

struct Pair {
    sender: Connection,
    receiver: Connection,
    masked: bool,
    now: Instant,
    /// What the receiver must get, in order.
    expect: VecDeque<Ev>,
    /// Pongs the sender must get back, in order.
    pongs: VecDeque<Ev>,
    /// Text, and the bytes so far, of the fragmented message being sent.
    fragments: Option<(bool, Vec<u8>)>,
}

impl Pair {
    /// Checks one call's outcome: `queued` is its result with the status
    /// (if it has one), `before` the queue before it, `must`: `Some(true)`
    /// must queue, `Some(false)` must be refused by the queue limit, `None`
    /// either (the compressed size decides).
    fn check(
        &mut self,
        what: &str,
        r: Result<Option<SendStatus>, Error>,
        before: usize,
        must: Option<bool>,
    ) -> bool {
        let after = self.sender.buffered();
        assert!(self.sender.is_open(), "{what}: the sender closed");
        match r {
            Ok(status) => {
                assert_ne!(
                    must,
                    Some(false),
                    "{what}: queued past the limit ({before} queued)"
                );
                assert!(after > before, "{what}: accepted, nothing queued");
                if let Some(s) = status {
                    assert_eq!(
                        s == SendStatus::Full,
                        after > QUEUE_HIGH,
                        "{what}: {s:?} with {after} queued"
                    );
                }
                true
            }
            Err(e) => {
                assert_eq!(
                    after, before,
                    "{what}: refused ({e}), yet the queue changed"
                );
                match e {
                    Error::Capacity(CapacityError::WriteBufferLimit { buffered, limit }) => {
                        assert_ne!(must, Some(true), "{what}: refused with room in the queue");
                        assert!(
                            buffered == before && before > 0 && limit == QUEUE_LIMIT,
                            "{what}: {e}"
                        );
                    }
                    e => panic!("{what}: unexpected refusal {e:?}"),
                }
                false
            }
        }
    }

    /// Whether a frame of `len` (header included) must fit the queue.
    fn fits(&self, len: usize) -> bool {
        let b = self.sender.buffered();
        b == 0 || b + len <= QUEUE_LIMIT
    }

    fn message(&mut self, p: &Payload, owned: bool, shared: bool) -> bool {
        let before = self.sender.buffered();
        let len = p.data.len();
        let msg = if p.text {
            Message::Text(String::from_utf8(p.data.clone()).unwrap().into())
        } else {
            Message::Binary(p.data.clone().into())
        };
        let shared = shared && !self.masked;
        let compressed = !shared && len >= self.sender.config().deflate.min_size;
        let must = if compressed {
            // Only the smallest compressed frame (a 1-byte payload) is known.
            match (before, self.fits(header_len(1, self.masked) + 1)) {
                (0, _) => Some(true),
                (_, false) => Some(false),
                _ => None,
            }
        } else {
            Some(self.fits(header_len(len, self.masked) + len))
        };
        let r = if shared {
            self.sender.send_shared(encode_shared(&msg))
        } else if owned {
            self.sender.send(msg)
        } else if p.text {
            self.sender.send_text(std::str::from_utf8(&p.data).unwrap())
        } else {
            self.sender.send_binary(&p.data)
        };
        // The refusals that come before any encoding.
        if self.fragments.is_some() {
            assert!(
                matches!(r, Err(Error::Api(ApiError::MessageInProgress))),
                "a message while fragments are unfinished: {r:?}"
            );
            assert_eq!(self.sender.buffered(), before);
            return false;
        }
        if len > MAX_MESSAGE {
            assert!(
                matches!(r, Err(Error::Capacity(CapacityError::SendTooLarge { size, max }))
                    if size == len && max == MAX_MESSAGE),
                "a message of {len} bytes: {r:?}"
            );
            assert_eq!(self.sender.buffered(), before);
            return false;
        }
        let ok = self.check("message", r.map(Some), before, must);
        if ok {
            self.expect.push_back(if p.text {
                Ev::Text(String::from_utf8(p.data.clone()).unwrap())
            } else {
                Ev::Binary(p.data.clone())
            });
        }
        ok
    }

    fn frame(&mut self, sel: u8, data: Vec<u8>) {
        let fin = sel & 0x80 != 0;
        let op = match sel % 3 {
            0 => OpCode::Continuation,
            1 => OpCode::Text,
            _ => OpCode::Binary,
        };
        let text = match (&self.fragments, op) {
            (Some((t, _)), OpCode::Continuation) => *t,
            _ => op == OpCode::Text,
        };
        let data: Vec<u8> = data.into_iter().map(|b| ascii(text, b)).collect();
        let before = self.sender.buffered();
        let must = self.fits(header_len(data.len(), self.masked) + data.len());
        let r = self.sender.send_frame(op, &data, fin);
        match (op, self.fragments.is_some()) {
            (OpCode::Continuation, false) => {
                assert!(
                    matches!(r, Err(Error::Api(ApiError::NoMessageInProgress))),
                    "{r:?}"
                );
                assert_eq!(self.sender.buffered(), before);
                return;
            }
            (OpCode::Text | OpCode::Binary, true) => {
                assert!(
                    matches!(r, Err(Error::Api(ApiError::MessageInProgress))),
                    "{r:?}"
                );
                assert_eq!(self.sender.buffered(), before);
                return;
            }
            _ => {}
        }
        if !self.check("frame", r.map(Some), before, Some(must)) {
            return;
        }
        let (_, so_far) = self.fragments.get_or_insert_with(|| (text, Vec::new()));
        so_far.extend_from_slice(&data);
        if fin {
            let (text, all) = self.fragments.take().unwrap();
            self.expect.push_back(if text {
                Ev::Text(String::from_utf8(all).unwrap())
            } else {
                Ev::Binary(all)
            });
        }
    }

    fn ping(&mut self, data: Vec<u8>) {
        let before = self.sender.buffered();
        let must = self.fits(header_len(data.len(), self.masked) + data.len());
        let r = self.sender.ping(&data);
        if self.check("ping", r.map(|()| None), before, Some(must)) {
            self.expect.push_back(Ev::Ping(data.clone()));
            self.pongs.push_back(Ev::Pong(data));
        }
    }

    /// Moves up to `room` bytes (0: all) to the receiver, read in pieces of
    /// at most `piece` (0: one read), and its answers back.
    fn transfer(&mut self, room: usize, piece: usize, seed: u64) {
        let mut wire = Vec::new();
        if room == 0 {
            self.sender.drain_output(&mut wire);
        } else {
            let mut w = Limited {
                out: &mut wire,
                room,
            };
            let before = self.sender.buffered();
            let n = self.sender.write_to(&mut w).expect("in-memory write");
            assert_eq!(n, before.min(room));
            assert_eq!(self.sender.buffered(), before - n);
        }
        let mut cuts = Vec::new();
        let mut at = 0;
        for n in chunk_sizes(wire.len(), piece, seed) {
            at += n;
            cuts.push(at.min(wire.len()));
        }
        cuts.pop();
        let evs = feed(
            &mut self.receiver,
            &wire,
            &cuts,
            self.now,
            &mut Record::default(),
        );
        for ev in evs {
            let want = self.expect.pop_front();
            assert!(
                want.as_ref() == Some(&ev),
                "the receiver got {}, expected {}",
                show(&ev),
                want.as_ref().map_or("nothing".into(), show)
            );
        }
        let mut back = Vec::new();
        self.receiver.drain_output(&mut back);
        let evs = feed(
            &mut self.sender,
            &back,
            &[],
            self.now,
            &mut Record::default(),
        );
        for ev in evs {
            assert_eq!(Some(ev), self.pongs.pop_front(), "the sender's events");
        }
    }
}

fn show(ev: &Ev) -> String {
    match ev {
        Ev::Text(t) => format!("text of {} bytes {:?}", t.len(), &t[..t.len().min(40)]),
        Ev::Binary(b) => format!("binary of {} bytes {:?}", b.len(), &b[..b.len().min(40)]),
        ev => format!("{ev:?}"),
    }
}

fuzz_target!(|data: &[u8]| common::isolated(|| run(data)));

fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let flags = byte(&mut u);
    let (sbits, rbits) = (9 + byte(&mut u) % 7, 9 + byte(&mut u) % 7);
    let level = byte(&mut u);
    let role = if flags & 1 != 0 {
        Role::Client
    } else {
        Role::Server
    };
    let (client_bits, server_bits) = match role {
        Role::Client => (sbits, rbits),
        Role::Server => (rbits, sbits),
    };
    // Context takeover both ways: what each message leaves in the window
    // shapes the next.
    let params = DeflateParams {
        server_no_context_takeover: false,
        client_no_context_takeover: false,
        server_max_window_bits: server_bits,
        client_max_window_bits: client_bits,
    };
    let scfg = sender_config(flags, level);
    scfg.validate().expect("valid sender config");
    let now = Instant::now();
    let mut sender = Connection::new(role, Arc::new(scfg), now);
    sender.enable_deflate(&params);
    let peer = match role {
        Role::Client => Role::Server,
        Role::Server => Role::Client,
    };
    let mut receiver = Connection::new(peer, Arc::new(receiver_config()), now);
    receiver.enable_deflate(&params);
    let mut p = Pair {
        sender,
        receiver,
        masked: role == Role::Client,
        now,
        expect: VecDeque::new(),
        pongs: VecDeque::new(),
        fragments: None,
    };
    let mut history: VecDeque<Payload> = VecDeque::new();
    let mut budget = BUDGET;
    while !u.is_empty() {
        match byte(&mut u) % 5 {
            tag @ (0 | 3) => {
                let (msg, owned) = payload(&mut u, &mut budget, &history);
                p.message(&msg, owned, tag == 3);
                if history.len() == HISTORY {
                    history.pop_front();
                }
                history.push_back(msg);
            }
            1 => {
                let sel = byte(&mut u);
                let n = usize::from(byte(&mut u));
                p.frame(sel, take(&mut u, n));
            }
            2 => {
                let n = usize::from(byte(&mut u)) % 126;
                p.ping(take(&mut u, n));
            }
            _ => {
                let room = usize::from(u16le(&mut u));
                let piece = usize::from(byte(&mut u));
                let seed = u64::from(byte(&mut u));
                p.transfer(room, piece, seed);
            }
        }
    }
    p.transfer(0, 0, 0);
    assert!(
        p.expect.is_empty(),
        "{} accepted sends never arrived, the next: {}",
        p.expect.len(),
        show(&p.expect[0])
    );
    assert!(p.pongs.is_empty(), "{} pongs missing", p.pongs.len());
}
