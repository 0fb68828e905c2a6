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
    /// Length of the character `finish_pending` completed last.
    done_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a text.
    pub const fn new() -> Self {
        Utf8Validator {
            pending: [0; 4],
            pending_len: 0,
            done_len: 0,
        }
    }

    /// Checks the next piece of text. An error means the text cannot be
    /// valid whatever follows.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            data = &data[self.finish_pending(data)?..];
            if self.pending_len > 0 {
                return Ok(());
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

    /// Checks the next piece of text like [`Utf8Validator::feed`] and
    /// appends the characters it completes to `out`, so a text received in
    /// pieces is checked once and never again as a whole (safe code has no
    /// other way from bytes to a `String` than checking them).
    ///
    /// On an error `out` may hold part of the piece; the text is invalid
    /// anyway.
    pub fn feed_into(&mut self, mut data: &[u8], out: &mut String) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            data = &data[self.finish_pending(data)?..];
            if self.pending_len > 0 {
                return Ok(());
            }
            // The character is complete; the check cannot fail.
            let done = std::str::from_utf8(&self.pending[..self.done_len as usize]);
            out.push_str(done.map_err(|_| InvalidUtf8)?);
        }
        // Check up to the start of a character the piece cuts, so the valid
        // part is one `&str` without a second look at it.
        let (head, tail) = data.split_at(incomplete_tail(data));
        match std::str::from_utf8(head) {
            Ok(s) => out.push_str(s),
            Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
            Err(e) => {
                // Not reached (the cut is at a character start); stay
                // correct anyway.
                let (valid, rest) = head.split_at(e.valid_up_to());
                out.push_str(std::str::from_utf8(valid).map_err(|_| InvalidUtf8)?);
                return self.feed_bytes(rest.iter().chain(tail), out);
            }
        }
        self.feed_bytes(tail.iter(), out)
    }

    /// [`Utf8Validator::feed_into`] for a piece already known to be text
    /// (say, all ASCII): appended as it is, unless it has to finish a
    /// character cut by the previous piece (then it is fed byte by byte,
    /// and fails as `feed_into` would).
    pub fn feed_str(&mut self, s: &str, out: &mut String) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            return self.feed_into(s.as_bytes(), out);
        }
        out.push_str(s);
        Ok(())
    }

    /// Feeds a few bytes one at a time (a character cut by the end of a
    /// piece), so an impossible byte fails now, not when more arrives.
    fn feed_bytes<'a>(
        &mut self,
        bytes: impl Iterator<Item = &'a u8>,
        out: &mut String,
    ) -> Result<(), InvalidUtf8> {
        for &b in bytes {
            if self.pending_len as usize == 4 {
                return Err(InvalidUtf8);
            }
            self.pending[self.pending_len as usize] = b;
            self.pending_len += 1;
            match std::str::from_utf8(&self.pending[..self.pending_len as usize]) {
                Ok(c) => {
                    out.push_str(c);
                    self.pending_len = 0;
                }
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Adds bytes from `data` to the character split across pieces, one at
    /// a time, until it is complete (`pending_len` back to 0, its length in
    /// `done_len`) or `data` runs out. Returns the bytes used.
    fn finish_pending(&mut self, data: &[u8]) -> Result<usize, InvalidUtf8> {
        for (i, &b) in data.iter().enumerate() {
            if self.pending_len as usize == 4 {
                // Four bytes and still incomplete cannot happen in UTF-8.
                return Err(InvalidUtf8);
            }
            self.pending[self.pending_len as usize] = b;
            self.pending_len += 1;
            match std::str::from_utf8(&self.pending[..self.pending_len as usize]) {
                Ok(_) => {
                    self.done_len = self.pending_len;
                    self.pending_len = 0;
                    return Ok(i + 1);
                }
                Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                Err(_) => {}
            }
        }
        Ok(data.len())
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

/// Where a character cut by the end of `data` starts (`data.len()` if
/// none is): the last lead byte among the final three, if its sequence is
/// longer than what follows it. Invalid bytes are left to the checker.
fn incomplete_tail(data: &[u8]) -> usize {
    let len = data.len();
    for i in (len.saturating_sub(3)..len).rev() {
        let b = data[i];
        if b & 0xc0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        let width = match b {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf7 => 4,
            _ => 1,
        };
        return if i + width > len { i } else { len };
    }
    len
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

    /// Feeds `data` cut at `cuts` to both methods: they must fail at the
    /// same piece, and `feed_into` must rebuild a valid text exactly.
    fn both(data: &[u8], cuts: &[usize]) -> Result<bool, usize> {
        let plain = incremental(data, cuts);
        let mut v = Utf8Validator::new();
        let mut out = String::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
            let cut = cut.clamp(start, data.len());
            if v.feed_into(&data[start..cut], &mut out).is_err() {
                assert_eq!(plain, Err(cut), "{data:x?} {cuts:?}");
                return plain;
            }
            start = cut;
        }
        assert_eq!(plain, Ok(v.is_complete()), "{data:x?} {cuts:?}");
        if v.is_complete() {
            assert_eq!(out.as_bytes(), data);
        } else {
            // Everything but the unfinished character.
            assert!(data.starts_with(out.as_bytes()) && data.len() - out.len() <= 3);
        }
        // The receive path's way: ASCII pieces through `feed_str`, the
        // rest through `feed_into`; the same result and the same text.
        let (mut w, mut out2, mut start) = (Utf8Validator::new(), String::new(), 0);
        for &cut in cuts.iter().chain(std::iter::once(&data.len())) {
            let cut = cut.clamp(start, data.len());
            let piece = &data[start..cut];
            let fed = match std::str::from_utf8(piece) {
                Ok(s) if piece.is_ascii() => w.feed_str(s, &mut out2),
                _ => w.feed_into(piece, &mut out2),
            };
            if fed.is_err() {
                assert_eq!(plain, Err(cut), "feed_str: {data:x?} {cuts:?}");
                return plain;
            }
            start = cut;
        }
        assert_eq!(plain, Ok(w.is_complete()), "feed_str: {data:x?} {cuts:?}");
        assert_eq!(out2, out, "feed_str: {data:x?} {cuts:?}");
        plain
    }

    #[test]
    fn feed_into_agrees_with_feed_and_std_on_random_splits() {
        let mut rng = Rng::new(11);
        let chars = ["a", "\x7f", "é", "€", "𝄞", "日本", " "];
        for round in 0..20_000 {
            let mut data = Vec::new();
            for _ in 0..rng.below(40) {
                match rng.below(8) {
                    0 if round % 2 == 0 => data.push(rng.next() as u8),
                    1 => data.extend_from_slice(&[0xf4, 0x90, 0x80][..1 + rng.below(3)]),
                    _ => data.extend_from_slice(chars[rng.below(chars.len())].as_bytes()),
                }
            }
            let ncuts = rng.below(6);
            let mut cuts: Vec<usize> = (0..ncuts).map(|_| rng.below(data.len() + 1)).collect();
            cuts.sort_unstable();
            let expect = std::str::from_utf8(&data).is_ok();
            match both(&data, &cuts) {
                Ok(complete) => assert_eq!(complete, expect, "{data:x?} {cuts:?}"),
                Err(_) => assert!(!expect, "{data:x?} {cuts:?}"),
            }
        }
    }

    #[test]
    fn incomplete_tail_finds_the_cut_character() {
        let euro = "€".as_bytes(); // e2 82 ac
        assert_eq!(incomplete_tail(b""), 0);
        assert_eq!(incomplete_tail(b"abc"), 3);
        assert_eq!(incomplete_tail(euro), 3);
        assert_eq!(incomplete_tail(&euro[..2]), 0);
        assert_eq!(incomplete_tail(b"ab\xe2\x82"), 2);
        assert_eq!(incomplete_tail(b"ab\xf0\x9f\x98"), 2);
        assert_eq!(incomplete_tail(b"ab\xf0\x9f\x98\x80"), 6);
        // Invalid bytes are the checker's business, not a cut.
        assert_eq!(incomplete_tail(b"a\x80\x80\x80"), 4);
        assert_eq!(incomplete_tail(b"a\xff"), 2);
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
            // The same for the variant that keeps the text.
            let (mut v, mut out) = (Utf8Validator::new(), String::new());
            let first = v.feed_into(&text[..cut], &mut out);
            if cut > bad {
                assert!(first.is_err());
            } else {
                assert!(first.is_ok());
                assert!(v.feed_into(&text[cut..], &mut out).is_err());
            }
        }
        let (mut v, mut out) = (Utf8Validator::new(), String::new());
        let failed_at = text
            .iter()
            .position(|b| v.feed_into(std::slice::from_ref(b), &mut out).is_err());
        assert_eq!(failed_at, Some(bad));
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
