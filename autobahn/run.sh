#!/usr/bin/env bash
# Run the Autobahn WebSocket conformance suite against wsloop.
#
#   autobahn/run.sh server [options]   # the suite tests the wsloop SERVER
#   autobahn/run.sh client [options]   # the suite tests the wsloop CLIENT
#
# Options:
#   --kosoku         use kosoku (fast, ~10 s, NOT the gate) instead of wstest
#   --wstest         use the original wstest (default; the gate)
#   --deflate        include cases 12.* and 13.* (permessage-deflate)
#   --cases LIST     only these cases, comma-separated globs (e.g. '1.*,5.*');
#                    disables the total case-count check
#   --port N         port to listen on / connect to
#   --takeover       client mode: the client offers permessage-deflate WITH
#                    client context takeover (no client_no_context_takeover;
#                    WSLOOP_CLIENT_TAKEOVER=1 in its environment); implies
#                    --deflate, runs only 12.* and 13.* (216 cases), default
#                    port 9003, reports in $REPORTS_DIR/client-takeover*,
#                    checked against expected-client-takeover.txt
#   --tls            server mode, wstest only: serve wss:// (`wsloop serve
#                    --tls-cert/--tls-key` with a test CA and leaf made by
#                    openssl under $REPORTS_DIR/server-tls-certs/); wstest
#                    connects to wss://localhost:PORT and verifies the
#                    certificate against that CA (SNI and host name too);
#                    reports go to $REPORTS_DIR/server-tls*
#   -h, --help
#
# Environment (all optional):
#   RUNNER=wstest|kosoku   same as --wstest/--kosoku
#   DEFLATE=1              same as --deflate
#   CASES=LIST             same as --cases
#   TLS=1                  same as --tls
#   TAKEOVER=1             same as --takeover
#   PORT                   default 9001 (server) / 9002 (client) / 9003
#                          (client --takeover); when not
#                          given and the default is busy, a free port is used
#   WSLOOP_BIN             server binary (default target/release/wsloop),
#                          started as: $WSLOOP_BIN serve --addr 127.0.0.1:$PORT
#   SERVER_CMD             shell command replacing the line above; run by
#                          bash -c with PORT and ADDR (127.0.0.1:PORT) exported,
#                          e.g. SERVER_CMD='python3 echo.py --addr $ADDR';
#                          with --tls also TLS_CERT, TLS_KEY (PEM files to
#                          serve) and TLS_CA
#   AUTOBAHN_CLIENT_BIN    client program (default
#                          target/release/examples/autobahn_client), started
#                          as: $AUTOBAHN_CLIENT_BIN ws://127.0.0.1:$PORT $AGENT
#                          (with WSLOOP_DEFLATE=1 in its environment when
#                          deflate cases run)
#   CLIENT_CMD             shell command replacing the line above (URL, AGENT,
#                          PORT exported)
#   AGENT                  agent name in the reports (default wsloop)
#   RUN_TIMEOUT            whole-run limit in seconds (default 900)
#   AUTOBAHN_VENV, KOSOKU_VENV   venvs made by autobahn/install.sh
#   REPORTS_DIR            default autobahn/reports
#   UPDATE_EXPECTED=1      write the run's verdicts for its cases into
#                          autobahn/expected-<mode>.txt (other lines kept)
#                          instead of failing when they differ
#   WSTEST_FAST_UTF8=0     run wstest without the faster UTF-8 check of
#                          autobahn/wstest.py (same verdicts, slower)
#
# Output: reports in $REPORTS_DIR/<mode>/ (index.json + HTML per case),
# logs in $REPORTS_DIR/<mode>-runner.log and <mode>-testee.log, and the
# one-line-per-case summary in $REPORTS_DIR/<mode>-summary.txt (<mode> is
# server-tls with --tls, checked against expected-server.txt; and
# client-takeover with --takeover, checked against its own file).
# Exit status: 0 when every case is OK or INFORMATIONAL and has the verdict
# autobahn/expected-<mode>.txt gives it (for the cases the run selected),
# non-zero otherwise.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
CACHE="${WSLOOP_AUTOBAHN_CACHE:-$HOME/.cache/wsloop-autobahn}"
AUTOBAHN_VENV="${AUTOBAHN_VENV:-$CACHE/venv27}"
KOSOKU_VENV="${KOSOKU_VENV:-$CACHE/venv3}"
REPORTS_DIR="${REPORTS_DIR:-$HERE/reports}"
RUNNER="${RUNNER:-wstest}"
DEFLATE="${DEFLATE:-0}"
CASES="${CASES:-}"
AGENT="${AGENT:-wsloop}"
RUN_TIMEOUT="${RUN_TIMEOUT:-900}"
TLS="${TLS:-0}"
TAKEOVER="${TAKEOVER:-0}"
HOST=127.0.0.1
export PYTHONUNBUFFERED=1   # wstest (py2) logs progress line by line

