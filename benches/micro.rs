//! Micro benchmarks of the pure codec and the sans-IO connection.
//!
//! ```text
//! cargo bench --bench micro                      # full run
//! cargo bench --bench micro -- --quick           # a quick look
//! cargo bench --bench micro -- mask/             # one group
//! cargo bench --bench micro -- --callgrind list  # the callgrind cases
//! scripts/callgrind.sh mask_1MiB recv_1MiB       # instructions per run
//! ```
//!
//! Groups: `header_parse`, `mask` (word-wide `apply_mask` against the
//! byte-at-a-time `apply_mask_reference`), `utf8`, `frame_encode`,
//! `handshake_parse`, `echo` (a server `Connection` receiving one masked
//! client frame and sending the message back, output drained). Throughput
//! is in payload bytes where that means something.
//!
//! For comparing two versions of a hot path on this noisy machine,
//! instruction counts are steadier than timings: `--callgrind NAME [N]`
//! runs one case's body N times (default 10) in `callgrind_measured`,
//! without criterion's timing loop, after one untimed run that warms the
//! buffer pools. `scripts/callgrind.sh` runs that under `valgrind
//! --tool=callgrind --toggle-collect` and prints instructions per run.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
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

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--callgrind") {
        let name = args.get(i + 1).map_or("list", String::as_str);
        let runs = args.get(i + 2).and_then(|n| n.parse().ok()).unwrap_or(10);
        std::process::exit(callgrind::run(name, runs));
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

/// The bodies `--callgrind` runs: what one run of each does.
mod callgrind {
    use std::io;

    use super::*;

    /// The loop's read buffer (`Server`: 256 KiB), and how much one read
    /// takes from the socket.
    const READ: usize = 256 * 1024;

    type Body = Box<dyn FnMut()>;
    /// Builds a case's body (setup is not counted).
    type Setup = fn() -> Body;

    const CASES: &[(&str, &str, Setup)] = &[
        ("mask_1MiB", "apply_mask over 1 MiB, offset 0", || {
            let mut data = pattern(1 << 20);
            Box::new(move || apply_mask(black_box(&mut data), black_box(KEY), 0))
        }),
        (
            "mask_1MiB_unaligned",
            "apply_mask over 1 MiB at an odd address and offset 3",
            || {
                let mut data = pattern((1 << 20) + 1);
                Box::new(move || apply_mask(black_box(&mut data[1..]), black_box(KEY), 3))
            },
        ),
        (
            "utf8_16KiB_ascii",
            "Utf8Validator::feed, 16 KiB ASCII",
            || {
                let text = ascii(16 << 10);
                Box::new(move || validate(&text))
            },
        ),
        (
            "utf8_16KiB_multibyte",
            "Utf8Validator::feed, 16 KiB of 1- to 4-byte characters",
            || {
                let text = multibyte_text(16 << 10);
                Box::new(move || validate(&text))
            },
        ),
        (
            "recv_32B_binary",
            "Connection: one masked 32 B binary frame, whole in one read",
            || receive(OpCode::Binary, &ascii(32), &[]),
        ),
        (
            "recv_16KiB_text",
            "Connection: one masked 16 KiB ASCII text frame, whole in one read",
            || receive(OpCode::Text, &ascii(16 << 10), &[]),
        ),
        ("recv_16KiB_binary", "the same as binary", || {
            receive(OpCode::Binary, &ascii(16 << 10), &[])
        }),
        (
            "recv_16KiB_text_multibyte",
            "the same with 1- to 4-byte characters (not ASCII: the full UTF-8 check)",
            || receive(OpCode::Text, &multibyte_text(16 << 10), &[]),
        ),
        (
            "recv_16KiB_text_last_e",
            "the same, ASCII but for its last character (é): the worst case for an ASCII fast path",
            || {
                let mut text = ascii((16 << 10) - 2);
                text.extend_from_slice("é".as_bytes());
                receive(OpCode::Text, &text, &[])
            },
        ),
        (
            "recv_16KiB_text_split",
            "16 KiB text frame cut across two reads (copied, checked in pieces)",
            || receive(OpCode::Text, &ascii(16 << 10), &[8 << 10]),
        ),
        ("recv_16KiB_binary_split", "the same as binary", || {
            receive(OpCode::Binary, &ascii(16 << 10), &[8 << 10])
        }),
        (
            "recv_1MiB",
            "Connection: one masked 1 MiB binary frame in reads of 256 KiB \
             (direct reads when offered), echoed to a sink",
            || echo_large(OpCode::Binary, 1 << 20),
        ),
        ("recv_1MiB_text", "the same as ASCII text", || {
            echo_large(OpCode::Text, 1 << 20)
        }),
        (
            "client_recv_100B_text",
            "Connection (client): one unmasked 100 B ASCII text frame (a chat message), whole in one read",
            || receive_as(Role::Client, OpCode::Text, &ascii(100), &[]),
        ),
        ("client_recv_100B_binary", "the same as binary", || {
            receive_as(Role::Client, OpCode::Binary, &ascii(100), &[])
        }),
        (
            "client_recv_16KiB_text",
            "Connection (client): one unmasked 16 KiB ASCII text frame, whole in one read",
            || receive_as(Role::Client, OpCode::Text, &ascii(16 << 10), &[]),
        ),
        ("client_recv_16KiB_binary", "the same as binary", || {
            receive_as(Role::Client, OpCode::Binary, &ascii(16 << 10), &[])
        }),
        (
            "client_recv_16KiB_text_last_e",
            "the same as text, ASCII but for its last character (é)",
            || {
                let mut text = ascii((16 << 10) - 2);
                text.extend_from_slice("é".as_bytes());
                receive_as(Role::Client, OpCode::Text, &text, &[])
            },
        ),
    ];

