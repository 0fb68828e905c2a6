#!/usr/bin/env bash
# Every check CI runs, in order: format, lints, the library's dependencies
# and default build, the Autobahn testees' build, unit and integration
# tests, the Autobahn conformance suite (original wstest: server and client
# with permessage-deflate, server over wss://, client with context
# takeover) and a short fuzz smoke of every target. Works on a fresh
# machine: it installs what it needs.
#
# The network installs start at once in the background and are waited for
# before the phase that needs them; a failed one fails the run with its log
# (all logs: target/ci-logs/). The fuzz targets are built, at low priority,
# while wstest runs. At the end, on failure too, the time of each phase.
#
#   scripts/test-all.sh                  everything
#   SKIP_FUZZ=1 scripts/test-all.sh      skip the fuzz smoke
#   SKIP_AUTOBAHN=1 ...                  skip the conformance runs
#   FUZZ_SECONDS=N                       seconds per fuzz target (default 30)
#   WSLOOP_SKIP_PYTHON=1, WSLOOP_SKIP_BROWSER=1, WSLOOP_SKIP_REDIS=1
#                                        skip those tests (cargo test reads
#                                        them) and their installs
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
# `wait -n -p` (which job ended) needs bash 5.1.
if (( BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 501 )); then
    echo "test-all: needs bash 5.1 or later (this is $BASH_VERSION)" >&2
    exit 2
fi
logs=target/ci-logs
mkdir -p "$logs"
skip() { [ "${!1:-0}" = 1 ]; }

# ------------------------------------------------------------ bookkeeping
# Phases in order with their seconds and outcome, printed by summary().
phase_names=()
phase_secs=()
phase_state=()
phase=""
phase_t0=0
notes=()   # "NAME|SECONDS|STATE" lines listed under the current phase
end_phase() {
    local n
    if [ -n "$phase" ]; then
        phase_names+=("$phase")
        phase_secs+=("$(( $(date +%s) - phase_t0 ))")
        phase_state+=("$1")
        phase=""
    fi
    for n in "${notes[@]+"${notes[@]}"}"; do
        phase_names+=("${n%%|*}")
        n="${n#*|}"
        phase_secs+=("${n%%|*}")
        phase_state+=("${n#*|}")
    done
    notes=()
}
step() {
    end_phase ok
    phase="$*"
    phase_t0=$(date +%s)
    printf '\n=== %s (%ss)\n' "$phase" "$(( phase_t0 - start ))"
}
# note NAME SECONDS STATE: a line of the summary under the current phase
# (one Autobahn run, a background job).
note() {
    notes+=("$1|$2|$3")
}

# Background jobs: each runs in its own session (setsid), so that stopping
# one by its PID's group stops everything it started.
declare -A bg_pid=() bg_t0=()
bg_start() {
    local name="$1"
    shift
    bg_t0[$name]=$(date +%s)
    setsid "$@" >"$logs/$name.log" 2>&1 </dev/null &
    bg_pid[$name]=$!
    echo "started in the background: $name (log: $logs/$name.log)"
}
# bg_wait NAME: wait for a background job; if it failed, show its log and fail.
bg_wait() {
    local name="$1" rc=0 secs
    [ -n "${bg_pid[$name]:-}" ] || return 0
    wait "${bg_pid[$name]}" || rc=$?
    unset "bg_pid[$name]"
    secs=$(( $(date +%s) - ${bg_t0[$name]} ))
    if [ "$rc" != 0 ]; then
        note "  (background) $name" "$secs" FAILED
        echo "$name failed (status $rc) after ${secs}s; its log ($logs/$name.log):"
        cat "$logs/$name.log"
        return 1
    fi
    note "  (background) $name" "$secs" ok
    echo "$name: done in ${secs}s (log: $logs/$name.log)"
}

