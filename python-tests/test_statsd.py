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
