//! Framing abuse over real sockets: every RFC 6455 "MUST fail" case gets
//! its close code (1002, 1007, 1009) on the wire and in `on_close`,
//! the edges just inside the rules are accepted, a declared length of
//! 2^63 or of a gigabyte followed by nothing allocates nothing of that
//! size, 100,000 one-byte fragments and interleaved control frames work,
//! UTF-8 fails at the first impossible byte without waiting for the rest
//! of the frame, and bad close frames are refused.
//!
//! tests/server_limits.rs already sends an unmasked frame, RSV1, a bare
//! continuation, three invalid UTF-8 texts and messages over
//! max_message_size; src/protocol/tests.rs checks the same errors on the
//! sans-IO core. Here it is the whole server, and the cases they lack.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use wsloop::Config;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A client frame built by hand: first byte as given (FIN, RSV, opcode),
/// the length in the encoding asked for (`len_bytes` 0, 2 or 8 extra
/// bytes, whatever the payload's size), masked with MASK.
fn raw(b0: u8, len_bytes: usize, declared: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![b0];
    match len_bytes {
        0 => v.push(0x80 | declared as u8),
        2 => {
            v.push(0x80 | 126);
            v.extend((declared as u16).to_be_bytes());
        }
        8 => {
            v.push(0x80 | 127);
            v.extend(declared.to_be_bytes());
        }
        _ => unreachable!(),
    }
    v.extend(MASK);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    v
}

/// A masked frame with the given FIN/RSV/opcode byte and minimal length.
fn frame(b0: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    match n {
        0..=125 => raw(b0, 0, n as u64, payload),
        126..=65535 => raw(b0, 2, n as u64, payload),
        _ => raw(b0, 8, n as u64, payload),
    }
}

