"""Slow clients and hostile heads (docs/hostile-http.md): each failure a probe found,
as a test that a real client can run against the real binary.

A slow client costs its own connection at most, never the worker (`--timeout`
counts only the app's own time; `--client-body-timeout` and `--send-timeout` bound
the client). A hostile head gets the status RFC 9112 asks for, is refused as soon as
a line passes its limit, and leaves one rate-limited WARNING line."""

import json
import socket
import threading
import time
import zlib

import pytest

from conftest import (ConnectionClosed, exchange, proc_status_kb, report_lines, request_bytes, settled_metrics,
                      start_tracked)

APP = "apps.wsgi_rules:application"


def worker_pids(srv):
    return sorted(srv.tree()[1:])


# -- client time is not app time ------------------------------------------------------


def test_a_slow_download_is_delivered_in_full_past_the_timeout(start_server):
    # A phone-speed reader (about 1 MiB/s) of a streamed response that takes several
    # times --timeout to read: the app waits on the client, which --timeout does not
    # count. (The probe: 50 MiB at 1 MiB/s with --timeout 5, cut at 34 s.)
    srv = start_server(APP, "--timeout", "2", "--threads", "2")
    before = worker_pids(srv)
    size, chunks = 65536, 160  # 10 MiB: beyond what the socket buffers hold
    with srv.raw(timeout=20, rcvbuf=65536) as c:
        c.send(request_bytes("GET", f"/slowgen?chunks={chunks}&size={size}&name=slowdl"))
        t0 = time.monotonic()
        _, status, _, headers, _ = c.read_head()
        assert status == 200
        assert int(dict((k.lower(), v) for k, v in headers)["content-length"]) == size * chunks
        got = len(c.buf)
        while True:
            try:
                data = c.sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            got += len(data)
            # ~1 MiB/s.
            ahead = got / (1 << 20) - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
            if got >= size * chunks:
                break
        elapsed = time.monotonic() - t0
    assert got >= size * chunks, f"download cut after {got} bytes and {elapsed:.1f}s"
    assert elapsed > 4, f"the read took {elapsed:.1f}s: not longer than --timeout 2 by enough"
    assert worker_pids(srv) == before, "the worker was replaced while a client read slowly"


