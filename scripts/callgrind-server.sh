#!/usr/bin/env bash
# User-space instructions per echoed message of a whole server (wsloop or
# the raw mio echo of benches/peers) under valgrind's callgrind.
#
#   scripts/callgrind-server.sh SERVER SIZE [text]
#     SERVER  wsloop (target/release/wsloop), raw-echo
#             (benches/peers/target/release/raw-echo), fastwebsockets or
#             tungstenite (the peers' servers, benches/peers), or a path to
#             another build of the wsloop binary
#     SIZE    payload bytes (1048576, 16384, 64...)
#     text    send text frames (ASCII) instead of binary
#
# A Python driver opens one connection (a real handshake), sends N masked
# messages one at a time, checks each echo, and closes; SIGTERM ends the
# server and callgrind writes its total. The count per message is
# (Ir(N2) - Ir(N1)) / (N2 - N1), so start-up, the handshake and shutdown
# cancel out. Kernel work (the copies in recv and send) is not counted:
# this judges the server's own code, the wall clock judges the rest.
#
# Environment: N1, N2 (default by size: 2/12 from 512 KiB, 300/1800 from
# 4 KiB, else 1000/6000); DEPTH=k sends k messages in one write and then
# reads their k echoes (pipelined small echoes; N1 and N2 are rounded up to
# multiples of k); OUT=dir keeps the callgrind.out files (for
# callgrind_annotate). glibc copies are counted as vector loops, as in
# scripts/callgrind.sh (REP=1 keeps rep movsb, counted once per byte).
# Everything stays on 127.0.0.1; ports are picked below 23000-25000, outside
# the kernel's ephemeral range.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 2 ] || { sed -n '2,16p' "$0"; exit 2; }
server=$1 size=$2 text=${3:-}
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
case $server in
    wsloop) bin=target/release/wsloop ;;
    raw-echo) bin=benches/peers/target/release/raw-echo ;;
    fastwebsockets) bin=benches/peers/target/release/peer-fastwebsockets ;;
    tungstenite) bin=benches/peers/target/release/peer-tungstenite ;;
    *) bin=$server ;;
esac
[ -x "$bin" ] || { echo "missing $bin (build it first)" >&2; exit 1; }
if [ "$size" -ge 524288 ]; then n1=${N1:-2} n2=${N2:-12}
elif [ "$size" -ge 4096 ]; then n1=${N1:-300} n2=${N2:-1800}
else n1=${N1:-1000} n2=${N2:-6000}; fi
depth=${DEPTH:-1}
n1=$(( (n1 + depth - 1) / depth * depth )) n2=$(( (n2 + depth - 1) / depth * depth ))
OUT=${OUT:-}
if [ -z "$OUT" ]; then
    tmp=$(mktemp -d)
    OUT=$tmp
    trap 'rm -rf "$tmp"' EXIT
fi
mkdir -p "$OUT"
tunables=glibc.cpu.x86_rep_movsb_threshold=4294967295:glibc.cpu.x86_rep_stosb_threshold=4294967295
[ "${REP:-0}" = 1 ] && tunables=""

driver=$OUT/drive.py
cat >"$driver" <<'PY'
import socket, struct, sys, time
port, n, size, text = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "text"
depth = int(sys.argv[5])
deadline = time.time() + 60
while True:
    try:
        s = socket.create_connection(("127.0.0.1", port))
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("the server never listened")
        time.sleep(0.1)
s.settimeout(60)
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
buf = b""
while b"\r\n\r\n" not in buf:
    buf += s.recv(4096)
buf = buf.split(b"\r\n\r\n", 1)[1]
payload = (b"abcdefghijklmnopqrstuvwxyz012345" * (size // 32 + 1))[:size]
key = b"\x37\xfa\x21\x3d"
k = int.from_bytes((key * (size // 4 + 1))[:size], "big")
masked = (int.from_bytes(payload, "big") ^ k).to_bytes(size, "big")
op = 0x81 if text else 0x82
if size < 126:
    hdr = bytes([op, 0x80 | size])
elif size < 65536:
    hdr = bytes([op, 0xFE]) + struct.pack(">H", size)
else:
    hdr = bytes([op, 0xFF]) + struct.pack(">Q", size)
frame = hdr + key + masked
def need(m):
    global buf
    while len(buf) < m:
        d = s.recv(1 << 20)
        if not d:
            sys.exit("EOF before the echo")
        buf += d
for _ in range(n // depth):
    s.sendall(frame * depth)
    for _ in range(depth):
        need(2)
        l, h = buf[1] & 0x7F, 2
        if l == 126:
            need(4); l, h = struct.unpack(">H", buf[2:4])[0], 4
        elif l == 127:
            need(10); l, h = struct.unpack(">Q", buf[2:10])[0], 10
        need(h + l)
        if buf[h:h + l] != payload:
            sys.exit("the echo differs")
        buf = buf[h + l:]
s.sendall(bytes([0x88, 0x82]) + key + bytes(a ^ b for a, b in zip(b"\x03\xe8", key)))
s.settimeout(5)
try:
    while s.recv(65536):
        pass
except OSError:
    pass
PY

# count N: total Ir of one server run with N messages.
count() {
    local n=$1 port file=$OUT/callgrind.out.$1 args=()
    while :; do
        port=$((23000 + RANDOM % 2000))
        ss -Htan "sport = :$port" | grep -q . || break
    done
    case $server in
        raw-echo | fastwebsockets | tungstenite) ;;
        *) args=(serve --idle-timeout 0 --ping-interval 0 --max-message 2M --max-frame 2M) ;;
    esac
    GLIBC_TUNABLES=$tunables valgrind --tool=callgrind --callgrind-out-file="$file" \
        "$bin" "${args[@]}" --addr "127.0.0.1:$port" >"$OUT/server.$n.log" 2>&1 &
    local pid=$!
    if ! python3 "$driver" "$port" "$n" "$size" "${text:-binary}" "$depth"; then
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        echo "the run with $n messages failed; server log:" >&2
        grep -v '^==' "$OUT/server.$n.log" >&2 || true
        exit 1
    fi
    kill -TERM "$pid"
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    awk '/^(summary|totals):/ {print $2; exit}' "$file"
}

a=$(count "$n1")
b=$(count "$n2")
[ "$depth" = 1 ] && what="" || what=", $depth in flight"
echo "$server $size ${text:-binary}$what: $(((b - a) / (n2 - n1))) Ir per message ($n1: $a, $n2: $b)"
