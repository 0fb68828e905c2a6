//! Masking (RFC 6455 §5.3): XOR with a 4-byte key, in place.
//!
//! `offset` is the position of `data[0]` within the frame payload, so a
//! payload can be unmasked in pieces as it arrives.
//!
//! Safety-relevant: `src/ascii.rs`, the library's one `unsafe` block,
//! trusts [`apply_mask_ascii`]'s `true` (every byte below 0x80). A change
//! to the loops here must keep that exact; the differential tests in
//! `ascii.rs` and the `mask` fuzz target check it.

/// Masks or unmasks `data` in place, a 64-bit word at a time.
///
/// Payloads of 128 bytes or more go to `mask_wide`, whose loop the
/// compiler vectorises; the short path stays small enough to inline into
/// the receive path (most frames are short).
#[inline]
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
    mask::<false>(data, key, offset);
}

/// [`apply_mask`], and says whether every byte of `data` is ASCII (below
/// 0x80) once masked or unmasked, seen in the same pass: one more vector
/// OR per 16 bytes instead of a second pass over the text.
///
/// The receive path relies on `true` to make a `&str` without checking
/// the bytes again (see `ascii.rs`), so a `true` for a byte of 0x80 or
/// more would be unsound: keep this function exact.
#[inline]
pub fn apply_mask_ascii(data: &mut [u8], key: [u8; 4], offset: usize) -> bool {
    mask::<true>(data, key, offset) & 0x8080_8080_8080_8080 == 0
}

/// The masking loop of both: with `OR`, also the bitwise OR of every
/// 8-byte word of the result (a byte of the tail goes in the low byte),
/// else 0.
#[inline(always)]
fn mask<const OR: bool>(data: &mut [u8], key: [u8; 4], offset: usize) -> u64 {
    let rot = offset & 3;
    let k = [
        key[rot],
        key[(rot + 1) & 3],
        key[(rot + 2) & 3],
        key[(rot + 3) & 3],
    ];
    // The rotated key twice: no byte shuffling to build it.
    let word = u64::from(u32::from_ne_bytes(k)) * 0x1_0000_0001;
    let (wide, rest) = data.split_at_mut(data.len() & !127);
    let mut seen = 0;
    if !wide.is_empty() {
        seen = mask_wide::<OR>(wide, word);
    }
    let mut words = rest.chunks_exact_mut(8);
    for w in &mut words {
        let v = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) ^ word;
        w.copy_from_slice(&v.to_ne_bytes());
        if OR {
            seen |= v;
        }
    }
    // Whole words are a multiple of 4 bytes, so the key phase is unchanged.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= k[i & 3];
        if OR {
            seen |= u64::from(*b);
        }
    }
    seen
}

/// XORs whole 128-byte chunks with `word` (the key, twice); with `OR`,
/// returns the OR of all the resulting words (else 0).
///
/// On the baseline x86-64 target (SSE2) this compiles to eight unaligned
/// 16-byte load/xor/store triples per chunk (27 instructions per 128 bytes;
/// the 32-byte chunks before gave 15 per 64), and with `OR` one `por` more
/// per 16 bytes into eight accumulators. Built with `-C target-cpu` of a
/// machine with AVX2 it becomes four 32-byte `vxorps` per chunk. Safe code
/// cannot choose AVX2 at run time (calling a `#[target_feature]` function
/// is `unsafe`), so the portable build stays at 16 bytes a step.
#[inline(never)]
fn mask_wide<const OR: bool>(data: &mut [u8], word: u64) -> u64 {
    let mut seen = [0u64; 16];
    for chunk in data.chunks_exact_mut(128) {
        for (w, s) in chunk.chunks_exact_mut(8).zip(&mut seen) {
            let v = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) ^ word;
            w.copy_from_slice(&v.to_ne_bytes());
            if OR {
                *s |= v;
            }
        }
    }
    seen.iter().fold(0, |a, s| a | s)
}

/// Byte-at-a-time reference for [`apply_mask`], kept for differential tests.
pub fn apply_mask_reference(data: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[offset.wrapping_add(i) & 3];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_matches_reference_at_every_offset_and_alignment() {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let base: Vec<u8> = (0..700u32).map(|i| (i * 7 + 3) as u8).collect();
        for start in 0..16 {
            for len in 0..=600 {
                for offset in 0..4 {
                    let mut a = base[start..start + len].to_vec();
                    let mut b = a.clone();
                    apply_mask(&mut a, key, offset);
                    apply_mask_reference(&mut b, key, offset);
                    assert_eq!(a, b, "start {start} len {len} offset {offset}");
                    // Unaligned in-place slice of a larger buffer.
                    let mut big = base.clone();
                    apply_mask(&mut big[start..start + len], key, offset);
                    assert_eq!(&big[start..start + len], &b[..]);
                    apply_mask(&mut a, key, offset);
                    assert_eq!(&a[..], &base[start..start + len]);
                }
            }
        }
    }

    #[test]
    fn ascii_variant_masks_the_same_and_sees_every_high_byte() {
        // More cases in ascii.rs, which relies on the answer.
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let plain: Vec<u8> = (0..700u32).map(|i| ((i * 7 + 3) % 128) as u8).collect();
        for start in 0..16 {
            for len in 0..=600usize {
                let offset = (start + len) & 3;
                for high in [None, Some(0), Some(len / 2), Some(len.saturating_sub(1))] {
                    let mut want = plain[start..start + len].to_vec();
                    if let (Some(at), false) = (high, want.is_empty()) {
                        want[at] |= 0x80;
                    }
                    let mut wire = want.clone();
                    apply_mask_reference(&mut wire, key, offset);
                    let mut fast = wire.clone();
                    apply_mask(&mut fast, key, offset);
                    assert_eq!(fast, want, "start {start} len {len} offset {offset}");
                    let ascii = apply_mask_ascii(&mut wire, key, offset);
                    assert_eq!(wire, want, "start {start} len {len} offset {offset}");
                    assert_eq!(ascii, want.is_ascii(), "start {start} len {len} {high:?}");
                }
            }
        }
    }

    #[test]
    fn pieces_equal_whole() {
        let key = [1, 2, 3, 4];
        let data: Vec<u8> = (0..100u8).collect();
        let mut whole = data.clone();
        apply_mask(&mut whole, key, 0);
        for cut in 0..data.len() {
            let mut parts = data.clone();
            let (a, b) = parts.split_at_mut(cut);
            apply_mask(a, key, 0);
            apply_mask(b, key, cut);
            assert_eq!(parts, whole);
        }
    }

    #[test]
    fn rfc_example_hello() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut data = *b"Hello";
        apply_mask(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }
}
