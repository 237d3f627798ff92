"""A burst of new connections is spread over the workers (issue 3, and every
benchmark): all workers accept from one socket, and without the shared connection
counts (src/server/balance.rs) the first worker to wake takes nearly all of a burst
and serves those keep-alive connections alone for their whole life."""

import collections
import socket
import time

APP = "apps.process_app:application"


def open_burst(srv, n):
    """Opens n connections at once, then sends one request on each; returns the
    worker pid that answered each connection (keep-alive, so it is that
    connection's worker)."""
    conns = [socket.create_connection((srv.host, srv.port), timeout=10) for _ in range(n)]
    time.sleep(0.3)  # every connection accepted by some worker before any request
    pids = []
    try:
        for c in conns:
            c.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        for c in conns:
            data = b""
            while b"\r\n\r\n" not in data or not data.split(b"\r\n\r\n", 1)[1]:
                chunk = c.recv(4096)
                assert chunk, data
                data += chunk
            pids.append(int(data.split(b"\r\n\r\n", 1)[1].strip()))
    finally:
        for c in conns:
            c.close()
    return pids


def server_side_open(port):
    """Server-side TCP connections of `port` that the server has not closed yet
    (ESTABLISHED or CLOSE_WAIT in /proc/net/tcp{,6})."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                local, state = line.split()[1], line.split()[3]
                if int(local.rsplit(":", 1)[1], 16) == port and state in ("01", "08"):
                    n += 1
    return n


def wait_until_closed(srv, timeout=10.0):
    """Waits until the workers have seen the client close every connection: their
    open-connection counts, which the spreading goes by, are then back to zero."""
    deadline = time.monotonic() + timeout
    while server_side_open(srv.port):
        assert time.monotonic() < deadline, "server kept closed connections open"
        time.sleep(0.01)


def test_a_burst_of_connections_is_spread_over_the_workers(start_server):
    srv = start_server(APP, "--workers", "2", "--threads", "1")
    time.sleep(0.5)  # both workers up
    for _ in range(3):
        # Each burst starts once the workers have counted the last one's closes.
        # Without this wait the next burst races the close handling: a worker that
        # still counts 20 closed connections looks busy and the other takes more.
        wait_until_closed(srv)
        per_worker = collections.Counter(open_burst(srv, 40))
        assert len(per_worker) == 2, per_worker
        assert min(per_worker.values()) >= 16, per_worker


def test_workers_start_accepting_together(start_server, tmp_path):
    # The second worker loads the app 1.5 s after the first. The first burst of
    # connections (a proxy's keep-alive pool) arrives as soon as the port answers,
    # and must still be shared: a worker that started alone would keep all of them.
    marker = tmp_path / "imported"
    srv = start_server(
        "apps.slow_second_import:application",
        "--workers", "2", "--threads", "1",
        env={"RWSGI_TEST_IMPORT_MARKER": str(marker)},
    )
    per_worker = collections.Counter(open_burst(srv, 40))
    assert len(per_worker) == 2, per_worker
    assert min(per_worker.values()) >= 16, per_worker


def test_four_workers_share_a_burst(start_server):
    srv = start_server(APP, "--workers", "4", "--threads", "2")
    time.sleep(0.8)
    per_worker = collections.Counter(open_burst(srv, 64))
    assert len(per_worker) == 4, per_worker
    assert min(per_worker.values()) >= 10, per_worker


def test_preload_workers_start_accepting_together(start_server):
    # --preload forks the first worker, binds as soon as it is ready, then forks the
    # rest: a burst that arrives the moment the port answers must still be shared.
    for _ in range(3):
        srv = start_server(APP, "--preload", "--workers", "4", "--threads", "1")
        per_worker = collections.Counter(open_burst(srv, 64))
        assert len(per_worker) == 4, per_worker
        assert min(per_worker.values()) >= 10, per_worker
        srv.stop()
