"""PEP 3333 environ: required CGI keys and their types, SERVER_PROTOCOL as sent,
PATH_INFO percent-decoded then latin-1, raw QUERY_STRING, REMOTE_ADDR/PORT,
HTTP_* keys (latin-1, repeated headers joined, `_` names dropped, refused or mapped
as --header-map says), CONTENT_*,
the wsgi.* keys (version, url_scheme, input, errors into the server log, run_once,
file_wrapper, multithread/multiprocess truth) and rwsgi's queue-time keys."""

import json
import time

import pytest

from conftest import exchange, request_bytes

REQUIRED_CGI = ["REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING",
                "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL"]


def env_of(server, path="/environ", headers=None, method="GET", body=b"", version="HTTP/1.1"):
    r = exchange(server, method, path, headers, body, version)
    assert r.status == 200, r.body[:500]
    return r.json()


def test_environ_is_a_real_dict_with_required_keys(rules_server):
    d = env_of(rules_server)
    assert d["environ_is_dict"] is True
    env = d["environ"]
    for k in REQUIRED_CGI:
        assert k in env, k
    for k in ["wsgi.version", "wsgi.url_scheme", "wsgi.input", "wsgi.errors", "wsgi.multithread",
              "wsgi.multiprocess", "wsgi.run_once"]:
        assert k in env, k


def test_cgi_values_are_native_strings(rules_server):
    d = env_of(rules_server, "/environ?x=1", {"X-Thing": "v"})
    for k, t in d["types"].items():
        if "." not in k:
            assert t == "str", f"{k} is {t}, PEP 3333 wants str"


def test_basic_cgi_values(rules_server):
    env = env_of(rules_server, "/environ/sub?a=1")["environ"]
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/environ/sub"
    assert env["QUERY_STRING"] == "a=1"
    assert env["SERVER_PORT"] == str(rules_server.port)
    assert env["SERVER_NAME"]
    assert env["HTTP_HOST"] == "localhost"


def test_each_request_gets_a_fresh_environ(rules_server):
    # An app that changes or empties its environ, and headers one request sent, must
    # leave nothing behind for the next request of the worker.
    first = env_of(rules_server, "/environ/mutate", {"X-Only-Once": "1", "Host": "localhost"})
    assert first["environ"]["HTTP_X_ONLY_ONCE"] == "1"
    for _ in range(3):
        env = env_of(rules_server, "/environ")["environ"]
        assert "app.mark" not in env
        assert "HTTP_X_ONLY_ONCE" not in env
        assert env["HTTP_HOST"] == "localhost"
        assert env["SCRIPT_NAME"] == ""
        assert env["wsgi.url_scheme"] == "http"
        assert env["wsgi.version"] == [1, 0]
        assert env["REQUEST_METHOD"] == "GET"
        assert env["PATH_INFO"] == "/environ"


def test_query_string_empty_when_absent(rules_server):
    assert env_of(rules_server, "/environ")["environ"]["QUERY_STRING"] == ""


@pytest.mark.parametrize("version", ["HTTP/1.0", "HTTP/1.1"])
def test_server_protocol_as_sent(rules_server, version):
    env = env_of(rules_server, version=version, headers={"Host": "localhost"})["environ"]
    assert env["SERVER_PROTOCOL"] == version


def test_path_info_percent_decoded_then_latin1(rules_server):
    env = env_of(rules_server, "/environ/caf%C3%A9/a%20b")["environ"]
    # UTF-8 bytes c3 a9, each decoded as one latin-1 character: the native-string rule.
    assert env["PATH_INFO"] == "/environ/caf\u00c3\u00a9/a b"
    assert env["PATH_INFO"].encode("latin-1").decode("utf-8") == "/environ/café/a b"


def test_path_info_raw_non_ascii_byte_is_latin1(rules_server):
    with rules_server.raw() as c:
        c.send(b"GET /environ/\xe9t\xe9 HTTP/1.1\r\nHost: x\r\n\r\n")
        r = c.read_response()
    if r.status == 400:
        return  # rejecting raw non-ASCII in the target is allowed by RFC 9112
    assert r.json()["environ"]["PATH_INFO"] == "/environ/\u00e9t\u00e9"