summary() {
    local rc=$? i
    trap - EXIT
    end_phase "$([ "$rc" = 0 ] && echo ok || echo FAILED)"
    # Whatever still runs in the background was started by this script.
    for i in "${!bg_pid[@]}"; do
        kill -TERM -- "-${bg_pid[$i]}" 2>/dev/null || true
    done
    # run.sh stops what it started when it gets TERM.
    for i in "${!ab_pid[@]}"; do
        kill -TERM "${ab_pid[$i]}" 2>/dev/null || true
    done
    printf '\n=== time per phase\n'
    for i in "${!phase_names[@]}"; do
        printf '  %-68s %5ss  %s\n' "${phase_names[$i]}" "${phase_secs[$i]}" \
            "$([ "${phase_state[$i]}" = ok ] || echo "${phase_state[$i]}")"
    done
    local total=$(( $(date +%s) - start ))
    printf '  %-68s %5ss  (%dm%02ds)\n' total "$total" $((total / 60)) $((total % 60))
    if [ "$rc" = 0 ]; then
        echo "all checks passed"
    else
        echo "FAILED (status $rc)"
    fi
    exit "$rc"
}
declare -A ab_pid=()   # Autobahn runs still going, by name
trap summary EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- installs
# What later phases need from the network, started before anything else.
if ! skip SKIP_AUTOBAHN; then
    bg_start wstest-install bash autobahn/install.sh wstest
fi
if ! skip SKIP_FUZZ && ! cargo fuzz --version >/dev/null 2>&1; then
    # A compile too: at low priority, so it takes what the builds leave.
    bg_start cargo-fuzz-install nice -n 10 cargo install cargo-fuzz --locked
fi
bg_start test-prerequisites bash -c '
    set -euo pipefail
    as_root=()
    [ "$(id -u)" = 0 ] || as_root=(sudo -n)
    if [ "${WSLOOP_SKIP_PYTHON:-0}" != 1 ]; then
        echo "--- Python venv with websockets (scripts/python-venv.sh)"
        sh scripts/python-venv.sh
    fi
    if [ "${WSLOOP_SKIP_BROWSER:-0}" != 1 ]; then
        echo "--- Chromium, node, playwright-core (scripts/browser-test.sh --install-only)"
        bash scripts/browser-test.sh --install-only
    fi
    if [ "${WSLOOP_SKIP_REDIS:-0}" != 1 ] && [ ! -x /usr/bin/redis-server ] \
        && [ ! -x /usr/local/bin/redis-server ]; then
        echo "--- redis-server (apt-get)"
        "${as_root[@]}" apt-get update -q
        DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q redis-server
    fi
    echo "test prerequisites ready"
'

# ------------------------------------------------------------ static checks
step "toolchain"
cargo --version
for c in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
        rustup component add "$c"
    fi
done

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets --all-features -D warnings"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "library: default dependencies are exactly the seven; clippy -D warnings on its default build"
want="base64 getrandom httparse log mio sha1 slab"
# Every platform's dependencies, not just this one's.
have=$(cargo tree -p wsloop -e normal --depth 1 --prefix none --target all --format '{p}' |
    awk 'NR > 1 { print $1 }' | sort -u | xargs)
echo "wsloop (default features) depends on: $have"
if [ "$have" != "$want" ]; then
    echo "expected exactly: $want"
    exit 1
fi
# The build users get: no warnings there either (the step above checks
# every feature at once, which hides code only one feature uses).
cargo clippy -p wsloop --all-targets -- -D warnings

step "cargo doc: no warnings (workspace, all features)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features

step "library: unsafe code only in src/ascii.rs"
# The crate root denies unsafe_code; an `allow` anywhere else would lift it.
# Whole files, so an attribute that rustfmt spread over lines is seen too.
others=$(find src -name '*.rs' ! -path src/ascii.rs -exec perl -0777 -ne \
    'print "$ARGV\n" if /\b(allow|expect)\s*\([^)]*\bunsafe_code\b/s' {} +)
if [ -n "$others" ]; then
    echo "unsafe_code is allowed outside src/ascii.rs in: $others"
    exit 1
fi
grep -q '^#!\[deny(unsafe_code)\]' src/lib.rs || { echo "src/lib.rs lost #![deny(unsafe_code)]"; exit 1; }
grep -q '^#!\[deny(clippy::undocumented_unsafe_blocks)\]' src/ascii.rs ||
    { echo "src/ascii.rs lost #![deny(clippy::undocumented_unsafe_blocks)]"; exit 1; }

# The Autobahn testees (the wsloop binary and the autobahn_client example),
# optimized but without LTO: wstest, not the testee, sets the pace there.
step "build (profile autobahn): wsloop binary, all features; examples"
cargo build --profile autobahn --workspace --all-features --bins --examples

