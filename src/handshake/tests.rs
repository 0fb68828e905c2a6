//! Unit tests of the opening handshake: parsing in pieces, checks, limits.
use super::reader::find_head_end;
use super::*;
use crate::error::HandshakeError;

const GOOD: &str = "GET /chat?room=a&token=x HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nCookie: a=1; session=abc\r\nSec-WebSocket-Protocol: chat, superchat\r\nSec-WebSocket-Version: 13\r\n\r\n";

fn parse(s: &str) -> Request {
    match RequestReader::new().feed(s.as_bytes(), 8192, 64).unwrap() {
        Head::Complete(r, rest) => {
            assert!(rest.is_empty());
            r
        }
        Head::Partial => panic!("partial"),
    }
}

#[test]
fn rfc_1_3_accept_key() {
    assert_eq!(
        accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    );
}

#[test]
fn good_request_and_accessors() {
    let r = parse(GOOD);
    assert_eq!(r.validate_upgrade(), Ok("dGhlIHNhbXBsZSBub25jZQ=="));
    assert_eq!(r.path(), "/chat");
    assert_eq!(r.query(), Some("room=a&token=x"));
    assert_eq!(r.query_param("token"), Some("x"));
    assert_eq!(r.origin(), Some("http://example.com"));
    assert_eq!(r.cookie("session"), Some("abc"));
    assert_eq!(r.protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
    let mut out = Vec::new();
    write_accept_response(r.validate_upgrade().unwrap(), Some("chat"), &[], &mut out);
    let s = String::from_utf8(out).unwrap();
    assert!(s.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
    assert!(s.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(s.contains("Sec-WebSocket-Protocol: chat\r\n"));
}

#[test]
fn split_at_every_position_and_leftover_kept() {
    let mut wire = GOOD.as_bytes().to_vec();
    wire.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
    for cut in 0..wire.len() {
        let mut rd = RequestReader::new();
        let first = rd.feed(&wire[..cut], 8192, 64).unwrap();
        let (req, rest) = match first {
            Head::Complete(r, rest) => {
                let mut rest = rest;
                rest.extend_from_slice(&wire[cut..]);
                (r, rest)
            }
            Head::Partial => match rd.feed(&wire[cut..], 8192, 64).unwrap() {
                Head::Complete(r, rest) => (r, rest),
                Head::Partial => panic!("partial at {cut}"),
            },
        };
        assert_eq!(req, parse(GOOD));
        assert_eq!(rest, [0x81, 0x80, 1, 2, 3, 4]);
    }
    // Byte by byte.
    let mut rd = RequestReader::new();
    let mut done = None;
    for (i, b) in wire.iter().enumerate() {
        if let Head::Complete(r, rest) = rd.feed(std::slice::from_ref(b), 8192, 64).unwrap() {
            done = Some((i, r, rest));
            break;
        }
    }
    let (i, r, _) = done.unwrap();
    assert_eq!(i, GOOD.len() - 1);
    assert_eq!(r, parse(GOOD));
}

fn reject(s: &str) -> HandshakeError {
    let r = parse(s);
    r.validate_upgrade().unwrap_err()
}

#[test]
fn reject_paths_have_right_status() {
    let cases: Vec<(String, HandshakeError, u16)> = vec![
        (
            GOOD.replace("GET", "POST"),
            HandshakeError::MethodNotGet,
            405,
        ),
        (
            GOOD.replace("HTTP/1.1", "HTTP/1.0"),
            HandshakeError::HttpVersion,
            400,
        ),
        (
            GOOD.replace("Host: server.example.com\r\n", ""),
            HandshakeError::MissingHost,
            400,
        ),
        (
            GOOD.replace("Upgrade: websocket", "Upgrade: h2c"),
            HandshakeError::MissingUpgrade,
            400,
        ),
        (
            GOOD.replace("Connection: Upgrade", "Connection: keep-alive"),
            HandshakeError::MissingConnectionUpgrade,
            400,
        ),
        (
            GOOD.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
            HandshakeError::MissingKey,
            400,
        ),
        (
            GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZQ=="),
            HandshakeError::BadKey,
            400,
        ),
        (
            GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "not base64!!"),
            HandshakeError::BadKey,
            400,
        ),
        (
            GOOD.replace("Version: 13", "Version: 8"),
            HandshakeError::UnsupportedVersion,
            426,
        ),
        (
            GOOD.replace("Sec-WebSocket-Version: 13\r\n", ""),
            HandshakeError::UnsupportedVersion,
            426,
        ),
    ];
    for (req, err, status) in cases {
        assert_eq!(reject(&req), err, "{req}");
        assert_eq!(err.status(), status);
        let mut out = Vec::new();
        write_error_response(err, &mut out);
        let resp = parse_response_head(&out[..find_head_end(&out, 0).unwrap()], 16).unwrap();
        assert_eq!(resp.status, status);
        if status == 426 {
            assert_eq!(resp.header("sec-websocket-version"), Some("13"));
        }
        // RFC 9110 §15.5.6: a 405 names the methods allowed.
        let allow: Vec<_> = resp
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("allow"))
            .collect();
        if status == 405 {
            assert_eq!(allow.len(), 1, "{req}");
            assert_eq!(allow[0].value, b"GET");
        } else {
            assert!(allow.is_empty(), "{req}");
        }
    }
}

#[test]
fn tokens_are_case_insensitive_in_lists() {
    let odd = GOOD
        .replace("Upgrade: websocket", "uPgRaDe: WebSocket")
        .replace("Connection: Upgrade", "connection: keep-alive, UPGRADE");
    assert!(parse(&odd).validate_upgrade().is_ok());
}

#[test]
fn size_and_count_limits() {
    let big = GOOD.replace(
        "Origin:",
        &format!("X-Big: {}\r\nOrigin:", "a".repeat(9000)),
    );
    let mut rd = RequestReader::new();
    assert_eq!(
        rd.feed(big.as_bytes(), 8192, 64).unwrap_err(),
        HandshakeError::TooLarge { max: 8192 }
    );
    let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
    let req = GOOD.replace("Origin:", &format!("{many}Origin:"));
    let mut rd = RequestReader::new();
    assert_eq!(
        rd.feed(req.as_bytes(), 8192, 64).unwrap_err(),
        HandshakeError::TooManyHeaders { max: 64 }
    );
    assert_eq!(HandshakeError::TooManyHeaders { max: 64 }.status(), 431);
    // A partial head that never ends is cut at the limit: by the read
    // that reaches it, not before, not after.
    let mut rd = RequestReader::new();
    for i in 1..=81 {
        assert!(
            matches!(rd.feed(&[b'a'; 100], 8192, 64), Ok(Head::Partial)),
            "read {i}"
        );
    }
    assert_eq!(
        rd.feed(&[b'a'; 100], 8192, 64).unwrap_err(),
        HandshakeError::TooLarge { max: 8192 }
    );
}

/// The reader never holds more than `max_bytes`, however the bytes come
/// (a doubling buffer, or one big read, once went past it), and still
/// hands back everything after a head that fits.
#[test]
fn reader_holds_at_most_the_limit() {
    let mut rd = RequestReader::new();
    assert!(matches!(
        rd.feed(&[b'a'; 5000], 8192, 64),
        Ok(Head::Partial)
    ));
    assert!(matches!(
        rd.feed(&[b'a'; 3000], 8192, 64),
        Ok(Head::Partial)
    ));
    assert!(rd.capacity() <= 8192, "capacity {}", rd.capacity());
    let mut rd = RequestReader::new();
    assert_eq!(
        rd.feed(&[b'a'; 100_000], 8192, 64).unwrap_err(),
        HandshakeError::TooLarge { max: 8192 }
    );
    assert!(rd.capacity() <= 8192, "capacity {}", rd.capacity());
    let mut wire = GOOD.as_bytes().to_vec();
    let stream: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
    wire.extend_from_slice(&stream);
    for cut in [0, 10, GOOD.len() - 1, GOOD.len(), GOOD.len() + 1, 2000] {
        let mut rd = RequestReader::new();
        let (r, rest) = match rd.feed(&wire[..cut], 1024, 64).unwrap() {
            Head::Complete(r, mut rest) => {
                assert_eq!(rest, &wire[GOOD.len()..cut]);
                rest.extend_from_slice(&wire[cut..]);
                (r, rest)
            }
            Head::Partial => match rd.feed(&wire[cut..], 1024, 64).unwrap() {
                Head::Complete(r, rest) => (r, rest),
                Head::Partial => panic!("partial at {cut}"),
            },
        };
        assert_eq!(r, parse(GOOD));
        assert!(
            rest == stream,
            "cut {cut}: {} bytes after the head",
            rest.len()
        );
    }
}

/// Found by fuzzing (fuzz/regressions/handshake_*): httparse accepts
/// bare-LF line ends, so the head must end where httparse says, and the
/// bytes after it must reach the WebSocket stream, not vanish.
#[test]
fn bare_lf_heads_split_where_httparse_ends_them() {
    let req = "GET /chat HTTP/1.1\nHost: x\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\nSec-WebSocket-Version: 13\n\nX\r\n\r\n";
    match RequestReader::new().feed(req.as_bytes(), 8192, 64).unwrap() {
        Head::Complete(r, rest) => {
            assert!(r.validate_upgrade().is_ok());
            assert_eq!(rest, b"X\r\n\r\n");
        }
        Head::Partial => panic!("partial"),
    }
    // A header hidden behind a bare-LF empty line is not part of the head.
    let req = "GET / HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Protocol: chat\n\r\nSec-WebSocket-Version: 8\r\n\r\n";
    match RequestReader::new().feed(req.as_bytes(), 8192, 64).unwrap() {
        Head::Complete(r, rest) => {
            assert_eq!(r.header("sec-websocket-version"), None);
            assert_eq!(rest, b"Sec-WebSocket-Version: 8\r\n\r\n");
        }
        Head::Partial => panic!("partial"),
    }
    let resp: &[u8] = b"HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\n\n\x81\x05Hello\x81\x02\r\n\r\n";
    match ResponseReader::new().feed(resp, 8192, 64).unwrap() {
        Head::Complete(r, rest) => {
            assert_eq!(r.status, 101);
            assert_eq!(&rest[..7], b"\x81\x05Hello");
            assert_eq!(rest.len(), 7 + 6);
        }
        Head::Partial => panic!("partial"),
    }
    // Split at every position: the same result.
    let full = resp;
    for cut in 0..full.len() {
        let mut rd = ResponseReader::new();
        let first = rd.feed(&full[..cut], 8192, 64).unwrap();
        let rest = match first {
            Head::Complete(_, mut rest) => {
                rest.extend_from_slice(&full[cut..]);
                rest
            }
            Head::Partial => match rd.feed(&full[cut..], 8192, 64).unwrap() {
                Head::Complete(_, rest) => rest,
                Head::Partial => panic!("partial at {cut}"),
            },
        };
        assert_eq!(rest.len(), 13, "cut {cut}");
    }
}

#[test]
fn garbage_is_rejected_early() {
    let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01];
    assert_eq!(
        RequestReader::new().feed(&hello, 8192, 64).unwrap_err(),
        HandshakeError::Malformed
    );
}

