#!/usr/bin/env bash
# Load scenarios against wsloop and reference echo servers, with
# `wsloop bench` as the load generator, and a markdown table of the results.
#
#   scripts/compare-peers.sh                  3 runs, 5 s measured + 1 s warmup
#   RUNS=1 DURATION=3 scripts/compare-peers.sh
#
# Servers (benches/peers/, a separate crate outside the wsloop build):
#   raw-echo        the physical reference: one mio loop that answers the
#                   upgrade, then writes every frame straight back with the
#                   mask stripped (header rewritten, payload XORed); no
#                   message assembly, no validation. See
#                   benches/peers/src/bin/raw-echo.rs.
#   wsloop          target/release/wsloop serve --idle-timeout 0
#                   --ping-interval 0 --max-message 2M --max-frame 2M
#   tungstenite     tokio-tungstenite 0.30 on tokio's current_thread runtime
#   fastwebsockets  fastwebsockets 0.10 + hyper 1 upgrade, current_thread
# Every server is one thread pinned to core $SERVER_CPU (taskset), the bench
# runs pinned to core $BENCH_CPU. Everything stays on 127.0.0.1.
#
# Scenarios:
#   small    100 conns x 16 in flight x 32 B binary         msgs/s
#   medium   50 conns x 4 in flight x 16 KiB binary         msgs/s, MB/s
#   text     medium with text messages (UTF-8 checked)      msgs/s, MB/s
#   tls      medium over wss:// (wsloop only: the peers     msgs/s, MB/s
#            have no TLS); its ratio is to wsloop's own
#            plain medium in the same run. Certificate: a
#            test CA and leaf for localhost made with
#            openssl under the logs directory, verified by
#            the bench (--ca); wsloop built with --features tls
#   large    4 conns x 1 in flight x 1 MiB binary           msgs/s, MB/s
#   latency  50 conns x 1 in flight x 64 B                  round trip p50, p99
#   connect  10,000 idle connections                        handshakes/s, server
#                                                           KiB per connection
#                                                           (RSS, and its
#                                                           anonymous part)
#   deflate-mem  (wsloop only) 2,000 connections that each  server KiB per
#            exchanged 4 compressible 1.5 KB texts with     connection
#            permessage-deflate, held open: the defaults,
#            the old per-connection zlib streams (15-bit
#            windows) and no context takeover; measured by
#            bench/examples/deflate_memory.rs (docs/DEFLATE.md)
#
# Each (run, scenario, server) starts a fresh server on its own port, runs
# one `wsloop bench ... --json`, and stops the server by PID. Runs are
# interleaved (run 1 of every scenario and server, then run 2, ...) so a
# ratio to raw-echo compares measurements taken close together.
#
# Environment:
#   RUNS=3  DURATION=5s  WARMUP=1s       runs per cell; measured and warmup time
#   SERVERS="raw-echo wsloop tungstenite fastwebsockets"
#   SCENARIOS="small medium text tls large latency connect deflate-mem"
#   CONNECT_CONNS=10000  HOLD=2s         connect scenario size and hold time
#   SERVER_CPU=0  BENCH_CPU=1            cores for taskset
#   BASE_PORT=20000                      ports BASE_PORT + run*100 + ...
#   NO_BUILD=1                           use the binaries already built
#   CARGO_BUILD_JOBS                     passed to cargo (default 1 here)
#
# Output: raw results as JSON lines (one per bench run, the bench's own
# JSON under "result") in target/bench-results/compare-DATE.jsonl, server
# logs beside it, and the table on stdout and in compare-DATE.md.
# The machine is shared and noisy: compare ratios within one invocation,
# not absolute numbers across invocations.
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
HOLD=${HOLD:-2s}
SERVERS=${SERVERS:-"raw-echo wsloop tungstenite fastwebsockets"}
SCENARIOS=${SCENARIOS:-"small medium text tls large latency connect deflate-mem"}
CONNECT_CONNS=${CONNECT_CONNS:-10000}
SERVER_CPU=${SERVER_CPU:-0}
BENCH_CPU=${BENCH_CPU:-1}
BASE_PORT=${BASE_PORT:-20000}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}

