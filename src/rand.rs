//! Unpredictable bytes for handshake keys and masking keys.
//!
//! RFC 6455 §10.3 wants masking keys an attacker cannot predict. A syscall
//! per frame is slow, so each thread runs a ChaCha20 keystream (RFC 8439
//! block function) keyed from the OS (getrandom) and rekeyed every 1 MiB.

use std::cell::RefCell;

const REKEY_BLOCKS: u32 = 16 * 1024;

struct ChaCha {
    key: [u32; 8],
    counter: u32,
    block: [u8; 64],
    used: usize,
}

fn quarter(s: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(16);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(12);
    s[a] = s[a].wrapping_add(s[b]);
    s[d] = (s[d] ^ s[a]).rotate_left(8);
    s[c] = s[c].wrapping_add(s[d]);
    s[b] = (s[b] ^ s[c]).rotate_left(7);
}

/// The ChaCha20 block function (RFC 8439 §2.3).
fn chacha20_block(key: &[u32; 8], counter: u32, nonce: [u32; 3]) -> [u8; 64] {
    let mut init = [0u32; 16];
    init[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
    init[4..12].copy_from_slice(key);
    init[12] = counter;
    init[13..].copy_from_slice(&nonce);
    let mut s = init;
    for _ in 0..10 {
        quarter(&mut s, 0, 4, 8, 12);
        quarter(&mut s, 1, 5, 9, 13);
        quarter(&mut s, 2, 6, 10, 14);
        quarter(&mut s, 3, 7, 11, 15);
        quarter(&mut s, 0, 5, 10, 15);
        quarter(&mut s, 1, 6, 11, 12);
        quarter(&mut s, 2, 7, 8, 13);
        quarter(&mut s, 3, 4, 9, 14);
    }
    let mut out = [0u8; 64];
    for i in 0..16 {
        out[i * 4..i * 4 + 4].copy_from_slice(&s[i].wrapping_add(init[i]).to_le_bytes());
    }
    out
}

fn os_key() -> [u32; 8] {
    let mut raw = [0u8; 32];
    // Without OS randomness a masking key would be predictable: that is a
    // security failure, not something to paper over.
    getrandom::fill(&mut raw).expect("the OS random number generator failed");
    let mut key = [0u32; 8];
    for (k, c) in key.iter_mut().zip(raw.chunks_exact(4)) {
        *k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    key
}

impl ChaCha {
    fn new() -> Self {
        ChaCha {
            key: os_key(),
            counter: 0,
            block: [0; 64],
            used: 64,
        }
    }

    fn fill(&mut self, out: &mut [u8]) {
        for b in out {
            if self.used == 64 {
                if self.counter == REKEY_BLOCKS {
                    self.key = os_key();
                    self.counter = 0;
                }
                self.block = chacha20_block(&self.key, self.counter, [0; 3]);
                self.counter += 1;
                self.used = 0;
            }
            *b = self.block[self.used];
            self.used += 1;
        }
    }
}

thread_local! {
    static RNG: RefCell<Option<ChaCha>> = const { RefCell::new(None) };
}

/// Fills `out` with unpredictable bytes.
pub fn fill(out: &mut [u8]) {
    RNG.with(|r| r.borrow_mut().get_or_insert_with(ChaCha::new).fill(out));
}

/// A fresh masking key.
pub fn mask_key() -> [u8; 4] {
    let mut k = [0u8; 4];
    fill(&mut k);
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc8439_block_test_vector() {
        // RFC 8439 §2.3.2.
        let key_bytes: Vec<u8> = (0..32).collect();
        let mut key = [0u32; 8];
        for (k, c) in key.iter_mut().zip(key_bytes.chunks_exact(4)) {
            *k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        }
        let nonce = [0x0900_0000, 0x4a00_0000, 0];
        let out = chacha20_block(&key, 1, nonce);
        assert_eq!(
            &out[..16],
            &[
                0x10, 0xf1, 0xe7, 0xe4, 0xd1, 0x3b, 0x59, 0x15, 0x50, 0x0f, 0xdd, 0x1f, 0xa3, 0x20,
                0x71, 0xc4
            ]
        );
        assert_eq!(&out[48..52], &[0xb5, 0x12, 0x9c, 0xd1]);
        assert_eq!(&out[60..], &[0xa2, 0x50, 0x3c, 0x4e]);
    }

    #[test]
    fn keys_differ() {
        let keys: std::collections::HashSet<[u8; 4]> = (0..1000).map(|_| mask_key()).collect();
        assert!(keys.len() > 990);
    }
}
