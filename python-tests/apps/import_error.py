"""An app module whose import fails: rwsgi must exit before it listens."""

def _helper():
    raise RuntimeError("import-time-marker-7f3a")

_helper()

def application(environ, start_response):  # never reached
    start_response("200 OK", [])
    return [b""]
