"""The process model under load, as gunicorn users rely on it: a master supervising
``--workers`` processes. Each test keeps a background client (``loadclient.Load``:
keep-alive connections, requests in a loop, every failure recorded) running while
it kills a worker, sends TERM / HUP / TTIN / TTOU, lets a request hang past
``--timeout``, recycles workers with ``--max-requests``, or lets workers crash in a
loop, and then checks both what the clients saw and the process table (the
master's children)."""

import os
import re
import signal
import threading
import time
from collections import Counter

import pytest

from conftest import APPS_DIR, exchange
from loadclient import Load, alive, wait_workers, workers_of

APP = "apps.process_app:application"


def wait_sleeping(srv, tag, timeout=10.0):
    """Waits until a /sleep?tag=... request reached Python; returns the worker pid."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in srv.read_state_lines("sleeps"):
            parts = line.split()
            if parts[:2] == ["start", tag]:
                return int(parts[2])
        time.sleep(0.01)
    raise AssertionError(f"/sleep tag={tag} did not reach Python within {timeout}s")


def background(fn):
    """Runs fn in a thread; returns a dict that gets 'result' or 'error' and 'at'."""
    out = {}

    def run():
        try:
            out["result"] = fn()
        except Exception as e:  # noqa: BLE001 - the test inspects it
            out["error"] = e
        out["at"] = time.monotonic()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    out["thread"] = t
    return out


def assert_tree_gone(pids):
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.02)
    left = [p for p in pids if alive(p)]
    assert not left, f"processes left running: {left}"


# ---------------------------------------------------------------------------
# a worker dies
# ---------------------------------------------------------------------------


def test_kill9_worker_only_its_requests_fail_and_it_is_replaced(start_server):
    srv = start_server(APP, "-w", "2", "--threads", "2")
    before = wait_workers(srv, 2)
    with Load(srv.raw, conns=6) as load:
        # Which worker accepts a connection is the kernel's choice; the victim is the
        # one holding the most connections.
        load.wait_for(lambda rs: len(rs) > 60 and all(load.holder.get(c) for c in range(6)),
                      10, "every connection answered")
        holders = dict(load.holder)
        victim = Counter(holders.values()).most_common(1)[0][0]
        on_victim = {c for c, p in holders.items() if p == victim}
        n_at_kill = load.count()
        t_kill = time.monotonic()
        os.kill(victim, signal.SIGKILL)

        now = wait_workers(srv, 2, timeout=1.0, gone=[victim])
        replaced_in = time.monotonic() - t_kill
        new = set(now) - set(before)
        assert len(new) == 1, f"workers before {before}, after {now}"
        srv.wait_for_log(f"pid={new.pop()}", timeout=5)
        load.wait_for(lambda rs: len([r for r in rs[n_at_kill:] if r.ok]) >= 100, 10,
                      "100 successful requests after the kill")
    assert replaced_in < 1.0
    fails = load.failures()
    # Only requests on connections the dead worker held may fail, one per connection
    # (the client reconnects and the next request goes to a live worker).
    stray = [r for r in fails if r.conn not in on_victim]
    assert not stray, f"requests failed on connections of other workers:\n{load.summary()}"
    per_conn = Counter(r.conn for r in fails)
    assert all(n == 1 for n in per_conn.values()), load.summary()
    assert len(fails) <= len(on_victim)
    assert all(r.t0 >= t_kill - 1.0 for r in fails), load.summary()
    assert "Worker died unexpectedly (signal 9)" in srv.logs()


@pytest.mark.parametrize("how", ["os._exit(0)", "ctypes.string_at(0)"], ids=["exit", "segfault"])
def test_worker_that_exits_or_segfaults_is_replaced(start_server, tmp_path, how):
    """A worker that ends on its own (an exit from app code, a segfault in an
    extension) is replaced while the other one keeps serving."""
    (tmp_path / "dying_app.py").write_text(
        "import ctypes, os, threading\n"
        "def application(environ, start_response):\n"
        "    if environ['PATH_INFO'] == '/die':\n"
        f"        threading.Timer(0.1, lambda: {how}).start()\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [str(os.getpid()).encode()]\n")
    srv = start_server("dying_app:application", "-w", "2", chdir=tmp_path)
    before = wait_workers(srv, 2)
    with Load(srv.raw, conns=2) as load:
        load.wait_requests(20)
        r = exchange(srv, "GET", "/die")
        assert r.status == 200
        gone = int(r.text)
        now = wait_workers(srv, 2, timeout=2.0, gone=[gone])
        n = load.count()
        load.wait_for(lambda rs: len([x for x in rs[n:] if x.ok]) >= 30, 10, "requests after")
    assert set(now) != set(before)
    # Only connections the dying worker held may have lost a request.
    stray = [x for x in load.failures() if x.prev_pid not in (gone, None)]
    assert not stray, load.summary()
    assert "Worker died unexpectedly" in srv.logs()


# ---------------------------------------------------------------------------
# signals
# ---------------------------------------------------------------------------


def test_term_under_load_no_failures_exit_0(start_server):
    srv = start_server(APP, "-w", "2", "--threads", "2", "--graceful-timeout", "10")
    tree = [srv.pid] + wait_workers(srv, 2)
    # Connection 0 keeps a slow request in flight most of the time.
    load = Load(srv.raw, conns=4,
                path=lambda c, s: f"/sleep?s=0.4&tag=c{c}s{s}" if c == 0 else "/pid").start()
    try:
        load.wait_requests(60)

        def slow_in_flight(rs):
            done = {r.seq for r in rs if r.conn == 0}
            tags = [l.split()[1] for l in srv.read_state_lines("sleeps")]
            return any(int(t[3:]) not in done for t in tags if t.startswith("c0s"))

        load.wait_for(slow_in_flight, 5, "a slow request in Python")
        # Every request the client issues from now on was issued before TERM.
        load.stop_issuing()
        t_term = time.monotonic()
        srv.signal(signal.SIGTERM)
        load.join()
    finally:
        load.join()
    assert srv.wait(15) == 0
    rs = load.snapshot()
    fails = load.failures()
    assert not fails, f"requests issued before TERM failed:\n{load.summary()}"
    in_flight = [r for r in rs if r.t0 < t_term < r.t1]
    assert any("/sleep" in r.path for r in in_flight), \
        "the slow request in flight at TERM was not seen finishing"
    assert_tree_gone(tree)
    assert "Shutting down: Master" in srv.logs()


def test_hup_under_load_serves_new_code_no_failures(start_server, tmp_path):
    src = (APPS_DIR / "process_app.py").read_text()
    app_file = tmp_path / "hup_app.py"
    app_file.write_text(src)
    srv = start_server("hup_app:application", "-w", "2", "--threads", "2", chdir=tmp_path,
                       env={"PYTHONDONTWRITEBYTECODE": "1"})
    old = wait_workers(srv, 2)
    with Load(srv.raw, conns=4, path="/info") as load:
        load.wait_requests(60)
        app_file.write_text(src.replace('VERSION = "v1"', 'VERSION = "v2 after reload"'))
        srv.signal(signal.SIGHUP)
        load.wait_for(lambda rs: any(b"v2 after reload" in r.body for r in rs), 10,
                      "the new module's text")
        new = wait_workers(srv, 2, timeout=10, gone=old)
        t_old_gone = time.monotonic()
        n = load.count()
        load.wait_for(lambda rs: len([r for r in rs[n:] if r.ok]) >= 60, 10,
                      "60 requests after the old workers left")
    assert not load.failures(), load.summary()
    late = [r for r in load.snapshot() if r.t0 > t_old_gone]
    assert late and all(b"v2 after reload" in r.body for r in late), \
        "old code served after the old workers were gone"
    assert {r.pid for r in late} <= set(new)
    assert not any(alive(p) for p in old)


def test_ttin_ttou_change_worker_count_under_load(start_server):
    srv = start_server(APP, "-w", "2")
    first = wait_workers(srv, 2)
    with Load(srv.raw, conns=3) as load:
        load.wait_requests(30)
        srv.signal(signal.SIGTTIN)
        three = wait_workers(srv, 3, timeout=3)
        added = (set(three) - set(first)).pop()
        srv.wait_for_log(f"pid={added}", timeout=5)
        srv.signal(signal.SIGTTIN)
        wait_workers(srv, 4, timeout=3)
        srv.signal(signal.SIGTTOU)
        wait_workers(srv, 3, timeout=5)
        srv.signal(signal.SIGTTOU)
        two = wait_workers(srv, 2, timeout=5)
        n = load.count()
        load.wait_for(lambda rs: len([r for r in rs[n:] if r.ok]) >= 30, 10, "requests after TTOU")
    assert not load.failures(), load.summary()
    assert len(two) == 2
    assert "Handling signal: ttin" in srv.logs() and "Handling signal: ttou" in srv.logs()


def test_ttou_never_goes_below_one_worker(start_server):
    srv = start_server(APP, "-w", "1")
    only = wait_workers(srv, 1)
    srv.signal(signal.SIGTTOU)
    srv.wait_for_log("Handling signal: ttou")
    # The worker count is polled for a while: it must stay at the one worker.
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert workers_of(srv.pid) == only
        time.sleep(0.05)
    assert exchange(srv, "GET", "/pid").status == 200


# ---------------------------------------------------------------------------
# --timeout and --graceful-timeout
# ---------------------------------------------------------------------------


def test_timeout_kills_stuck_worker_and_names_the_request(start_server):
    srv = start_server(APP, "-w", "2", "--threads", "2", "-t", "2", "--graceful-timeout", "1")
    before = wait_workers(srv, 2)
    with Load(srv.raw, conns=3) as load:
        load.wait_requests(30)
        stuck = background(lambda: exchange(srv, "GET", "/sleep?s=30&tag=stuck", timeout=20))
        stuck_pid = wait_sleeping(srv, "stuck")
        t_stuck = time.monotonic()
        text = srv.wait_for_log("WORKER TIMEOUT", timeout=8)
        line = next(l for l in text.splitlines() if "WORKER TIMEOUT" in l)
        assert "GET /sleep" in line, line
        assert f"pid={stuck_pid}" in line, line
        killed_after = time.monotonic() - t_stuck
        now = wait_workers(srv, 2, timeout=2, gone=[stuck_pid])
        stuck["thread"].join(10)
        n = load.count()
        load.wait_for(lambda rs: len([r for r in rs[n:] if r.ok]) >= 50, 10,
                      "requests after the replacement")
    assert 1.5 < killed_after < 5, f"stuck worker killed {killed_after:.1f}s after the request began"
    assert "error" in stuck, f"the stuck request got a response: {stuck.get('result')}"
    assert len(set(now) - set(before)) == 1
    # Only requests that the stuck worker held may fail.
    stray = [r for r in load.failures() if r.prev_pid not in (stuck_pid, None)]
    assert not stray, load.summary()


def test_graceful_timeout_short_request_finishes_long_one_is_cut(start_server):
    srv = start_server(APP, "-w", "1", "--threads", "2", "--graceful-timeout", "2")
    short = background(lambda: exchange(srv, "GET", "/sleep?s=1&tag=short", timeout=20))
    long = background(lambda: exchange(srv, "GET", "/sleep?s=15&tag=long", timeout=20))
    wait_sleeping(srv, "short")
    wait_sleeping(srv, "long")
    t_term = time.monotonic()
    srv.signal(signal.SIGTERM)
    short["thread"].join(10)
    long["thread"].join(10)
    code = srv.wait(10)
    exited = time.monotonic() - t_term
    assert "result" in short and short["result"].status == 200, f"short request: {short}"
    assert "error" in long, f"long request was not cut: {long.get('result')}"
    cut_at = long["at"] - t_term
    assert 1.5 <= cut_at < 5, f"long request cut {cut_at:.1f}s after TERM (--graceful-timeout 2)"
    assert code == 0
    assert exited < 6


def test_term_right_after_start_is_still_graceful(start_server):
    """TERM within the master's first tick after the first worker became ready once
    made the master SIGKILL its workers, cutting requests they had taken."""
    srv = start_server(APP, "-w", "2", "--threads", "2")
    req = background(lambda: exchange(srv, "GET", "/sleep?s=0.5&tag=early", timeout=20))
    wait_sleeping(srv, "early")
    srv.signal(signal.SIGTERM)
    req["thread"].join(10)
    assert srv.wait(10) == 0
    assert "result" in req and req["result"].status == 200, f"request cut by TERM: {req}"


# ---------------------------------------------------------------------------
# --max-requests
# ---------------------------------------------------------------------------


def test_max_requests_ten_recycles_no_dropped_request(start_server):
    srv = start_server(APP, "-w", "2", "--max-requests", "20", "--max-requests-jitter", "5")
    with Load(srv.raw, conns=3, pace=0.003) as load:
        load.wait_for(lambda rs: len({r.pid for r in rs if r.ok}) >= 12, 40,
                      "ten recycles (12 distinct worker pids)")
    assert not load.failures(), load.summary()
    assert srv.logs().count("Recycling worker after --max-requests") >= 10
    wait_workers(srv, 2, timeout=5)
    # Each worker asked for its replacement right after its share (20 + up to 5),
    # not a heartbeat later (hundreds of requests at this rate).
    asked_at = [int(n) for n in re.findall(r"asking to be replaced served=(\d+)", srv.logs())]
    assert len(asked_at) >= 10 and all(20 <= n <= 50 for n in asked_at), asked_at


# ---------------------------------------------------------------------------
# respawn storms
# ---------------------------------------------------------------------------


def _stamp(line):
    """Seconds since midnight of a human log line's timestamp."""
    m = re.match(r"\d{4}-\d\d-\d\dT(\d\d):(\d\d):(\d\d\.\d+)Z", line)
    assert m, line
    return int(m.group(1)) * 3600 + int(m.group(2)) * 60 + float(m.group(3))


