"""Runs bjoern with N processes sharing one port through SO_REUSEPORT.

bjoern is single-process and single-threaded; to compare it at the same process count
as the others, the app is imported once, then N children each run bjoern's loop on
their own SO_REUSEPORT socket. The runner stops the whole process group.

    python bjoern_serve.py --workers 2 --port 8000 hello:app
"""

import argparse
import importlib
import os
import sys


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("app", help="module:callable")
    args = parser.parse_args()

    sys.path.insert(0, os.getcwd())
    module, _, name = args.app.partition(":")
    app = getattr(importlib.import_module(module), name or "application")

    import bjoern

    children = []
    for _ in range(args.workers):
        pid = os.fork()
        if pid == 0:
            bjoern.run(app, args.host, args.port, reuse_port=True)
            os._exit(0)
        children.append(pid)
    for _ in children:
        os.wait()


if __name__ == "__main__":
    main()
