"""The merged reports (issue 4): /metrics in the Prometheus text format, exact merging of
two workers, one report per host per interval, the final partial interval on TERM, and
utilization.

/metrics is parsed with prometheus_client's own text parser. Counts are compared
exactly with the requests sent, after enough report intervals that every request has
been collected (`settled_metrics`).
"""

import datetime
import signal
import statistics
import threading
import time

import requests

from conftest import free_port, report_lines, scrape, settled_metrics, start_tracked, wait_reports

APP = "apps.queue_app:application"
HEADER = "X-RequestTime"
TIMEOUT = 15

HISTOGRAMS = ["rwsgi_queue_time_seconds", "rwsgi_server_wait_seconds", "rwsgi_app_time_seconds"]
GAUGES = ["rwsgi_utilization_ratio", "rwsgi_workers"]
# prometheus_client names a counter family without its `_total` suffix.
COUNTERS = {
    "rwsgi_requests": ("status_class", {"1xx", "2xx", "3xx", "4xx", "5xx"}),
    "rwsgi_queue_stamps": ("result", {"ok", "missing", "invalid", "future", "untrusted"}),
    "rwsgi_shed": (None, None),
}


def stamp(ago: float = 0.0) -> dict:
    return {HEADER: f"{time.time() - ago:.3f}"}


def ts(line: dict) -> float:
    return datetime.datetime.fromisoformat(line["timestamp"]).timestamp()


# ---------------------------------------------------------------------------
# /metrics
# ---------------------------------------------------------------------------


def test_metrics_parse_with_prometheus_client(start_server):
    srv, metrics_url = start_tracked(start_server)
    s = requests.Session()
    for ago in (0.05, 0.3, 2.0):
        assert s.get(srv.url + "/queue", headers=stamp(ago), timeout=TIMEOUT).status_code == 200
    assert s.get(srv.url + "/", timeout=TIMEOUT).status_code == 200
    assert s.get(srv.url + "/", headers={HEADER: "garbage"}, timeout=TIMEOUT).status_code == 200

    m = settled_metrics(srv, metrics_url)
    raw = requests.get(metrics_url, timeout=TIMEOUT)
    assert raw.headers["Content-Type"].startswith("text/plain; version=0.0.4"), raw.headers

    for name in HISTOGRAMS:
        fam = m.families.get(name)
        assert fam is not None and fam.type == "histogram", (name, sorted(m.families))
        buckets = [(s.labels["le"], s.value) for s in fam.samples if s.name == name + "_bucket"]
        bounds = [float(le) for le, _ in buckets]
        assert bounds == sorted(bounds) and bounds[-1] == float("inf"), bounds
        counts = [v for _, v in buckets]
        assert all(a <= b for a, b in zip(counts, counts[1:])), (name, buckets)
        assert counts[-1] == m.get(name + "_count"), name
        assert m.get(name + "_sum") >= 0
    for name in GAUGES:
        fam = m.families.get(name)
        assert fam is not None and fam.type == "gauge", (name, sorted(m.families))
    for name, (label, values) in COUNTERS.items():
        fam = m.families.get(name)
        assert fam is not None and fam.type == "counter", (name, sorted(m.families))
        if label:
            assert {s.labels[label] for s in fam.samples} == values, fam.samples

    # The values are the traffic we sent.
    assert m.get("rwsgi_queue_time_seconds_count") == 3
    assert 2.35 <= m.get("rwsgi_queue_time_seconds_sum") < 4
    assert m.get("rwsgi_queue_time_seconds_bucket", le="0.25") == 1
    assert m.get("rwsgi_queue_time_seconds_bucket", le="1.0") == 2
    assert m.get("rwsgi_server_wait_seconds_count") == 5
    assert m.get("rwsgi_app_time_seconds_count") == 5
    assert m.get("rwsgi_requests_total", status_class="2xx") == 5
    assert m.get("rwsgi_queue_stamps_total", result="ok") == 3
    assert m.get("rwsgi_queue_stamps_total", result="missing") == 1
    assert m.get("rwsgi_queue_stamps_total", result="invalid") == 1
    assert m.get("rwsgi_shed_total") == 0
    assert m.get("rwsgi_workers") == 1
    assert 0 <= m.get("rwsgi_utilization_ratio") <= 1

    # Anything but /metrics is a 404 that points at it.
    other = requests.get(metrics_url.replace("/metrics", "/"), timeout=TIMEOUT)
    assert other.status_code == 404 and "/metrics" in other.text


