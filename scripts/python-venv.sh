#!/bin/sh
# Creates (once) a Python virtual environment with the `websockets` package
# under target/py-venv, for tests/interop_python.rs. Idempotent: a venv that
# already imports websockets is reused. Prints the venv's python path last.
#
#   scripts/python-venv.sh            # create or reuse
#   WSLOOP_PY_VENV=/some/dir scripts/python-venv.sh
set -eu

root=$(cd "$(dirname "$0")/.." && pwd)
venv=${WSLOOP_PY_VENV:-$root/target/py-venv}
py=$venv/bin/python
python=${PYTHON:-python3}

if [ -x "$py" ] && "$py" -c 'import websockets' 2>/dev/null; then
    echo "$py"
    exit 0
fi

if ! command -v "$python" >/dev/null 2>&1; then
    echo "python-venv.sh: $python not found; install Python 3.9+ or set PYTHON" >&2
    exit 1
fi

mkdir -p "$(dirname "$venv")"
if [ ! -x "$py" ]; then
    "$python" -m venv "$venv" >&2 || {
        echo "python-venv.sh: '$python -m venv $venv' failed (python3-venv missing?)" >&2
        rm -rf "$venv"
        exit 1
    }
fi
# websockets >= 12 has the sync client used by tests/py/echo_client.py.
"$py" -m pip install --disable-pip-version-check --quiet --timeout 15 --retries 1 'websockets>=12' >&2 || {
    echo "python-venv.sh: 'pip install websockets' failed (no network or no PyPI access?)" >&2
    exit 1
}
"$py" -c 'import websockets' >&2
echo "$py"