const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONT: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xa;

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Sends `bytes` on a fresh connection and expects close `code` (and EOF
/// after our reply) within two seconds.
fn expect_code(addr: SocketAddr, name: &str, bytes: &[u8], code: u16) {
    let mut c = connect(addr);
    c.set_timeout(Duration::from_secs(2));
    let _ = c.try_send_raw(bytes);
    // Echoes of complete messages sent before the bad part come first.
    let got = loop {
        match c.try_recv() {
            Ok(Some(Msg::Close(code, reason))) => break (code, reason),
            Ok(Some(Msg::Text(_) | Msg::Binary(_) | Msg::Pong(_))) => continue,
            other => panic!("{name}: expected close {code}, got {other:?}"),
        }
    };
    assert_eq!(got.0, Some(code), "{name}: {got:?}");
    let _ = c.try_send_raw(&frame(FIN | CLOSE, &close_payload(code, "")));
    c.expect_eof(Duration::from_secs(2));
}

#[test]
fn every_must_fail_case_gets_its_close_code() {
    let rec = Recorder::default();
    let mut cfg = Config::default();
    cfg.max_frame_size = 1 << 20;
    cfg.max_message_size = 1 << 20;
    let srv = start_server(cfg, rec.clone());
    let a = srv.addr;
    let mut cases: Vec<(String, Vec<u8>, u16)> = vec![
        ("RSV2".into(), frame(FIN | 0x20 | TEXT, b"x"), 1002),
        ("RSV3".into(), frame(FIN | 0x10 | TEXT, b"x"), 1002),
        ("RSV1 on a ping".into(), frame(FIN | 0x40 | PING, b""), 1002),
        (
            "all RSV bits on a close".into(),
            frame(FIN | 0x70 | CLOSE, b""),
            1002,
        ),
        ("fragmented ping".into(), frame(PING, b"p"), 1002),
        (
            "fragmented close".into(),
            frame(CLOSE, &close_payload(1000, "")),
            1002,
        ),
        (
            "ping of 126 bytes".into(),
            frame(FIN | PING, &[b'p'; 126]),
            1002,
        ),
        (
            "pong of 126 bytes".into(),
            frame(FIN | PONG, &[b'p'; 126]),
            1002,
        ),
        (
            "close of 126 bytes".into(),
            frame(FIN | CLOSE, &close_payload(1000, &"r".repeat(124))),
            1002,
        ),
        (
            "ping with 64-bit length 5".into(),
            raw(FIN | PING, 8, 5, b"hello"),
            1002,
        ),
        (
            "16-bit length 5".into(),
            raw(FIN | TEXT, 2, 5, b"hello"),
            1002,
        ),
        (
            "64-bit length 200".into(),
            raw(FIN | BINARY, 8, 200, &[1; 200]),
            1002,
        ),
        (
            "64-bit length 65535".into(),
            raw(FIN | BINARY, 8, 65535, &[]),
            1002,
        ),
        (
            "length 2^63".into(),
            raw(FIN | BINARY, 8, 1 << 63, &[]),
            1002,
        ),
        (
            "length 2^64-1".into(),
            raw(FIN | BINARY, 8, u64::MAX, &[]),
            1002,
        ),
        // Inside the 63 bits but above max_frame_size: 1009 before any
        // payload arrives.
        (
            "length 2^63-1".into(),
            raw(FIN | BINARY, 8, (1 << 63) - 1, &[]),
            1009,
        ),
        (
            "one over max_frame_size".into(),
            raw(FIN | BINARY, 8, (1 << 20) + 1, &[]),
            1009,
        ),
        (
            "text inside a fragmented message".into(),
            cat(&[frame(TEXT, b"a"), frame(FIN | TEXT, b"b")]),
            1002,
        ),
        (
            "binary inside a fragmented text".into(),
            cat(&[frame(TEXT, b"a"), frame(BINARY, b"b")]),
            1002,
        ),
        (
            "continuation after a finished message".into(),
            cat(&[frame(FIN | TEXT, b"a"), frame(FIN | CONT, b"b")]),
            1002,
        ),
        (
            "fragments over max_message_size".into(),
            cat(&[
                frame(BINARY, &vec![0; 1 << 19]),
                raw(CONT, 8, (1 << 19) + 1, &[]),
            ]),
            1009,
        ),
        (
            "close with 1 byte".into(),
            frame(FIN | CLOSE, &[0x03]),
            1002,
        ),
        (
            "close reason not UTF-8".into(),
            frame(FIN | CLOSE, &[0x03, 0xe8, 0xff, 0xfe]),
            1007,
        ),
        (
            "close reason with a surrogate".into(),
            frame(FIN | CLOSE, &[0x03, 0xe8, b'o', b'k', 0xed, 0xa0, 0x80]),
            1007,
        ),
        (
            "overlong '/'".into(),
            frame(FIN | TEXT, &[0xc0, 0xaf]),
            1007,
        ),
        (
            "5-byte form".into(),
            frame(FIN | TEXT, &[0xf8, 0x88, 0x80, 0x80, 0x80]),
            1007,
        ),
        (
            "above U+10FFFF".into(),
            frame(FIN | TEXT, &[0xf4, 0x90, 0x80, 0x80]),
            1007,
        ),
        (
            "lone continuation byte".into(),
            frame(FIN | TEXT, b"ab\x80cd"),
            1007,
        ),
        (
            "fragmented text ending mid-character".into(),
            cat(&[
                frame(TEXT, "€".as_bytes()),
                frame(FIN | CONT, &"€".as_bytes()[..2]),
            ]),
            1007,
        ),
        (
            "character split across fragments, then broken".into(),
            cat(&[frame(TEXT, &[0xe2, 0x82]), frame(FIN | CONT, &[0x41])]),
            1007,
        ),
    ];
    for op in [3u8, 4, 5, 6, 7, 11, 12, 13, 14, 15] {
        cases.push((format!("opcode {op}"), frame(FIN | op, b""), 1002));
    }
    for code in [
        0u16, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        cases.push((
            format!("close code {code}"),
            frame(FIN | CLOSE, &close_payload(code, "")),
            1002,
        ));
    }
    for (name, bytes, code) in &cases {
        expect_code(a, name, bytes, *code);
    }
    wait_until(Duration::from_secs(3), "every on_close", || {
        rec.closes().len() == cases.len()
    });
    let got: Vec<u16> = rec.closes().iter().map(|c| c.code.0).collect();
    let want: Vec<u16> = cases.iter().map(|c| c.2).collect();
    assert_eq!(got, want, "on_close codes, in case order");
    assert!(
        rec.closes().iter().all(|c| !c.clean),
        "a failed connection reported clean"
    );
    assert_eq!(
        rec.messages(),
        1,
        "only the one good first message was handled"
    );
}

#[test]
fn edges_inside_the_rules_are_accepted() {
    let srv = start_server(Config::default(), Recorder::default());
    let mut c = connect(srv.addr);
    // Control frames of exactly 125 bytes, in and out.
    c.send_raw(&frame(FIN | PING, &[b'q'; 125]));
    assert_eq!(c.recv(), Msg::Pong(vec![b'q'; 125]));
    // An unsolicited pong is ignored.
    c.send_raw(&frame(FIN | PONG, b"unasked"));
    // Empty text, empty binary, empty fragments around a character.
    c.send_raw(&frame(FIN | TEXT, b""));
    c.expect_text("");
    c.send_raw(&frame(FIN | BINARY, b""));
    c.expect_binary(b"");
    c.send_raw(&cat(&[
        frame(TEXT, b""),
        frame(CONT, &[0xf0, 0x9f]),
        frame(CONT, b""),
        frame(FIN | CONT, &[0x98, 0x80]),
    ]));
    c.expect_text("😀");
    // Lengths at the encoding boundaries.
    for n in [125usize, 126, 65535, 65536] {
        c.send_raw(&frame(FIN | BINARY, &pattern(n, n as u8)));
        c.expect_binary(&pattern(n, n as u8));
    }
    // U+FFFF and U+10FFFF are valid.
    c.send_raw(&frame(FIN | TEXT, "\u{ffff}\u{10ffff}".as_bytes()));
    c.expect_text("\u{ffff}\u{10ffff}");
    c.close_and_wait(1000);

    // Close codes that may be sent are echoed; a 123-byte reason is fine.
    for code in [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 4999,
    ] {
        let mut c = connect(srv.addr);
        c.send_raw(&frame(FIN | CLOSE, &close_payload(code, &"r".repeat(123))));
        assert_eq!(c.expect_close().0, Some(code), "close code {code}");
        c.expect_eof(Duration::from_secs(2));
    }
    // An empty close gets an empty close.
    let mut c = connect(srv.addr);
    c.send_raw(&frame(FIN | CLOSE, b""));
    assert_eq!(c.recv(), Msg::Close(None, String::new()));
    c.expect_eof(Duration::from_secs(2));
}

/// Frames that declare 2^63 bytes, or 1 GiB (allowed by the limits) and
/// then send next to nothing, must not make the server reserve their
/// declared size: 20 such connections leave its virtual memory within a
/// few MiB, and everyone else is served.
#[test]
fn huge_declared_lengths_allocate_nothing_of_that_size() {
    let srv = BinServer::spawn(&["--max-frame", "1G", "--max-message", "1G"]);
    let a = srv.addr;
    let mut warm = connect(a);
    warm.send_binary(&pattern(100_000, 1));
    warm.expect_binary(&pattern(100_000, 1));
    let data0 = proc_status_kib(srv.pid(), "VmData").unwrap();
    let rss0 = srv.rss_kib();

    let mut hanging = Vec::new();
    for i in 0..20u8 {
        let mut c = connect(a);
        let op = if i % 2 == 0 { BINARY } else { TEXT };
        // 1 GiB declared, 10 bytes sent; half as a first fragment.
        let fin = if i % 4 < 2 { FIN } else { 0 };
        c.send_raw(&raw(fin | op, 8, 1 << 30, b"0123456789"));
        hanging.push(c);
    }
    // The server has read each of them (and so handled it: a connection's
    // bytes are parsed as soon as they are read); an echo sent after that
    // comes back after the last of them was handled.
    wait_until(
        Duration::from_secs(10),
        "the server to read the 20 frame starts",
        || {
            let q = server_socket_queues(a.port());
            q.len() >= 21 && q.iter().all(|q| q.0 == 0)
        },
    );
    warm.send_binary(b"after them");
    warm.expect_binary(b"after them");
    let data1 = proc_status_kib(srv.pid(), "VmData").unwrap();
    let rss1 = srv.rss_kib();
    eprintln!(
        "20 x 1 GiB declared: VmData {} -> {} MiB, VmRSS {} -> {} MiB",
        data0 >> 10,
        data1 >> 10,
        rss0 >> 10,
        rss1 >> 10
    );
    assert!(
        data1 < data0 + (64 << 10),
        "VmData grew by {} MiB for 20 frames that declared 1 GiB and sent 10 bytes",
        (data1 - data0) >> 10
    );
    assert!(
        rss1 < rss0 + (32 << 10),
        "VmRSS grew by {} MiB",
        (rss1 - rss0) >> 10
    );

    // 2^63 fails at once; so does 2^64-1.
    expect_code(a, "2^63", &raw(FIN | BINARY, 8, 1 << 63, &[]), 1002);
    expect_code(a, "2^64-1", &raw(FIN | BINARY, 8, u64::MAX, &[]), 1002);
    // Above the (1 GiB) limit: 1009 at once, no payload needed.
    expect_code(a, "2^62", &raw(FIN | BINARY, 8, 1 << 62, &[]), 1009);

    // Others are served; the hanging frames' peers can leave.
    warm.send_text("still served");
    warm.expect_text("still served");
    for c in &hanging {
        half_close(&c.stream);
    }
    for mut c in hanging {
        c.expect_eof(Duration::from_secs(3));
    }
    warm.close_and_wait(1000);
    srv.assert_no_panic();
}

/// 100,000 one-byte fragments (under the default max_fragments of
/// 131,072) with a ping after every 1,000th: 100 pongs in order, then the
/// whole message. 140,000 empty fragments hit max_fragments: 1009.
#[test]
fn hundred_thousand_one_byte_fragments() {
    let rec = Recorder::default();
    let srv = start_server(Config::default(), rec.clone());
    let mut c = connect(srv.addr);
    const N: usize = 100_000;
    let text: Vec<u8> = (0..N).map(|i| b'a' + (i % 26) as u8).collect();
    let mut bytes = Vec::with_capacity(N * 7 + 100 * 12);
    for (i, b) in text.iter().enumerate() {
        let b0 = match (i, i == N - 1) {
            (0, _) => TEXT,
            (_, true) => FIN | CONT,
            _ => CONT,
        };
        bytes.extend(frame(b0, std::slice::from_ref(b)));
        if i % 1000 == 999 && i != N - 1 {
            bytes.extend(frame(FIN | PING, format!("{i}").as_bytes()));
        }
    }
    let t = Instant::now();
    let mut w = c.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&bytes));
    c.set_timeout(Duration::from_secs(10));
    for k in 0..99 {
        let i = k * 1000 + 999;
        assert_eq!(c.recv(), Msg::Pong(format!("{i}").into_bytes()), "pong {k}");
    }
    c.expect_text(std::str::from_utf8(&text).unwrap());
    writer.join().unwrap().unwrap();
    eprintln!("{N} one-byte fragments echoed in {:?}", t.elapsed());

    // Empty fragments past max_fragments: refused, whatever their size.
    let mut empty = frame(BINARY, b"");
    for _ in 0..140_000 {
        empty.extend(frame(CONT, b""));
    }
    empty.extend(frame(FIN | CONT, b""));
    let _ = c.try_send_raw(&empty);
    assert_eq!(c.expect_close().0, Some(1009));
    c.close(1009, "");
    c.expect_eof(Duration::from_secs(5));
    assert_eq!(rec.messages(), 1);
}

