//! permessage-deflate codec (RFC 7692 §7.2), feature `deflate`.
//!
//! Compression uses zlib-rs (pure Rust) through flate2, which supports the
//! negotiated window sizes. Each message is compressed with a sync flush and
//! the trailing `00 00 ff ff` removed; on receipt it is appended back.
//! Decompressed output is capped at `max_message_size` while it is produced:
//! the output buffer never holds more than one byte past it, so a
//! compression bomb costs at most that much memory before the connection is
//! failed with 1009.
//!
//! Without context takeover a (de)compressor is only needed during one
//! message: it is borrowed from a small per-thread pool and returned, so
//! idle connections hold no zlib state.

#[cfg(feature = "deflate")]
pub(crate) use imp::DeflateState;

/// Without the feature there is no state: `Option<Box<DeflateState>>` is
/// always `None`.
#[cfg(not(feature = "deflate"))]
#[derive(Debug)]
pub(crate) enum DeflateState {}

/// Why decompression failed.
#[cfg_attr(not(feature = "deflate"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InflateError {
    /// Not valid deflate data.
    Corrupt,
    /// Output would pass the limit.
    TooBig(u64),
    /// The output is not UTF-8 (text messages).
    Utf8,
}

#[cfg(feature = "deflate")]
mod imp {
    use std::cell::RefCell;

    use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

    use super::InflateError;
    use crate::extension::{DeflateConfig, DeflateParams};
    use crate::role::Role;

    const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
    const POOL_MAX: usize = 8;

    thread_local! {
        static COMPRESSORS: RefCell<Vec<(u8, u32, Compress)>> = const { RefCell::new(Vec::new()) };
        static DECOMPRESSORS: RefCell<Vec<(u8, Decompress)>> = const { RefCell::new(Vec::new()) };
    }

    fn take_compressor(bits: u8, level: u32) -> Compress {
        COMPRESSORS
            .with(|p| {
                let mut p = p.borrow_mut();
                let i = p.iter().position(|(b, l, _)| *b == bits && *l == level)?;
                Some(p.swap_remove(i).2)
            })
            .unwrap_or_else(|| Compress::new_with_window_bits(Compression::new(level), false, bits))
    }

