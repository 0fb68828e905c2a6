#!/usr/bin/env bash
# Install the Autobahn conformance runners used by autobahn/run.sh.
#
#   autobahn/install.sh            # both: wstest (the gate) and kosoku
#   autobahn/install.sh wstest     # only the original wstest (Python 2.7)
#   autobahn/install.sh kosoku     # only kosoku (Python >= 3.10)
#
# Idempotent: each part is skipped when its venv already imports the
# expected version. Nothing is installed outside the two venvs and a small
# bootstrap dir next to them (all under ~/.cache/wsloop-autobahn by default).
#
# Environment:
#   AUTOBAHN_VENV   py2.7 venv for wstest   (default ~/.cache/wsloop-autobahn/venv27)
#   KOSOKU_VENV     py3 venv for kosoku     (default ~/.cache/wsloop-autobahn/venv3)
#   PY27            Python 2.7 interpreter  (default: pyenv's 2.7.18)
#   KOSOKU_PYTHON   Python >= 3.10 for kosoku (default: python3, else pyenv 3.1x)
#   FORCE=1         reinstall even when the import check passes
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${WSLOOP_AUTOBAHN_CACHE:-$HOME/.cache/wsloop-autobahn}"
AUTOBAHN_VENV="${AUTOBAHN_VENV:-$CACHE/venv27}"
KOSOKU_VENV="${KOSOKU_VENV:-$CACHE/venv3}"
PYENV_ROOT_DIR="${PYENV_ROOT:-$HOME/.pyenv}"
FORCE="${FORCE:-0}"

WSTEST_VERSION=25.10.1
KOSOKU_VERSION=0.1.0
# C masking and UTF-8 checks that autobahn 0.10.9 picks up when importable;
# without it wstest masks in pure Python and the deflate cases (12.*, 13.*)
# take most of an hour. Its sdist ships generated C: needs a C compiler.
WSACCEL_VERSION=0.6.3

# pip talks only to the package index; keep it quiet and cache-free.
export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_CACHE_DIR=1
export PIP_NO_INPUT=1

log() { printf '[autobahn/install] %s\n' "$*" >&2; }
die() { printf '[autobahn/install] ERROR: %s\n' "$1" >&2; exit "${2:-1}"; }

find_py27() {
    local c cands
    if [ -n "${PY27:-}" ]; then
        cands=("$PY27")          # explicit choice: use it or fail
    else
        cands=("$PYENV_ROOT_DIR/versions/2.7.18/bin/python" /root/.pyenv/versions/2.7.18/bin/python)
    fi
    for c in "${cands[@]}"; do
        [ -n "$c" ] && [ -x "$c" ] || continue
        if "$c" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' 2>/dev/null; then
            echo "$c"; return 0
        fi
    done
    return 1
}

find_py3() {
    local c
    for c in "${KOSOKU_PYTHON:-}" python3 \
             "$PYENV_ROOT_DIR"/versions/3.13*/bin/python3 \
             "$PYENV_ROOT_DIR"/versions/3.12*/bin/python3 \
             "$PYENV_ROOT_DIR"/versions/3.11*/bin/python3 \
             "$PYENV_ROOT_DIR"/versions/3.10*/bin/python3; do
        [ -n "$c" ] || continue
        command -v "$c" >/dev/null 2>&1 || continue
        if "$c" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 10) else 1)' 2>/dev/null; then
            command -v "$c"; return 0
        fi
    done
    return 1
}

wstest_ok() {
    [ -x "$AUTOBAHN_VENV/bin/python" ] || return 1
    "$AUTOBAHN_VENV/bin/python" - "$WSTEST_VERSION" <<'EOF' >/dev/null 2>&1
import sys
import autobahntestsuite, autobahntestsuite.wstest, autobahn, twisted, zope.interface
assert autobahntestsuite.version == sys.argv[1], autobahntestsuite.version
EOF
}

kosoku_ok() {
    [ -x "$KOSOKU_VENV/bin/kosoku" ] || return 1
    "$KOSOKU_VENV/bin/python" - "$KOSOKU_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
import kosoku
assert version("kosoku") == sys.argv[1]
EOF
}

wsaccel_ok() {
    "$AUTOBAHN_VENV/bin/python" -c 'import wsaccel.xormask, wsaccel.utf8validator' >/dev/null 2>&1
}

