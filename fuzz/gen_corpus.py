#!/usr/bin/env python3
"""Writes the checked-in seed corpus: fuzz/corpus/<target>/seed-*.

Each target documents its input format at the top of its source file; the
helpers below follow those formats. Run from anywhere:
    python3 fuzz/gen_corpus.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# RFC 6455 §5.7 examples.
HELLO = bytes([0x81, 0x05]) + b"Hello"
HELLO_MASKED = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
HEL = bytes([0x01, 0x03]) + b"Hel"
LO = bytes([0x80, 0x02]) + b"lo"
PING = bytes([0x89, 0x05]) + b"Hello"
PONG_MASKED = bytes([0x8A, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
BIN_256 = bytes([0x82, 0x7E, 0x01, 0x00])
BIN_64K = bytes([0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
CLOSE_1000 = bytes([0x88, 0x02, 0x03, 0xE8])
CLOSE_MASKED = bytes([0x88, 0x85, 1, 2, 3, 4]) + bytes(
    b ^ k for b, k in zip(b"\x03\xe8bye", [1, 2, 3, 4, 1]))

# RFC 6455 §1.2 / §1.3.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
REQUEST = (
    "GET /chat HTTP/1.1\r\n"
    "Host: server.example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Origin: http://example.com\r\n"
    "Sec-WebSocket-Protocol: chat, superchat\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
).encode()
RESPONSE = (
    "HTTP/1.1 101 Switching Protocols\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    "Sec-WebSocket-Protocol: chat\r\n\r\n"
).encode()


def u16(n):
    return struct.pack("<H", n)


def u24(n):
    return struct.pack("<I", n)[:3]


def cuts(*positions):
    return bytes([len(positions)]) + b"".join(u16(p) for p in positions)


# ---- server_connection / client_connection ops (common/conn.rs) ----
def op_feed(data, *cut_positions):
    return bytes([0]) + cuts(*cut_positions) + u16(len(data)) + data


def op_frame(opcode, payload, fin=True, wrong_mask=False, key=b"\x37\xfa\x21\x3d", cut=()):
    flags = (1 if fin else 0) | (2 if wrong_mask else 0)
    return bytes([1, flags, opcode]) + key + u16(len(payload)) + payload + cuts(*cut)


def op_frame_fill(opcode, byte, n, fin=True):
    return bytes([1, (1 if fin else 0) | 8, opcode]) + b"\x01\x02\x03\x04" + bytes([byte]) + u24(n) + cuts()


def op_send_text(s):
    return bytes([2]) + u16(len(s)) + s


def op_send_binary_fill(byte, n):
    return bytes([3, 1, byte]) + u24(n)


def op_send_frame(sel, payload, fin):
    return bytes([4, sel, 1 if fin else 0]) + u16(len(payload)) + payload


def op_send_owned(payload, text=False):
    return bytes([5, 1 if text else 0]) + u16(len(payload)) + payload


def op_ping(p):
    return bytes([6, len(p)]) + p


def op_pong(p):
    return bytes([7, len(p)]) + p


def op_close(code, reason):
    return bytes([8]) + u16(code) + bytes([len(reason)]) + reason


def op_time(ms):
    return bytes([9]) + u16(ms)


OP_TIMEOUT = bytes([10])
OP_STALL = bytes([11, 1])
OP_UNSTALL = bytes([11, 0])
OP_DRAIN = bytes([12])


def conn_seeds(role):
    raw_hello = HELLO_MASKED if role == "server" else HELLO
    return {
        "rfc-frames": b"\x00" + op_frame(1, b"Hello") + op_frame(9, b"Hello") + op_frame(10, b"Hello")
        + op_frame(2, bytes(256)) + op_frame(8, b"\x03\xe8bye"),
        "fragmented-text": b"\x00" + op_frame(1, b"Hel", fin=False, cut=(1,)) + op_frame(9, b"")
        + op_frame(0, b"lo", cut=(3,)) + op_frame(1, "κόσμε".encode(), fin=False)
        + op_frame(0, b"", fin=False) + op_frame(0, b"!"),
        "raw-feed-cut": b"\x00" + op_feed(raw_hello * 3, 1, 7, 12),
        "sends-and-timers": b"\x00" + op_send_text(b"hi") + op_send_binary_fill(7, 300)
        + op_send_frame(1, b"ab", False) + op_send_frame(0, b"c", True) + op_send_owned(b"x" * 20000)
        + op_ping(b"p") + op_pong(b"") + op_time(3000) + OP_TIMEOUT + op_time(2000) + op_time(10),
        "idle-close": b"\x00" + op_time(9999) + op_time(2) + op_frame(8, b"\x03\xe9") + OP_DRAIN,
        "we-close-first": b"\x00" + op_close(1000, b"done") + op_frame(1, b"late") + op_frame(9, b"x")
        + op_frame(8, b""),
        "close-timeout": b"\x20" + op_close(4000, b"bye") + op_time(999) + op_time(1),
        "overflow-stalled": b"\x00" + OP_STALL + b"".join(op_send_binary_fill(1, 60000) for _ in range(6))
        + op_frame(9, b"ping") + OP_UNSTALL + OP_DRAIN,
        "too-big": b"\x03" + op_frame_fill(2, 9, 2000) + op_frame(1, b"a", fin=False)
        + b"".join(op_frame(0, b"b", fin=False) for _ in range(5)),
        "bad-utf8": b"\x00" + op_frame(1, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80", cut=(12,)),
        "wrong-mask": b"\x00" + op_frame(1, b"Hello", wrong_mask=True),
        "close-in-pieces": b"\x00" + op_feed(CLOSE_MASKED if role == "server" else CLOSE_1000, 1, 2, 5),
    }


def roundtrip_msg(flags, payload, *cut_positions):
    return bytes([flags]) + u16(len(payload)) + payload + cuts(*cut_positions)


# ---- extension_offer (fuzz_targets/extension_offer.rs) ----
def ext_seed(flags, sbits, cbits, c_sbits, c_cbits, *values):
    return bytes([flags, sbits, cbits, c_sbits, c_cbits]) + "\n".join(values).encode()


# ---- deflate_connection (fuzz_targets/deflate_connection.rs) ----
def dc_setup(flags=0, sbits=6, cbits=6, level=6):
    # window bits are 9 + b % 7: 6 -> 15, 0 -> 9
    return bytes([flags, sbits, cbits, level])


def dc_payload(data=b"", text=False, fill=None, noise=None):
    kind = 1 if text else 0
    if fill is not None:
        byte, n = fill
        return bytes([kind | 2 << 1, byte]) + u24(n)
    if noise is not None:
        seed, n = noise
        return bytes([kind | 3 << 1, seed]) + u24(n)
    return bytes([kind]) + u16(len(data)) + data


def dc_reads(max_piece=0, seed=0):
    return u16(max_piece) + bytes([seed])


def dc_msg(payload, cut_at=(), mutate=None, clear_rsv1=False, rsv1_second=False,
           ping=False, key=b"\x37\xfa\x21\x3d", reads=dc_reads()):
    shape = len(cut_at) | (8 if mutate else 0) | (16 if clear_rsv1 else 0) \
        | (32 if rsv1_second else 0) | (64 if ping else 0)
    out = bytes([0]) + payload + bytes([shape]) + b"".join(u16(c) for c in cut_at)
    if mutate:
        what, pos, b = mutate
        out += bytes([what]) + u16(pos) + bytes([b])
    return out + key + reads


def dc_raw_frame(b0, body, key=b"\x01\x02\x03\x04", reads=dc_reads()):
    return bytes([1, b0]) + u16(len(body)) + body + key + reads


def dc_bytes(data):
    return bytes([2]) + u16(len(data)) + data


def dc_server_send(payload):
    return bytes([3]) + payload


def dc_close(code, reads=dc_reads()):
    return bytes([4]) + u16(code) + reads


# ---- deflate_sends (fuzz_targets/deflate_sends.rs) ----
def ds_setup(flags=0, sbits=6, rbits=6, level=6):
    return bytes([flags, sbits, rbits, level])


def ds_msg(data=b"", text=False, owned=False, fill=None, noise=None, again=None, shared=False):
    kind = (1 if text else 0) | (2 if owned else 0)
    tag = bytes([3 if shared else 0])
    if fill is not None:
        byte, n = fill
        return tag + bytes([kind | 1 << 2, byte]) + u16(n)
    if noise is not None:
        seed, n = noise
        return tag + bytes([kind | 2 << 2, seed]) + u16(n)
    if again is not None:
        back, pos, byte = again
        return tag + bytes([kind | 3 << 2, back]) + u16(pos) + bytes([byte])
    return tag + bytes([kind, len(data)]) + data


def ds_frame(op, data, fin):
    return bytes([1, op | (0x80 if fin else 0), len(data)]) + data


def ds_ping(data):
    return bytes([2, len(data)]) + data


def ds_transfer(room=0, piece=0, seed=0):
    return bytes([4]) + u16(room) + bytes([piece, seed])


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data)


def main():
    for name, data in {
        "rfc-hello": HELLO, "rfc-hello-masked": HELLO_MASKED, "rfc-hel": HEL, "rfc-lo": LO,
        "rfc-ping": PING, "rfc-pong-masked": PONG_MASKED, "rfc-binary-256": BIN_256,
        "rfc-binary-64k": BIN_64K, "close-1000": CLOSE_1000, "close-masked": CLOSE_MASKED,
    }.items():
        write("frame_header", name, data)

    write("mask", "rfc-hello", b"\x37\xfa\x21\x3d" + bytes(4) + b"\x00" + u16(2) + b"Hello")
    write("mask", "long-unaligned", b"\x01\x02\x03\x04" + struct.pack("<I", 3) + b"\x05" + u16(41)
          + bytes(range(100)))

    write("utf8", "ascii-and-2-byte", b"\x00" + "Hello-µ@ßöäüàá-UTF-8!!".encode())
    write("utf8", "autobahn-6-4-1", cuts(12, 13) + "κόσμε".encode() + b"\xf4\x90\x80\x80edited")
    write("utf8", "split-in-chars", cuts(1, 2, 3, 5, 7) + "€𝄞é".encode())
    write("utf8", "surrogate", cuts(1) + b"a\xed\xa0\x80b")
    write("utf8", "overlong", cuts(2) + b"a\xc0\x80")
    write("utf8", "incomplete", cuts(3) + b"ab\xe2\x82")

    write("handshake_request", "rfc-request", b"\x00\x00" + REQUEST)
    write("handshake_request", "rfc-request-trickle-with-frame", b"\x05\x07" + REQUEST + HELLO_MASKED)
    write("handshake_request", "health-check", b"\x10\x03GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    write("handshake_request", "version-8", b"\x00\x00" + REQUEST.replace(b"Version: 13", b"Version: 8"))
    write("handshake_request", "tls-hello", b"\x00\x00\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")

    hdr = lambda flags, pos=0, xor=0, chunk=0, seed=0: bytes([flags, chunk, seed]) + u16(pos) + bytes([xor])
    write("handshake_response", "rfc-101-and-frame", hdr(0) + RESPONSE + HELLO)
    write("handshake_response", "built", hdr(1) + HELLO)
    write("handshake_response", "built-chat-trickle", hdr(3, chunk=4, seed=9))
    write("handshake_response", "built-mutated-accept", hdr(1, pos=100, xor=1))
    write("handshake_response", "forbidden", hdr(0) + b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    for role in ("server", "client"):
        for name, data in conn_seeds(role).items():
            write(role + "_connection", name, data)

    write("roundtrip", "rfc-fragmented-hello", b"\x00\x00" + roundtrip_msg(1, b"Hello", 3))
    write("roundtrip", "utf8-split-in-chars", b"\x03\x05" + roundtrip_msg(1 | 4, "κόσμε€𝄞".encode(), 1, 4, 4, 9, 14))
    write("roundtrip", "mixed", b"\x07\x01" + roundtrip_msg(2, bytes(range(256))) + roundtrip_msg(8, b"x" * 300, 100, 200)
          + roundtrip_msg(1 | 2 | 4, b"owned text"))
    write("roundtrip", "big-owned", b"\x00\x02" + bytes([2 | 16 | 32, 0xAB]) + u24(70000) + cuts()
          + bytes([16 | 4, 0xCD]) + u24(40000) + cuts(1, 20000, 39999))


    ext = [
        ("chrome", ext_seed(0, 15, 15, 6, 6, "permessage-deflate; client_max_window_bits")),
        ("firefox", ext_seed(8, 15, 15, 6, 6, "permessage-deflate")),
        ("python-websockets", ext_seed(8, 15, 15, 6, 6,
                                       "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12")),
        ("all-params", ext_seed(0x3b, 10, 11, 1, 2,
                                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                                "server_max_window_bits=9; client_max_window_bits=10")),
        ("several-offers", ext_seed(2, 12, 9, 3, 0,
                                    "x-webkit-deflate-frame, permessage-deflate; foo",
                                    "permessage-deflate; server_max_window_bits=8, permessage-deflate; client_max_window_bits=\"9\"")),
        ("client-bits-8", ext_seed(0, 15, 15, 6, 6, "permessage-deflate; client_max_window_bits=8")),
        ("invalid", ext_seed(4, 0, 255, 0, 0, "permessage-deflate; server_max_window_bits=09; =; ;;, ,")),
    ]
    for name, data in ext:
        write("extension_offer", name, data)

    hello = "Hello, hello, hello! " * 8
    dc = [
        ("hello-text", dc_setup() + dc_msg(dc_payload(b"Hello", text=True))),
        ("context-takeover", dc_setup(level=9) + dc_msg(dc_payload(hello.encode(), text=True))
         + dc_msg(dc_payload(hello.encode(), text=True))),
        ("no-context-small-windows", dc_setup(1 | 2, 0, 0, 1) + dc_msg(dc_payload(bytes(range(256)) * 4))
         + dc_msg(dc_payload(bytes(range(256)) * 4))),
        ("fragmented-ping-trickle", dc_setup(16) + dc_msg(dc_payload(hello.encode(), text=True), cut_at=(3, 10),
                                                       ping=True, reads=dc_reads(5, 7))),
        ("bomb", dc_setup(1) + dc_msg(dc_payload(fill=(0, 24000)))),
        ("noise-near-limit", dc_setup() + dc_msg(dc_payload(noise=(1, 16000)))),
        ("corrupt", dc_setup() + dc_msg(dc_payload(hello.encode()), mutate=(0, 5, 0xff))),
        ("truncated", dc_setup() + dc_msg(dc_payload(hello.encode()), mutate=(1, 4, 0))),
        ("rsv1-on-continuation", dc_setup() + dc_msg(dc_payload(hello.encode()), cut_at=(4,), rsv1_second=True)),
        ("uncompressed-and-control", dc_setup() + dc_raw_frame(0x81, b"plain") + dc_raw_frame(0xc9, b"rsv1 ping")),
        ("server-sends-then-close", dc_setup(16, 2, 3) + dc_server_send(dc_payload(hello.encode(), text=True))
         + dc_server_send(dc_payload(b"tiny")) + dc_close(1000)),
        ("small-frames-few-fragments", dc_setup(4 | 8) + dc_msg(dc_payload(noise=(2, 3000)), cut_at=(500, 1000, 1500, 2000))),
    ]
    for name, data in dc:
        write("deflate_connection", name, data)

    ds = [
        # The third message does not fit the queue once compressed; the
        # fourth, nearly the same, must not refer to it.
        ("refused-then-again", ds_setup() + ds_msg(noise=(1, 1000)) + ds_msg(noise=(2, 1500))
         + ds_msg(noise=(3, 2000)) + ds_msg(again=(0, 10, 1)) + ds_transfer()),
        ("too-big-then-again", ds_setup(1) + ds_msg(hello.encode(), text=True) + ds_msg(fill=(65, 2500), text=True)
         + ds_msg(again=(0, 5, 66), text=True) + ds_msg(again=(2, 0, 67), text=True, owned=True) + ds_transfer(0, 7, 3)),
        ("fragments-pings-refusals", ds_setup(2) + ds_frame(1, b"Hel", False) + ds_ping(b"p")
         + ds_msg(b"in between") + ds_frame(2, b"x", False) + ds_frame(0, b"lo", True)
         + ds_frame(0, b"stray", True) + ds_msg(b"after") + ds_transfer()),
        ("partial-writes-shared", ds_setup(0, 0, 3, 1) + ds_msg(noise=(4, 1200), shared=True)
         + ds_transfer(300, 13, 1) + ds_msg(again=(0, 7, 0)) + ds_transfer(5, 0, 0)
         + ds_msg(fill=(0, 1800)) + ds_msg(fill=(0, 1800)) + ds_msg(fill=(0, 1800)) + ds_transfer()),
    ]
    for name, data in ds:
        write("deflate_sends", name, data)


if __name__ == "__main__":
    main()
