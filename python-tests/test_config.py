"""Configuration: `-c FILE` (TOML), `RWSGI_<OPTION>`, their precedence, `--print-config`
and errors that name the option and where its value came from.

The binary is `$RWSGI_BIN` (default: target/debug/rwsgi of this checkout). Everything
here runs the real binary in a subprocess; only the last test starts a server.
Self-contained on purpose: its helpers live here, not in conftest.py.
"""

import os
import signal
import socket
import subprocess
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Variables that would change what the binary reads from the environment.
AMBIENT = ("PORT", "WEB_CONCURRENCY", "VIRTUAL_ENV")


def rwsgi_bin():
    path = os.environ.get("RWSGI_BIN") or str(REPO / "target" / "debug" / "rwsgi")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no rwsgi binary at {path}: build it or set RWSGI_BIN")
    return path


def child_env(extra=None):
    """The test's environment without RWSGI_* and gunicorn-style variables, plus extra."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("RWSGI_") and k not in AMBIENT
    }
    env.update(extra or {})
    return env


def run(args, env=None, cwd=None):
    return subprocess.run(
        [rwsgi_bin(), *args],
        env=child_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def print_config(args, env=None, cwd=None):
    """Runs --print-config; returns (parsed TOML, {option: source comment}, stdout)."""
    proc = run(["--print-config", *args], env=env, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    sources = {}
    for line in proc.stdout.splitlines():
        if line and not line.startswith("#") and "  # " in line:
            body, comment = line.rsplit("  # ", 1)
            sources[body.split(" = ", 1)[0]] = comment
    return tomllib.loads(proc.stdout), sources, proc.stdout


def write_toml(path, text):
    path.write_text(text)
    return str(path)


# ===== Precedence =====


def test_command_line_beats_environment_beats_file_beats_default(tmp_path):
    cfg = write_toml(
        tmp_path / "rwsgi.toml",
        """
app = "fileapp:app"
threads = 2
backlog = 100
timeout = 5
bind = ["127.0.0.1:9101"]
notify = ["log"]
ignore_django_settings = true
""",
    )
    env = {
        "RWSGI_THREADS": "3",
        "RWSGI_BACKLOG": "200",
        "RWSGI_BIND": "127.0.0.1:9102,127.0.0.1:9103",
        "RWSGI_IGNORE_DJANGO_SETTINGS": "off",
    }
    conf, src, _ = print_config(["-c", cfg, "--threads", "4"], env=env)

    assert (conf["threads"], src["threads"]) == (4, "command line")
    assert (conf["backlog"], src["backlog"]) == (200, "environment RWSGI_BACKLOG")
    # A repeatable option takes the whole list of one layer, never a mix.
    assert conf["bind"] == ["127.0.0.1:9102", "127.0.0.1:9103"]
    assert src["bind"] == "environment RWSGI_BIND"
    # An environment "off" switches off the file's true.
    assert conf["ignore-django-settings"] is False
    assert (conf["timeout"], src["timeout"]) == (5, f"config file {cfg}")
    assert (conf["notify"], src["notify"]) == (["log"], f"config file {cfg}")
    assert (conf["app"], src["app"]) == ("fileapp:app", f"config file {cfg}")
    assert (conf["graceful-timeout"], src["graceful-timeout"]) == (30, "default")

    # Drop the top layers one by one.
    conf, src, _ = print_config(["-c", cfg], env=env)
    assert (conf["threads"], src["threads"]) == (3, "environment RWSGI_THREADS")
    conf, src, _ = print_config(["-c", cfg])
    assert (conf["threads"], src["threads"]) == (2, f"config file {cfg}")
    assert conf["bind"] == ["127.0.0.1:9101"]
    assert conf["ignore-django-settings"] is True
    conf, src, _ = print_config([])
    assert (conf["threads"], src["threads"]) == (1, "default")


def test_config_file_named_by_the_environment(tmp_path):
    cfg = write_toml(tmp_path / "env.toml", "workers = 3\napp = 'a:b'\n")
    conf, src, out = print_config([], env={"RWSGI_CONFIG": cfg})
    assert (conf["workers"], src["workers"]) == (3, f"config file {cfg}")
    assert f"# config file: {cfg} (environment RWSGI_CONFIG)" in out


def test_gunicorn_defaults_show_as_effective_values():
    conf, src, _ = print_config([], env={"PORT": "5055", "WEB_CONCURRENCY": "3"})
    assert conf["bind"] == ["0.0.0.0:5055"]
    assert src["bind"] == "default, from $PORT"
    assert (conf["workers"], src["workers"]) == (3, "default, from $WEB_CONCURRENCY")


def test_an_empty_variable_counts_as_unset(tmp_path):
    cfg = write_toml(tmp_path / "e.toml", "threads = 2\n")
    conf, src, _ = print_config(
        ["-c", cfg], env={"RWSGI_THREADS": "", "VIRTUAL_ENV": ""}
    )
    assert (conf["threads"], src["threads"]) == (2, f"config file {cfg}")
    assert "venv" not in conf


# ===== --print-config =====


def test_print_config_masks_the_redis_password(tmp_path):
    cfg = write_toml(tmp_path / "r.toml", 'redis-key-prefix = "api-key-prefix"\n')
    for args, env in [
        (["-c", cfg], {"RWSGI_REDIS_URL": "redis://app:hunter2@cache:6379/0"}),
        (["-c", cfg, "--redis-url", "redis://app:hunter2@cache:6379/0"], {}),
    ]:
        proc = run(["--print-config", *args], env=env)
        assert proc.returncode == 0, proc.stderr
        assert "hunter2" not in proc.stdout + proc.stderr
        conf = tomllib.loads(proc.stdout)
        assert conf["redis-url"] == "redis://app:****@cache:6379/0"
        # Not a secret, though its name has "key" in it.
        assert conf["redis-key-prefix"] == "api-key-prefix"


def test_print_config_without_app_still_prints():
    proc = run(["--print-config"])
    assert proc.returncode == 0, proc.stderr
    assert "app" not in tomllib.loads(proc.stdout)
    assert any(line.startswith('# app = ""') for line in proc.stdout.splitlines())


def test_print_config_fed_back_gives_the_same_configuration(tmp_path):
    cfg = write_toml(
        tmp_path / "in.toml",
        """
