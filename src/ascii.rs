//! The library's only `unsafe`: a text payload found to be all ASCII (while
//! it was unmasked, or by a read-only test) becomes a `&str` without a
//! second pass over it.
//!
//! Safe code gets from bytes to `&str` only through `std::str::from_utf8`,
//! about 0.44 instructions per byte of ASCII, which binary messages skip:
//! a 16 KiB text echo cost the server twice the instructions of a binary
//! one (14,252 against 7,036 under callgrind) and about 7 % more CPU.
//! [`crate::mask::apply_mask_ascii`] sees whether any byte has its high
//! bit set in the pass that unmasks (one vector OR per 16 bytes, 0.08
//! instructions per byte), and on "all ASCII" this module skips the check,
//! since ASCII is valid UTF-8 (8,335 against 7,030). Anything else (a byte
//! of 0x80 or more anywhere) goes through the full check as before, so
//! invalid text fails exactly where it failed before. A frame that was not
//! masked (as a client receives them) has no pass to fold the test into:
//! it gets a read-only OR of its words, block by block, and `from_utf8`
//! from the first block that is not all ASCII. The measurements are in
//! docs/PERFORMANCE.md ("Text", round two, and "A client's text").
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use crate::mask::apply_mask_ascii;

/// Unmasks a whole text message in place with `key` (no key: the bytes
/// stay as they are) and returns it as a `&str`, or `None` if it is not
/// UTF-8.
///
/// Its all-ASCII front is not given to `from_utf8`: a masked payload is
/// seen whole while it is unmasked (`apply_mask_ascii`), an unmasked one
/// (a client's input, with no pass to fold the test into) block by block
/// with a read-only OR of its words ([`ascii_prefix`]). Only what follows
/// goes to `from_utf8`. A client receiving all-ASCII text: 100 B 572 →
/// 499 instructions (binary 357), 16 KiB 9,213 → 4,359 (binary 1,904),
/// 16 KiB with one `é` at its end 9,227 → 6,299 (`scripts/callgrind.sh
/// client_recv_*`).
///
/// `offset` is the position of `data[0]` in the frame payload, as for
/// [`crate::mask::apply_mask`].
#[inline]
pub(crate) fn unmask_text(data: &mut [u8], key: Option<[u8; 4]>, offset: usize) -> Option<&str> {
    let ascii = match key {
        Some(key) if apply_mask_ascii(data, key, offset) => data.len(),
        Some(_) => 0,
        None => ascii_prefix(data),
    };
    if ascii < data.len() && std::str::from_utf8(&data[ascii..]).is_err() {
        return None;
    }
    debug_assert!(data[..ascii].is_ascii(), "an ASCII front that is not");
    // SAFETY: `data[..ascii]` is all bytes below 0x80: `apply_mask_ascii`
    // ORs every unmasked byte into the value it tests, `ascii_prefix`
    // every byte of the blocks it counts (both exact: checked against a
    // byte-wise test below and by the `mask` fuzz target). Each such byte
    // is a whole one-byte UTF-8 character, so the front is valid UTF-8
    // and ends on a character boundary; `data[ascii..]` was just checked
    // by `from_utf8`. Two valid UTF-8 strings one after the other are one.
    Some(unsafe { std::str::from_utf8_unchecked(data) })
}

/// Unmasks a piece of a text message in place, as [`unmask_text`], and
/// returns it as a `&str` if every byte is ASCII; otherwise the unmasked
/// bytes, for the incremental validator (a piece may end inside a
/// character, so `from_utf8` would not do).
#[inline]
pub(crate) fn unmask_ascii(
    data: &mut [u8],
    key: Option<[u8; 4]>,
    offset: usize,
) -> Result<&str, &[u8]> {
    let ascii = match key {
        Some(key) => apply_mask_ascii(data, key, offset),
        None => ascii_prefix(data) == data.len(),
    };
    if !ascii {
        return Err(data);
    }
    debug_assert!(data.is_ascii(), "said ASCII and is not");
    // SAFETY: every byte of `data` is below 0x80 (`apply_mask_ascii` or
    // `ascii_prefix`, both exact, as above), each a whole one-byte UTF-8
    // character, so `data` is valid UTF-8.
    Ok(unsafe { std::str::from_utf8_unchecked(data) })
}

/// Bytes of unmasked text tested for ASCII at a time.
const BLOCK: usize = 4096;

/// How many bytes at the front of `data` are whole blocks of ASCII (or
/// all of it): the test stops at the first block with a byte of 0x80 or
/// more, so text that is not ASCII pays at most one block's OR for it.
fn ascii_prefix(data: &[u8]) -> usize {
    let mut ascii = 0;
    while ascii < data.len() {
        let end = data.len().min(ascii + BLOCK);
        if !all_ascii(&data[ascii..end]) {
            break;
        }
        ascii = end;
    }
    ascii
}

