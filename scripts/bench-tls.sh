#!/usr/bin/env bash
# Throughput of `wsloop serve` over TLS (wss://) as a ratio to plain ws://,
# with `wsloop bench` as the load generator.
#
#   scripts/bench-tls.sh                      3 runs, 5 s measured + 1 s warmup
#   RUNS=1 DURATION=3s scripts/bench-tls.sh
#
# Scenarios (the same as scripts/compare-peers.sh):
#   small    100 conns x 16 in flight x 32 B binary         msgs/s
#   medium   50 conns x 4 in flight x 16 KiB binary         msgs/s, MB/s
#   latency  50 conns x 1 in flight x 64 B binary           round trip p50, p99
#            (not in the default SCENARIOS; for it the TLS/plain ratio
#            is of times, so lower is better)
#
# The server (target/release/wsloop serve --idle-timeout 0 --ping-interval 0
# --max-message 2M --max-frame 2M, plus --tls-cert/--tls-key for TLS) runs
# pinned to core $SERVER_CPU, the bench to core $BENCH_CPU (taskset); a
# fresh server for every measurement, stopped by its PID. Runs interleave
# (run 1: small plain, small TLS, medium plain, medium TLS; then run 2 ...)
# so each TLS/plain ratio compares measurements taken close together. The
# certificate is a test CA + leaf for localhost made with openssl (the
# README recipe) under target/bench-results/; the bench verifies it
# (--ca), so the TLS handshake is the real one: TLS 1.3 with
# TLS_AES_128_GCM_SHA256, which wsloop's client configuration prefers
# (wsloop::tls::provider; the server follows the client's order).
#
# Environment:
#   RUNS=3  DURATION=5s  WARMUP=1s       runs; measured and warmup time
#   SCENARIOS="small medium"
#   SERVER_CPU=0  BENCH_CPU=1            cores for taskset
#   BASE_PORT=21000                      ports BASE_PORT + run*100 + ...
#   NO_BUILD=1                           use target/release/wsloop as built
#                                        (it must have the `tls` feature)
#   WSLOOP=path                          the server binary (implies NO_BUILD=1)
#   BENCH_BIN=path                       the load generator (default: $WSLOOP);
#                                        to compare two servers, keep one bench
#                                        for both: its TLS goes through the
#                                        same `Stream` code
#
# Output: JSON lines in target/bench-results/tls-DATE.jsonl (the bench's
# own JSON under "result"), server logs beside it, and a markdown table on
# stdout and in tls-DATE.md: median (min–max) per cell and the median of
# the per-run TLS/plain ratios. The machine is shared and noisy: compare
# ratios within one invocation, not absolute numbers across invocations.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
SCENARIOS=${SCENARIOS:-"small medium"}
SERVER_CPU=${SERVER_CPU:-0}
BENCH_CPU=${BENCH_CPU:-1}
BASE_PORT=${BASE_PORT:-21000}
[ -n "${WSLOOP:-}" ] && NO_BUILD=1
WSLOOP=${WSLOOP:-target/release/wsloop}
BENCH_BIN=${BENCH_BIN:-$WSLOOP}

if [ "${NO_BUILD:-0}" != 1 ]; then
    echo "building wsloop (release, --features tls)" >&2
    cargo build --release -p wsloop-cli --features tls --bin wsloop >&2
fi
[ -x "$WSLOOP" ] || { echo "missing $WSLOOP (build it, or unset NO_BUILD)" >&2; exit 1; }
[ -x "$BENCH_BIN" ] || { echo "missing $BENCH_BIN" >&2; exit 1; }
command -v openssl >/dev/null || { echo "needs the openssl command" >&2; exit 1; }
command -v taskset >/dev/null || { echo "needs taskset (util-linux)" >&2; exit 1; }

stamp=$(date +%Y%m%d-%H%M%S)
outdir=target/bench-results
results="$outdir/tls-$stamp.jsonl"
logs="$outdir/tls-$stamp.logs"
certs="$logs/certs"
mkdir -p "$certs"
: >"$results"

(
    cd "$certs"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.pem -days 30 -subj "/CN=wsloop bench CA"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout server.key -out server.csr -subj "/CN=localhost"
    printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=CA:FALSE' \
        'keyUsage=digitalSignature' 'extendedKeyUsage=serverAuth' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days 30 -extfile server.ext -out server.pem
) >"$logs/openssl.log" 2>&1 || { cat "$logs/openssl.log" >&2; exit 1; }

SERVER_PID=
stop_server() {
    [ -n "$SERVER_PID" ] || return 0
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# start_server plain|tls PORT LOG: starts it pinned, sets SERVER_PID, waits
# until the port listens.
start_server() {
    local transport=$1 port=$2 log=$3
    local cmd=("$WSLOOP" serve --addr "127.0.0.1:$port" --idle-timeout 0 --ping-interval 0
        --max-message 2M --max-frame 2M)
    if [ "$transport" = tls ]; then
        cmd+=(--tls-cert "$certs/server.pem" --tls-key "$certs/server.key")
    fi
    if ss -Hltn "sport = :$port" | grep -q .; then
        echo "port $port is already in use; set BASE_PORT" >&2
        exit 1
    fi
    # taskset execs the server, so $! is the server's own PID.
    taskset -c "$SERVER_CPU" "${cmd[@]}" >>"$log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 200); do
        ss -Hltn "sport = :$port" | grep -q . && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "the $transport server did not start listening on 127.0.0.1:$port (see $log)" >&2
    return 1
}

bench_args() {
    case $1 in
        small) echo "--mode echo --conns 100 --pipeline 16 --size 32 --binary" ;;
        medium) echo "--mode echo --conns 50 --pipeline 4 --size 16K --binary" ;;
        latency) echo "--mode latency --conns 50 --size 64 --binary" ;;
        *) echo "unknown scenario '$1'" >&2; exit 2 ;;
    esac
}

