#!/usr/bin/env bash
# Drives the chat demo page in headless Chromium (tests/browser/chat.mjs):
# two pages join a room, one sends, the other shows it; the server is then
# restarted on the same port and both pages must reconnect by themselves
# and carry on. Ends with a screenshot of the page.
#
#   scripts/browser-test.sh
#   scripts/browser-test.sh --install-only   only install what it needs
#                                            (scripts/test-all.sh does this
#                                            early, in the background)
#
# Environment:
#   WSLOOP_BIN   the wsloop binary (default: `cargo build`, then target/debug/wsloop)
#   SCREENSHOT   where the PNG goes (default: docs/chat-demo.png)
#
# Installs what it needs: Debian's chromium with apt-get if /usr/bin/chromium
# is missing (Chromium cannot download its own browser here), and
# playwright-core (pinned in tests/browser/package-lock.json) with npm into
# tests/browser/node_modules.
#
# Exit status: 0 passed, 1 the test failed, 3 Chromium could not be
# installed, 4 node/npm or playwright-core could not be installed.
set -uo pipefail

install_only=false
case "${1:-}" in
    "") ;;
    --install-only) install_only=true ;;
    *) echo "usage: $0 [--install-only]" >&2; exit 2 ;;
esac
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shot=${SCREENSHOT:-$root/docs/chat-demo.png}
chromium=/usr/bin/chromium

say() { echo "[browser-test] $*"; }

# ---------------------------------------------------------------- Chromium
as_root=()
if [ "$(id -u)" != 0 ]; then
    as_root=(sudo -n)
fi
if [ ! -x "$chromium" ]; then
    say "installing Debian's chromium with apt-get (once; takes a few minutes)"
    if ! timeout 900 "${as_root[@]}" apt-get update -q; then
        say "FAILED: apt-get update (root or passwordless sudo needed)"
        exit 3
    fi
    if ! DEBIAN_FRONTEND=noninteractive timeout 1200 "${as_root[@]}" \
        apt-get install -y -q --no-install-recommends chromium; then
        say "FAILED: apt-get install chromium"
        exit 3
    fi
    if [ ! -x "$chromium" ]; then
        say "FAILED: chromium installed but $chromium is missing"
        exit 3
    fi
fi
say "$("$chromium" --version 2>/dev/null | head -1)"

# ------------------------------------------------------- node and packages
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    say "installing node and npm with apt-get"
    timeout 900 "${as_root[@]}" apt-get update -q &&
        DEBIAN_FRONTEND=noninteractive timeout 900 "${as_root[@]}" \
            apt-get install -y -q nodejs npm || { say "FAILED: installing node/npm"; exit 4; }
fi
browser_dir=$root/tests/browser
want=$(node -p "require('$browser_dir/package.json').dependencies['playwright-core']")
have=$(node -p "try { require('$browser_dir/node_modules/playwright-core/package.json').version } catch (e) { '' }")
if [ "$have" != "$want" ]; then
    say "installing playwright-core $want with npm ci"
    if ! (cd "$browser_dir" && timeout 600 npm ci --no-audit --no-fund --loglevel=error); then
        say "FAILED: npm ci in tests/browser"
        exit 4
    fi
fi
if $install_only; then
    say "Chromium, node and playwright-core $want are installed"
    exit 0
fi

# ------------------------------------------------------------------ server
bin=${WSLOOP_BIN:-}
if [ -z "$bin" ]; then
    say "building wsloop"
    (cd "$root" && cargo build --quiet -p wsloop-cli --bin wsloop) || { say "FAILED: cargo build"; exit 1; }
    bin=${CARGO_TARGET_DIR:-$root/target}/debug/wsloop
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/wsloop-browser.XXXXXX")
server_pid=""
node_pid=""

stop_server() {
    [ -n "$server_pid" ] || return 0
    kill -TERM "$server_pid" 2>/dev/null
    for _ in $(seq 50); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null
    wait "$server_pid" 2>/dev/null
    server_pid=""
}

cleanup() {
    stop_server
    if [ -n "$node_pid" ]; then
        kill -TERM "$node_pid" 2>/dev/null
        wait "$node_pid" 2>/dev/null
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

free_port() {
    node -e "const s = require('net').createServer().listen(0, '127.0.0.1', () => { console.log(s.address().port); s.close(); })"
}

start_server() {
    RUST_LOG=info "$bin" serve --app chat --addr "127.0.0.1:$port" --shutdown-timeout 2s \
        >>"$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 100); do
        if ! kill -0 "$server_pid" 2>/dev/null; then
            wait "$server_pid" 2>/dev/null
            server_pid=""
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

started=false
for _ in 1 2 3; do
    port=$(free_port)
    if start_server; then
        started=true
        break
    fi
done
if ! $started; then
    say "FAILED: wsloop serve --app chat did not start"
    cat "$work/server.log"
    exit 1
fi
say "wsloop serve --app chat on 127.0.0.1:$port (pid $server_pid)"

# ------------------------------------------------------------------- test
CHAT_URL="http://127.0.0.1:$port/" WORK_DIR="$work" SCREENSHOT="$shot" \
    timeout 240 node "$browser_dir/chat.mjs" &
node_pid=$!

status=0
while kill -0 "$node_pid" 2>/dev/null; do
    if [ -e "$work/restart-request" ]; then
        rm -f "$work/restart-request"
        say "restarting the server on the same port"
        stop_server
        if start_server; then
            say "server back (pid $server_pid)"
            touch "$work/restarted"
        else
            say "FAILED: the server did not come back on port $port"
        fi
    fi
    sleep 0.1
done
wait "$node_pid" || status=$?
node_pid=""

if [ "$status" != 0 ]; then
    say "FAILED (status $status); server log:"
    cat "$work/server.log"
    if [ -e "$work/failure.png" ]; then
        cp "$work/failure.png" "${shot%.png}-failure.png" && say "page at failure: ${shot%.png}-failure.png"
    fi
    exit 1
fi
say "passed"
