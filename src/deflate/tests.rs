//! Unit tests of the permessage-deflate codec.
use super::*;
use crate::extension::{DeflateConfig, DeflateParams};
use crate::role::Role;

fn params(no_ctx: bool, bits: u8) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: no_ctx,
        client_no_context_takeover: no_ctx,
        server_max_window_bits: bits,
        client_max_window_bits: bits,
    }
}

fn cfg() -> DeflateConfig {
    DeflateConfig {
        enabled: true,
        min_size: 0,
        ..DeflateConfig::default()
    }
}

fn inflate(s: &mut DeflateState, data: &[u8], max: usize) -> Result<Vec<u8>, InflateError> {
    let mut out = Vec::new();
    s.decompress(data, &mut out, max, &mut |_| true)?;
    s.finish(&mut out, max, &mut |_| true)?;
    Ok(out)
}

#[test]
fn rfc7692_hello_examples() {
    // §7.2.3.1: "Hello" compressed, one frame.
    let mut rx = DeflateState::new(Role::Client, &params(false, 15), &cfg());
    let got = inflate(&mut rx, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 1000).unwrap();
    assert_eq!(got, b"Hello");
    // §7.2.3.2: a second "Hello" using the shared LZ77 window.
    let got = inflate(&mut rx, &[0xf2, 0x00, 0x11, 0x00, 0x00], 1000).unwrap();
    assert_eq!(got, b"Hello");
    // §7.2.3.3: no compression (a stored block).
    let mut rx = DeflateState::new(Role::Client, &params(true, 15), &cfg());
    let got = inflate(
        &mut rx,
        &[
            0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00,
        ],
        1000,
    )
    .unwrap();
    assert_eq!(got, b"Hello");
    // §7.2.3.4: a block with BFINAL set.
    let mut rx = DeflateState::new(Role::Client, &params(false, 15), &cfg());
    let got = inflate(
        &mut rx,
        &[0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00],
        1000,
    )
    .unwrap();
    assert_eq!(got, b"Hello");
    // After a final block the next message still decodes.
    let got = inflate(&mut rx, &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 1000).unwrap();
    assert_eq!(got, b"Hello");
}

#[test]
fn our_hello_matches_rfc() {
    let mut tx = DeflateState::new(Role::Server, &params(false, 15), &cfg());
    let mut out = Vec::new();
    tx.compress(b"Hello", &mut out);
    assert_eq!(out, [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00]);
}

#[test]
fn roundtrip_with_and_without_context_takeover() {
    for no_ctx in [false, true] {
        for bits in [9u8, 12, 15] {
            let mut tx = DeflateState::new(Role::Client, &params(no_ctx, bits), &cfg());
            let mut rx = DeflateState::new(Role::Server, &params(no_ctx, bits), &cfg());
            let mut sizes = Vec::new();
            for i in 0..20u32 {
                let msg: Vec<u8> =
                    format!("message {} {}", i % 3, "abc".repeat(i as usize * 50)).into_bytes();
                let mut out = Vec::new();
                tx.compress(&msg, &mut out);
                sizes.push(out.len());
                // Feed in two pieces to exercise streaming.
                let cut = out.len() / 2;
                let mut got = Vec::new();
                rx.decompress(&out[..cut], &mut got, 1 << 20, &mut |_| true)
                    .unwrap();
                rx.decompress(&out[cut..], &mut got, 1 << 20, &mut |_| true)
                    .unwrap();
                rx.finish(&mut got, 1 << 20, &mut |_| true).unwrap();
                assert_eq!(got, msg, "no_ctx {no_ctx} bits {bits} msg {i}");
            }
            // Repeating a message is cheap only with context takeover.
            let mut a = Vec::new();
            let mut b = Vec::new();
            let text = b"the same message, repeated, the same message, repeated";
            tx.compress(text, &mut a);
            tx.compress(text, &mut b);
            assert_eq!(b.len() < a.len(), !no_ctx, "no_ctx {no_ctx}");
        }
    }
}

