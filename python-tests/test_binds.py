"""Where rwsgi listens: ``unix:PATH`` (with ``--unix-socket-mode``), ``fd://N``
(socket activation: the socket is created by the parent and inherited), several
``--bind`` at once including IPv6, and ``--backlog``. Sockets are bound once by the
master, so a connection made while the only worker is being replaced waits in the
backlog and is served by the replacement, never refused. Each bind is exercised by
a background client, not just one request."""

import os
import signal
import socket
import stat
import subprocess
import time

import pytest

from conftest import READY_TIMEOUT, RawConn, exchange, free_port
from loadclient import Load, UnixConn, wait_workers

APP = "apps.process_app:application"


def wait_connectable(srv, connect, timeout=READY_TIMEOUT):
    """Polls connect() until a request on it is answered (the server's startup)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if not srv.alive():
            raise AssertionError(f"rwsgi exited with {srv.proc.poll()}:\n{srv.stderr_text()[-3000:]}")
        try:
            with connect() as c:
                c.settimeout(5)
                c.send(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
                r = c.read_response()
                assert r.status == 200, r
                return
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise AssertionError(f"not serving within {timeout}s: {last}")


def run_load(connect, n=100, conns=2, path="/info"):
    with Load(connect, conns=conns, path=path) as load:
        load.wait_requests(n)
    assert not load.failures(), load.summary()
    return load


# ---------------------------------------------------------------------------
# unix:PATH
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode_arg, mode", [("600", 0o600), (None, 0o660)])
def test_unix_socket_serves_with_permissions(start_server, tmp_path, mode_arg, mode):
    path = str(tmp_path / "rwsgi.sock")
    extra = ["--unix-socket-mode", mode_arg] if mode_arg else []
    srv = start_server(APP, "--bind", f"unix:{path}", "-w", "2", *extra, bind=None, wait=False)
    connect = lambda: UnixConn(path)  # noqa: E731
    wait_connectable(srv, connect)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == mode, oct(stat.S_IMODE(st.st_mode))
    load = run_load(connect)
    assert all(b'"version": "v1"' in r.body for r in load.successes())
    assert f"Listening at: unix:{path}" in srv.logs()
    assert srv.stop() == 0
    assert not os.path.exists(path), "the socket file outlived the server"


def test_unix_socket_replaces_stale_socket_refuses_other_file(start_server, tmp_path):
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # a socket file left behind by a crashed server
    srv = start_server(APP, "--bind", f"unix:{stale}", bind=None, wait=False)
    wait_connectable(srv, lambda: UnixConn(str(stale)))

    regular = tmp_path / "not-a-socket"
    regular.write_text("precious")
    bad = start_server(APP, "--bind", f"unix:{regular}", bind=None, wait=False)
    assert bad.wait(20) != 0
    assert "not a socket" in bad.stderr_text()
    assert regular.read_text() == "precious"


# ---------------------------------------------------------------------------
# fd://N
# ---------------------------------------------------------------------------


def test_fd_bind_serves_an_inherited_socket(start_server):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    fd = sock.fileno()
    try:
        srv = start_server(APP, "--bind", f"fd://{fd}", "-w", "2", bind=None, wait=False,
                           pass_fds=(fd,))
    finally:
        # The server holds its own copy; the test's must not keep the port alive.
        sock.close()
    connect = lambda: RawConn("127.0.0.1", port)  # noqa: E731
    wait_connectable(srv, connect)
    workers = wait_workers(srv, 2)
    load = run_load(connect, n=100, conns=3)
    assert load.pids() <= set(workers)
    assert f"Listening at: http://127.0.0.1:{port}" in srv.logs()


def test_fd_bind_of_a_closed_fd_fails_clearly(start_server):
    srv = start_server(APP, "--bind", "fd://77", bind=None, wait=False)
    assert srv.wait(20) != 0
    err = srv.stderr_text()
    assert "fd://77: not an open file descriptor" in err, err
    assert "panicked" not in err and "fatal runtime error" not in err, err


def test_fd_bind_of_a_file_that_is_not_a_listening_socket_fails_clearly(start_server, tmp_path):
    f = open(tmp_path / "plain-file", "w")
    try:
        fd = f.fileno()
        srv = start_server(APP, "--bind", f"fd://{fd}", bind=None, wait=False, pass_fds=(fd,))
    finally:
        f.close()
    assert srv.wait(20) != 0
    err = srv.stderr_text()
    assert f"fd://{fd}: not a listening socket" in err, err
    assert "fatal runtime error" not in err, err


# ---------------------------------------------------------------------------
# several binds, IPv6, backlog
# ---------------------------------------------------------------------------


def test_several_binds_at_once_including_ipv6(start_server, tmp_path):
    p4, p6 = free_port("127.0.0.1"), free_port("::1")
    upath = str(tmp_path / "many.sock")
    srv = start_server(APP, "-w", "2", "--bind", f"127.0.0.1:{p4}", "--bind", f"[::1]:{p6}",
                       "--bind", f"unix:{upath}", bind=None, wait=False)
    targets = {
        "v4": lambda: RawConn("127.0.0.1", p4),
        "v6": lambda: RawConn("::1", p6),
        "unix": lambda: UnixConn(upath),
    }
    for connect in targets.values():
        wait_connectable(srv, connect)
    loads = {name: Load(connect, conns=1, path="/info").start() for name, connect in targets.items()}
    try:
        for load in loads.values():
            load.wait_requests(40)
    finally:
        for load in loads.values():
            load.join()
    for name, load in loads.items():
        assert not load.failures(), f"{name}: {load.summary()}"
    assert b'"remote_addr": "::1"' in loads["v6"].successes()[0].body
    assert b'"remote_addr": "127.0.0.1"' in loads["v4"].successes()[0].body
    logs = srv.logs()
    for where in (f"http://127.0.0.1:{p4}", f"http://[::1]:{p6}", f"unix:{upath}"):
        assert f"Listening at: {where}" in logs, where


def _listen_backlog(port):
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                         timeout=10, check=True).stdout
    lines = [l.split() for l in out.splitlines() if l.strip()]
    assert lines, f"no listening socket on port {port}: {out!r}"
    # For a listening socket, ss shows the backlog as Send-Q.
    return int(lines[0][2])


def test_backlog_is_applied(start_server):
    srv = start_server(APP, "--backlog", "37")
    assert _listen_backlog(srv.port) == 37


def test_backlog_default_is_gunicorns_2048(start_server):
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())
    srv = start_server(APP)
    assert _listen_backlog(srv.port) == min(2048, somaxconn)


# ---------------------------------------------------------------------------
# bound once: no refused connection while the only worker is replaced
# ---------------------------------------------------------------------------


def test_no_connection_refused_while_the_only_worker_restarts(start_server):
    srv = start_server(APP, "-w", "1", "--threads", "2")
    [worker] = wait_workers(srv, 1)
    # A new connection for every request: each one goes through accept.
    with Load(srv.raw, conns=3, reuse=False) as load:
        load.wait_requests(30)
        os.kill(worker, signal.SIGKILL)
        t_kill = time.monotonic()
        [new] = wait_workers(srv, 1, timeout=1.0, gone=[worker])
        load.wait_for(lambda rs: any(r.pid == new for r in rs), 10, "the replacement serving")
        n = load.count()
        load.wait_for(lambda rs: len([r for r in rs[n:] if r.ok]) >= 30, 10, "more requests")
    fails = load.failures()
    refused = [r for r in fails if "Refused" in (r.error or "")]
    assert not refused, load.summary()
    # Only a request the killed worker had already accepted may fail.
    # (50 ms: the worker may still run for an instant after kill() returned.)
    late = [r for r in fails if r.t0 > t_kill + 0.05]
    assert not late, load.summary()
    assert len(fails) <= 3
    assert exchange(srv, "GET", "/pid").status == 200
