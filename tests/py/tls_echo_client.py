"""Interop check over TLS: Python's ssl + `websockets` client against
`wsloop serve --tls-cert FILE --tls-key FILE`.

Usage: tls_echo_client.py wss://localhost:PORT/ CA_FILE

Verifies the server's certificate against CA_FILE (hostname checked),
then: GET /healthz over HTTPS; text and binary echo at 0, 125, 126, 65535,
65536 bytes and 16 MiB; 20 pipelined messages; a fragmented message; a
ping; close 1000 and the server's close reply. Also checks that Python's
default trust store rejects the test certificate. Prints one line per
check; exits 0 only if all pass.
"""

import os
import ssl
import sys

from websockets.sync.client import connect

from interop import Checks, check_healthz, echo_fragmented, echo_one, echo_pipelined, ping_and_close

SIZES = [0, 125, 126, 65535, 65536, 16 << 20]


def main():
    uri, cafile = sys.argv[1], sys.argv[2]
    check = Checks()

    ctx = ssl.create_default_context(cafile=cafile)
    check("verification on", ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname)

    check_healthz(check, uri, "GET /healthz over HTTPS", context=ctx)

    # The system trust store does not know the test CA.
    try:
        with connect(uri, ssl=ssl.create_default_context(), open_timeout=5):
            check("default trust rejects the test certificate", False, "connected")
    except ssl.SSLCertVerificationError as e:
        check("default trust rejects the test certificate", True)
        print(f"     ({e.verify_message})")

    with connect(uri, ssl=ctx, max_size=None, open_timeout=5, close_timeout=5) as ws:
        tls = ws.socket
        print(f"     TLS: {tls.version()} {tls.cipher()[0]} ALPN={tls.selected_alpn_protocol()}")
        for i, n in enumerate(SIZES):
            t = ("héllo ✓ " * (n // 8 + 1)).encode()[:n].decode("utf-8", "ignore")
            t += "x" * (n - len(t.encode()))
            echo_one(ws, check, f"text {n} bytes", t, timeout=30)
            echo_one(ws, check, f"binary {n} bytes", os.urandom(n), timeout=30)

        echo_pipelined(ws, check, [os.urandom(1000 + i) for i in range(20)])
        echo_fragmented(ws, check, "text", ["frag", "mént", "ed ✓"])
        ping_and_close(ws, check, "tls interop done")

    return check.finish("TLS interop")


if __name__ == "__main__":
    sys.exit(main())
