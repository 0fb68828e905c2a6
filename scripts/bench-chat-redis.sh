#!/usr/bin/env bash
# Chat throughput through Redis (a benchmark, not a test): one redis-server
# and three `wsloop serve --app chat --redis` instances on loopback ports,
# and one `wsloop bench --mode chat` whose members are spread over the
# three servers (each room's members take the servers in turn), so every
# publish made on one server is timed to its delivery on all three, in one
# process and on one clock. For each room layout and publish rate: RUNS
# runs; the table gives the median with min-max of delivered messages a
# second and of the p50 and p99 publish-to-delivery latency, and the sums
# of gaps, duplicates, reorders and undelivered messages (all must be 0).
# It also gives how late the bench itself sent (its schedule's lag: when
# it is large, the load generator, not the servers, is the limit) and the
# cores Redis and the servers used over each run (from /proc/PID/stat).
#
#   scripts/bench-chat-redis.sh                  the default grid (~6 min)
#   RUNS=1 DURATION=3 scripts/bench-chat-redis.sh   a quick try
#   LAYOUTS="10:500,1000" scripts/bench-chat-redis.sh   only 10 rooms at 2 rates
#
# LAYOUTS is a space-separated list of ROOMS:RATE,RATE,... (RATE: publishes
# a second in total; a room of M members turns one publish into M
# deliveries). Redis and the servers run on core 0 (SERVER_CPUS) and the
# bench on core 1 (BENCH_CPUS). Output: target/bench-chat-redis/ (one JSON
# line per run in runs.jsonl, the servers' and Redis's logs, table.txt).
# Everything started here is stopped by its PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

MEMBERS=${MEMBERS:-1000}
RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-2}
SIZE=${SIZE:-32}
LAYOUTS=${LAYOUTS:-"10:100,300,600,1000,1500 1:20,50,100,200"}
SERVER_CPUS=${SERVER_CPUS:-0}
BENCH_CPUS=${BENCH_CPUS:-1}
OUT=${OUT:-target/bench-chat-redis}

mkdir -p "$OUT"
: >"$OUT/runs.jsonl"

# A copy of the binary: another build without the `redis` feature may
# replace target/release/wsloop during the run. BIN=PATH skips the build.
if [ -z "${BIN:-}" ]; then
    cargo build --release -p wsloop-cli --all-features 2>&1 | tail -n 2
    cp target/release/wsloop "$OUT/wsloop"
    BIN=$OUT/wsloop
fi

# As scripts/test-all.sh does.
if ! command -v redis-server >/dev/null; then
    as_root=()
    [ "$(id -u)" = 0 ] || as_root=(sudo -n)
    "${as_root[@]}" apt-get update -q
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q redis-server
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# taskset execs the command, so $! of a backgrounded taskset is the
# program's (a backgrounded shell function would be a subshell's).
if command -v taskset >/dev/null; then
    on_servers=(taskset -c "$SERVER_CPUS")
    on_bench=(taskset -c "$BENCH_CPUS")
else
    on_servers=()
    on_bench=()
fi

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# An HTTP GET's status line on 127.0.0.1:$1 (empty if nothing answers).
http_status() {
    local line=""
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 0
    printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$2" >&3
    read -r -t 2 line <&3 || true
    exec 3<&- 3>&-
    printf '%s' "$line"
}

# Waits up to 10 s for LOG's process to make "${@:2}" succeed; stops the
# script with LOG's end if it does not.
wait_for() {
    local log=$1
    shift
    for _ in $(seq 100); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    echo "bench-chat-redis: timed out waiting for: $* ($log ends with:)" >&2
    tail -n 5 "$log" >&2
    exit 1
}

redis_up() {
    local line=""
    { exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT"; } 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    read -r -t 2 line <&3 || true
    exec 3<&- 3>&-
    [[ "$line" == +PONG* ]]
}

# CPU time (clock ticks) of Redis and the servers so far.
cpu_ticks() {
    local t=0 p f
    for p in "${pids[@]}"; do
        # Fields 14 and 15 of /proc/PID/stat, after the ")" of the name.
        f=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null) || continue
        set -- $f
        t=$((t + ${12} + ${13}))
    done
    echo "$t"
}

ready() { [[ "$(http_status "$1" /readyz)" == *" 200 "* ]]; }

REDIS_PORT=$(free_port)
"${on_servers[@]}" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
    --appendonly no --loglevel warning >"$OUT/redis.log" 2>&1 &
pids+=($!)
wait_for "$OUT/redis.log" redis_up

urls=()
server_pids=()
for i in 1 2 3; do
    port=$(free_port)
    # Every run takes fresh room names: allow more than a day of them.
    "${on_servers[@]}" "$BIN" serve --app chat --addr "127.0.0.1:$port" \
        --redis "redis://127.0.0.1:$REDIS_PORT" --max-rooms 100000 \
        >"$OUT/server-$i.log" 2>&1 &
    pids+=($!)
    server_pids+=($!)
    urls+=("ws://127.0.0.1:$port/ws")
    wait_for "$OUT/server-$i.log" ready "$port"
