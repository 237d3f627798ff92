"""PEP 3333 start_response: the reason phrase kept verbatim, header names/values
checked (latin-1, no CR/LF, no hop-by-hop headers) with a 500 on violation, the
write() callable, exc_info before headers (replaces) and after (re-raises, the
connection is aborted), and a second call without exc_info being an error."""

import time

import pytest

from conftest import ConnectionClosed, exchange, request_bytes


def test_reason_phrase_verbatim(rules_server):
    r = exchange(rules_server, "GET", "/status?s=299%20Custom%20Reason&body=x")
    assert r.status == 299
    assert r.reason == "Custom Reason"
    assert r.body == b"x"


def test_standard_status_with_unusual_reason(rules_server):
    r = exchange(rules_server, "GET", "/status?s=404%20Nothing%20To%20See%20Here")
    assert (r.status, r.reason) == (404, "Nothing To See Here")


@pytest.mark.parametrize("kind", [
    "space-name", "colon-name", "newline-value", "lf-value", "nonlatin-value",
    "bytes-name", "bytes-value", "bytes-status", "int-status",
])
def test_bad_headers_or_status_give_500(rules_server, kind):
    with rules_server.raw() as c:
        c.send(request_bytes("GET", f"/bad-header?kind={kind}"))
        raw = b""
        r = c.read_response()
        raw = r.raw_head + r.body
    assert r.status == 500, f"{kind}: got {r.status}"
    assert b"this body must not be sent" not in raw
    assert b"evil" not in raw.lower()
    assert r.header("X-Injected") is None and r.header("Set-Cookie") is None


@pytest.mark.parametrize("kind", ["connection", "transfer-encoding", "keep-alive", "upgrade",
                                  "proxy-authenticate", "te", "trailer"])
def test_hop_by_hop_headers_from_app_give_500(rules_server, kind):
    r = exchange(rules_server, "GET", f"/bad-header?kind={kind}")
    assert r.status == 500, f"app set hop-by-hop header {kind}, server answered {r.status}"
    assert b"this body must not be sent" not in r.body


def test_each_response_carries_its_own_header_values(rules_server):
    # Header fields are checked once per string object and then reused; values made
    # per request must still come out as each request made them, also when the
    # strings of earlier requests were freed and their memory reused, and a bad value
    # is refused after many good ones.
    with rules_server.raw() as c:
        for i in range(300):
            value = f"v{i}-" + "x" * (i % 7)
            c.send(request_bytes("GET", f"/echo-header?v={value}"))
            r = c.read_response()
            assert (r.status, r.header("X-Echo"), r.header("Content-Type")) == (
                200, value, "text/plain"), i
    assert exchange(rules_server, "GET", "/bad-header?kind=nonlatin-value").status == 500
    assert exchange(rules_server, "GET", "/echo-header?v=after").header("X-Echo") == "after"
    # A str subclass is accepted (and not cached), also several times over.
    for i in range(3):
        r = exchange(rules_server, "GET", f"/echo-header?v=sub{i}&sub=1")
        assert (r.status, r.header("X-Echo")) == (200, f"sub{i}")


def test_bad_header_is_logged_and_server_keeps_serving(rules_server):
    before = len(rules_server.logs())
    assert exchange(rules_server, "GET", "/bad-header?kind=newline-value").status == 500
    assert exchange(rules_server, "GET", "/hello").status == 200
    deadline = time.monotonic() + 3
    while "/bad-header" not in rules_server.logs()[before:] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "/bad-header" in rules_server.logs()[before:], "the rejected response left no log line"


def test_write_callable(rules_server):
    r = exchange(rules_server, "GET", "/write")
    assert r.status == 200
    assert r.body == b"hello world!"


def test_write_callable_without_length_streams(rules_server):
    r = exchange(rules_server, "GET", "/write-stream")
    assert r.status == 200
    assert r.body == b"w0;w1;w2;"


def test_exc_info_before_headers_replaces_status_and_headers(rules_server):
    r = exchange(rules_server, "GET", "/exc-before")
    assert (r.status, r.reason) == (503, "Replaced Status")
    assert r.header("X-Second") == "2"
    assert r.header("X-First") is None
    assert r.body == b"replaced body"


def test_exc_info_after_headers_reraises_and_aborts(rules_server):
    with rules_server.raw() as c:
        c.send(request_bytes("GET", "/exc-after"))
        with pytest.raises(ConnectionClosed) as ei:
            c.read_response()
        assert b"first-chunk;" in ei.value.partial
        assert b"should-not-be-sent" not in ei.value.partial
    lines = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        lines = rules_server.read_state_lines("exc_after")
        if lines:
            break
        time.sleep(0.05)
    assert lines == ["raised ValueError: after headers"], lines
    # the iterable was still closed
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        if any(l.startswith("close exc-after") for l in rules_server.read_state_lines("closes")):
            break
        time.sleep(0.05)
    else:
        pytest.fail("close() not called after the aborted response")
    assert exchange(rules_server, "GET", "/hello").status == 200


def test_second_start_response_without_exc_info_is_an_error(rules_server):
    r = exchange(rules_server, "GET", "/start-twice")
    assert r.status == 500
    lines = rules_server.read_state_lines("start_twice")
    assert lines and lines[-1].startswith("raised "), f"second start_response: {lines}"
    assert exchange(rules_server, "GET", "/hello").status == 200
