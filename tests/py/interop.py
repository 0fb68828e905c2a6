"""Shared by the interop clients (echo_client.py, tls_echo_client.py,
deflate_echo_client.py): a list of checks that prints one line per check,
and the echo checks every client runs on an open connection.
"""

import time
import urllib.request


class Checks:
    """Call with (name, ok, detail): prints "ok   name" or "FAIL name
    (detail)" and remembers failures; `finish` prints the summary and
    returns the exit code."""

    def __init__(self):
        self.failures = []
        self.start = time.monotonic()

    def __call__(self, name, ok, detail=""):
        print(("ok   " if ok else "FAIL ") + name + (f" ({detail})" if detail and not ok else ""), flush=True)
        if not ok:
            self.failures.append(name)

    def finish(self, what):
        took = time.monotonic() - self.start
        if self.failures:
            print(f"{len(self.failures)} checks failed: {self.failures}")
            return 1
        print(f"all {what} checks passed in {took:.2f}s")
        return 0


def describe(got):
    return repr(got) if len(got) <= 40 else f"{type(got).__name__} of {len(got)}"


def check_healthz(check, uri, name, context=None):
    """GET /healthz on the server of `uri` (ws:// or wss://) answers ok."""
    url = uri.replace("wss://", "https://").replace("ws://", "http://").rstrip("/") + "/healthz"
    with urllib.request.urlopen(url, timeout=5, context=context) as r:
        body = r.read().decode()
        check(name, r.status == 200 and body.strip() == "ok", f"{r.status} {body!r}")


def echo_one(ws, check, name, msg, timeout=10):
    """`msg` comes back equal within `timeout` seconds."""
    ws.send(msg)
    got = ws.recv(timeout=timeout)
    check(name, got == msg, f"got {type(got).__name__} of {len(got)}")


def echo_pipelined(ws, check, msgs):
    """Several messages in flight at once come back in order."""
    for m in msgs:
        ws.send(m)
    got = [ws.recv(timeout=10) for _ in msgs]
    check(f"{len(msgs)} pipelined messages", got == msgs)


def echo_fragmented(ws, check, name, parts):
    """An iterable is sent as a fragmented message; the echo is whole."""
    ws.send(parts)
    got = ws.recv(timeout=10)
    whole = parts[0][:0].join(parts)
    check(f"fragmented {name}", got == whole, describe(got))


def ping_and_close(ws, check, reason):
    """A ping is answered; close 1000 is answered with close 1000."""
    pong = ws.ping(b"are you there")
    check("ping answered", pong.wait(5))
    ws.close(1000, reason)
    rcvd = ws.protocol.close_rcvd
    check("close 1000 echoed", rcvd is not None and rcvd.code == 1000, f"close_rcvd={rcvd!r}")