    fn ascii(len: usize) -> Vec<u8> {
        (0..len).map(|i| b' ' + (i % 95) as u8).collect()
    }

    fn validate(text: &[u8]) {
        let mut v = Utf8Validator::new();
        v.feed(black_box(text)).unwrap();
        assert!(v.is_complete());
    }

    /// One masked frame from a client, its bytes arriving in reads cut at
    /// `cuts` (payload offsets, after an 8-byte header: 16 KiB frames); each read is
    /// copied into the read buffer first (the kernel's copy). The message
    /// is dropped.
    fn receive(op: OpCode, payload: &[u8], cuts: &[usize]) -> Body {
        receive_as(Role::Server, op, payload, cuts)
    }

    /// `receive` in either role: a server gets the frame masked, a client
    /// unmasked.
    fn receive_as(role: Role, op: OpCode, payload: &[u8], cuts: &[usize]) -> Body {
        let frame = match role {
            Role::Server => client_frame(op, payload),
            Role::Client => {
                let mut out = Vec::new();
                write_frame(
                    &FrameHeader::new(op, payload.len() as u64),
                    payload,
                    &mut out,
                );
                out
            }
        };
        let now = Instant::now();
        let mut conn = Connection::new(role, Arc::new(Config::default()), now);
        let mut input = vec![0; frame.len()];
        let mut bounds: Vec<usize> = cuts.iter().map(|c| c + 8).collect();
        bounds.push(frame.len());
        Box::new(move || {
            let (mut start, mut messages) = (0, 0);
            for &end in &bounds {
                input[start..end].copy_from_slice(&frame[start..end]);
                let mut rest: &mut [u8] = &mut input[start..end];
                while let Some(ev) = conn.poll_event(&mut rest, now).unwrap() {
                    messages += black_box(matches!(ev, Event::Message(_))) as usize;
                }
                start = end;
            }
            assert_eq!(messages, 1);
        })
    }

    /// One large masked frame read as the server reads it: 256 KiB reads
    /// into the loop's buffer, or into the message when the connection
    /// offers room (a copy from the frame stands for the kernel's), then
    /// echoed back and written to a sink, so the message buffer goes back
    /// to the pool as in the server.
    fn echo_large(op: OpCode, size: usize) -> Body {
        let frame = client_frame(op, &ascii(size));
        let now = Instant::now();
        let mut conn = Connection::new(Role::Server, Arc::new(Config::default()), now);
        let mut scratch = vec![0; READ];
        Box::new(move || {
            let (mut pos, mut messages) = (0, 0);
            while pos < frame.len() {
                let left = frame.len() - pos;
                let mut input: &mut [u8] = match direct_buf(&mut conn) {
                    Some(buf) => {
                        let n = buf.len().min(READ).min(left);
                        buf[..n].copy_from_slice(&frame[pos..pos + n]);
                        direct_filled(&mut conn, n);
                        pos += n;
                        &mut []
                    }
                    None => {
                        let n = READ.min(left);
                        scratch[..n].copy_from_slice(&frame[pos..pos + n]);
                        pos += n;
                        &mut scratch[..n]
                    }
                };
                while let Some(ev) = conn.poll_event(&mut input, now).unwrap() {
                    if let Event::Message(m) = ev {
                        conn.send(m).unwrap();
                        messages += 1;
                    }
                }
            }
            conn.write_to(&mut io::sink()).unwrap();
            assert_eq!(messages, 1);
        })
    }

    fn direct_buf(conn: &mut Connection) -> Option<&mut [u8]> {
        conn.payload_buf()
    }

    fn direct_filled(conn: &mut Connection, n: usize) {
        conn.payload_filled(n)
    }

    /// The measured loop: `scripts/callgrind.sh` counts instructions only
    /// inside this function (`--toggle-collect`).
    #[inline(never)]
    fn callgrind_measured(body: &mut dyn FnMut(), runs: u32) {
        for _ in 0..runs {
            body();
        }
    }

    pub(super) fn run(name: &str, runs: u32) -> i32 {
        let Some((_, _, setup)) = CASES.iter().find(|(n, _, _)| *n == name) else {
            if name != "list" {
                eprintln!("no callgrind case {name:?}; the cases:");
            }
            for (n, what, _) in CASES {
                println!("{n:24} {what}");
            }
            return if name == "list" { 0 } else { 2 };
        };
        let mut body = setup();
        body();
        callgrind_measured(&mut body, runs);
        println!("callgrind case {name}: {runs} runs");
        0
    }
}
