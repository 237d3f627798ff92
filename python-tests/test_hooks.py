"""gunicorn's server hooks from a Python config file (`-c FILE.py`, `./gunicorn.conf.py`):
each runs at gunicorn's moment, in the process gunicorn runs it in, with the
arguments and attributes real hook files read. configs/all_hooks.py records every
call as a JSON line."""

import json
import os
import signal
import time

import pytest

from conftest import TESTS_DIR, children_of, exchange, launch
from loadclient import alive, wait_workers

APP = "apps.process_app:application"
ALL_HOOKS = TESTS_DIR / "configs" / "all_hooks.py"


def records(path):
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def wait_record(path, pred, timeout=10.0, what="hook call"):
    deadline = time.monotonic() + timeout
    while True:
        got = [r for r in records(path) if pred(r)]
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout}s; got {records(path)}")
        time.sleep(0.05)


def names(recs):
    return [r["hook"] for r in recs]


def test_every_hook_runs_at_gunicorns_moment_with_gunicorns_arguments(start_server, tmp_path):
    log = tmp_path / "hooks.jsonl"
    srv = start_server(APP, "-c", ALL_HOOKS, "-w", "2", "--max-requests", "3",
                       env={"HOOKS_LOG": str(log)})
    master = srv.pid
    first = wait_workers(srv, 2)
    wait_record(log, lambda r: r["hook"] == "when_ready")
    wait_record(log, lambda r: r["hook"] == "post_worker_init" and r["worker_age"] == 2)
    start = records(log)
    # gunicorn's start-up order: the worker count is set, then on_starting, then
    # each worker's pre_fork (master), post_fork and post_worker_init (worker).
    assert names(start)[:2] == ["nworkers_changed", "on_starting"], names(start)
    assert start[0]["new"] == 2 and start[0]["old"] is None
    for r in start:
        if r["hook"] in ("on_starting", "nworkers_changed", "when_ready", "pre_fork"):
            assert r["in_pid"] == master, r
            assert r["server_pid"] == master
    on_starting = start[1]
    assert on_starting["cfg_workers"] == 2
    assert on_starting["cfg_bind"] == [f"127.0.0.1:{srv.port}"]
    assert on_starting["cfg_timeout"] == 30
    assert on_starting["cfg_proc_name"] == "hooks-test"  # the file's own value
    assert on_starting["cfg_custom"] == "kept"
    assert "hooks: on_starting says hello" in srv.stderr_text()
    for age in (1, 2):
        seq = [r for r in start if r.get("worker_age") == age]
        assert names(seq) == ["pre_fork", "post_fork", "post_worker_init"], seq
        pre, post, init = seq
        assert pre["worker_pid"] is None  # not started yet
        assert post["in_pid"] == post["worker_pid"] == init["worker_pid"] == init["in_pid"]
        assert post["in_pid"] in first
        assert post["server_pid"] == master and post["worker_ppid"] == master
        assert init["wsgi_callable"] is True
    assert "hooks: post_fork in" in srv.stderr_text()

    # --max-requests 3: a worker is recycled; worker_exit runs in it, child_exit in
    # the master with the same worker object pre_fork got (its marker kept).
    for _ in range(12):
        assert exchange(srv, "GET", "/pid").status == 200
    exited = wait_record(log, lambda r: r["hook"] == "child_exit", what="child_exit")[0]
    assert exited["in_pid"] == master
    assert exited["marker"] == f"set-in-pre-fork-{exited['worker_age']}"
    assert exited["worker_pid"] in first
    w_exit = [r for r in records(log) if r["hook"] == "worker_exit"
              and r["worker_pid"] == exited["worker_pid"]]
    assert w_exit and w_exit[0]["in_pid"] == exited["worker_pid"]
    replacement = wait_record(log, lambda r: r["hook"] == "pre_fork" and r["worker_age"] >= 3)

    # TTIN / TTOU: nworkers_changed(server, new, old).
    srv.signal(signal.SIGTTIN)
    wait_record(log, lambda r: r["hook"] == "nworkers_changed" and r["new"] == 3 and r["old"] == 2)
    srv.signal(signal.SIGTTOU)
    wait_record(log, lambda r: r["hook"] == "nworkers_changed" and r["new"] == 2 and r["old"] == 3)

    # HUP: on_reload in the master, then a new generation replaces the workers.
    before_hup = wait_workers(srv, 2, timeout=15)
    srv.signal(signal.SIGHUP)
    reload = wait_record(log, lambda r: r["hook"] == "on_reload")[0]
    assert reload["in_pid"] == master
    after_hup = wait_workers(srv, 2, timeout=20, gone=before_hup)

    # QUIT to one worker: worker_int in it, then worker_exit.
    victim = after_hup[0]
    wait_record(log, lambda r: r["hook"] == "post_worker_init" and r["worker_pid"] == victim)
    time.sleep(0.5)
    os.kill(victim, signal.SIGQUIT)
    wait_record(log, lambda r: r["hook"] == "worker_int" and r["in_pid"] == victim)
    wait_record(log, lambda r: r["hook"] == "child_exit" and r["worker_pid"] == victim)
    # Its replacement has booted (a worker killed while importing runs no hook).
    fresh = set(wait_workers(srv, 2, timeout=15, gone=[victim]))
    for pid in fresh:
        wait_record(log, lambda r: r["hook"] == "post_worker_init" and r["worker_pid"] == pid)
    time.sleep(0.3)

    srv.signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=20) == 0
    final = records(log)
    assert final[-1]["hook"] == "on_exit" and final[-1]["in_pid"] == master
    # Every worker that booted exited through worker_exit and was seen by child_exit.
    booted = {r["worker_pid"] for r in final if r["hook"] == "post_fork"}
    assert booted == {r["worker_pid"] for r in final if r["hook"] == "worker_exit"}
    assert booted == {r["worker_pid"] for r in final if r["hook"] == "child_exit"}
    assert replacement