log() { printf '[autobahn] %s\n' "$*" >&2; }
die() { printf '[autobahn] ERROR: %s\n' "$1" >&2; exit "${2:-2}"; }
usage() { sed -n '2,68p' "$0"; }

MODE=""
while [ $# -gt 0 ]; do
    case "$1" in
        server|client) MODE="$1" ;;
        --kosoku) RUNNER=kosoku ;;
        --wstest) RUNNER=wstest ;;
        --deflate) DEFLATE=1 ;;
        --cases) shift; CASES="${1:?--cases needs a value}" ;;
        --cases=*) CASES="${1#--cases=}" ;;
        --port) shift; PORT="${1:?--port needs a value}" ;;
        --port=*) PORT="${1#--port=}" ;;
        --tls) TLS=1 ;;
        --takeover) TAKEOVER=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done
[ -n "$MODE" ] || { usage >&2; die "give a mode: server or client"; }
if [ "$TAKEOVER" = 1 ]; then
    [ "$MODE" = client ] || die "--takeover is for client mode only: it is what the wsloop client offers"
    DEFLATE=1
fi
export WSLOOP_DEFLATE="$DEFLATE" WSLOOP_CLIENT_TAKEOVER="$TAKEOVER"
case "$RUNNER" in wstest|kosoku) ;; *) die "RUNNER must be wstest or kosoku, not '$RUNNER'" ;; esac
LABEL="$MODE"
if [ "$TLS" = 1 ]; then
    [ "$MODE" = server ] || die "--tls is for server mode only: wstest tests the wsloop server over wss://"
    [ "$RUNNER" = wstest ] || die "--tls needs wstest: kosoku 0.1.0 connects over plain TCP only (it has no TLS option)"
    command -v openssl >/dev/null || die "--tls needs the openssl command (Debian: apt-get install openssl) to make a test certificate"
    LABEL="$MODE-tls"
fi
[ "$TAKEOVER" = 1 ] && LABEL="$MODE-takeover"

START=$(date +%s)
DEADLINE=$((START + RUN_TIMEOUT))
remaining() {
    local r=$((DEADLINE - $(date +%s)))
    [ "$r" -gt 0 ] || r=1
    echo "$r"
}

