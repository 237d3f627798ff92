"""Load shedding (issue 4): `--max-queue-time SECS` answers 503 with Retry-After, without
calling the app, once a request has already waited longer, and counts it as shed.

Without a proxy stamp the wait is `server_wait` (a burst queued inside rwsgi); with a
trusted stamp it is `queue_time` (a request that queued in front of rwsgi). The app
counts its own calls, so a shed request that reached it would show.
"""

import time

import requests

from conftest import free_port, preconnected_burst, report_lines, settled_metrics

APP = "apps.queue_app:application"
HEADER = "X-RequestTime"
TIMEOUT = 15


def start_shedding(start_server, *args):
    mport = free_port()
    srv = start_server(
        APP, "--workers", "1", "--threads", "1", "--max-queue-time", "0.2",
        "--log-format", "json", "--notify", "log", "--notify", "prometheus",
        "--metrics-bind", f"127.0.0.1:{mport}", "--notify-interval", "1", *args)
    return srv, f"http://127.0.0.1:{mport}/metrics"


def app_calls(srv) -> dict:
    return requests.get(srv.url + "/calls", timeout=TIMEOUT).json()["calls"]


def test_burst_beyond_max_queue_time_is_shed(start_server):
    srv, metrics_url = start_shedding(start_server)
    # 150 ms each on one thread: the first two start within 0.2 s, the rest would wait
    # 300 ms or more and are shed.
    burst = 8
    resps = preconnected_burst(srv.host, srv.port, ["/sleep?ms=150"] * burst)
    ok = [r for r in resps if r.status == 200]
    shed = [r for r in resps if r.status == 503]
    assert len(ok) + len(shed) == burst, [(r.status, r.text) for r in resps]
    assert ok and shed, [r.status for r in resps]
    for r in shed:
        retry = r.header("Retry-After")
        assert retry is not None and retry.isdigit() and int(retry) >= 1, r.headers
        assert "queue time" in r.text, r.text

    # The app ran exactly for the 200s.
    assert app_calls(srv).get("/sleep", 0) == len(ok)

    m = settled_metrics(srv, metrics_url)
    assert m.get("rwsgi_shed_total") == len(shed)
    assert m.get("rwsgi_requests_total", status_class="5xx") == len(shed)
    assert m.get("rwsgi_requests_total", status_class="2xx") == len(ok) + 1  # + /calls
    # Shed requests never reached the app: app_time only for the served ones.
    assert m.get("rwsgi_app_time_seconds_count") == len(ok) + 1
    # Their wait is still measured (it is what an autoscaler must see): each shed
    # request had waited more than 0.2 s, so none of them is in the 0.1 s bucket.
    assert m.get("rwsgi_server_wait_seconds_count") == burst + 1
    assert m.get("rwsgi_server_wait_seconds_bucket", le="0.1") <= burst + 1 - len(shed)
    lines = report_lines(srv)
    assert sum(l["shed"] for l in lines) == len(shed)


def test_stamp_older_than_max_queue_time_is_shed_at_once(start_server):
    srv, metrics_url = start_shedding(start_server, "--queue-header", HEADER)

    fresh = requests.get(srv.url + "/queue", headers={HEADER: f"{time.time():.3f}"}, timeout=TIMEOUT)
    assert fresh.status_code == 200, fresh.text

    # Waited 5 s in front of rwsgi (per the proxy): no queue here, shed anyway.
    t0 = time.monotonic()
    old = requests.get(srv.url + "/queue", headers={HEADER: f"{time.time() - 5:.3f}"}, timeout=TIMEOUT)
    assert old.status_code == 503, old.text
    assert old.headers.get("Retry-After", "").isdigit(), old.headers
    assert time.monotonic() - t0 < 2

    assert app_calls(srv).get("/queue", 0) == 1

    m = settled_metrics(srv, metrics_url)
    assert m.get("rwsgi_shed_total") == 1
    assert m.get("rwsgi_requests_total", status_class="5xx") == 1
    assert m.get("rwsgi_queue_stamps_total", result="ok") == 2
    # The shed request's queue time is recorded: one sample above 2.5 s.
    assert m.get("rwsgi_queue_time_seconds_count") == 2
    assert m.get("rwsgi_queue_time_seconds_bucket", le="2.5") == 1
    assert m.get("rwsgi_queue_time_seconds_sum") >= 5


def test_wait_inside_rwsgi_sheds_even_when_the_stamp_says_future(start_server):
    # The proxy's clock runs 30 s ahead (within --queue-max-age, so the stamps count
    # as `future`, queue time 0). The requests still queue inside rwsgi, and that wait
    # (server_wait, monotonic, certain) is beyond --max-queue-time: they must be shed.
    srv, metrics_url = start_shedding(start_server, "--queue-header", HEADER)
    burst = 8
    resps = preconnected_burst(srv.host, srv.port, ["/sleep?ms=150"] * burst,
                               headers=lambda _: {HEADER: f"{time.time() + 30:.3f}"})
    statuses = [r.status for r in resps]
    assert set(statuses) <= {200, 503}, statuses
    shed = statuses.count(503)
    assert 0 < shed < burst, statuses
    assert app_calls(srv).get("/sleep", 0) == burst - shed

    m = settled_metrics(srv, metrics_url)
    assert m.get("rwsgi_shed_total") == shed
    assert m.get("rwsgi_queue_stamps_total", result="future") == burst