def test_default_gunicorn_conf_py_is_read_from_the_working_directory(start_server, tmp_path):
    log = tmp_path / "hooks.jsonl"
    (tmp_path / "gunicorn.conf.py").write_text(ALL_HOOKS.read_text())
    srv = start_server(APP, cwd=tmp_path, env={"HOOKS_LOG": str(log)})
    wait_record(log, lambda r: r["hook"] == "post_worker_init")
    assert names(records(log))[:2] == ["nworkers_changed", "on_starting"]
    assert exchange(srv, "GET", "/pid").status == 200


def test_python_module_config(start_server, tmp_path):
    log = tmp_path / "hooks.jsonl"
    srv = start_server(APP, "-c", "python:configs.all_hooks", "--pythonpath", TESTS_DIR,
                       env={"HOOKS_LOG": str(log), "PYTHONPATH": str(TESTS_DIR)})
    wait_record(log, lambda r: r["hook"] == "post_worker_init")
    assert exchange(srv, "GET", "/pid").status == 200


def test_a_raising_on_starting_stops_before_anything_listens(rwsgi_bin, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("def on_starting(server):\n    raise RuntimeError('refusing to start')\n")
    srv = launch(rwsgi_bin, APP, ["-c", conf], tmp_path / "rwsgi", wait=False)
    assert srv.proc.wait(timeout=20) == 1
    err = srv.stderr_text()
    assert "on_starting hook raised" in err and "RuntimeError: refusing to start" in err
    assert 'conf.py", line 2, in on_starting' in err


@pytest.mark.parametrize("preload", [False, True], ids=["exec", "preload"])
def test_a_term_during_start_up_is_a_clean_stop(rwsgi_bin, tmp_path, preload):
    # Before the supervisor handles signals (on_starting, the --preload fork, the
    # runtime) the master notes them and handles them once it can: a TERM there is a
    # stop with exit 0, not a death by signal that takes the --preload process along.
    # A subprocess of the hook keeps the default actions (a handler, not a blocked
    # mask, holds the master's signals).
    marker = tmp_path / "starting"
    conf = tmp_path / "conf.py"
    conf.write_text(
        "import pathlib, subprocess, time\n"
        "def on_starting(server):\n"
        "    child = subprocess.Popen(['sleep', '30'])\n"
        f"    pathlib.Path({str(marker)!r}).write_text(str(child.pid))\n"
        "    time.sleep(2)\n"
    )
    args = ["-c", conf, "-w", "2"] + (["--preload"] if preload else [])
    srv = launch(rwsgi_bin, APP, args, tmp_path / "rwsgi", wait=False)
    deadline = time.monotonic() + 20
    while not (marker.exists() and marker.read_text()):
        assert time.monotonic() < deadline, srv.stderr_text()
        time.sleep(0.02)
    hook_child = int(marker.read_text())
    before = children_of(srv.proc.pid)
    srv.proc.send_signal(signal.SIGTERM)
    os.kill(hook_child, signal.SIGTERM)
    assert srv.proc.wait(timeout=20) == 0, srv.stderr_text()
    err = srv.stderr_text()
    if preload:
        assert "stopped while the --preload process imported the app" in err, err
    else:
        assert "Handling signal: term" in err, err
    deadline = time.monotonic() + 5
    while any(alive(p) for p in before + [hook_child]):
        assert time.monotonic() < deadline, [p for p in before if alive(p)]
        time.sleep(0.02)


def test_a_config_file_that_raises_gives_its_traceback_and_exit_1(rwsgi_bin, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("workers = 2\nimport no_such_module_here\n")
    srv = launch(rwsgi_bin, APP, ["-c", conf], tmp_path / "rwsgi", wait=False)
    assert srv.proc.wait(timeout=20) == 1
    err = srv.stderr_text()
    assert f"Failed to read config file: {conf}" in err
    assert "ModuleNotFoundError: No module named 'no_such_module_here'" in err
    assert "Listening at" not in err


def test_a_hook_name_bound_to_a_non_function_is_refused(rwsgi_bin, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("when_ready = 'not a function'\n")
    srv = launch(rwsgi_bin, APP, ["-c", conf], tmp_path / "rwsgi", wait=False)
    assert srv.proc.wait(timeout=20) == 1
    assert "when_ready must be a function (it is a 'str')" in srv.stderr_text()


def test_a_raising_child_exit_is_logged_and_the_server_keeps_serving(start_server, tmp_path):
    conf = tmp_path / "conf.py"
    conf.write_text("def child_exit(server, worker):\n    raise ValueError('boom in child_exit')\n")
    srv = start_server(APP, "-c", conf, "--max-requests", "2")
    for _ in range(6):
        assert exchange(srv, "GET", "/pid").status == 200
    srv.wait_for_log("ValueError: boom in child_exit", timeout=10)
    assert exchange(srv, "GET", "/pid").status == 200


@pytest.mark.parametrize("threads,hooks", [("1", True), ("4", False)])
def test_a_timed_out_worker_logs_the_stuck_requests_python_stack(start_server, tmp_path,
                                                                  threads, hooks):
    """gunicorn's most reported complaint is a bare "WORKER TIMEOUT": here the worker
    says which request was stuck, for how long, and where in the app (with or
    without a config file; with one, worker_abort runs too)."""
    log = tmp_path / "hooks.jsonl"
    conf = ["-c", ALL_HOOKS] if hooks else []
    # The file says `workers = 2`; the command line wins, as in gunicorn.
    srv = start_server(APP, *conf, "-w", "1", "--timeout", "1", "--threads", threads,
                       env={"HOOKS_LOG": str(log)})
    [worker] = wait_workers(srv, 1)
    import socket
    s = socket.create_connection(("127.0.0.1", srv.port))
    s.sendall(b"GET /sleep?s=60&tag=stuck HTTP/1.1\r\nHost: x\r\n\r\n")
    text = srv.wait_for_log("Python stack of its thread", timeout=15, stream="stderr")
    s.close()
    assert "WORKER TIMEOUT: 'GET /sleep' has run for" in text
    assert "(--timeout 1s)" in text
    # The app's own frame, at the line that blocks.
    assert 'process_app.py", line 41, in application' in text
    assert "time.sleep(float(q.get(\"s\", \"1\")))" in text
    if hooks:
        abort = wait_record(log, lambda r: r["hook"] == "worker_abort")[0]
        assert abort["in_pid"] == abort["worker_pid"] == worker
        wait_record(log, lambda r: r["hook"] == "worker_exit" and r["worker_pid"] == worker)
        wait_record(log, lambda r: r["hook"] == "child_exit" and r["worker_pid"] == worker)
    # A replacement serves.
    [fresh] = wait_workers(srv, 1, timeout=15, gone=[worker])
    assert not alive(worker)
    deadline = time.monotonic() + 10
    while exchange(srv, "GET", "/pid").status != 200:
        assert time.monotonic() < deadline
    assert fresh != worker


REQUEST_HOOKS = TESTS_DIR / "configs" / "request_hooks.py"


@pytest.mark.parametrize("threads", ["1", "4"])
def test_pre_and_post_request_see_gunicorns_req_and_resp(start_server, tmp_path, threads):
    log = tmp_path / "hooks.jsonl"
    srv = start_server(APP, "-c", REQUEST_HOOKS, "--threads", threads,
                       env={"HOOKS_LOG": str(log)})
    headers = [("X-Test", "a"), ("X-Multi", "1"), ("X-Multi", "2")]
    for i in range(3):
        r = exchange(srv, "GET", f"/pid?x={i}", headers=headers)
        assert r.status == 200
    # post_request runs after the response went out: wait for the third one.
    deadline = time.monotonic() + 10
    while names(records(log)).count("post_request") < 3:
        assert time.monotonic() < deadline, records(log)
        time.sleep(0.05)
    recs = records(log)
    assert sorted(names(recs)) == ["post_request"] * 3 + ["pre_request"] * 3, names(recs)
    for i in range(3):
        # Each request's pre_request before its post_request. (With several threads
        # the next request may start while post_request still runs: the client has
        # its response by then.)
        [pre_at] = [n for n, r in enumerate(recs)
                    if r["hook"] == "pre_request" and r["uri"] == f"/pid?x={i}"]
        [post_at] = [n for n, r in enumerate(recs)
                     if r["hook"] == "post_request" and r["uri"] == f"/pid?x={i}"]
        assert pre_at < post_at, names(recs)
        pre, post = recs[pre_at], recs[post_at]
        assert pre["in_pid"] == pre["worker_pid"] == post["worker_pid"]
        assert (pre["method"], pre["path"], pre["uri"], pre["query"]) == \
            ("GET", "/pid", f"/pid?x={i}", f"x={i}")
        assert pre["version"] == [1, 1]
        # gunicorn keeps header names upper-cased, in order, repeats apart.
        assert [h for h in pre["headers"] if h[0].startswith("X-")] == \
            [["X-TEST", "a"], ["X-MULTI", "1"], ["X-MULTI", "2"]]
        assert post["seen_by_pre"] is True  # the same req object
        assert post["status"] == "200 OK" and post["status_code"] == 200
        assert post["path_info"] == "/pid" and post["x_test"] == "a"
        assert ["content-type", "text/plain"] in [[k.lower(), v] for k, v in post["resp_headers"]]
        assert post["sent"] == len(str(pre["worker_pid"]))
    assert "REQUEST - GET (/pid)" in srv.stderr_text()


def test_a_raising_pre_request_fails_that_request_with_500(start_server, tmp_path):
    log = tmp_path / "hooks.jsonl"
    srv = start_server(APP, "-c", REQUEST_HOOKS, env={"HOOKS_LOG": str(log)})
    r = exchange(srv, "GET", "/refuse")
    assert r.status == 500
    srv.wait_for_log("PermissionError: pre_request refuses /refuse", timeout=10)
    assert "pre_request hook raised" in srv.stderr_text()
    # post_request still runs for it (gunicorn runs it in a finally), and the
    # worker goes on serving.
    wait_record(log, lambda r: r["hook"] == "post_request" and r["path"] == "/refuse"
                and r["status_code"] == 500)
    assert exchange(srv, "GET", "/pid").status == 200


RELOAD_APP = '''
import os

def application(environ, start_response):
    body = f"{os.getpid()} {os.environ.get('GREETING', '-')} {environ['wsgi.multithread']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

RELOAD_CONF = '''
import json

bind = ["127.0.0.1:{port}"]
workers = {workers}
threads = {threads}
raw_env = ["GREETING={greeting}"]


def _log(**kw):
    with open({log!r}, "a") as f:
        f.write(json.dumps(kw) + "\\n")


def on_reload(server):
    _log(hook="on_reload", version={greeting!r}, cfg_workers=server.cfg.workers)


def nworkers_changed(server, new, old):
    _log(hook="nworkers_changed", version={greeting!r}, new=new, old=old)
'''


def test_hup_reads_the_config_file_again_and_the_new_workers_serve(rwsgi_bin, tmp_path):
    """gunicorn's HUP: the master reads its configuration again (here
    ./gunicorn.conf.py) and replaces the workers gracefully. The new worker count,
    threads and raw_env serve; the hooks are the file's new ones; a changed bind is
    refused with one line (the sockets stay); a file that no longer reads changes
    nothing."""
    import socket

    import requests

    from conftest import READY_TIMEOUT, free_port, wait_ready

    port, other = free_port(), free_port()
    log = tmp_path / "hooks.jsonl"
    conf = tmp_path / "gunicorn.conf.py"
    (tmp_path / "reloadapp.py").write_text(RELOAD_APP)

    def write(workers, threads, greeting, bind_port):
        conf.write_text(RELOAD_CONF.format(port=bind_port, workers=workers, threads=threads,
                                           greeting=greeting, log=str(log)))

    def serving(n, greeting, multithread):
        """The pids that answered, once n distinct ones did; every answer as expected."""
        pids, deadline = set(), time.monotonic() + 20
        while len(pids) < n and time.monotonic() < deadline:
            pid, got, mt = requests.get(f"http://127.0.0.1:{port}/", timeout=10,
                                        headers={"Connection": "close"}).text.split()
            assert (got, mt) == (greeting, str(multithread)), (got, mt)
            pids.add(int(pid))
        return pids

    write(2, 1, "v1", port)
    srv = launch(rwsgi_bin, "reloadapp:application", [], tmp_path / "rwsgi", bind=None,
                 chdir=tmp_path, cwd=tmp_path, wait=False)
    try:
        srv.port = port
        wait_ready(srv, READY_TIMEOUT)
        before = wait_workers(srv, 2, timeout=15)
        assert serving(2, "v1", False) == set(before)

        write(3, 2, "v2", other)
        srv.signal(signal.SIGHUP)
        after = wait_workers(srv, 3, timeout=30, gone=before)
        assert serving(3, "v2", True) == set(after)
        text = srv.wait_for_log("HUP: --bind is now")
        line = next(l for l in text.splitlines() if "HUP: --bind is now" in l)
        assert f"127.0.0.1:{other}" in line and f"keeps listening on http://127.0.0.1:{port}" in line
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", other), timeout=2).close()
        # The hooks that ran on HUP are the file's new ones, with the new settings.
        changed = wait_record(log, lambda r: r["hook"] == "nworkers_changed" and r["new"] == 3)
        assert changed[0] == {"hook": "nworkers_changed", "version": "v2", "new": 3, "old": 2}
        reload = wait_record(log, lambda r: r["hook"] == "on_reload")
        assert reload[0] == {"hook": "on_reload", "version": "v2", "cfg_workers": 3}

        # A file that no longer reads: one ERROR line, the workers stay and serve.
        conf.write_text("workers = (\n")
        srv.signal(signal.SIGHUP)
        srv.wait_for_log("HUP: the configuration did not read", timeout=10)
        time.sleep(1.0)
        assert set(wait_workers(srv, 3, timeout=5)) == set(after)
        assert serving(3, "v2", True) == set(after)
        assert srv.alive()
    finally:
        srv.stop()
