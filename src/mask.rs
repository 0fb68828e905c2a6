//! Masking (RFC 6455 §5.3): XOR with a 4-byte key, in place.
//!
//! `offset` is the position of `data[0]` within the frame payload, so a
//! payload can be unmasked in pieces as it arrives.

/// Masks or unmasks `data` in place, a 64-bit word at a time.
///
/// Payloads of 128 bytes or more go to `mask_wide`, whose loop the
/// compiler vectorises; the short path stays small enough to inline into
/// the receive path (most frames are short).
#[inline]
pub fn apply_mask(data: &mut [u8], key: [u8; 4], offset: usize) {
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
    if !wide.is_empty() {
        mask_wide(wide, word);
    }
    let mut words = rest.chunks_exact_mut(8);
    for w in &mut words {
        let v = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) ^ word;
        w.copy_from_slice(&v.to_ne_bytes());
    }
    // Whole words are a multiple of 4 bytes, so the key phase is unchanged.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= k[i & 3];
    }
}

/// XORs whole 128-byte chunks with `word` (the key, twice).
///
/// On the baseline x86-64 target (SSE2) this compiles to eight unaligned
/// 16-byte load/xor/store triples per chunk (27 instructions per 128 bytes;
/// the 32-byte chunks before gave 15 per 64). Built with `-C target-cpu`
/// of a machine with AVX2 it becomes four 32-byte `vxorps` per chunk. Safe
/// code cannot choose AVX2 at run time (calling a `#[target_feature]`
/// function is `unsafe`), so the portable build stays at 16 bytes a step.
#[inline(never)]
fn mask_wide(data: &mut [u8], word: u64) {
    for chunk in data.chunks_exact_mut(128) {
        for w in chunk.chunks_exact_mut(8) {
            let v = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]) ^ word;
            w.copy_from_slice(&v.to_ne_bytes());
        }
    }
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
