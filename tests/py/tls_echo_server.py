"""Interop peer over TLS: a Python `websockets` echo server with an ssl
context, for the wsloop client.

Usage: tls_echo_server.py CERT_FILE KEY_FILE [PORT]   (default 0: a free port)

Listens on 127.0.0.1 with TLS (certificate chain and key in PEM), echoes
every message unchanged (up to 64 MiB). Prints "PORT <n>" on stdout once
listening. Stops when stdin reaches EOF.
"""

import ssl
import sys
import threading

from websockets.sync.server import serve


def echo(ws):
    for message in ws:
        ws.send(message)


def main():
    cert, key = sys.argv[1], sys.argv[2]
    port = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    with serve(echo, "127.0.0.1", port, ssl=ctx, max_size=64 << 20) as server:
        print(f"PORT {server.socket.getsockname()[1]}", flush=True)

        def stop_on_eof():
            sys.stdin.read()
            server.shutdown()

        threading.Thread(target=stop_on_eof, daemon=True).start()
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
