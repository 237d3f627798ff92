"""``--preload`` (gunicorn's ``preload_app``): the app is imported once, in a process
the master starts for it, and every worker is forked from that process. What a user
relies on: one import however many workers start (and however often they are
replaced), workers that are the master's children (signals, reaping, ``--timeout``
act on them as on exec'd workers), Python's fork protocol run in each worker
(``os.register_at_fork``), the gunicorn hooks in gunicorn's order, a fresh import on
HUP, an import error that stops the start before anything listens, and nothing left
behind when the master dies."""

import json
import os
import signal
import time
import urllib.request

import pytest

from conftest import children_of
from loadclient import alive, proc_state
from test_cli import _never_listens

APP = "apps.preload_app:application"


def get(srv, path="/"):
    with urllib.request.urlopen(srv.url + path, timeout=10) as r:
        return json.loads(r.read())


def imports(srv):
    return [int(p) for p in srv.read_state_lines("imports")]


def live_children(srv):
    return sorted(p for p in children_of(srv.pid) if proc_state(p) not in (None, "Z"))


def serving_pids(srv, n, timeout=10.0):
    """Answers until `n` distinct worker pids answered (a fresh connection each)."""
    seen = {}
    deadline = time.monotonic() + timeout
    while len(seen) < n:
        assert time.monotonic() < deadline, f"only {sorted(seen)} answered within {timeout}s"
        body = get(srv)
        seen[body["pid"]] = body
    return seen


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


def test_one_import_for_all_workers_each_the_masters_child(start_server):
    srv = start_server(APP, "--preload", "-w", "3")
    answers = serving_pids(srv, 3)
    imported = imports(srv)
    assert len(imported) == 1, f"the app was imported {len(imported)} times: {imported}"
    (zygote,) = imported
    kids = live_children(srv)
    # The master's children: the three workers and the process that imported the app.
    assert sorted(kids) == sorted([*answers, zygote]), (kids, answers, zygote)
    for pid, body in answers.items():
        assert body["ppid"] == srv.pid, f"worker {pid} is not the master's child: {body}"
        assert body["import_pid"] == zygote and pid != zygote
        # os.register_at_fork's after_in_child ran in this worker (PyOS_AfterFork_Child).
        assert body["at_fork"] == [pid], body
    assert "Preloaded the app" in srv.logs()


def test_without_preload_every_worker_imports(start_server):
    srv = start_server(APP, "-w", "2")
    answers = serving_pids(srv, 2)
    assert sorted(imports(srv)) == sorted(answers)
    assert all(b["at_fork"] == [] and b["import_pid"] == pid for pid, b in answers.items())


def test_killed_worker_is_replaced_by_a_fork_not_an_import(start_server):
    srv = start_server(APP, "--preload", "-w", "2")
    first = serving_pids(srv, 2)
    victim = next(iter(first))
    os.kill(victim, signal.SIGKILL)
    # The master reaps it (it is the master's child, not a zombie left behind).
    wait_until(lambda: proc_state(victim) is None, 5, f"worker {victim} was not reaped")
    wait_until(lambda: len(live_children(srv)) == 3, 10, "no replacement worker")
    after = serving_pids(srv, 2)
    assert victim not in after
    assert len(imports(srv)) == 1
    assert "Worker died unexpectedly (signal 9)" in srv.logs()


def test_max_requests_recycles_by_forking(start_server):
    srv = start_server(APP, "--preload", "-w", "1", "--max-requests", "5")
    pids = set()
    deadline = time.monotonic() + 20
    while len(pids) < 3:
        assert time.monotonic() < deadline, f"only {pids} served 20 s of requests"
        try:
            pids.add(get(srv)["pid"])
        except OSError:
            time.sleep(0.05)
    assert len(imports(srv)) == 1, imports(srv)


def test_hup_imports_again_and_workers_run_the_new_code(start_server):
    srv = start_server(APP, "--preload", "-w", "2")
    assert {b["version"] for b in serving_pids(srv, 2).values()} == {"none"}
    srv.state_file("version").write_text("v2")
    srv.signal(signal.SIGHUP)
    wait_until(lambda: all(b["version"] == "v2" for b in [get(srv) for _ in range(6)]), 20,
               "the workers still run the code imported before HUP")
    assert len(imports(srv)) == 2
    old, new = imports(srv)
    wait_until(lambda: proc_state(old) is None, 5, "the old --preload process is still there")
    assert new in children_of(srv.pid)


