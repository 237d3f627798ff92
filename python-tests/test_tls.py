"""TLS with gunicorn's settings (--certfile/--keyfile/--ca-certs/--cert-reqs), on the
own HTTP/1.1 path and on hyper (--hyper-only), with real clients (requests,
http.client, ssl) and a CA made for the test (pki.py)."""

from __future__ import annotations

import http.client
import socket
import ssl

import pytest
import requests

import pki as pki_mod

APP = "apps.wsgi_rules:application"
PATHS = {"own": (), "hyper": ("--hyper-only",)}


@pytest.fixture(autouse=True)
def no_ca_bundle_from_env(monkeypatch):
    # requests lets $REQUESTS_CA_BUNDLE win over a Session's `verify`.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return pki_mod.make(tmp_path_factory.mktemp("pki"))


def tls_args(p, *more):
    return ("--certfile", str(p.cert), "--keyfile", str(p.key), *more)


def https(srv) -> str:
    return f"https://127.0.0.1:{srv.port}"


def client_ctx(p, cert=None, key=None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(p.ca))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


@pytest.mark.parametrize("path", PATHS)
def test_https_get_post_and_environ(start_server, pki, path):
    srv = start_server(APP, *tls_args(pki), *PATHS[path])
    with requests.Session() as s:
        s.verify = str(pki.ca)
        env = s.get(https(srv) + "/environ").json()["environ"]
        assert env["wsgi.url_scheme"] == "https"
        assert env["SERVER_PORT"] == str(srv.port)
        assert env["REMOTE_ADDR"] == "127.0.0.1"
        # gunicorn sets no HTTPS key; neither does rwsgi.
        assert "HTTPS" not in env
        body = b"x" * 100_000  # larger than the own path's whole-body limit too
        r = s.post(https(srv) + "/echo", data=body)
        assert r.status_code == 200 and r.content == body
        r = s.post(https(srv) + "/echo", data=b"small")
        assert r.content == b"small"


@pytest.mark.parametrize("path", PATHS)
def test_keep_alive_serves_many_requests_on_one_tls_connection(start_server, pki, path):
    srv = start_server(APP, *tls_args(pki), *PATHS[path])
    conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=client_ctx(pki), timeout=10)
    conn.connect()
    local_port = conn.sock.getsockname()[1]
    for _ in range(5):
        conn.request("GET", "/environ")
        r = conn.getresponse()
        env = __import__("json").loads(r.read())["environ"]
        assert r.status == 200
        assert env["REMOTE_PORT"] == str(local_port), "a new connection was opened"
        assert env["wsgi.url_scheme"] == "https"
    conn.close()


def test_plain_http_to_a_tls_port_is_not_served(start_server, pki):
    srv = start_server(APP, *tls_args(pki))
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        try:
            while chunk := s.recv(4096):
                got += chunk
        except OSError:
            pass
    assert b"hello world" not in got


def test_trusted_proxy_can_say_the_client_used_http(start_server, pki):
    # X-Forwarded-Proto from a --forwarded-allow-ips peer still decides, as in gunicorn.
    srv = start_server(APP, *tls_args(pki))
    r = requests.get(https(srv) + "/environ", verify=str(pki.ca),
                     headers={"X-Forwarded-Proto": "http"})
    assert r.json()["environ"]["wsgi.url_scheme"] == "http"


@pytest.mark.parametrize("path", PATHS)
def test_client_certificate_required(start_server, pki, path):
    srv = start_server(APP, *tls_args(pki, "--ca-certs", str(pki.ca), "--cert-reqs", "2"),
                       *PATHS[path])
    ok = requests.get(https(srv) + "/hello", verify=str(pki.ca),
                      cert=(str(pki.client_cert), str(pki.client_key)))
    assert ok.status_code == 200 and ok.text == "hello world"
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(https(srv) + "/hello", verify=str(pki.ca), timeout=10)
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(https(srv) + "/hello", verify=str(pki.ca), timeout=10,
                     cert=(str(pki.stranger_cert), str(pki.stranger_key)))
    # Still serving after the refusals.
    again = requests.get(https(srv) + "/hello", verify=str(pki.ca),
                         cert=(str(pki.client_cert), str(pki.client_key)))
    assert again.status_code == 200


def test_client_certificate_optional(start_server, pki):
    srv = start_server(APP, *tls_args(pki, "--ca-certs", str(pki.ca), "--cert-reqs", "1"))
    assert requests.get(https(srv) + "/hello", verify=str(pki.ca)).status_code == 200
    assert requests.get(https(srv) + "/hello", verify=str(pki.ca),
                        cert=(str(pki.client_cert), str(pki.client_key))).status_code == 200
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(https(srv) + "/hello", verify=str(pki.ca), timeout=10,
                     cert=(str(pki.stranger_cert), str(pki.stranger_key)))


