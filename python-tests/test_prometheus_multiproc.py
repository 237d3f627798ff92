"""prometheus_client's multiprocess mode, set up as its docs say for gunicorn
(PROMETHEUS_MULTIPROC_DIR and a child_exit hook calling mark_process_dead), with
workers recycled by --max-requests: the dead workers' live-gauge files are removed
and the Flask app's /metrics is right."""

import re
import time

import pytest
import requests

from conftest import TESTS_DIR
from loadclient import workers_of

APP = "apps.prom_multiproc:app"
CONF = TESTS_DIR / "configs" / "prometheus_multiproc.py"


def sample(text, name, labels=""):
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert m, f"{name}{labels} not in:\n{text}"
    return float(m.group(1))


def run(start_server, tmp_path, with_hook):
    mp = tmp_path / "prom"
    mp.mkdir()
    args = ["-c", CONF] if with_hook else []
    srv = start_server(APP, *args, "-w", "2", "--max-requests", "5",
                       env={"PROMETHEUS_MULTIPROC_DIR": str(mp)})
    served = set()
    total = 0
    deadline = time.monotonic() + 40
    # Until two generations of workers have been recycled (new ones take a moment to
    # import Flask while the old ones keep serving).
    while len(served) < 6:
        r = requests.get(srv.url + "/work", timeout=10)
        assert r.status_code == 200
        served.add(int(r.text))
        total += 1
        assert time.monotonic() < deadline, f"workers were not recycled: {served}"
        time.sleep(0.02)
    # Wait until the recycled workers are reaped and two fresh ones serve.
    deadline = time.monotonic() + 20
    while True:
        live = workers_of(srv.pid)
        text = requests.get(srv.url + "/metrics", timeout=10).text
        if len(live) == 2 and (not with_hook or sample(text, "app_live_workers") == 2):
            break
        assert time.monotonic() < deadline, f"live={live}\n{text}"
        time.sleep(0.2)
    return srv, mp, served, total, text


def test_child_exit_marks_recycled_workers_dead(start_server, tmp_path):
    srv, mp, served, total, text = run(start_server, tmp_path, with_hook=True)
    assert sample(text, "app_requests_total", '{route="work"}') == total
    assert sample(text, "app_live_workers") == 2
    live = set(workers_of(srv.pid))
    gauge_pids = {int(p.stem.rsplit("_", 1)[1]) for p in mp.glob("gauge_livesum_*.db")}
    # Only live workers keep a live-gauge file (a worker that just started
    # writes its own); every recycled worker's file is gone.
    assert not gauge_pids & (served - live), (gauge_pids, served, live)
    # Counters keep every worker's file: the total above includes the dead.
    counter_pids = {int(p.stem.rsplit("_", 1)[1]) for p in mp.glob("counter_*.db")}
    assert served <= counter_pids


def test_without_the_hook_dead_workers_stay_counted(start_server, tmp_path):
    """The control: the same run without the config file counts dead workers as live."""
    srv, mp, served, total, text = run(start_server, tmp_path, with_hook=False)
    time.sleep(0.5)
    text = requests.get(srv.url + "/metrics", timeout=10).text
    assert sample(text, "app_live_workers") > 2
