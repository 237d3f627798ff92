"""rwsgi scaling its own workers (issue 13): --min-workers/--max-workers from the
per-interval p90 wait and utilization, with hysteresis and a cooldown, through the
same overlap handover as TTIN/TTOU, so no request is lost either way.

Phase 1: six clients of a 50 ms app on one single-threaded worker wait about 250 ms
each: the pool grows to --max-workers 3 (a new connection per request, as a proxy
without an upstream pool, so new workers get their share). Phase 2: a light keep-alive
load (one client, a request every ~55 ms): the wait vanishes and utilization stays far
below the bound, so workers retire one per cooldown down to --min-workers 1, while the
keep-alive client is handed over from each retiring worker without a failure."""

import re
import time

from loadclient import Load, wait_workers

APP = "apps.queue_app:application"


def scaling_lines(srv):
    return re.findall(r"Scaling workers: (\d+) -> (\d+)", srv.stderr_text())


def test_workers_follow_the_wait_up_and_down_without_losing_a_request(start_server):
    srv = start_server(APP, "--workers", "1", "--min-workers", "1", "--max-workers", "3",
                       "--threads", "1", "--notify-interval", "1", "--scale-cooldown", "1",
                       "--scale-up-wait", "0.05", "--scale-down-utilization", "0.5")
    with Load(srv.raw, conns=6, path="/sleep?ms=50", pace=0, reuse=False) as busy:
        deadline = time.monotonic() + 30
        while ("2", "3") not in scaling_lines(srv) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ("1", "2") in scaling_lines(srv) and ("2", "3") in scaling_lines(srv), srv.stderr_text()[-3000:]
        wait_workers(srv, 3, timeout=10)
        time.sleep(1.0)  # the third worker takes its share
    assert busy.failures() == [], busy.failures()[:5]
    assert len(busy.pids()) == 3, busy.pids()
    up_lines = scaling_lines(srv)
    assert all(int(b) == int(a) + 1 for a, b in up_lines), up_lines
    assert "p90 wait" in srv.stderr_text() and "over --scale-up-wait 0.050s" in srv.stderr_text()

    with Load(srv.raw, conns=1, path="/sleep?ms=5", pace=0.05) as light:
        deadline = time.monotonic() + 40
        while ("2", "1") not in scaling_lines(srv) and time.monotonic() < deadline:
            time.sleep(0.2)
        wait_workers(srv, 1, timeout=15)
        time.sleep(0.5)
    assert light.failures() == [], light.failures()[:5]
    assert len(light.successes()) > 50
    lines = scaling_lines(srv)
    assert lines[len(up_lines):] == [("3", "2"), ("2", "1")], lines
    # Never above max nor below min.
    assert all(1 <= int(b) <= 3 for _, b in lines)


def test_scaling_options_are_validated(start_server, rwsgi_bin):
    import subprocess

    cases = [
        (["--min-workers", "2"], "--min-workers and --max-workers go together"),
        (["--min-workers", "3", "--max-workers", "2"], "need 1 <= min <= max <= 1024"),
        (["--workers", "5", "--min-workers", "1", "--max-workers", "3"], "--workers 5 must lie within"),
        (["--min-workers", "1", "--max-workers", "2", "--scale-down-utilization", "1.5"],
         "--scale-down-utilization 1.5: must be between 0 and 1"),
    ]
    for args, message in cases:
        p = subprocess.run([rwsgi_bin, *args, APP], capture_output=True, text=True, timeout=20)
        assert p.returncode == 2 and message in p.stderr, (args, p.returncode, p.stderr)