#[test]
fn client_request_and_response_check() {
    let req = ClientRequest {
        host: "localhost:9001".into(),
        target: "/a?b=c".into(),
        key: generate_key(),
        protocols: vec!["chat".into()],
        headers: vec![("X-Test".into(), "1".into())],
    };
    let mut out = Vec::new();
    req.write(&mut out);
    let parsed = parse(std::str::from_utf8(&out).unwrap());
    assert_eq!(parsed.validate_upgrade(), Ok(req.key.as_str()));
    assert_eq!(parsed.header("x-test"), Some("1"));

    let mut resp = Vec::new();
    write_accept_response(&req.key, Some("chat"), &[], &mut resp);
    let r = parse_response_head(&resp, 16).unwrap();
    assert_eq!(r.validate(&req), Ok(Some("chat".into())));

    let mut resp = Vec::new();
    write_accept_response(&generate_key(), None, &[], &mut resp);
    let r = parse_response_head(&resp, 16).unwrap();
    assert_eq!(r.validate(&req), Err(HandshakeError::BadAccept));

    let mut resp = Vec::new();
    write_accept_response(&req.key, Some("other"), &[], &mut resp);
    let r = parse_response_head(&resp, 16).unwrap();
    assert_eq!(r.validate(&req), Err(HandshakeError::UnrequestedProtocol));

    let mut resp = Vec::new();
    write_accept_response(
        &req.key,
        None,
        &[(
            "Sec-WebSocket-Extensions".into(),
            "permessage-deflate".into(),
        )],
        &mut resp,
    );
    let r = parse_response_head(&resp, 16).unwrap();
    assert_eq!(r.validate(&req), Err(HandshakeError::UnrequestedExtension));

    let mut resp = Vec::new();
    write_http_response(403, &[], b"no", &mut resp);
    let end = find_head_end(&resp, 0).unwrap();
    let r = parse_response_head(&resp[..end], 16).unwrap();
    assert_eq!(r.validate(&req), Err(HandshakeError::Status(403)));
}

