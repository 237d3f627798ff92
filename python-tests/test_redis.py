"""`--notify redis` end to end against a real redis-server that wants a password:
the hash `{prefix}:{hostname}` (count, avg, p50, p90, p99, max, utilization, timestamp),
its TTL of 3 × the interval, the history list capped at ceil(--redis-history / interval)
entries, newest first; the password never reaches rwsgi's logs. Redis stopped mid-run
(shut down, or SIGKILLed) costs no request, and reporting resumes once it is back on the
same port."""

import json
import math
import socket
import time
import uuid

import pytest

from sink_services import REDIS_PASSWORD, drive, poll

APP = "apps.wsgi_rules:application"
HASH_FIELDS = ("count", "avg", "p50", "p90", "p99", "max", "utilization", "timestamp")


def redis_args(redis_server, prefix, interval, history=None):
    args = ["--notify", "redis", "--redis-url", redis_server.url, "--redis-key-prefix", prefix,
            "--notify-interval", str(interval), "--queue-header", "X-RequestTime"]
    if history is not None:
        args += ["--redis-history", str(history)]
    return args


def test_hash_ttl_and_capped_history(start_server, redis_server):
    prefix = f"qt-{uuid.uuid4().hex[:8]}"
    interval, history = 0.5, 1.8
    cap = math.ceil(history / interval)  # 4
    srv = start_server(APP, "--workers", "2", *redis_args(redis_server, prefix, interval, history))
    r = redis_server.client()
    host = socket.gethostname()
    hash_key, history_key = f"{prefix}:{host}", f"{prefix}:{host}:history"

    load = drive(srv, 80, concurrency=6, path="/sleep?s=0.002")
    assert load.failures == []

    # Collect every interval's history entry (by timestamp) until all 80 samples
    # show up, and keep a hash seen with samples in it.
    entries, busy_hash = {}, {}

    def collect():
        for raw in r.lrange(history_key, 0, -1):
            e = json.loads(raw)
            entries[e["t"]] = e
        h = r.hgetall(hash_key)
        if h and int(h["count"]) > 0:
            busy_hash.update(h)
        return sum(e["n"] for e in entries.values()) == 80 and busy_hash

    poll(collect, 15, interval=0.05, what="history entries adding up to 80 queue-time samples")
    h = busy_hash
    for f in HASH_FIELDS:
        assert f in h, f"hash field {f} missing: {h}"
        float(h[f])
    assert 0 <= float(h["p50"]) <= float(h["p90"]) <= float(h["p99"]) <= float(h["max"])
    assert float(h["max"]) <= max(load.stamp_to_response)
    assert 0 < float(h["avg"]) <= float(h["max"])
    assert 0 <= float(h["utilization"]) <= 1
    assert abs(float(h["timestamp"]) - time.time()) < 10
    # The hash is the latest interval; its history entry says the same.
    same = entries.get(float(h["timestamp"]))
    assert same is not None and same["n"] == int(h["count"]), (h, sorted(entries))

    # TTL: three intervals, renewed at every write.
    ttl_ms = interval * 3 * 1000
    # (Rewritten every interval, so never below ttl - interval unless a write is late.)
    assert 0.4 * ttl_ms < r.pttl(hash_key) <= ttl_ms
    assert 0.4 * ttl_ms < r.pttl(history_key) <= ttl_ms
    assert set(r.keys(f"{prefix}:*")) == {hash_key, history_key}

    # The history never grows past the cap, and stays ordered newest first.
    poll(lambda: r.llen(history_key) == cap, 10, what=f"history to reach {cap} entries")
    time.sleep(interval * 3)
    assert r.llen(history_key) == cap
    stamps = [json.loads(x)["t"] for x in r.lrange(history_key, 0, -1)]
    assert stamps == sorted(stamps, reverse=True) and len(set(stamps)) == cap

    logs = srv.logs()
    assert REDIS_PASSWORD not in logs
    assert f"redis://:***@127.0.0.1:{redis_server.port}" in logs, "the startup line shows the masked URL"

    # A host that stops reporting disappears after its TTL.
    srv.stop()
    poll(lambda: not r.exists(hash_key, history_key), ttl_ms / 1000 + 3, what="the keys to expire")
    assert REDIS_PASSWORD not in srv.logs()


@pytest.mark.parametrize("how", ["term", "kill"])
def test_redis_down_costs_no_request_and_reporting_resumes(start_server, redis_server, how):
    prefix = f"qt-{uuid.uuid4().hex[:8]}"
    interval = 0.5
    srv = start_server(APP, *redis_args(redis_server, prefix, interval))
    hash_key = f"{prefix}:{socket.gethostname()}"
    r = redis_server.client()
    assert drive(srv, 10, concurrency=2, path="/hello").failures == []
    before = float(poll(lambda: r.hget(hash_key, "timestamp"), 10, what="a first report"))

    redis_server.stop(kill=how == "kill")
    down_at = time.monotonic()
    sent = failures = 0
    while time.monotonic() - down_at < 2.5:
        load = drive(srv, 20, concurrency=4, path="/hello")
        sent += load.sent
        failures += len(load.failures)
    down_for = time.monotonic() - down_at
    assert sent > 0 and failures == 0, f"{failures} of {sent} requests failed while Redis was down"
    poll(lambda: "report not delivered" in srv.logs(), 5, what="a warning about Redis")
    warnings = [l for l in srv.logs().splitlines() if "report not delivered" in l and "redis" in l]
    assert 1 <= len(warnings) <= down_for / interval + 2, f"{len(warnings)} warnings in {down_for:.1f}s"

    redis_server.start()
    back = time.time()
    r = redis_server.client()
    assert drive(srv, 10, concurrency=2, path="/hello").failures == []
    after = float(poll(lambda: (t := r.hget(hash_key, "timestamp")) and float(t) > back and t,
                       10, what="a report after Redis came back"))
    assert after > before
    poll(lambda: "sink recovered" in srv.logs(), 5, what="a recovery log line")
    assert REDIS_PASSWORD not in srv.logs()


def test_wrong_password_is_not_hammered(start_server, redis_server):
    """A refused password repeats on every retry: one attempt per interval, a clear
    line, and neither password in the logs."""
    interval = 0.5
    wrong = "wrong-Pw-91c2"
    url = f"redis://:{wrong}@127.0.0.1:{redis_server.port}/0"
    r = redis_server.client()
    before = int(r.info("stats")["total_connections_received"])
    t0 = time.monotonic()
    srv = start_server(APP, "--notify", "redis", "--redis-url", url, "--notify-interval", str(interval),
                       "--queue-header", "X-RequestTime")
    assert drive(srv, 10, concurrency=2, path="/hello").failures == []
    poll(lambda: "report not delivered" in srv.logs(), 5, what="a warning")
    time.sleep(4 * interval)
    srv.stop()
    elapsed = time.monotonic() - t0
    # Our own client's INFO connection counts once.
    connections = int(redis_server.client().info("stats")["total_connections_received"]) - before - 1
    reports = elapsed / interval + 1
    assert connections <= reports + 1, f"{connections} connections for about {reports:.0f} reports"
    logs = srv.logs()
    warned = [l for l in logs.splitlines() if "report not delivered" in l and "redis" in l]
    assert warned and "authentication" in warned[0].lower(), warned[:1]
    assert wrong not in logs and REDIS_PASSWORD not in logs
