"""A draining worker answers every connection it accepted (issue 13: scaling down, by
TTOU or --min-workers/--max-workers, loses no request).

When several workers retire at once, each may hold connections it accepted whose
first request has not arrived yet: a client that connects per request (a proxy
without an upstream pool) under load can be slow to send its bytes. Such a
connection is not an idle keep-alive one: its request must be answered (with
`Connection: close`), within --header-timeout, by the worker that accepted it. Here
silent connections are opened before three of four workers retire, their requests are
sent well after the drain began, and connection-per-request clients run throughout;
the assertions are about lost requests, not timing."""

import signal
import time

import pytest

from loadclient import Load, alive, wait_workers

APP = "apps.process_app:application"


@pytest.mark.parametrize("path", [[], ["--hyper-only"]], ids=["own", "hyper"])
def test_retiring_workers_answer_connections_whose_request_comes_late(start_server, path):
    srv = start_server(APP, "-w", "4", "--header-timeout", "30", *path)
    first = wait_workers(srv, 4, timeout=20)
    for p in first:
        srv.wait_for_log(f"pid={p}", timeout=20)
    silent = [srv.raw() for _ in range(24)]
    time.sleep(0.5)  # the workers accept them
    with Load(srv.raw, conns=4, pace=0, reuse=False) as churn:
        churn.wait_requests(20)
        # One at a time: signals sent back to back coalesce while pending.
        for n in (3, 2, 1):
            srv.signal(signal.SIGTTOU)
            srv.wait_for_log(f"Handling signal: ttou workers={n}", timeout=10)
        # Far longer than any pause between a connect and its request on a
        # loaded machine: the drain has long begun when these requests come.
        time.sleep(1.5)
        answered, lost = [], []
        for i, c in enumerate(silent):
            try:
                c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                r = c.read_response()
                assert r.status == 200, (i, r.status)
                answered.append((int(r.body), r.header("Connection")))
            except (OSError, AssertionError, ValueError) as e:
                lost.append((i, repr(e)))
            finally:
                c.close()
        assert lost == [], lost
        left = wait_workers(srv, 1, timeout=30)
        n = churn.count()
        churn.wait_for(lambda rs: len([r for r in rs[n:] if r.ok]) >= 20, 15, "requests after the drain")
    retired = set(first) - set(left)
    by_retired = [(pid, conn) for pid, conn in answered if pid in retired]
    # The point of the test: some silent connections were held by retiring workers,
    # and those answered, telling the client to reconnect elsewhere.
    assert by_retired, (answered, retired)
    assert all(conn and conn.lower() == "close" for _, conn in by_retired), by_retired
    assert not churn.failures(), churn.summary()
    assert not any(alive(p) for p in retired)
