#!/usr/bin/env bash
# Instructions per request under callgrind: user-space instruction counts, which do not
# drift the way req/s does on a shared 2-core machine (runs of the same binary move by
# ±10% there). This is how the bench checks "tracker on ÷ off ≥ 0.98", and where the
# server's own cost per request shows against bjoern's.
#
#   bench/callgrind.sh                     hello world: rwsgi, rwsgi +tracker, bjoern
#   bench/callgrind.sh --app flask_app:application --requests 4000
#   bench/callgrind.sh --app django_app:application --requests 600 --warmup 200 \
#       --server rwsgi,bjoern,granian,uwsgi,gunicorn-gthread
#                                          the same app on every server: the difference
#                                          between two rows is the servers' own share
#
# For each server it starts one worker under valgrind, warms it with --warmup requests,
# zeroes the counters (callgrind_control -z), sends --requests requests on 8 keep-alive
# connections, dumps (callgrind_control -d) and divides the worker's instruction count
# by the requests. Every request carries an X-RequestTime stamp, so the bytes on the
# wire are the same with the tracker on and off. The kernel's share (TCP) is not
# counted: callgrind sees user space only.
#
# CALLGRIND_PORT (default 9310) moves the server to another port, so two runs (two builds
# compared side by side) can share the machine; CALLGRIND_SPLIT_REQUESTS (default
# 200,000) sizes the CPU-time run without valgrind.
#
# Writes bench/results/callgrind-APP.md (or --out DIR). Needs the bench venv and the
# release binaries: bench/run.sh sets both up (it calls this script for `callgrind`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
RWSGI="${RWSGI_BIN:-$TARGET/release/rwsgi}"
LOADGEN="${RWSGI_BENCH_BIN:-$TARGET/release/rwsgi-bench}"
VENV="$ROOT/bench/.venv"
APP="hello:application"
REQUESTS=20000
WARMUP=3000
OUT="$ROOT/bench/results"
SERVERS="rwsgi,rwsgi-tracker,bjoern"
PORT="${CALLGRIND_PORT:-9310}"

while (($#)); do
  case "$1" in
    --app) APP="$2"; shift 2 ;;
    --requests) REQUESTS="$2"; shift 2 ;;
    --warmup) WARMUP="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --server) SERVERS="$2"; shift 2 ;;
    *) echo "bench/callgrind.sh: unknown option $1 (see the header of this file)" >&2; exit 2 ;;
  esac
done

# The report is written after a `cd` into the apps: a relative --out is the caller's.
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"

if ! command -v valgrind >/dev/null; then
  echo "installing valgrind" >&2
  apt-get update -qq && apt-get install -y -qq valgrind >/dev/null
fi
for f in "$RWSGI" "$LOADGEN" "$VENV/bin/python"; do
  [ -e "$f" ] || { echo "bench/callgrind.sh: $f is missing; run bench/run.sh callgrind" >&2; exit 1; }
done

WORK="$(mktemp -d /tmp/rwsgi-callgrind.XXXXXX)"
PGID=""
cleanup() {
  if [ -n "$PGID" ]; then kill -TERM -- "-$PGID" 2>/dev/null || true; sleep 1; kill -KILL -- "-$PGID" 2>/dev/null || true; fi
}
trap cleanup EXIT

cd "$ROOT/bench/apps"
# A fixed hash seed: dict probe lengths (the environ's) then repeat from run to run.
export VIRTUAL_ENV="$VENV" PYTHONPATH="$ROOT/bench/apps" PYTHONDONTWRITEBYTECODE=1 PYTHONHASHSEED=0
export PATH="$VENV/bin:$PATH"
URL="http://127.0.0.1:$PORT/"
STAMP=(--stamp-header X-RequestTime)