/// Found by fuzzing (fuzz/regressions/deflate_connection-1.bin): empty
/// messages after others, with context takeover, must decode as empty.
#[test]
fn empty_messages_between_others() {
    for no_ctx in [false, true] {
        let mut tx = DeflateState::new(Role::Server, &params(no_ctx, 15), &cfg());
        let mut rx = DeflateState::new(Role::Client, &params(no_ctx, 15), &cfg());
        for msg in [&b"plain"[..], b"", b"", b"x", b""] {
            let mut out = Vec::new();
            tx.compress(msg, &mut out);
            assert!(!out.is_empty());
            assert_eq!(
                inflate(&mut rx, &out, 1000).unwrap(),
                msg,
                "no_ctx {no_ctx}"
            );
        }
    }
}

/// How far past the limit the output buffer may ever reach (the
/// guarantee is one byte, enough to see the limit passed; the bound
/// asserted is the documented one).
const STEP: usize = 64 << 10;

/// `n` zeros compressed as one message, without context takeover.
fn zeros(n: usize) -> Vec<u8> {
    let mut tx = DeflateState::new(Role::Client, &params(true, 15), &cfg());
    let mut out = Vec::new();
    tx.compress(&vec![0u8; n], &mut out);
    out
}

/// Inflates `z` fed in pieces of `piece` bytes with limit `max`: the
/// result, and the largest capacity the output buffer ever had.
fn inflate_pieces(z: &[u8], piece: usize, max: usize) -> (Result<Vec<u8>, InflateError>, usize) {
    let mut rx = DeflateState::new(Role::Server, &params(true, 15), &cfg());
    let mut got = Vec::new();
    let mut peak = 0;
    for chunk in z.chunks(piece) {
        let r = rx.decompress(chunk, &mut got, max, &mut |_| true);
        peak = peak.max(got.capacity());
        if let Err(e) = r {
            return (Err(e), peak);
        }
    }
    let r = rx.finish(&mut got, max, &mut |_| true);
    peak = peak.max(got.capacity());
    (r.map(|()| got), peak)
}

/// A compression bomb costs at most the limit plus one step, however
/// it arrives: flate2 fills all spare capacity, so capacity is what
/// must stay bounded (a doubling `reserve` once let one message cost
/// twice `max_message_size`).
#[test]
fn bomb_is_stopped_at_the_limit() {
    let z = zeros(16 << 20);
    assert!(
        z.len() < 32_000,
        "16 MiB of zeros compress small: {}",
        z.len()
    );
    let max = 1 << 20;
    for piece in [z.len(), 4096, 7] {
        let (r, peak) = inflate_pieces(&z, piece, max);
        match r {
            Err(InflateError::TooBig(n)) => assert!(n > max as u64, "reported {n}"),
            r => panic!("pieces of {piece}: {:?}", r.map(|v| v.len())),
        }
        assert!(
            peak <= max + STEP,
            "pieces of {piece}: capacity {peak} for max {max}"
        );
    }
}

/// The limit is exact: a message of `max` bytes arrives, one of
/// `max + 1` does not.
#[test]
fn limit_is_exact() {
    let max = 300_000;
    let (r, peak) = inflate_pieces(&zeros(max), 1000, max);
    assert_eq!(r.map(|v| v.len()), Ok(max));
    assert!(peak <= max + STEP, "capacity {peak}");
    let (r, peak) = inflate_pieces(&zeros(max + 1), 1000, max);
    assert!(
        matches!(r, Err(InflateError::TooBig(_))),
        "{:?}",
        r.map(|v| v.len())
    );
    assert!(peak <= max + STEP, "capacity {peak}");
}

/// `Config::validate` accepts `max_message_size = usize::MAX`: the
/// limit arithmetic must not overflow.
#[test]
fn no_overflow_at_usize_max() {
    let (r, _) = inflate_pieces(&zeros(100_000), 333, usize::MAX);
    assert_eq!(r.map(|v| v.len()), Ok(100_000));
    let mut rx = DeflateState::new(Role::Client, &params(false, 15), &cfg());
    let got = inflate(
        &mut rx,
        &[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00],
        usize::MAX,
    );
    assert_eq!(got.unwrap(), b"Hello");
}

