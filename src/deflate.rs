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
mod tests;
