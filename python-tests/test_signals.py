"""Signals belong to the server: SIGTERM stops it with exit code 0 and SIGINT stops it
too, even while Python is busy in a request (sleeping, spinning with the GIL, or
swallowing every exception); Python never sees them as KeyboardInterrupt; with
workers, no process is left behind."""

import os
import signal
import threading
import time

import pytest

from conftest import exchange


def start_busy(srv, path):
    t = threading.Thread(target=lambda: _quiet(srv, path), daemon=True)
    t.start()
    name = path.split("?")[0].strip("/")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if name in ("sleep",) or srv.read_state_lines(name):
            break
        time.sleep(0.02)
    time.sleep(0.3)
    return t


def _quiet(srv, path):
    try:
        exchange(srv, "GET", path, timeout=40)
    except Exception:  # noqa: BLE001 - the server is being stopped under it
        pass


def test_sigterm_idle_exits_0(start_server):
    srv = start_server("apps.wsgi_rules:application")
    assert exchange(srv, "GET", "/hello").status == 200
    srv.signal(signal.SIGTERM)
    assert srv.wait(10) == 0
    assert "Traceback" not in srv.stderr_text()


@pytest.mark.parametrize("path", ["/sleep?s=30", "/spin?s=30", "/swallow?s=30"])
def test_sigterm_while_python_busy(start_server, path):
    srv = start_server("apps.wsgi_rules:application", "--graceful-timeout", "2")
    tree = srv.tree()
    start_busy(srv, path)
    t0 = time.monotonic()
    srv.signal(signal.SIGTERM)
    code = srv.wait(15)
    elapsed = time.monotonic() - t0
    assert code == 0, f"exit code {code} after SIGTERM"
    assert elapsed < 8, f"took {elapsed:.1f}s to stop with --graceful-timeout 2"
    assert "KeyboardInterrupt" not in srv.stderr_text()
    assert "swallowed an exception" not in "\n".join(srv.read_state_lines("swallow")), \
        "Python received the server's signal as an exception"
    time.sleep(0.2)
    for p in tree:
        assert not os.path.exists(f"/proc/{p}") or open(f"/proc/{p}/stat").read().split()[2] == "Z", \
            f"process {p} outlived the server"


@pytest.mark.parametrize("path", ["/sleep?s=30", "/swallow?s=30"])
def test_sigint_while_python_busy(start_server, path):
    srv = start_server("apps.wsgi_rules:application")
    start_busy(srv, path)
    t0 = time.monotonic()
    srv.signal(signal.SIGINT)
    code = srv.wait(10)
    assert time.monotonic() - t0 < 5
    assert code == 0, f"exit code {code} after SIGINT (gunicorn exits 0)"
    assert "KeyboardInterrupt" not in srv.stderr_text()
    assert "swallowed an exception" not in "\n".join(srv.read_state_lines("swallow"))


def test_sigterm_finishes_inflight_request_within_graceful_timeout(start_server):
    srv = start_server("apps.wsgi_rules:application", "--graceful-timeout", "10")
    result = {}

    def req():
        result["r"] = exchange(srv, "GET", "/sleep?s=1.5", timeout=20)

    t = threading.Thread(target=req)
    t.start()
    time.sleep(0.5)
    srv.signal(signal.SIGTERM)
    t.join(20)
    assert srv.wait(15) == 0
    assert result.get("r") is not None and result["r"].status == 200, "in-flight request was dropped on TERM"


def test_sigterm_with_workers_leaves_no_process(start_server):
    srv = start_server("apps.wsgi_rules:application", "--workers", "2")
    assert exchange(srv, "GET", "/hello").status == 200
    deadline = time.monotonic() + 10
    while len(srv.tree()) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    tree = srv.tree()
    assert len(tree) >= 3, f"expected a master and 2 workers, saw {tree}"
    srv.signal(signal.SIGTERM)
    assert srv.wait(15) == 0
    time.sleep(0.3)
    alive = [p for p in tree[1:] if os.path.exists(f"/proc/{p}")
             and open(f"/proc/{p}/stat").read().split()[2] != "Z"]
    assert not alive, f"workers left running: {alive}"
