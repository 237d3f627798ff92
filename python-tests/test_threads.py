"""--threads N: up to N requests run in Python at once (N sleeping requests finish in
about one sleep, and never more than N overlap), and the async side never waits on
the GIL: while the only Python thread spins in a GIL-holding loop, malformed
requests and over-limit heads are still answered at once."""

import threading
import time

import pytest

from conftest import exchange


def parallel_get(server, path, n, timeout=30):
    results = [None] * n
    errors = []

    def one(i):
        try:
            results[i] = exchange(server, "GET", path, timeout=timeout)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout + 5)
    assert not errors, errors
    return time.monotonic() - t0, results


def test_n_threads_run_n_requests_concurrently(start_server):
    srv = start_server("apps.wsgi_rules:application", "--threads", "4")
    elapsed, rs = parallel_get(srv, "/sleep?s=1", 4)
    assert all(r.status == 200 for r in rs)
    assert elapsed < 1.9, f"4 one-second requests on 4 threads took {elapsed:.2f}s"
    assert max(r.json()["active_max"] for r in rs) == 4


def test_threads_bound_concurrency(start_server):
    srv = start_server("apps.wsgi_rules:application", "--threads", "2")
    elapsed, rs = parallel_get(srv, "/sleep?s=0.7", 6)
    assert all(r.status == 200 for r in rs)
    assert max(r.json()["active_max"] for r in rs) == 2
    assert elapsed >= 2.0, f"6 x 0.7s on 2 threads finished in {elapsed:.2f}s: more than 2 ran at once"


def test_one_thread_serialises(start_server):
    srv = start_server("apps.wsgi_rules:application", "--threads", "1")
    elapsed, rs = parallel_get(srv, "/sleep?s=0.6", 3)
    assert max(r.json()["active_max"] for r in rs) == 1
    assert elapsed >= 1.7


def test_async_side_answers_while_python_holds_the_gil(start_server):
    srv = start_server("apps.wsgi_rules:application", "--threads", "1")
    t = threading.Thread(target=lambda: exchange(srv, "GET", "/spin?s=4", timeout=20))
    t.start()
    try:
        deadline = time.monotonic() + 5
        while not srv.read_state_lines("spin") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.read_state_lines("spin"), "spin request never started"
        t0 = time.monotonic()
        with srv.raw(timeout=5) as c:
            c.send(b"NOT HTTP AT ALL\r\n\r\n")
            r = c.read_response()
        assert r.status == 400
        r = exchange(srv, "GET", "/hello", {"X-Big": "a" * 9000}, timeout=5)
        assert r.status == 431
        assert time.monotonic() - t0 < 1.5, "error responses waited for the busy Python thread"
    finally:
        t.join(30)
