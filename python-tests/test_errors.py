"""Application errors: an exception gives a 500 with a short body (no traceback
leaked to the client), the traceback is logged with the request line, and the
process keeps serving, request after request."""

import time

from conftest import exchange


def test_exception_gives_short_500(rules_server):
    r = exchange(rules_server, "GET", "/raise?marker=short")
    assert r.status == 500
    assert len(r.body) < 1024
    assert b"Traceback" not in r.body
    assert b"app exploded" not in r.body, "exception message leaked to the client"


def test_traceback_logged_with_request_line(rules_server):
    marker = f"mk{time.time_ns()}"
    before = len(rules_server.logs())
    assert exchange(rules_server, "GET", f"/raise?marker={marker}").status == 500
    deadline = time.monotonic() + 5
    new = ""
    while time.monotonic() < deadline:
        new = rules_server.logs()[before:]
        if f"app exploded {marker}" in new and "Traceback" in new:
            break
        time.sleep(0.05)
    assert "Traceback" in new, new[-2000:]
    assert f"RuntimeError: app exploded {marker}" in new, new[-2000:]
    assert f"/raise?marker={marker}" in new, "the log does not name the request"
    assert "GET" in new


def test_process_keeps_serving_after_many_errors(rules_server):
    pid_tree = rules_server.tree()
    for i in range(20):
        assert exchange(rules_server, "GET", f"/raise?marker=n{i}").status == 500
    assert exchange(rules_server, "GET", "/hello").body == b"hello world"
    assert rules_server.alive()
    assert rules_server.tree() == pid_tree, "a worker process was replaced after app errors"


def test_error_after_error_on_keep_alive_connection(rules_server):
    from conftest import request_bytes
    with rules_server.raw() as c:
        c.send(request_bytes("GET", "/raise?marker=ka"))
        r = c.read_response()
        assert r.status == 500
        try:
            c.send(request_bytes("GET", "/hello"))
            r2 = c.read_response()
        except (AssertionError, OSError):
            r2 = exchange(rules_server, "GET", "/hello")
        assert r2.status == 200


def test_500_has_standard_reason_phrase(rules_server):
    # gunicorn answers "500 Internal Server Error"; proxies and curl -v show the phrase.
    r = exchange(rules_server, "GET", "/raise?marker=reason")
    assert (r.status, r.reason) == (500, "Internal Server Error")
