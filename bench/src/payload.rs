//! What is sent and what must come back: the payload patterns, where each
//! message starts in them, and how an echo is checked.

use std::fmt::Write as _;

/// Payloads of at most this size are compared whole on every echo.
const FULL_CHECK_MAX: usize = 1024;
/// Larger payloads are compared whole on every this-many-th echo (and by
/// length, first and last 8 bytes on the others).
const FULL_CHECK_EVERY: u64 = 16;
/// Payloads start at one of this many offsets into the pattern, so
/// consecutive messages differ and a lost, repeated or reordered echo is
/// caught by its first bytes.
const OFFSETS: usize = 251;

/// The messages of a run: every one is a `size`-byte slice of one shared
/// pattern, so sending allocates nothing.
pub(crate) struct Payload {
    pub(crate) size: usize,
    pub(crate) text: bool,
    /// `size + OFFSETS` pseudo-random bytes (printable ASCII for text), or
    /// repetitive text with `--compressible`.
    pattern: Vec<u8>,
    /// The same bytes as a `str` in text mode (empty otherwise).
    pattern_text: String,
}

impl Payload {
    pub(crate) fn new(size: usize, text: bool, compressible: bool) -> Self {
        let pattern = if compressible {
            make_compressible_pattern(size + OFFSETS)
        } else {
            make_pattern(size + OFFSETS, text)
        };
        let pattern_text = if text {
            String::from_utf8(pattern.clone()).expect("ASCII")
        } else {
            String::new()
        };
        Payload {
            size,
            text,
            pattern,
            pattern_text,
        }
    }

    fn offset(id: u64, seq: u64) -> usize {
        (id.wrapping_mul(7919).wrapping_add(seq.wrapping_mul(13)) % OFFSETS as u64) as usize
    }

    /// Message `seq` of connection `id`.
    pub(crate) fn bytes(&self, id: u64, seq: u64) -> &[u8] {
        let off = Self::offset(id, seq);
        &self.pattern[off..off + self.size]
    }

    /// Message `seq` of connection `id` in text mode.
    pub(crate) fn str(&self, id: u64, seq: u64) -> &str {
        let off = Self::offset(id, seq);
        &self.pattern_text[off..off + self.size]
    }

    /// Checks an echo: type, length, and content (see FULL_CHECK_*).
    pub(crate) fn verify(&self, got: &[u8], is_text: bool, id: u64, seq: u64) -> bool {
        if is_text != self.text || got.len() != self.size {
            return false;
        }
        let want = self.bytes(id, seq);
        if self.size <= FULL_CHECK_MAX || seq.is_multiple_of(FULL_CHECK_EVERY) {
            return got == want;
        }
        let n = self.size;
        got[..8] == want[..8] && got[n - 8..] == want[n - 8..]
    }
}

/// `--compressible`: JSON-like records whose fields vary a little, as chat
/// or telemetry traffic does. Printable ASCII, so it serves text and binary
/// messages; deflate makes a 4 KiB one about 6 times smaller.
fn make_compressible_pattern(len: usize) -> Vec<u8> {
    const WORDS: [&str; 8] = [
        "hello", "world", "status", "update", "price", "ticker", "message", "online",
    ];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32
    };
    let mut out = String::with_capacity(len + 128);
    let mut id = 1000u64;
    while out.len() < len {
        id += 1 + next() % 3;
        let _ = writeln!(
            out,
            "{{\"id\":{id},\"user\":\"user-{}\",\"type\":\"{}\",\"text\":\"{} {}\",\"ts\":{}}}",
            next() % 100,
            WORDS[(next() % 8) as usize],
            WORDS[(next() % 8) as usize],
            WORDS[(next() % 8) as usize],
            1_700_000_000 + id * 7
        );
    }
    out.truncate(len);
    out.into_bytes()
}

fn make_pattern(len: usize, text: bool) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let r = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
            if text {
                b'!' + r % 94
            } else {
                r
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_catches_wrong_and_shifted_payloads() {
        for size in [0usize, 5, 32, 2000] {
            let pattern = make_pattern(size + OFFSETS, false);
            let payload = Payload::new(size, false, false);
            for seq in 0..40 {
                let off = Payload::offset(3, seq);
                let good = &pattern[off..off + size];
                assert!(payload.verify(good, false, 3, seq));
                assert!(!payload.verify(good, true, 3, seq));
                if size >= 16 {
                    // The previous or next message instead of this one.
                    assert!(!payload.verify(good, false, 3, seq + 1));
                    assert!(!payload.verify(good, false, 4, seq));
                    let mut bad = good.to_vec();
                    bad[size - 1] ^= 1;
                    assert!(!payload.verify(&bad, false, 3, seq));
                    let mut mid = good.to_vec();
                    mid[size / 2] ^= 1;
                    let caught = !payload.verify(&mid, false, 3, seq);
                    assert_eq!(
                        caught,
                        size <= FULL_CHECK_MAX || seq.is_multiple_of(FULL_CHECK_EVERY)
                    );
                }
            }
        }
    }

    #[test]
    fn text_pattern_is_printable() {
        assert!(make_pattern(4096, true)
            .iter()
            .all(|b| (b'!'..=b'~').contains(b)));
    }
}
