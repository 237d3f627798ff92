"""A small app for the process-model tests: every answer names the worker process
that served it, so a client can tell workers apart, count recycles and see which
worker a request died with.

Routes:
  /pid            -> "<pid>"
  /sleep?s=X&tag=T -> appends "start T <pid>" to $RWSGI_TEST_STATE/sleeps, sleeps
                     X seconds, then "<pid>"
  /info           -> JSON: pid, wsgi.multiprocess, wsgi.multithread, REMOTE_ADDR,
                     wsgi.url_scheme, VERSION (module text the HUP test rewrites)
  /log?msg=X      -> writes X to wsgi.errors (the server log)
  anything else   -> "<pid>"
"""

import json
import os
import time
from urllib.parse import parse_qs

VERSION = "v1"
STATE = os.environ.get("RWSGI_TEST_STATE", "/tmp")


def _q(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _send(start_response, body, ctype="text/plain"):
    body = body.encode()
    start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body)))])
    return [body]


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    q = _q(environ)
    if path == "/sleep":
        # Tests wait for this line to know the request reached Python.
        with open(os.path.join(STATE, "sleeps"), "a") as f:
            f.write(f"start {q.get('tag', '-')} {os.getpid()}\n")
        time.sleep(float(q.get("s", "1")))
    elif path == "/info":
        return _send(start_response, json.dumps({
            "pid": os.getpid(),
            "multiprocess": environ["wsgi.multiprocess"],
            "multithread": environ["wsgi.multithread"],
            "remote_addr": environ.get("REMOTE_ADDR"),
            "url_scheme": environ["wsgi.url_scheme"],
            "version": VERSION,
        }), "application/json")
    elif path == "/log":
        environ["wsgi.errors"].write(q.get("msg", "hello") + "\n")
        environ["wsgi.errors"].flush()
    return _send(start_response, str(os.getpid()))
