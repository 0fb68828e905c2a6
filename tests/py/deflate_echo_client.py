"""Interop check: the Python `websockets` client with permessage-deflate
against `wsloop serve --deflate` (or --deflate-no-context).

Usage: deflate_echo_client.py ws://127.0.0.1:PORT/ OFFER [EXPECT...]

OFFER is how the client offers permessage-deflate:
    default   the library's default (compression="deflate")
    small     server_max_window_bits=10, client_max_window_bits=9, and
              client_no_context_takeover
    none      no offer (compression=None): the server must not answer one

Each EXPECT is a parameter the server's Sec-WebSocket-Extensions answer
must contain (e.g. server_no_context_takeover). Prints the answer as
"EXTENSIONS <value>", then one line per check: text and binary messages up
to 1 MiB, compressible and random, repeated (context takeover), pipelined,
fragmented, a ping, and a close with 1000. Exits 0 only if all pass.
"""

import os
import sys
import time

from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.sync.client import connect

SIZES = [0, 1, 63, 64, 125, 126, 65535, 65536, 65537, 1 << 20]


def compressible(n, seed):
    line = f'{{"id":{seed},"user":"user-{seed}","text":"hello wörld ✓","ok":true}}\n'
    s = (line * (n // len(line.encode()) + 1)).encode()[:n].decode("utf-8", "ignore")
    return s + "x" * (n - len(s.encode()))


def main():
    uri, offer, expect = sys.argv[1], sys.argv[2], sys.argv[3:]
    start = time.monotonic()
    failures = []

    def check(name, ok, detail=""):
        print(("ok   " if ok else "FAIL ") + name + (f" ({detail})" if detail and not ok else ""))
        if not ok:
            failures.append(name)

    kwargs = {}
    if offer == "small":
        kwargs["compression"] = None
        kwargs["extensions"] = [
            ClientPerMessageDeflateFactory(
                server_max_window_bits=10,
                client_max_window_bits=9,
                client_no_context_takeover=True,
            )
        ]
    elif offer == "none":
        kwargs["compression"] = None

    with connect(uri, max_size=None, open_timeout=5, close_timeout=5, **kwargs) as ws:
        answer = ws.response.headers.get("Sec-WebSocket-Extensions")
        print(f"OFFER {ws.request.headers.get('Sec-WebSocket-Extensions')}")
        print(f"EXTENSIONS {answer}")
        active = [e for e in ws.protocol.extensions if isinstance(e, PerMessageDeflate)]
        if offer == "none":
            check("no extension answered", answer is None and not active, repr(answer))
        else:
            check("permessage-deflate negotiated",
                  answer is not None and answer.startswith("permessage-deflate") and len(active) == 1,
                  repr(answer))
            for p in expect:
                check(f"answer has {p}", answer is not None and p in answer, repr(answer))
            if active:
                print(f"AGREED {active[0]!r}")

        for i, n in enumerate(SIZES):
            t = compressible(n, i)
            assert len(t.encode()) == n
            for rep in range(2):  # the second one uses the shared window
                ws.send(t)
                got = ws.recv(timeout=10)
                check(f"compressible text {n} bytes #{rep}", got == t,
                      f"got {type(got).__name__} of {len(got)}")
            b = t.encode()
            ws.send(b)
            got = ws.recv(timeout=10)
            check(f"compressible binary {n} bytes", got == b, f"got {type(got).__name__} of {len(got)}")
            r = os.urandom(n)
            ws.send(r)
            got = ws.recv(timeout=10)
            check(f"random binary {n} bytes", got == r, f"got {type(got).__name__} of {len(got)}")

        msgs = [compressible(1000 + i, i) if i % 2 else os.urandom(1000 + i) for i in range(20)]
        for m in msgs:
            ws.send(m)
        got = [ws.recv(timeout=10) for _ in msgs]
        check("20 pipelined messages", got == msgs)

        # An iterable is sent as a fragmented (compressed) message.
        parts = [compressible(3000, 1), "mént", compressible(2000, 2)]
        ws.send(parts)
        got = ws.recv(timeout=10)
        check("fragmented text", got == "".join(parts), f"{len(got)} chars")
        ws.send([b"\x00\x01" * 500, b"", b"\x02"])
        got = ws.recv(timeout=10)
        check("fragmented binary", got == b"\x00\x01" * 500 + b"\x02", f"{len(got)} bytes")

        pong = ws.ping(b"are you there")
        check("ping answered", pong.wait(5))

        ws.close(1000, "interop done")
        rcvd = ws.protocol.close_rcvd
        check("close 1000 echoed", rcvd is not None and rcvd.code == 1000, f"close_rcvd={rcvd!r}")

    took = time.monotonic() - start
    if failures:
        print(f"{len(failures)} checks failed: {failures}")
        return 1
    print(f"all deflate interop checks passed in {took:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
