//! Any bytes, fed to `RequestReader` in fuzzer-chosen chunks with small
//! limits: every answer is Partial (nothing consumed, under the limit),
//! Complete (the head ends at the first blank line, the rest is handed
//! back untouched, and a valid upgrade has a 16-byte key whose 101 response
//! satisfies a client), or an error with a 4xx status.
//!
//! Input: max chunk size (1 byte, 0 = one chunk), chunk seed (1), request.
#![no_main]

mod common;

use common::{b64_decode, check_lf_head, chunk_sizes, head_end, httparse_end};
use libfuzzer_sys::fuzz_target;
use wsloop::handshake::{
    accept_key, parse_request_head, write_accept_response, write_error_response, ClientRequest,
    Head, RequestReader, ResponseReader,
};
use wsloop::HandshakeError;

const MAX_BYTES: usize = 1024;
const MAX_HEADERS: usize = 16;

fn check_error(e: HandshakeError, fed: &[u8]) {
    let status = e.status();
    assert!((400..=499).contains(&status), "{e:?} has status {status}");
    if let HandshakeError::TooLarge { max } = e {
        assert_eq!(max, MAX_BYTES);
        match head_end(fed, true) {
            Some(end) => assert!(end > MAX_BYTES, "head of {end} bytes refused as too large"),
            None => assert!(
                fed.len() >= MAX_BYTES,
                "{} bytes refused as too large",
                fed.len()
            ),
        }
    }
    // The error response is a well-formed HTTP response with that status.
    let mut out = Vec::new();
    write_error_response(e, &mut out);
    let mut rd = ResponseReader::new();
    match rd.feed(&out, 8192, 16) {
        Ok(Head::Complete(resp, body)) => {
            assert_eq!(resp.status, status);
            assert_eq!(
                resp.header("content-length"),
                Some(body.len().to_string().as_str())
            );
        }
        other => panic!("error response for {e:?} does not parse: {other:?}"),
    }
}

fuzz_target!(|input: &[u8]| {
    let [max_chunk, seed, ref data @ ..] = *input else {
        return;
    };
    let mut rd = RequestReader::new();
    let mut fed = Vec::new();
    for n in chunk_sizes(data.len(), usize::from(max_chunk), u64::from(seed)) {
        let chunk = &data[fed.len()..fed.len() + n];
        fed.extend_from_slice(chunk);
        match rd.feed(chunk, MAX_BYTES, MAX_HEADERS) {
            Ok(Head::Partial) => {
                assert_eq!(head_end(&fed, true), None, "head complete but Partial");
                assert_eq!(rd.buffered(), fed.len(), "Partial must keep every byte");
                assert!(
                    rd.buffered() < MAX_BYTES,
                    "{} bytes buffered",
                    rd.buffered()
                );
            }
            Ok(Head::Complete(req, rest)) => {
                let end = head_end(&fed, true).expect("Complete without a blank line");
                assert!(end <= MAX_BYTES);
                assert_eq!(
                    rest,
                    &fed[end..],
                    "bytes after the head must be handed back"
                );
                if check_lf_head() {
                    let parsed = httparse_end(&fed[..end], true);
                    assert!(
                        parsed.is_none() || parsed == Some(end),
                        "head parsed up to {parsed:?}, split at {end}: bytes in between dropped"
                    );
                }
                assert_eq!(
                    parse_request_head(&fed[..end], MAX_HEADERS).as_ref(),
                    Ok(&req)
                );
                assert!(req.headers.len() <= MAX_HEADERS);
                // Accessors never panic.
                let _ = (
                    req.path(),
                    req.query(),
                    req.query_param("a"),
                    req.origin(),
                    req.cookie("s"),
                );
                let _ = (
                    req.protocols().count(),
                    req.extensions().count(),
                    req.wants_upgrade(),
                );
                match req.validate_upgrade() {
                    Ok(key) => {
                        assert_eq!(req.method, "GET");
                        assert_eq!(req.version, 1);
                        assert!(req.wants_upgrade());
                        assert_eq!(req.header("sec-websocket-key"), Some(key));
                        let raw =
                            b64_decode(key).unwrap_or_else(|| panic!("key {key:?} is not base64"));
                        assert_eq!(raw.len(), 16, "key {key:?}");
                        // Our 101 satisfies a client that sent this key and
                        // these protocols.
                        let creq = ClientRequest {
                            key: key.to_owned(),
                            protocols: req.protocols().map(str::to_owned).collect(),
                            ..ClientRequest::default()
                        };
                        let chosen = creq.protocols.first().map(String::as_str);
                        let mut out = Vec::new();
                        write_accept_response(key, chosen, &[], &mut out);
                        assert!(out
                            .windows(accept_key(key.as_bytes()).len())
                            .any(|w| w == accept_key(key.as_bytes()).as_bytes()));
                        match ResponseReader::new().feed(&out, 8192, 16) {
                            Ok(Head::Complete(resp, tail)) => {
                                assert!(tail.is_empty());
                                assert_eq!(resp.validate(&creq), Ok(chosen.map(str::to_owned)));
                            }
                            other => panic!("101 does not parse: {other:?}"),
                        }
                    }
                    Err(e) => check_error(e, &fed),
                }
                return;
            }
            Err(e) => {
                check_error(e, &fed);
                return;
            }
        }
    }
});