/// Whether every byte of `block` is below 0x80: the OR of its 8-byte
/// words (and tail bytes) has no high bit of any byte set. Exact: the
/// receive path makes a `&str` on `true`.
#[inline]
fn all_ascii(block: &[u8]) -> bool {
    // 64 bytes a step into eight accumulators: the compiler makes it four
    // 16-byte loads and ORs (SSE2).
    let mut wide = block.chunks_exact(64);
    let mut acc = [0u64; 8];
    for chunk in &mut wide {
        for (w, a) in chunk.chunks_exact(8).zip(&mut acc) {
            *a |= u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        }
    }
    let mut seen = acc.iter().fold(0, |x, y| x | y);
    let mut words = wide.remainder().chunks_exact(8);
    for w in &mut words {
        seen |= u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
    }
    for &b in words.remainder() {
        seen |= u64::from(b);
    }
    seen & 0x8080_8080_8080_8080 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::apply_mask_reference;

    const KEYS: [[u8; 4]; 5] = [
        [0x37, 0xfa, 0x21, 0x3d],
        [0, 0, 0, 0],
        [0x80, 0x80, 0x80, 0x80],
        [0xff, 0x7f, 0x00, 0x80],
        [0x12, 0x34, 0x56, 0x78],
    ];

    /// xorshift64*: deterministic random bytes for the tests.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn byte(&mut self) -> u8 {
            (self.next() >> 56) as u8
        }
    }

    /// `unmask_ascii` on `plain` masked with `key` (at `offset`), placed at
    /// `align` bytes into a larger buffer, against the safe way: the
    /// byte-wise reference mask, then `std::str::from_utf8` for ASCII
    /// bytes and the bytes themselves otherwise. Also checks that nothing
    /// outside the slice changed.
    fn check(plain: &[u8], key: [u8; 4], offset: usize, align: usize) {
        let mut wire = plain.to_vec();
        apply_mask_reference(&mut wire, key, offset);
        let mut buf = vec![0xa5u8; align + wire.len() + 9];
        buf[align..align + wire.len()].copy_from_slice(&wire);
        let (head, rest) = buf.split_at_mut(align);
        let (data, tail) = rest.split_at_mut(wire.len());
        let whole = data.to_vec();
        let got = unmask_ascii(data, Some(key), offset).map(str::as_bytes);
        let want = if plain.is_ascii() {
            Ok(std::str::from_utf8(plain).expect("ASCII").as_bytes())
        } else {
            Err(plain)
        };
        assert_eq!(
            got,
            want,
            "len {} key {key:02x?} offset {offset} align {align}",
            plain.len()
        );
        assert!(head.iter().chain(tail.iter()).all(|&b| b == 0xa5));
        // The same bytes as a whole message: text exactly when UTF-8.
        let mut data = whole;
        let got = unmask_text(&mut data, Some(key), offset).map(str::as_bytes);
        assert_eq!(got, std::str::from_utf8(plain).ok().map(str::as_bytes));
    }

    #[test]
    fn one_high_byte_at_every_position_length_and_alignment() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for len in 0..300 {
            let plain: Vec<u8> = (0..len).map(|_| rng.byte() & 0x7f).collect();
            for align in 0..8 {
                let key = KEYS[(len + align) % KEYS.len()];
                let offset = (len + align) % 4;
                check(&plain, key, offset, align);
                for pos in 0..len {
                    let mut bad = plain.clone();
                    bad[pos] |= 0x80;
                    check(&bad, key, offset, align);
                }
            }
        }
    }

    #[test]
    fn every_byte_value_at_every_position_of_each_path() {
        // 0..=135 covers the 128-byte wide loop, the words and the tail.
        let base = vec![b'a'; 137];
        for value in 0..=255u8 {
            for pos in 0..base.len() {
                let mut plain = base.clone();
                plain[pos] = value;
                let key = KEYS[pos % KEYS.len()];
                check(&plain, key, pos % 4, pos % 16);
            }
        }
    }

    #[test]
    fn random_lengths_and_bytes() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..3000 {
            let len = (rng.next() % 5000) as usize;
            // Mostly ASCII, with a chance of high bytes that grows with
            // the round, so both results are common.
            let odds = (round % 7) as u64;
            let plain: Vec<u8> = (0..len)
                .map(|_| {
                    let b = rng.byte();
                    if odds > 0 && rng.next().is_multiple_of(1 << (3 * odds)) {
                        b | 0x80
                    } else {
                        b & 0x7f
                    }
                })
                .collect();
            let key = [rng.byte(), rng.byte(), rng.byte(), rng.byte()];
            check(&plain, key, (rng.next() % 8) as usize, round % 16);
        }
    }

    #[test]
    fn large_payloads() {
        let len = (1 << 20) + 13;
        let plain: Vec<u8> = (0..len).map(|i| b' ' + (i % 95) as u8).collect();
        for align in [0, 1, 7] {
            check(&plain, KEYS[0], 3, align);
            for pos in [0, 1, 127, 128, len / 2, len - 14, len - 13, len - 1] {
                let mut bad = plain.clone();
                bad[pos] = 0x80 | (pos as u8);
                check(&bad, KEYS[3], 1, align);
            }
        }
    }

    /// `unmask_text` with no key (a client's input) on `bytes`, placed at
    /// `align` bytes into a larger buffer, against `std::str::from_utf8`:
    /// the same text, or the same bytes back when they are not UTF-8, and
    /// nothing changed.
    fn check_unmasked(bytes: &[u8], align: usize) {
        let mut buf = vec![0xa5u8; align + bytes.len() + 9];
        buf[align..align + bytes.len()].copy_from_slice(bytes);
        let (head, rest) = buf.split_at_mut(align);
        let (data, tail) = rest.split_at_mut(bytes.len());
        let got = unmask_text(data, None, 0).map(str::as_bytes).ok_or(bytes);
        let want = match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.as_bytes()),
            Err(_) => Err(bytes),
        };
        assert_eq!(got, want, "len {} align {align}", bytes.len());
        // A piece of a message: a `&str` only if all ASCII.
        let piece = unmask_ascii(data, None, 0).map(str::as_bytes);
        let want = if bytes.is_ascii() {
            Ok(bytes)
        } else {
            Err(bytes)
        };
        assert_eq!(piece, want, "piece: len {} align {align}", bytes.len());
        assert!(head.iter().chain(tail.iter()).all(|&b| b == 0xa5));
    }

    /// What goes at a position: a byte of each kind of UTF-8 trouble, or a
    /// whole valid character of 2, 3 or 4 bytes.
    const INSERTS: [&[u8]; 9] = [
        b"\x80",         // a lone continuation byte
        b"\xc3",         // a lead byte with nothing after it
        b"\xff",         // never valid
        b"\xc0\xaf",     // overlong
        b"\xed\xa0\x80", // a surrogate
        "é".as_bytes(),
        "€".as_bytes(),
        "😀".as_bytes(),
        b"\xf0\x9f\x98", // a 4-byte character cut short
    ];

    #[test]
    fn unmasked_text_matches_from_utf8_at_every_position() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for len in 0..300 {
            let plain: Vec<u8> = (0..len).map(|_| rng.byte() & 0x7f).collect();
            for align in [0, 1, 3, 7] {
                check_unmasked(&plain, align);
                for pos in 0..=len {
                    let insert = INSERTS[(pos + align) % INSERTS.len()];
                    let mut text = plain[..pos].to_vec();
                    text.extend_from_slice(insert);
                    text.extend_from_slice(&plain[pos..]);
                    check_unmasked(&text, align);
                }
            }
        }
    }

    #[test]
    fn unmasked_text_across_block_boundaries() {
        // Blocks of ASCII skip `from_utf8`; what follows the first block
        // with a high byte is checked by it: put each kind of character
        // and error on, just before and just after the boundaries.
        for len in [BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 3, 3 * BLOCK] {
            let plain: Vec<u8> = (0..len).map(|i| b' ' + (i % 95) as u8).collect();
            check_unmasked(&plain, 0);
            let mut at: Vec<usize> = Vec::new();
            for b in [BLOCK, 2 * BLOCK, 3 * BLOCK] {
                at.extend((b.saturating_sub(4)..b + 4).filter(|&p| p <= len));
            }
            at.extend([0, 1, len]);
            for &pos in &at {
                for insert in INSERTS {
                    let mut text = plain[..pos].to_vec();
                    text.extend_from_slice(insert);
                    text.extend_from_slice(&plain[pos..]);
                    check_unmasked(&text, pos % 8);
                }
            }
            // A character that straddles a boundary, with valid text on
            // both sides and an error only far after it.
            for insert in INSERTS.iter().skip(5).take(3) {
                let mut text = plain[..BLOCK.min(len) - 1].to_vec();
                text.extend_from_slice(insert);
                text.extend_from_slice(&plain[BLOCK.min(len) - 1..]);
                check_unmasked(&text, 0);
                text.push(0x80);
                check_unmasked(&text, 0);
            }
        }
    }

    #[test]
    fn unmasked_random_text() {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        for round in 0..2000 {
            let len = (rng.next() % (3 * BLOCK as u64)) as usize;
            let mut text = Vec::with_capacity(len + 4);
            // ASCII runs with characters of every width between, and now
            // and then a broken byte.
            while text.len() < len {
                let r = rng.next() % 64;
                if r < 60 {
                    text.push(rng.byte() & 0x7f);
                } else if r < 63 {
                    text.extend_from_slice(INSERTS[5 + (r - 60) as usize]);
                } else if round % 3 == 0 {
                    text.push(rng.byte() | 0x80);
                }
            }
            check_unmasked(&text, round % 8);
        }
    }
}
