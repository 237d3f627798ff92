"""Queue time end to end (issue 4): what rwsgi measures is the wait we cause.

A real nginx in front stamps each request (`proxy_set_header X-RequestTime $msec;`,
examples/nginx.conf); rwsgi runs one worker with one Python thread and an app that
sleeps 100 ms. A burst of 10 concurrent requests then queues for about 0, 100, …,
900 ms, and the reports must say so: count, sum, p50 and max within 10%. Without a
proxy, the same burst shows in `server_wait`.

Also: the app sees `environ["rwsgi.queue_time"]`; every stamp format counts as `ok`;
garbage, pre-2000, too-old and future stamps are counted as `invalid`/`future` and never
change the response; a stamp from an untrusted peer is ignored.

Reports are read from the log sink's JSON lines (one per interval: count, sum, min,
p50, max) and from /metrics (cumulative count and sum). The burst is fired right after
a report, with an interval three times its length, so one report holds it whole.
"""

import re
import time

import pytest
import requests

from conftest import (
    preconnected_burst,
    report_lines,
    request_bytes,
    scrape,
    settled_metrics,
    start_tracked,
    wait_next_report,
    wait_reports,
)

APP = "apps.queue_app:application"
HEADER = "X-RequestTime"
BURST = 10
SLEEP_MS = 100
TIMEOUT = 15


