"""PEP 3333 response iterables: lists, generators and plain iterables stream (a chunk
reaches the client before the generator has finished), a slow client pauses the
iterator instead of the server draining it into memory, headers wait for the first
non-empty chunk (an exception before it is still a 500), non-bytes chunks are
refused, and close() is called on every path: normal end, exception before and
after the first chunk, Content-Length truncation, HEAD, and client disconnect."""

import os
import socket
import time

import pytest

from conftest import ConnectionClosed, exchange, proc_status_kb, request_bytes, wait_close_record


def test_list_body(rules_server):
    r = exchange(rules_server, "GET", "/list")
    assert (r.status, r.body) == (200, b"abcdef")


def test_plain_iterable_body(rules_server):
    r = exchange(rules_server, "GET", "/custom-iterable")
    assert (r.status, r.body) == (200, b"only-iter")


def test_generator_streams_before_it_finishes(rules_server):
    flag = f"flag-{time.time_ns()}"
    with rules_server.raw(timeout=5) as c:
        c.send(request_bytes("GET", f"/stream?flag={flag}"))
        version, status, reason, headers, head = c.read_head()
        assert status == 200
        # The generator is now blocked until we create the flag: the first chunk
        # must already be here.
        got = c.buf
        c.buf = b""
        deadline = time.monotonic() + 5
        while b"chunk0;" not in got and time.monotonic() < deadline:
            try:
                got += c.sock.recv(65536)
            except socket.timeout:
                break
        assert b"chunk0;" in got, "first chunk not sent while the generator was still running"
        rules_server.state_file(flag).write_text("go")
        c.buf = got
        rest = b""
        # read the remainder of the chunked body
        while b"0\r\n\r\n" not in c.buf:
            if not c._fill():
                break
    assert b"chunk1;" in c.buf and b"chunk2;" in c.buf


def test_slow_client_pauses_the_iterator(rules_server):
    chunks, size = 1600, 65536  # 100 MiB
    name = f"slowgen-{time.time_ns()}"
    with rules_server.raw(timeout=15, rcvbuf=65536) as c:
        c.send(request_bytes("GET", f"/slowgen?chunks={chunks}&size={size}&name={name}"))
        c.read_head()
        time.sleep(2.0)  # read nothing: the server must stop pulling from the generator
        produced = int(rules_server.state_file(name).read_text() or 0)
        print("produced while paused:", produced)
        assert produced < 400, (
            f"generator produced {produced} chunks ({produced * size >> 20} MiB) while the client read nothing: "
            "the server drains the iterator into memory instead of pausing it")
        rss_tree = [proc_status_kb(p, "VmRSS") for p in rules_server.tree()]
        # now read everything and check it arrived whole
        total = len(c.buf)
        c.buf = b""
        while total < chunks * size:
            data = c.sock.recv(1 << 20)
            if not data:
                break
            total += len(data)
    assert total == chunks * size
    assert int(rules_server.state_file(name).read_text()) == chunks
    assert max(rss_tree) < 200 * 1024, f"RSS {max(rss_tree)} kB while paused"


def test_headers_wait_for_first_nonempty_chunk(rules_server):
    flag = f"late-{time.time_ns()}"
    with rules_server.raw(timeout=5) as c:
        c.send(request_bytes("GET", f"/late-first?flag={flag}"))
        c.settimeout(0.8)
        try:
            early = c.sock.recv(65536)
        except socket.timeout:
            early = b""
        assert early == b"", f"headers sent before the first non-empty chunk: {early[:200]!r}"
        rules_server.state_file(flag).write_text("go")
        c.settimeout(5)
        r = c.read_response()
    assert (r.status, r.body) == (200, b"finally")


def test_exception_before_first_nonempty_chunk_is_500(rules_server):
    r = exchange(rules_server, "GET", "/empty-then-raise")
    assert r.status == 500
    assert r.header("X-Early") is None
    wait_close_record(rules_server, "empty-then-raise")


def test_non_bytes_chunk_is_500(rules_server):
    r = exchange(rules_server, "GET", "/str-body")
    assert r.status == 500
    assert b"a str, not bytes" not in r.body
    assert exchange(rules_server, "GET", "/hello").status == 200


def _ident(tag):
    return f"{tag}-{time.time_ns()}"


def test_close_called_on_normal_end(rules_server):
    ident = _ident("normal")
    r = exchange(rules_server, "GET", f"/closing?id={ident}")
    assert r.body == b"one;two;"
    line = wait_close_record(rules_server, ident)
    assert line.endswith("produced=2")


def test_close_called_when_iteration_raises_before_first_chunk(rules_server):
    ident = _ident("raise-first")
    r = exchange(rules_server, "GET", f"/closing?id={ident}&mode=raise-first")
    assert r.status == 500
    wait_close_record(rules_server, ident)


def test_close_called_when_iteration_raises_after_first_chunk(rules_server):
    ident = _ident("raise-later")
    with rules_server.raw() as c:
        c.send(request_bytes("GET", f"/closing?id={ident}&mode=raise-later"))
        with pytest.raises(ConnectionClosed) as ei:
            c.read_response()
        assert b"one;" in ei.value.partial
    wait_close_record(rules_server, ident)


def test_close_called_on_content_length_truncation(rules_server):
    ident = _ident("truncate")
    r = exchange(rules_server, "GET", f"/closing?id={ident}&mode=truncate")
    assert r.body == b"12345"
    wait_close_record(rules_server, ident)


def test_close_called_for_head(rules_server):
    ident = _ident("head")
    with rules_server.raw() as c:
        c.send(request_bytes("HEAD", f"/closing?id={ident}"))
        r = c.read_response("HEAD")
        assert r.status == 200
    wait_close_record(rules_server, ident)


def test_close_called_on_client_disconnect_mid_stream(rules_server):
    ident = _ident("disconnect")
    c = rules_server.raw()
    c.send(request_bytes("GET", f"/closing?id={ident}&mode=endless"))
    c.read_head()
    got = 0
    while got < 256 * 1024:
        got += len(c.read_some())
    # abort the connection hard (RST)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    line = wait_close_record(rules_server, ident, timeout=10)
    produced = int(line.rsplit("=", 1)[1])
    assert produced < 100000, "the endless iterator ran to its end instead of being closed"
    assert exchange(rules_server, "GET", "/hello").status == 200


def test_close_called_on_client_disconnect_graceful(rules_server):
    ident = _ident("fin")
    c = rules_server.raw()
    c.send(request_bytes("GET", f"/closing?id={ident}&mode=endless"))
    c.read_head()
    c.read_some()
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    wait_close_record(rules_server, ident, timeout=10)
