#!/usr/bin/env bash
# Soak run (a benchmark, not a test): two `wsloop serve` processes under a
# mixed load for DURATION seconds (default 600), sampling their memory and
# file descriptors every 10 s.
#
#   chat server  <- bench/examples/soak.rs: ~200 listeners in 10 rooms with one
#                   replaced every 200 ms (clean close or dropped TCP),
#                   churners (connect/join/publish/see it/close or drop),
#                   broadcasts and room messages every 100 ms, a 4 KiB x 50/s
#                   firehose room with an in-order checker, and slow readers
#                   that stop reading for 45 s (the overflow policy closes
#                   them with 1008)
#   echo server  <- `wsloop bench` in a loop: 10 s of echo (100 conns,
#                   pipeline 4, 512 B), 300 idle connections opened and held
#                   5 s then closed, then a pause
#
# Output: a CSV (target/soak/samples.csv: time, RSS KiB and fd count of each
# server, established connections to each), the driver's and bench's logs,
# and a table at the end with the verdicts: RSS plateau (max of the last
# half within 10% + 2 MiB of the max of the first half, after a 60 s
# warm-up), no fd leak (fds once the load stops equal fds before it
# started), errors counted by the driver and bench.
#
#   scripts/soak.sh                      10 minutes
#   DURATION=60 scripts/soak.sh          a quick try
#   LISTENERS=100 SLOW=2 scripts/soak.sh lighter
#
# Load is moderate on purpose (the machine is shared): a few hundred
# connections; the servers run on core 0 and the load on core 1.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-600}
LISTENERS=${LISTENERS:-200}
CHURNERS=${CHURNERS:-4}
SLOW=${SLOW:-3}
FIREHOSE=${FIREHOSE:-50}
OUT=${OUT:-target/soak}
mkdir -p "$OUT"
rm -f "$OUT"/bench.jsonl "$OUT"/bench.err "$OUT"/bench.fail

cargo build --release -p wsloop-cli --bin wsloop -p wsloop-bench --example soak 2>&1 | tail -n 2
BIN=target/release/wsloop
DRIVER=target/release/examples/soak

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CHAT_PORT=$(free_port)
ECHO_PORT=$(free_port)

# taskset execs the command, so $! of a backgrounded pin is the program's.
if command -v taskset >/dev/null; then pin() { taskset -c "$@"; }; else pin() { "${@:2}"; }; fi

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# The chat server gets a small write queue so slow readers meet the
# overflow policy within seconds.
RUST_LOG=warn taskset -c 0 "$BIN" serve --app chat --addr "127.0.0.1:$CHAT_PORT" \
    --write-high 256K --write-limit 1M --overflow close \
    >"$OUT/chat-server.log" 2>&1 &
CHAT_PID=$!
pids+=("$CHAT_PID")
RUST_LOG=warn taskset -c 0 "$BIN" serve --addr "127.0.0.1:$ECHO_PORT" \
    >"$OUT/echo-server.log" 2>&1 &
ECHO_PID=$!
pids+=("$ECHO_PID")
for port in "$CHAT_PORT" "$ECHO_PORT"; do
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
        sleep 0.1
    done
done

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
fds() { ls "/proc/$1/fd" 2>/dev/null | wc -l; }
# Established TCP connections whose local port is $1 (server side).
conns() {
    local hex
    hex=$(printf '%04X' "$1")
    awk -v p=":$hex" '$2 ~ p"$" && $4 == "01" {n++} END {print n+0}' /proc/net/tcp
}

CHAT_FD0=$(fds "$CHAT_PID")
ECHO_FD0=$(fds "$ECHO_PID")
echo "chat server pid $CHAT_PID port $CHAT_PORT ($CHAT_FD0 fds idle)"
echo "echo server pid $ECHO_PID port $ECHO_PORT ($ECHO_FD0 fds idle)"
echo "duration ${DURATION}s; samples every 10 s in $OUT/samples.csv"

taskset -c 1 "$DRIVER" --url "ws://127.0.0.1:$CHAT_PORT/ws" --duration "$DURATION" \
    --listeners "$LISTENERS" --churners "$CHURNERS" --slow "$SLOW" \
    --firehose "$FIREHOSE" >"$OUT/driver.log" 2>"$OUT/driver.err" &
DRIVER_PID=$!
pids+=("$DRIVER_PID")

# The bench loop: echo, connect/hold, pause; stops by DURATION.
(
    end=$(( $(date +%s) + DURATION - 20 ))
    i=0
    while [ "$(date +%s)" -lt "$end" ]; do
        i=$((i + 1))
        pin 1 "$BIN" bench "ws://127.0.0.1:$ECHO_PORT/" --mode echo --conns 100 \
            --pipeline 4 --size 512 --warmup 0 --duration 10s --json \
            >>"$OUT/bench.jsonl" 2>>"$OUT/bench.err" || echo "bench run $i echo: exit $?" >>"$OUT/bench.fail"
        [ "$(date +%s)" -lt "$end" ] || break
        pin 1 "$BIN" bench "ws://127.0.0.1:$ECHO_PORT/" --mode connect --conns 300 \
            --hold 5s --json \
            >>"$OUT/bench.jsonl" 2>>"$OUT/bench.err" || echo "bench run $i connect: exit $?" >>"$OUT/bench.fail"
        sleep 10
    done
) &
BENCH_LOOP=$!
pids+=("$BENCH_LOOP")
: >"$OUT/bench.fail"

