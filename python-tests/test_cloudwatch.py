"""`--notify cloudwatch` end to end: the real binary, the real Rust AWS SDK, the CBOR
adapter and moto_server. Under load (two workers, stamped and unstamped requests), what
boto3's GetMetricStatistics reads straight from moto must equal what rwsgi measured:
TimeInQueue's SampleCount is the number of stamped requests, its Sum the sum of the queue
times rwsgi reported (cross-checked with the prometheus sink running alongside and with
the Values/Counts the adapter saw), RequestCount adds up to the requests sent, and
Utilization, ServerWait and AppTime arrive with their units at storage resolution 1, and
each call matches the log sink's line for the same interval. The
last partial interval is flushed on TERM (even one that lands during start-up);
AWS_ENDPOINT_URL works instead of the flag; a 503 is retried within the interval."""

import datetime
import json
import math
import signal
import time
import uuid

from conftest import free_port
from sink_services import (FAKES, Adapter, aws_env, dead_port, drive, poll, requests_total, scrape,
                           start_ready_script, stop_proc)

APP = "apps.wsgi_rules:application"


def namespace(tag: str) -> str:
    return f"rwsgi-test/{tag}/{uuid.uuid4().hex[:8]}"


def statistics(cw, ns, metric, dimensions=(), since=None):
    """Every datapoint moto holds for one metric, folded into one set of statistics."""
    now = datetime.datetime.now(datetime.timezone.utc)
    resp = cw.get_metric_statistics(
        Namespace=ns, MetricName=metric, Dimensions=list(dimensions),
        StartTime=(since or now) - datetime.timedelta(minutes=5), EndTime=now + datetime.timedelta(minutes=5),
        Period=60, Statistics=["SampleCount", "Sum", "Minimum", "Maximum"],
    )
    points = resp["Datapoints"]
    if not points:
        return None
    return {
        "SampleCount": sum(p["SampleCount"] for p in points),
        "Sum": sum(p["Sum"] for p in points),
        "Minimum": min(p["Minimum"] for p in points),
        "Maximum": max(p["Maximum"] for p in points),
        "Units": {p.get("Unit") for p in points},
    }


def weighted(datums):
    """(count, sum, min, max) of Values/Counts datums, as CloudWatch would add them up."""
    count = total = 0.0
    lo, hi = math.inf, -math.inf
    for d in datums:
        assert "StatisticValues" not in d, f"{d['MetricName']}: StatisticValues together with Values"
        assert len(d["Values"]) == len(d["Counts"]) and 0 < len(d["Values"]) <= 150, d
        count += sum(d["Counts"])
        total += sum(v * c for v, c in zip(d["Values"], d["Counts"]))
        lo, hi = min(lo, min(d["Values"])), max(hi, max(d["Values"]))
    return count, total, lo, hi


def close(a, b, rel=1e-9, abs_=1e-12):
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


