"""`--notify azure` end to end against the loopback Azure fakes (fakes/azure_fakes.py):
an App Service style identity endpoint (IDENTITY_ENDPOINT / IDENTITY_HEADER) and an
ingestion endpoint that checks every body field by field, the bearer token and the
timestamp window. Under load, the accepted posts cover every metric with the right
count, sum, min and max (cross-checked with the prometheus sink, and interval by interval
with the log sink's JSON lines); the resource is given
whole or in parts; dimensions arrive as dimNames/dimValues. A 403 costs a log line that
names the Monitoring Metrics Publisher role, never a request, and never shows a token;
a short-lived token is refreshed while requests keep flowing; a refused identity (401 from
the identity endpoint) costs a log line, never a request, and never shows the header."""

import json
import math
import re
import signal
import time

import pytest

from conftest import free_port
from sink_services import IDENTITY_HEADER, by_metric, drive, poll, requests_total, scrape, totals

APP = "apps.wsgi_rules:application"
SUB = "00000000-1111-2222-3333-444444444444"
RESOURCE = f"/subscriptions/{SUB}/resourceGroups/rg-web/providers/Microsoft.Web/sites/shop"
METRICS = {"TimeInQueue", "ServerWait", "AppTime", "RequestCount", "ShedCount", "Utilization"}


def azure_args(fake, *extra):
    return ["--notify", "azure", "--azure-region", "West Europe", "--azure-endpoint", fake.url,
            "--notify-interval", "1", "--queue-header", "X-RequestTime", *extra]


def test_every_metric_arrives_with_exact_aggregates(start_server, azure_fake):
    fake = azure_fake()
    metrics_addr = f"127.0.0.1:{free_port()}"
    srv = start_server(
        APP, "--workers", "2", "--threads", "2",
        *azure_args(fake, "--azure-resource-id", RESOURCE,
                    "--azure-dimension", "Env=test", "--azure-dimension", "Role=web"),
        "--notify", "prometheus", "--metrics-bind", metrics_addr,
        "--notify", "log", "--log-format", "json",
        env=fake.env(),
    )
    stamped = drive(srv, 160, concurrency=8, path="/sleep?s=0.002")
    plain = drive(srv, 20, concurrency=2, path="/hello", stamp_every=0)
    assert stamped.failures == [] and plain.failures == []
    prom = poll(lambda: (m := scrape(metrics_addr)) and requests_total(m) == 180 and m,
                15, what="prometheus to count every request")
    poll(lambda: (q := by_metric(fake.received())["TimeInQueue"]) and totals(q)["count"] == 160,
         10, what="Azure to receive 160 TimeInQueue samples")
    srv.signal(signal.SIGTERM)
    assert srv.wait(20) == 0

    assert fake.rejected() == [], "the fake refused a post Azure would refuse"
    received = fake.received()
    posts = by_metric(received)
    assert set(posts) == METRICS
    for post in received:
        assert post["path"] == RESOURCE + "/metrics"
        base = post["body"]["data"]["baseData"]
        assert base["namespace"] == "rwsgi"
        assert base["dimNames"] == ["Env", "Role"]
        assert [s["dimValues"] for s in base["series"]] == [["test", "web"]]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|\+00:00)", post["body"]["time"])
        assert post["token_n"] == 1, "one token serves every post while it is valid"
    assert fake.state()["tokens_issued"] == 1

    q = totals(posts["TimeInQueue"])
    assert q["count"] == 160
    assert math.isclose(q["sum"], prom["rwsgi_queue_time_seconds_sum"], rel_tol=1e-9, abs_tol=1e-12)
    assert 0 <= q["min"] <= q["max"] <= max(stamped.stamp_to_response)
    for name, prom_name in (("ServerWait", "rwsgi_server_wait_seconds"), ("AppTime", "rwsgi_app_time_seconds")):
        t = totals(posts[name])
        assert t["count"] == 180, (name, t)
        assert math.isclose(t["sum"], prom[prom_name + "_sum"], rel_tol=1e-9, abs_tol=1e-12)
        assert 0 <= t["min"] <= t["max"]
    # Counters: one pre-aggregated sample per interval whose sum is the value.
    req = [s for p in posts["RequestCount"] for s in p["body"]["data"]["baseData"]["series"]]
    assert all(s["count"] == 1 and s["min"] == s["max"] == s["sum"] for s in req)
    assert sum(s["sum"] for s in req) == 180
    assert totals(posts["ShedCount"])["sum"] == 0
    util = totals(posts["Utilization"])
    assert 0 <= util["min"] <= util["max"] <= 100 and util["max"] > 0

    # Interval by interval, each post carries what the log sink printed for the same
    # report (the sinks get the same reports, in the same order).
    reports = [json.loads(l) for l in srv.stderr_text().splitlines()
               if l.startswith("{") and '"queue time report"' in l]
    assert len(reports) == len(posts["RequestCount"])

    def series(name):
        return [p["body"]["data"]["baseData"]["series"][0] for p in posts[name]]

    for name, field in (("TimeInQueue", "queue_time"), ("ServerWait", "server_wait"), ("AppTime", "app_time")):
        logged = [(r[f"{field}_count"], r[f"{field}_max"]) for r in reports if r[f"{field}_count"] > 0]
        assert [(s["count"], s["max"]) for s in series(name)] == logged, name
    assert [s["sum"] for s in series("RequestCount")] == [r["requests"] for r in reports]
    assert [s["sum"] for s in series("Utilization")] == pytest.approx(
        [min(100.0, r["utilization"] * 100) for r in reports], rel=1e-12)