WSLOOP=target/release/wsloop
PEERS=benches/peers/target/release

if [ "${NO_BUILD:-0}" != 1 ]; then
    echo "building wsloop (release)" >&2
    features=()
    case " $SCENARIOS " in *" tls "*) features=(--features tls) ;; esac
    cargo build --release -p wsloop-cli --bin wsloop "${features[@]}" >&2
    case " $SCENARIOS " in *" deflate-mem "*)
        cargo build --release -p wsloop-bench --features deflate --example deflate_memory >&2 ;;
    esac
    echo "building the peers (release; the first build takes a few minutes)" >&2
    cargo build --release --manifest-path benches/peers/Cargo.toml >&2
fi
for bin in "$WSLOOP" "$PEERS/raw-echo" "$PEERS/peer-tungstenite" "$PEERS/peer-fastwebsockets"; do
    [ -x "$bin" ] || { echo "missing $bin (build it, or unset NO_BUILD)" >&2; exit 1; }
done

# 10,000 connections need 10,000 descriptors on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((CONNECT_CONNS + 100)) ]; then
    echo "warning: open-file limit $(ulimit -n) is below CONNECT_CONNS=$CONNECT_CONNS + 100" >&2
fi

stamp=$(date +%Y%m%d-%H%M%S)
outdir=target/bench-results
mkdir -p "$outdir"
results="$outdir/compare-$stamp.jsonl"
logs="$outdir/compare-$stamp.logs"
mkdir -p "$logs"
: >"$results"

certs="$logs/certs"
case " $SCENARIOS " in
    *" tls "*)
        command -v openssl >/dev/null || { echo "the tls scenario needs the openssl command" >&2; exit 1; }
        mkdir -p "$certs"
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
        ;;
esac

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

# start_server NAME PORT LOG [tls]: starts it pinned, sets SERVER_PID, waits
# until the port listens.
start_server() {
    local name=$1 port=$2 log=$3 addr="127.0.0.1:$2"
    local cmd
    case $name in
        raw-echo) cmd=("$PEERS/raw-echo" --addr "$addr") ;;
        wsloop) cmd=("$WSLOOP" serve --addr "$addr" --idle-timeout 0 --ping-interval 0 --max-message 2M --max-frame 2M) ;;
        tungstenite) cmd=("$PEERS/peer-tungstenite" --addr "$addr") ;;
        fastwebsockets) cmd=("$PEERS/peer-fastwebsockets" --addr "$addr") ;;
        *) echo "unknown server '$name'" >&2; exit 2 ;;
    esac
    if [ "${4:-}" = tls ]; then
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
    echo "$name did not start listening on $addr (see $log)" >&2
    return 1
}

