//! Any bytes: `parse_header` is Partial, a header that re-encodes to exactly
//! the bytes it consumed, or an error; and every prefix agrees with the
//! whole (Partial until the header is complete, errors as soon as the bad
//! byte is present).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsloop::frame::{encode_header, parse_header, write_frame, MAX_HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(MAX_HEADER_LEN + 4)];
    let full = parse_header(data);
    match &full {
        Ok(None) => assert!(
            data.len() < MAX_HEADER_LEN,
            "partial with {} bytes",
            data.len()
        ),
        Ok(Some((h, n))) => {
            let n = *n;
            assert_eq!(n, h.encoded_len());
            assert!(n <= data.len() && n <= MAX_HEADER_LEN);
            assert!(h.rsv < 8 && h.payload_len < 1 << 63);
            if h.opcode.is_control() {
                assert!(h.fin && h.payload_len <= 125, "{h:?}");
            }
            // Lengths are minimal, so the encoding is unique.
            let mut out = [0u8; MAX_HEADER_LEN];
            let m = encode_header(h, &mut out);
            assert_eq!(&out[..m], &data[..n]);
            assert_eq!(parse_header(&out[..m]), Ok(Some((*h, n))));
            // write_frame emits the same header and masks the payload.
            if h.payload_len <= 64 {
                let payload: Vec<u8> = (0..h.payload_len as u8).collect();
                let mut wire = Vec::new();
                write_frame(h, &payload, &mut wire);
                assert_eq!(&wire[..n], &data[..n]);
                let mut body = wire[n..].to_vec();
                if let Some(key) = h.mask {
                    wsloop::mask::apply_mask_reference(&mut body, key, 0);
                }
                assert_eq!(body, payload);
            }
        }
        Err(_) => {}
    }
    for i in 0..data.len() {
        let part = parse_header(&data[..i]);
        match (&full, &part) {
            (_, Ok(None)) => {
                if let Ok(Some((_, n))) = full {
                    assert!(i < n, "prefix of {i} bytes partial, header is {n}");
                }
            }
            (Ok(Some((_, n))), Ok(Some(_))) => {
                assert!(i >= *n);
                assert_eq!(part, full);
            }
            (Err(_), Err(_)) => assert_eq!(part, full),
            _ => panic!("prefix of {i} bytes gives {part:?}, whole gives {full:?}"),
        }
    }
});