# ---------------------------------------------------------------- processes
# Every process we start is recorded here and killed by PID (and its own
# process group, which setsid gives it) when the script exits, however.
PIDS=()
# is_ours PID: PID is alive and still a child of this script (not a recycled PID).
is_ours() {
    local ppid
    ppid="$(ps -o ppid= -p "$1" 2>/dev/null | tr -d ' ')"
    [ -n "$ppid" ] && [ "$ppid" = "$$" ]
}
stop_pid() {
    local pid="$1" i
    is_ours "$pid" || return 0
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 50); do
        is_ours "$pid" || break
        sleep 0.1
    done
    if is_ours "$pid"; then
        log "pid $pid did not stop on TERM; sending KILL"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
    return 0
}
cleanup() {
    local pid
    local i
    # newest first: the runner/client before the peer it talks to
    for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
        stop_pid "${PIDS[$i]}"
    done
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# start LOGFILE CMD...: run CMD in its own session (so it and its children
# can be stopped as one group), under a timeout for the rest of the run
# (plus SLACK seconds: long-lived peers get 60 so that the runner's or the
# client's own timeout fires first; the slack only matters if this script
# itself is killed with SIGKILL). Sets LAST_PID.
SLACK=0
start() {
    local logfile="$1"; shift
    setsid timeout -k 10 "$(( $(remaining) + SLACK ))" "$@" >>"$logfile" 2>&1 </dev/null &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

port_open() {
    timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pick_port() {
    local default="$1"
    if [ -n "${PORT:-}" ]; then
        port_open "$PORT" && die "port $PORT on $HOST is already in use"
        echo "$PORT"
    elif port_open "$default"; then
        local p; p="$(free_port)"
        log "port $default is busy; using $p"
        echo "$p"
    else
        echo "$default"
    fi
}

# wait_port PORT PID WHAT LOG: wait until PORT accepts, failing early if PID dies.
wait_port() {
    local port="$1" pid="$2" what="$3" logfile="$4" limit=$(( $(date +%s) + 30 ))
    while ! port_open "$port"; do
        if ! is_ours "$pid"; then
            wait "$pid"; local rc=$?
            show_log "$logfile"
            die "$what exited (status $rc) before listening on $HOST:$port"
        fi
        if [ "$(date +%s)" -ge "$limit" ]; then
            show_log "$logfile"
            die "$what did not listen on $HOST:$port within 30 s"
        fi
        sleep 0.1
    done
}

show_log() {
    [ -s "$1" ] || return 0
    log "last lines of $1:"
    tail -n "${2:-25}" "$1" | cut -c1-400 | sed 's/^/    /' >&2
}

# ---------------------------------------------------------------- setup
case "$RUNNER" in
    wstest)
        [ -x "$AUTOBAHN_VENV/bin/wstest" ] || die "wstest not found at $AUTOBAHN_VENV/bin/wstest; run autobahn/install.sh (or RUNNER=kosoku for the fast, non-gating runner)"
        # The original wstest, with a faster check of the UTF-8 it receives
        # (same verdicts; see wstest.py, WSTEST_FAST_UTF8=0 to run it plain).
        WSTEST=("$AUTOBAHN_VENV/bin/python" "$HERE/wstest.py")
        ;;
    kosoku)
        KOSOKU="$KOSOKU_VENV/bin/kosoku"
        [ -x "$KOSOKU" ] || die "kosoku not found at $KOSOKU; run autobahn/install.sh kosoku"
        ;;
esac
command -v setsid >/dev/null && command -v timeout >/dev/null || die "need setsid and timeout (util-linux, coreutils)"

OUTDIR="$REPORTS_DIR/$LABEL"
RUNNER_LOG="$REPORTS_DIR/$LABEL-runner.log"
TESTEE_LOG="$REPORTS_DIR/$LABEL-testee.log"
SUMMARY="$REPORTS_DIR/$LABEL-summary.txt"
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"
: >"$RUNNER_LOG"
: >"$TESTEE_LOG"
rm -f "$SUMMARY"

# Case selection, shared by both runners.
if [ -n "$CASES" ]; then
    IFS=',' read -r -a INCLUDE <<<"$CASES"
elif [ "$TAKEOVER" = 1 ]; then
    INCLUDE=("12.*" "13.*")
else
    INCLUDE=("*")
fi
if [ "$DEFLATE" = 1 ]; then EXCLUDE=(); else EXCLUDE=("12.*" "13.*"); fi
EXPECT_ARGS=()
if [ -z "$CASES" ]; then
    # wstest 25.10.1 has 517 cases, 216 of them in 12.* and 13.*.
    if [ "$TAKEOVER" = 1 ]; then EXPECT_ARGS=(--expect-cases 216)
    elif [ "$DEFLATE" = 1 ]; then EXPECT_ARGS=(--expect-cases 517); else EXPECT_ARGS=(--expect-cases 301); fi
fi

# render_spec TEMPLATE OUT PORT: substitute ${PORT}/${AGENT}/${OUTDIR}, apply the case selection.
render_spec() {
    python3 - "$1" "$2" "$3" "$AGENT" "$OUTDIR" "$(IFS=,; echo "${INCLUDE[*]}")" "$(IFS=,; echo "${EXCLUDE[*]+"${EXCLUDE[*]}"}")" <<'EOF'
import json, sys
tmpl, out, port, agent, outdir, inc, exc = sys.argv[1:8]
subst = {"${PORT}": port, "${AGENT}": agent, "${OUTDIR}": outdir.rstrip("/") + "/"}
def walk(v):
    if isinstance(v, str):
        for k, r in subst.items():
            v = v.replace(k, r)
        return v
    if isinstance(v, list):
        return [walk(x) for x in v]
    if isinstance(v, dict):
        return {k: walk(x) for k, x in v.items() if not k.startswith("_")}
    return v
spec = walk(json.load(open(tmpl)))
spec["cases"] = [c for c in inc.split(",") if c]
spec["exclude-cases"] = [c for c in exc.split(",") if c]
json.dump(spec, open(out, "w"), indent=3)
EOF
}

kosoku_selection() {
    local c
    KOSOKU_SEL=()
    if [ -n "$CASES" ]; then
        for c in "${INCLUDE[@]}"; do KOSOKU_SEL+=(-i "$c"); done
    fi
    for c in "${EXCLUDE[@]+"${EXCLUDE[@]}"}"; do KOSOKU_SEL+=(-x "$c"); done
}

FAIL=0

# make_tls_cert DIR: a test CA (ca.pem) and a leaf signed by it for
# localhost and 127.0.0.1 (server.pem, server.key), as in the README.
make_tls_cert() {
    local dir="$1"
    rm -rf "$dir"
    mkdir -p "$dir"
    (
        cd "$dir" || exit 1
        set -e
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout ca.key -out ca.pem -days 30 -subj "/CN=wsloop autobahn test CA"
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout server.key -out server.csr -subj "/CN=localhost"
        printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=CA:FALSE' \
            'keyUsage=digitalSignature' 'extendedKeyUsage=serverAuth' >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
            -days 30 -extfile server.ext -out server.pem
    ) >>"$TESTEE_LOG" 2>&1 || { show_log "$TESTEE_LOG"; die "openssl could not make the test certificate"; }
}

# ---------------------------------------------------------------- server
run_server_mode() {
    PORT="$(pick_port 9001)" || exit 2
    export PORT ADDR="$HOST:$PORT"
    local desc
    local tls_args=() wstest_env=()
    if [ "$TLS" = 1 ]; then
        local certs="$REPORTS_DIR/$LABEL-certs"
        make_tls_cert "$certs"
        export TLS_CERT="$certs/server.pem" TLS_KEY="$certs/server.key" TLS_CA="$certs/ca.pem"
        tls_args=(--tls-cert "$TLS_CERT" --tls-key "$TLS_KEY")
        # wstest's Twisted verifies against OpenSSL's default trust, which
        # SSL_CERT_FILE replaces: only the test CA is trusted.
        wstest_env=(env "SSL_CERT_FILE=$TLS_CA")
        log "TLS: test CA $TLS_CA, server certificate $TLS_CERT (localhost, 127.0.0.1)"
    fi
    if [ -n "${SERVER_CMD:-}" ]; then
        desc="SERVER_CMD: $SERVER_CMD"
        SLACK=60 start "$TESTEE_LOG" bash -c "$SERVER_CMD"
    else
        local bin="${WSLOOP_BIN:-target/release/wsloop}"
        case "$bin" in /*) ;; *) bin="$ROOT/$bin" ;; esac
        [ -x "$bin" ] || die "wsloop binary not found at $bin (build it: cargo build --release -p wsloop-cli --bin wsloop; or set WSLOOP_BIN / SERVER_CMD)"
        local extra=("${tls_args[@]+"${tls_args[@]}"}")
        # With deflate cases the server must offer permessage-deflate.
        if [ "$DEFLATE" = 1 ]; then extra+=(--deflate); fi
        desc="$bin serve --addr $ADDR ${extra[*]+"${extra[*]}"}"
        SLACK=60 start "$TESTEE_LOG" "$bin" serve --addr "$ADDR" "${extra[@]+"${extra[@]}"}"
    fi
    local server_pid=$LAST_PID
    log "started server (pid $server_pid): $desc"
    wait_port "$PORT" "$server_pid" "server" "$TESTEE_LOG"
    log "server is listening on $ADDR"

    local rc t0; t0=$(date +%s)
    if [ "$RUNNER" = wstest ]; then
        local spec="$REPORTS_DIR/$LABEL-spec.json"
        render_spec "$HERE/fuzzingclient.json" "$spec" "$PORT" || die "cannot render spec"
        if [ "$TLS" = 1 ]; then
            # wss://localhost (the certificate's name); "hostname" makes
            # wstest send SNI and verify the certificate and the name
            # (without it, it would accept any certificate).
            python3 - "$spec" <<'EOF' || die "cannot render the TLS spec"
import json, sys
spec = json.load(open(sys.argv[1]))
for s in spec["servers"]:
    s["url"] = s["url"].replace("ws://127.0.0.1:", "wss://localhost:")
    s["hostname"] = "localhost"
json.dump(spec, open(sys.argv[1], "w"), indent=3)
EOF
        fi
        log "running wstest -m fuzzingclient -s $spec (log: $RUNNER_LOG)"
        start "$RUNNER_LOG" "${wstest_env[@]+"${wstest_env[@]}"}" "${WSTEST[@]}" -m fuzzingclient -s "$spec"
    else
        kosoku_selection
        log "running kosoku $HOST:$PORT -p 2 -o $OUTDIR ${KOSOKU_SEL[*]+"${KOSOKU_SEL[*]}"} (log: $RUNNER_LOG)"
        start "$RUNNER_LOG" "$KOSOKU" "$HOST:$PORT" -p 2 -o "$OUTDIR" "${KOSOKU_SEL[@]+"${KOSOKU_SEL[@]}"}"
    fi
    local runner_pid=$LAST_PID
    wait "$runner_pid"; rc=$?
    log "$RUNNER finished in $(( $(date +%s) - t0 )) s (status $rc)"
    if [ "$rc" -eq 124 ] || [ "$rc" -ge 128 ]; then
        if [ "$rc" -eq 124 ]; then
            log "$RUNNER hit the run timeout (RUN_TIMEOUT=$RUN_TIMEOUT s)"
        else
            log "$RUNNER was killed by signal $((rc - 128))"
        fi
        FAIL=1
        show_log "$RUNNER_LOG"
    elif [ "$RUNNER" = wstest ] && [ "$rc" -ne 0 ]; then
        log "wstest failed"; FAIL=1
        show_log "$RUNNER_LOG"
    fi
    # kosoku exits 1 whenever a case is not OK; check.py says which.

    if is_ours "$server_pid"; then
        stop_pid "$server_pid"
        log "stopped server (pid $server_pid)"
    else
        wait "$server_pid"; rc=$?
        log "server (pid $server_pid) DIED during the run (status $rc)"
        show_log "$TESTEE_LOG"
        FAIL=1
    fi
}

# ---------------------------------------------------------------- client
run_client_mode() {
    PORT="$(pick_port "$([ "$TAKEOVER" = 1 ] && echo 9003 || echo 9002)")" || exit 2
    export PORT URL="ws://$HOST:$PORT" AGENT
    local client_bin="${AUTOBAHN_CLIENT_BIN:-target/release/examples/autobahn_client}"
    case "$client_bin" in /*) ;; *) client_bin="$ROOT/$client_bin" ;; esac
    if [ -z "${CLIENT_CMD:-}" ] && [ ! -x "$client_bin" ]; then
        die "client program not found at $client_bin (build it: cargo build --release -p wsloop --example autobahn_client; or set AUTOBAHN_CLIENT_BIN / CLIENT_CMD)"
    fi
    local t0 rc; t0=$(date +%s)
    if [ "$RUNNER" = wstest ]; then
        local spec="$REPORTS_DIR/$LABEL-spec.json"
        render_spec "$HERE/fuzzingserver.json" "$spec" "$PORT" || die "cannot render spec"
        # -u 0: no embedded web server on 8080 (it is not needed for the run).
        SLACK=60 start "$RUNNER_LOG" "${WSTEST[@]}" -m fuzzingserver -s "$spec" -u 0
    else
        kosoku_selection
        SLACK=60 start "$RUNNER_LOG" "$KOSOKU" -m fuzzingserver "$HOST:$PORT" -o "$OUTDIR" "${KOSOKU_SEL[@]+"${KOSOKU_SEL[@]}"}"
    fi
    local fz_pid=$LAST_PID
    log "started $RUNNER fuzzingserver (pid $fz_pid) on $URL (log: $RUNNER_LOG)"
    wait_port "$PORT" "$fz_pid" "$RUNNER fuzzingserver" "$RUNNER_LOG"
    log "fuzzingserver is listening"

    local desc
    if [ -n "${CLIENT_CMD:-}" ]; then
        desc="CLIENT_CMD: $CLIENT_CMD"
        start "$TESTEE_LOG" bash -c "$CLIENT_CMD"
    else
        desc="$client_bin $URL $AGENT"
        start "$TESTEE_LOG" "$client_bin" "$URL" "$AGENT"
    fi
    local client_pid=$LAST_PID
    log "started client (pid $client_pid): $desc (log: $TESTEE_LOG)"
    wait "$client_pid"; rc=$?
    log "client finished in $(( $(date +%s) - t0 )) s (status $rc)"
    if [ "$rc" -ne 0 ]; then
        [ "$rc" -eq 124 ] && log "client hit the run timeout (RUN_TIMEOUT=$RUN_TIMEOUT s)"
        log "client exited with status $rc"; FAIL=1
        show_log "$TESTEE_LOG"
    fi

    # The fuzzingserver writes index.json when the client calls
    # /updateReports. wstest then keeps running (we stop it); kosoku exits.
    local limit=$(( $(date +%s) + 10 ))
    while [ "$(date +%s)" -lt "$limit" ]; do
        if [ "$RUNNER" = kosoku ]; then
            is_ours "$fz_pid" || break
        else
            [ -s "$OUTDIR/index.json" ] && break
            is_ours "$fz_pid" || break
        fi
        sleep 0.2
    done
    [ "$RUNNER" = wstest ] && sleep 0.5   # let it finish writing the HTML index
    if is_ours "$fz_pid"; then
        stop_pid "$fz_pid"
        log "stopped $RUNNER fuzzingserver (pid $fz_pid)"
    else
        wait "$fz_pid"; rc=$?
        log "$RUNNER fuzzingserver exited (status $rc)"
    fi
    [ -s "$OUTDIR/index.json" ] || { log "no index.json: did the client call /updateReports?agent=$AGENT ?"; show_log "$RUNNER_LOG"; }
}

log "mode=$MODE runner=$RUNNER deflate=$DEFLATE takeover=$TAKEOVER tls=$TLS cases=$(IFS=,; echo "${INCLUDE[*]}") timeout=${RUN_TIMEOUT}s"
if [ "$MODE" = server ]; then run_server_mode; else run_client_mode; fi

# The verdicts of the selected cases must be those in expected-<mode>.txt
# (the --tls run too: the same as over plain TCP; the --takeover run has
# its own file). UPDATE_EXPECTED=1 writes this run's verdicts there
# instead of failing on a difference.
EXPECTED="$HERE/expected-$MODE.txt"
[ "$TAKEOVER" = 1 ] && EXPECTED="$HERE/expected-$LABEL.txt"
EXPECTED_ARGS=(--fail-on-diff)
if [ "${UPDATE_EXPECTED:-0}" = 1 ]; then
    if [ "$TLS" = 1 ]; then
        log "UPDATE_EXPECTED ignored for a --tls run: expected-$MODE.txt comes from the plain run"
    else
        EXPECTED_ARGS=(--update-expected)
    fi
fi
python3 "$HERE/check.py" "$OUTDIR" "$SUMMARY" --expected "$EXPECTED" "${EXPECTED_ARGS[@]}" \
    --cases "$(IFS=,; echo "${INCLUDE[*]}")" --exclude-cases "$(IFS=,; echo "${EXCLUDE[*]+"${EXCLUDE[*]}"}")" \
    --label "$LABEL/$RUNNER" "${EXPECT_ARGS[@]+"${EXPECT_ARGS[@]}"}"
CHECK=$?
log "total time $(( $(date +%s) - START )) s"
if [ "$CHECK" -ne 0 ] || [ "$FAIL" -ne 0 ]; then
    exit 1
fi
exit 0
