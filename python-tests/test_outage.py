"""Every sink pointed at a dead endpoint at once (CloudWatch endpoint, Azure ingestion
and identity endpoints, Redis, statsd), both refused (nothing listens) and hung
(accepts, never answers): under load no request fails, the latency of sequential
requests is no worse than that of a server without sinks (beyond a generous margin:
the sinks run in the master, off the request path), each sink logs at most one warning
per interval, and TERM still stops the server promptly.

Then the sinks come back: a CloudWatch endpoint that was black-holed (accepts TCP,
never answers) starts answering, an Azure identity endpoint that answered 500 issues
tokens again. Requests are untouched throughout, and the reports (of the requests served
after the recovery) arrive. Redis killed and restarted: test_redis.py."""

import re
import statistics
import time

import pytest

from sink_services import (HungListener, Switch, aws_env, by_metric, dead_port, drive, poll,
                           sequential_latencies, totals)

APP = "apps.wsgi_rules:application"
INTERVAL = 0.5
RESOURCE = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/app"
DEAD_SINKS = ("cloudwatch", "azure", "redis", "statsd")


@pytest.fixture(params=["refused", "hung"])
def dead(request):
    """Port numbers for the cloudwatch, ingestion, identity and redis endpoints."""
    if request.param == "refused":
        yield [dead_port() for _ in range(4)]
        return
    listeners = [HungListener() for _ in range(4)]
    yield [l.port for l in listeners]
    for l in listeners:
        l.close()


def test_dead_sinks_cost_no_request_and_no_latency(start_server, dead):
    cw, ingest, identity, redis_port = dead
    statsd = dead_port()
    baseline = start_server(APP, "--threads", "2")
    t_start = time.monotonic()
    sinks = start_server(
        APP, "--threads", "2",
        "--notify", ",".join(DEAD_SINKS), "--notify-interval", str(INTERVAL), "--queue-header", "X-RequestTime",
        "--cloudwatch-namespace", "Outage", "--cloudwatch-region", "us-east-1",
        "--cloudwatch-endpoint", f"http://127.0.0.1:{cw}",
        "--azure-region", "westeurope", "--azure-endpoint", f"http://127.0.0.1:{ingest}",
        "--azure-resource-id", RESOURCE,
        "--redis-url", f"redis://:pw@127.0.0.1:{redis_port}/0",
        "--statsd-host", f"127.0.0.1:{statsd}",
        env=aws_env(IDENTITY_ENDPOINT=f"http://127.0.0.1:{identity}/msi/token", IDENTITY_HEADER="h",
                    AZURE_TENANT_ID=None, AZURE_CLIENT_ID=None, AZURE_CLIENT_SECRET=None,
                    AZURE_FEDERATED_TOKEN_FILE=None),
    )

    # Under concurrent load, while every sink fails at every interval.
    load = drive(sinks, 300, concurrency=8, path="/sleep?s=0.001")
    assert load.failures == [] and load.ok == 300

    # Sequential latency, interleaved with the baseline so background load on the
    # machine hits both alike, over at least 4 intervals of failing sends.
    for srv in (baseline, sinks):
        sequential_latencies(srv, 30, path="/hello")  # warm-up
    base, with_dead = [], []
    t_measure = time.monotonic()
    while len(base) < 300 or time.monotonic() - t_measure < 4 * INTERVAL:
        base += sequential_latencies(baseline, 50, path="/hello")
        with_dead += sequential_latencies(sinks, 50, path="/hello")
    m_base, m_dead = statistics.median(base), statistics.median(with_dead)
    print(f"median {m_dead * 1e3:.3f} ms with dead sinks, {m_base * 1e3:.3f} ms without")
    assert m_dead <= 1.5 * m_base + 0.005, \
        f"median {m_dead * 1e3:.2f} ms with dead sinks vs {m_base * 1e3:.2f} ms without"

    t_term = time.monotonic()
    sinks.stop()
    stopped_in = time.monotonic() - t_term
    elapsed = time.monotonic() - t_start
    assert sinks.returncode == 0
    assert stopped_in < 8, f"TERM took {stopped_in:.1f}s with dead sinks"
    lines = sinks.logs().splitlines()
    allowed = elapsed / INTERVAL + 2
    for name in DEAD_SINKS:
        warned = [l for l in lines if " WARN " in l and re.search(rf'sink="?{name}\b', l)]
        assert len(warned) <= allowed, f"{name}: {len(warned)} warnings in {elapsed:.1f}s"
        if name != "statsd":  # UDP to a closed port may go unnoticed
            assert warned, f"{name}: no warning although its endpoint is dead"


