"""The --preload tests' app. At import it appends its pid to $RWSGI_TEST_STATE/imports
and reads $RWSGI_TEST_STATE/version (the HUP test rewrites it; $RWSGI_TEST_STATE/
import_sleep makes the import sleep that many seconds, import_fail makes it raise),
and registers an
``os.register_at_fork`` handler, so every answer shows which process imported the
code the worker runs and whether Python's fork protocol ran in the worker.

Routes:
  /           -> JSON: pid, ppid, import_pid, version, at_fork (pids the handler saw)
  /orphan     -> forks a grandchild that outlives its parent by 0.2 s, then exits:
                 an orphan for the master (a subreaper under --preload) to reap
  /gc         -> JSON: gc.get_freeze_count() (now and before the import), and this
                 process's Private_Dirty (kB) before and after a full gc.collect();
                 the collector's threshold and
                 whether it is enabled; how many collections ran during the import
                 (PRELOAD_APP_GC_THRESHOLD="a,b,c" and PRELOAD_APP_GC_DISABLE make
                 the import set its own)

With PRELOAD_APP_BALLAST set, the import also builds a few hundred thousand
GC-tracked objects (a large app's import), which a collection in a worker would
otherwise copy page by page.
"""

import gc
import json
import os
import time

# What the interpreter froze itself before the app (CPython 3.12 freezes a few hundred
# objects at start-up; 3.10, 3.11 and 3.13 none).
FROZEN_BEFORE_IMPORT = gc.get_freeze_count()
# Collections that ran while this module was imported (the first thing it does, so
# almost all of the import is counted).
COLLECTIONS = []
gc.callbacks.append(lambda phase, info: phase == "start" and COLLECTIONS.append(info["generation"]))
# The app's own collector settings, made at import: kept in the workers.
if os.environ.get("PRELOAD_APP_GC_THRESHOLD"):
    gc.set_threshold(*map(int, os.environ["PRELOAD_APP_GC_THRESHOLD"].split(",")))
if os.environ.get("PRELOAD_APP_GC_DISABLE"):
    gc.disable()

STATE = os.environ.get("RWSGI_TEST_STATE", "/tmp")
IMPORT_PID = os.getpid()
with open(os.path.join(STATE, "imports"), "a") as f:
    f.write(f"{IMPORT_PID}\n")
# The HUP tests: a re-import that takes a while, or one that fails.
try:
    with open(os.path.join(STATE, "import_sleep")) as f:
        time.sleep(float(f.read()))
except OSError:
    pass
if os.path.exists(os.path.join(STATE, "import_fail")):
    raise RuntimeError("preload-app-import-fails-4b1e")
try:
    with open(os.path.join(STATE, "version")) as f:
        VERSION = f.read().strip()
except OSError:
    VERSION = "none"

if os.environ.get("PRELOAD_APP_THREAD"):
    import threading
    threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()

if os.environ.get("PRELOAD_APP_BALLAST"):
    BALLAST = [(i, [i]) for i in range(300_000)]

IMPORT_COLLECTIONS = len(COLLECTIONS)
gc.callbacks.clear()

# A stack dump on SIGUSR2 (faulthandler installs a C handler at import): it stays
# in the forked workers.
if os.environ.get("PRELOAD_APP_FAULTHANDLER"):
    import faulthandler
    import signal
    FAULTS = open(os.path.join(STATE, "faults"), "w")
    faulthandler.register(signal.SIGUSR2, file=FAULTS, all_threads=True)

AT_FORK = []
os.register_at_fork(after_in_child=lambda: AT_FORK.append(os.getpid()))


def _orphan():
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            time.sleep(0.2)
            os._exit(0)
        os._exit(0)
    os.waitpid(child, 0)


def _private_dirty_kb():
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Private_Dirty:"):
                return int(line.split()[1])
    return 0


def _gc():
    before = _private_dirty_kb()
    gc.collect()
    return {"frozen": gc.get_freeze_count(), "before_kb": before,
            "after_kb": _private_dirty_kb(), "threshold": gc.get_threshold(),
            "enabled": gc.isenabled(), "import_collections": IMPORT_COLLECTIONS,
            "frozen_before_import": FROZEN_BEFORE_IMPORT}


def application(environ, start_response):
    if environ.get("PATH_INFO") == "/orphan":
        _orphan()
    if environ.get("PATH_INFO") == "/gc":
        body = json.dumps(_gc()).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    body = json.dumps({
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "import_pid": IMPORT_PID,
        "version": VERSION,
        "at_fork": AT_FORK,
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]