def nearest_rank(values, q):
    """The q-quantile as HDR histograms define it: the smallest value with at least
    q of the samples at or below it."""
    s = sorted(values)
    k = max(1, -(-int(q * len(s) * 1000) // 1000))  # ceil without float noise
    return s[k - 1]


def within(got, want, rel):
    return abs(got - want) <= rel * want


def wait_metric(metrics_url, name, want, timeout=10.0):
    """Polls /metrics until `name` reaches `want` (the prometheus task applies a
    report just after the log task prints it); returns the scrape."""
    deadline = time.monotonic() + timeout
    while True:
        m = scrape(metrics_url)
        if m.get(name) >= want or time.monotonic() > deadline:
            return m
        time.sleep(0.1)


def caught_up(srv, metrics_url, prefix, family):
    """/metrics once prometheus has applied every report logged so far."""
    want = sum(l[f"{prefix}_count"] for l in report_lines(srv))
    return wait_metric(metrics_url, f"{family}_count", want)


# A 100 ms sleep that took this long means the box, not rwsgi, set the queue.
STALLED_APP_TIME = 1.5 * SLEEP_MS / 1000


def burst_in_one_report(srv, host, port, metrics_url, prefix, family):
    """Fires BURST concurrent /sleep requests right after a report line, so that the
    next report holds them all. Returns the app's view of each request, that report,
    and /metrics before and after.

    The queue is only the one we caused if each request really took its 100 ms. On
    this shared 2-core box another process can stall the app (one 100 ms sleep took
    810 ms once, and every later request queued that much longer); the server's own
    app_time shows it. Such an attempt, or one a stall pushed across a report
    boundary, measured something else than we caused, and is fired again (at most
    three times); the checks on the one that ran as planned stay strict.
    """
    attempts = []
    for _ in range(3):
        wait_next_report(srv)
        n = len(report_lines(srv))
        before = caught_up(srv, metrics_url, prefix, family)
        resps = preconnected_burst(host, port, [f"/sleep?ms={SLEEP_MS}"] * BURST)
        assert [r.status for r in resps] == [200] * BURST, [r.text for r in resps]
        seen = [r.json() for r in resps]
        report = wait_reports(srv, n + 1)[n]
        after = caught_up(srv, metrics_url, prefix, family)
        if report["requests"] == BURST and report["app_time_max"] <= STALLED_APP_TIME:
            return seen, report, before, after
        attempts.append(report)
    pytest.fail(f"the box stalled the app in every attempt: {attempts}")


def expected_waits():
    """The queue we cause: request k waits for the k before it, 100 ms each."""
    return [k * SLEEP_MS / 1000 for k in range(BURST)]


def check_distribution(report, prefix, before, after, family, observed):
    """count, sum, p50 and max of one metric against what we caused (within 10%) and
    against what the app saw of each request (exactly, or within HDR's 1%)."""
    caused = expected_waits()
    assert report[f"{prefix}_count"] == BURST, report
    count = after.get(f"{family}_count") - before.get(f"{family}_count")
    total = after.get(f"{family}_sum") - before.get(f"{family}_sum")
    assert count == BURST, (before.text, after.text)
    assert within(total, sum(caused), 0.10), (total, sorted(observed))
    assert abs(total - sum(observed)) < 1e-6, (total, observed)
    # The interval's line has the same exact sum, and the first request hardly waited.
    assert abs(report[f"{prefix}_sum"] - total) < 1e-6, report
    assert 0 <= report[f"{prefix}_min"] < 0.05, report
    assert abs(report[f"{prefix}_min"] - min(observed)) < 1e-6, (report, observed)

    p50, mx = report[f"{prefix}_p50"], report[f"{prefix}_max"]
    assert within(p50, nearest_rank(caused, 0.5), 0.10), (p50, sorted(observed))
    assert within(mx, max(caused), 0.10), (mx, sorted(observed))
    assert within(p50, nearest_rank(observed, 0.5), 0.01), (p50, sorted(observed))
    assert abs(mx - max(observed)) < 1e-6, (mx, sorted(observed))
    # Each request waited for the ones before it: about k × 100 ms.
    for k, (got, want) in enumerate(zip(sorted(observed), caused)):
        assert abs(got - want) <= 0.05 + 0.1 * want, (k, sorted(observed))


# ---------------------------------------------------------------------------
# the distribution we cause
# ---------------------------------------------------------------------------


def test_nginx_burst_gives_the_queue_time_distribution(start_server, nginx_proxy):
    srv, metrics_url = start_tracked(start_server, "--workers", "1", "--threads", "1", interval=3)
    ng = nginx_proxy(srv.port)

    family = "rwsgi_queue_time_seconds"
    seen, report, before, after = burst_in_one_report(
        srv, "127.0.0.1", ng.port, metrics_url, "queue_time", family)
    observed = [s["queue_time"] for s in seen]
    assert all(isinstance(q, float) for q in observed), seen
    check_distribution(report, "queue_time", before, after, family, observed)
    assert report["stamps_ok"] == BURST and report["stamps_missing"] == 0, report
    assert report["requests"] == BURST and report["status_2xx"] == BURST
    assert report["workers"] == 1
    # Each request spent its 100 ms in the app.
    assert report["app_time_count"] == BURST
    assert 0.099 <= report["app_time_p50"] <= STALLED_APP_TIME, report


def test_direct_burst_gives_the_server_wait_distribution(start_server):
    srv, metrics_url = start_tracked(start_server, "--workers", "1", "--threads", "1", interval=3)

    family = "rwsgi_server_wait_seconds"
    seen, report, before, after = burst_in_one_report(
        srv, srv.host, srv.port, metrics_url, "server_wait", family)
    observed = [s["server_wait"] for s in seen]
    assert all(s["queue_time"] is None for s in seen), seen
    check_distribution(report, "server_wait", before, after, family, observed)
    # No proxy, no stamp: nothing in queue_time, every request counted as missing.
    assert report["queue_time_count"] == 0 and report["stamps_missing"] == BURST, report
    assert after.get("rwsgi_queue_time_seconds_count") == 0


# ---------------------------------------------------------------------------
# what the app sees
# ---------------------------------------------------------------------------


def test_app_sees_queue_time_from_nginx_and_none_without_stamp(start_server, nginx_proxy):
    # No --notify: with --queue-header the log sink is the default, in human format.
    srv = start_server(APP, "--queue-header", HEADER, "--notify-interval", "1")
    ng = nginx_proxy(srv.port)

    via_nginx = requests.get(ng.url + "/queue", timeout=TIMEOUT)
    assert via_nginx.status_code == 200
    q = via_nginx.json()
    assert isinstance(q["queue_time"], float) and 0 <= q["queue_time"] < 2, q
    assert isinstance(q["server_wait"], float) and 0 <= q["server_wait"] < 2, q

    direct = requests.get(srv.url + "/queue", timeout=TIMEOUT).json()
    assert direct["queue_time"] is None, direct
    assert isinstance(direct["server_wait"], float) and 0 <= direct["server_wait"] < 2, direct

    # A stamp we wrote ourselves, from a trusted peer (127.0.0.1 by default), counts.
    stamped = requests.get(srv.url + "/queue", headers={HEADER: f"{time.time() - 0.5:.3f}"},
                           timeout=TIMEOUT).json()
    assert 0.45 <= stamped["queue_time"] < 2, stamped

    # All three show up in the default log sink's human lines.
    line = re.compile(r"INFO queue time [0-9.]+s: (\d+) requests")
    deadline = time.monotonic() + 10
    while sum(int(n) for n in line.findall(srv.logs())) < 3:
        assert time.monotonic() < deadline, srv.logs()[-3000:]
        time.sleep(0.1)
    assert sum(int(n) for n in line.findall(srv.logs())) == 3
    assert "stamps ok=" in srv.logs()


def test_without_queue_header_option_queue_time_is_none(start_server):
    srv = start_server(APP)
    r = requests.get(srv.url + "/queue", headers={HEADER: f"{time.time() - 0.5:.3f}"},
                     timeout=TIMEOUT).json()
    assert r["queue_time"] is None, r
    assert isinstance(r["server_wait"], float), r


# ---------------------------------------------------------------------------
# stamp formats
# ---------------------------------------------------------------------------


def ok_stamps(now_ns):
    """(name, header value, lowest and highest plausible queue_time in seconds)."""
    half = now_ns - 500_000_000
    return [
        ("nginx $msec", f"{half / 1e9:.3f}", 0.49, 1.5),
        ("seconds with microseconds", f"{half // 1000 / 1e6:.6f}", 0.49, 1.5),
        ("integer seconds", str(now_ns // 10**9 - 1), 0.99, 2.5),
        ("milliseconds", str(half // 10**6), 0.49, 1.5),
        ("microseconds", str(half // 10**3), 0.49, 1.5),
        ("nanoseconds", str(half), 0.49, 1.5),
        ("t= microseconds", f"t={half // 10**3}", 0.49, 1.5),
        ("t= seconds", f"t={half / 1e9:.3f}", 0.49, 1.5),
        ("padded t= ms", f"  t={half // 10**6}\t", 0.49, 1.5),
    ]


def bad_stamps(now):
    """(name, header value, expected result)."""
    return [
        ("empty", "", "invalid"),
        ("letters", "abc", "invalid"),
        ("digits then letters", f"{int(now)}abc", "invalid"),
        ("negative", f"-{int(now)}", "invalid"),
        ("NaN", "NaN", "invalid"),
        ("inf", "inf", "invalid"),
        ("exponent", "1.7e9", "invalid"),
        ("pre-2000 seconds", "946684799", "invalid"),
        ("pre-2000 ms", "946684799999", "invalid"),
        ("zero", "0", "invalid"),
        ("non-ASCII bytes", b"\xff\xfe1700000000", "invalid"),
        ("older than --queue-max-age", f"{now - 7200:.3f}", "invalid"),
        ("further ahead than --queue-max-age", f"{now + 7200:.3f}", "invalid"),
        ("in the future (clock skew)", f"{now + 30:.3f}", "future"),
    ]


def test_every_stamp_format_is_ok_and_bad_stamps_are_counted(start_server):
    srv, metrics_url = start_tracked(start_server, "--threads", "2")
    baseline = requests.get(srv.url + "/", timeout=TIMEOUT)
    assert baseline.status_code == 200 and baseline.text == "ok"

    for name, value, lo, hi in ok_stamps(time.time_ns()):
        with srv.raw() as c:
            c.send(request_bytes("GET", "/queue", {HEADER: value}))
            r = c.read_response()
        assert r.status == 200, (name, r.status, r.text)
        q = r.json()["queue_time"]
        assert isinstance(q, float) and lo <= q <= hi, (name, value, q)

    bad = bad_stamps(time.time())
    for name, value, result in bad:
        for path, check in (("/queue", "json"), ("/", "ok")):
            with srv.raw() as c:
                c.send(request_bytes("GET", path, {HEADER: value}))
                r = c.read_response()
            assert r.status == 200, (name, path, r.status, r.text)
            if check == "ok":
                assert r.text == "ok", (name, r.text)
            else:
                want = 0.0 if result == "future" else None
                assert r.json()["queue_time"] == want, (name, value, r.text)

    m = settled_metrics(srv, metrics_url)
    n_ok = len(ok_stamps(0))
    n_invalid = 2 * sum(1 for b in bad if b[2] == "invalid")
    n_future = 2 * sum(1 for b in bad if b[2] == "future")
    counts = {res: m.get("rwsgi_queue_stamps_total", result=res)
              for res in ("ok", "missing", "invalid", "future", "untrusted")}
    assert counts == {"ok": n_ok, "missing": 1, "invalid": n_invalid, "future": n_future,
                      "untrusted": 0}, counts
    # ok stamps are recorded with their wait, future ones as zero; nothing else.
    assert m.get("rwsgi_queue_time_seconds_count") == n_ok + n_future
    assert m.get("rwsgi_queue_time_seconds_bucket", le="0.001") >= n_future
    # Bad stamps never changed a response: every request was a 2xx.
    total = 1 + n_ok + n_invalid + n_future
    assert m.get("rwsgi_requests_total", status_class="2xx") == total
    assert m.total("rwsgi_requests_total") == total
    assert srv.alive()


# ---------------------------------------------------------------------------
# trust
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("trust", [
    ("--queue-header-trusted-from", "10.9.9.9"),
    ("--forwarded-allow-ips", "10.9.9.9"),
], ids=["queue-header-trusted-from", "default-is-forwarded-allow-ips"])
def test_forged_stamp_from_untrusted_peer_is_ignored(start_server, trust):
    # A client claiming it waited 30 s must neither show up in queue_time nor get
    # itself (or others) shed by --max-queue-time.
    srv, metrics_url = start_tracked(start_server, *trust, "--max-queue-time", "1")
    forged = f"{time.time() - 30:.3f}"
    for _ in range(3):
        r = requests.get(srv.url + "/queue", headers={HEADER: forged}, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        assert r.json()["queue_time"] is None, r.text

    m = settled_metrics(srv, metrics_url)
    assert m.get("rwsgi_queue_stamps_total", result="untrusted") == 3
    assert m.get("rwsgi_queue_stamps_total", result="ok") == 0
    assert m.get("rwsgi_queue_time_seconds_count") == 0
    assert m.get("rwsgi_shed_total") == 0
    assert m.get("rwsgi_server_wait_seconds_count") == 3


def test_with_two_stamps_the_last_one_counts(start_server):
    # A proxy that appends its stamp (HAProxy add-header, Apache RequestHeader add)
    # leaves the client's forged one first: the proxy's, the last, must be used.
    srv = start_server(APP, "--queue-header", HEADER)
    forged = f"{time.time() - 30:.3f}"
    real = f"{time.time() - 0.2:.3f}"
    with srv.raw() as c:
        c.send(request_bytes("GET", "/queue", [(HEADER, forged), (HEADER, real)]))
        r = c.read_response()
    assert r.status == 200, r.text
    q = r.json()["queue_time"]
    assert 0.15 <= q < 2, q
