//! The library's only `unsafe`: a text payload found to be all ASCII while
//! it was unmasked becomes a `&str` without a second pass over it.
//!
//! Safe code gets from bytes to `&str` only through `std::str::from_utf8`,
//! about 0.44 instructions per byte of ASCII, which binary messages skip:
//! a 16 KiB text echo cost the server twice the instructions of a binary
//! one (14,252 against 7,036 under callgrind) and about 7 % more CPU.
//! [`crate::mask::apply_mask_ascii`] sees whether any byte has its high
//! bit set in the pass that unmasks (one vector OR per 16 bytes, 0.08
//! instructions per byte), and on "all ASCII" this module skips the check,
//! since ASCII is valid UTF-8 (8,335 against 7,030). Anything else (a byte
//! of 0x80 or more anywhere, or a frame that was not masked, as a client
//! receives them) goes through the full check as before, so invalid text
//! fails exactly where it failed before. The measurements are in
//! docs/PERFORMANCE.md ("Text", round two).
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use crate::mask::apply_mask_ascii;

/// Unmasks a text payload in place with `key` (no key: the bytes stay as
/// they are) and returns it as a `&str` if every byte is ASCII. Otherwise
/// returns the unmasked bytes, for a full UTF-8 check.
///
/// `offset` is the position of `data[0]` in the frame payload, as for
/// [`crate::mask::apply_mask`].
#[inline]
pub(crate) fn unmask_text(
    data: &mut [u8],
    key: Option<[u8; 4]>,
    offset: usize,
) -> Result<&str, &[u8]> {
    let Some(key) = key else {
        return Err(data);
    };
    if !apply_mask_ascii(data, key, offset) {
        return Err(data);
    }
    debug_assert!(data.is_ascii(), "apply_mask_ascii said ASCII");
    // SAFETY: `apply_mask_ascii` returned true, so every byte of `data`
    // (as it is now, unmasked) is below 0x80: it ORs every unmasked byte
    // into the value it tests (mask.rs; checked against a byte-wise test
    // below and by the `mask` fuzz target). Bytes below 0x80 are each a
    // whole one-byte UTF-8 character, so `data` is valid UTF-8.
    Ok(unsafe { std::str::from_utf8_unchecked(data) })
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

    /// `unmask_text` on `plain` masked with `key` (at `offset`), placed at
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
        let got = unmask_text(data, Some(key), offset).map(str::as_bytes);
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

    #[test]
    fn unmasked_bytes_are_left_to_the_full_check() {
        let mut data = *b"plain ASCII, but nothing showed it";
        assert_eq!(
            unmask_text(&mut data, None, 0),
            Err(&b"plain ASCII, but nothing showed it"[..])
        );
    }
}
