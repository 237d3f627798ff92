"""HTTP/1.1 framing, over raw sockets: keep-alive, pipelining, chunked request bodies,
Expect: 100-continue, HEAD and bodiless statuses (1xx/204/304), the header-read
timeout (slowloris), request limits (400/431), Content-Length truncation and
short bodies, chunked responses, HTTP/1.0, and malformed requests."""

import socket
import time

import pytest

from conftest import ConnectionClosed, chunked, exchange, request_bytes


def test_keep_alive_serves_several_requests_on_one_connection(rules_server):
    with rules_server.raw() as c:
        for i in range(3):
            c.send(request_bytes("GET", f"/status?body=req{i}"))
            r = c.read_response()
            assert r.status == 200
            assert r.body == f"req{i}".encode()
        assert not c.is_closed(0.3), "server closed a keep-alive connection early"


def test_pipelined_requests_answered_in_order(rules_server):
    with rules_server.raw() as c:
        c.send(request_bytes("GET", "/status?body=first") + request_bytes("GET", "/status?body=second")
               + request_bytes("POST", "/echo", body=b"third"))
        r1, r2, r3 = c.read_response(), c.read_response(), c.read_response()
    assert (r1.status, r1.body) == (200, b"first")
    assert (r2.status, r2.body) == (200, b"second")
    assert (r3.status, r3.body) == (200, b"third")


def test_pipelined_request_after_slow_response(rules_server):
    # The first request sleeps; the second, already sent, must wait its turn.
    with rules_server.raw() as c:
        c.send(request_bytes("GET", "/sleep?s=0.5") + request_bytes("GET", "/status?body=after"))
        r1 = c.read_response()
        r2 = c.read_response()
    assert r1.status == 200 and b"active_max" in r1.body
    assert r2.body == b"after"


def test_requests_in_pieces_are_read_as_the_pieces_arrive(rules_server):
    # Each piece is a read that does not fill the server's buffer, after which the
    # server stops trying to read until epoll reports more (arrival.rs): every later
    # piece must still wake it, whether it comes 20 ms later or right behind, and
    # whether it ends the head or starts the next request.
    with rules_server.raw() as c:
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(30):
            raw = request_bytes("GET", f"/status?body=piece{i}")
            cut = 5 + (i * 7) % (len(raw) - 6)
            c.send(raw[:cut])
            if i % 2:
                time.sleep(0.02)
            c.send(raw[cut:])
            r = c.read_response()
            assert (r.status, r.body) == (200, f"piece{i}".encode()), i
        # The next request starts in the segment that ends this one.
        first, second = request_bytes("GET", "/status?body=a"), request_bytes("GET", "/status?body=b")
        c.send(first + second[:9])
        time.sleep(0.02)
        c.send(second[9:])
        assert c.read_response().body == b"a"
        assert c.read_response().body == b"b"


def test_chunked_request_body(rules_server):
    body = chunked([b"hello ", b"chunked ", b"world" * 1000])
    with rules_server.raw() as c:
        c.send(request_bytes("POST", "/echo", {"Transfer-Encoding": "chunked"}, body))
        r = c.read_response()
        assert r.status == 200
        assert r.body == b"hello chunked " + b"world" * 1000
        # and the connection is still usable afterwards
        c.send(request_bytes("GET", "/status?body=next"))
        assert c.read_response().body == b"next"


def test_chunked_request_body_with_extensions_and_trailers(rules_server):
    body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
    r = exchange(rules_server, "POST", "/echo", {"Transfer-Encoding": "chunked"}, body)
    assert r.status == 200
    assert r.body == b"hello world"


def test_expect_100_continue_when_app_reads_body(rules_server):
    with rules_server.raw() as c:
        c.send(request_bytes("POST", "/echo", {"Expect": "100-continue", "Content-Length": "11"}))
        interim = c.read_response(skip_interim=False)
        assert interim.status == 100, "expected 100 Continue before sending the body"
        assert interim.body == b""
        c.send(b"hello there")
        r = c.read_response()
        assert r.status == 200
        assert r.body == b"hello there"


def test_no_100_continue_when_app_does_not_read_body(rules_server):
    with rules_server.raw(timeout=5) as c:
        c.send(request_bytes("POST", "/noread", {"Expect": "100-continue", "Content-Length": "1000"}))
        r = c.read_response(skip_interim=False)
        assert r.status == 200, f"server sent {r.status} although the app never read the body"
        assert r.body == b"did not read the body"


