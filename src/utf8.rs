//! Incremental UTF-8 validation across fragments and partial frames.
//!
//! Text may arrive a byte at a time, split anywhere, even inside a character.
//! The validator keeps at most three bytes of an unfinished character and
//! fails at the first byte that can no longer be part of valid UTF-8, so a
//! bad message is rejected before the rest of it arrives (Autobahn 6.4.x).
//! Whole runs are checked with `std::str::from_utf8`, which has a word-wide
//! ASCII fast path and checks each continuation byte's range precisely.

/// The first impossible byte was seen: the text is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Carries the state of a partly received UTF-8 text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Utf8Validator {
    pending: [u8; 4],
    pending_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a text.
    pub const fn new() -> Self {
        Utf8Validator {
            pending: [0; 4],
            pending_len: 0,
        }
    }

    /// Checks the next piece of text. An error means the text cannot be
    /// valid whatever follows.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            // Finish the character split across pieces, one byte at a time.
            while (self.pending_len as usize) < 4 {
                let Some((&b, rest)) = data.split_first() else {
                    return Ok(());
                };
                data = rest;
                self.pending[self.pending_len as usize] = b;
                self.pending_len += 1;
                match std::str::from_utf8(&self.pending[..self.pending_len as usize]) {
                    Ok(_) => {
                        self.pending_len = 0;
                        break;
                    }
                    Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                    Err(_) => {}
                }
            }
            if self.pending_len > 0 {
                // Four bytes and still incomplete cannot happen in UTF-8.
                return Err(InvalidUtf8);
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(InvalidUtf8),
            Err(e) => {
                let tail = &data[e.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
        }
    }

    /// True when no character is left unfinished: the text may end here.
    pub fn is_complete(&self) -> bool {
        self.pending_len == 0
    }

    /// Forgets any state, ready for a new text.
    pub fn reset(&mut self) {
        self.pending_len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::Rng;

    fn incremental(data: &[u8], cuts: &[usize]) -> Result<bool, usize> {
        let mut v = Utf8Validator::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
            let cut = cut.clamp(start, data.len());
            if v.feed(&data[start..cut]).is_err() {
                return Err(cut);
            }
            start = cut;
        }
        Ok(v.is_complete())
    }

    #[test]
    fn agrees_with_std_on_random_splits() {
        let mut rng = Rng::new(7);
        let alphabet: [&[u8]; 12] = [
            b"a",
            b"\x7f",
            "é".as_bytes(),
            "€".as_bytes(),
            "𝄞".as_bytes(),
            b"\xc0\x80",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
            b"\xff",
            b"\x80",
            b"\xe2\x82",
            b"\xf0\x9f",
        ];
        for _ in 0..20_000 {
            let mut data = Vec::new();
            for _ in 0..rng.below(12) {
                if rng.below(4) == 0 {
                    data.push(rng.next() as u8);
                } else {
                    data.extend_from_slice(alphabet[rng.below(alphabet.len())]);
                }
            }
            let ncuts = rng.below(4);
            let mut cuts: Vec<usize> = (0..ncuts).map(|_| rng.below(data.len() + 1)).collect();
            cuts.sort_unstable();
            let expect = std::str::from_utf8(&data).is_ok();
            match incremental(&data, &cuts) {
                Ok(complete) => assert_eq!(complete, expect, "{data:x?} {cuts:?}"),
                Err(_) => assert!(!expect, "{data:x?} {cuts:?}"),
            }
        }
    }

    #[test]
    fn fails_at_first_impossible_byte() {
        // Autobahn 6.4.1: valid prefix, then an impossible 4-byte start
        // sequence F4 90 (above U+10FFFF).
        let text = b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80edited";
        let bad = 12; // index of 0x90
        let mut v = Utf8Validator::new();
        let failed_at = text
            .iter()
            .position(|b| v.feed(std::slice::from_ref(b)).is_err());
        assert_eq!(failed_at, Some(bad));
        // Split in two reads at every position: fails in the read that
        // contains byte 12, never later.
        for cut in 0..=text.len() {
            let mut v = Utf8Validator::new();
            let first = v.feed(&text[..cut]);
            if cut > bad {
                assert!(first.is_err());
            } else {
                assert!(first.is_ok());
                assert!(v.feed(&text[cut..]).is_err());
            }
        }
    }

    #[test]
    fn incomplete_end_is_reported() {
        let mut v = Utf8Validator::new();
        v.feed(b"ab\xe2\x82").unwrap();
        assert!(!v.is_complete());
        v.feed(b"\xac").unwrap();
        assert!(v.is_complete());
    }
}
