"""PEP 3333 wsgi.input: read(n) never returns more than n, read() and read(-1) read to
the end, reads after EOF return b"", readline(size), readlines(hint) and iteration
keep b"\\n", an unread or partly read body does not corrupt the next request on the
connection, and a 1 GiB upload streams through in bounded memory."""

import time
import zlib

import pytest

from conftest import exchange, proc_status_kb, request_bytes, chunked

BODY = b"line one\nline two is longer\n\nshort\nno newline at end"


def op(server, name, n=0, body=BODY, chunked_body=False):
    path = f"/input?op={name}&n={n}"
    if chunked_body:
        r = exchange(server, "POST", path, {"Transfer-Encoding": "chunked"},
                     chunked([body[:7], body[7:20], body[20:]]))
    else:
        r = exchange(server, "POST", path, body=body)
    assert r.status == 200, r.body[:2000]
    return [p.encode("latin-1") for p in r.json()["parts"]]


@pytest.mark.parametrize("n", [1, 5, 16, 1000])
@pytest.mark.parametrize("is_chunked", [False, True], ids=["length", "chunked"])
def test_read_n_never_more_than_n(rules_server, n, is_chunked):
    parts = op(rules_server, "read_n", n, chunked_body=is_chunked)
    assert parts[-1] == b""
    assert all(len(p) <= n for p in parts), [len(p) for p in parts]
    assert b"".join(parts) == BODY


@pytest.mark.parametrize("is_chunked", [False, True], ids=["length", "chunked"])
def test_read_all_then_eof(rules_server, is_chunked):
    parts = op(rules_server, "read_all", chunked_body=is_chunked)
    assert parts == [BODY, b"", b""]


def test_read_minus1_then_eof(rules_server):
    assert op(rules_server, "read_minus1") == [BODY, b"", b""]


@pytest.mark.parametrize("is_chunked", [False, True], ids=["length", "chunked"])
def test_readline_keeps_newlines(rules_server, is_chunked):
    parts = op(rules_server, "readline", chunked_body=is_chunked)
    assert parts == [b"line one\n", b"line two is longer\n", b"\n", b"short\n", b"no newline at end", b""]


@pytest.mark.parametrize("name,n", [("readline", 0), ("readline_size", 4), ("read_n", 5),
                                    ("readlines", 0)])
def test_reads_across_many_small_frames(rules_server, name, n):
    # A chunk of 1 to 3 bytes per frame: lines and reads span several of the frames
    # wsgi.input keeps (it copies out of them directly), and must come out the same
    # as from one piece.
    sizes = [1, 2, 3]
    pieces, i, k = [], 0, 0
    while i < len(BODY):
        pieces.append(BODY[i:i + sizes[k % 3]])
        i += sizes[k % 3]
        k += 1
    path = f"/input?op={name}&n={n}"
    whole = op(rules_server, name, n)
    r = exchange(rules_server, "POST", path, {"Transfer-Encoding": "chunked"}, chunked(pieces))
    assert r.status == 200, r.body[:2000]
    assert [p.encode("latin-1") for p in r.json()["parts"]] == whole


def test_readline_size(rules_server):
    parts = op(rules_server, "readline_size", 4)
    assert all(len(p) <= 4 for p in parts)
    assert b"".join(parts) == BODY
    assert parts[:3] == [b"line", b" one", b"\n"]


def test_readlines(rules_server):
    parts = op(rules_server, "readlines")
    assert parts == [b"line one\n", b"line two is longer\n", b"\n", b"short\n", b"no newline at end",
                     b"<rest>", b""]


def test_readlines_hint_loses_nothing(rules_server):
    parts = op(rules_server, "readlines_hint", 5)
    i = parts.index(b"<rest>")
    lines, rest = parts[:i], parts[i + 1]
    assert lines, "readlines(hint) returned nothing"
    assert all(l.endswith(b"\n") for l in lines[:-1])
    assert b"".join(lines) + rest == BODY
    # each returned line is a whole line
    assert lines[0] == b"line one\n"


def test_iteration_keeps_newlines(rules_server):
    assert op(rules_server, "iter") == [b"line one\n", b"line two is longer\n", b"\n", b"short\n",
                                        b"no newline at end"]


