"""APM launchers inject `sitecustomize` through PYTHONPATH and exec the server:
`opentelemetry-instrument rwsgi …` (like `ddtrace-run` and `newrelic-admin
run-program`) must instrument the app in every worker. Spans go to OpenTelemetry's
console exporter (no account, no collector) on the workers' stdout."""

import json
import os
import shutil
import sys
from pathlib import Path

import requests

from conftest import launch

APP = "apps.otel_flask:app"


def spans(stdout):
    """The JSON span objects the console exporter printed (one indented object each)."""
    out, buf, depth = [], [], 0
    for line in stdout.splitlines():
        if not buf and line.strip() != "{":
            continue
        buf.append(line)
        depth += line.count("{") - line.count("}")
        if depth == 0:
            try:
                obj = json.loads("\n".join(buf))
            except ValueError:
                obj = None
            if isinstance(obj, dict) and "context" in obj:
                out.append(obj)
            buf = []
    return out


def test_opentelemetry_instrument_traces_every_request(rwsgi_bin, tmp_path):
    launcher = Path(sys.executable).parent / "opentelemetry-instrument"
    assert launcher.exists(), "opentelemetry-distro is in requirements.txt"
    wrapper = tmp_path / "otel-rwsgi.sh"
    wrapper.write_text(f'#!/bin/sh\nexec {launcher} {rwsgi_bin} "$@"\n')
    wrapper.chmod(0o755)
    env = {
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "rwsgi-apm-test",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    srv = launch(str(wrapper), APP, ["-w", "2"], tmp_path / "rwsgi", env=env)
    for i in range(5):
        r = requests.get(f"{srv.url}/hello/n{i}", timeout=10)
        assert r.status_code == 200 and r.text == f"hello n{i}"
    # Spans are batched; the workers flush them as they exit (atexit), as a Python
    # process would.
    assert srv.stop() == 0
    got = [s for s in spans(srv.stdout_text()) if s["name"] == "GET /hello/<name>"]
    assert len(got) == 5, srv.stdout_text()[-3000:]
    targets = sorted(s["attributes"].get("http.target") or s["attributes"].get("url.path")
                     for s in got)
    assert targets == [f"/hello/n{i}" for i in range(5)]
    assert all(s["kind"] == "SpanKind.SERVER" for s in got)
    assert all(s["resource"]["attributes"]["service.name"] == "rwsgi-apm-test" for s in got)
    assert all(s["attributes"].get("http.status_code", s["attributes"].get(
        "http.response.status_code")) == 200 for s in got)