bench_args() {
    case $1 in
        small) echo "--mode echo --conns 100 --pipeline 16 --size 32 --binary" ;;
        medium | tls) echo "--mode echo --conns 50 --pipeline 4 --size 16K --binary" ;;
        text) echo "--mode echo --conns 50 --pipeline 4 --size 16K --text" ;;
        large) echo "--mode echo --conns 4 --pipeline 1 --size 1M --binary" ;;
        latency) echo "--mode latency --conns 50 --size 64 --binary" ;;
        connect) echo "--mode connect --conns $CONNECT_CONNS --hold $HOLD" ;;
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
        for server in $SERVERS; do
            vi=$((vi + 1))
            # Only wsloop speaks TLS here.
            [ "$scenario" = tls ] && [ "$server" != wsloop ] && continue
            if [ "$scenario" = deflate-mem ]; then
                # The tool starts its own wsloop server per mode.
                [ "$server" != wsloop ] && continue
                printf 'run %d/%d  %-8s %-15s ' "$run" "$RUNS" "$scenario" "$server" >&2
                log="$logs/$server.$scenario.$run.log"
                json='{'
                code=0
                for m in default old no-context; do
                    one=$(timeout 600 target/release/examples/deflate_memory memory --mode "$m" \
                        --runs 1 --json 2>>"$log" | tail -n 1) || code=$?
                    v=$(printf '%s' "$one" | python3 -c 'import json,sys; print(json.load(sys.stdin)["kib_per_conn"])' 2>/dev/null) || { v=null; code=1; }
                    json+="\"kib_per_conn_${m//-/_}\":$v,"
                done
                json="${json%,}}"
                printf '{"server":"%s","scenario":"%s","run":%d,"exit":%d,"server_alive":true,"result":%s}\n' \
                    "$server" "$scenario" "$run" "$code" "$json" >>"$results"
                if [ "$code" = 0 ]; then echo "ok" >&2; else echo "exit $code (log: $log)" >&2; fi
                continue
            fi
            port=$((BASE_PORT + run * 100 + si * 10 + vi))
            transport=plain
            target=("ws://127.0.0.1:$port/")
            if [ "$scenario" = tls ]; then
                transport=tls
                target=("wss://localhost:$port/" --ca "$certs/ca.pem")
            fi
            log="$logs/$server.$scenario.$run.log"
            printf 'run %d/%d  %-8s %-15s ' "$run" "$RUNS" "$scenario" "$server" >&2
            json=null
            code=-1
            alive=false
            if start_server "$server" "$port" "$log" "$transport"; then
                set +e
                # shellcheck disable=SC2046 # bench_args is split on purpose
                out=$(taskset -c "$BENCH_CPU" timeout 600 "$WSLOOP" bench "${target[@]}" \
                    $(bench_args "$scenario") --duration "$DURATION" --warmup "$WARMUP" \
                    --server-pid "$SERVER_PID" --json 2>>"$log")
                code=$?
                set -e
                kill -0 "$SERVER_PID" 2>/dev/null && alive=true
                line=$(printf '%s\n' "$out" | tail -n 1)
                if printf '%s' "$line" | python3 -c 'import json,sys; json.loads(sys.stdin.read())' 2>/dev/null; then
                    json=$line
                fi
            fi
            stop_server
            printf '{"server":"%s","scenario":"%s","run":%d,"exit":%d,"server_alive":%s,"result":%s}\n' \
                "$server" "$scenario" "$run" "$code" "$alive" "$json" >>"$results"
            if [ "$code" = 0 ]; then echo "ok" >&2; else echo "exit $code (log: $log)" >&2; fi
        done
    done
done

table="$outdir/compare-$stamp.md"
python3 - "$results" "$SERVERS" "$SCENARIOS" <<'PY' | tee "$table"
import json, statistics, subprocess, sys

path, servers, scenarios = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
rows = [json.loads(l) for l in open(path) if l.strip()]

def get(res, key):
    v = res
    for k in key.split("."):
        if not isinstance(v, dict) or k not in v:
            return None
        v = v[k]
    return v

# (scenario, metric label, json key, higher is better, format)
METRICS = {
    "small": [("msgs/s", "msgs_per_s", True), ("server CPU ns/msg", "server_cpu_ns_per_msg", False)],
    "medium": [("msgs/s", "msgs_per_s", True), ("MB/s", "mb_per_s", True), ("server CPU ns/msg", "server_cpu_ns_per_msg", False)],
    "text": [("msgs/s", "msgs_per_s", True), ("MB/s", "mb_per_s", True), ("server CPU ns/msg", "server_cpu_ns_per_msg", False)],
    "tls": [("msgs/s", "msgs_per_s", True), ("MB/s", "mb_per_s", True), ("server CPU ns/msg", "server_cpu_ns_per_msg", False)],
    "large": [("msgs/s", "msgs_per_s", True), ("MB/s", "mb_per_s", True), ("server CPU ns/msg", "server_cpu_ns_per_msg", False)],
    "latency": [("rtt p50 µs", "rtt_us.p50", False), ("rtt p99 µs", "rtt_us.p99", False)],
    "connect": [("handshakes/s", "handshakes_per_s", True), ("server CPU ns/handshake", "server_cpu_ns_per_handshake", False), ("KiB/conn", "kib_per_conn", False), ("KiB/conn, anonymous", "kib_per_conn_anon", False)],
    "deflate-mem": [("KiB/conn, defaults", "kib_per_conn_default", False), ("KiB/conn, old per-conn zlib", "kib_per_conn_old", False), ("KiB/conn, no context takeover", "kib_per_conn_no_context", False)],
}
DESC = {
    "small": "100×16×32 B",
    "medium": "50×4×16 KiB",
    "text": "50×4×16 KiB text",
    "tls": "50×4×16 KiB over wss://, ratio to wsloop ws://",
    "large": "4×1×1 MiB",
    "latency": "50×1×64 B",
    "connect": "10k idle",
    "deflate-mem": "2,000 × 4 × 1.5 KB text, deflate",
}

