#!/usr/bin/env bash
# Builds rwsgi against this machine's python3 and serves the example hello
# app on http://127.0.0.1:8000 with queue-time measurement on: every 10 s a log line
# with the interval's queue time, and Prometheus metrics on http://127.0.0.1:9100/metrics.
# No cloud account needed. Extra arguments go to rwsgi (e.g. --workers 4).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(command -v python3)
PY=$("$PY" -c 'import sys; print(sys.executable)')
export PYO3_PYTHON="$PY"
# The `perf` profile (optimised, no LTO, 16 codegen units) serves the example as well
# as `release`, without the fat-LTO pass that made a first release build here take
# 17 min 55 s; the `perf` build serves its first request after 4 min 16 s (README,
# "Release profile: fat or thin LTO").
cargo build --profile perf --bin rwsgi
echo "serving examples/hello on http://127.0.0.1:8000 (Ctrl-C stops)" >&2
exec "${CARGO_TARGET_DIR:-target}/perf/rwsgi" \
    --chdir examples/hello \
    --bind 127.0.0.1:8000 \
    --workers 2 --threads 4 \
    --queue-header X-RequestTime \
    --notify log --notify prometheus --metrics-bind 127.0.0.1:9100 \
    --access-log - \
    "$@" \
    app:application