/// RFC 6455 §9.1: a 101 whose `Sec-WebSocket-Extensions` the client
/// cannot read (not UTF-8, or an entry that does not parse) fails the
/// handshake, with deflate offered or not.
#[test]
fn unreadable_extensions_answer_fails() {
    let req = ClientRequest {
        host: "h".into(),
        target: "/".into(),
        key: generate_key(),
        ..ClientRequest::default()
    };
    let on = crate::extension::DeflateConfig {
        enabled: true,
        ..Default::default()
    };
    let values: [&[u8]; 3] = [
        b"permessage-deflate\xff",
        b"\xc3(",
        b"permessage-deflate; x y",
    ];
    for value in values {
        let mut resp = Vec::new();
        write_accept_response(&req.key, None, &[], &mut resp);
        let mut r = parse_response_head(&resp, 16).unwrap();
        r.headers.push(reader::Header {
            name: "Sec-WebSocket-Extensions".into(),
            value: value.to_vec(),
        });
        let off = r.validate(&req);
        let with = r.validate_with(&req, &on);
        assert_eq!(off, Err(HandshakeError::MalformedExtensions), "{value:?}");
        assert_eq!(with, Err(HandshakeError::MalformedExtensions), "{value:?}");
    }
}

/// The same for a subprotocol: a `Sec-WebSocket-Protocol` the client
/// cannot read names no protocol it offered (RFC 6455 §4.1), so the
/// handshake fails instead of going on with none.
#[test]
fn unreadable_protocol_answer_fails() {
    let req = ClientRequest {
        host: "h".into(),
        target: "/".into(),
        key: generate_key(),
        protocols: vec!["chat".into()],
        ..ClientRequest::default()
    };
    let mut resp = Vec::new();
    write_accept_response(&req.key, None, &[], &mut resp);
    let mut r = parse_response_head(&resp, 16).unwrap();
    r.headers.push(reader::Header {
        name: "Sec-WebSocket-Protocol".into(),
        value: b"chat\xff".to_vec(),
    });
    assert_eq!(r.validate(&req), Err(HandshakeError::UnrequestedProtocol));
}

