#!/usr/bin/env bash
# Every check CI runs, in order: format, lints, unit and integration tests,
# the Autobahn conformance suite (server and client, original wstest), and a
# short fuzz smoke of every target. Works on a fresh machine: it installs
# what it needs (rustfmt/clippy components, wstest and kosoku venvs, a
# Python venv with `websockets`, cargo-fuzz).
#
#   scripts/test-all.sh            everything
#   SKIP_FUZZ=1 scripts/test-all.sh     skip the fuzz smoke
#   SKIP_AUTOBAHN=1 ...                 skip the conformance runs
#   FUZZ_SECONDS=N                      seconds per fuzz target (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n=== %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

step "toolchain"
cargo --version
for c in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
        rustup component add "$c"
    fi
done

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, -D warnings)"
cargo clippy --all-targets --all-features -- -D warnings

step "library builds without default features"
cargo build --lib --no-default-features

step "release build (server binary and examples, used by the tests and Autobahn)"
cargo build --release --all-features --bins --examples

step "cargo test (all features)"
cargo test --all-features

if [ "${SKIP_AUTOBAHN:-0}" != 1 ]; then
    step "Autobahn: install wstest"
    bash autobahn/install.sh
    # Server and client runs use different ports and run side by side; all
    # cases including permessage-deflate (12.*, 13.*).
    step "Autobahn: server and client, cases 1-13 (logs: autobahn/reports/*.log)"
    mkdir -p autobahn/reports
    # wstest (Python 2) is slow on the deflate cases: about 20-40 minutes
    # for 12.* and 13.* on these machines, most of it in wstest itself.
    export RUN_TIMEOUT="${RUN_TIMEOUT:-3600}"
    bash autobahn/run.sh server --deflate > autobahn/reports/server-run.log 2>&1 &
    server_pid=$!
    bash autobahn/run.sh client --deflate > autobahn/reports/client-run.log 2>&1 &
    client_pid=$!
    ab_fail=0
    wait "$client_pid" || ab_fail=1
    # The server again over wss:// (cases 1-10) once the client run is done.
    bash autobahn/run.sh server --tls > autobahn/reports/server-tls-run.log 2>&1 || ab_fail=1
    wait "$server_pid" || ab_fail=1
    for side in server client server-tls; do
        echo "--- Autobahn $side"
        sed -n '/Autobahn results/,$p' "autobahn/reports/$side-run.log"
    done
    if [ "$ab_fail" != 0 ]; then
        echo "Autobahn failed; full logs:"
        cat autobahn/reports/server-run.log autobahn/reports/client-run.log autobahn/reports/server-tls-run.log
        exit 1
    fi
fi

if [ "${SKIP_FUZZ:-0}" != 1 ]; then
    step "fuzz smoke"
    bash scripts/fuzz-smoke.sh
fi

step "all checks passed"