# ------------------------------------------------------------------ tests
step "cargo test: build (workspace, all features)"
cargo test --workspace --all-features --no-run

step "cargo test: wait for the test prerequisites"
bg_wait test-prerequisites

step "cargo test: run"
cargo test --workspace --all-features

# --------------------------------------------------------------- Autobahn
if ! skip SKIP_AUTOBAHN; then
    step "Autobahn: wait for the wstest install"
    bg_wait wstest-install

    step "Autobahn: server, client with deflate (1-13); server over wss (1-10); client takeover (12-13)"
    reports=autobahn/reports
    mkdir -p "$reports"
    export WSLOOP_BIN=target/autobahn/wsloop
    export AUTOBAHN_CLIENT_BIN=target/autobahn/examples/autobahn_client
    # The deflate cases are the slow part of wstest (about 5 minutes each
    # side here); the limit is for a testee that hangs.
    export RUN_TIMEOUT="${RUN_TIMEOUT:-3600}"
    declare -A ab_t0=() ab_rc=() ab_secs=()
    ab_run() {
        local name="$1"
        shift
        ab_t0[$name]=$(date +%s)
        bash autobahn/run.sh "$@" >"$reports/$name-run.log" 2>&1 &
        ab_pid[$name]=$!
        echo "started: autobahn/run.sh $* (log: $reports/$name-run.log)"
    }
    # ab_reap PID STATUS: record the end of the run with that PID.
    ab_reap() {
        local n
        for n in "${!ab_pid[@]}"; do
            if [ "${ab_pid[$n]}" = "$1" ]; then
                ab_rc[$n]=$2
                ab_secs[$n]=$(( $(date +%s) - ${ab_t0[$n]} ))
                unset "ab_pid[$n]"
                echo "finished: $n (status $2, ${ab_secs[$n]}s)"
            fi
        done
    }
    ab_wait_one() {
        local pid="" rc=0
        wait -n -p pid "${ab_pid[@]}" || rc=$?
        ab_reap "$pid" "$rc"
    }
    # The three long runs (server, client, client takeover: each about
    # 14 minutes of wstest CPU) start together and share the 2 cores; the
    # short wss run starts when the first of them is done. Run one after
    # another, the takeover run alone added about 13 minutes.
    ab_run server server --deflate
    ab_run client client --deflate
    ab_run client-takeover client --takeover
    if ! skip SKIP_FUZZ; then
        # Idle CPU while wstest runs (its waits, the last run alone) builds
        # the fuzz targets; nice 19 keeps it out of wstest's way.
        # A failed install is reported in the fuzz phase, after Autobahn.
        if bg_wait cargo-fuzz-install; then
            bg_start fuzz-build env RUSTC_BOOTSTRAP=1 nice -n 19 cargo fuzz build
        else
            fuzz_install_failed=1
        fi
    fi
    ab_wait_one
    ab_run server-tls server --tls
    while [ "${#ab_pid[@]}" -gt 0 ]; do
        ab_wait_one
    done
    ab_fail=0
    for side in server client server-tls client-takeover; do
        [ "${ab_rc[$side]}" = 0 ] || ab_fail=1
        note "  $side" "${ab_secs[$side]}" "$([ "${ab_rc[$side]}" = 0 ] && echo ok || echo FAILED)"
        echo "--- Autobahn $side"
        sed -n '/Autobahn results/,$p' "$reports/$side-run.log"
    done
    if [ "$ab_fail" != 0 ]; then
        echo "Autobahn failed; full logs:"
        cat "$reports/server-run.log" "$reports/client-run.log" "$reports/server-tls-run.log" \
            "$reports/client-takeover-run.log"
        exit 1
    fi
fi

# -------------------------------------------------------------------- fuzz
if ! skip SKIP_FUZZ; then
    step "fuzz smoke: wait for cargo-fuzz and the fuzz build"
    if [ "${fuzz_install_failed:-0}" = 1 ]; then
        echo "cargo-fuzz did not install (its log is above and in $logs/cargo-fuzz-install.log)"
        exit 1
    fi
    bg_wait cargo-fuzz-install
    bg_wait fuzz-build
    step "fuzz smoke"
    bash scripts/fuzz-smoke.sh
fi

end_phase ok
