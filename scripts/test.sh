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
# Debian's own Python 3.11 with its shared library: the wheel tests run one 3.11 wheel
# in a venv of it and in a venv of pyenv's 3.11 (python-tests/test_wheels.py).
for pkg in python3.11 python3.11-venv libpython3.11; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
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

# --- wheels: one per CPython 3.10-3.13 found, for test_wheels.py and the smoke suite ---
# The `dev` profile in target/, where the build above compiled the dependencies: each
# Python version adds pyo3 and rwsgi (about a minute and a half each on 2 cores).
export RWSGI_WHEELHOUSE="$ROOT/target/wheels-ci"
if [ "${SKIP_CARGO:-0}" != 1 ]; then
    log "wheels (scripts/build-wheels.sh --profile dev)"
    rm -rf "$RWSGI_WHEELHOUSE"
    wheels_start=$(date +%s)
    bash scripts/build-wheels.sh --profile dev --out "$RWSGI_WHEELHOUSE" \
        || { status=$?; echo "building the wheels failed (exit $status)" >&2; }
    echo "wheels built in $(( $(date +%s) - wheels_start )) s" >&2
fi

# --- the wheel smoke suite on the other Python versions -----------------------------
# The full suite runs on $PY (below, so that its summary stays the last line); each
# other version's wheel goes into a fresh venv of that Python and serves part of the
# python-tests (scripts/smoke-wheel.sh). Only on a whole run (no pytest arguments,
# cargo not skipped).
smoke_status=0
if [ "${SKIP_CARGO:-0}" != 1 ] && [ $# -eq 0 ]; then
    main_minor=$("$PY" -c 'import sys; print("%d%d" % sys.version_info[:2])')
    for whl in "$RWSGI_WHEELHOUSE"/rwsgi-*.whl; do
        [ -e "$whl" ] || continue
        tag=$(basename "$whl" | cut -d- -f3)            # cp312
        [ "$tag" = "cp$main_minor" ] && continue
        minor="${tag:2:1}.${tag:3}"
        smoke_py=$(ls -d "$HOME"/.pyenv/versions/"$minor".*/bin/python3 2>/dev/null | sort -V | tail -n1 || true)
        [ -n "$smoke_py" ] || smoke_py=$(command -v "python$minor" || true)
        log "wheel smoke suite on Python $minor ($smoke_py)"
        smoke_start=$(date +%s)
        bash scripts/smoke-wheel.sh "$smoke_py" "$whl" \
            || { smoke_status=1; echo "wheel smoke suite on Python $minor failed" >&2; }
        echo "smoke suite on $minor took $(( $(date +%s) - smoke_start )) s" >&2
    done
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
[ "$status" -eq 0 ] && [ "$smoke_status" -eq 0 ] && [ "$py_status" -eq 0 ]