def test_path_info_encoded_slash_decoded(rules_server):
    assert env_of(rules_server, "/environ/a%2Fb")["environ"]["PATH_INFO"] == "/environ/a/b"


def test_query_string_is_raw(rules_server):
    env = env_of(rules_server, "/environ?a=%20b&c=d%26e&caf%C3%A9=+x")["environ"]
    assert env["QUERY_STRING"] == "a=%20b&c=d%26e&caf%C3%A9=+x"


def test_remote_addr_and_port(rules_server):
    with rules_server.raw() as c:
        local_port = c.sock.getsockname()[1]
        c.send(request_bytes("GET", "/environ"))
        env = c.read_response().json()["environ"]
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(local_port)


def test_per_request_values_do_not_carry_over_on_a_connection(rules_server):
    # Each environ copies its connection's template (REMOTE_ADDR/PORT, SERVER_*,
    # url_scheme filled in once): what one request changes there must not reach the
    # next request on the same connection. 127.0.0.1 is a trusted forwarder by default.
    forwarded = [("X-Forwarded-For", "203.0.113.9"), ("X-Forwarded-Proto", "https")]
    with rules_server.raw() as c:
        local_port = c.sock.getsockname()[1]
        envs = []
        for headers in ([], forwarded, [], forwarded, []):
            c.send(request_bytes("GET", "/environ/mutate", headers))
            envs.append(c.read_response().json()["environ"])
    for env, headers in zip(envs, ([], forwarded, [], forwarded, [])):
        # REMOTE_ADDR is the peer's (gunicorn's rule) unless --remote-addr-from-forwarded.
        addr, scheme = ("127.0.0.1", "https") if headers else ("127.0.0.1", "http")
        assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == (addr, scheme), env
        assert env["REMOTE_PORT"] == str(local_port)
        assert env["HTTP_HOST"] == "localhost" and env["SCRIPT_NAME"] == "", env
        assert "app.mark" not in env and env["SERVER_PROTOCOL"] == "HTTP/1.1"


def test_http_header_latin1_byte_survives(rules_server):
    with rules_server.raw() as c:
        c.send(b"GET /environ HTTP/1.1\r\nHost: x\r\nX-Latin: caf\xe9\r\n\r\n")
        env = c.read_response().json()["environ"]
    assert env["HTTP_X_LATIN"] == "caf\u00e9"


def test_repeated_headers_joined_with_comma_space(rules_server):
    env = env_of(rules_server, headers=[("X-Dup", "a"), ("X-Dup", "b"), ("x-dup", "c")])["environ"]
    assert env["HTTP_X_DUP"] == "a, b, c"


def test_header_names_with_underscore_dropped(rules_server):
    env = env_of(rules_server, headers=[("X_Foo", "evil")])["environ"]
    assert "HTTP_X_FOO" not in env
    env = env_of(rules_server, headers=[("X-Foo", "good"), ("X_Foo", "evil")])["environ"]
    assert env["HTTP_X_FOO"] == "good"


@pytest.mark.parametrize("http_path", ["own", "hyper-only"])
def test_header_map_refuse_and_dangerous_keep_gunicorns_meaning(start_server, http_path):
    # gunicorn's --header-map: `refuse` answers a request with a `_` name 400 (and
    # logs it as a malformed request), `dangerous` maps it and joins colliding values.
    extra = ["--hyper-only"] if http_path == "hyper-only" else []
    refuse = start_server("apps.wsgi_rules:application", "--header-map", "refuse", *extra)
    with refuse.raw() as c:
        c.send(request_bytes("GET", "/environ", [("X-Foo", "good"), ("X_Foo", "evil")]))
        r = c.read_response()
        assert r.status == 400 and b"--header-map refuse" in r.body, r.body
        assert c.is_closed()
    text = refuse.wait_for_log("malformed request refused")
    line = next(l for l in text.splitlines() if "malformed request refused" in l)
    assert "WARN" in line and "x_foo" in line and "127.0.0.1:" in line, line
    assert env_of(refuse, headers=[("X-Foo", "good")])["environ"]["HTTP_X_FOO"] == "good"

    dangerous = start_server("apps.wsgi_rules:application", "--header-map", "dangerous", *extra)
    env = env_of(dangerous, headers=[("X-Foo", "good"), ("X_Foo", "evil")])["environ"]
    assert env["HTTP_X_FOO"] == "good, evil"
    env = env_of(dangerous, headers=[("X_Only", "v"), ("X-Other", "w")])["environ"]
    assert (env["HTTP_X_ONLY"], env["HTTP_X_OTHER"]) == ("v", "w")
    assert "malformed request refused" not in dangerous.logs()