def test_respawn_storm_is_rate_limited_and_logged(start_server):
    srv = start_server("apps.crash_after_boot:application", env={"CRASH_AFTER": "0.2"})
    t0 = time.monotonic()
    srv.wait_for_log("respawn storm", timeout=10)
    cpu0 = _cpu_seconds(srv.pid)
    time.sleep(4.0)  # observation window: spawns are counted over it, not asserted by it
    cpu = _cpu_seconds(srv.pid) - cpu0
    window = time.monotonic() - t0
    boots = [l for l in srv.logs().splitlines() if "Booting worker" in l]
    stamps = [_stamp(l) for l in boots]
    storm_at = _stamp(next(l for l in srv.logs().splitlines() if "respawn storm" in l))
    after = [s for s in stamps if s > storm_at]
    gaps = [b - a for a, b in zip([storm_at] + after, after)]
    assert srv.alive(), "the master gave up"
    # Unlimited, a worker living ~0.3s would be respawned ~3 times a second.
    assert len(boots) <= 5 + 2 + int(window / 2), f"{len(boots)} spawns in {window:.1f}s"
    assert gaps and all(g >= 0.9 for g in gaps), f"respawns after the storm line: gaps {gaps}"
    assert cpu < 1.0, f"master used {cpu:.2f}s CPU in 4s: spinning"


def _cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------
# wsgi.multiprocess
# ---------------------------------------------------------------------------


def test_wsgi_multiprocess_true_with_two_workers(start_server):
    srv = start_server(APP, "-w", "2")
    with Load(srv.raw, conns=2, path="/info") as load:
        load.wait_requests(40)
    assert not load.failures(), load.summary()
    assert all(b'"multiprocess": true' in r.body for r in load.successes())


def test_wsgi_multiprocess_false_with_one_worker(start_server):
    srv = start_server(APP, "-w", "1")
    r = exchange(srv, "GET", "/info")
    assert r.json()["multiprocess"] is False
