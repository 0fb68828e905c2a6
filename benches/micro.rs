//! Micro benchmarks of the pure codec and the sans-IO connection.
//!
//! ```text
//! cargo bench --bench micro                      # full run
//! cargo bench --bench micro -- --quick           # a quick look
//! cargo bench --bench micro -- mask/             # one group
//! ```
//!
//! Groups: `header_parse`, `mask` (word-wide `apply_mask` against the
//! byte-at-a-time `apply_mask_reference`), `utf8`, `frame_encode`,
//! `handshake_parse`, `echo` (a server `Connection` receiving one masked
//! client frame and sending the message back, output drained). Throughput
//! is in payload bytes where that means something. For comparing two
//! versions of a hot path on this noisy machine, instruction counts from
//! `valgrind --tool=callgrind` are steadier than these timings.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wsloop::frame::{
    encode_header, parse_header, write_frame, FrameHeader, OpCode, MAX_HEADER_LEN,
};
use wsloop::handshake::{Head, RequestReader};
use wsloop::mask::{apply_mask, apply_mask_reference};
use wsloop::utf8::Utf8Validator;
use wsloop::{Config, Connection, Event, Role};

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// Deterministic filler bytes.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 7)) as u8)
        .collect()
}

/// A complete masked client frame, as a browser would send it.
fn client_frame(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let h = FrameHeader {
        mask: Some(KEY),
        ..FrameHeader::new(opcode, payload.len() as u64)
    };
    let mut out = Vec::new();
    write_frame(&h, payload, &mut out);
    out
}

fn header_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("header_parse");
    // (name, payload length): 7-bit, 16-bit and 64-bit length encodings.
    for (name, len) in [
        ("masked_32B", 32u64),
        ("masked_16KiB", 16 << 10),
        ("masked_1MiB", 1 << 20),
    ] {
        let h = FrameHeader {
            mask: Some(KEY),
            ..FrameHeader::new(OpCode::Binary, len)
        };
        let mut buf = [0u8; MAX_HEADER_LEN];
        let n = encode_header(&h, &mut buf);
        g.bench_function(name, |b| b.iter(|| parse_header(black_box(&buf[..n]))));
    }
    // Every prefix of a 14-byte header: the "need more bytes" path.
    let h = FrameHeader {
        mask: Some(KEY),
        ..FrameHeader::new(OpCode::Binary, 1 << 20)
    };
    let mut buf = [0u8; MAX_HEADER_LEN];
    encode_header(&h, &mut buf);
    g.bench_function("all_prefixes_of_14B", |b| {
        b.iter(|| {
            for n in 0..=MAX_HEADER_LEN {
                let _ = black_box(parse_header(black_box(&buf[..n])));
            }
        })
    });
    g.finish();
}

fn mask(c: &mut Criterion) {
    let mut g = c.benchmark_group("mask");
    for (name, size) in [
        ("16B", 16usize),
        ("1KiB", 1 << 10),
        ("64KiB", 64 << 10),
        ("1MiB", 1 << 20),
    ] {
        let mut data = pattern(size);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("apply_mask", name), &size, |b, _| {
            b.iter(|| apply_mask(black_box(&mut data), black_box(KEY), 0))
        });
        // Odd offset and unaligned start: the realistic case for a payload
        // unmasked in pieces inside a read buffer.
        g.bench_with_input(
            BenchmarkId::new("apply_mask_unaligned", name),
            &size,
            |b, _| {
                let mut shifted = pattern(size + 1);
                b.iter(|| apply_mask(black_box(&mut shifted[1..]), black_box(KEY), 3))
            },
        );
        // The byte loop is slow on large sizes; 64 KiB is enough to compare.
        if size <= 64 << 10 {
            g.bench_with_input(
                BenchmarkId::new("apply_mask_reference", name),
                &size,
                |b, _| b.iter(|| apply_mask_reference(black_box(&mut data), black_box(KEY), 0)),
            );
        }
    }
    g.finish();
}

/// Text of about `len` bytes mixing 1-, 2-, 3- and 4-byte characters,
/// cut back to whole characters.
fn multibyte_text(len: usize) -> Vec<u8> {
    let piece = "héllo wörld, ¿qué tal? 日本語のテキスト 🦀🚀 Ελληνικά ";
    let mut s = String::new();
    while s.len() < len {
        s.push_str(piece);
    }
    let mut end = len;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.into_bytes()
}

