"""rwsgi's own HTTP/1.1 path (server/own.rs) against hyper's (`--hyper-only`): the
same requests must get the same bytes back from both, Date aside. The own path takes
keep-alive HTTP/1.1 requests without a body, or with a body of at most 64 KiB that
arrived whole, and hands anything else to hyper on the same connection, so several
exchanges below also check the hand-over: a chunked or larger body, HTTP/1.0, a
malformed head or one over the limits, after a request the own path answered.

Each exchange ends with a `Connection: close` request, so the server closes and the
whole byte stream can be compared, including what happens after a response that
aborts the connection (nothing more)."""

import re
import socket

import pytest

from conftest import request_bytes, warm_routes

APP = "apps.wsgi_rules:application"
CLOSE = request_bytes("GET", "/status?body=last", {"Connection": "close"})


def get(path, headers=None, method="GET"):
    return request_bytes(method, path, headers)


EXCHANGES = {
    "hello": get("/hello"),
    "list without a length": get("/list"),
    "custom iterable, chunked": get("/custom-iterable"),
    "generator, chunked": get("/chunks?n=5"),
    "HEAD of a whole body": get("/hello", method="HEAD"),
    "HEAD of a stream": get("/chunks?n=2", method="HEAD"),
    "HEAD of a declared length": get("/status?body=abcdef", method="HEAD"),
    "custom reason": get("/status?s=201%20Made%20It"),
    "canonical reason": get("/status?s=404%20Not%20Found"),
    "unknown status": get("/status?s=299%20Odd"),
    "204": get("/nobody-status?s=204%20No%20Content"),
    "304": get("/nobody-status?s=304%20Not%20Modified"),
    "1xx from the app": get("/nobody-status?s=103%20Early%20Hints"),
    "body shorter than its length": get("/length?declared=10&actual=4"),
    "body longer than its length": get("/length?declared=4&actual=10"),
    "large whole body": get("/length?declared=200000&actual=200000"),
    "large generator with a length": get("/slowgen?chunks=3&size=70000&name=own"),
    "exception mid-stream": get("/closing?id=own-raise&mode=raise-later"),
    "exception before the body": get("/closing?id=own-first&mode=raise-first"),
    "empty chunks then an exception": get("/empty-then-raise"),
    "exc_info replaces the status": get("/exc-before"),
    "app raises": get("/raise?marker=own"),
    "str body": get("/str-body"),
    "bad header name": get("/bad-header?kind=space-name"),
    "write() with a length": get("/write"),
    "write() streamed": get("/write-stream"),
    "header value per request": get("/echo-header?v=abc"),
    "connection keep-alive": get("/hello", {"Connection": "keep-alive"}),
    "connection close first": get("/hello", {"Connection": "close"}),
    "pipelined": get("/status?body=one") + get("/chunks?n=2") + get("/hello", method="HEAD"),
    "not found": get("/nowhere"),
    "small bodies": get("/hello") + request_bytes("POST", "/echo", body=b"posted") + get("/hello")
    + request_bytes("PUT", "/echo", body=b"x" * 65536) + request_bytes("POST", "/echo", {"Content-Length": "0"}),
    "unread body": request_bytes("POST", "/noread", body=b"ignored") + get("/hello"),
    "body read by lines": request_bytes("POST", "/input?op=readlines", body=b"a\nbb\n\nccc")
    + request_bytes("POST", "/input?op=read_minus1", body=b"all of it"),
    "body on a HEAD": request_bytes("HEAD", "/echo", body=b"odd"),
    "then a larger body": get("/hello") + request_bytes("POST", "/echo", body=b"y" * 65537) + get("/hello"),
    "then two lengths": get("/hello")
    + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "then a bad length": get("/hello") + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "then chunked": get("/hello")
    + request_bytes("POST", "/echo", {"Transfer-Encoding": "chunked"}, b"")[:-2]
    + b"\r\n3\r\nabc\r\n0\r\n\r\n",
    "then HTTP/1.0": get("/hello") + request_bytes("GET", "/hello", version="HTTP/1.0"),
    "then a bad head": get("/hello") + b"GET /hello HTTP/1.1\r\nBad Header\r\n\r\n",
    "then a long line": get("/hello") + get("/status?body=" + "x" * 5000),
    "then many fields": get("/hello") + get("/hello", [(f"X-F{i}", "1") for i in range(120)]),
    "then absolute form": get("/hello") + b"GET http://localhost/hello HTTP/1.1\r\nHost: x\r\n\r\n",
    "then expect": get("/hello")
    + request_bytes("POST", "/echo", {"Expect": "100-continue"}, b"exp"),
    "then an upgrade": get("/hello") + get("/hello", {"Connection": "upgrade", "Upgrade": "h2c"}),
    "leading empty lines": b"\r\n" + get("/hello"),
    "repeated fields": get("/echo-header?v=x", [("X-A", "1"), ("X-A", "2"), ("Accept", "*/*")]),
}


def talk(srv, data: bytes) -> bytes:
    with socket.create_connection((srv.host, srv.port), timeout=20) as c:
        c.sendall(data + CLOSE)
        out = b""
        while True:
            try:
                got = c.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            out += got
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\nDate: X\r\n", out)


@pytest.fixture(scope="module", params=["threads4", "inline"])
def both(request, module_server_factory):
    """The rules app served by the own path and by hyper alone, alike otherwise."""
    args = ["--threads", "4"] if request.param == "threads4" else ["--threads", "1"]
    own = module_server_factory(APP, *args)
    hyper = module_server_factory(APP, *args, "--hyper-only")
    if request.param == "inline":
        warm_routes(own)
        warm_routes(hyper)
    return own, hyper


@pytest.mark.parametrize("name", list(EXCHANGES))
def test_the_own_path_answers_as_hyper_does(both, name):
    own, hyper = both
    data = EXCHANGES[name]
    mine, theirs = talk(own, data), talk(hyper, data)
    assert theirs, f"{name}: hyper sent nothing"
    assert mine == theirs, f"{name}:\nown:   {mine[:3000]!r}\nhyper: {theirs[:3000]!r}"



def test_interleaved_repeated_fields_keep_the_apps_order_on_the_own_path(both):
    """The one difference a client can see besides Date (ARCHITECTURE.md, Invariants):
    the own path writes the app's fields in the app's order, as gunicorn does; hyper
    groups a repeated name's values under its first. The same fields either way."""
    own, hyper = both

    def fields(raw):
        head = raw.split(b"\r\n\r\n", 1)[0]
        return [line.split(b":", 1)[0] for line in head.split(b"\r\n")[1:]]

    mine, theirs = fields(talk(own, get("/interleaved"))), fields(talk(hyper, get("/interleaved")))
    app_order = [b"Set-Cookie", b"X-Other", b"Set-Cookie"]
    assert [f for f in mine if f in (b"Set-Cookie", b"X-Other")] == app_order
    assert [f for f in theirs if f in (b"Set-Cookie", b"X-Other")] == [b"Set-Cookie", b"Set-Cookie", b"X-Other"]
    assert sorted(mine) == sorted(theirs)