# Sets RESULT to the instruction count per request of one server. (It runs in this
# shell, not in a $(...) subshell, so that the EXIT trap can stop what it started.)
RESULT=""
# Sets CMD to the command line of server $1 (under valgrind when VALGRIND_INLINE is set).
CMD=()
VALGRIND_INLINE=()
server_cmd() {
  case "$1" in
    # --inline-max-ms: under valgrind a request runs 50-100 times slower than it does
    # for real, so Flask's and Django's routes would pass the 1 ms bound and go to the
    # Python thread; without valgrind (the compare's runs) they run on the IO thread
    # (their Python thread's CPU time stays near 0). The raised bound measures that path.
    rwsgi) CMD=("$RWSGI" --bind "127.0.0.1:$PORT" --workers 1 --threads 1 --log-level warning
        "${VALGRIND_INLINE[@]}" "$APP") ;;
    rwsgi-tracker) CMD=("$RWSGI" --bind "127.0.0.1:$PORT" --workers 1 --threads 1 --log-level warning
        "${VALGRIND_INLINE[@]}" --queue-header X-RequestTime --notify prometheus
        --metrics-bind 127.0.0.1:0 "$APP") ;;
    bjoern) CMD=("$VENV/bin/python" bjoern_serve.py --workers 1 --port "$PORT" "$APP") ;;
    # The peers as bench/run.sh compare starts them, with one worker. uWSGI gets 8
    # threads: a uWSGI thread holds its keep-alive connection until it closes, so with
    # one thread 7 of the 8 connections would wait for the whole run.
    granian) CMD=("$VENV/bin/granian" --interface wsgi --host 127.0.0.1 --port "$PORT" --workers 1
        --blocking-threads 1 --http 1 --no-ws --log-level warning "$APP") ;;
    uwsgi) CMD=("$VENV/bin/uwsgi" --http11-socket "127.0.0.1:$PORT" --master --processes 1 --threads 8
        --need-app --die-on-term --disable-logging --listen 1024 --module "$APP") ;;
    gunicorn-gthread) CMD=("$VENV/bin/gunicorn" --bind "127.0.0.1:$PORT" --workers 1 --worker-class gthread
        --threads 1 --log-level warning "$APP") ;;
    *) echo "bench/callgrind.sh: unknown server $1 (rwsgi, rwsgi-tracker, bjoern, granian, uwsgi, gunicorn-gthread)" >&2; exit 2 ;;
  esac
}
measure() {
  local name="$1"
  VALGRIND_INLINE=(--inline-max-ms 1000)
  server_cmd "$name"
  VALGRIND_INLINE=()
  local cmd=("${CMD[@]}")
  setsid valgrind --tool=callgrind --trace-children=yes --dump-instr=no \
    --callgrind-out-file="$WORK/$name.cg.%p" "${cmd[@]}" >"$WORK/$name.log" 2>&1 &
  PGID=$!
  local up=0
  for _ in $(seq 600); do
    if curl -s -o /dev/null "$URL"; then up=1; break; fi
    sleep 0.2
  done
  if [ "$up" != 1 ]; then
    echo "$name did not answer under valgrind within 120 s; its log:" >&2
    tail -20 "$WORK/$name.log" >&2
    exit 1
  fi
  "$LOADGEN" load "$URL" -n "$WARMUP" -c 8 -t 1 "${STAMP[@]}" >/dev/null
  # The worker: the process in the group that served the requests (bjoern's child,
  # rwsgi's re-executed worker), i.e. the one that executed the most basic blocks.
  local pids worker best=0
  pids="$(pgrep -g "$PGID")"
  for p in $pids; do
    local ir
    ir="$(callgrind_control -s "$p" 2>/dev/null | awk '/Basic blocks:/ {gsub(",",""); sub(/.*executed /,""); print $1 + 0}' | head -1)"
    ir="${ir:-0}"
    if [ "$ir" -gt "$best" ]; then best="$ir"; worker="$p"; fi
  done
  if [ -z "${worker:-}" ]; then
    echo "no callgrind process of $name answered callgrind_control" >&2
    exit 1
  fi
  callgrind_control -z "$worker" >/dev/null 2>&1
  "$LOADGEN" load "$URL" -n "$REQUESTS" -c 8 -t 1 "${STAMP[@]}" >"$WORK/$name.load"
  callgrind_control --dump="$name" "$worker" >/dev/null 2>&1
  sleep 1
  local total
  total="$(cat "$WORK/$name.cg.$worker".* 2>/dev/null | awk '/^summary:/ {s += $2} END {print s + 0}')"
  kill -TERM -- "-$PGID" 2>/dev/null || true
  sleep 2
  kill -KILL -- "-$PGID" 2>/dev/null || true
  wait "$PGID" 2>/dev/null || true
  PGID=""
  if [ "$total" = 0 ]; then
    echo "no callgrind dump for $name (worker $worker) in $WORK" >&2
    exit 1
  fi
  RESULT="$(awk -v t="$total" -v n="$REQUESTS" 'BEGIN { printf "%.0f", t / n }')"
}

