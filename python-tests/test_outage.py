"""Every sink pointed at a dead endpoint at once (CloudWatch endpoint, Azure ingestion
and identity endpoints, Redis, statsd), both refused (nothing listens) and hung
(accepts, never answers): under load no request fails, the latency of sequential
requests is no worse than that of a server without sinks (beyond a generous margin:
the sinks run in the master, off the request path), each sink logs at most one warning
per interval, and TERM still stops the server promptly."""

import re
import statistics
import time

import pytest

from sink_services import HungListener, aws_env, dead_port, drive, sequential_latencies

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