def test_statistics_in_moto_equal_what_rwsgi_measured(start_server, cw_adapter, moto):
    ns = namespace("load")
    dims = [{"Name": "Service", "Value": "web"}]
    metrics_addr = f"127.0.0.1:{free_port()}"
    t0 = datetime.datetime.now(datetime.timezone.utc)
    srv = start_server(
        APP, "--workers", "2", "--threads", "2",
        "--notify", "cloudwatch", "--notify", "prometheus", "--metrics-bind", metrics_addr,
        "--cloudwatch-namespace", ns, "--cloudwatch-region", "us-east-1",
        "--cloudwatch-endpoint", cw_adapter.url, "--cloudwatch-dimension", "Service=web",
        "--notify-interval", "1", "--queue-header", "X-RequestTime",
        "--notify", "log", "--log-format", "json",
        env=aws_env(),
    )
    stamped = drive(srv, 240, concurrency=8, path="/sleep?s=0.002")
    plain = drive(srv, 40, concurrency=4, path="/hello", stamp_every=0)
    assert stamped.failures == [] and plain.failures == []
    assert (stamped.stamped, plain.stamped) == (240, 0)

    # Everything measured so far has been reported once prometheus shows it, and the
    # cloudwatch sink got the same reports: compare the two before stopping.
    prom = poll(lambda: (m := scrape(metrics_addr)) and requests_total(m) == 280
                and m["rwsgi_queue_time_seconds_count"] == 240 and m,
                15, what="prometheus to count every request")
    datums = poll(lambda: (d := cw_adapter.datums(ns, "TimeInQueue")) and weighted(d)[0] == 240 and d,
                  10, what="the adapter to see 240 TimeInQueue samples")
    count, total, lo, hi = weighted(datums)
    assert close(total, prom["rwsgi_queue_time_seconds_sum"]), (total, prom["rwsgi_queue_time_seconds_sum"])
    # Each queue time ends before its response arrives: the client's view bounds it.
    assert 0 < total <= sum(stamped.stamp_to_response)
    assert 0 <= lo <= hi <= max(stamped.stamp_to_response)

    srv.signal(signal.SIGTERM)
    assert srv.wait(20) == 0

    sent = cw_adapter.requests(ns)
    assert sent, "no PutMetricData reached the adapter"
    every = [d for p in sent for d in p["MetricData"]]
    assert {d["MetricName"] for d in every} >= {
        "TimeInQueue", "ServerWait", "AppTime", "RequestCount", "ShedCount", "Utilization"}
    assert all(d.get("StorageResolution") == 1 for d in every)
    assert all(d.get("Dimensions") == dims for d in every)
    # One call per interval carries every metric of that interval.
    assert all(len({d["MetricName"] for d in p["MetricData"]}) == len(p["MetricData"]) for p in sent)

    cw = moto.cloudwatch()
    q = statistics(cw, ns, "TimeInQueue", dims, t0)
    count, total, lo, hi = weighted(cw_adapter.datums(ns, "TimeInQueue"))
    assert q["SampleCount"] == count == 240
    assert close(q["Sum"], total), (q["Sum"], total)
    assert close(q["Sum"], prom["rwsgi_queue_time_seconds_sum"])
    assert (q["Minimum"], q["Maximum"]) == (lo, hi)
    assert q["Units"] == {"Seconds"}

    for metric in ("ServerWait", "AppTime"):
        s = statistics(cw, ns, metric, dims, t0)
        assert s is not None, f"{metric} missing in moto"
        assert s["SampleCount"] == 280, (metric, s)
        assert s["Units"] == {"Seconds"} and 0 <= s["Minimum"] <= s["Maximum"]
        c, tot, _, _ = weighted(cw_adapter.datums(ns, metric))
        assert c == 280 and close(s["Sum"], tot)
    assert close(statistics(cw, ns, "AppTime", dims, t0)["Sum"], prom["rwsgi_app_time_seconds_sum"])

    requests_ = statistics(cw, ns, "RequestCount", dims, t0)
    assert requests_["Sum"] == 280 and requests_["Units"] == {"Count"}
    util = statistics(cw, ns, "Utilization", dims, t0)
    assert util["Units"] == {"Percent"}
    assert 0 <= util["Minimum"] <= util["Maximum"] <= 100 and util["Maximum"] > 0
    assert statistics(cw, ns, "ShedCount", dims, t0)["Sum"] == 0

    # Interval by interval, each call carries what the log sink printed for the same
    # report: the sample count, and the exact extremes pinned into Values.
    reports = [json.loads(l) for l in srv.stderr_text().splitlines()
               if l.startswith("{") and '"queue time report"' in l]
    assert len(reports) == len(sent)
    for report, call in zip(reports, sent):
        by_name = {d["MetricName"]: d for d in call["MetricData"]}
        assert by_name["RequestCount"]["Value"] == report["requests"]
        for name, field in (("TimeInQueue", "queue_time"), ("ServerWait", "server_wait"), ("AppTime", "app_time")):
            if report[f"{field}_count"] == 0:
                assert name not in by_name, "an empty interval must not send SampleCount 0"
                continue
            d = by_name[name]
            assert (sum(d["Counts"]), max(d["Values"])) == (report[f"{field}_count"], report[f"{field}_max"]), name


