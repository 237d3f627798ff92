"""gunicorn's process settings: --reload / --reload-extra-file (development),
--user/--group/--umask (workers drop privileges after the master bound the
sockets), -n/--name (process titles)."""

import os
import pwd
import stat
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import exchange
from loadclient import wait_workers

APP_SRC = '''
VERSION = "{version}"

def application(environ, start_response):
    import os
    body = f"{{VERSION}} {{os.getpid()}} {{os.geteuid()}} {{os.getegid()}}".encode()
    if environ["PATH_INFO"] == "/touch":
        open(os.path.join(os.environ["OUT_DIR"], "made-by-app"), "w").close()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
'''


def write_app(d, version):
    (d / "devapp.py").write_text(APP_SRC.format(version=version))


def get(srv):
    return requests.get(srv.url + "/", timeout=10).text.split()


def wait_version(srv, version, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        got = get(srv)
        if got[0] == version:
            return got
        assert time.monotonic() < deadline, f"still {got} after {timeout}s"
        time.sleep(0.1)


def test_reload_replaces_workers_when_a_source_file_changes(start_server, tmp_path):
    write_app(tmp_path, "v1")
    srv = start_server("devapp:application", "--reload", "-w", "2", chdir=tmp_path)
    before = set(wait_workers(srv, 2))
    assert get(srv)[0] == "v1"
    time.sleep(1.5)  # the watcher has scanned sys.modules once
    write_app(tmp_path, "v2")
    wait_version(srv, "v2")
    srv.wait_for_log("Worker reloading:", timeout=10)
    assert "devapp.py modified" in srv.stderr_text()
    after = set(wait_workers(srv, 2, timeout=15, gone=list(before)))
    assert not after & before
    # Every answer now comes from the new code.
    for _ in range(10):
        assert get(srv)[0] == "v2"


def test_reload_extra_file(start_server, tmp_path):
    write_app(tmp_path, "v1")
    extra = tmp_path / "settings.yaml"
    extra.write_text("a: 1\n")
    srv = start_server("devapp:application", "--reload", "--reload-extra-file", extra,
                       chdir=tmp_path)
    [first] = wait_workers(srv, 1)
    time.sleep(1.5)
    extra.write_text("a: 2\n")
    srv.wait_for_log("settings.yaml modified", timeout=15)
    wait_workers(srv, 1, timeout=15, gone=[first])


def test_without_reload_a_change_is_not_picked_up(start_server, tmp_path):
    write_app(tmp_path, "v1")
    srv = start_server("devapp:application", chdir=tmp_path)
    time.sleep(1.0)
    write_app(tmp_path, "v2")
    time.sleep(2.0)
    assert get(srv)[0] == "v1"


def readable_python_wrapper(rwsgi_bin, d):
    """On this machine the embedded Python lives under /root (mode 0700), which no
    unprivileged user can traverse; a deployed Python (/usr/local) does not. The
    wrapper runs rwsgi in a private mount namespace where /root is a world-readable
    tmpfs holding only the Python install, bound back in, so that `nobody` can load
    it. rwsgi itself runs unchanged (exec), as root, like any master."""
    base = Path(sys.base_prefix)
    if os.stat("/root").st_mode & 0o001 or not str(base).startswith("/root/"):
        return rwsgi_bin
    top = Path("/root") / base.relative_to("/root").parts[0]  # /root/.pyenv
    keep = d / "keep"
    keep.mkdir()
    script = d / "rwsgi-ns.sh"
    script.write_text(
        "#!/bin/sh\n"
        "exec unshare -m --propagation private sh -c '"
        f"mount --bind {top} {keep} && mount -t tmpfs -o mode=0755 tmpfs /root && "
        f"mkdir -p {top} && mount --bind {keep} {top} && exec \"$0\" \"$@\"' "
        f"{rwsgi_bin} \"$@\"\n"
    )
    script.chmod(0o755)
    return str(script)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
def test_workers_run_as_user_and_group_after_the_master_binds(rwsgi_bin, tmp_path):
    from conftest import launch

    nobody = pwd.getpwnam("nobody")
    # pytest's tmp_path sits in a root-only directory: the app lives where nobody
    # can read it, as a deployed app would.
    import tempfile
    app_dir = Path(tempfile.mkdtemp(prefix="rwsgi-user-"))
    os.chmod(app_dir, 0o777)
    write_app(app_dir, "v1")
    binary = readable_python_wrapper(rwsgi_bin, tmp_path)
    srv = launch(binary, "devapp:application",
                 ["--user", "nobody", "--group", "nogroup", "--umask", "0o027"],
                 tmp_path / "rwsgi", chdir=app_dir, env={"OUT_DIR": str(app_dir)})
    tmp_path = app_dir
    _, pid, uid, gid = get(srv)
    assert int(uid) == nobody.pw_uid
    import grp
    assert int(gid) == grp.getgrnam("nogroup").gr_gid
    status = open(f"/proc/{pid}/status").read()
    assert f"Uid:\t{nobody.pw_uid}\t{nobody.pw_uid}\t{nobody.pw_uid}" in status
    groups = [l for l in status.splitlines() if l.startswith("Groups:")][0]
    assert "\t0" not in groups and " 0 " not in groups + " ", groups
    # The master stays as it started (it binds again on HUP and signals workers).
    assert f"Uid:\t0\t" in open(f"/proc/{srv.pid}/status").read()
    # --umask applies to files the workers create.
    requests.get(srv.url + "/touch", timeout=10)
    mode = stat.S_IMODE(os.stat(tmp_path / "made-by-app").st_mode)
    assert mode == 0o640, oct(mode)
    assert (tmp_path / "made-by-app").stat().st_uid == nobody.pw_uid
    srv.stop()


def test_unknown_user_is_refused_at_start(rwsgi_bin, tmp_path):
    from conftest import launch
    srv = launch(rwsgi_bin, "devapp:application", ["--user", "no-such-user-here"],
                 tmp_path / "rwsgi", wait=False)
    assert srv.proc.wait(timeout=20) == 2
    assert "--user no-such-user-here: no such user" in srv.stderr_text()


def test_name_sets_master_and_worker_process_titles(start_server, tmp_path):
    write_app(tmp_path, "v1")
    srv = start_server("devapp:application", "-n", "shop-api", "-w", "2", chdir=tmp_path)
    workers = wait_workers(srv, 2)
    assert get(srv)[0] == "v1"

    def title(pid):
        return open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[0].decode()

    assert title(srv.pid) == "rwsgi: master [shop-api]"
    for w in workers:
        assert title(w) == "rwsgi: worker [shop-api]"
    # The thread name (comm, 15 bytes, what top shows) is the title's start.
    assert open(f"/proc/{srv.pid}/comm").read().strip() == "rwsgi: master ["
    # Workers started later (re-executed from the saved arguments) work the same.
    os.kill(workers[0], 15)
    fresh = wait_workers(srv, 2, timeout=15, gone=[workers[0]])
    new = (set(fresh) - set(workers)).pop()
    deadline = time.monotonic() + 10
    while title(new) != "rwsgi: worker [shop-api]":
        assert time.monotonic() < deadline, title(new)
        time.sleep(0.1)
    assert exchange(srv, "GET", "/").status == 200


@pytest.fixture
def user_with_a_supplementary_group():
    """A real account, rwsgi-ig (primary group rwsgi-ig), that is also a member of the
    group rwsgi-ig-extra, made for the test and removed after it."""
    import grp
    import subprocess
    user, extra = "rwsgi-ig", "rwsgi-ig-extra"
    made = []
    try:
        try:
            grp.getgrnam(extra)
        except KeyError:
            subprocess.run(["groupadd", extra], check=True)
            made.append(("groupdel", extra))
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell",
                            "/usr/sbin/nologin", "--groups", extra, user], check=True)
            made.insert(0, ("userdel", user))
        else:
            subprocess.run(["usermod", "--append", "--groups", extra, user], check=True)
        yield pwd.getpwnam(user), grp.getgrnam(extra).gr_gid
    finally:
        for cmd, name in made:
            subprocess.run([cmd, name], check=False)


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")
@pytest.mark.parametrize("initgroups", [False, True], ids=["primary-group-only", "initgroups"])
def test_initgroups_gives_workers_the_users_supplementary_groups(
        rwsgi_bin, tmp_path, user_with_a_supplementary_group, initgroups):
    # gunicorn's --initgroups: a worker that switches user takes that user's groups
    # from the group database; without it, only the primary group.
    from conftest import launch
    import tempfile
    account, extra_gid = user_with_a_supplementary_group
    app_dir = Path(tempfile.mkdtemp(prefix="rwsgi-ig-"))
    os.chmod(app_dir, 0o755)
    write_app(app_dir, "v1")
    binary = readable_python_wrapper(rwsgi_bin, tmp_path)
    args = ["--user", account.pw_name] + (["--initgroups"] if initgroups else [])
    srv = launch(binary, "devapp:application", args, tmp_path / "rwsgi", chdir=app_dir)
    try:
        _, pid, uid, gid = get(srv)
        assert (int(uid), int(gid)) == (account.pw_uid, account.pw_gid)
        status = open(f"/proc/{pid}/status").read()
        line = next(l for l in status.splitlines() if l.startswith("Groups:"))
        groups = {int(g) for g in line.split()[1:]}
        want = {account.pw_gid, extra_gid} if initgroups else {account.pw_gid}
        assert groups == want, line
        assert "initgroups" not in srv.logs(), "no 'has no effect' note for an implemented setting"
    finally:
        srv.stop()
        import shutil
        shutil.rmtree(app_dir, ignore_errors=True)
