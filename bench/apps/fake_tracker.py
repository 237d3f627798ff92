"""A stand-in for rwsgi's tracker, to check the scenario's plumbing before rwsgi exists.

The app sleeps 10 ms like sleep.py, and at the moment it is called it measures
queue time as rwsgi defines it (now - the X-RequestTime stamp, nginx $msec format).
It exposes the running sum and count the way rwsgi's prometheus sink does, as
rwsgi_queue_time_seconds_sum / _count, on a separate port (FAKE_METRICS_PORT) so
that scrapes do not queue behind the load. Run it in ONE worker process (the
counters live in that process), with threads:

    FAKE_METRICS_PORT=9101 gunicorn -w 1 -k gthread --threads 8 fake_tracker:app
"""

import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_lock = threading.Lock()
_sum = 0.0
_count = 0

BODY = b"slept"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    global _sum, _count
    stamp = environ.get("HTTP_X_REQUESTTIME")
    if stamp:
        try:
            waited = max(0.0, time.time() - float(stamp))
        except ValueError:
            waited = None
        if waited is not None:
            with _lock:
                _sum += waited
                _count += 1
    time.sleep(0.010)
    start_response("200 OK", HEADERS)
    return [BODY]


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self):
        with _lock:
            text = (
                "# TYPE rwsgi_queue_time_seconds summary\n"
                f"rwsgi_queue_time_seconds_sum {_sum}\n"
                f"rwsgi_queue_time_seconds_count {_count}\n"
            ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)

    def log_message(self, *args):
        pass


_port = os.environ.get("FAKE_METRICS_PORT")
if _port:
    _server = ThreadingHTTPServer(("127.0.0.1", int(_port)), _Metrics)
    threading.Thread(target=_server.serve_forever, daemon=True).start()

application = app
