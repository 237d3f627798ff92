"""A Flask app with prometheus_client in multiprocess mode, as its docs set it up
for gunicorn: metrics live in files under $PROMETHEUS_MULTIPROC_DIR, one set per
worker pid, and /metrics merges them.

- app_requests_total{route}: counts /work requests across every worker, dead ones
  included (counters keep their files).
- app_live_workers: each worker sets 1 at import; `livesum` adds only live
  processes' values, which needs child_exit to call mark_process_dead(worker.pid).
"""

import os

from flask import Flask, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
    multiprocess,
)

app = Flask(__name__)
REQUESTS = Counter("app_requests", "Requests served", ["route"])
LIVE = Gauge("app_live_workers", "One per live worker", multiprocess_mode="livesum")
LIVE.set(1)


@app.route("/work")
def work():
    REQUESTS.labels("work").inc()
    return str(os.getpid())


@app.route("/metrics")
def metrics():
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
