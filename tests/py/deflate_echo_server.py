"""Interop peer: a Python `websockets` echo server with permessage-deflate
(the library's default) for the wsloop client.

Usage: deflate_echo_server.py [PORT]        (default 0: a free port)

Like echo_server.py, and for each connection prints on stdout the
client's offer and the server's answer:
    OFFER <Sec-WebSocket-Extensions of the request, or None>
    EXTENSIONS <Sec-WebSocket-Extensions of the response, or None>
Prints "PORT <n>" first. Stops when stdin reaches EOF.
"""

import sys
import threading

from websockets.sync.server import serve


def echo(ws):
    print(f"OFFER {ws.request.headers.get('Sec-WebSocket-Extensions')}", flush=True)
    print(f"EXTENSIONS {ws.response.headers.get('Sec-WebSocket-Extensions')}", flush=True)
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