fn utf8(c: &mut Criterion) {
    let mut g = c.benchmark_group("utf8");
    for (name, size) in [("1KiB", 1usize << 10), ("64KiB", 64 << 10)] {
        let ascii: Vec<u8> = (0..size).map(|i| b' ' + (i % 95) as u8).collect();
        let multi = multibyte_text(size);
        for (kind, text) in [("ascii", &ascii), ("multibyte", &multi)] {
            g.throughput(Throughput::Bytes(text.len() as u64));
            g.bench_with_input(BenchmarkId::new(kind, name), text, |b, text| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    v.feed(black_box(text)).unwrap();
                    v.is_complete()
                })
            });
        }
        // The same multi-byte text arriving in 100-byte pieces, characters
        // cut across pieces (the validator's carry-over path).
        g.throughput(Throughput::Bytes(multi.len() as u64));
        g.bench_with_input(
            BenchmarkId::new("multibyte_in_100B_pieces", name),
            &multi,
            |b, text| {
                b.iter(|| {
                    let mut v = Utf8Validator::new();
                    for piece in black_box(text).chunks(100) {
                        v.feed(piece).unwrap();
                    }
                    v.is_complete()
                })
            },
        );
    }
    g.finish();
}

fn frame_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame_encode");
    for (name, len, masked) in [
        ("header_32B", 32u64, false),
        ("header_16KiB", 16 << 10, false),
        ("header_1MiB_masked", 1 << 20, true),
    ] {
        let h = FrameHeader {
            mask: masked.then_some(KEY),
            ..FrameHeader::new(OpCode::Binary, len)
        };
        g.bench_function(name, |b| {
            let mut out = [0u8; MAX_HEADER_LEN];
            b.iter(|| encode_header(black_box(&h), &mut out))
        });
    }
    for (name, size, masked) in [
        ("write_frame_32B", 32usize, false),
        ("write_frame_16KiB", 16 << 10, false),
        ("write_frame_32B_masked", 32, true),
        ("write_frame_16KiB_masked", 16 << 10, true),
    ] {
        let payload = pattern(size);
        let h = FrameHeader {
            mask: masked.then_some(KEY),
            ..FrameHeader::new(OpCode::Binary, size as u64)
        };
        let mut out = Vec::with_capacity(size + MAX_HEADER_LEN);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                write_frame(black_box(&h), black_box(&payload), &mut out);
                out.len()
            })
        });
    }
    g.finish();
}

/// A Chrome upgrade request, headers as the browser sends them.
const BROWSER_REQUEST: &[u8] = b"GET /chat?room=lobby HTTP/1.1\r\n\
Host: 127.0.0.1:10000\r\n\
Connection: Upgrade\r\n\
Pragma: no-cache\r\n\
Cache-Control: no-cache\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n\
Upgrade: websocket\r\n\
Origin: http://127.0.0.1:10000\r\n\
Sec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9\r\n\
Cookie: session=4f9c2a7e1b; theme=dark\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
\r\n";

fn handshake_parse(c: &mut Criterion) {
    let config = Config::default();
    let mut g = c.benchmark_group("handshake_parse");
    g.throughput(Throughput::Bytes(BROWSER_REQUEST.len() as u64));
    g.bench_function("browser_request", |b| {
        b.iter(|| {
            let mut reader = RequestReader::new();
            match reader.feed(
                black_box(BROWSER_REQUEST),
                config.max_handshake_bytes,
                config.max_headers,
            ) {
                Ok(Head::Complete(req, rest)) => {
                    assert!(rest.is_empty());
                    req
                }
                other => panic!("request not parsed: {other:?}"),
            }
        })
    });
    // Parse and validate, as the server does before answering.
    g.bench_function("browser_request_validated", |b| {
        b.iter(|| {
            let mut reader = RequestReader::new();
            match reader.feed(
                black_box(BROWSER_REQUEST),
                config.max_handshake_bytes,
                config.max_headers,
            ) {
                Ok(Head::Complete(req, _)) => req.validate_upgrade().map(str::len).unwrap(),
                other => panic!("request not parsed: {other:?}"),
            }
        })
    });
    g.finish();
}

fn echo(c: &mut Criterion) {
    // One fixed instant: no clock reads inside the measurement.
    let now = Instant::now();
    let config = Arc::new(Config::default());
    let mut g = c.benchmark_group("echo");
    for (name, size) in [("32B", 32usize), ("16KiB", 16 << 10)] {
        let frame = client_frame(OpCode::Binary, &pattern(size));
        let mut conn = Connection::new(Role::Server, config.clone(), now);
        // The read buffer: each iteration copies the frame in (the kernel's
        // copy in a real read), since the connection unmasks it in place.
        let mut input = frame.clone();
        let mut out = Vec::with_capacity(size + MAX_HEADER_LEN);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                input.copy_from_slice(&frame);
                let mut rest: &mut [u8] = &mut input[..];
                let mut messages = 0;
                while let Some(ev) = conn.poll_event(&mut rest, now).unwrap() {
                    if let Event::Message(msg) = ev {
                        conn.send(msg).unwrap();
                        messages += 1;
                    }
                }
                out.clear();
                conn.drain_output(&mut out);
                assert_eq!(messages, 1);
                out.len()
            })
        });
        assert!(conn.is_open());
        assert_eq!(
            out.len(),
            size + FrameHeader::new(OpCode::Binary, size as u64).encoded_len()
        );
    }
    g.finish();
}

criterion_group!(
    benches,
    header_parse,
    mask,
    utf8,
    frame_encode,
    handshake_parse,
    echo
);
criterion_main!(benches);
