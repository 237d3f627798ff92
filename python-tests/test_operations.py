"""Operations around the process model: ``--pid`` (written with the master's pid,
removed on exit), ``--forwarded-allow-ips`` (X-Forwarded-For / X-Forwarded-Proto set
REMOTE_ADDR and wsgi.url_scheme only from trusted peers), the server log (JSON lines
for log shippers; every line a worker writes names the worker) and USR1 reopening
``--error-log`` and ``--access-log`` after rotation. Requests come from a background
client while the server is being operated on."""

import json
import os
import re
import signal
import time

from conftest import exchange
from loadclient import Load, wait_workers

APP = "apps.process_app:application"


# ---------------------------------------------------------------------------
# --pid
# ---------------------------------------------------------------------------


def test_pid_file_holds_master_pid_and_is_removed_on_exit(start_server, tmp_path):
    pid_file = tmp_path / "run" / "rwsgi.pid"
    pid_file.parent.mkdir()
    srv = start_server(APP, "-w", "2", "--pid", pid_file)
    assert pid_file.read_text().strip() == str(srv.pid)
    with Load(srv.raw, conns=2) as load:
        load.wait_requests(40)
        # TERM through the pid file, as an init script would.
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    assert srv.wait(15) == 0
    assert not pid_file.exists(), "pid file left behind"


def test_pid_file_in_missing_directory_fails_at_start(start_server, tmp_path):
    srv = start_server(APP, "--pid", tmp_path / "no" / "such" / "dir.pid", wait=False)
    assert srv.wait(20) == 2
    assert "--pid" in srv.stderr_text()


# ---------------------------------------------------------------------------
# --forwarded-allow-ips
# ---------------------------------------------------------------------------

FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


def _info_with(srv, headers):
    r = exchange(srv, "GET", "/info", headers=headers)
    assert r.status == 200, r
    return r.json()


def test_forwarded_headers_believed_from_trusted_peer_by_default(start_server):
    srv = start_server(APP, "-w", "2")
    with Load(srv.raw, conns=2) as load:
        for _ in range(4):  # both workers, whichever accepts
            info = _info_with(srv, FORWARDED)
            # gunicorn's rule: the scheme follows X-Forwarded-Proto, REMOTE_ADDR stays
            # the peer's address.
            assert info["remote_addr"] == "127.0.0.1"
            assert info["url_scheme"] == "https"
        plain = _info_with(srv, {})
        assert plain["remote_addr"] == "127.0.0.1" and plain["url_scheme"] == "http"
    assert not load.failures(), load.summary()


def test_forwarded_headers_ignored_from_untrusted_peer(start_server):
    srv = start_server(APP, "-w", "2", "--forwarded-allow-ips", "10.9.9.9")
    with Load(srv.raw, conns=2) as load:
        for _ in range(4):
            info = _info_with(srv, FORWARDED)
            assert info["remote_addr"] == "127.0.0.1", "a client posed as another address"
            assert info["url_scheme"] == "http", "a client posed as https"
    assert not load.failures(), load.summary()


def test_remote_addr_from_forwarded_is_an_opt_in(start_server):
    srv = start_server(APP, "--remote-addr-from-forwarded")
    assert _info_with(srv, FORWARDED)["remote_addr"] == "203.0.113.7"
    assert _info_with(srv, {})["remote_addr"] == "127.0.0.1"


def test_forwarded_for_chain_picks_the_client_before_trusted_proxies(start_server):
    srv = start_server(
        APP, "--forwarded-allow-ips", "127.0.0.1,10.0.0.0/8", "--remote-addr-from-forwarded"
    )
    info = _info_with(srv, {"X-Forwarded-For": "198.51.100.9, 10.1.2.3"})
    assert info["remote_addr"] == "198.51.100.9"


# ---------------------------------------------------------------------------
# log format and worker ids
# ---------------------------------------------------------------------------


def _json_lines(text):
    out = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON log line: {line!r}")
    return out