def test_head_has_no_body_but_keeps_headers(rules_server):
    with rules_server.raw() as c:
        c.send(request_bytes("HEAD", "/hello") + request_bytes("GET", "/status?body=after-head"))
        r = c.read_response("HEAD")
        assert r.status == 200
        assert r.header("Content-Length") == "11"
        # The next response must start right after the head: no stray body bytes.
        r2 = c.read_response()
        assert r2.body == b"after-head"


def test_head_on_streamed_response_sends_no_body(rules_server):
    with rules_server.raw() as c:
        c.send(request_bytes("HEAD", "/chunks?n=3") + request_bytes("GET", "/status?body=ok"))
        r = c.read_response("HEAD")
        assert r.status == 200
        r2 = c.read_response()
        assert (r2.status, r2.body) == (200, b"ok")


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_204_and_304_have_no_body(rules_server, status):
    with rules_server.raw() as c:
        c.send(request_bytes("GET", f"/nobody-status?s={status.replace(' ', '%20')}")
               + request_bytes("GET", "/status?body=next"))
        r = c.read_response()
        assert r.status == int(status[:3])
        assert r.header("Content-Length") in (None, "0") or r.status == 304
        assert r.header("Transfer-Encoding") is None
        r2 = c.read_response()
        assert (r2.status, r2.body) == (200, b"next"), "body bytes of a bodiless status leaked"


def test_app_1xx_status_never_sends_a_body(rules_server):
    # An app returning a 1xx status: whatever the server answers, the app's body
    # must not reach the wire as if it were a response body.
    with rules_server.raw(timeout=5) as c:
        c.send(request_bytes("GET", "/nobody-status?s=103%20Early%20Hints"))
        data = b""
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            c.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = c.sock.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            data += chunk
    assert data, "no response at all to an app that returned 103"
    assert b"LEAKED-BODY" not in data


def test_100_continue_interim_has_no_body(rules_server):
    with rules_server.raw() as c:
        c.send(request_bytes("POST", "/echo", {"Expect": "100-continue", "Content-Length": "2"}))
        c.read_head()  # 100 Continue head
        c.send(b"ok")
        # The final response's status line follows immediately.
        version, status, *_ = c.read_head()
        assert status == 200


def test_header_timeout_closes_partial_head(start_server):
    srv = start_server("apps.wsgi_rules:application", "--header-timeout", "1")
    with srv.raw(timeout=10) as c:
        c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        t0 = time.monotonic()
        c.wait_closed(6)
        elapsed = time.monotonic() - t0
    assert 0.5 <= elapsed <= 4, f"partial head closed after {elapsed:.2f}s with --header-timeout 1"
    # A complete head sent in time is served normally.
    r = exchange(srv, "GET", "/hello")
    assert r.status == 200


def test_header_timeout_also_applies_to_idle_connection_without_any_bytes(start_server):
    srv = start_server("apps.wsgi_rules:application", "--header-timeout", "1", "--keep-alive", "30")
    with srv.raw(timeout=10) as c:
        elapsed = c.wait_closed(8)
    assert elapsed <= 4


def test_header_timeout_slowloris_trickle_is_closed(start_server):
    # Sending one byte at a time must not extend the deadline.
    srv = start_server("apps.wsgi_rules:application", "--header-timeout", "1.5")
    with srv.raw(timeout=10) as c:
        head = b"GET /hello HTTP/1.1\r\nHost: x\r\n" + b"X-A: " + b"a" * 100
        t0 = time.monotonic()
        closed = False
        for b in head:
            try:
                c.send(bytes([b]))
            except OSError:
                closed = True
                break
            time.sleep(0.05)
            if time.monotonic() - t0 > 6:
                break
        if not closed:
            c.wait_closed(3)
        elapsed = time.monotonic() - t0
    assert elapsed < 5, f"trickling client kept the connection open for {elapsed:.1f}s"


def test_request_line_limit_default_4094(rules_server):
    ok = exchange(rules_server, "GET", "/status?body=ok&pad=" + "a" * 3900)
    assert ok.status == 200
    r = exchange(rules_server, "GET", "/status?pad=" + "a" * 5000)
    assert r.status == 414  # gunicorn 27 and RFC 9112 §3


def test_request_line_limit_option(start_server):
    srv = start_server("apps.wsgi_rules:application", "--limit-request-line", "100")
    assert exchange(srv, "GET", "/status?body=ok&p=" + "a" * 50).status == 200
    assert exchange(srv, "GET", "/status?p=" + "a" * 150).status == 414


def test_request_fields_limit_default_100(rules_server):
    ok = exchange(rules_server, "GET", "/hello", [(f"X-H{i}", "v") for i in range(90)])
    assert ok.status == 200
    r = exchange(rules_server, "GET", "/hello", [(f"X-H{i}", "v") for i in range(150)])
    assert r.status == 431


