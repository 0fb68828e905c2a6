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