/// Through a server `Connection`: the bomb fails it with 1009
/// (message too big), naming the limit.
#[test]
fn bomb_fails_the_connection_with_1009() {
    use crate::error::{CapacityError, Error, ProtocolError};
    use crate::frame::{write_frame, FrameHeader, OpCode};
    use crate::protocol::Connection;
    use crate::{CloseCode, Config};
    use std::sync::Arc;
    use std::time::Instant;

    let max = 1 << 20;
    let config = Config {
        max_message_size: max,
        deflate: cfg(),
        ..Config::default()
    };
    let now = Instant::now();
    let mut server = Connection::new(Role::Server, Arc::new(config), now);
    server.enable_deflate(&params(true, 15));
    let z = zeros(16 << 20);
    let h = FrameHeader {
        rsv: 0b100,
        mask: Some([1, 2, 3, 4]),
        ..FrameHeader::new(OpCode::Binary, z.len() as u64)
    };
    let mut wire = Vec::new();
    write_frame(&h, &z, &mut wire);
    let mut input: &mut [u8] = &mut wire;
    // The whole frame is there: one call reads it and fails.
    let err = match server.poll_event(&mut input, now) {
        Ok(Some(ev)) => panic!("event {ev:?}"),
        Ok(None) => panic!("no error"),
        Err(e) => e,
    };
    match err {
        Error::Protocol(
            e @ ProtocolError::Capacity(CapacityError::MessageTooLarge { size, max: m }),
        ) => {
            assert!(size > max as u64 && m == max, "{e:?}");
            assert_eq!(e.close_code(), CloseCode::TOO_BIG);
        }
        e => panic!("{e:?}"),
    }
}

/// Compressing costs at most the compressed size (the input plus
/// zlib's few bytes per block when it does not compress), not twice
/// the input.
#[test]
fn compress_buffer_is_bounded() {
    let mut x = 1u64;
    let noise: Vec<u8> = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for no_ctx in [false, true] {
        let mut tx = DeflateState::new(Role::Server, &params(no_ctx, 15), &cfg());
        let n = noise.len();
        // As the protocol sizes it.
        let mut out = Vec::with_capacity(n / 2 + 64);
        tx.compress(&noise, &mut out);
        assert!(out.len() > n, "noise does not compress");
        assert!(
            out.capacity() <= n + n / 16 + 4096,
            "capacity {} for {n} bytes",
            out.capacity()
        );
        let mut rx = DeflateState::new(Role::Client, &params(no_ctx, 15), &cfg());
        assert!(inflate(&mut rx, &out, n).unwrap() == noise);
    }
}

#[test]
fn corrupt_data_is_an_error() {
    let mut rx = DeflateState::new(Role::Server, &params(true, 15), &cfg());
    let mut got = Vec::new();
    let r = rx
        .decompress(&[0xff, 0xff, 0xff, 0xff, 0xff], &mut got, 1000, &mut |_| {
            true
        })
        .and_then(|_| rx.finish(&mut got, 1000, &mut |_| true));
    assert_eq!(r, Err(InflateError::Corrupt));
}

// ------------------------------------------------------- fuzz regressions

/// fuzz/fuzz_targets/deflate_connection.rs, checks and all, for the
/// inputs kept in fuzz/regressions/ (the fuzz smoke replays them too).
mod deflate_connection {
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::time::Instant;

    use crate::error::Error;
    use crate::extension::{DeflateConfig, DeflateParams};
    use crate::frame::{parse_header, FrameHeader};
    use crate::mask::apply_mask_reference;
    use crate::protocol::{Connection, Event, Message};
    use crate::role::Role;
    use crate::{CloseCode, Config, OverflowPolicy};

    const MAX_MESSAGE: usize = 16 << 10;
    const FILL_MAX: usize = 24 << 10;
    const BUDGET: usize = 256 << 10;
    const MAX_OPS: usize = 64;

