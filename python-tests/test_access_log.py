"""Access log: gunicorn's default format on `--access-log -` (stdout) and to a file,
one line per request including errors, and `--access-log-format` with gunicorn's
atoms (h l u t r m U q H s B b f a T M D L p {header}i {header}o {var}e)."""

import base64
import os
import re
import time

import pytest

from conftest import exchange

DEFAULT_RE = re.compile(
    r'^(?P<h>\S+) - (?P<u>\S+) \[(?P<t>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] '
    r'"(?P<r>[^"]*)" (?P<s>\d{3}) (?P<b>\d+|-) "(?P<f>[^"]*)" "(?P<a>[^"]*)"$')


def lines_with(text_fn, needle, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        found = [l for l in text_fn().splitlines() if needle in l]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_default_format_on_stdout(start_server):
    srv = start_server("apps.wsgi_rules:application", "--access-log", "-")
    r = exchange(srv, "GET", "/hello?x=1", {"Referer": "http://ref.example/page", "User-Agent": "test-agent/1.0"})
    assert r.status == 200
    lines = lines_with(srv.stdout_text, "/hello?x=1")
    assert len(lines) == 1, srv.stdout_text()
    m = DEFAULT_RE.match(lines[0])
    assert m, f"not gunicorn's default format: {lines[0]!r}"
    assert m["h"] == "127.0.0.1"
    assert m["u"] == "-"
    assert m["r"] == "GET /hello?x=1 HTTP/1.1"
    assert m["s"] == "200"
    assert m["b"] == "11"
    assert m["f"] == "http://ref.example/page"
    assert m["a"] == "test-agent/1.0"
    # access lines do not go to the server log
    assert "/hello?x=1" not in srv.stderr_text()


def test_access_log_file_and_status_codes(start_server, tmp_path):
    log = tmp_path / "access.log"
    srv = start_server("apps.wsgi_rules:application", "--access-log", str(log))
    exchange(srv, "GET", "/raise?marker=al")
    exchange(srv, "GET", "/nowhere")
    exchange(srv, "POST", "/echo", body=b"12345")
    read = lambda: log.read_text() if log.exists() else ""
    assert lines_with(read, "/echo")
    text = read()
    statuses = {}
    for l in text.splitlines():
        m = DEFAULT_RE.match(l)
        assert m, f"bad access line {l!r}"
        statuses[m["r"]] = (m["s"], m["b"])
    assert statuses["GET /raise?marker=al HTTP/1.1"][0] == "500"
    assert statuses["GET /nowhere HTTP/1.1"][0] == "404"
    assert statuses["POST /echo HTTP/1.1"] == ("200", "5")


def test_no_access_log_by_default(start_server):
    srv = start_server("apps.wsgi_rules:application")
    exchange(srv, "GET", "/hello?nolog=1")
    time.sleep(0.3)
    assert "/hello?nolog=1" not in srv.logs()


def test_basic_auth_user_atom(start_server):
    srv = start_server("apps.wsgi_rules:application", "--access-log", "-")
    auth = base64.b64encode(b"alice:secret").decode()
    exchange(srv, "GET", "/hello?auth=1", {"Authorization": f"Basic {auth}"})
    line = lines_with(srv.stdout_text, "/hello?auth=1")[0]
    m = DEFAULT_RE.match(line)
    assert m and m["u"] == "alice"
    assert "secret" not in srv.logs()


def kv_line(srv, needle):
    lines = lines_with(srv.stdout_text, needle)
    assert lines, f"no access line with {needle!r}: {srv.stdout_text()[-2000:]}"
    return dict(part.split("=", 1) for part in lines[0].split(" "))


def test_custom_format_atoms(start_server):
    fmt = ("m=%(m)s U=%(U)s q=%(q)s H=%(H)s s=%(s)s B=%(B)s b=%(b)s T=%(T)s M=%(M)s D=%(D)s "
           "L=%(L)s p=%(p)s in=%({x-custom}i)s out=%({content-type}o)s h=%(h)s")
    srv = start_server("apps.wsgi_rules:application", "--access-log", "-", "--access-log-format", fmt)
    exchange(srv, "GET", "/sleep?s=0.2", {"X-Custom": "hdr-val"})
    worker_pid = exchange(srv, "GET", "/environ").json()["pid"]
    kv = kv_line(srv, "U=/sleep")
    assert kv["m"] == "GET"
    assert kv["U"] == "/sleep"
    assert kv["q"] == "s=0.2"
    assert kv["H"] == "HTTP/1.1"
    assert kv["s"] == "200"
    assert int(kv["B"]) > 0 and kv["b"] == kv["B"]
    assert kv["T"] == "0"
    assert 190 <= int(kv["M"]) < 5000
    assert 190_000 <= int(kv["D"]) < 5_000_000
    assert 0.19 <= float(kv["L"]) < 5
    assert kv["p"] == f"<{worker_pid}>", "p is the pid of the process that ran the app"
    assert kv["in"] == "hdr-val"
    assert kv["out"] == "application/json"
    assert kv["h"] == "127.0.0.1"


def test_environ_atom(start_server):
    # {key}e is a key of the request's WSGI environ (gunicorn's glogging.atoms).
    fmt = "U=%(U)s method=%({REQUEST_METHOD}e)s path=%({path_info}e)s missing=%({NO_SUCH_KEY}e)s"
    srv = start_server("apps.wsgi_rules:application", "--access-log", "-", "--access-log-format", fmt)
    exchange(srv, "GET", "/hello")
    kv = kv_line(srv, "U=/hello")
    assert kv["method"] == "GET"
    assert kv["path"] == "/hello"
    assert kv["missing"] == "-"


def test_bytes_atoms_count_what_was_sent(start_server):
    fmt = "U=%(U)s s=%(s)s B=%(B)s b=%(b)s"
    srv = start_server("apps.wsgi_rules:application", "--access-log", "-", "--access-log-format", fmt)
    exchange(srv, "GET", "/nobody-status?s=204%20No%20Content")
    exchange(srv, "HEAD", "/hello")
    exchange(srv, "GET", "/length?declared=3&actual=9")
    kv = kv_line(srv, "U=/nobody-status")
    assert kv["s"] == "204"
    # no body was sent: gunicorn logs 0 for both (b is '-' only when unknown)
    assert kv["B"] == "0" and kv["b"] == "0"
    kv = kv_line(srv, "U=/hello")
    assert kv["B"] == "0", "HEAD sends no body bytes"
    kv = kv_line(srv, "U=/length")
    assert kv["B"] == "3", "truncated response: only the declared bytes were sent"


def test_one_line_per_pipelined_request(start_server):
    from conftest import request_bytes
    srv = start_server("apps.wsgi_rules:application", "--access-log", "-")
    with srv.raw() as c:
        c.send(b"".join(request_bytes("GET", f"/status?body=p{i}") for i in range(5)))
        for _ in range(5):
            c.read_response()
    lines = lines_with(srv.stdout_text, "body=p4")
    assert lines
    got = [l for l in srv.stdout_text().splitlines() if "/status?body=p" in l]
    assert len(got) == 5
    assert [re.search(r"body=(p\d)", l).group(1) for l in got] == [f"p{i}" for i in range(5)]
