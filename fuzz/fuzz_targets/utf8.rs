//! Incremental UTF-8 validation against `std::str::from_utf8`, with the
//! input cut at fuzzer-chosen points. The validator must fail in exactly the
//! piece whose end first makes the prefix impossible to complete (std
//! reports that as an error with `error_len()` set), never earlier, never
//! later; and at the end, "complete" must equal "valid".
//!
//! `feed_into` and `feed_str` (for ASCII pieces) fail in the same piece
//! and keep the same text.
//!
//! Input: number of cuts (1 byte), the cuts (2 bytes LE each), the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::utf8::Utf8Validator;

/// The prefix can no longer become valid UTF-8.
fn impossible(prefix: &[u8]) -> bool {
    matches!(std::str::from_utf8(prefix), Err(e) if e.error_len().is_some())
}

fuzz_target!(|input: &[u8]| {
    let Some((&ncuts, rest)) = input.split_first() else {
        return;
    };
    let ncuts = usize::from(ncuts % 16).min(rest.len() / 2);
    let (cut_bytes, data) = rest.split_at(ncuts * 2);
    let mut cuts: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (data.len() + 1))
        .collect();
    cuts.sort_unstable();
    cuts.push(data.len());

    let whole = std::str::from_utf8(data);
    let mut v = Utf8Validator::new();
    let mut start = 0;
    let mut failed_at = None;
    for &end in &cuts {
        let res = v.feed(&data[start..end]);
        if res.is_err() {
            failed_at = Some(end);
            break;
        }
        assert!(
            !impossible(&data[..end]),
            "no error after {end} bytes of {data:x?}, cuts {cuts:?}"
        );
        // What is kept is the unfinished character: at most three bytes.
        assert_eq!(
            v.is_complete(),
            std::str::from_utf8(&data[..end]).is_ok(),
            "{data:x?} at {end}"
        );
        start = end;
    }
    match (whole, failed_at) {
        (Ok(_), None) => assert!(v.is_complete()),
        (Err(e), None) => {
            assert!(
                e.error_len().is_none(),
                "invalid {data:x?} accepted, cuts {cuts:?}"
            );
            assert!(!v.is_complete(), "incomplete {data:x?} reported complete");
        }
        (Ok(_), Some(end)) => panic!("valid {data:x?} rejected at {end}, cuts {cuts:?}"),
        (Err(e), Some(end)) => {
            assert!(e.error_len().is_some());
            // Failed in the piece that made the text impossible, no later.
            assert!(
                impossible(&data[..end]),
                "failed early at {end}: {data:x?} cuts {cuts:?}"
            );
            let piece_start = cuts.iter().copied().filter(|&c| c < end).max().unwrap_or(0);
            assert!(
                !impossible(&data[..piece_start]),
                "failed late at {end}: {data:x?} cuts {cuts:?}"
            );
            // std's `valid_up_to` is where the bad sequence starts; the first
            // impossible byte is within `error_len` bytes after it (the byte
            // after the sequence when that byte is what rules it out).
            let (start, len) = (e.valid_up_to(), e.error_len().unwrap());
            let first_bad = (start..data.len())
                .find(|&i| impossible(&data[..=i]))
                .unwrap();
            assert!(first_bad <= start + len);
            assert!(piece_start <= first_bad && first_bad < end);
        }
    }

    // A reset validator is as good as new.
    v.reset();
    let res = v.feed(data);
    assert_eq!(res.is_ok() && v.is_complete(), whole.is_ok());

    // `feed_into` keeps the text and fails in the same piece; so does the
    // receive path's mix, ASCII pieces through `feed_str`.
    let (mut a, mut b) = (Utf8Validator::new(), Utf8Validator::new());
    let (mut out_a, mut out_b) = (String::new(), String::new());
    let mut start = 0;
    for &end in &cuts {
        let piece = &data[start..end];
        let ra = a.feed_into(piece, &mut out_a);
        let rb = match std::str::from_utf8(piece) {
            Ok(s) if piece.is_ascii() => b.feed_str(s, &mut out_b),
            _ => b.feed_into(piece, &mut out_b),
        };
        assert_eq!(ra.is_err(), failed_at == Some(end), "feed_into at {end}");
        assert_eq!(rb.is_err(), ra.is_err(), "feed_str at {end}: {data:x?}");
        if ra.is_err() {
            break;
        }
        assert_eq!(out_a, out_b, "{data:x?} at {end}");
        start = end;
    }
    if whole.is_ok() {
        assert_eq!(out_a.as_bytes(), data);
    }
});
