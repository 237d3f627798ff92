"""An I/O-bound app: sleeps 10 ms (releasing the GIL), like a database call.

Its service time is known, so queue time can be told apart from work: with T threads
per worker and W workers, capacity is W*T/0.010 requests per second.
"""

import time

BODY = b"slept"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    time.sleep(0.010)
    start_response("200 OK", HEADERS)
    return [BODY]


application = app
