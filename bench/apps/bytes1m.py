"""A 1 MiB response from one preallocated bytes object: tests response streaming."""

BODY = b"x" * (1024 * 1024)
HEADERS = [
    ("Content-Type", "application/octet-stream"),
    ("Content-Length", str(len(BODY))),
]


def app(environ, start_response):
    start_response("200 OK", HEADERS)
    return [BODY]


application = app