# ---------------------------------------------------------------------------
# two workers
# ---------------------------------------------------------------------------


def test_metrics_listen_before_the_app_port_accepts(start_server):
    # A scraper (or a test) that starts as soon as the app port answers must find
    # /metrics too: the master binds the app sockets only after every sink started,
    # here with the statsd and log sinks built before prometheus.
    for _ in range(3):
        mport = free_port()
        srv = start_server(
            APP, "--queue-header", HEADER, "--workers", "2",
            "--notify", "statsd", "--statsd-host", f"127.0.0.1:{free_port()}",
            "--notify", "log", "--notify", "prometheus", "--metrics-bind", f"127.0.0.1:{mport}")
        body = scrape(f"http://127.0.0.1:{mport}/metrics")
        assert "rwsgi_workers" in body.families
        srv.stop()


def test_two_workers_merge_exactly_and_report_once_per_interval(start_server):
    srv, metrics_url = start_tracked(start_server, "--workers", "2", "--threads", "2")
    wait_reports(srv, 1)
    sent = 48
    pids, lock = [], threading.Lock()

    def client(n):
        with requests.Session() as s:
            for _ in range(n):
                # A new connection each time, so that both workers get to accept.
                r = s.get(srv.url + "/sleep?ms=20", headers={**stamp(), "Connection": "close"},
                          timeout=TIMEOUT)
                assert r.status_code == 200
                with lock:
                    pids.append(r.json()["pid"])

    threads = [threading.Thread(target=client, args=(sent // 4,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(pids) == sent, "a client thread failed"
    assert len(set(pids)) == 2, f"both workers must serve for the merge to mean anything: {set(pids)}"

    m = settled_metrics(srv, metrics_url)
    assert m.total("rwsgi_requests_total") == sent
    assert m.get("rwsgi_requests_total", status_class="2xx") == sent
    for name in HISTOGRAMS:
        assert m.get(name + "_count") == sent, name
        assert m.get(name + "_bucket", le="+Inf") == sent, name
    assert m.get("rwsgi_queue_stamps_total", result="ok") == sent
    assert m.get("rwsgi_workers") == 2

    lines = report_lines(srv)
    assert sum(l["requests"] for l in lines) == sent
    assert sum(l["queue_time_count"] for l in lines) == sent
    assert all(l["workers"] == 2 for l in lines), [l["workers"] for l in lines]
    # One report per host per interval, not one per worker.
    gaps = [ts(b) - ts(a) for a, b in zip(lines, lines[1:])]
    assert gaps and min(gaps) > 0.5, gaps


# ---------------------------------------------------------------------------
# the last partial interval
# ---------------------------------------------------------------------------


class InFlight:
    """A /sleep request running in the app (it has reached it) until .result()."""

    def __init__(self, srv, ms):
        self.out = {}
        self.thread = threading.Thread(target=self._run, args=(srv.url + f"/sleep?ms={ms}",))
        self.thread.start()
        deadline = time.monotonic() + 10
        while not srv.read_state_lines("sleeps"):
            assert time.monotonic() < deadline, "the slow request never reached the app"
            time.sleep(0.005)
        self.srv = srv

    def _run(self, url):
        try:
            self.out["response"] = requests.get(url, timeout=TIMEOUT)
        except requests.RequestException as e:
            self.out["error"] = e

    def result(self):
        self.thread.join(TIMEOUT + 5)
        assert "error" in self.out or "response" in self.out, "request still running"
        assert "error" not in self.out, (
            f"in-flight request lost: {self.out['error']}\n{self.srv.logs()[-3000:]}")
        return self.out["response"]


def test_term_reports_the_final_partial_interval(start_server):
    # A 60 s interval never elapses here: whatever is reported came from the shutdown.
    srv, metrics_url = start_tracked(start_server, "--workers", "2", interval=60)
    # /metrics answers once the notifier runs, i.e. the master is past booting (a TERM
    # before that is the next test's case).
    deadline = time.monotonic() + 10
    while True:
        try:
            scrape(metrics_url)
            break
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "/metrics never came up"
            time.sleep(0.05)
    quick = 6
    for _ in range(quick):
        # A new connection each time, so that both workers may have some.
        r = requests.get(srv.url + "/queue", headers={**stamp(0.1), "Connection": "close"},
                         timeout=TIMEOUT)
        assert r.status_code == 200

    # And one request still in the app when TERM arrives: graceful shutdown serves it,
    # and it belongs in the last report too.
    slow = InFlight(srv, 600)
    assert report_lines(srv) == []
    srv.signal(signal.SIGTERM)
    assert slow.result().status_code == 200
    assert srv.wait(30) == 0
    logs = srv.logs()
    lines = report_lines(srv)
    assert len(lines) == 1, lines
    last = lines[0]
    assert logs.index("Handling signal: term") < logs.index('"queue time report"'), logs[-3000:]
    assert last["requests"] == quick + 1, last
    assert last["status_2xx"] == quick + 1, last
    assert last["queue_time_count"] == quick and last["stamps_ok"] == quick, last
    assert last["stamps_missing"] == 1, last
    assert last["app_time_count"] == quick + 1, last
    assert last["app_time_max"] >= 0.6, last
    assert last["interval_s"] < 60, last


# ---------------------------------------------------------------------------
# utilization
# ---------------------------------------------------------------------------


def test_utilization_of_a_half_busy_thread(start_server):
    srv, metrics_url = start_tracked(start_server, "--workers", "1", "--threads", "1")
    wait_reports(srv, 1)
    idle = wait_reports(srv, 2)[-1]
    assert idle["utilization"] < 0.05, idle

    # 100 ms in the app, then 100 ms idle: half the thread's time is busy.
    start = time.time()
    with requests.Session() as s:
        while time.time() - start < 5:
            assert s.get(srv.url + "/sleep?ms=100", timeout=TIMEOUT).status_code == 200
            time.sleep(0.1)
    end = time.time()

    wait_reports(srv, len(report_lines(srv)) + 1)
    inside = [l for l in report_lines(srv)
              if ts(l) - l["interval_s"] >= start and ts(l) <= end]
    assert len(inside) >= 2, [(ts(l), l["utilization"]) for l in report_lines(srv)]
    values = [l["utilization"] for l in inside]
    # The median, because on a shared 2-core box one interval may catch a stall.
    assert 0.3 <= statistics.median(values) <= 0.7, values
    m = scrape(metrics_url)
    assert 0 <= m.get("rwsgi_utilization_ratio") <= 1


def test_utilization_of_a_saturated_thread_with_requests_longer_than_the_interval(start_server):
    # One thread, never idle, each request 2.2 s against 1 s intervals: the thread is
    # busy in every interval, so every interval must say so (an interval in which no
    # request happens to finish is still a busy interval).
    srv, _ = start_tracked(start_server, "--workers", "1", "--threads", "1")
    wait_reports(srv, 1)
    start = time.time()
    with requests.Session() as s:
        for _ in range(2):
            assert s.get(srv.url + "/sleep?ms=2200", timeout=TIMEOUT).status_code == 200
    end = time.time()

    wait_reports(srv, len(report_lines(srv)) + 1)
    inside = [l for l in report_lines(srv)
              if ts(l) - l["interval_s"] >= start + 0.05 and ts(l) <= end - 0.05]
    assert len(inside) >= 2, [(ts(l), l["utilization"]) for l in report_lines(srv)]
    values = [l["utilization"] for l in inside]
    assert all(v >= 0.8 for v in values), values


def test_term_right_after_start_still_drains_and_reports(start_server):
    # The sockets serve as soon as the first worker is ready; a TERM in the moments
    # after that (a deploy that changes its mind, a failing health check) must still be
    # a graceful shutdown: the request in flight is answered and reported.
    srv, _ = start_tracked(start_server, "--workers", "1", interval=60)
    slow = InFlight(srv, 300)
    srv.signal(signal.SIGTERM)
    assert slow.result().status_code == 200
    assert srv.wait(30) == 0
    lines = report_lines(srv)
    assert len(lines) == 1 and lines[0]["requests"] == 1, (lines, srv.logs()[-3000:])
