"""Shows where each request ran: the IO thread (the worker's main thread, where rwsgi
runs quick bodiless requests inline with --threads 1) or a Python thread, and how many
ran at once."""

import json
import threading
import time

_lock = threading.Lock()
_now = 0
_max = 0


def _where() -> str:
    return "io" if threading.current_thread() is threading.main_thread() else "python"


def _json(start_response, doc, status="200 OK"):
    body = json.dumps(doc).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    global _now, _max
    path = environ["PATH_INFO"]
    with _lock:
        _now += 1
        _max = max(_max, _now)
    try:
        if path == "/where":
            body = environ["wsgi.input"].read()
            return _json(start_response, {
                "where": _where(), "body": body.decode(),
                "multithread": environ["wsgi.multithread"],
                "server_wait": environ["rwsgi.server_wait"],
            })
        if path == "/slow":
            time.sleep(float(environ.get("QUERY_STRING") or "0.05"))
            return _json(start_response, {"where": _where(),
                                          "server_wait": environ["rwsgi.server_wait"]})
        if path == "/chunks":
            # No Content-Length: the first chunk is sent from where the app ran, the
            # rest is produced by a Python thread while the IO thread sends it.
            start_response("200 OK", [("Content-Type", "text/plain")])

            def gen():
                for i in range(3):
                    yield f"{i}:{_where()};".encode()
            return gen()
        if path == "/write":
            write = start_response("200 OK", [("Content-Type", "text/plain")])
            write(f"w:{_where()};".encode())
            write(b"second;")
            return [b"last"]
        if path == "/max":
            with _lock:
                seen = _max
            return _json(start_response, {"max": seen})
        return _json(start_response, {"error": path}, "404 Not Found")
    finally:
        with _lock:
            _now -= 1