def test_resource_in_parts_and_custom_namespace(start_server, azure_fake):
    fake = azure_fake()
    srv = start_server(
        APP, *azure_args(fake, "--azure-subscription-id", SUB, "--azure-resource-group", "rg-web",
                         "--azure-provider", "Microsoft.Web", "--azure-resource-type", "sites",
                         "--azure-resource-name", "shop", "--azure-namespace", "queue"),
        env=fake.env(),
    )
    assert drive(srv, 10, concurrency=2, path="/hello").failures == []
    poll(lambda: (q := by_metric(fake.received())["TimeInQueue"]) and totals(q)["count"] == 10,
         10, what="10 TimeInQueue samples")
    received = fake.received()
    assert {p["path"] for p in received} == {RESOURCE + "/metrics"}
    for p in received:
        base = p["body"]["data"]["baseData"]
        assert base["namespace"] == "queue"
        assert "dimNames" not in base and "dimValues" not in base["series"][0]
    assert fake.rejected() == []


def test_403_names_the_role_and_costs_no_request(start_server, azure_fake):
    fake = azure_fake("--ingest-status", "403")
    srv = start_server(APP, *azure_args(fake, "--azure-resource-id", RESOURCE), env=fake.env())
    t0 = time.monotonic()
    load = drive(srv, 60, concurrency=4, path="/hello")
    assert load.failures == [] and load.ok == 60
    poll(lambda: "'Monitoring Metrics Publisher' role" in srv.logs(), 10, what="the role in a log line")
    poll(lambda: len(fake.rejected()) >= 3, 10, what="three refused posts")
    # The server keeps serving while every report is refused.
    assert drive(srv, 20, concurrency=2, path="/hello").failures == []
    elapsed = time.monotonic() - t0
    srv.stop()
    logs = srv.logs()
    assert all(r["status"] == 403 for r in fake.rejected())
    assert fake.received() == []
    warnings = [l for l in logs.splitlines() if "report not delivered" in l and "azure" in l]
    # rwsgi's own words (the fake's error text mentions the role too): which role, for
    # which identity, on which resource, in full.
    role = f"needs the 'Monitoring Metrics Publisher' role on {RESOURCE}"
    assert warnings and all(role in w for w in warnings), warnings[:2]
    assert len(warnings) <= elapsed / 1.0 + 2, f"{len(warnings)} warnings in {elapsed:.1f}s at a 1 s interval"
    assert "fake-token-" not in logs, "a bearer token reached the logs"
    assert IDENTITY_HEADER not in logs, "the identity header reached the logs"


def test_short_lived_token_is_refreshed(start_server, azure_fake):
    fake = azure_fake("--token-lifetime", "4")
    srv = start_server(APP, *azure_args(fake, "--azure-resource-id", RESOURCE), env=fake.env())
    deadline = time.monotonic() + 12
    sent = 0
    while time.monotonic() < deadline:
        load = drive(srv, 10, concurrency=2, path="/hello")
        assert load.failures == []
        sent += load.ok
        posts = fake.received()
        if len({p["token_n"] for p in posts}) >= 2 and fake.state()["tokens_issued"] >= 2:
            break
        time.sleep(0.2)
    posts = fake.received()
    assert fake.state()["tokens_issued"] >= 2, "the token was never refreshed"
    assert len({p["token_n"] for p in posts}) >= 2, "no post used the refreshed token"
    # Reporting went on across the refresh: no post was refused for an expired token.
    assert fake.rejected() == []
    # And after the refresh, what was sent still arrives.
    later = drive(srv, 10, concurrency=2, path="/hello")
    assert later.failures == []
    total = sent + later.ok
    poll(lambda: totals(by_metric(fake.received())["TimeInQueue"])["count"] == total, 10,
         what=f"{total} TimeInQueue samples")
    assert "fake-token-" not in srv.logs()


def test_refused_identity_costs_a_line_not_a_request(start_server, azure_fake):
    fake = azure_fake()
    wrong = "wrong-identity-header-5d1"
    srv = start_server(APP, *azure_args(fake, "--azure-resource-id", RESOURCE),
                       env=dict(fake.env(), IDENTITY_HEADER=wrong))
    assert drive(srv, 20, concurrency=2, path="/hello").failures == []
    poll(lambda: "token endpoint answered HTTP 401" in srv.logs(), 10, what="the identity refusal in the log")
    assert drive(srv, 10, concurrency=2, path="/hello").failures == []
    srv.stop()
    assert fake.received() == [] and fake.state()["tokens_issued"] == 0
    logs = srv.logs()
    assert wrong not in logs and IDENTITY_HEADER not in logs