    fn give_compressor(bits: u8, level: u32, mut c: Compress) {
        c.reset();
        COMPRESSORS.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX {
                p.push((bits, level, c));
            }
        });
    }

    fn take_decompressor(bits: u8) -> Decompress {
        DECOMPRESSORS
            .with(|p| {
                let mut p = p.borrow_mut();
                let i = p.iter().position(|(b, _)| *b == bits)?;
                Some(p.swap_remove(i).1)
            })
            .unwrap_or_else(|| Decompress::new_with_window_bits(false, bits))
    }

    fn give_decompressor(bits: u8, mut d: Decompress) {
        d.reset(false);
        DECOMPRESSORS.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX {
                p.push((bits, d));
            }
        });
    }

    /// One connection's compression state.
    #[derive(Debug)]
    pub(crate) struct DeflateState {
        /// We reset our compressor after each message.
        own_reset: bool,
        /// The peer resets its compressor after each message.
        peer_reset: bool,
        own_bits: u8,
        peer_bits: u8,
        level: u32,
        min_size: usize,
        tx: Option<Compress>,
        rx: Option<Decompress>,
        /// The peer ended its deflate stream (BFINAL): next message starts a
        /// fresh decompressor.
        rx_ended: bool,
    }

    impl DeflateState {
        pub(crate) fn new(role: Role, p: &DeflateParams, cfg: &DeflateConfig) -> Self {
            let (own_reset, peer_reset, own_bits, peer_bits) = match role {
                Role::Server => (
                    p.server_no_context_takeover,
                    p.client_no_context_takeover,
                    p.server_max_window_bits,
                    p.client_max_window_bits,
                ),
                Role::Client => (
                    p.client_no_context_takeover,
                    p.server_no_context_takeover,
                    p.client_max_window_bits,
                    p.server_max_window_bits,
                ),
            };
            DeflateState {
                own_reset,
                peer_reset,
                own_bits: own_bits.clamp(9, 15),
                // A larger window than the peer uses always decodes.
                peer_bits: peer_bits.clamp(9, 15),
                level: cfg.level.min(9),
                min_size: cfg.min_size,
                tx: None,
                rx: None,
                rx_ended: false,
            }
        }

        /// True if a message of `len` bytes should be compressed.
        pub(crate) fn wants(&self, len: usize) -> bool {
            len >= self.min_size
        }

        /// Compresses one whole message into `out` (tail removed).
        pub(crate) fn compress(&mut self, input: &[u8], out: &mut Vec<u8>) {
            let mut c = match self.tx.take() {
                Some(c) => c,
                None => take_compressor(self.own_bits, self.level),
            };
            let start = c.total_in();
            // flate2 writes into spare capacity only, and `reserve` may
            // double it: grow exactly, to what zlib can emit at most (its
            // stored-block bound, plus the sync flush's empty block).
            let bound = out.len() + input.len() + input.len() / 16 + 64;
            loop {
                if out.capacity() - out.len() < 64 {
                    let add = bound.saturating_sub(out.len()).max(4096);
                    out.reserve_exact(add);
                }
                let done = (c.total_in() - start) as usize;
                // Sync flush: every byte in, output ends on a byte boundary
                // with an empty stored block (00 00 ff ff).
                if c.compress_vec(&input[done..], out, FlushCompress::Sync)
                    .is_err()
                {
                    // Cannot happen with valid parameters; send nothing
                    // broken: fall back to an empty stored block.
                    out.clear();
                    out.extend_from_slice(&[0x00]);
                    break;
                }
                let consumed_all = (c.total_in() - start) as usize == input.len();
                if consumed_all && out.len() < out.capacity() {
                    break;
                }
            }
            if out.ends_with(&TAIL) {
                out.truncate(out.len() - 4);
            }
            if out.is_empty() {
                // Nothing new to emit (an empty message): the stripped sync
                // flush lost the stored block's header bits, so send the
                // single 0x00 of RFC 7692 §7.2.3.6, which the receiver's
                // appended tail completes into an empty stored block.
                out.push(0x00);
            }
            if self.own_reset {
                give_compressor(self.own_bits, self.level, c);
            } else {
                self.tx = Some(c);
            }
        }

        /// Forgets the compression context: the message just compressed
        /// was not sent, so nothing may refer to it. The next message
        /// starts from an empty window, which the peer decodes whatever
        /// its own window holds (LZ77 distances count back from the
        /// current position, and only reach bytes sent after the reset).
        pub(crate) fn forget_tx_context(&mut self) {
            if let Some(c) = self.tx.take() {
                give_compressor(self.own_bits, self.level, c);
            }
        }

        /// Decompresses part of a message, appending to `out` and handing
        /// each new piece of output to `check` (UTF-8 validation).
        pub(crate) fn decompress(
            &mut self,
            mut input: &[u8],
            out: &mut Vec<u8>,
            max: usize,
            check: &mut dyn FnMut(&[u8]) -> bool,
        ) -> Result<(), InflateError> {
            if self.rx_ended {
                return Ok(());
            }
            let d = match self.rx.as_mut() {
                Some(d) => d,
                None => self.rx.insert(take_decompressor(self.peer_bits)),
            };
            // flate2 fills all spare capacity before the size can be
            // checked, so capacity is the memory bound: never more than one
            // byte past the limit (enough to see it passed). Growth is
            // geometric below that cap (growing by fixed steps would copy
            // the message over and over); `reserve` alone may double past it.
            let cap = max.saturating_add(1);
            if out.capacity() > cap {
                out.shrink_to(cap);
            }
            loop {
                if out.len() > max {
                    return Err(InflateError::TooBig(out.len() as u64));
                }
                if out.capacity() == out.len() {
                    let want = (input.len() * 4).clamp(4096, 256 << 10);
                    let target = (out.len() + want).max(out.capacity() * 2).min(cap);
                    out.reserve_exact(target - out.len());
                }
                let (in0, out0) = (d.total_in(), out.len());
                let status = d
                    .decompress_vec(input, out, FlushDecompress::None)
                    .map_err(|_| InflateError::Corrupt)?;
                let consumed = (d.total_in() - in0) as usize;
                input = &input[consumed..];
                if out.len() > max {
                    return Err(InflateError::TooBig(out.len() as u64));
                }
                if !check(&out[out0..]) {
                    return Err(InflateError::Utf8);
                }
                if status == Status::StreamEnd {
                    // A final block (RFC 7692 §7.2.3.4): what follows it in
                    // this message is padding, as zlib treats it; the next
                    // message starts a new stream.
                    self.rx_ended = true;
                    return Ok(());
                }
                let produced = out.len() - out0;
                if consumed == 0 && produced == 0 {
                    return Ok(());
                }
                if input.is_empty() && out.len() < out.capacity() {
                    return Ok(());
                }
            }
        }

        /// Ends a compressed message: appends the tail, then resets if the
        /// peer does not keep its context.
        pub(crate) fn finish(
            &mut self,
            out: &mut Vec<u8>,
            max: usize,
            check: &mut dyn FnMut(&[u8]) -> bool,
        ) -> Result<(), InflateError> {
            let r = self.decompress(&TAIL, out, max, check);
            if self.rx_ended || self.peer_reset || r.is_err() {
                if let Some(d) = self.rx.take() {
                    give_decompressor(self.peer_bits, d);
                }
                self.rx_ended = false;
            }
            r
        }
    }
}

#[cfg(all(test, feature = "deflate"))]
mod tests {
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
    fn inflate_pieces(
        z: &[u8],
        piece: usize,
        max: usize,
    ) -> (Result<Vec<u8>, InflateError>, usize) {
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
        let mut config = Config::default();
        config.max_message_size = max;
        config.deflate = cfg();
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
        let err = loop {
            match server.poll_event(&mut input, now) {
                Ok(Some(ev)) => panic!("event {ev:?}"),
                Ok(None) => panic!("no error"),
                Err(e) => break e,
            }
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
}
