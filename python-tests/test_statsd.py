"""The statsd sink (issue 4): each interval's report arrives as UDP datagrams on a socket
the test opens, with the metric names, types, sample rates and DogStatsD tags a statsd
server or a Datadog agent expects, and counts that add up to the requests sent.

Line format: `NAME:VALUE|TYPE[|@RATE][|#k:v,...]`. Timers are `ms` for plain statsd and
`d` (distribution) once tags are given; a line with `@RATE` stands for 1/RATE samples.
"""

import re
import socket
import time

import pytest
import requests

APP = "apps.queue_app:application"
HEADER = "X-RequestTime"
TIMEOUT = 15
MAX_DATAGRAM = 1432

LINE = re.compile(
    r"^(?P<name>[A-Za-z0-9_.]+):(?P<value>-?[0-9.]+(?:e-?[0-9]+)?)\|(?P<type>ms|d|g|c)"
    r"(?:\|@(?P<rate>[0-9.]+(?:e-?[0-9]+)?))?(?:\|#(?P<tags>[^|]+))?$")


@pytest.fixture
def udp():
    """A UDP socket on a free loopback port, standing in for the statsd server."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(0.25)
    yield s
    s.close()


def receive(sock, until, timeout: float) -> list:
    """Datagrams until ``until(lines)`` holds or ``timeout`` passes."""
    datagrams = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except socket.timeout:
            continue
        datagrams.append(data.decode())
        if until(parse(datagrams)):
            break
    return datagrams


def parse(datagrams: list) -> list:
    out = []
    for d in datagrams:
        for line in d.split("\n"):
            m = LINE.match(line)
            assert m, f"not a statsd line: {line!r}"
            out.append(m.groupdict())
    return out


def counter(lines, name) -> float:
    return sum(float(l["value"]) for l in lines if l["name"] == name and l["type"] == "c")


def samples(lines, name) -> list:
    """(value in ms, how many samples the line stands for) of one timer."""
    return [(float(l["value"]), round(1 / float(l["rate"])) if l["rate"] else 1)
            for l in lines if l["name"] == name]


@pytest.mark.parametrize("tagged", [True, False], ids=["dogstatsd-tags", "plain-statsd"])
def test_statsd_packets_arrive_with_names_types_and_tags(start_server, udp, tagged):
    port = udp.getsockname()[1]
    prefix = "myapp" if tagged else "rwsgi"
    args = ["--queue-header", HEADER, "--notify", "statsd", "--statsd-host", f"127.0.0.1:{port}",
            "--notify-interval", "1"]
    if tagged:
        args += ["--statsd-prefix", "myapp", "--statsd-tag", "env:test", "--statsd-tag", "team:web"]
    srv = start_server(APP, *args)

    s = requests.Session()
    for _ in range(3):
        r = s.get(srv.url + "/queue", headers={HEADER: f"{time.time() - 0.25:.3f}"}, timeout=TIMEOUT)
        assert r.status_code == 200
    for headers in ({}, {}, {HEADER: "garbage"}):
        assert s.get(srv.url + "/", headers=headers, timeout=TIMEOUT).status_code == 200
    sent = 6

    def complete(lines):
        return counter(lines, f"{prefix}.requests.2xx") >= sent

    datagrams = receive(udp, complete, timeout=15)
    assert complete(parse(datagrams)), datagrams
    # One more interval: nothing is counted twice, and every interval reports.
    datagrams += receive(udp, lambda lines: False, timeout=1.5)
    assert all(len(d.encode()) <= MAX_DATAGRAM for d in datagrams)
    lines = parse(datagrams)

    timer = "d" if tagged else "ms"
    # gunicorn's own names (test_gunicorns_own_metrics_…) ride along; the tags too.
    gunicorn_names = [l for l in lines if "gunicorn." in l["name"]]
    assert gunicorn_names
    for l in gunicorn_names:
        assert l["tags"] == ("env:test,team:web" if tagged else None), l
    lines = [l for l in lines if l not in gunicorn_names]
    for l in lines:
        assert l["name"].startswith(prefix + "."), l
        if tagged:
            assert l["tags"] == "env:test,team:web", l
        else:
            assert l["tags"] is None, l
        if l["name"].rsplit(".", 1)[-1] in ("queue_time", "server_wait", "app_time"):
            assert l["type"] == timer, l

    names = {l["name"] for l in lines}
    expected = {f"{prefix}.{n}" for n in (
        "queue_time", "server_wait", "app_time", "utilization", "workers", "shed",
        "requests.1xx", "requests.2xx", "requests.3xx", "requests.4xx", "requests.5xx",
        "queue_stamps.ok", "queue_stamps.missing", "queue_stamps.invalid",
        "queue_stamps.future", "queue_stamps.untrusted")}
    assert expected <= names, expected - names

    assert counter(lines, f"{prefix}.requests.2xx") == sent
    assert counter(lines, f"{prefix}.requests.5xx") == 0
    assert counter(lines, f"{prefix}.queue_stamps.ok") == 3
    assert counter(lines, f"{prefix}.queue_stamps.missing") == 2
    assert counter(lines, f"{prefix}.queue_stamps.invalid") == 1
    assert counter(lines, f"{prefix}.shed") == 0

    queue = samples(lines, f"{prefix}.queue_time")
    assert sum(n for _, n in queue) == 3, queue
    assert all(240 <= ms <= 1500 for ms, _ in queue), queue  # stamped 250 ms ago, in ms
    assert sum(n for _, n in samples(lines, f"{prefix}.server_wait")) == sent
    assert sum(n for _, n in samples(lines, f"{prefix}.app_time")) == sent

    gauges = {l["name"]: float(l["value"]) for l in lines if l["type"] == "g"}
    assert gauges[f"{prefix}.workers"] == 1
    assert 0 <= gauges[f"{prefix}.utilization"] <= 1
    for l in lines:
        if l["type"] == "g":
            assert l["name"] in (f"{prefix}.workers", f"{prefix}.utilization"), l


@pytest.mark.parametrize("prefix", [None, "shop"])
def test_gunicorns_own_metrics_arrive_under_gunicorns_names(start_server, udp, prefix):
    """Dashboards built on gunicorn's statsd metrics keep working: gunicorn.requests,
    gunicorn.request.status.CODE, gunicorn.request.duration and gunicorn.workers,
    prefixed only by a --statsd-prefix the user gave (gunicorn's default is none)."""
    port = udp.getsockname()[1]
    args = ["--notify", "statsd", "--statsd-host", f"127.0.0.1:{port}",
            "--notify-interval", "1", "-w", "2"]
    if prefix:
        args += ["--statsd-prefix", prefix]
    srv = start_server("apps.status_app:application", *args)
    sent = {200: 3, 201: 1, 404: 2, 500: 1}
    for code, n in sent.items():
        for _ in range(n):
            assert requests.get(f"{srv.url}/status/{code}", timeout=10).status_code == code
    g = f"{prefix}.gunicorn" if prefix else "gunicorn"
    total = sum(sent.values())
    datagrams = receive(udp, lambda ls: counter(ls, f"{g}.requests") >= total, TIMEOUT)
    lines = parse(datagrams)
    assert counter(lines, f"{g}.requests") == total
    for code, n in sent.items():
        assert counter(lines, f"{g}.request.status.{code}") == n, code
    seen = {l["name"] for l in lines if l["name"].startswith(f"{g}.request.status.")}
    assert seen == {f"{g}.request.status.{c}" for c in sent}
    durations = samples(lines, f"{g}.request.duration")
    assert sum(n for _, n in durations) == total
    assert all(l["type"] == "ms" for l in lines if l["name"] == f"{g}.request.duration")
    workers = [float(l["value"]) for l in lines if l["name"] == f"{g}.workers"]
    assert workers and workers[-1] == 2 and all(l["type"] == "g" for l in lines
                                                  if l["name"] == f"{g}.workers")
    # rwsgi's own metrics are still there, under its prefix.
    own = prefix or "rwsgi"
    assert any(l["name"] == f"{own}.app_time" for l in lines)


HOOK_LOG_CONF = '''
def pre_request(worker, req):
    if req.path == "/hook-log":
        worker.log.error("hook error line")
        worker.log.critical("hook critical line")
'''


def test_gunicorns_log_counters_count_the_servers_own_lines(start_server, udp, tmp_path):
    """gunicorn.log.warning/error/critical/exception: gunicorn's statsd logger counts its
    own log lines by level; rwsgi counts its WARN/ERROR lines from the master and every
    worker the same way. A malformed request is a warning, an app that raises an
    exception, a worker killed for --timeout critical (gunicorn's WORKER TIMEOUT), a
    hook's worker.log.error/critical the same levels; the app's wsgi.errors writes are
    not counted (gunicorn writes them to the stream, not through its logger)."""
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(HOOK_LOG_CONF)
    port = udp.getsockname()[1]
    srv = start_server("apps.wsgi_rules:application", "-c", str(conf), "--notify", "statsd",
                       "--statsd-host", f"127.0.0.1:{port}", "--notify-interval", "1",
                       "-w", "2", "--timeout", "2")
    for i in range(3):
        assert requests.get(f"{srv.url}/raise?marker=m{i}", timeout=TIMEOUT).status_code == 500
    assert requests.get(f"{srv.url}/errors?marker=not-counted", timeout=TIMEOUT).status_code == 200
    assert requests.get(f"{srv.url}/hook-log", timeout=TIMEOUT).status_code == 404
    for _ in range(2):
        with srv.raw() as c:
            c.send(b"GET / HTTP/1.1\r\n\r\n")  # no Host: refused, one WARN line
            assert c.read_response().status == 400
    with pytest.raises(requests.RequestException):
        requests.get(f"{srv.url}/sleep?s=8", timeout=TIMEOUT)  # aborted after 2 s
    srv.wait_for_log("WORKER TIMEOUT", timeout=10)

    want = {"critical": 2, "error": 1, "exception": 3}

    def settled(lines):
        return all(counter(lines, f"gunicorn.log.{k}") >= n for k, n in want.items())

    datagrams = receive(udp, settled, timeout=20)
    datagrams += receive(udp, lambda lines: False, timeout=2.5)  # nothing counted twice
    lines = parse(datagrams)
    for level, n in want.items():
        assert counter(lines, f"gunicorn.log.{level}") == n, (level, lines)
    log = srv.stderr_text()
    warn_lines = [l for l in log.splitlines() if " WARN " in l]
    assert len(warn_lines) >= 2 and counter(lines, "gunicorn.log.warning") == len(warn_lines), warn_lines
    assert all(l["type"] == "c" for l in lines if l["name"].startswith("gunicorn.log."))
    assert "wsgi-errors-write not-counted" in log
