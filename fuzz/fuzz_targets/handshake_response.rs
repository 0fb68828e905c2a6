//! A client that sent a fixed key reads a server's answer. Whatever the
//! bytes, `Response::validate` accepts only a 101 with `Upgrade:
//! websocket`, `Connection: upgrade` and exactly one
//! `Sec-WebSocket-Accept` equal to `accept_key(key)`, no extension (none
//! was offered; a value that is not UTF-8 counts), and a subprotocol only
//! if it was offered. Valid responses built by `write_accept_response` are
//! accepted, and stay subject to the same rule when one byte is changed.
//!
//! Input: flags (1 byte: bit 0 = build a valid response, bits 1-2 =
//! subprotocol choice), max chunk (1), chunk seed (1), byte to change
//! (2, LE), XOR value (1), then the response (or, when built, bytes that
//! follow it on the wire).
#![no_main]

mod common;

use common::{check_lf_head, chunk_sizes, head_end, httparse_end};
use libfuzzer_sys::fuzz_target;
use wsloop::handshake::{
    accept_key, write_accept_response, ClientRequest, Head, Response, ResponseReader,
};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const MAX_BYTES: usize = 1024;
const MAX_HEADERS: usize = 16;

fn tokens<'a>(resp: &'a Response, name: &'a str) -> impl Iterator<Item = String> + 'a {
    resp.headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(&h.value).ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
}

fn check(resp: &Response, req: &ClientRequest) -> Result<Option<String>, wsloop::HandshakeError> {
    let res = resp.validate(req);
    if let Ok(proto) = &res {
        assert_eq!(resp.status, 101);
        assert!(tokens(resp, "upgrade").any(|t| t == "websocket"));
        assert!(tokens(resp, "connection").any(|t| t == "upgrade"));
        let accepts: Vec<&[u8]> = resp
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|h| h.value.as_slice())
            .collect();
        assert_eq!(
            accepts,
            [accept_key(KEY.as_bytes()).as_bytes()],
            "accepted a wrong Sec-WebSocket-Accept"
        );
        // None offered: no extension named, not even one that does not
        // read as UTF-8.
        assert!(resp
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
            .all(|h| h
                .value
                .iter()
                .all(|&b| b == b',' || b.is_ascii_whitespace())));
        if let Some(p) = proto {
            assert!(
                req.protocols.contains(p),
                "accepted unoffered protocol {p:?}"
            );
        }
    }
    res
}

fuzz_target!(|input: &[u8]| {
    let [flags, max_chunk, seed, pos_lo, pos_hi, xor, ref data @ ..] = *input else {
        return;
    };
    let req = ClientRequest {
        host: "example.com".into(),
        target: "/".into(),
        key: KEY.into(),
        protocols: vec!["chat".into(), "superchat".into()],
        headers: Vec::new(),
    };
    let built = flags & 1 == 1;
    let chosen = match (flags >> 1) & 3 {
        0 | 3 => None,
        1 => Some("chat"),
        _ => Some("superchat"),
    };
    let mut wire = Vec::new();
    if built {
        write_accept_response(KEY, chosen, &[], &mut wire);
        let pos = usize::from(u16::from_le_bytes([pos_lo, pos_hi])) % wire.len();
        wire[pos] ^= xor;
    }
    wire.extend_from_slice(data);

    let mut rd = ResponseReader::new();
    let mut fed = 0;
    for n in chunk_sizes(wire.len(), usize::from(max_chunk), u64::from(seed)) {
        fed += n;
        match rd.feed(&wire[fed - n..fed], MAX_BYTES, MAX_HEADERS) {
            Ok(Head::Partial) => {
                assert_eq!(head_end(&wire[..fed], false), None);
                assert!(fed < MAX_BYTES);
            }
            Ok(Head::Complete(resp, rest)) => {
                let end = head_end(&wire[..fed], false).expect("Complete without a blank line");
                assert!(end <= MAX_BYTES);
                assert_eq!(rest, &wire[end..fed]);
                if check_lf_head() {
                    let parsed = httparse_end(&wire[..end], false);
                    assert!(
                        parsed.is_none() || parsed == Some(end),
                        "head parsed up to {parsed:?}, split at {end}: bytes in between dropped"
                    );
                }
                let res = check(&resp, &req);
                if built && xor == 0 {
                    assert_eq!(res, Ok(chosen.map(str::to_owned)), "our own 101 refused");
                }
                return;
            }
            Err(e) => {
                assert!(!(built && xor == 0), "our own 101 refused: {e:?}");
                return;
            }
        }
    }
    assert!(!(built && xor == 0), "our own 101 not complete");
});