def test_json_log_lines_parse_and_worker_lines_carry_the_worker_id(start_server):
    srv = start_server(APP, "-w", "2", "--log-format", "json")
    workers = wait_workers(srv, 2)
    with Load(srv.raw, conns=2, path=lambda c, s: f"/log?msg=app-line-{c}-{s}") as load:
        load.wait_requests(20)
    assert not load.failures(), load.summary()
    srv.stop()
    lines = _json_lines(srv.stderr_text())
    assert all("timestamp" in l and "level" in l and "message" in l for l in lines)
    # The master names each worker it boots: worker id -> pid.
    booted = {l["pid"]: l["worker"] for l in lines if l["message"] == "Booting worker"}
    assert set(workers) <= set(booted)

    def worker_id(line):
        span = line.get("span") or {}
        assert span.get("name") == "worker", f"worker line without its worker span: {line}"
        return span["id"]

    # Lines a worker writes itself: its own log lines, and the app's wsgi.errors.
    for l in lines:
        if l["message"] in ("Booted worker", "Worker exiting"):
            assert worker_id(l) == booted[l["pid"]], l
    app_lines = [l for l in lines if l["message"].startswith("app-line-")]
    assert len(app_lines) >= 20
    served_by = {r.path.split("msg=")[1]: r.pid for r in load.successes()}
    for l in app_lines:
        assert worker_id(l) == booted[served_by[l["message"]]], l


def test_human_log_lines_from_workers_carry_the_worker_id(start_server):
    srv = start_server(APP, "-w", "2")
    r = exchange(srv, "GET", "/log?msg=human-app-line")
    srv.stop()
    text = srv.stderr_text()
    booted = dict(re.findall(r"Booting worker worker=(\d+) pid=(\d+)", text))
    pid_to_id = {int(p): i for i, p in booted.items()}
    line = next(l for l in text.splitlines() if "human-app-line" in l)
    assert f"worker{{id={pid_to_id[int(r.text)]}}}" in line, line


# ---------------------------------------------------------------------------
# USR1: reopen log files after rotation
# ---------------------------------------------------------------------------


def test_usr1_reopens_error_log_and_access_log(start_server, tmp_path):
    err_log, acc_log = tmp_path / "error.log", tmp_path / "access.log"
    srv = start_server(APP, "-w", "2", "--error-log", err_log, "--access-log", acc_log)
    workers = wait_workers(srv, 2)
    with Load(srv.raw, conns=2, path=lambda c, s: f"/log?msg=before-{c}-{s}") as load:
        load.wait_requests(10)
    assert "before-" in err_log.read_text() and "/log?msg=before-" in acc_log.read_text()

    # logrotate's "create" mode: move the files away, then signal.
    err_log.rename(tmp_path / "error.log.1")
    acc_log.rename(tmp_path / "access.log.1")
    srv.signal(signal.SIGUSR1)
    # The master reopens, and passes USR1 on to the workers, which reopen too: poll
    # the processes' open files until none points at a rotated file any more.
    rotated = {str(tmp_path / "error.log.1"), str(tmp_path / "access.log.1")}
    deadline = time.monotonic() + 5
    while any(rotated & _open_files(p) for p in [srv.pid] + workers):
        assert time.monotonic() < deadline, \
            {p: sorted(rotated & _open_files(p)) for p in [srv.pid] + workers}
        time.sleep(0.02)
    # One scan can miss both fds (listed before the new one opened, read after the
    # old one closed), so wait for the new files the same way.
    fresh = {str(err_log), str(acc_log)}
    while not all(fresh <= _open_files(p) for p in workers):
        assert time.monotonic() < deadline, {p: sorted(_open_files(p)) for p in workers}
        time.sleep(0.02)

    old_err = (tmp_path / "error.log.1").read_text()
    old_acc = (tmp_path / "access.log.1").read_text()
    with Load(srv.raw, conns=4, reuse=False, path=lambda c, s: f"/log?msg=after-{c}-{s}") as load:
        load.wait_requests(20)
    assert not load.failures(), load.summary()
    want = {r.path.split("msg=")[1] for r in load.successes()}
    deadline = time.monotonic() + 5
    while True:
        errs, accs = err_log.read_text(), acc_log.read_text()
        missing = [m for m in want if m not in errs or f"msg={m} " not in accs]
        if not missing:
            break
        assert time.monotonic() < deadline, \
            f"{len(missing)} of {len(want)} lines not in the new files, e.g. {missing[:3]}"
        time.sleep(0.05)
    assert (tmp_path / "error.log.1").read_text() == old_err, "lines went to the rotated error log"
    assert (tmp_path / "access.log.1").read_text() == old_acc, "lines went to the rotated access log"
    assert srv.stop() == 0
    assert "Shutting down: Master" in err_log.read_text()
    assert "Worker exiting" in err_log.read_text()


def _open_files(pid):
    out = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
    except OSError:
        pass
    return out
