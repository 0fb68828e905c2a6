//! Word-at-a-time masking against the byte-at-a-time reference, at any
//! key, offset, alignment and split point; masking twice is the identity.
//! `apply_mask_ascii` masks the same and says ASCII exactly when the
//! reference result is (the receive path makes a `str` unchecked on it).
//!
//! Input: key (4 bytes), offset (4 bytes LE), alignment (1), split (2 LE),
//! then the data.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::mask::{apply_mask, apply_mask_ascii, apply_mask_reference};

fuzz_target!(|input: &[u8]| {
    if input.len() < 11 {
        return;
    }
    let (head, data) = input.split_at(11);
    let key = [head[0], head[1], head[2], head[3]];
    // Offsets are positions inside a frame payload: kept to 32 bits so the
    // reference's `offset + i` cannot overflow.
    let offset = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let align = usize::from(head[8] % 16);
    let split = usize::from(u16::from_le_bytes([head[9], head[10]])) % (data.len() + 1);

    let mut expect = data.to_vec();
    apply_mask_reference(&mut expect, key, offset);

    let mut fast = data.to_vec();
    apply_mask(&mut fast, key, offset);
    assert_eq!(fast, expect, "whole, offset {offset}");

    // In place inside a larger buffer, starting at an unaligned address.
    let mut big = vec![0xa5u8; align + data.len() + 16];
    big[align..align + data.len()].copy_from_slice(data);
    apply_mask(&mut big[align..align + data.len()], key, offset);
    assert_eq!(
        &big[align..align + data.len()],
        &expect[..],
        "align {align}"
    );
    assert!(
        big[..align]
            .iter()
            .chain(&big[align + data.len()..])
            .all(|&b| b == 0xa5),
        "wrote outside the slice"
    );

    // The variant that also looks for bytes of 0x80 and more, in place at
    // the same unaligned address.
    big[align..align + data.len()].copy_from_slice(data);
    let ascii = apply_mask_ascii(&mut big[align..align + data.len()], key, offset);
    assert_eq!(&big[align..align + data.len()], &expect[..], "ascii variant");
    assert_eq!(ascii, expect.is_ascii(), "ascii variant's answer");

    // Masking twice restores the input.
    apply_mask(&mut fast, key, offset);
    assert_eq!(fast, data);

    // Two pieces, the second at offset + split, equal the whole.
    let mut parts = data.to_vec();
    let (a, b) = parts.split_at_mut(split);
    apply_mask(a, key, offset);
    apply_mask(b, key, offset + split);
    assert_eq!(parts, expect, "split at {split}");
});
