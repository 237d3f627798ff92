"""App for the queue-time tests: sleeps on demand, shows what rwsgi measured, counts calls.

* ``/sleep?ms=N``  sleeps N milliseconds, then answers like ``/queue``; on entry it
                   appends ``sleep <pid>`` to ``$RWSGI_TEST_STATE/sleeps`` (any worker).
* ``/queue``       JSON ``{"queue_time": environ["rwsgi.queue_time"], "server_wait": ...,
                   "pid": ...}`` – what the app sees of rwsgi's measurement.
* ``/calls``       JSON ``{"calls": {path: n}, "pid": ...}``: how often the app was called
                   per path in this worker process (``/calls`` itself not counted).
* anything else    ``ok``.
"""

import json
import os
import threading
import time
from urllib.parse import parse_qs

_lock = threading.Lock()
_calls: dict = {}


def _json(start_response, obj):
    body = json.dumps(obj).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/calls":
        with _lock:
            calls = dict(_calls)
        return _json(start_response, {"calls": calls, "pid": os.getpid()})
    with _lock:
        _calls[path] = _calls.get(path, 0) + 1
    if path in ("/queue", "/sleep"):
        if path == "/sleep":
            state = os.environ.get("RWSGI_TEST_STATE")
            if state:
                with open(os.path.join(state, "sleeps"), "a") as f:
                    f.write(f"sleep {os.getpid()}\n")
            ms = float(parse_qs(environ.get("QUERY_STRING", "")).get("ms", ["100"])[0])
            time.sleep(ms / 1000.0)
        return _json(start_response, {
            "queue_time": environ.get("rwsgi.queue_time", "absent"),
            "server_wait": environ.get("rwsgi.server_wait", "absent"),
            "pid": os.getpid(),
        })
    body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
