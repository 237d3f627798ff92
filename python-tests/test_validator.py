"""A whole run with the app wrapped in wsgiref.validate.validator: every kind of
well-behaved request (environ, input reads, write(), generators, file_wrapper,
exc_info, HEAD, 204, pipelining, errors stream) succeeds, and the server output
holds no AssertionError, no WSGIWarning and no "garbage collected without being
closed" (the validator's report that close() was never called)."""

import os
import time

import pytest

from conftest import chunked, exchange, request_bytes

BODY = b"alpha\nbeta\ngamma"


@pytest.fixture(scope="module")
def validated(module_server_factory):
    return module_server_factory("apps.validated:application", "--threads", "2")


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("val") / "f.bin"
    p.write_bytes(b"0123456789" * 10000)
    return p


def test_whole_run_under_validator(validated, data_file):
    s = validated
    checks = []

    def expect(method, path, status, body=None, headers=None, req_body=b""):
        r = exchange(s, method, path, headers, req_body)
        checks.append((method, path, r.status))
        assert r.status == status, f"{method} {path}: {r.status} {r.body[:300]!r}"
        if body is not None:
            assert r.body == body, f"{method} {path}: {r.body[:300]!r}"
        return r

    expect("GET", "/environ?a=1", 200)
    expect("GET", "/environ/caf%C3%A9", 200)
    expect("GET", "/hello", 200, b"hello world")
    expect("HEAD", "/hello", 200, b"")
    expect("POST", "/echo", 200, BODY, req_body=BODY)
    expect("POST", "/echo", 200, BODY, {"Transfer-Encoding": "chunked"}, chunked([BODY[:3], BODY[3:]]))
    for op_name in ("read_n", "readline", "readlines", "iter"):
        expect("POST", f"/input?op={op_name}&n=4", 200, req_body=BODY)
    expect("POST", "/upload?n=1000", 200, req_body=b"u" * 100000)
    expect("GET", "/write", 200, b"hello world!")
    expect("GET", "/write-stream", 200, b"w0;w1;w2;")
    expect("GET", "/list", 200, b"abcdef")
    expect("GET", "/custom-iterable", 200, b"only-iter")
    expect("GET", "/chunks?n=5", 200, b"part0;part1;part2;part3;part4;")
    expect("GET", "/status?s=299%20Custom%20Reason&body=c", 299, b"c")
    expect("GET", "/exc-before", 503, b"replaced body")
    expect("GET", "/nobody-status?s=204%20No%20Content", 204, b"")
    expect("GET", f"/closing?id=val-{time.time_ns()}", 200, b"one;two;")
    expect("GET", f"/file?path={data_file}", 200, data_file.read_bytes())
    expect("GET", f"/file?path={data_file}&kind=bytesio&declared=100", 200, data_file.read_bytes()[:100])
    expect("GET", "/file-wrapper-iter", 200)
    expect("GET", "/errors?marker=validator", 200, b"logged")
    expect("GET", "/sleep?s=0.1", 200)
    with s.raw() as c:
        c.send(request_bytes("GET", "/hello") + request_bytes("POST", "/echo", body=b"xyz"))
        assert c.read_response().body == b"hello world"
        assert c.read_response().body == b"xyz"
    with s.raw() as c:
        c.send(b"GET /environ HTTP/1.0\r\n\r\n")
        assert c.read_response().status == 200

    # Stop the server so that every finalizer has run and all output is flushed.
    s.stop()
    out = s.logs()
    assert "AssertionError" not in out, out[-4000:]
    assert "WSGIWarning" not in out, out[-4000:]
    assert "without being closed" not in out, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    assert len(checks) >= 25