# A worker's CPU time per request in user space and in the kernel, without valgrind,
# under the same kind of load (keep-alive, stamped): callgrind counts user space only,
# and this says how much of a request's CPU time those counts cover. Sets SPLIT to
# "user_us system_us user_share" from /proc/PID/stat's utime and stime (clock ticks)
# of the busiest process of the server over SPLIT_REQUESTS.
SPLIT_REQUESTS="${CALLGRIND_SPLIT_REQUESTS:-200000}"
SPLIT=""
cpu_split() {
  server_cmd "$1"
  setsid "${CMD[@]}" >"$WORK/$1.split.log" 2>&1 &
  PGID=$!
  for _ in $(seq 100); do curl -s -o /dev/null "$URL" && break; sleep 0.1; done
  "$LOADGEN" load "$URL" -n 20000 -c 8 -t 1 "${STAMP[@]}" >/dev/null
  local p
  declare -A before=()
  for p in $(pgrep -g "$PGID"); do before[$p]="$(awk '{print $14, $15}' "/proc/$p/stat")"; done
  "$LOADGEN" load "$URL" -n "$SPLIT_REQUESTS" -c 8 -t 1 "${STAMP[@]}" >"$WORK/$1.split.load"
  SPLIT=""
  local best=0
  for p in "${!before[@]}"; do
    local line
    line="$(echo "${before[$p]} $(awk '{print $14, $15}' "/proc/$p/stat" 2>/dev/null)")" || continue
    local ticks
    ticks="$(echo "$line" | awk '{print ($3 - $1) + ($4 - $2)}')"
    if [ "${ticks:-0}" -gt "$best" ]; then
      best="$ticks"
      SPLIT="$(echo "$line" | awk -v n="$SPLIT_REQUESTS" -v hz="$(getconf CLK_TCK)" '{
        u = $3 - $1; s = $4 - $2
        printf "%.2f %.2f %.3f", u * 1e6 / hz / n, s * 1e6 / hz / n, u / (u + s) }')"
    fi
  done
  kill -TERM -- "-$PGID" 2>/dev/null || true
  sleep 1
  kill -KILL -- "-$PGID" 2>/dev/null || true
  wait "$PGID" 2>/dev/null || true
  PGID=""
}

declare -A IR
IFS=',' read -r -a list <<<"$SERVERS"
for s in "${list[@]}"; do
  echo "== $s: $APP, $WARMUP warm-up + $REQUESTS measured requests under callgrind" >&2
  measure "$s"
  IR[$s]="$RESULT"
  echo "   ${IR[$s]} instructions per request" >&2
done

declare -A USER_US SYS_US SHARE
for s in "${list[@]}"; do
  echo "== $s without valgrind: CPU time per request over $SPLIT_REQUESTS requests" >&2
  cpu_split "$s"
  read -r USER_US[$s] SYS_US[$s] SHARE[$s] <<<"${SPLIT:-- - -}"
  echo "   user ${USER_US[$s]} µs, system ${SYS_US[$s]} µs per request" >&2
done

mkdir -p "$OUT"
{
  echo "# rwsgi under callgrind: $(date -u '+%Y-%m-%d %H:%M') UTC"
  echo
  echo "User-space instructions per request (the worker process; kernel TCP not counted)."
  echo "App \`$APP\`, 1 worker, $REQUESTS requests on 8 keep-alive connections after $WARMUP"
  echo "warm-up requests, each with an \`X-RequestTime\` stamp. Command: \`bench/run.sh callgrind$( [ "$APP" != hello:application ] && printf ' --app %s' "$APP")\`."
  echo
  echo "| server | instructions / request | user CPU µs / request | kernel CPU µs / request | user share |"
  echo "|---|---:|---:|---:|---:|"
  for s in "${list[@]}"; do
    echo "| $s | ${IR[$s]} | ${USER_US[$s]} | ${SYS_US[$s]} | ${SHARE[$s]} |"
  done
  echo
  echo "The CPU columns are measured without valgrind, one worker, $SPLIT_REQUESTS stamped requests"
  echo "on 8 keep-alive connections, from the busiest process's utime and stime in /proc/PID/stat."
  echo "They move by about ±10% from run to run on this machine; the instruction counts do not."
  if [ -n "${IR[rwsgi]:-}" ] && [ -n "${IR[rwsgi-tracker]:-}" ]; then
    echo
    awk -v off="${IR[rwsgi]}" -v on="${IR[rwsgi-tracker]}" 'BEGIN {
      printf "Tracker on ÷ off (instructions, off ÷ on): **%.4f×** (the tracker adds %d instructions per request)\n", off / on, on - off }'
    if [ -n "${SHARE[rwsgi]:-}" ] && [ "${SHARE[rwsgi]}" != - ]; then
      echo
      echo "The tracker makes no system call (the same recvmsg/writev/epoll_wait per request with it"
      echo "on or off), so the kernel's part of a request is the same either way. The tracker's cost"
      echo "in CPU time is then its share of the user-space instructions times rwsgi's user share:"
      awk -v off="${IR[rwsgi]}" -v on="${IR[rwsgi-tracker]}" -v u="${SHARE[rwsgi]}" 'BEGIN {
      printf "**%.3f×** CPU time, tracker on ÷ off, as throughput (%.1f%% more CPU per request).\n", 1 / (1 + (on - off) / off * u), (on - off) / off * u * 100 }'
    fi
  fi
} >"$OUT/callgrind-${APP%%:*}.md"
cat "$OUT/callgrind-${APP%%:*}.md"
echo "callgrind dumps (for callgrind_annotate): $WORK" >&2