def test_last_partial_interval_is_flushed_on_term(start_server, cw_adapter, moto):
    ns = namespace("flush")
    srv = start_server(
        APP, "--notify", "cloudwatch", "--cloudwatch-namespace", ns, "--cloudwatch-region", "us-east-1",
        "--cloudwatch-endpoint", cw_adapter.url, "--notify-interval", "60", "--queue-header", "X-RequestTime",
        env=aws_env(),
    )
    # Served and stopped at once: the TERM lands while the master is still finishing
    # its start-up (building the sinks), which must not lose these requests.
    load = drive(srv, 10, concurrency=1, path="/hello")
    assert load.failures == []
    srv.signal(signal.SIGTERM)
    assert srv.wait(20) == 0
    assert "Worker exited (exit code 0)" in srv.logs(), "the worker was not allowed to finish"
    q = statistics(moto.cloudwatch(), ns, "TimeInQueue")
    assert q is not None and q["SampleCount"] == 10
    assert statistics(moto.cloudwatch(), ns, "RequestCount")["Sum"] == 10
    # A 60 s interval cannot have reported before the TERM: this was the final flush,
    # stored at standard resolution (cheaper) since the interval is a minute.
    assert len(cw_adapter.requests(ns)) == 1
    assert {d.get("StorageResolution") for d in cw_adapter.requests(ns)[0]["MetricData"]} == {60}


def test_aws_endpoint_url_replaces_the_flag(start_server, cw_adapter, moto):
    ns = namespace("envurl")
    srv = start_server(
        APP, "--notify", "cloudwatch", "--cloudwatch-namespace", ns, "--notify-interval", "1",
        "--queue-header", "X-RequestTime",
        env=aws_env(AWS_ENDPOINT_URL=cw_adapter.url, AWS_REGION="us-east-1"),
    )
    assert drive(srv, 10, concurrency=2, path="/hello").failures == []
    poll(lambda: (q := statistics(moto.cloudwatch(), ns, "TimeInQueue")) and q["SampleCount"] == 10,
         10, what="TimeInQueue via AWS_ENDPOINT_URL")
    assert cw_adapter.url in srv.logs(), "the startup line should name the endpoint in use"


def test_credentials_never_reach_the_logs(start_server, cw_adapter):
    ns = namespace("secrets")
    secret = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYSECRETKEY"
    srv = start_server(
        APP, "--notify", "cloudwatch", "--cloudwatch-namespace", ns, "--cloudwatch-region", "us-east-1",
        "--cloudwatch-endpoint", cw_adapter.url, "--notify-interval", "0.5", "--queue-header", "X-RequestTime",
        "--log-level", "debug",
        env=aws_env(AWS_ACCESS_KEY_ID="AKIATESTSECRETCHECK1", AWS_SECRET_ACCESS_KEY=secret),
    )
    assert drive(srv, 5, concurrency=1, path="/hello").failures == []
    poll(lambda: cw_adapter.datums(ns, "TimeInQueue"), 10, what="a report")
    srv.stop()
    assert secret not in srv.logs()


def test_service_errors_are_retried_within_the_interval(start_server, tmp_path):
    # An adapter whose moto is gone answers every call 503 ServiceUnavailable, the
    # way CloudWatch does when it is in trouble.
    proc, port = start_ready_script(FAKES / "cbor_moto_adapter.py", ["--moto", f"http://127.0.0.1:{dead_port()}"],
                                    tmp_path / "adapter-503.log", "CBOR adapter (503)")
    try:
        adapter = Adapter(port, proc)
        ns = namespace("retry")
        srv = start_server(
            APP, "--notify", "cloudwatch", "--cloudwatch-namespace", ns, "--cloudwatch-region", "us-east-1",
            "--cloudwatch-endpoint", adapter.url, "--notify-interval", "1", "--queue-header", "X-RequestTime",
            env=aws_env(),
        )
        t0 = time.monotonic()
        assert drive(srv, 20, concurrency=2, path="/hello").failures == []
        poll(lambda: len(adapter.requests(ns)) >= 6, 10, what="several attempts")
        srv.stop()
        elapsed = time.monotonic() - t0
        attempts = adapter.requests(ns)
        warned = [l for l in srv.logs().splitlines() if "report not delivered" in l and "cloudwatch" in l]
        reports = len({d["Timestamp"] for p in attempts for d in p["MetricData"]})
        # Every report was tried more than once (503 is retryable), the same datums
        # each time, and each failed report cost at most one line per interval.
        assert len(attempts) >= 2 * reports, (len(attempts), reports)
        assert warned and len(warned) <= elapsed + 2, (len(warned), elapsed)
        assert "ServiceUnavailable" in warned[0] or "503" in warned[0], warned[0]
    finally:
        stop_proc(proc)
