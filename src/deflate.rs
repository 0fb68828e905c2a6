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
//! zlib streams are borrowed from a small per-thread pool for one message
//! and returned, so a connection holds no zlib state between messages
//! (zlib-rs's compressor alone is over 128 KiB: its hash table has a fixed
//! 64 Ki entries whatever the window). With context takeover a connection
//! keeps only the last window of bytes it sent and received, and the
//! borrowed stream is primed with it (a preset dictionary) before each
//! message: the peer sees the same stream a long-lived compressor would
//! produce. `DeflateConfig::per_connection_zlib` keeps the streams per
//! connection instead (less CPU per message, far more memory).

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
        /// Keep `tx`/`rx` between messages instead of the windows below.
        dedicated: bool,
        /// Context takeover without `dedicated`: the last bytes sent and
        /// received, up to each direction's window size.
        tx_window: Vec<u8>,
        rx_window: Vec<u8>,
        /// Where the message being inflated starts in its output buffer.
        rx_start: usize,
    }

    /// Appends `data` to `w`, keeping only the last `cap` bytes, without
    /// letting the capacity pass `cap`.
    fn push_window(w: &mut Vec<u8>, data: &[u8], cap: usize) {
        let data = &data[data.len().saturating_sub(cap)..];
        let keep = cap - data.len();
        if w.len() > keep {
            w.drain(..w.len() - keep);
        }
        let need = w.len() + data.len();
        if need > w.capacity() {
            let target = need.max(w.capacity() * 2).min(cap);
            w.reserve_exact(target - w.len());
        }
        w.extend_from_slice(data);
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
                dedicated: cfg.per_connection_zlib,
                tx_window: Vec::new(),
                rx_window: Vec::new(),
                rx_start: 0,
            }
        }

        /// Bytes this connection holds between messages (its windows, or
        /// an estimate of its own zlib streams), for tests and metrics.
        #[cfg(test)]
        pub(crate) fn held_bytes(&self) -> usize {
            self.tx_window.capacity()
                + self.rx_window.capacity()
                + usize::from(self.tx.is_some()) * (128 << 10)
                + usize::from(self.rx.is_some()) * (1 << self.peer_bits)
        }

        /// The window of the decompressor: the peer's when it stays with
        /// this connection, else 15 (a larger window reads any stream, and
        /// flate2 re-allocates a stream of any other size on reset).
        fn rx_bits(&self) -> u8 {
            if self.dedicated && !self.peer_reset {
                self.peer_bits
            } else {
                15
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
                None => {
                    let mut c = take_compressor(self.own_bits, self.level);
                    if !self.tx_window.is_empty() && c.set_dictionary(&self.tx_window).is_err() {
                        // Cannot happen on a fresh raw stream; without the
                        // dictionary the output is still valid, only larger.
                        c.reset();
                    }
                    c
                }
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
            } else if self.dedicated {
                self.tx = Some(c);
            } else {
                push_window(&mut self.tx_window, input, 1 << self.own_bits);
                give_compressor(self.own_bits, self.level, c);
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
            self.tx_window = Vec::new();
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
                None => {
                    let mut d = take_decompressor(self.rx_bits());
                    if !self.rx_window.is_empty() && d.set_dictionary(&self.rx_window).is_err() {
                        // Cannot happen on a fresh raw stream; a reference
                        // into the window then fails as corrupt data.
                        d.reset(false);
                    }
                    self.rx_start = out.len();
                    self.rx.insert(d)
                }
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
            let keep_window = !self.dedicated && !self.peer_reset;
            if keep_window && r.is_ok() && !self.rx_ended {
                let msg = out.get(self.rx_start..).unwrap_or_default();
                push_window(&mut self.rx_window, msg, 1 << self.peer_bits);
            } else if self.rx_ended {
                self.rx_window = Vec::new();
            }
            if self.rx_ended || self.peer_reset || r.is_err() || !self.dedicated {
                if let Some(d) = self.rx.take() {
                    give_decompressor(self.rx_bits(), d);
                }
                self.rx_ended = false;
            }
            r
        }
    }
}

#[cfg(all(test, feature = "deflate"))]
mod tests;
