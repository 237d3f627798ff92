"""Reports whether the venv-only package imports, and which interpreter runs."""

import json
import sys


def application(environ, start_response):
    try:
        import rwsgi_venv_probe  # only installed in the test's venv
        marker = rwsgi_venv_probe.MARKER
        origin = rwsgi_venv_probe.__file__
    except ImportError as e:
        marker = None
        origin = repr(e)
    body = json.dumps({
        "marker": marker,
        "origin": origin,
        "sys_version": sys.version,
        "sys_prefix": sys.prefix,
        "sys_base_prefix": sys.base_prefix,
        "sys_path": sys.path,
        "executable": sys.executable,
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