/// Pings, unsolicited pongs and a ping split across writes between the
/// fragments of a message; then a close in the middle of a fragmented
/// message: answered, and the half message is not delivered.
#[test]
fn control_frames_interleaved_with_fragments() {
    let rec = Recorder::default();
    let srv = start_server(Config::default(), rec.clone());
    let mut c = connect(srv.addr);
    let ping = frame(FIN | PING, b"split ping");
    c.send_raw(&cat(&[
        frame(BINARY, &[1, 2]),
        frame(FIN | PONG, b"unasked"),
        frame(CONT, &[3]),
        ping[..3].to_vec(),
    ]));
    // The second part only once the server has read the first.
    wait_until(Duration::from_secs(10), "the server to read", || {
        server_socket_queues(srv.addr.port())
            .iter()
            .all(|q| q.0 == 0)
    });
    c.send_raw(&cat(&[
        ping[3..].to_vec(),
        frame(FIN | PING, b""),
        frame(CONT, &[4, 5]),
        frame(FIN | CONT, &[6]),
    ]));
    assert_eq!(c.recv(), Msg::Pong(b"split ping".to_vec()));
    assert_eq!(c.recv(), Msg::Pong(Vec::new()));
    c.expect_binary(&[1, 2, 3, 4, 5, 6]);

    // A close inside a fragmented text: the close is answered, the text is
    // dropped.
    c.send_raw(&cat(&[
        frame(TEXT, b"never "),
        frame(CONT, b"finished"),
        frame(FIN | CLOSE, &close_payload(1000, "mid-message")),
    ]));
    assert_eq!(c.recv(), Msg::Close(Some(1000), String::new()));
    c.expect_eof(Duration::from_secs(10));
    wait_until(Duration::from_secs(10), "on_close", || {
        rec.closes().len() == 1
    });
    assert_eq!(rec.messages(), 1, "the unfinished text was delivered");
    let info = &rec.closes()[0];
    assert!(info.clean && info.code.0 == 1000, "{info:?}");
}