def fmt(v):
    if v is None:
        return "–"
    a = abs(v)
    if a >= 1e6:
        return f"{v/1e6:.2f}M"
    if a >= 1e4:
        return f"{v/1e3:.0f}k"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"

by = {}
for r in rows:
    by.setdefault((r["scenario"], r["server"]), []).append(r)

try:
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout.strip()
    rev += "+dirty" if dirty else ""
except OSError:
    rev = "?"
runs = max((r["run"] for r in rows), default=0)
print(f"\n## wsloop vs. peers ({runs} run(s); commit {rev}; {path})\n")
print("Cell: median (min–max) over runs, then the median over runs of the ratio to raw-echo")
print("in the same run (for µs, ns and KiB lower is better, for rates higher is better).")
print("Server CPU: all the server's threads over the measured window, per echoed message.\n")
print("| scenario | metric | " + " | ".join(servers) + " |")
print("|---|---|" + "---|" * len(servers))
problems = []
for sc in scenarios:
    for label, key, _higher in METRICS.get(sc, []):
        cells = []
        # TLS: the reference is wsloop's own plain medium (no peer has TLS).
        ref_key = ("medium", "wsloop") if sc == "tls" else (sc, "raw-echo")
        ref = {r["run"]: get(r["result"], key) for r in by.get(ref_key, []) if r["result"]}
        for sv in servers:
            rs = by.get((sc, sv), [])
            vals = [get(r["result"], key) for r in rs if r["result"]]
            vals = [v for v in vals if isinstance(v, (int, float))]
            if not vals:
                cells.append("–")
                continue
            cell = f"{fmt(statistics.median(vals))}"
            if len(vals) > 1:
                cell += f" ({fmt(min(vals))}–{fmt(max(vals))})"
            ratios = [
                get(r["result"], key) / ref[r["run"]]
                for r in rs
                if r["result"] and ref.get(r["run"]) and isinstance(get(r["result"], key), (int, float))
            ]
            if ratios and sv != "raw-echo":
                cell += f" · {statistics.median(ratios):.2f}×"
            if any(r["exit"] != 0 or not r["server_alive"] for r in rs):
                cell += " ⚠"
            cells.append(cell)
        print(f"| {sc} ({DESC.get(sc, '')}) | {label} | " + " | ".join(cells) + " |")
for r in rows:
    res = r["result"] or {}
    errs = res.get("errors")
    if r["exit"] != 0 or not r["server_alive"] or errs:
        kinds = res.get("error_kinds") or {}
        what = ", ".join(f"{k}: {v}" for k, v in kinds.items()) or "no JSON result"
        problems.append(
            f"- {r['scenario']} / {r['server']} run {r['run']}: bench exit {r['exit']}, "
            f"server {'alive' if r['server_alive'] else 'GONE (crashed or never started)'}, "
            f"errors {errs if errs is not None else '?'} ({what})"
        )
if problems:
    print("\n⚠ Problems:\n" + "\n".join(problems))
PY
echo "table: $table" >&2
