#!/usr/bin/env bash
# The one test command: sets up a fresh machine of this kind (Debian 12, Rust,
# CPython 3.11 from pyenv with a shared libpython), builds rwsgi, and runs the Rust
# tests and then the python-tests against the real binary.
#
#   bash scripts/test.sh            # everything
#   bash scripts/test.sh -k http    # extra arguments go to pytest
#   SKIP_CARGO=1 RWSGI_BIN=/path/to/rwsgi bash scripts/test.sh   # python-tests only
#
# Exits non-zero if either suite fails; pytest's summary is the last line.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '\n==> %s\n' "$*" >&2; }

# --- system packages (services are started by the tests themselves) ----------
need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
# A real Prometheus runs the autoscaling examples' PromQL (test_autoscaling_examples.py).
command -v prometheus >/dev/null 2>&1 || [ -x /usr/bin/prometheus ] || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    if ! $SUDO apt-get install -y --no-install-recommends "${need[@]}" >/dev/null 2>&1; then
        $SUDO apt-get update -qq
        $SUDO apt-get install -y --no-install-recommends "${need[@]}"
    fi
    # Debian starts the packaged services; the tests run their own on free ports.
    for svc in nginx redis-server prometheus prometheus-node-exporter; do
        $SUDO systemctl stop "$svc" >/dev/null 2>&1 || $SUDO service "$svc" stop >/dev/null 2>&1 || true
    done
fi

# --- the Python that rwsgi embeds ---------------------------------------------
# Resolve pyenv's shim to the real interpreter, so the binary's rpath points at its
# libpython and the venv below is made from the very same interpreter.
PY=$(command -v python3)
PY=$("$PY" -c 'import sys; print(sys.executable)')
log "python: $PY ($("$PY" --version 2>&1))"

# --- test venv -----------------------------------------------------------------
VENV=$ROOT/.venv
REQ=python-tests/requirements.txt
stamp=$( (cat "$REQ"; "$PY" --version 2>&1; echo "$PY") | sha256sum | cut -d' ' -f1)
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/.requirements-stamp" 2>/dev/null)" != "$stamp" ]; then
    log "creating $VENV"
    rm -rf "$VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip || true
    "$VENV/bin/python" -m pip install -q -r "$REQ"
    echo "$stamp" > "$VENV/.requirements-stamp"
fi

# --- build and Rust tests -------------------------------------------------------
# SKIP_CARGO=1 (with RWSGI_BIN) reruns only the python-tests against a given binary.
status=0
export PYO3_PYTHON="$PY"
if [ "${SKIP_CARGO:-0}" != 1 ]; then
    log "cargo build (PYO3_PYTHON=$PYO3_PYTHON)"
    cargo build --workspace --bins
    log "cargo test --workspace"
    cargo test --workspace || { status=$?; echo "cargo test failed (exit $status)" >&2; }
fi

# --- python-tests ----------------------------------------------------------------
export RWSGI_BIN="${RWSGI_BIN:-$ROOT/target/debug/rwsgi}"
log "pytest python-tests (RWSGI_BIN=$RWSGI_BIN)"
set +e
(cd python-tests && "$VENV/bin/python" -m pytest -q "$@")
py_status=$?
set -e
if [ "$py_status" -eq 5 ]; then
    echo "pytest collected no tests: failing" >&2
fi
# pytest's own summary line stays the last line of output on success.
[ "$status" -eq 0 ] && [ "$py_status" -eq 0 ]