def test_mixed_reads(rules_server):
    assert op(rules_server, "mixed") == [b"line one\n", b"lin", b"e two is longer\n",
                                         b"\nshort\nno newline at end"]


def test_empty_body_reads_return_immediately(rules_server):
    t0 = time.monotonic()
    r = exchange(rules_server, "GET", "/input?op=read_all")
    assert r.status == 200
    assert r.json()["parts"] == ["", "", ""]
    assert time.monotonic() - t0 < 2


def test_bodiless_requests_read_nothing_whatever_came_before(rules_server):
    # Requests without a body share one empty wsgi.input: reading it, in every way,
    # between and after requests with bodies, must give nothing and change nothing.
    ops = ["read_all", "read_minus1", "readline", "readlines", "iter", "mixed"]
    with rules_server.raw() as c:
        for op in ops:
            c.send(request_bytes("POST", f"/input?op={op}", body=b"line1\nline2"))
            assert c.read_response().json()["parts"], op
            c.send(request_bytes("GET", f"/input?op={op}"))
            parts = c.read_response().json()["parts"]
            assert not any(p not in ("", "<rest>") for p in parts), (op, parts)


def test_input_does_not_read_past_content_length(rules_server):
    # The body is followed by a pipelined request; read() must stop at CONTENT_LENGTH.
    with rules_server.raw() as c:
        c.send(request_bytes("POST", "/input?op=read_all", body=b"abc") + request_bytes("GET", "/status?body=next"))
        r1 = c.read_response()
        r2 = c.read_response()
    assert r1.json()["parts"] == ["abc", "", ""]
    assert r2.body == b"next"


def test_unread_body_does_not_corrupt_next_request(rules_server):
    evil = request_bytes("GET", "/status?body=SMUGGLED")
    body = evil * 50
    with rules_server.raw() as c:
        c.send(request_bytes("POST", "/noread", body=body) + request_bytes("GET", "/status?body=next"))
        r1 = c.read_response()
        assert r1.status == 200
        try:
            r2 = c.read_response()
        except AssertionError:
            return  # closed instead of draining: acceptable
        assert r2.body == b"next", "bytes of an unread body were parsed as a request"


def test_partial_read_then_next_request(rules_server):
    with rules_server.raw() as c:
        c.send(request_bytes("POST", "/input?op=mixed", body=b"x" * 100000) + request_bytes("GET", "/status?body=next"))
        r1 = c.read_response()
        assert r1.status == 200
        r2 = c.read_response()
        assert r2.body == b"next"


def test_one_gib_upload_in_bounded_memory(rules_server):
    total = 1 << 30
    block = bytes(range(256)) * 4096  # 1 MiB
    crc = 0
    for _ in range(total // len(block)):
        crc = zlib.crc32(block, crc)
    tree_before = rules_server.tree()
    with rules_server.raw(timeout=60) as c:
        c.send(request_bytes("POST", "/upload?n=65536", {"Content-Length": str(total)}))
        for _ in range(total // len(block)):
            c.send(block)
        r = c.read_response()
    assert r.status == 200, r.body[:500]
    d = r.json()
    assert d["total"] == total
    assert d["crc32"] == crc
    assert d["max_read"] <= 65536
    hwm = {p: proc_status_kb(p, "VmHWM") for p in set(rules_server.tree()) | set(tree_before)}
    hwm = {p: v for p, v in hwm.items() if v}
    assert hwm, "could not read VmHWM of the server processes"
    assert max(hwm.values()) < 200 * 1024, f"peak RSS per process (kB): {hwm}"


def test_large_chunked_upload_streams(rules_server):
    # Same, chunked: 256 MiB is enough to prove it streams (4x the 64 MiB rule of thumb).
    total = 256 << 20
    block = b"q" * (1 << 20)
    frame = f"{len(block):x}\r\n".encode() + block + b"\r\n"
    with rules_server.raw(timeout=60) as c:
        c.send(request_bytes("POST", "/upload?n=65536", {"Transfer-Encoding": "chunked"}))
        for _ in range(total // len(block)):
            c.send(frame)
        c.send(b"0\r\n\r\n")
        r = c.read_response()
    assert r.status == 200
    assert r.json()["total"] == total
    hwm = [proc_status_kb(p, "VmHWM") for p in rules_server.tree()]
    assert max(hwm) < 200 * 1024, hwm