def slow_upload(srv, total, result):
    body = bytes(range(256)) * (total // 256)
    try:
        with srv.raw(timeout=30) as c:
            c.send(request_bytes("POST", "/upload?n=65536", {"Content-Length": str(len(body))}))
            for i in range(0, len(body), 65536):
                c.send(body[i:i + 65536])
                time.sleep(0.08)
            r = c.read_response()
            result["status"] = r.status
            result["body"] = r.body
            result["crc"] = zlib.crc32(body)
    except Exception as e:  # noqa: BLE001 - reported by the test
        result["error"] = repr(e)


def test_a_body_that_never_comes_times_out_alone(start_server):
    # Content-Length of a petabyte and no body, to a route that reads it: the body
    # timeout fires (408), the worker lives, and an upload on another connection in
    # the meantime is untouched.
    srv, metrics = start_tracked(start_server, "--timeout", "2", "--threads", "3", "--client-body-timeout", "3",
                                 app=APP)
    before = worker_pids(srv)
    result = {}
    uploader = threading.Thread(target=slow_upload, args=(srv, 3 << 20, result))
    uploader.start()
    with srv.raw(timeout=20) as c:
        t0 = time.monotonic()
        c.send(request_bytes("POST", "/upload", {"Content-Length": "1000000000000000"}))
        r = c.read_response()
        elapsed = time.monotonic() - t0
        assert r.status == 408, r
        assert r.header("connection") == "close"
        c.wait_closed(5)
    assert 2.5 <= elapsed <= 8, f"408 after {elapsed:.1f}s with --client-body-timeout 3"
    uploader.join(40)
    assert "error" not in result, result
    assert result["status"] == 200
    got = json.loads(result["body"])
    assert (got["total"], got["crc32"]) == (3 << 20, result["crc"])
    assert worker_pids(srv) == before, "the worker was replaced"
    srv.wait_for_log("ClientTimeout")
    m = settled_metrics(srv, metrics)
    assert m.get("rwsgi_client_timeouts_total") == 1
    assert sum(r["client_timeouts"] for r in report_lines(srv)) == 1
    # The tracker's counts are those of the requests answered: the upload (2xx)
    # and the timed-out one (4xx), nothing lost or doubled.
    assert m.get("rwsgi_requests_total", status_class="2xx") == 1
    assert m.get("rwsgi_requests_total", status_class="4xx") == 1


def test_a_client_that_stops_reading_costs_only_its_connection(start_server):
    srv, metrics = start_tracked(start_server, "--timeout", "2", "--threads", "2", "--send-timeout", "1", app=APP)
    before = worker_pids(srv)
    with srv.raw(timeout=20, rcvbuf=4096) as c:
        c.send(request_bytes("GET", "/slowgen?chunks=1024&size=65536&name=stalled"))
        c.read_head()
        # Never read: the server gives up after --send-timeout.
        srv.wait_for_log("--send-timeout", timeout=15)
        c.settimeout(5)
        got = 0
        try:
            while True:
                data = c.sock.recv(1 << 20)
                if not data:
                    break
                got += len(data)
        except (ConnectionResetError, socket.timeout):
            pass
    assert got < 1024 * 65536, "the whole body arrived: nothing was aborted"
    assert exchange(srv, "GET", "/hello").status == 200
    assert worker_pids(srv) == before
    assert settled_metrics(srv, metrics).get("rwsgi_client_timeouts_total") == 1


# -- heads ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def heads_server(module_server_factory):
    return module_server_factory(APP, "--threads", "2")


def answer(srv, data: bytes, timeout: float = 10):
    with srv.raw(timeout=timeout) as c:
        c.send(data)
        return c.read_response()


@pytest.mark.parametrize("name,data,status", [
    ("no Host in HTTP/1.1", b"GET /hello HTTP/1.1\r\n\r\n", 400),
    ("two Host fields", b"GET /echo-header?v=host HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("an invalid Host", b"GET /hello HTTP/1.1\r\nHost: a b/c\r\n\r\n", 400),
    ("a Host with userinfo", b"GET /hello HTTP/1.1\r\nHost: u@h\r\n\r\n", 400),
    ("gzip, chunked", b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 501),
    ("a 5 KiB request line", request_bytes("GET", "/status?body=" + "x" * 5000), 414),
    ("a 60 KiB request line", request_bytes("GET", "/status?body=" + "x" * 60000), 414),
    ("CONNECT", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
])
def test_hostile_heads_get_the_rfc_status(heads_server, name, data, status):
    r = answer(heads_server, data)
    assert r.status == status, f"{name}: {r.status} {r.body[:200]!r}"
    assert r.header("connection") == "close"
    if status == 405:
        assert r.header("allow"), r.headers


def test_http10_without_host_is_served(heads_server):
    assert answer(heads_server, b"GET /hello HTTP/1.0\r\n\r\n").status == 200


def test_a_field_line_is_refused_as_soon_as_it_passes_its_limit(heads_server):
    # The head never ends: the 431 must come from the line's length alone.
    with heads_server.raw(timeout=5) as c:
        c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000)
        t0 = time.monotonic()
        r = c.read_response()
        assert r.status == 431
        assert time.monotonic() - t0 < 3


def test_a_request_line_is_refused_as_soon_as_it_passes_its_limit(heads_server):
    with heads_server.raw(timeout=5) as c:
        c.send(b"GET /" + b"a" * 5000)
        assert c.read_response().status == 414


# A body larger than the own path keeps (64 KiB): its connection goes to hyper.
HANDED_OVER = request_bytes("POST", "/echo", body=b"b" * 70000)


@pytest.mark.parametrize("path", ["own", "hyper-only", "handed-over"])
def test_unterminated_heads_cost_a_worker_little_memory(start_server, path):
    # 50 connections each sending one endless header line: each is cut at the
    # field-size limit (8 KiB), not kept up to the whole head's (about 827 KB), on
    # the own path, on hyper's (--hyper-only), and on a connection the own path
    # handed to hyper after a first request.
    srv = start_server(APP, "--threads", "2", *(["--hyper-only"] if path == "hyper-only" else []))
    (worker,) = worker_pids(srv)
    exchange(srv, "GET", "/hello")
    exchange(srv, "POST", "/echo", body=b"b" * 70000)
    rss0 = proc_status_kb(worker, "VmRSS")
    conns = []
    junk = b"a" * (64 << 10)
    for _ in range(50):
        c = srv.raw(timeout=0.5)
        if path == "handed-over":
            c.send(HANDED_OVER)
            assert c.read_response("POST").status == 200
        c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        conns.append(c)
    for _ in range(13):  # up to ~830 KB each, while the server still reads
        for c in conns:
            try:
                c.sock.send(junk)
            except OSError:
                pass
    time.sleep(0.5)
    grown = proc_status_kb(worker, "VmRSS") - rss0
    # Each connection was answered 431 (not reset, not left waiting for the head).
    statuses = set()
    for c in conns:
        c.settimeout(5)
        try:
            statuses.add(c.read_response().status)
        except (ConnectionClosed, OSError) as e:
            statuses.add(type(e).__name__)
        c.close()
    assert grown < 6 * 1024, f"50 unterminated heads grew the worker by {grown} KiB ({path})"
    assert statuses == {431}, statuses


def test_malformed_requests_leave_one_rate_limited_warning_each(start_server):
    srv = start_server(APP, "--threads", "2")
    r = answer(srv, b"GET /hello HTTP/1.1\r\n\r\n")
    assert r.status == 400
    text = srv.wait_for_log("malformed request refused")
    line = next(l for l in text.splitlines() if "malformed request refused" in l)
    assert "WARN" in line and "127.0.0.1:" in line and "Host" in line, line
    # A flood: a bounded number of lines, and a count of what was left out.
    for _ in range(300):
        with srv.raw(timeout=5) as c:
            c.send(b"GET /hello HTTP/1.1\r\nHost: a b\r\n\r\n")
            c.read_response()
    time.sleep(1.1)
    answer(srv, b"GET /hello HTTP/1.1\r\n\r\n")
    text = srv.wait_for_log("more not logged")
    lines = [l for l in text.splitlines() if "malformed request refused" in l]
    assert len(lines) < 150, f"{len(lines)} warning lines for 301 bad requests"
