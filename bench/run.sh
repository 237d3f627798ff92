#!/usr/bin/env bash
# The bench in one command: set up the peers, build, run.
#
#   bench/run.sh                 full comparison (3 rounds, ~20 min on 2 cores)
#   bench/run.sh --quick         quick comparison (1 round, 2 s per load, < 3 min)
#   bench/run.sh vs-wrk          generator vs wrk on serve-hello and granian
#   bench/run.sh coldstart       exec → first 200, → all workers, a burst during start-up,
#                                master and total RSS (Django, 2 workers, 3 runs)
#   bench/run.sh scenario        autoscaling ramp on rwsgi (tracker on)
#   bench/run.sh autoscale       closed loop: the HPA rule scaling rwsgi on queue time vs CPU
#   bench/run.sh callgrind       instructions per request under valgrind (tracker on ÷ off,
#                                rwsgi vs bjoern); options in bench/callgrind.sh
#   bench/run.sh soak [SECS]     30-minute soak (python-tests/soak.py: mixed load, HUP,
#                                recycling; RSS and fds of master and workers), figures in
#                                bench/results/soak-*.json; CI runs 60 s of the same code
#   bench/run.sh fuzz            the property tests with millions of cases (FUZZ_CASES,
#                                default 2,000,000 per parser; FUZZ_HTTP_CASES, default
#                                100,000 own-path-vs-hyper exchanges), optimised build
#                                (FUZZ_PROFILE, default perf);
#                                cases run in bench/results/fuzz-*.txt
#   bench/run.sh MODE ARGS...    any rwsgi-bench subcommand (load, compare, render, …)
#
# Environment: PYTHON (interpreter for the venv; default python3, which must be the
# one rwsgi was built against), RWSGI_BIN (use this rwsgi binary; nothing is built),
# RWSGI_BUILD=0 to skip building rwsgi, BENCH_PROFILE (the cargo profile of both
# builds: release, the default, or perf, the quick optimised one), CARGO_TARGET_DIR.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/bench/.venv"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
PROFILE="${BENCH_PROFILE:-release}"
RWSGI="${RWSGI_BIN:-$TARGET/$PROFILE/rwsgi}"
BENCH="$TARGET/$PROFILE/rwsgi-bench"
PYTHON="${PYTHON:-python3}"

mode=compare
case "${1:-}" in
  load|serve-hello|vs-wrk|compare|coldstart|scenario|autoscale|render|callgrind) mode="$1"; shift ;;
esac

say() { printf '\n== %s\n' "$*" >&2; }

# --- soak and fuzz: no peers, no load generator ------------------------------------
stamp_now="$(date -u +%Y%m%dT%H%M%SZ)"
case "${1:-}" in
  soak)
    shift
    secs="${1:-1800}"
    if [ -z "${RWSGI_BIN:-}" ]; then
      say "building rwsgi"
      cargo build --profile "$PROFILE" -q -p rwsgi
    fi
    out="$ROOT/bench/results/soak-$stamp_now.json"
    say "soak: ${secs}s against $RWSGI"
    exec "$PYTHON" "$ROOT/python-tests/soak.py" --bin "$RWSGI" --seconds "$secs" --out "$out" ;;
  fuzz)
    shift
    out="$ROOT/bench/results/fuzz-$stamp_now.txt"
    say "fuzz: ${FUZZ_CASES:=2000000} cases per parser, ${FUZZ_HTTP_CASES:=100000} HTTP exchanges"
    export FUZZ_CASES FUZZ_HTTP_CASES
    cargo test --profile "${FUZZ_PROFILE:-perf}" -p rwsgi --test fuzz_parsers --test own_vs_hyper -- --nocapture "$@" 2>&1 \
      | tee "$out.log" | grep --line-buffered -E '^fuzz |test result|panicked|Test failed' | tee "$out"
    exit "${PIPESTATUS[0]}" ;;
esac

# --- system packages: libev for bjoern, a TrueType font for the charts, wrk --------
missing=()
for pkg in libev-dev fonts-dejavu-core wrk valgrind; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  say "installing ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

# --- the venv with the peers --------------------------------------------------------
stamp="$VENV/.installed"
want="$(cat bench/requirements.txt bench/requirements-bjoern.txt)"
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV with $($PYTHON --version 2>&1)"
  "$PYTHON" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing the peers into $VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q -r bench/requirements.txt
  if ! "$VENV/bin/pip" install -q -r bench/requirements-bjoern.txt; then
    echo "bjoern did not build: it will be skipped (is libev-dev installed?)" >&2
  fi
  printf '%s' "$want" > "$stamp"
fi

# --- builds -----------------------------------------------------------------------
say "building rwsgi-bench"
cargo build --profile "$PROFILE" -q -p rwsgi-bench
if [ -z "${RWSGI_BIN:-}" ] && [ "${RWSGI_BUILD:-1}" != 0 ] && [ "$mode" != vs-wrk ] && [ "$mode" != render ]; then
  say "building rwsgi"
  if ! cargo build --profile "$PROFILE" -q -p rwsgi; then
    echo "rwsgi did not build: the comparison runs without it" >&2
  fi
fi
if [ -x "$RWSGI" ] && ! "$RWSGI" --version >/dev/null 2>&1; then
  echo "note: $RWSGI does not run (--version failed); its runs will fail and be noted" >&2
fi

say "rwsgi-bench $mode $*"
case "$mode" in
  callgrind)
    export CARGO_TARGET_DIR="$TARGET" RWSGI_BIN="$RWSGI" RWSGI_BENCH_BIN="$BENCH"
    exec bash "$ROOT/bench/callgrind.sh" "$@" ;;
  compare|coldstart|vs-wrk|scenario|autoscale|render)
    exec "$BENCH" "$mode" --venv "$VENV" --rwsgi "$RWSGI" "$@" ;;
  *)
    exec "$BENCH" "$mode" "$@" ;;
esac
