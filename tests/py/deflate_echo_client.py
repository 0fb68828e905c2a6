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

from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
)
from websockets.sync.client import connect

from interop import Checks, echo_fragmented, echo_one, echo_pipelined, ping_and_close

SIZES = [0, 1, 63, 64, 125, 126, 65535, 65536, 65537, 1 << 20]


def compressible(n, seed):
    line = f'{{"id":{seed},"user":"user-{seed}","text":"hello wörld ✓","ok":true}}\n'
    s = (line * (n // len(line.encode()) + 1)).encode()[:n].decode("utf-8", "ignore")
    return s + "x" * (n - len(s.encode()))


def main():
    uri, offer, expect = sys.argv[1], sys.argv[2], sys.argv[3:]
    check = Checks()

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
                echo_one(ws, check, f"compressible text {n} bytes #{rep}", t)
            echo_one(ws, check, f"compressible binary {n} bytes", t.encode())
            echo_one(ws, check, f"random binary {n} bytes", os.urandom(n))

        echo_pipelined(ws, check, [compressible(1000 + i, i) if i % 2 else os.urandom(1000 + i) for i in range(20)])
        # Compressed fragments.
        echo_fragmented(ws, check, "text", [compressible(3000, 1), "mént", compressible(2000, 2)])
        echo_fragmented(ws, check, "binary", [b"\x00\x01" * 500, b"", b"\x02"])
        ping_and_close(ws, check, "interop done")

    return check.finish("deflate interop")


if __name__ == "__main__":
    sys.exit(main())
