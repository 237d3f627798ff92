"""PEP 3333 wsgi.file_wrapper: a real file (with fileno) is sent whole, efficiently
(sendfile or large reads, not one read per small block), and truncated to a
declared Content-Length; a file-like object without fileno (BytesIO) works too;
the wrapper is itself an iterable of blksize blocks with close(); and the file's
close() is called."""

import os
import time

import pytest

from conftest import exchange, proc_io, request_bytes, wait_close_record


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("fw") / "data.bin"
    p.write_bytes(os.urandom(1 << 20) * 3 + b"tail")
    return p


def test_real_file_whole(rules_server, data_file):
    ident = f"real-{time.time_ns()}"
    r = exchange(rules_server, "GET", f"/file?path={data_file}&id={ident}")
    assert r.status == 200
    assert r.body == data_file.read_bytes()
    wait_close_record(rules_server, ident)


def test_real_file_with_declared_length_is_sent_with_it(rules_server, data_file):
    size = data_file.stat().st_size
    r = exchange(rules_server, "GET", f"/file?path={data_file}&declared={size}")
    assert r.header("Content-Length") == str(size)
    assert r.body == data_file.read_bytes()


def test_real_file_truncated_to_declared_length(rules_server, data_file):
    ident = f"trunc-{time.time_ns()}"
    with rules_server.raw() as c:
        c.send(request_bytes("GET", f"/file?path={data_file}&declared=1000&id={ident}")
               + request_bytes("GET", "/status?body=next"))
        r = c.read_response()
        assert r.status == 200
        assert r.body == data_file.read_bytes()[:1000]
        try:
            r2 = c.read_response()
        except AssertionError:
            r2 = None  # closing is acceptable; sending the rest of the file is not
        if r2 is not None:
            assert r2.body == b"next"
    wait_close_record(rules_server, ident)


def test_bytesio_without_fileno(rules_server, data_file):
    ident = f"bytesio-{time.time_ns()}"
    r = exchange(rules_server, "GET", f"/file?path={data_file}&kind=bytesio&id={ident}")
    assert r.status == 200
    assert r.body == data_file.read_bytes()
    wait_close_record(rules_server, ident)


def test_bytesio_truncated_to_declared_length(rules_server, data_file):
    r = exchange(rules_server, "GET", f"/file?path={data_file}&kind=bytesio&declared=10")
    assert r.body == data_file.read_bytes()[:10]


def test_wrapper_is_iterable_with_close(rules_server):
    d = exchange(rules_server, "GET", "/file-wrapper-iter").json()
    assert d["blocks"] == ["abcd", "efgh", "ij"]
    assert d["has_close"] is True
    assert d["src_closed"] is True


def test_real_file_sent_efficiently(rules_server, tmp_path):
    # 32 MiB with an 8 KiB blksize: a naive loop makes 4096 read() calls. sendfile or
    # large reads make far fewer. /proc/PID/io counts read syscalls per process.
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * (32 << 20))
    tree = rules_server.tree()
    before = sum(proc_io(p).get("syscr", 0) for p in tree)
    r = exchange(rules_server, "GET", f"/file?path={big}&blksize=8192", timeout=30)
    after = sum(proc_io(p).get("syscr", 0) for p in tree)
    assert r.status == 200 and len(r.body) == 32 << 20
    assert before > 0, "could not read /proc/PID/io of the server"
    assert after - before < 1024, f"{after - before} read syscalls to send a 32 MiB file"