// ------------------------------------------------------- fuzz regressions
//
// The inputs in fuzz/regressions/ replayed through the checks their fuzz
// targets make, so that `cargo test` fails on them too, not only the fuzz
// smoke. The input formats are documented in fuzz/fuzz_targets/<target>.rs.

/// The inputs kept in fuzz/regressions/ for `target`, by file name.
pub(crate) fn fuzz_regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut found: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.strip_prefix(target)
                .is_some_and(|rest| rest.starts_with('-') && rest.ends_with(".bin"))
        })
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    found.sort();
    found
}

/// The fuzz targets' read sizes (fuzz/fuzz_targets/common/mod.rs): a
/// regression is cut into the same reads here.
pub(crate) fn chunk_sizes(len: usize, max_chunk: usize, seed: u64) -> Vec<usize> {
    if max_chunk == 0 {
        return vec![len];
    }
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut left = len;
    let mut out = Vec::new();
    while left > 0 {
        let n = ((next() % (max_chunk as u64 + 1)) as usize).min(left);
        out.push(n);
        left -= n;
    }
    out.push(0);
    out
}

/// Where httparse ends the head at the start of `buf`, if it does.
fn httparse_end(buf: &[u8], request: bool) -> Option<usize> {
    let mut hs = vec![httparse::EMPTY_HEADER; 64];
    let status = if request {
        httparse::Request::new(&mut hs).parse(buf)
    } else {
        httparse::Response::new(&mut hs).parse(buf)
    };
    match status {
        Ok(httparse::Status::Complete(n)) => Some(n),
        _ => None,
    }
}