def test_a_slow_import_after_hup_leaves_the_old_workers_serving(start_server):
    srv = start_server(APP, "--preload", "-w", "2")
    first = serving_pids(srv, 2)
    srv.state_file("version").write_text("v2")
    srv.state_file("import_sleep").write_text("3")
    srv.signal(signal.SIGHUP)
    wait_until(lambda: len(imports(srv)) == 2, 10, "HUP did not start a fresh import")
    # The old workers serve the old code while the new one imports.
    for _ in range(10):
        body = get(srv)
        assert body["version"] == "none" and body["pid"] in first, body
    # A signal meanwhile (logrotate's USR1) is handled by the master's loop, and does
    # not cut the import short.
    srv.signal(signal.SIGUSR1)
    wait_until(lambda: all(b["version"] == "v2" for b in [get(srv) for _ in range(6)]), 20,
               "the workers still run the code imported before HUP")
    assert len(imports(srv)) == 2, imports(srv)
    logs = srv.logs()
    assert "reopening log files" in logs and "cannot start a worker" not in logs, logs


def test_term_during_an_import_after_hup_stops_at_once(start_server):
    srv = start_server(APP, "--preload", "-w", "2")
    first = serving_pids(srv, 2)
    srv.state_file("import_sleep").write_text("60")
    srv.signal(signal.SIGHUP)
    wait_until(lambda: len(imports(srv)) == 2, 10, "HUP did not start a fresh import")
    importing = imports(srv)[1]
    started = time.monotonic()
    srv.signal(signal.SIGTERM)
    assert srv.wait(15) == 0
    assert time.monotonic() - started < 5, "TERM waited for the import"
    wait_until(lambda: not alive(importing), 5, "the importing process outlived the master")
    assert not any(alive(p) for p in first)
    assert len(imports(srv)) == 2, imports(srv)


def test_a_stop_that_signals_every_process_is_a_clean_stop(start_server):
    # systemd's default stop (KillMode=control-group) sends TERM to every process of
    # the service at once, the --preload process included: the master drains as on
    # its own TERM and says nothing about that process as if it had failed.
    srv = start_server(APP, "--preload", "-w", "2")
    serving_pids(srv, 2)
    group = [srv.pid] + children_of(srv.pid)
    assert len(group) == 4, group  # master, the --preload process, two workers
    for pid in group:
        os.kill(pid, signal.SIGTERM)
    assert srv.wait(15) == 0
    log = srv.logs()
    assert "Shutting down: Master" in log, log
    assert log.count("Worker exited (exit code 0)") == 2, log
    assert "--preload process exited" not in log, log


def test_the_preload_process_answers_only_its_channel(start_server):
    # A signal meant for the master that reaches the --preload process (a group-wide
    # kill) leaves it forking; the worker it forks then answers TERM as any worker.
    srv = start_server(APP, "--preload", "-w", "1")
    (worker,) = serving_pids(srv, 1)
    (preload,) = [p for p in children_of(srv.pid) if p != worker]
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
        os.kill(preload, sig)
    os.kill(worker, signal.SIGTERM)
    wait_until(lambda: proc_state(worker) is None, 10, f"worker {worker} ignored TERM")
    (after,) = serving_pids(srv, 1)
    assert after != worker and alive(preload)
    assert len(imports(srv)) == 1
    assert "--preload process exited" not in srv.logs()


def test_a_signal_handler_the_app_installs_at_import_stays_in_the_workers(start_server):
    # faulthandler.register(SIGUSR2) at import, a common way to get stack dumps: the
    # worker forked from the preload process keeps it, as an exec'd worker does.
    srv = start_server(APP, "--preload", "-w", "1", env={"PRELOAD_APP_FAULTHANDLER": "1"})
    (worker,) = serving_pids(srv, 1)
    os.kill(worker, signal.SIGUSR2)
    faults = srv.state_file("faults")
    wait_until(lambda: "most recent call first" in faults.read_text(), 5,
               "no stack dump on SIGUSR2")
    assert alive(worker)
    assert get(srv)["pid"] == worker