done

{
    echo "redis-server $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$REDIS_PORT"
    echo "servers ${urls[*]} (cpus $SERVER_CPUS), bench cpus $BENCH_CPUS"
    echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at start"
} | tee "$OUT/setup.txt"

for layout in $LAYOUTS; do
    rooms=${layout%%:*}
    rates=${layout#*:}
    for rate in ${rates//,/ }; do
        for run in $(seq "$RUNS"); do
            cmd=("${on_bench[@]}" "$BIN" bench "${urls[@]}" --mode chat
                --conns "$MEMBERS" --rooms "$rooms" --rate "$rate" --size "$SIZE"
                --warmup "$WARMUP" --duration "$DURATION" --json)
            status=0
            cpu0=$(cpu_ticks)
            t0=$(date +%s.%N)
            line=$("${cmd[@]}" 2>>"$OUT/bench.err") || status=$?
            cpu1=$(cpu_ticks)
            t1=$(date +%s.%N)
            # Cores busy in Redis and the servers over the whole run
            # (connect and close included).
            cpu_s=$(python3 -c "print(round(($cpu1 - $cpu0) / $(getconf CLK_TCK), 2))")
            wall_s=$(python3 -c "print(round($t1 - $t0, 3))")
            cores=$(python3 -c "print(round($cpu_s / $wall_s, 2))")
            if [ -z "$line" ]; then
                echo "bench-chat-redis: no report from: ${cmd[*]} (status $status)" >&2
                exit 1
            fi
            printf '{"layout_rooms":%s,"run":%s,"status":%s,"server_cores":%s,"server_cpu_s":%s,"wall_s":%s,"report":%s}\n' \
                "$rooms" "$run" "$status" "$cores" "$cpu_s" "$wall_s" "$line" >>"$OUT/runs.jsonl"
            python3 - "$line" "$status" "$cores" <<'EOF'
import json, sys
r = json.loads(sys.argv[1]); l = r["latency_us"]
print(f'  rooms {r["rooms"]:>3} rate {r["rate"]:>6}/s: {r["deliveries_per_s"]:>10.0f} deliveries/s'
      f'  p50 {l["p50"]/1e3:8.2f} ms  p99 {l["p99"]/1e3:8.2f} ms'
      f'  gaps {r["gaps"]} dup {r["duplicates"]} reord {r["reorders"]} undeliv {r["undelivered"]}'
      f'  errors {r["errors"]}  exit {sys.argv[2]}  redis+servers {sys.argv[3]} cores')
EOF
        done
    done
done

for p in "${server_pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "bench-chat-redis: server $p died (see $OUT/server-*.log)" >&2; exit 1; }
done

python3 - "$OUT/runs.jsonl" "$MEMBERS" <<'EOF' | tee "$OUT/table.txt"
import json, statistics, sys
from collections import defaultdict
members = int(sys.argv[2])
groups = defaultdict(list)
for line in open(sys.argv[1]):
    row = json.loads(line)
    r = row["report"]
    # Every publish sent went to every member of its room (undelivered
    # is checked to be 0): CPU of Redis and the servers per delivery, over
    # the whole run (connects and closes included, so an upper bound).
    per = row["server_cpu_s"] * 1e6 / max(1, r["sent"] * (members // r["rooms"]))
    groups[(r["rooms"], r["rate"])].append((r, row["server_cores"], per))
def cell(xs, scale=1.0, fmt="{:.0f}"):
    xs = [x * scale for x in xs]
    return f'{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}-{fmt.format(max(xs))})'
print(f"{members} members over 3 servers; median (min-max) of {len(next(iter(groups.values())))} runs")
print("| rooms x members | publishes/s | delivered msgs/s | p50 ms | p99 ms | bench's own send lag p99 ms | gaps/dup/reord/undeliv | errors | Redis+servers cores | their CPU us/delivery |")
print("|---|---|---|---|---|---|---|---|---|---|")
for (rooms, rate), rs in sorted(groups.items()):
    reps = [r for r, _, _ in rs]
    bad = [sum(r[k] for r in reps) for k in ("gaps", "duplicates", "reorders", "undelivered")]
    print(f'| {rooms} x {members // rooms} | {rate} | {cell([r["deliveries_per_s"] for r in reps])} '
          f'| {cell([r["latency_us"]["p50"] for r in reps], 1e-3, "{:.2f}")} '
          f'| {cell([r["latency_us"]["p99"] for r in reps], 1e-3, "{:.2f}")} '
          f'| {cell([r["lag_us"]["p99"] for r in reps], 1e-3, "{:.1f}")} '
          f'| {"/".join(map(str, bad))} | {sum(r["errors"] for r in reps)} '
          f'| {cell([c for _, c, _ in rs], 1.0, "{:.2f}")} '
          f'| {cell([p for _, _, p in rs], 1.0, "{:.1f}")} |')
EOF