def test_tls_settings_from_a_gunicorn_config_file(start_server, pki, tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(f"certfile = {str(pki.cert)!r}\nkeyfile = {str(pki.key)!r}\n"
                    f"ca_certs = {str(pki.ca)!r}\ncert_reqs = 2\n")
    srv = start_server(APP, "-c", str(conf))
    r = requests.get(https(srv) + "/environ", verify=str(pki.ca),
                     cert=(str(pki.client_cert), str(pki.client_key)))
    assert r.json()["environ"]["wsgi.url_scheme"] == "https"
    assert "no effect" not in srv.stderr_text()


def _refused(rwsgi_bin, tmp_path, *args):
    from conftest import launch, ServerStartError
    with pytest.raises(ServerStartError) as e:
        launch(rwsgi_bin, APP, list(args), tmp_path / "rwsgi", ready_timeout=20)
    return str(e.value)


@pytest.mark.parametrize("case", ["missing_cert", "garbage_cert", "missing_key", "key_mismatch",
                                  "no_keyfile", "cert_reqs_without_ca", "old_ssl_version"])
def test_misconfiguration_fails_at_start_naming_the_setting(rwsgi_bin, tmp_path, pki, case):
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    args, needle = {
        "missing_cert": (("--certfile", str(tmp_path / "nope.pem"), "--keyfile", str(pki.key)),
                         "--certfile"),
        "garbage_cert": (("--certfile", str(garbage), "--keyfile", str(pki.key)), "--certfile"),
        "missing_key": (("--certfile", str(pki.cert), "--keyfile", str(tmp_path / "nope.key")),
                        "--keyfile"),
        "key_mismatch": (("--certfile", str(pki.cert), "--keyfile", str(pki.other_key)),
                         "--keyfile"),
        "no_keyfile": (("--certfile", str(pki.cert)), "--keyfile"),
        "cert_reqs_without_ca": (tls_args(pki, "--cert-reqs", "2"), "--ca-certs"),
        "old_ssl_version": (tls_args(pki, "--ssl-version", "TLSv1"), "--ssl-version"),
    }[case]
    msg = _refused(rwsgi_bin, tmp_path, *args)
    assert needle in msg, msg
    assert "panick" not in msg


def test_other_ssl_settings_are_accepted_with_a_reason(start_server, pki):
    srv = start_server(APP, *tls_args(pki, "--ssl-version", "TLSv1_2", "--ciphers", "ECDHE+AESGCM",
                                      "--do-handshake-on-connect", "--suppress-ragged-eofs"))
    ctx = client_ctx(pki)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.version() == "TLSv1.2"
    err = srv.stderr_text()
    assert "--ciphers" in err and "rustls" in err
    assert "--do-handshake-on-connect" in err


def test_server_wait_counts_the_time_a_tls_request_sat_in_the_socket(start_server, pki):
    # As test_inline.py's plain-HTTP test: /slow?0.4 runs inline and holds the IO
    # thread; a request sent meanwhile on an open TLS connection waits, unread, in the
    # kernel's buffer. Its server_wait counts that wait: the arrival stamp comes from
    # the TCP reads below rustls.
    import concurrent.futures
    import json
    import time

    srv = start_server("apps.inline_app:application", "--threads", "1", *tls_args(pki))
    s = requests.Session()
    s.verify = str(pki.ca)

    def until_inline(path):
        for _ in range(200):
            if s.get(https(srv) + path).json()["where"] == "io":
                return
        raise AssertionError(f"{path} never ran on the IO thread")

    def slow():
        return requests.get(https(srv) + "/slow?0.4", verify=str(pki.ca), timeout=10).json()

    for _ in range(4):
        until_inline("/slow?0")
        until_inline("/where")
        conn = http.client.HTTPSConnection("127.0.0.1", srv.port, context=client_ctx(pki),
                                           timeout=10)
        conn.request("GET", "/where")
        conn.getresponse().read()  # handshake done, connection idle
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            blocker = pool.submit(slow)
            time.sleep(0.1)
            t0 = time.monotonic()
            conn.request("GET", "/where")
            waiter = json.loads(conn.getresponse().read())
            took = time.monotonic() - t0
            where = blocker.result()["where"]
        conn.close()
        if where == "io":
            break
    assert where == "io", "/slow?0.4 never ran on the IO thread"
    assert took >= 0.2, took
    assert waiter["server_wait"] >= took - 0.1, (waiter, took)
    assert waiter["server_wait"] <= took + 0.05, (waiter, took)