def test_a_failed_import_after_hup_leaves_the_old_workers_serving(start_server):
    srv = start_server(APP, "--preload", "-w", "2")
    first = serving_pids(srv, 2)
    srv.state_file("import_fail").write_text("")
    srv.signal(signal.SIGHUP)
    wait_until(lambda: "the running workers stay" in srv.logs(), 10,
               "the failed re-import left no error")
    assert "preload-app-import-fails-4b1e" in srv.logs()
    for _ in range(10):
        body = get(srv)
        assert body["version"] == "none" and body["pid"] in first, body
    # Fixed, and HUP again: the new code is served (the respawn backoff the failures
    # built up does not hold the fresh start back).
    srv.state_file("import_fail").unlink()
    srv.state_file("version").write_text("v2")
    srv.signal(signal.SIGHUP)
    wait_until(lambda: all(b["version"] == "v2" for b in [get(srv) for _ in range(6)]), 15,
               "the workers still run the code imported before the fix")


def test_import_error_stops_the_start_before_anything_listens(rwsgi_bin, tmp_path):
    code, connected, _, err = _never_listens(rwsgi_bin, tmp_path, "apps.import_error:application",
                                             extra=("--preload", "-w", "2"))
    assert code == 3, (code, err)
    assert not connected
    assert "import-time-marker-7f3a" in err and "Traceback" in err
    assert "the app did not import in the --preload process" in err


def test_term_while_importing_stops_everything(start_server):
    srv = start_server("apps.slow_import:application", "--preload", "-w", "2",
                       env={"RWSGI_TEST_IMPORT_SLEEP": "30"}, wait=False)
    wait_until(lambda: len(children_of(srv.pid)) == 1, 10, "the --preload process did not start")
    (zygote,) = children_of(srv.pid)
    srv.signal(signal.SIGTERM)
    assert srv.wait(10) == 0
    wait_until(lambda: not alive(zygote), 5, "the --preload process outlived the master")


def test_master_killed_takes_the_workers_and_the_preload_process(start_server):
    srv = start_server(APP, "--preload", "-w", "2")
    serving_pids(srv, 2)
    tree = live_children(srv)
    assert len(tree) == 3
    os.kill(srv.pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in tree), 5,
               f"left running after the master died: {[p for p in tree if alive(p)]}")


def test_orphans_of_the_app_are_reaped(start_server):
    srv = start_server(APP, "--preload", "-w", "1")
    # The port opens before the worker is forked: count the children once it serves.
    serving_pids(srv, 1)
    before = live_children(srv)
    for _ in range(5):
        get(srv, "/orphan")
    # Each grandchild becomes the master's (a subreaper) when its parent exits, then
    # exits itself: the master must reap it, not keep a zombie.
    time.sleep(0.6)

    def zombies():
        return [p for p in children_of(srv.pid) if proc_state(p) == "Z"]

    wait_until(lambda: not zombies(), 5, f"zombies under the master: {zombies()}")
    assert live_children(srv) == before


HOOKS_CONF = '''
import os
preload_app = True
workers = 2
STATE = os.environ["RWSGI_TEST_STATE"]

def _note(what):
    with open(os.path.join(STATE, "hooks"), "a") as f:
        f.write(f"{what} {os.getpid()}\\n")

def on_starting(server):
    _note("on_starting")

def post_fork(server, worker):
    _note("post_fork")

def post_worker_init(worker):
    _note("post_worker_init")
'''


def test_gunicorn_config_file_preload_app_with_hooks(start_server, tmp_path):
    conf = tmp_path / "gunicorn.conf.py"
    conf.write_text(HOOKS_CONF)
    srv = start_server(APP, "-c", str(conf))
    answers = serving_pids(srv, 2)
    assert len(imports(srv)) == 1
    notes = [l.split() for l in srv.read_state_lines("hooks")]
    assert ["on_starting", str(srv.pid)] in notes
    for pid in answers:
        mine = [what for what, who in notes if who == str(pid)]
        # gunicorn's order with preload_app: the app is imported before the fork,
        # then post_fork, then post_worker_init, in the worker.
        assert mine == ["post_fork", "post_worker_init"], notes