def test_request_field_size_limit_default_8190(rules_server):
    assert exchange(rules_server, "GET", "/hello", {"X-Big": "a" * 8000}).status == 200
    assert exchange(rules_server, "GET", "/hello", {"X-Big": "a" * 9000}).status == 431


def test_request_limit_options(start_server):
    srv = start_server("apps.wsgi_rules:application", "--limit-request-fields", "5",
                       "--limit-request-field-size", "200")
    assert exchange(srv, "GET", "/hello", [(f"X-H{i}", "v") for i in range(3)]).status == 200
    assert exchange(srv, "GET", "/hello", [(f"X-H{i}", "v") for i in range(10)]).status == 431
    assert exchange(srv, "GET", "/hello", {"X-Big": "a" * 150}).status == 200
    assert exchange(srv, "GET", "/hello", {"X-Big": "a" * 300}).status == 431


def test_content_length_never_exceeded(rules_server):
    with rules_server.raw() as c:
        c.send(request_bytes("GET", "/length?declared=10&actual=25"))
        r = c.read_response()
        assert r.status == 200
        assert r.body == b"x" * 10
        # Whatever the server does next, no extra body bytes may follow on the wire
        # as if they were the next response.
        c.send(request_bytes("GET", "/status?body=next"))
        try:
            r2 = c.read_response()
        except ConnectionClosed:
            return  # the server closed the connection: acceptable
        assert (r2.status, r2.body) == (200, b"next")


def test_content_length_truncation_is_logged(rules_server):
    before = len(rules_server.logs())
    r = exchange(rules_server, "GET", "/length?declared=3&actual=9&trunclog=1")
    assert r.body == b"xxx"
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        new = rules_server.logs()[before:]
        if "content-length" in new.lower() or "truncat" in new.lower():
            break
        time.sleep(0.05)
    else:
        pytest.fail("no log line about the truncated response (Content-Length / truncated)")


def test_short_body_closes_connection(rules_server):
    with rules_server.raw() as c:
        c.send(request_bytes("GET", "/length?declared=100&actual=40"))
        version, status, reason, headers, head = c.read_head()
        assert status == 200
        got = c.buf
        c.buf = b""
        while True:
            try:
                chunk = c.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                break
            if not chunk:
                break
            got += chunk
        # the connection was closed (recv returned EOF within the socket timeout)
        assert got == b"x" * 40


def test_chunked_response_on_http11_without_length(rules_server):
    with rules_server.raw() as c:
        c.send(request_bytes("GET", "/chunks?n=4"))
        r = c.read_response()
        assert r.status == 200
        assert "chunked" in (r.header("Transfer-Encoding") or "").lower()
        assert r.header("Content-Length") is None
        assert r.body == b"part0;part1;part2;part3;"
        assert not c.is_closed(0.3)


def test_http10_answered_and_closed(rules_server):
    with rules_server.raw() as c:
        c.send(b"GET /chunks?n=3 HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert r.status == 200
        assert r.header("Transfer-Encoding") is None, "chunked encoding sent to an HTTP/1.0 client"
        assert r.body == b"part0;part1;part2;"
        assert c.is_closed(3), "HTTP/1.0 connection left open"


def test_http10_with_length_is_closed_too(rules_server):
    with rules_server.raw() as c:
        c.send(b"GET /hello HTTP/1.0\r\n\r\n")
        r = c.read_response()
        assert (r.status, r.body) == (200, b"hello world")
        assert c.is_closed(3)


def test_connection_close_request_header_is_honoured(rules_server):
    with rules_server.raw() as c:
        c.send(request_bytes("GET", "/hello", {"Connection": "close"}))
        r = c.read_response()
        assert r.status == 200
        assert c.is_closed(3)


def test_malformed_request_gets_400_and_server_keeps_serving(rules_server):
    with rules_server.raw() as c:
        c.send(b"THIS IS NOT HTTP\r\n\r\n")
        r = c.read_response()
        assert r.status == 400
    with rules_server.raw() as c:
        c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        assert c.read_response().status == 400
    assert exchange(rules_server, "GET", "/hello").status == 200


def test_keep_alive_idle_timeout(start_server):
    srv = start_server("apps.wsgi_rules:application", "--keep-alive", "1")
    with srv.raw() as c:
        c.send(request_bytes("GET", "/hello"))
        assert c.read_response().status == 200
        time.sleep(0.3)
        c.send(request_bytes("GET", "/hello"))
        assert c.read_response().status == 200, "connection closed well inside --keep-alive"
        elapsed = c.wait_closed(6)
    assert 0.5 <= elapsed <= 3.5, f"idle keep-alive connection closed after {elapsed:.2f}s, wanted ~1s"
