"""gunicorn → rwsgi as one word: real platform command lines and gunicorn.conf.py
files shaped like the ones platforms ship, gunicorn's environment variables, and the
errors a gunicorn user meets. Every test runs the real binary.
"""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request

import pytest

from conftest import base_env, free_port
from gunicorn_walk import stop_by_pidfile

APP = '''
import os, sys, time

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sleep":
        time.sleep(float(environ["QUERY_STRING"] or 1))
    if path == "/print":
        print("app-print-marker", flush=True)
    body = json.dumps({
        "walk_env": os.environ.get("WALK_ENV"),
        "scheme": environ["wsgi.url_scheme"],
        "remote_addr": environ["REMOTE_ADDR"],
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]

import json
'''


@pytest.fixture
def project(tmp_path):
    (tmp_path / "main.py").write_text(APP)
    return tmp_path


class Proc:
    def __init__(self, argv, env, cwd, out):
        self.out = out
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self):
        self.out.flush()
        return self.out.name and open(self.out.name).read()

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def rwsgi(rwsgi_bin, project):
    """rwsgi(*args, env={}, cwd=project) -> Proc, stopped at teardown."""
    started = []

    def _start(*args, env=None, cwd=None):
        out = open(project / f"out-{len(started)}.log", "w+")
        p = Proc([rwsgi_bin, *args], base_env(env), cwd or project, out)
        started.append(p)
        return p

    yield _start
    for p in started:
        p.stop()