def test_reload_turns_preload_off(start_server):
    srv = start_server(APP, "--preload", "--reload", "-w", "2")
    answers = serving_pids(srv, 2)
    assert sorted(imports(srv)) == sorted(answers)
    assert "--preload with --reload: each worker imports the app itself" in srv.logs()


def test_gunicorn_cmd_args_preload(start_server):
    srv = start_server(APP, "-w", "2", env={"GUNICORN_CMD_ARGS": "--preload"})
    serving_pids(srv, 2)
    assert len(imports(srv)) == 1


def test_a_thread_started_at_import_is_named(start_server):
    # The thread exists only in the process that imported the app: the user is told
    # once, with what to do.
    srv = start_server(APP, "--preload", "-w", "2", env={"PRELOAD_APP_THREAD": "1"})
    serving_pids(srv, 2)
    log = srv.logs()
    assert log.count("--preload: the app started 1 thread(s) while it was imported") == 1, log
    assert "post_fork" in log


def test_no_thread_warning_for_a_plain_app(start_server):
    srv = start_server(APP, "--preload", "-w", "1")
    serving_pids(srv, 1)
    assert "thread(s) while it was imported" not in srv.logs()


def test_a_full_collection_in_a_worker_does_not_copy_the_imported_heap(start_server):
    # CPython's advice for fork without exec (gc.freeze): the imported objects leave
    # the collector's generations before the first fork, so a worker's full
    # collection (any long-lived worker runs them) writes none of their pages, and
    # they stay shared with the other workers instead of being copied into each.
    srv = start_server(APP, "--preload", "-w", "1", env={"PRELOAD_APP_BALLAST": "1"})
    serving_pids(srv, 1)
    got = get(srv, "/gc")
    # 300,000 tracked tuples and lists were imported: all of them frozen.
    assert got["frozen"] >= 600_000, got
    # Unfrozen, collecting walks every one of them: ~25 MiB copied into the worker.
    grew_kb = got["after_kb"] - got["before_kb"]
    assert grew_kb < 4 * 1024, f"the collection copied {grew_kb} kB into the worker: {got}"


def test_no_collection_runs_while_the_preload_process_imports(start_server):
    # The other half of CPython's advice: no collection during the import (a Django
    # import runs about ten, ~10% of its time, and leaves freed holes among the
    # objects a worker would then fill, copying the page). Without --preload the
    # worker's import collects as usual: 600,000 objects make hundreds.
    env = {"PRELOAD_APP_BALLAST": "1"}
    plain = start_server(APP, "-w", "1", env=env)
    serving_pids(plain, 1)
    usual = get(plain, "/gc")
    plain.stop()
    assert usual["import_collections"] > 10, usual
    srv = start_server(APP, "--preload", "-w", "1", env=env)
    serving_pids(srv, 1)
    got = get(srv, "/gc")
    assert got["import_collections"] == 0, got
    # ...and the workers collect as a worker without --preload does.
    assert got["enabled"] is True and got["threshold"] == usual["threshold"], (got, usual)


@pytest.mark.parametrize("env,want", [
    ({"PRELOAD_APP_GC_THRESHOLD": "5000,20,30"}, {"threshold": [5000, 20, 30], "enabled": True}),
    ({"PRELOAD_APP_GC_DISABLE": "1"}, {"enabled": False}),
])
def test_the_apps_own_collector_settings_reach_the_workers(start_server, env, want):
    # An app that tunes or disables the collector at import (a known trick for
    # forking servers) keeps its choice: the start does not reset it.
    srv = start_server(APP, "--preload", "-w", "1", env=env)
    serving_pids(srv, 1)
    got = get(srv, "/gc")
    assert {k: got[k] for k in want} == want, got


def test_without_preload_nothing_is_frozen(start_server):
    # An exec'd worker imported the app itself: its objects are collected as usual.
    # (Counted from what the interpreter froze itself before the import: CPython 3.12
    # freezes a few hundred objects at start-up.)
    srv = start_server(APP, "-w", "1")
    serving_pids(srv, 1)
    got = get(srv, "/gc")
    assert got["frozen"] == got["frozen_before_import"], got
