"""A gunicorn config file that records every server hook it receives, with the
attributes real hook files read, as JSON lines in $HOOKS_LOG (one per call, any
process)."""

import json
import os

workers = 2
proc_name = "hooks-test"
custom_setting = "kept"


def _record(hook, **fields):
    fields["hook"] = hook
    fields["in_pid"] = os.getpid()
    with open(os.environ["HOOKS_LOG"], "a") as f:
        f.write(json.dumps(fields) + "\n")


def _server(server):
    return {
        "server_pid": server.pid,
        "cfg_workers": server.cfg.workers,
        "cfg_bind": server.cfg.bind,
        "cfg_timeout": server.cfg.timeout,
        "cfg_proc_name": server.cfg.proc_name,
        "cfg_custom": server.cfg.custom_setting,
        "num_workers": server.num_workers,
    }


def _worker(worker):
    return {"worker_pid": worker.pid, "worker_age": worker.age, "worker_ppid": worker.ppid}


def on_starting(server):
    server.log.info("hooks: on_starting says hello")
    _record("on_starting", **_server(server))


def on_reload(server):
    _record("on_reload", **_server(server))


def when_ready(server):
    _record("when_ready", **_server(server))


def pre_fork(server, worker):
    worker.marker = f"set-in-pre-fork-{worker.age}"
    _record("pre_fork", **_server(server), **_worker(worker))


def post_fork(server, worker):
    worker.log.info("hooks: post_fork in %s", worker.pid)
    _record("post_fork", **_server(server), **_worker(worker))


def post_worker_init(worker):
    _record("post_worker_init", wsgi_callable=callable(worker.wsgi), **_worker(worker))


def worker_int(worker):
    _record("worker_int", **_worker(worker))


def worker_abort(worker):
    _record("worker_abort", **_worker(worker))


def child_exit(server, worker):
    _record("child_exit", marker=getattr(worker, "marker", None), **_server(server), **_worker(worker))


def worker_exit(server, worker):
    _record("worker_exit", **_server(server), **_worker(worker))


def nworkers_changed(server, new_value, old_value):
    _record("nworkers_changed", new=new_value, old=old_value, **_server(server))


def on_exit(server):
    _record("on_exit", **_server(server))
