"""Platform detection (issue 13): on Heroku, Render, Fly, Cloud Run, ECS and Railway the
router is not on localhost. Detection sets the stamp header and the trusted peers that
nobody set, says so in one start-up line, and never overrides an explicit option.

The router is played by a client bound to 127.0.0.2: a loopback address outside the
default trusted set (127.0.0.1, ::1), so without detection its stamp is untrusted."""

import http.client
import json
import time

APP = "apps.wsgi_rules:application"


def environ_from(srv, headers: dict, source: str = "127.0.0.2") -> dict:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", "/environ", headers=headers)
        resp = conn.getresponse()
        assert resp.status == 200
        return json.loads(resp.read())["environ"]
    finally:
        conn.close()


def heroku_headers(ago: float) -> dict:
    # Heroku's router: X-Request-Start in integer milliseconds since the epoch.
    return {"X-Request-Start": str(int((time.time() - ago) * 1000)),
            "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}


def test_heroku_router_stamps_and_forwarded_headers_are_trusted(start_server):
    srv = start_server(APP, env={"DYNO": "web.1"})
    env = environ_from(srv, heroku_headers(0.25))
    assert 0.24 <= env["rwsgi.queue_time"] < 1.0, env.get("rwsgi.queue_time")
    # Forwarded headers are trusted (the scheme is the router's); REMOTE_ADDR stays
    # the peer's, as in gunicorn, unless --remote-addr-from-forwarded.
    assert env["wsgi.url_scheme"] == "https"
    assert env["REMOTE_ADDR"] == "127.0.0.2"
    lines = [l for l in srv.stderr_text().splitlines() if "Platform:" in l]
    assert len(lines) == 1 and "Platform: Heroku (DYNO is set)" in lines[0], lines
    assert "X-Request-Start (milliseconds)" in lines[0]


def test_without_a_platform_the_same_router_is_untrusted(start_server):
    srv = start_server(APP, "--queue-header", "X-Request-Start")
    env = environ_from(srv, heroku_headers(0.25))
    assert env.get("rwsgi.queue_time") is None, env.get("rwsgi.queue_time")
    assert env["REMOTE_ADDR"] == "127.0.0.2"
    assert env["wsgi.url_scheme"] == "http", "the router's X-Forwarded-Proto is not trusted"
    assert "Platform:" not in srv.stderr_text()


def test_explicit_options_win_over_detection(start_server):
    srv = start_server(APP, "--queue-header-trusted-from", "127.0.0.1",
                       env={"DYNO": "web.1", "RWSGI_FORWARDED_ALLOW_IPS": "127.0.0.1"})
    env = environ_from(srv, heroku_headers(0.25))
    assert env.get("rwsgi.queue_time") is None, "the explicit trusted set excludes 127.0.0.2"
    assert env["REMOTE_ADDR"] == "127.0.0.2"
    line = next(l for l in srv.stderr_text().splitlines() if "Platform:" in l)
    assert "--queue-header-trusted-from from the command line" in line, line
    assert "--forwarded-allow-ips from RWSGI_FORWARDED_ALLOW_IPS" in line, line
    # The header itself still comes from detection.
    env = environ_from(srv, heroku_headers(0.25), source="127.0.0.1")
    assert 0.24 <= env["rwsgi.queue_time"] < 1.0


def test_cloud_run_has_no_stamp_but_trusts_forwarded_headers(start_server):
    srv = start_server(APP, env={"K_SERVICE": "web"})
    env = environ_from(srv, heroku_headers(0.25))
    assert env.get("rwsgi.queue_time") is None, "no header configured: nothing to read"
    assert env["wsgi.url_scheme"] == "https"
    assert isinstance(env["rwsgi.server_wait"], float)
    line = next(l for l in srv.stderr_text().splitlines() if "Platform:" in l)
    assert "Platform: Cloud Run (K_SERVICE is set)" in line and "server_wait" in line, line


# ---------------------------------------------------------------------------
# --set-request-start: X-Request-Start for APM agents
# ---------------------------------------------------------------------------


def request_start(env: dict) -> float | None:
    raw = env.get("HTTP_X_REQUEST_START")
    if raw is None:
        return None
    assert raw.startswith("t=") and raw[2:].isdigit(), raw
    return int(raw[2:]) / 1e6


def test_set_request_start_from_the_kernel_arrival_without_a_stamp(start_server):
    srv = start_server(APP, "--set-request-start")
    before = time.time()
    env = environ_from(srv, {}, source="127.0.0.1")
    after = time.time()
    start = request_start(env)
    assert start is not None and before - 0.005 <= start <= after, (before, start, after)
    # It is the arrival: the app's wait since then is rwsgi.server_wait.
    assert env["rwsgi.server_wait"] >= 0


def test_set_request_start_uses_the_trusted_proxy_stamp(start_server):
    srv = start_server(APP, "--set-request-start", "--queue-header", "X-RequestTime")
    stamp = time.time() - 0.3
    env = environ_from(srv, {"X-RequestTime": f"{stamp:.3f}"}, source="127.0.0.1")
    start = request_start(env)
    assert start is not None and abs(start - float(f"{stamp:.3f}")) < 0.002, (stamp, start)
    assert 0.29 <= env["rwsgi.queue_time"] < 1.0


def test_set_request_start_keeps_a_header_the_request_brought_and_is_opt_in(start_server):
    srv = start_server(APP, "--set-request-start")
    env = environ_from(srv, {"X-Request-Start": "t=123"}, source="127.0.0.1")
    assert env["HTTP_X_REQUEST_START"] == "t=123"
    plain = start_server(APP)
    assert "HTTP_X_REQUEST_START" not in environ_from(plain, {}, source="127.0.0.1")