def test_header_names_upper_cased_with_underscores(rules_server):
    env = env_of(rules_server, headers=[("x-mixed-Case-Name", "v")])["environ"]
    assert env["HTTP_X_MIXED_CASE_NAME"] == "v"


def test_content_type_and_length_without_http_prefix(rules_server):
    env = env_of(rules_server, method="POST", headers={"Content-Type": "text/x-test"}, body=b"12345")["environ"]
    assert env["CONTENT_TYPE"] == "text/x-test"
    assert env["CONTENT_LENGTH"] == "5"
    assert "HTTP_CONTENT_TYPE" not in env
    assert "HTTP_CONTENT_LENGTH" not in env


def test_wsgi_keys(rules_server):
    d = env_of(rules_server)
    env = d["environ"]
    assert env["wsgi.version"] == [1, 0]
    assert d["types"]["wsgi.version"] == "tuple"
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.run_once"] is False
    assert d["file_wrapper_callable"] is True
    assert d["input_methods"] == ["read", "readline", "readlines", "__iter__"]
    assert d["errors_methods"] == ["write", "writelines", "flush"]


def test_wsgi_errors_reaches_server_log(rules_server):
    marker = f"m{time.time_ns()}"
    assert exchange(rules_server, "GET", f"/errors?marker={marker}").status == 200
    rules_server.wait_for_log(f"wsgi-errors-write {marker}", timeout=5)
    rules_server.wait_for_log(f"wsgi-errors-writelines {marker}", timeout=5)


def test_multithread_tells_the_truth(rules_server):
    # rules_server runs with --threads 4, and with --threads 1 (requests inline).
    threads = int(rules_server.args[rules_server.args.index("--threads") + 1])
    env = env_of(rules_server)["environ"]
    assert env["wsgi.multithread"] is (threads > 1)
    assert env["wsgi.multiprocess"] is False


def test_multithread_false_with_one_thread(start_server):
    srv = start_server("apps.wsgi_rules:application", "--threads", "1")
    env = env_of(srv)["environ"]
    assert env["wsgi.multithread"] is False
    assert env["wsgi.multiprocess"] is False


def test_multiprocess_true_with_workers(start_server):
    srv = start_server("apps.wsgi_rules:application", "--workers", "2", "--threads", "1")
    env = env_of(srv)["environ"]
    assert env["wsgi.multiprocess"] is True
    assert env["wsgi.multithread"] is False


def test_rwsgi_queue_keys_present(rules_server):
    d = env_of(rules_server)
    assert "rwsgi.server_wait" in d["environ"]
    assert "rwsgi.queue_time" in d["environ"]
    sw = d["environ"]["rwsgi.server_wait"]
    assert isinstance(sw, float) and 0 <= sw < 5


def test_rwsgi_queue_time_from_header(start_server):
    srv = start_server("apps.wsgi_rules:application", "--queue-header", "X-RequestTime")
    stamp = time.time() - 1.5
    env = env_of(srv, headers={"X-RequestTime": f"{stamp:.3f}"})["environ"]
    qt = env["rwsgi.queue_time"]
    assert isinstance(qt, float), f"rwsgi.queue_time = {qt!r}"
    assert 1.3 <= qt <= 3.5, qt


def test_environ_is_fresh_per_request(rules_server):
    a = env_of(rules_server, headers={"X-Once": "1"})["environ"]
    b = env_of(rules_server)["environ"]
    assert a["HTTP_X_ONCE"] == "1"
    assert "HTTP_X_ONCE" not in b
