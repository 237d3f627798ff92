"""rwsgi: a WSGI server in Rust that embeds CPython and measures request queue time.

This package is the launcher of the wheel: ``rwsgi`` on the PATH and ``python -m
rwsgi`` start the server binary on the interpreter that runs them (see _launch.py).
"""
