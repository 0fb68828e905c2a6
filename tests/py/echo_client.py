"""Interop check: the Python `websockets` client against `wsloop serve`.

Usage: echo_client.py ws://127.0.0.1:PORT/

Sends text and binary messages of several sizes (up to 1 MiB), a
fragmented message and a ping, checks every echo, closes with 1000 and
checks the server's close reply. Prints one line per check; exits 0 only
if all pass.
"""

import os
import sys

from websockets.sync.client import connect

from interop import Checks, check_healthz, echo_fragmented, echo_one, echo_pipelined, ping_and_close

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 65537, 1 << 20]


def text_of(n, seed):
    # Multi-byte characters too, padded with ASCII to exactly n UTF-8
    # bytes so sizes hit the frame-length boundaries.
    base = ("héllo wörld ✓ " * (n // 10 + 1)).encode()[:n]
    s = base.decode("utf-8", "ignore")  # drops a cut character at the end
    pad = n - len(s.encode())
    return s + chr(ord("a") + seed % 26) * pad


def main():
    uri = sys.argv[1]
    check = Checks()

    check_healthz(check, uri, "GET /healthz")

    with connect(uri, max_size=None, open_timeout=5, close_timeout=5) as ws:
        for i, n in enumerate(SIZES):
            t = text_of(n, i)
            assert len(t.encode()) == n
            echo_one(ws, check, f"text {n} bytes", t)
            echo_one(ws, check, f"binary {n} bytes", os.urandom(n))

        echo_pipelined(ws, check, [os.urandom(1000 + i) for i in range(20)])
        echo_fragmented(ws, check, "text", ["frag", "mént", "ed ✓"])
        echo_fragmented(ws, check, "binary", [b"\x00\x01", b"", b"\x02"])
        ping_and_close(ws, check, "interop done")

    return check.finish("interop")


if __name__ == "__main__":
    sys.exit(main())