def serve_while(srv, seconds: float) -> int:
    """Keeps load on srv for a while; asserts no request failed; returns how many."""
    sent, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < seconds:
        load = drive(srv, 20, concurrency=4, path="/hello")
        assert load.failures == [], load.failures[:3]
        sent += load.ok
    return sent


def test_cloudwatch_black_hole_then_back(start_server, cw_adapter):
    ns = f"rwsgi-test/outage/{time.monotonic_ns()}"
    switch = Switch()
    try:
        srv = start_server(
            APP, "--threads", "2", "--notify", "cloudwatch", "--cloudwatch-namespace", ns,
            "--cloudwatch-region", "us-east-1", "--cloudwatch-endpoint", f"http://127.0.0.1:{switch.port}",
            "--notify-interval", str(INTERVAL), env=aws_env(),
        )
        before = serve_while(srv, 3.0)
        poll(lambda: re.search(r"WARN .*sink=\"?cloudwatch", srv.logs()), 15, what="a warning about CloudWatch")
        assert cw_adapter.requests(ns) == []

        switch.forward_to(cw_adapter.port)
        back = time.monotonic()
        after = serve_while(srv, 1.0)
        assert after > 0

        def counted():
            return sum(d["Value"] for d in cw_adapter.datums(ns, "RequestCount"))

        # Every request served since the endpoint came back is reported; reports of
        # the black-holed intervals may arrive too, late, but nothing twice.
        poll(lambda: counted() >= after, 20, what=f"RequestCount >= {after} after CloudWatch came back")
        assert counted() <= before + after
        print(f"reports resumed {time.monotonic() - back:.1f}s after the endpoint came back")
    finally:
        switch.close()


def test_azure_token_500_then_back(start_server, azure_fake):
    fake = azure_fake()
    fake.configure(token_status=500)
    srv = start_server(APP, "--threads", "2", "--notify", "azure", "--azure-region", "westeurope",
                       "--azure-endpoint", fake.url, "--azure-resource-id", RESOURCE,
                       "--notify-interval", str(INTERVAL), "--queue-header", "X-RequestTime", env=fake.env())
    t0 = time.monotonic()
    served = serve_while(srv, 3.0)
    poll(lambda: fake.state()["token_failures"] >= 2, 10, what="two refused token requests")
    poll(lambda: "token endpoint answered HTTP 500" in srv.logs(), 10, what="the 500 in the log")
    elapsed = time.monotonic() - t0
    warned = [l for l in srv.logs().splitlines() if " WARN " in l and "azure" in l]
    assert len(warned) <= elapsed / INTERVAL + 2, f"{len(warned)} warnings in {elapsed:.1f}s"
    assert fake.received() == []

    fake.configure(token_status=None)
    after = serve_while(srv, 1.0)
    # The requests served after the recovery all reach Azure (the ones served while no
    # token could be had may arrive too, if the sink kept them).
    poll(lambda: totals(by_metric(fake.received())["RequestCount"])["sum"] >= after, 20,
         what=f"RequestCount >= {after} after the identity endpoint recovered")
    assert totals(by_metric(fake.received())["RequestCount"])["sum"] <= served + after
    assert fake.rejected() == []