install_wstest() {
    if [ "$FORCE" != 1 ] && wstest_ok; then
        log "wstest $WSTEST_VERSION already installed in $AUTOBAHN_VENV"
    else
        install_wstest_venv
    fi
    install_wsaccel
}

# Speed only: wstest's verdicts are the same with or without it.
install_wsaccel() {
    if [ "$FORCE" != 1 ] && wsaccel_ok; then
        return 0
    fi
    log "installing wsaccel $WSACCEL_VERSION (C masking for wstest)"
    if ! "$AUTOBAHN_VENV/bin/python" -m pip install --no-cache-dir --disable-pip-version-check \
        --no-deps "wsaccel==$WSACCEL_VERSION" >&2 || ! wsaccel_ok; then
        log "WARNING: wsaccel did not install; wstest runs in pure Python (same verdicts, far slower)"
    fi
}

install_wstest_venv() {
    local py27
    if ! py27="$(find_py27)"; then
        die "CPython 2.7 not found (looked for ${PY27:-$PYENV_ROOT_DIR/versions/2.7.18/bin/python}).
    The original Autobahn wstest needs Python 2.7 and is the conformance gate.
    Install it (e.g. 'pyenv install 2.7.18') or point PY27 at a 2.7 interpreter.
    For a quick, non-gating local loop use: autobahn/install.sh kosoku && autobahn/run.sh server --kosoku" 3
    fi
    log "using Python 2.7 at $py27"

    # virtualenv for py2: the last releases that run on / create 2.7 are
    # <20.22; pip on 2.7 resolves that to 20.15.x. Install it into a private
    # bootstrap dir (not into the pyenv interpreter itself).
    local boot="$CACHE/bootstrap-py27"
    if [ ! -d "$AUTOBAHN_VENV" ] || [ ! -x "$AUTOBAHN_VENV/bin/python" ] \
        || ! "$AUTOBAHN_VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        if ! PYTHONPATH="$boot" "$py27" -c 'import virtualenv' >/dev/null 2>&1; then
            log "bootstrapping virtualenv<20.22 into $boot"
            rm -rf "$boot"
            mkdir -p "$boot"
            "$py27" -m pip install --no-cache-dir --disable-pip-version-check \
                --target "$boot" 'virtualenv<20.22' >&2
        fi
        log "creating py2.7 venv at $AUTOBAHN_VENV"
        rm -rf "$AUTOBAHN_VENV"
        mkdir -p "$(dirname "$AUTOBAHN_VENV")"
        # --no-download: seed pip/setuptools/wheel from virtualenv's bundled wheels.
        PYTHONPATH="$boot" "$py27" -m virtualenv --no-download \
            --app-data "$boot/app-data" "$AUTOBAHN_VENV" >&2
    fi
    log "installing wstest $WSTEST_VERSION and its pinned dependencies"
    "$AUTOBAHN_VENV/bin/python" -m pip install --no-cache-dir --disable-pip-version-check \
        -r "$HERE/requirements-wstest-py27.txt" >&2
    wstest_ok || die "wstest import check failed after install in $AUTOBAHN_VENV"
    log "wstest ready: $AUTOBAHN_VENV/bin/wstest"
}

install_kosoku() {
    if [ "$FORCE" != 1 ] && kosoku_ok; then
        log "kosoku $KOSOKU_VERSION already installed in $KOSOKU_VENV"
        return 0
    fi
    local py3
    py3="$(find_py3)" || die "no Python >= 3.10 with venv found for kosoku (set KOSOKU_PYTHON)"
    log "using $py3 for kosoku"
    if [ ! -x "$KOSOKU_VENV/bin/python" ] || ! "$KOSOKU_VENV/bin/python" -m pip --version >/dev/null 2>&1; then
        rm -rf "$KOSOKU_VENV"
        mkdir -p "$(dirname "$KOSOKU_VENV")"
        "$py3" -m venv "$KOSOKU_VENV"
    fi
    "$KOSOKU_VENV/bin/python" -m pip install --no-cache-dir --disable-pip-version-check \
        "kosoku==$KOSOKU_VERSION" >&2
    kosoku_ok || die "kosoku import check failed after install in $KOSOKU_VENV"
    log "kosoku ready: $KOSOKU_VENV/bin/kosoku"
}

what="${1:-all}"
case "$what" in
    all)    install_kosoku; install_wstest ;;
    wstest) install_wstest ;;
    kosoku) install_kosoku ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    *) die "usage: $0 [all|wstest|kosoku]" 2 ;;
esac