statsd-tag = ["env:prod", "team:web"]
log-format = "json"
max-queue-time = 2.5
access-log-format = '%(h)s "%(r)s" %(s)s'
""",
    )
    first, _, out = print_config(
        ["-c", cfg, "-b", "127.0.0.1:9201", "--pythonpath", "a,b", "m.wsgi:app"],
        env={"RWSGI_WORKERS": "2", "RWSGI_NOTIFY": "log,statsd", "RWSGI_STATSD_HOST": "127.0.0.1:8125"},
    )
    again = write_toml(tmp_path / "out.toml", out)
    second, src, _ = print_config(["-c", again])
    assert first == second
    assert src["workers"] == f"config file {again}"
    assert first["pythonpath"] == ["a", "b"]
    assert first["notify"] == ["log", "statsd"]


# ===== Errors: exit 2, naming the option and the source =====

ERRORS = [
    # (file text or None, env, extra args, fragments the message must hold)
    ("threads = 'x'\n", {}, [], ["config file {cfg}: key 'threads': invalid value 'x' for '--threads <N>'"]),
    (None, {"RWSGI_THREADS": "x"}, [], ["environment RWSGI_THREADS: invalid value 'x' for '--threads <N>'"]),
    (None, {"RWSGI_THREADS": "0"}, [], ["--threads 0: must be between 1 and 4096 (from RWSGI_THREADS)"]),
    ("threads = 0\n", {}, [], ["--threads 0: must be between 1 and 4096 (from config file {cfg})"]),
    ("thread = 4\n", {}, [], ["config file {cfg}: unknown key 'thread'; did you mean 'threads'?"]),
    ("log-format = 'xml'\n", {}, [], ["key 'log-format': invalid value 'xml'", "human, json"]),
    ("threads = true\n", {}, [], ["key 'threads': expected a number for '--threads', found a boolean"]),
    ("bind = ['nope:x']\n", {}, [], ["--bind nope:x: bad port", "(from config file {cfg})"]),
    (None, {"RWSGI_IGNORE_DJANGO_SETTINGS": "maybe"}, [], ["environment RWSGI_IGNORE_DJANGO_SETTINGS: invalid value 'maybe'"]),
    (None, {"RWSGI_CHDIR": "/nonexistent/dir"}, [], ["--chdir /nonexistent/dir: no such directory (from RWSGI_CHDIR)"]),
    ("threads = \n", {}, [], ["config file {cfg}: not valid TOML"]),
    (None, {"RWSGI_CONFIG": "/nonexistent/rwsgi.toml"}, [], ["--config /nonexistent/rwsgi.toml (from RWSGI_CONFIG): cannot read"]),
    (None, {"RWSGI_THREADS": "3"}, ["--threads", "x"], ["invalid value 'x' for '--threads <N>'"]),
]


@pytest.mark.parametrize("print_mode", [False, True], ids=["start", "print-config"])
@pytest.mark.parametrize("file_text,env,args,fragments", ERRORS)
def test_wrong_values_fail_at_start_naming_option_and_source(
    tmp_path, print_mode, file_text, env, args, fragments
):
    cfg = str(tmp_path / "bad.toml")
    argv = list(args)
    if file_text is not None:
        write_toml(tmp_path / "bad.toml", file_text)
        argv += ["-c", cfg]
    argv += ["--print-config"] if print_mode else ["hello:app"]
    proc = run(argv, env=env, cwd=tmp_path)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == ""
    for fragment in fragments:
        assert fragment.format(cfg=cfg) in proc.stderr
    assert "Traceback" not in proc.stderr and "panicked" not in proc.stderr


# ===== A server configured by the file alone =====


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serves_from_a_config_file_alone(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "cfg_hello.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'configured by file']\n"
    )
    port = free_port()
    cfg = write_toml(
        tmp_path / "rwsgi.toml",
        f'bind = "127.0.0.1:{port}"\napp = "cfg_hello:app"\nchdir = "{site}"\n',
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = subprocess.Popen(
        [rwsgi_bin(), "-c", cfg],
        env=child_env(),
        cwd=elsewhere,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, server.communicate()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    assert r.status == 200
                    assert r.read() == b"configured by file"
                    break
            except (urllib.error.URLError, ConnectionError):
                assert time.monotonic() < deadline, "server did not answer in 30 s"
                time.sleep(0.1)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