/// fuzz/fuzz_targets/handshake_request.rs, checks and all.
fn replay_handshake_request(input: &[u8]) {
    const MAX_BYTES: usize = 1024;
    const MAX_HEADERS: usize = 16;
    let [max_chunk, seed, ref data @ ..] = *input else {
        return;
    };
    let check_error = |e: HandshakeError, fed: &[u8]| {
        let status = e.status();
        assert!((400..=499).contains(&status), "{e:?} has status {status}");
        if let HandshakeError::TooLarge { max } = e {
            assert_eq!(max, MAX_BYTES);
            match httparse_end(fed, true) {
                Some(end) => assert!(end > MAX_BYTES, "head of {end} bytes refused"),
                None => assert!(fed.len() >= MAX_BYTES, "{} bytes refused", fed.len()),
            }
        }
        let mut out = Vec::new();
        write_error_response(e, &mut out);
        match ResponseReader::new().feed(&out, 8192, 16) {
            Ok(Head::Complete(resp, body)) => {
                assert_eq!(resp.status, status);
                let len = body.len().to_string();
                assert_eq!(resp.header("content-length"), Some(len.as_str()));
            }
            other => panic!("error response for {e:?} does not parse: {other:?}"),
        }
    };
    let mut rd = RequestReader::new();
    let mut fed = Vec::new();
    for n in chunk_sizes(data.len(), usize::from(max_chunk), u64::from(seed)) {
        let chunk = &data[fed.len()..fed.len() + n];
        fed.extend_from_slice(chunk);
        match rd.feed(chunk, MAX_BYTES, MAX_HEADERS) {
            Ok(Head::Partial) => {
                assert_eq!(httparse_end(&fed, true), None, "head complete but Partial");
                assert_eq!(rd.buffered(), fed.len(), "Partial must keep every byte");
                assert!(rd.buffered() < MAX_BYTES);
            }
            Ok(Head::Complete(req, rest)) => {
                let end = httparse_end(&fed, true).expect("Complete where httparse is not");
                assert!(end <= MAX_BYTES);
                assert_eq!(rest, &fed[end..], "bytes after the head handed back");
                assert_eq!(
                    parse_request_head(&fed[..end], MAX_HEADERS),
                    Ok(req.clone())
                );
                match req.validate_upgrade() {
                    Ok(key) => {
                        assert!(req.method == "GET" && req.version == 1 && req.wants_upgrade());
                        let creq = ClientRequest {
                            key: key.to_owned(),
                            protocols: req.protocols().map(str::to_owned).collect(),
                            ..ClientRequest::default()
                        };
                        let chosen = creq.protocols.first().map(String::as_str);
                        let mut out = Vec::new();
                        write_accept_response(key, chosen, &[], &mut out);
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
            Err(e) => return check_error(e, &fed),
        }
    }
}

/// fuzz/fuzz_targets/handshake_response.rs, checks and all.
fn replay_handshake_response(input: &[u8]) {
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const MAX_BYTES: usize = 1024;
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
    let tokens = |resp: &Response, name: &str| -> Vec<String> {
        header_values(resp, name)
            .filter_map(|v| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .collect()
    };
    let mut rd = ResponseReader::new();
    let mut fed = 0;
    for n in chunk_sizes(wire.len(), usize::from(max_chunk), u64::from(seed)) {
        fed += n;
        match rd.feed(&wire[fed - n..fed], MAX_BYTES, 16) {
            Ok(Head::Partial) => {
                assert_eq!(httparse_end(&wire[..fed], false), None);
                assert!(fed < MAX_BYTES);
            }
            Ok(Head::Complete(resp, rest)) => {
                let end =
                    httparse_end(&wire[..fed], false).expect("Complete where httparse is not");
                assert!(end <= MAX_BYTES);
                assert_eq!(rest, &wire[end..fed]);
                let res = resp.validate(&req);
                if let Ok(proto) = &res {
                    assert_eq!(resp.status, 101);
                    assert!(tokens(&resp, "upgrade").iter().any(|t| t == "websocket"));
                    assert!(tokens(&resp, "connection").iter().any(|t| t == "upgrade"));
                    let accepts: Vec<&[u8]> =
                        header_values(&resp, "sec-websocket-accept").collect();
                    assert_eq!(accepts, [accept_key(KEY.as_bytes()).as_bytes()]);
                    assert!(header_values(&resp, "sec-websocket-extensions")
                        .all(|v| v.iter().all(|&b| b == b',' || b.is_ascii_whitespace())));
                    if let Some(p) = proto {
                        assert!(
                            req.protocols.contains(p),
                            "accepted unoffered protocol {p:?}"
                        );
                    }
                }
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
}

fn header_values<'r>(resp: &'r Response, name: &'r str) -> impl Iterator<Item = &'r [u8]> {
    resp.headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_slice())
}

/// Found by fuzzing: bare-LF heads (see
/// `bare_lf_heads_split_where_httparse_ends_them`).
#[test]
fn fuzz_regressions_replay() {
    let requests = fuzz_regressions("handshake_request");
    let responses = fuzz_regressions("handshake_response");
    assert!(
        requests.len() >= 2 && responses.len() >= 2,
        "regressions missing"
    );
    for (name, input) in requests {
        let r = std::panic::catch_unwind(|| replay_handshake_request(&input));
        assert!(r.is_ok(), "{name} fails again");
    }
    for (name, input) in responses {
        let r = std::panic::catch_unwind(|| replay_handshake_response(&input));
        assert!(r.is_ok(), "{name} fails again");
    }
}

/// Every input in fuzz/regressions/ is replayed by a unit test (here, or
/// in `deflate::tests`), not only by the fuzz smoke.
#[test]
fn every_fuzz_regression_is_replayed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        let target = name.rsplit_once('-').map_or("", |(t, _)| t);
        assert!(
            [
                "handshake_request",
                "handshake_response",
                "deflate_connection"
            ]
            .contains(&target),
            "fuzz/regressions/{name}: no unit test replays {target} inputs"
        );
    }
}
