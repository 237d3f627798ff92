"""An app whose worker dies shortly after it booted (a crashing C extension, a bad
background thread): the master must replace it, but limit the respawn rate."""

import os
import threading

threading.Timer(float(os.environ.get("CRASH_AFTER", "0.3")), lambda: os._exit(1)).start()


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