    /// `arbitrary::Unstructured` as the target reads it: zeros once the
    /// input runs out.
    struct Input<'a>(&'a [u8]);

    impl Input<'_> {
        fn byte(&mut self) -> u8 {
            let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
            self.0 = rest;
            b
        }
        fn u16le(&mut self) -> u16 {
            u16::from_le_bytes([self.byte(), self.byte()])
        }
        fn u24le(&mut self) -> usize {
            usize::from(self.byte())
                | usize::from(self.byte()) << 8
                | usize::from(self.byte()) << 16
        }
        fn take(&mut self, n: usize) -> Vec<u8> {
            let (a, b) = self.0.split_at(n.min(self.0.len()));
            self.0 = b;
            a.to_vec()
        }
    }

    struct Rng(u64);

    impl Rng {
        fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    #[derive(Debug, PartialEq)]
    struct Payload {
        text: bool,
        data: Vec<u8>,
    }

    fn payload(u: &mut Input, budget: &mut usize) -> Payload {
        let kind = u.byte();
        let text = kind & 1 != 0;
        let data = match (kind >> 1) & 3 {
            2 => {
                let b = u.byte();
                let n = (u.u24le() % (FILL_MAX + 1)).min(*budget);
                *budget -= n;
                vec![if text { b & 0x7f } else { b }; n]
            }
            3 => {
                let mut rng = Rng::new(u64::from(u.byte()) + 1);
                let n = (u.u24le() % (FILL_MAX + 1)).min(*budget);
                *budget -= n;
                (0..n)
                    .map(|_| rng.next() as u8 & if text { 0x7f } else { 0xff })
                    .collect()
            }
            _ => {
                let n = usize::from(u.u16le());
                u.take(n)
            }
        };
        let data = if text {
            String::from_utf8_lossy(&data).into_owned().into_bytes()
        } else {
            data
        };
        Payload { text, data }
    }

    fn read_cuts(u: &mut Input, len: usize) -> Vec<usize> {
        let max = usize::from(u.u16le());
        let seed = u64::from(u.byte());
        let mut cuts = Vec::new();
        let mut at = 0;
        for n in crate::handshake::tests::chunk_sizes(len, max, seed) {
            at += n;
            if at < len {
                cuts.push(at);
            }
        }
        cuts.dedup();
        cuts
    }

    fn masked_frame(b0: u8, payload: &[u8], key: [u8; 4], out: &mut Vec<u8>) {
        match payload.len() {
            n @ 0..=125 => out.extend_from_slice(&[b0, 0x80 | n as u8]),
            n @ 126..=0xffff => {
                out.extend_from_slice(&[b0, 0x80 | 126]);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.extend_from_slice(&[b0, 0x80 | 127]);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&key);
        let at = out.len();
        out.extend_from_slice(payload);
        apply_mask_reference(&mut out[at..], key, 0);
    }

    fn one_frame(bytes: &[u8]) -> (FrameHeader, Vec<u8>) {
        let (h, n) = parse_header(bytes).expect("peer frame").expect("whole");
        assert_eq!(
            bytes.len(),
            n + h.payload_len as usize,
            "peer wrote one frame"
        );
        let mut p = bytes[n..].to_vec();
        apply_mask_reference(&mut p, h.mask.expect("client masks"), 0);
        (h, p)
    }

    fn config(flags: u8, level: u8) -> Config {
        Config {
            max_frame_size: if flags & 4 != 0 { 1024 } else { 16 << 10 },
            max_message_size: MAX_MESSAGE,
            max_fragments: if flags & 8 != 0 { 4 } else { 1000 },
            write_buffer_low: 4 << 10,
            write_buffer_high: 16 << 10,
            write_buffer_limit: 64 << 10,
            overflow: OverflowPolicy::Drop,
            idle_timeout: None,
            ping_interval: None,
            deflate: DeflateConfig {
                enabled: true,
                min_size: if flags & 16 != 0 { 64 } else { 0 },
                level: u32::from(level % 10),
                ..DeflateConfig::default()
            },
            ..Config::default()
        }
    }

    /// What a read produced: messages, and the protocol error if any. The
    /// close code of an error raised while open goes to `failed`.
    fn feed(
        conn: &mut Connection,
        data: &[u8],
        cuts: &[usize],
        now: Instant,
        failed: &mut Option<u16>,
    ) -> (Vec<Payload>, Option<Error>) {
        let max = conn.config().max_message_size;
        let mut msgs = Vec::new();
        let mut start = 0;
        for &end in cuts.iter().chain(std::iter::once(&data.len())) {
            let mut buf = data[start..end].to_vec();
            start = end;
            let len = buf.len();
            let mut input: &mut [u8] = &mut buf;
            for calls in 1.. {
                assert!(calls <= len + 2, "poll_event spins");
                let (was_open, was_closed) = (conn.is_open(), conn.is_closed());
                match conn.poll_event(&mut input, now) {
                    Ok(None) => {
                        assert!(input.is_empty());
                        break;
                    }
                    Ok(Some(ev)) => {
                        assert!(!was_closed, "event after the connection closed");
                        if let Event::Message(m) = ev {
                            let (text, data) = match m {
                                Message::Text(t) => (true, t.into_owned().into_bytes()),
                                Message::Binary(b) => (false, b.into_owned()),
                            };
                            assert!(data.len() <= max);
                            msgs.push(Payload { text, data });
                        }
                    }
                    Err(e) => {
                        assert!(!was_closed && conn.is_closed(), "{e:?}");
                        let Error::Protocol(pe) = &e else {
                            panic!("poll_event returned {e:?}");
                        };
                        if was_open {
                            *failed = Some(pe.close_code().0);
                        }
                        return (msgs, Some(e));
                    }
                }
            }
        }
        (msgs, None)
    }

    pub(super) fn replay(data: &[u8]) {
        let mut u = Input(data);
        let flags = u.byte();
        let params = DeflateParams {
            server_no_context_takeover: flags & 1 != 0,
            client_no_context_takeover: flags & 2 != 0,
            server_max_window_bits: 9 + u.byte() % 7,
            client_max_window_bits: 9 + u.byte() % 7,
        };
        let level = u.byte();
        let scfg = Arc::new(config(flags, level));
        let now = Instant::now();
        let mut server = Connection::new(Role::Server, scfg.clone(), now);
        server.enable_deflate(&params);
        let mut pcfg = config(0, level);
        pcfg.max_message_size = 1 << 20;
        pcfg.max_frame_size = 1 << 20;
        pcfg.write_buffer_limit = 4 << 20;
        pcfg.deflate.min_size = 0;
        let mut peer = Connection::new(Role::Client, Arc::new(pcfg), now);
        peer.enable_deflate(&params);
        let mut rcfg = config(0, level);
        rcfg.max_frame_size = 1 << 20;
        rcfg.max_message_size = 1 << 20;
        let mut reader = Connection::new(Role::Client, Arc::new(rcfg), now);
        reader.enable_deflate(&params);
        let mut expect: VecDeque<Payload> = VecDeque::new();
        let mut reader_close = None;
        // Everything the server wrote decodes at the reader, in order.
        let mut take = |server: &mut Connection, expect: &mut VecDeque<Payload>| {
            let mut buf = Vec::new();
            server.drain_output(&mut buf);
            let mut input: &mut [u8] = &mut buf;
            loop {
                match reader.poll_event(&mut input, now) {
                    Ok(None) => break,
                    Ok(Some(Event::Message(m))) => {
                        let want = expect.pop_front().expect("unexpected message");
                        let (text, data) = match &m {
                            Message::Text(t) => (true, t.as_bytes()),
                            Message::Binary(b) => (false, &b[..]),
                        };
                        assert!(text == want.text && data == want.data, "echo changed");
                    }
                    Ok(Some(Event::Close(c, _))) => {
                        assert!(reader_close.is_none(), "two close frames");
                        reader_close = Some(c.0);
                    }
                    Ok(Some(_)) => {}
                    Err(e) => panic!("server output does not decode: {e:?}"),
                }
            }
        };
        let mut budget = BUDGET;
        let mut pristine = true;
        let mut failed = None;
        let send = |c: &mut Connection, m: &Payload| {
            if m.text {
                c.send_text(std::str::from_utf8(&m.data).unwrap())
            } else {
                c.send_binary(&m.data)
            }
        };
        for _ in 0..MAX_OPS {
            if u.0.is_empty() || server.is_closed() {
                break;
            }
            let mut wire = Vec::new();
            let mut outcome: Option<(bool, Payload)> = None;
            let cuts;
            match u.byte() % 5 {
                0 => {
                    let msg = payload(&mut u, &mut budget);
                    send(&mut peer, &msg).expect("peer send");
                    let mut out = Vec::new();
                    peer.drain_output(&mut out);
                    let (h, mut z) = one_frame(&out);
                    assert_eq!(h.rsv, 4, "peer compressed");
                    let shape = u.byte();
                    let mut at: Vec<usize> = (0..usize::from(shape & 7))
                        .map(|_| usize::from(u.u16le()) % (z.len() + 1))
                        .collect();
                    at.sort_unstable();
                    let mut clean = shape & 0x30 == 0;
                    if shape & 8 != 0 {
                        clean = false;
                        let what = u.byte() % 4;
                        let pos = usize::from(u.u16le()) % (z.len() + 1);
                        let b = u.byte();
                        match what {
                            0 if pos < z.len() => z[pos] ^= b | 1,
                            0 | 2 => z.push(b),
                            1 => z.truncate(pos),
                            _ => z.insert(pos, b),
                        }
                        for c in &mut at {
                            *c = (*c).min(z.len());
                        }
                    }
                    let key = [u.byte(), u.byte(), u.byte(), u.byte()];
                    let mut starts = vec![0];
                    starts.extend_from_slice(&at);
                    let mut ends = at.clone();
                    ends.push(z.len());
                    let n = starts.len();
                    let mut fits = n <= scfg.max_fragments;
                    for (i, (&s, &e)) in starts.iter().zip(&ends).enumerate() {
                        let fin = if i + 1 == n { 0x80 } else { 0 };
                        let rsv = if (i == 0 && shape & 0x10 == 0) || (i == 1 && shape & 0x20 != 0)
                        {
                            0x40
                        } else {
                            0
                        };
                        let opcode = if i == 0 { h.opcode.as_u8() } else { 0 };
                        masked_frame(fin | rsv | opcode, &z[s..e], key, &mut wire);
                        fits &= e - s <= scfg.max_frame_size;
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
                    let b0 = u.byte();
                    let n = usize::from(u.u16le());
                    let body = u.take(n);
                    let key = [u.byte(), u.byte(), u.byte(), u.byte()];
                    pristine &= matches!(b0, 0x89 | 0x8a) && body.len() <= 125;
                    masked_frame(b0, &body, key, &mut wire);
                    cuts = read_cuts(&mut u, wire.len());
                }
                2 => {
                    let n = usize::from(u.u16le());
                    wire = u.take(n);
                    pristine = false;
                    cuts = Vec::new();
                }
                3 => {
                    let msg = payload(&mut u, &mut budget);
                    if msg.data.len() <= MAX_MESSAGE && send(&mut server, &msg).is_ok() {
                        expect.push_back(msg);
                    }
                    cuts = Vec::new();
                }
                _ => {
                    let mut p = u.u16le().to_be_bytes().to_vec();
                    p.extend_from_slice(b"bye");
                    masked_frame(0x88, &p, [1, 2, 3, 4], &mut wire);
                    cuts = read_cuts(&mut u, wire.len());
                }
            }
            if wire.is_empty() {
                take(&mut server, &mut expect);
                continue;
            }
            let was_open = server.is_open();
            let (messages, err) = feed(&mut server, &wire, &cuts, now, &mut failed);
            if let (true, Some((deliver, want))) = (pristine, &outcome) {
                if *deliver {
                    assert!(err.is_none(), "{} bytes: {err:?}", want.data.len());
                    assert_eq!(
                        messages,
                        [Payload {
                            text: want.text,
                            data: want.data.clone()
                        }]
                    );
                } else {
                    assert!(messages.is_empty(), "an oversized message arrived");
                    assert_eq!(failed, Some(CloseCode::TOO_BIG.0), "{err:?}");
                }
            }
            if let (true, Some(code)) = (was_open, failed) {
                assert!(
                    [1002, 1007, 1009].contains(&code),
                    "failed with {code}: {err:?}"
                );
            }
            for m in messages {
                if !server.is_open() {
                    break;
                }
                if send(&mut server, &m).is_ok() {
                    expect.push_back(m);
                }
            }
            assert!(server.buffered() <= wire.len() + 2 * MAX_MESSAGE + 1024);
            take(&mut server, &mut expect);
        }
        take(&mut server, &mut expect);
        if let Some(code) = failed {
            assert_eq!(
                reader_close,
                Some(code),
                "the close frame carries the error's code"
            );
        }
        assert!(expect.is_empty(), "{} echoes missing", expect.len());
    }
}

/// The deflate_connection inputs in fuzz/regressions/ (one found empty
/// messages after others decoding wrong; see
/// `empty_messages_between_others`).
#[test]
fn fuzz_regressions_replay() {
    let found = crate::handshake::tests::fuzz_regressions("deflate_connection");
    assert!(!found.is_empty(), "regressions missing");
    for (name, input) in found {
        let r = std::panic::catch_unwind(|| deflate_connection::replay(&input));
        assert!(r.is_ok(), "{name} fails again");
    }
}

fn cfg_mode(dedicated: bool) -> DeflateConfig {
    DeflateConfig {
        per_connection_zlib: dedicated,
        ..cfg()
    }
}

/// Deterministic chat-like JSON with some English: repetitive across
/// messages, as context takeover expects.
fn chat_message(i: usize) -> Vec<u8> {
    const WORDS: [&str; 12] = [
        "the", "message", "room", "hello", "status", "online", "quick", "brown", "reply", "update",
        "channel", "again",
    ];
    let mut s = format!(
        "{{\"type\":\"message\",\"room\":\"room-{}\",\"user\":\"user{}\",\"seq\":{i},\"text\":\"",
        i % 7,
        (i * 31) % 97
    );
    let mut x = i as u64 * 2_654_435_761 + 1;
    for _ in 0..(5 + i % 40) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push_str(WORDS[(x % 12) as usize]);
        s.push(' ');
    }
    s.push_str("\"}");
    s.into_bytes()
}

/// Sends `msgs` from `tx` to `rx`, inflating each in two pieces; returns
/// the compressed bytes in total.
fn pump(tx: &mut DeflateState, rx: &mut DeflateState, msgs: &[Vec<u8>], what: &str) -> usize {
    let mut total = 0;
    for (i, m) in msgs.iter().enumerate() {
        let mut z = Vec::new();
        tx.compress(m, &mut z);
        total += z.len();
        let (a, b) = z.split_at(z.len() / 2);
        let mut got = Vec::new();
        rx.decompress(a, &mut got, 1 << 20, &mut |_| true)
            .unwrap_or_else(|e| panic!("{what} msg {i}: {e:?}"));
        rx.decompress(b, &mut got, 1 << 20, &mut |_| true)
            .unwrap_or_else(|e| panic!("{what} msg {i}: {e:?}"));
        rx.finish(&mut got, 1 << 20, &mut |_| true)
            .unwrap_or_else(|e| panic!("{what} msg {i}: {e:?}"));
        assert!(got == *m, "{what} msg {i}: wrong bytes");
    }
    total
}

/// The windows kept per connection produce a stream a long-lived zlib
/// stream decodes, and decode one: every pairing of the two modes, with
/// messages shorter and longer than the window, and back-references
/// reaching across several messages.
#[test]
fn window_mode_interoperates_with_per_connection_streams() {
    let mut msgs: Vec<Vec<u8>> = (0..120).map(chat_message).collect();
    // Longer than every window, and a repeat of it that is only cheap if
    // the context reaches back far enough.
    let long: Vec<u8> = (0..40_000)
        .flat_map(|i| chat_message(i % 50))
        .take(40_000)
        .collect();
    msgs.push(long.clone());
    msgs.push(chat_message(3));
    msgs.push(long);
    for bits in [9u8, 12, 15] {
        let mut sizes = Vec::new();
        for (tx_dedicated, rx_dedicated) in
            [(true, true), (false, true), (true, false), (false, false)]
        {
            let mut tx =
                DeflateState::new(Role::Server, &params(false, bits), &cfg_mode(tx_dedicated));
            let mut rx =
                DeflateState::new(Role::Client, &params(false, bits), &cfg_mode(rx_dedicated));
            let what =
                format!("bits {bits} tx dedicated {tx_dedicated} rx dedicated {rx_dedicated}");
            sizes.push((pump(&mut tx, &mut rx, &msgs, &what), what));
        }
        // Priming from the window compresses about as well as a stream
        // kept whole (within 2 %).
        let base = sizes[0].0;
        for (size, what) in &sizes {
            assert!(*size * 100 <= base * 102, "{what}: {size} bytes vs {base}");
        }
    }
}

/// Context takeover still works in the window mode: a repeated message
/// costs a few bytes, as RFC 7692 §7.2.3.2 shows.
#[test]
fn window_mode_keeps_the_context() {
    let mut tx = DeflateState::new(Role::Server, &params(false, 12), &cfg());
    let mut rx = DeflateState::new(Role::Client, &params(false, 12), &cfg());
    let m = chat_message(5);
    let first = pump(&mut tx, &mut rx, std::slice::from_ref(&m), "first");
    let again = pump(&mut tx, &mut rx, std::slice::from_ref(&m), "again");
    assert!(
        again < 10 && again * 4 < first,
        "first {first}, again {again}"
    );
}

/// Between messages a connection holds its windows only (none without
/// context takeover); with `per_connection_zlib` it holds zlib streams.
#[test]
fn memory_held_between_messages() {
    let msgs: Vec<Vec<u8>> = (0..300).map(chat_message).collect();
    for (no_ctx, dedicated, bits, max) in [
        (false, false, 12u8, 2 * 4096),
        (false, false, 15, 2 * 32768),
        (true, false, 15, 0),
        (true, true, 15, 0),
    ] {
        let c = cfg_mode(dedicated);
        let mut tx = DeflateState::new(Role::Server, &params(no_ctx, bits), &c);
        let mut rx = DeflateState::new(Role::Client, &params(no_ctx, bits), &c);
        pump(&mut tx, &mut rx, &msgs, "held");
        let held = tx.held_bytes() + rx.held_bytes();
        assert!(
            held <= max,
            "no_ctx {no_ctx} dedicated {dedicated} bits {bits}: {held}"
        );
        if !no_ctx {
            assert!(held > max / 2, "the windows fill up: {held}");
        }
    }
    let mut tx = DeflateState::new(Role::Server, &params(false, 12), &cfg_mode(true));
    let mut rx = DeflateState::new(Role::Client, &params(false, 12), &cfg_mode(true));
    pump(&mut tx, &mut rx, &msgs[..3], "dedicated");
    assert!(tx.held_bytes() >= 128 << 10, "{}", tx.held_bytes());
    assert!(rx.held_bytes() >= 4 << 10, "{}", rx.held_bytes());
}

/// Many connections on one thread share the pooled zlib streams: their
/// messages interleave, some are inflated in pieces while others are
/// compressed and inflated whole, with different windows and with and
/// without context takeover; every message comes out intact.
#[test]
fn interleaved_connections_share_pooled_streams() {
    struct Pair {
        tx: DeflateState,
        rx: DeflateState,
        pending: Vec<u8>,
        fed: usize,
        sent: Vec<u8>,
        got: Vec<u8>,
    }
    let mut pairs: Vec<Pair> = (0..12)
        .map(|i| {
            let p = params(i % 3 == 0, [9u8, 12, 15][i % 3]);
            let c = cfg_mode(i % 4 == 1);
            Pair {
                tx: DeflateState::new(Role::Client, &p, &c),
                rx: DeflateState::new(Role::Server, &p, &c),
                pending: Vec::new(),
                fed: 0,
                sent: Vec::new(),
                got: Vec::new(),
            }
        })
        .collect();
    let mut delivered = 0;
    for step in 0..3000usize {
        let p = &mut pairs[(step * 7) % 12];
        if p.pending.is_empty() {
            p.sent = chat_message(step);
            p.tx.compress(&p.sent, &mut p.pending);
            p.fed = 0;
            p.got.clear();
        } else if p.fed < p.pending.len() {
            // Feed a few bytes: the inflater stays borrowed meanwhile.
            let end = (p.fed + 1 + step % 13).min(p.pending.len());
            p.rx.decompress(&p.pending[p.fed..end], &mut p.got, 1 << 20, &mut |_| true)
                .unwrap_or_else(|e| panic!("step {step}: {e:?}"));
            p.fed = end;
        } else {
            p.rx.finish(&mut p.got, 1 << 20, &mut |_| true)
                .unwrap_or_else(|e| panic!("step {step}: {e:?}"));
            assert!(p.got == p.sent, "step {step}: wrong bytes");
            p.pending.clear();
            delivered += 1;
        }
    }
    assert!(delivered > 200, "{delivered}");
}

/// A message refused after compression is forgotten in the window mode
/// too: the next message must not refer to it.
#[test]
fn forgotten_message_leaves_no_reference() {
    let mut tx = DeflateState::new(Role::Server, &params(false, 12), &cfg());
    let mut rx = DeflateState::new(Role::Client, &params(false, 12), &cfg());
    pump(&mut tx, &mut rx, &[chat_message(1)], "first");
    let mut dropped = Vec::new();
    tx.compress(&chat_message(2), &mut dropped);
    tx.forget_tx_context();
    // Refers to neither message 1 nor 2: a fresh inflater reads it.
    let mut z = Vec::new();
    tx.compress(&chat_message(2), &mut z);
    let mut fresh = DeflateState::new(Role::Client, &params(false, 12), &cfg());
    assert_eq!(inflate(&mut fresh, &z, 1 << 20).unwrap(), chat_message(2));
    assert_eq!(inflate(&mut rx, &z, 1 << 20).unwrap(), chat_message(2));
    pump(&mut tx, &mut rx, &[chat_message(4)], "after");
}
