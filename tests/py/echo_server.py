"""Interop peer: a Python `websockets` echo server for the wsloop client.

Usage: echo_server.py [PORT]        (default 0: a free port)

Listens on 127.0.0.1, echoes every text and binary message unchanged
(messages up to 64 MiB), answers pings and closes as the library does.
Prints "PORT <n>" on stdout once listening. Stops when stdin reaches EOF
(so it never outlives the test that started it). Compression is the
library's default: permessage-deflate only if the client offers it.
"""

import sys
import threading

from websockets.sync.server import serve


def echo(ws):
    for message in ws:
        ws.send(message)


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    with serve(echo, "127.0.0.1", port, max_size=64 << 20) as server:
        print(f"PORT {server.socket.getsockname()[1]}", flush=True)

        def stop_on_eof():
            sys.stdin.read()
            server.shutdown()

        threading.Thread(target=stop_on_eof, daemon=True).start()
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