echo "results: $results" >&2
run=0
while [ "$run" -lt "$RUNS" ]; do
    run=$((run + 1))
    si=0
    for scenario in $SCENARIOS; do
        si=$((si + 1))
        vi=0
        for transport in plain tls; do
            vi=$((vi + 1))
            port=$((BASE_PORT + run * 100 + si * 10 + vi))
            log="$logs/$transport.$scenario.$run.log"
            if [ "$transport" = tls ]; then
                target=(wss://localhost:$port/ --ca "$certs/ca.pem")
            else
                target=(ws://127.0.0.1:$port/)
            fi
            printf 'run %d/%d  %-7s %-6s ' "$run" "$RUNS" "$scenario" "$transport" >&2
            json=null
            code=-1
            if start_server "$transport" "$port" "$log"; then
                set +e
                # shellcheck disable=SC2046 # bench_args is split on purpose
                out=$(taskset -c "$BENCH_CPU" timeout 600 "$BENCH_BIN" bench "${target[@]}" \
                    $(bench_args "$scenario") --duration "$DURATION" --warmup "$WARMUP" \
                    --json 2>>"$log")
                code=$?
                set -e
                line=$(printf '%s\n' "$out" | tail -n 1)
                if printf '%s' "$line" | python3 -c 'import json,sys; json.loads(sys.stdin.read())' 2>/dev/null; then
                    json=$line
                fi
            fi
            stop_server
            printf '{"transport":"%s","scenario":"%s","run":%d,"exit":%d,"result":%s}\n' \
                "$transport" "$scenario" "$run" "$code" "$json" >>"$results"
            if [ "$code" = 0 ]; then echo "ok" >&2; else echo "exit $code (log: $log)" >&2; fi
        done
    done
done

table="$outdir/tls-$stamp.md"
python3 - "$results" "$SCENARIOS" "$WSLOOP" "$BENCH_BIN" <<'PY' | tee "$table"
import json, statistics, subprocess, sys

path, scenarios = sys.argv[1], sys.argv[2].split()
rows = [json.loads(l) for l in open(path) if l.strip()]
METRICS = {
    "small": [("msgs/s", "msgs_per_s")],
    "medium": [("msgs/s", "msgs_per_s"), ("MB/s", "mb_per_s")],
    "latency": [("rtt p50 µs", "rtt_us.p50"), ("rtt p99 µs", "rtt_us.p99")],
}
DESC = {"small": "100×16×32 B", "medium": "50×4×16 KiB", "latency": "50×1×64 B"}

def fmt(v):
    a = abs(v)
    if a >= 1e6:
        return f"{v/1e6:.2f}M"
    if a >= 1e4:
        return f"{v/1e3:.0f}k"
    if a >= 100:
        return f"{v:.0f}"
    return f"{v:.1f}"

def value(r, key):
    res = r.get("result")
    if r.get("exit") != 0 or not isinstance(res, dict):
        return None
    v = res
    for k in key.split("."):
        v = v.get(k) if isinstance(v, dict) else None
    return v if isinstance(v, (int, float)) else None

try:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
except OSError:
    rev = "?"
runs = max((r["run"] for r in rows), default=0)
print(f"\n## wsloop serve: wss:// vs ws:// ({runs} run(s); commit {rev}; {path})\n")
if sys.argv[3] != "target/release/wsloop" or sys.argv[4] != sys.argv[3]:
    print(f"Server {sys.argv[3]}, load generator {sys.argv[4]}.\n")
print("Cell: median (min–max) over runs; ratio: median over runs of TLS/plain in the same run.\n")
print("| scenario | metric | ws:// | wss:// | TLS/plain |")
print("|---|---|---|---|---|")
failed = [r for r in rows if r.get("exit") != 0]
for sc in scenarios:
    for label, key in METRICS.get(sc, []):
        cells = []
        per = {}
        for tr in ("plain", "tls"):
            vals = {r["run"]: value(r, key) for r in rows if r["scenario"] == sc and r["transport"] == tr}
            vals = {k: v for k, v in vals.items() if v is not None}
            per[tr] = vals
            v = list(vals.values())
            if not v:
                cells.append("–")
            elif len(v) == 1:
                cells.append(fmt(v[0]))
            else:
                cells.append(f"{fmt(statistics.median(v))} ({fmt(min(v))}–{fmt(max(v))})")
        ratios = [per["tls"][k] / per["plain"][k] for k in per["tls"] if k in per["plain"] and per["plain"][k]]
        if ratios:
            rc = f"{statistics.median(ratios):.2f}×"
            if len(ratios) > 1:
                rc += f" ({min(ratios):.2f}–{max(ratios):.2f})"
        else:
            rc = "–"
        print(f"| {sc} {DESC.get(sc, '')} | {label} | {cells[0]} | {cells[1]} | {rc} |")
if failed:
    print(f"\n{len(failed)} measurement(s) failed (exit status not 0): see the logs beside {path}")
PY