/// Invalid UTF-8 fails with 1007 as soon as its first impossible byte
/// arrives: the frame (1 MiB declared) or the message (more fragments
/// announced) is far from complete when the close comes back.
#[test]
fn invalid_utf8_detected_at_the_first_impossible_byte() {
    let srv = start_server(Config::default(), Recorder::default());
    let a = srv.addr;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // One big frame, only its start sent.
        (
            "0xff in a 1 MiB frame",
            raw(FIN | TEXT, 8, 1 << 20, b"valid text \xff"),
        ),
        // E0 must be followed by A0..BF: the second byte is impossible.
        (
            "E0 80 in a 1 MiB frame",
            raw(FIN | TEXT, 8, 1 << 20, b"ok \xe0\x80"),
        ),
        // ED A0: a surrogate, impossible at its second byte.
        (
            "surrogate start",
            raw(FIN | TEXT, 8, 1 << 20, b"ok \xed\xa0"),
        ),
        // F4 90: above U+10FFFF at the second byte.
        ("F4 90", raw(FIN | TEXT, 8, 1 << 20, b"\xf4\x90")),
        // A first fragment (more to come) that is already wrong.
        ("first fragment", frame(TEXT, b"abc\xc0")),
        // Wrong in a continuation of a message that goes on.
        (
            "middle fragment",
            cat(&[frame(TEXT, b"abc"), frame(CONT, b"\xe2\x82\x41")]),
        ),
    ];
    for (name, bytes) in &cases {
        let t = Instant::now();
        let mut c = connect(a);
        c.set_timeout(Duration::from_secs(10));
        c.send_raw(bytes);
        match c.try_recv() {
            Ok(Some(Msg::Close(Some(1007), _))) => {}
            other => panic!("{name}: expected close 1007 before the rest arrived, got {other:?}"),
        }
        eprintln!("{name}: 1007 after {:?}", t.elapsed());
        drop(c);
    }
    // A valid prefix that stops mid-character is not an error yet: the
    // rest is sent once the server has read (and checked) the prefix, and
    // the text arrives, not a 1007.
    let mut c = connect(a);
    c.send_raw(&raw(FIN | TEXT, 0, 4, &[]));
    c.send_raw(&mask_continue(b"a\xe2\x82", 0));
    wait_until(
        Duration::from_secs(10),
        "the server to read the prefix",
        || server_socket_queues(a.port()).iter().all(|q| q.0 == 0),
    );
    c.send_raw(&mask_continue(b"\xac", 3));
    c.expect_text("a€");
    // The same across fragments, with a ping after the incomplete first
    // one: its pong comes first, then the whole text.
    c.send_raw(&cat(&[frame(TEXT, b"b\xe2\x82"), frame(FIN | PING, b"p")]));
    assert_eq!(c.recv(), Msg::Pong(b"p".to_vec()));
    c.send_raw(&frame(FIN | CONT, b"\xac"));
    c.expect_text("b€");
    c.close_and_wait(1000);
}

/// Payload bytes masked as if they started at `offset` of a frame masked
/// with MASK.
fn mask_continue(p: &[u8], offset: usize) -> Vec<u8> {
    p.iter()
        .enumerate()
        .map(|(i, b)| b ^ MASK[(offset + i) % 4])
        .collect()
}
