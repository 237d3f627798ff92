"""Faults of the machine around rwsgi, each costing nothing beyond what it hits:

* the master SIGKILLed (idle, with a request in flight, while workers still import
  the app): every worker exits and nothing keeps serving from the unsupervised socket;
* a worker SIGSTOPped past ``--timeout``: it is killed and replaced, and the
  connections queued meanwhile are served by the replacement;
* fd exhaustion (a worker's ``RLIMIT_NOFILE`` below the offered connections): the
  failing accepts cost almost no CPU and a bounded number of log lines, and every
  queued connection is served once fds free up;
* ``--access-log /dev/full``: every request is still answered, and the write errors
  are logged once per interval, not once per request.
"""

import os
import resource
import signal
import socket
import threading
import time

import pytest

from conftest import exchange
from loadclient import alive, wait_workers

APP = "apps.process_app:application"


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_gone(pids, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def refused(srv) -> bool:
    """Nothing accepts on the app port any more."""
    try:
        with socket.create_connection((srv.host, srv.port), timeout=2) as c:
            c.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
            return c.recv(1) == b""
    except OSError:
        return True


# ---------------------------------------------------------------------------
# the master dies
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["idle", "request_in_flight"])
def test_master_sigkill_takes_the_workers_with_it(start_server, when):
    srv = start_server(APP, "-w", "2", "--threads", "2")
    workers = wait_workers(srv, 2)
    assert exchange(srv, path="/pid").status == 200
    held = None
    if when == "request_in_flight":
        held = socket.create_connection((srv.host, srv.port), timeout=30)
        held.sendall(b"GET /sleep?s=60&tag=held HTTP/1.1\r\nHost: x\r\n\r\n")
        deadline = time.monotonic() + 10
        while not srv.read_state_lines("sleeps") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.read_state_lines("sleeps"), "the long request did not reach the app"
    os.kill(srv.pid, signal.SIGKILL)
    srv.wait(5)
    left = wait_gone(workers, 5)
    assert not left, f"workers {left} outlived their master by 5 s"
    assert refused(srv), "something still serves the app port after the master died"
    if held is not None:
        held.close()


def test_master_sigkill_while_workers_boot(start_server, tmp_path):
    srv = start_server("apps.slow_import:application", "-w", "2", wait=False,
                       env={"RWSGI_TEST_IMPORT_SLEEP": "6"})
    deadline = time.monotonic() + 10
    while len(srv.tree()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = srv.tree()[1:]
    assert len(workers) == 2, f"workers did not start: {srv.tree()}"
    os.kill(srv.pid, signal.SIGKILL)
    srv.wait(5)
    # The import sleeps 6 s: a worker that only notices at its first message to the
    # master would still be running after 3 s.
    left = wait_gone(workers, 3)
    assert not left, f"booting workers {left} outlived their master"
    assert refused(srv)


# ---------------------------------------------------------------------------
# a worker is stopped
# ---------------------------------------------------------------------------


def test_sigstopped_worker_is_replaced(start_server):
    srv = start_server(APP, "-w", "1", "--threads", "2", "--timeout", "2")
    (victim,) = wait_workers(srv, 1)
    assert int(exchange(srv, path="/pid").body) == victim
    os.kill(victim, signal.SIGSTOP)
    try:
        # Sent while the only worker is stopped: it waits in the accept queue and must
        # be answered by the replacement.
        t0 = time.monotonic()
        resp = exchange(srv, path="/pid", timeout=30)
        waited = time.monotonic() - t0
        assert resp.status == 200
        assert int(resp.body) != victim
        assert waited < 20, f"the replacement took {waited:.1f}s"
        assert wait_gone([victim], 5) == [], "the stopped worker was not killed"
        assert "heartbeat" in srv.logs()
    finally:
        try:
            os.kill(victim, signal.SIGCONT)
        except OSError:
            pass


# ---------------------------------------------------------------------------
# fd exhaustion
# ---------------------------------------------------------------------------


def test_fd_exhaustion_does_not_spin_and_serving_resumes(start_server):
    srv = start_server(APP, "-w", "1", "--threads", "2", "--keep-alive", "60", "--worker-connections", "1000")
    (worker,) = wait_workers(srv, 1)
    assert exchange(srv, path="/pid").status == 200
    # Room for 10 more connections in this worker, then EMFILE on every accept.
    limit = open_fds(worker) + 10
    resource.prlimit(worker, resource.RLIMIT_NOFILE, (limit, limit))
    offered = 60
    conns = []
    for _ in range(offered):
        c = socket.create_connection((srv.host, srv.port), timeout=30)
        c.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        conns.append(c)
    answered = []

    def read_one(c):
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = c.recv(4096)
                if not chunk:
                    return
                data += chunk
            if data.startswith(b"HTTP/1.1 200"):
                answered.append(c)
        except OSError:
            pass

    readers = [threading.Thread(target=read_one, args=(c,), daemon=True) for c in conns]
    for t in readers:
        t.start()
    time.sleep(1.0)  # the worker fills its fds, then every accept fails
    assert 0 < len(answered) < offered, f"{len(answered)} of {offered} answered: the limit did not bite"
    log_before = srv.logs().count("accept failed")
    cpu0, t0 = cpu_seconds(worker), time.monotonic()
    time.sleep(4.0)
    cpu = cpu_seconds(worker) - cpu0
    span = time.monotonic() - t0
    log_lines = srv.logs().count("accept failed") - log_before
    print(f"worker CPU {cpu:.3f}s in {span:.1f}s of EMFILE; {log_lines} 'accept failed' lines")
    assert cpu < 0.1 * span, f"the worker used {cpu:.2f}s of CPU in {span:.1f}s while out of fds"
    assert log_lines <= 2, f"{log_lines} 'accept failed' lines in {span:.1f}s: one per interval is enough"
    assert "accept failed" in srv.logs() and "Too many open files" in srv.logs(), "no trace of the EMFILE in the log"
    assert alive(worker)

    # Free the fds: every connection still queued is accepted and answered.
    # Closing an answered keep-alive connection frees its fd in the worker.
    done_early = len(answered)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(t.is_alive() for t in readers):
        for c in list(answered):
            c.close()
        time.sleep(0.05)
    for c in conns:
        c.close()
    assert len(answered) == offered, \
        f"only {len(answered)} of {offered} queued connections were served after fds freed up ({done_early} before)"
    assert exchange(srv, path="/pid").status == 200


# ---------------------------------------------------------------------------
# the access log's disk is full
# ---------------------------------------------------------------------------


def test_access_log_on_a_full_disk_serves_and_logs_once_per_interval(start_server):
    srv = start_server(APP, "-w", "1", "--threads", "2", "--access-log", "/dev/full")
    t0 = time.monotonic()
    statuses = [exchange(srv, path="/pid").status for _ in range(200)]
    elapsed = time.monotonic() - t0
    assert statuses == [200] * 200
    srv.wait_for_log("cannot write the access log")
    lines = [l for l in srv.logs().splitlines() if "cannot write the access log" in l]
    print(f"{len(lines)} error lines for 200 failed writes in {elapsed:.1f}s")
    assert 1 <= len(lines) <= elapsed / 10 + 1, f"{len(lines)} error lines for 200 failed writes in {elapsed:.1f}s"
    assert "No space left on device" in lines[0]