def run(rwsgi_bin, *args, env=None, cwd=None):
    return subprocess.run([rwsgi_bin, *args], env=base_env(env), cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def get(url, headers=None, timeout=10):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def wait_serving(proc, url, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise AssertionError(f"rwsgi exited {proc.proc.returncode}:\n{proc.log()}")
        try:
            return get(url)
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"not serving {url}:\n{proc.log()}")


def listening(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ===== Platform shapes =====

HEROKU_CONF = '''
# Shaped like Heroku's Python template: gunicorn reads it from the working directory.
import os

wsgi_app = "main:app"
bind = ["[::]:" + os.environ.get("PORT", "5006")]
threads = 5
timeout = 20
keepalive = 100
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s heroku-access'
reuse_port = True
preload_app = True
max_requests = 1200
max_requests_jitter = 50
forwarded_allow_ips = "*"

def _helper():
    return "not a setting"
'''


def test_heroku_template_conf_is_read_by_default_and_binds_dual_stack(rwsgi, rwsgi_bin, project):
    (project / "gunicorn.conf.py").write_text(HEROKU_CONF)
    port = free_port()
    env = {"PORT": str(port), "WEB_CONCURRENCY": "2"}
    srv = rwsgi(env=env)  # no arguments at all: APP and everything from the file
    status, body = wait_serving(srv, f"http://127.0.0.1:{port}/")
    assert status == 200
    # [::] takes IPv6 and IPv4 clients, as gunicorn's socket does.
    assert get(f"http://[::1]:{port}/")[0] == 200
    # forwarded_allow_ips = "*" from the file: the router's proto is believed.
    assert get(f"http://127.0.0.1:{port}/", {"X-Forwarded-Proto": "https"})[1]["scheme"] == "https"
    time.sleep(0.3)
    log = srv.log()
    assert "heroku-access" in log, log
    # preload_app = True: one import, the workers forked from it.
    assert log.count("Preloaded the app") == 1, log
    printed = run(rwsgi_bin, "--print-config", env=env, cwd=project).stdout
    for line in ("threads = 5", "timeout = 20", "keep-alive = 100", "reuse-port = true",
                 "max-requests = 1200", 'access-log = "-"'):
        assert f"{line}" in printed and "config file gunicorn.conf.py" in \
            next(l for l in printed.splitlines() if l.startswith(line)), printed
    assert "workers = 2" in printed and "WEB_CONCURRENCY" in printed
    assert "config file: gunicorn.conf.py (default)" in printed


def test_cloud_run_sample_command_line(rwsgi, project):
    port = free_port()
    srv = rwsgi("--bind", f":{port}", "--workers", "1", "--threads", "8", "--timeout", "0",
                "main:app", env={"PORT": str(port)})
    assert wait_serving(srv, f"http://127.0.0.1:{port}/")[0] == 200


def test_timeout_zero_means_no_limit(rwsgi, project):
    port = free_port()
    srv = rwsgi("--bind", f"127.0.0.1:{port}", "--timeout", "0", "main:app")
    wait_serving(srv, f"http://127.0.0.1:{port}/")
    # Longer than any timeout the supervisor would derive from a small limit.
    assert get(f"http://127.0.0.1:{port}/sleep?3", timeout=20)[0] == 200
    assert "WORKER TIMEOUT" not in srv.log()


def test_heroku_procfile_log_file_dash(rwsgi, project):
    port = free_port()
    srv = rwsgi("main:app", "--log-file", "-", env={"PORT": str(port)})
    assert wait_serving(srv, f"http://127.0.0.1:{port}/")[0] == 200
    assert "Listening at" in srv.log()


def test_capture_output_sends_app_prints_to_the_log_file(rwsgi, project):
    port, logfile = free_port(), project / "error.log"
    srv = rwsgi("-b", f"127.0.0.1:{port}", "--log-file", str(logfile), "--capture-output",
                "main:app")
    wait_serving(srv, f"http://127.0.0.1:{port}/")
    get(f"http://127.0.0.1:{port}/print")
    deadline = time.monotonic() + 5
    while "app-print-marker" not in logfile.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    text = logfile.read_text()
    assert "app-print-marker" in text and "Listening at" in text
    assert "app-print-marker" not in srv.log()


def test_env_flag_reaches_the_app(rwsgi, project):
    port = free_port()
    srv = rwsgi("-b", f"127.0.0.1:{port}", "-e", "WALK_ENV=from-flag", "main:app")
    assert wait_serving(srv, f"http://127.0.0.1:{port}/")[1]["walk_env"] == "from-flag"


def test_reuse_port_lets_two_servers_share_a_port(rwsgi, project):
    port = free_port()
    a = rwsgi("-b", f"127.0.0.1:{port}", "--reuse-port", "main:app")
    wait_serving(a, f"http://127.0.0.1:{port}/")
    b = rwsgi("-b", f"127.0.0.1:{port}", "--reuse-port", "main:app")
    time.sleep(1.5)
    assert b.proc.poll() is None, b.log()
    assert "Listening at" in b.log()


def test_without_reuse_port_the_second_server_is_refused(rwsgi, project):
    port = free_port()
    a = rwsgi("-b", f"127.0.0.1:{port}", "main:app")
    wait_serving(a, f"http://127.0.0.1:{port}/")
    b = rwsgi("-b", f"127.0.0.1:{port}", "main:app")
    assert b.proc.wait(20) != 0


# ===== Environment =====


def test_gunicorn_cmd_args_rank_below_the_command_line_and_above_rwsgi_vars(rwsgi_bin, project):
    env = {"GUNICORN_CMD_ARGS": "--threads 3 --workers 3 --bind '127.0.0.1:9001' -k gthread",
           "RWSGI_THREADS": "4", "RWSGI_WORKERS": "4"}
    out = run(rwsgi_bin, "--print-config", "--threads", "5", "main:app", env=env, cwd=project)
    assert out.returncode == 0, out.stderr
    lines = {l.split(" = ")[0]: l for l in out.stdout.splitlines() if " = " in l}
    assert lines["threads"].startswith("threads = 5") and "command line" in lines["threads"]
    assert lines["workers"].startswith("workers = 3") and "GUNICORN_CMD_ARGS" in lines["workers"]
    assert '"127.0.0.1:9001"' in lines["bind"] and "GUNICORN_CMD_ARGS" in lines["bind"]


def test_gunicorn_cmd_args_errors_name_the_variable(rwsgi_bin, project):
    out = run(rwsgi_bin, "main:app", env={"GUNICORN_CMD_ARGS": "--threads x"}, cwd=project)
    assert out.returncode == 2
    assert "GUNICORN_CMD_ARGS" in out.stderr and "--threads" in out.stderr


def test_forwarded_allow_ips_from_the_environment(rwsgi, project):
    port = free_port()
    srv = rwsgi("-b", f"127.0.0.1:{port}", "main:app", env={"FORWARDED_ALLOW_IPS": "10.9.9.9"})
    wait_serving(srv, f"http://127.0.0.1:{port}/")
    assert get(f"http://127.0.0.1:{port}/", {"X-Forwarded-Proto": "https"})[1]["scheme"] == "http"


# ===== Python config files =====


def test_python_module_config(rwsgi_bin, project):
    (project / "deploy_settings.py").write_text("threads = 6\nworkers = 2\n")
    out = run(rwsgi_bin, "--print-config", "-c", "python:deploy_settings", "main:app",
              env={"PYTHONPATH": str(project)}, cwd=project)
    assert out.returncode == 0, out.stderr
    assert "threads = 6" in out.stdout and "config file python:deploy_settings" in out.stdout


def test_explicit_config_replaces_the_default_file(rwsgi_bin, project):
    (project / "gunicorn.conf.py").write_text("threads = 6\n")
    (project / "other.conf.py").write_text("threads = 7\n")
    out = run(rwsgi_bin, "--print-config", "-c", "other.conf.py", "main:app", cwd=project)
    assert "threads = 7" in out.stdout and "threads = 6" not in out.stdout


def test_hooks_and_dicts_show_in_print_config(rwsgi_bin, project):
    (project / "gunicorn.conf.py").write_text(
        "def post_fork(server, worker):\n    pass\n"
        "secure_scheme_headers = {'X-FORWARDED-PROTO': 'https'}\n")
    out = run(rwsgi_bin, "--print-config", "main:app", cwd=project)
    assert out.returncode == 0, out.stderr
    assert "# post_fork = <function post_fork" in out.stdout
    assert "# secure_scheme_headers = {'X-FORWARDED-PROTO': 'https'}" in out.stdout


def test_a_config_file_that_raises_gives_its_traceback_exit_1_and_nothing_listens(rwsgi_bin,
                                                                                  project):
    port = free_port()
    (project / "gunicorn.conf.py").write_text(
        f"bind = '127.0.0.1:{port}'\nraise RuntimeError('conf-marker-91')\n")
    out = run(rwsgi_bin, "main:app", cwd=project)
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "conf-marker-91" in out.stderr
    assert "gunicorn.conf.py" in out.stderr
    assert not listening(port)


def test_a_python_config_never_gets_a_toml_error(rwsgi_bin, project):
    (project / "conf.py").write_text("workers = (\n")
    out = run(rwsgi_bin, "-c", "conf.py", "main:app", cwd=project)
    assert out.returncode == 1
    assert "SyntaxError" in out.stderr and "TOML" not in out.stderr


def test_bad_values_in_a_python_config_name_the_key(rwsgi_bin, project):
    (project / "gunicorn.conf.py").write_text("workers = 'many'\n")
    out = run(rwsgi_bin, "main:app", cwd=project)
    assert out.returncode == 2
    assert "gunicorn.conf.py: key 'workers'" in out.stderr
    (project / "gunicorn.conf.py").write_text(
        "forwarded_allow_ips = {'10.0.0.1'}\ndef notify(msg):\n    pass\n")
    out = run(rwsgi_bin, "main:app", cwd=project)
    assert out.returncode == 2
    assert "key 'forwarded_allow_ips': expected a string, a number, a boolean or a list, " \
        "found {'10.0.0.1'}" in out.stderr
    assert "notify" not in out.stderr, "a helper function is not a setting"


# ===== --check-config =====


def test_check_config_imports_the_app_and_never_listens(rwsgi_bin, project):
    port = free_port()
    ok = run(rwsgi_bin, "--check-config", "-b", f"127.0.0.1:{port}", "main:app", cwd=project)
    assert ok.returncode == 0, ok.stderr
    bad = run(rwsgi_bin, "--check-config", "main:missing", cwd=project)
    assert bad.returncode == 1 and "missing" in bad.stderr
    broken = run(rwsgi_bin, "--check-config", "--threads", "0", "main:app", cwd=project)
    assert broken.returncode == 1 and "--threads" in broken.stderr
    assert not listening(port)


# ===== Errors a gunicorn user meets =====


def test_unknown_flags_keep_claps_suggestion(rwsgi_bin, project):
    out = run(rwsgi_bin, "--capture-outptu", "main:app", cwd=project)
    assert out.returncode == 2 and "--capture-output" in out.stderr


@pytest.mark.parametrize("args", [["-k", "gthread"], ["--capture-output"], ["-e", "A=1"],
                                  ["--worker-class", "sync"], ["-n", "web"]])
def test_gunicorn_flags_get_no_tip_about_other_flags(rwsgi_bin, project, args):
    out = run(rwsgi_bin, "--check-config", *args, "main:app", cwd=project)
    assert out.returncode == 0, out.stderr
    assert "tip:" not in out.stderr and "azure" not in out.stderr


@pytest.mark.parametrize("cls,alternative", [
    ("gevent", "--threads"), ("eventlet", "--threads"), ("tornado", "--threads"),
    ("uvicorn.workers.UvicornWorker", "uvicorn"),
])
def test_worker_classes_that_change_the_app_are_refused(rwsgi_bin, project, cls, alternative):
    out = run(rwsgi_bin, "-k", cls, "main:app", cwd=project)
    assert out.returncode == 2
    assert f"--worker-class {cls}" in out.stderr and alternative in out.stderr


# ===== statsd =====


def test_statsd_host_alone_turns_the_sink_on(rwsgi, project):
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(15)
    port = free_port()
    srv = rwsgi("-b", f"127.0.0.1:{port}", "--statsd-host", f"127.0.0.1:{sink.getsockname()[1]}",
                "--statsd-prefix", "myapp", "--dogstatsd-tags", "env:prod,team:web",
                "--notify-interval", "1", "main:app")
    wait_serving(srv, f"http://127.0.0.1:{port}/")
    packet = sink.recv(65536).decode()
    sink.close()
    assert packet.startswith("myapp."), packet
    assert "#env:prod,team:web" in packet, packet


def test_gunicorns_variables_rank_below_the_config_file_as_in_gunicorn(rwsgi_bin, project):
    env = {"FORWARDED_ALLOW_IPS": "10.9.9.9", "WEB_CONCURRENCY": "3"}
    plain = run(rwsgi_bin, "--print-config", "main:app", env=env, cwd=project).stdout
    assert 'forwarded-allow-ips = "10.9.9.9"' in plain and "$FORWARDED_ALLOW_IPS" in plain
    assert "workers = 3" in plain
    (project / "gunicorn.conf.py").write_text("forwarded_allow_ips = '*'\nworkers = 2\n")
    filed = run(rwsgi_bin, "--print-config", "main:app", env=env, cwd=project).stdout
    lines = {l.split(" = ")[0]: l for l in filed.splitlines() if " = " in l}
    assert lines["forwarded-allow-ips"].startswith('forwarded-allow-ips = "*"'), filed
    assert "config file gunicorn.conf.py" in lines["forwarded-allow-ips"]
    assert lines["workers"].startswith("workers = 2"), filed


def test_daemon_detaches_and_serves(rwsgi_bin, project):
    port, pidfile = free_port(), project / "daemon.pid"
    started = time.monotonic()
    p = subprocess.run([rwsgi_bin, "-D", "--pid", str(pidfile), "-b", f"127.0.0.1:{port}",
                        "main:app"], env=base_env(), cwd=project, capture_output=True, text=True,
                       timeout=30)
    try:
        assert p.returncode == 0, p.stderr
        assert time.monotonic() - started < 10, "the command returned once detached"
        deadline = time.monotonic() + 20
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        daemon_pid = int(pidfile.read_text())
        assert os.getsid(daemon_pid) == daemon_pid, "a session of its own (setsid)"
        status = None
        while status is None and time.monotonic() < deadline:
            try:
                status = get(f"http://127.0.0.1:{port}/")[0]
            except OSError:
                time.sleep(0.05)
        assert status == 200
    finally:
        stop_by_pidfile(pidfile)
    assert not listening(port)
