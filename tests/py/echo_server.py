"""Interop peer: a Python `websockets` echo server for the wsloop client.

Usage: echo_server.py [--tls CERT_FILE KEY_FILE] [--report] [PORT]
       (PORT 0, the default, takes a free port)

Listens on 127.0.0.1, echoes every text and binary message unchanged
(messages up to 64 MiB), answers pings and closes as the library does.
Prints "PORT <n>" on stdout once listening. Stops when stdin reaches EOF
(so it never outlives the test that started it). Compression is the
library's default: permessage-deflate only if the client offers it.

--tls: serve wss:// with this certificate chain and key (PEM).
--report: for each connection, print the client's offer and the answer:
    OFFER <Sec-WebSocket-Extensions of the request, or None>
    EXTENSIONS <Sec-WebSocket-Extensions of the response, or None>
"""

import argparse
import ssl
import sys
import threading

from websockets.sync.server import serve


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tls", nargs=2, metavar=("CERT_FILE", "KEY_FILE"))
    p.add_argument("--report", action="store_true")
    p.add_argument("port", nargs="?", type=int, default=0)
    args = p.parse_args()

    def echo(ws):
        if args.report:
            for what, headers in (("OFFER", ws.request.headers), ("EXTENSIONS", ws.response.headers)):
                print(f"{what} {headers.get('Sec-WebSocket-Extensions')}", flush=True)
        for message in ws:
            ws.send(message)

    ctx = None
    if args.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(*args.tls)
    with serve(echo, "127.0.0.1", args.port, ssl=ctx, max_size=64 << 20) as server:
        print(f"PORT {server.socket.getsockname()[1]}", flush=True)

        def stop_on_eof():
            sys.stdin.read()
            server.shutdown()

        threading.Thread(target=stop_on_eof, daemon=True).start()
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