echo "t_s,chat_rss_kib,chat_fds,chat_conns,echo_rss_kib,echo_fds,echo_conns" >"$OUT/samples.csv"
start=$(date +%s)
sample() {
    local t=$(( $(date +%s) - start ))
    echo "$t,$(rss "$CHAT_PID"),$(fds "$CHAT_PID"),$(conns "$CHAT_PORT"),$(rss "$ECHO_PID"),$(fds "$ECHO_PID"),$(conns "$ECHO_PORT")" >>"$OUT/samples.csv"
}
while kill -0 "$DRIVER_PID" 2>/dev/null; do
    sample
    for _ in $(seq 10); do
        kill -0 "$DRIVER_PID" 2>/dev/null || break
        sleep 1
    done
done
set +e
wait "$DRIVER_PID"
DRIVER_RC=$?
wait "$BENCH_LOOP"
set -e
# Give the servers their close timeouts to let go of the last peers.
sleep 7
sample
CHAT_FD1=$(fds "$CHAT_PID")
ECHO_FD1=$(fds "$ECHO_PID")
for p in "$CHAT_PID" "$ECHO_PID"; do kill -0 "$p" 2>/dev/null || { echo "server $p died"; exit 1; }; done

BENCH_ERRORS=$(python3 - "$OUT/bench.jsonl" <<'EOF'
import json, sys
n = 0
for line in open(sys.argv[1]):
    line = line.strip()
    if not line.startswith("{"):
        continue
    d = json.loads(line)
    e = d.get("errors", 0)
    n += sum(e.values()) if isinstance(e, dict) else int(e or 0)
print(n)
EOF
)
BENCH_RUNS=$(grep -c '^{' "$OUT/bench.jsonl" || true)
BENCH_FAILS=$(wc -l <"$OUT/bench.fail")

python3 - "$OUT/samples.csv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print()
print("| t (s) | chat RSS (MiB) | chat fds | chat conns | echo RSS (MiB) | echo fds | echo conns |")
print("|------:|---------------:|---------:|-----------:|---------------:|---------:|-----------:|")
last = len(rows) - 1
for i, r in enumerate(rows):
    t = int(r["t_s"])
    # One row a minute, plus the first and the last two.
    if i in (0, last - 1, last) or (t % 60) < 10:
        print(f"| {t:>5} | {int(r['chat_rss_kib'])/1024:>14.1f} | {r['chat_fds']:>8} | {r['chat_conns']:>10} "
              f"| {int(r['echo_rss_kib'])/1024:>14.1f} | {r['echo_fds']:>8} | {r['echo_conns']:>10} |")
live = [r for r in rows[:-1] if int(r["t_s"]) >= 60]
half = len(live) // 2
for name in ("chat", "echo"):
    k = f"{name}_rss_kib"
    if half >= 2:
        a = max(int(r[k]) for r in live[:half])
        b = max(int(r[k]) for r in live[half:])
        ok = b <= a * 1.10 + 2048
        print(f"{name}: RSS max {a/1024:.1f} MiB in the first half, {b/1024:.1f} MiB in the second: "
              f"{'plateau' if ok else 'STILL GROWING'}")
EOF
echo
echo "chat fds: $CHAT_FD0 before, $CHAT_FD1 after the load ($( [ "$CHAT_FD0" = "$CHAT_FD1" ] && echo 'no leak' || echo 'LEAK?'))"
echo "echo fds: $ECHO_FD0 before, $ECHO_FD1 after the load ($( [ "$ECHO_FD0" = "$ECHO_FD1" ] && echo 'no leak' || echo 'LEAK?'))"
echo "driver: $(grep '^final' "$OUT/driver.log" || echo 'no summary') (exit $DRIVER_RC)"
echo "bench: $BENCH_RUNS runs, $BENCH_ERRORS errors counted, $BENCH_FAILS runs with a nonzero exit"
for f in chat-server echo-server; do
    n=$(grep -ciE 'panic|error' "$OUT/$f.log" || true)
    echo "$f log: $n lines mentioning panic/error"
done
if [ "$DRIVER_RC" != 0 ] || [ "$BENCH_ERRORS" != 0 ] || [ "$BENCH_FAILS" != 0 ] \
    || [ "$CHAT_FD0" != "$CHAT_FD1" ] || [ "$ECHO_FD0" != "$ECHO_FD1" ]; then
    echo "SOAK: problems found (see $OUT)"
    exit 1
fi
echo "SOAK: ok"
