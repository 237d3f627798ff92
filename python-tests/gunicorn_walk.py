"""Walks gunicorn's own ``gunicorn.config.KNOWN_SETTINGS`` (the installed gunicorn,
never a copied list) against a real rwsgi binary.

For every setting and every spelling gunicorn accepts (each command-line flag, and the
config-file key in a real ``gunicorn.conf.py``), rwsgi is run with a valid value under
``--check-config`` (it validates everything and imports the app); once per setting it
is also started for real and must answer a request. What rwsgi says about a setting
(nothing, one log line, or a refusal) is recorded, and checked against rwsgi's own
table (``rwsgi --gunicorn-settings``).

Used by ``test_gunicorn_settings.py`` and by ``scripts/gen_gunicorn_settings.py``,
which writes ``docs/gunicorn-settings.md`` from the same walk.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import gunicorn
import gunicorn.config

import pki

APP_SOURCE = '''
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"served"]
'''

# A log line's message after the timestamp and level.
LOG_LINE = re.compile(r"^\S+\s+(?:INFO|WARN|ERROR)\s+(?:[a-z_]+\{[^}]*\}:\s*)?(.*)$")


def samples(workdir: Path) -> dict:
    """A valid value per setting, where gunicorn's default is no good example (None,
    a placeholder, or something that needs a real path). Flags need none."""
    w = str(workdir)
    return {
        "config": str(workdir / "empty.conf.py"),
        "wsgi_app": "main:app",
        "bind": "127.0.0.1:{port}",
        "workers": 2,
        "worker_class": "gthread",
        "threads": 2,
        "timeout": 0,
        "chdir": w,
        "pythonpath": w,
        "raw_env": "WALK_ENV=1",
        "pidfile": str(workdir / "walk.pid"),
        "worker_tmp_dir": "/dev/shm",
        "user": str(os.getuid()),
        "group": str(os.getgid()),
        "umask": "0o022",
        "tmp_upload_dir": "/tmp",
        "secure_scheme_headers": {"X-FORWARDED-PROTO": "https"},
        "forwarded_allow_ips": "127.0.0.1,10.0.0.0/8",
        "accesslog": str(workdir / "access.log"),
        "errorlog": "-",
        "logger_class": "gunicorn.glogging.Logger",
        "logconfig": str(workdir / "logging.ini"),
        "logconfig_dict": {"version": 1},
        "logconfig_json": str(workdir / "logging.json"),
        "syslog_prefix": "walk",
        "statsd_host": "127.0.0.1:9",
        "dogstatsd_tags": "env:walk,team:web",
        "statsd_prefix": "walk",
        "proc_name": "walk",
        "default_proc_name": "walk",
        "paste": str(workdir / "app.ini"),
        "raw_paste_global_conf": "key=value",
        "proxy_protocol": "v1",
        "proxy_allow_ips": "127.0.0.1",
        "protocol": "uwsgi",
        "keyfile": str(workdir / "server.key"),
        "certfile": str(workdir / "server.pem"),
        "ca_certs": str(workdir / "ca.pem"),
        "ssl_version": "TLSv1_2",
        "cert_reqs": 0,
        "ciphers": "TLSv1.2",
        "http_protocols": "h1",
        "forwarder_headers": "SCRIPT_NAME,PATH_INFO",
        "header_map": "drop",
        "dirty_apps": "main:Dirty",
        "control_socket": str(workdir / "walk.ctl"),
        "control_socket_mode": "0o600",
        "reload_extra_files": str(workdir / "main.py"),
    }


# TLS settings that need a certificate and key to mean anything (rwsgi refuses them
# alone at start, naming what is missing): the walk gives the pair with them.
TLS_SETTINGS = {"certfile", "keyfile", "ca_certs", "cert_reqs", "ssl_version", "ciphers"}


def companions(name: str, workdir: Path) -> list:
    if name not in TLS_SETTINGS:
        return []
    out = []
    if name != "certfile":
        out += ["--certfile", str(workdir / "server.pem")]
    if name != "keyfile":
        out += ["--keyfile", str(workdir / "server.key")]
    return out


def served(port: int, name: str) -> bool:
    """GET / answered with the app's body: over TLS for the TLS settings, after a
    PROXY header for --proxy-protocol."""
    if name in TLS_SETTINGS:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(f"https://127.0.0.1:{port}/", timeout=5, context=ctx) as r:
            return r.status == 200 and r.read() == b"served"
    if name == "proxy_protocol":
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"PROXY TCP4 203.0.113.7 127.0.0.1 5000 80\r\n"
                      b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            got = b""
            while chunk := s.recv(65536):
                got += chunk
        return got.startswith(b"HTTP/1.1 200") and got.endswith(b"served")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
        return r.status == 200 and r.read() == b"served"


def flag_like(setting) -> bool:
    return setting.action in ("store_true", "store_const")


def value_for(setting, table: dict):
    if setting.name in table:
        return table[setting.name]
    if callable(setting.default) and not isinstance(setting.default, type):
        return "hook"
    d = setting.default
    if isinstance(d, bool) or flag_like(setting):
        return True
    if isinstance(d, (int, str)) and not hasattr(d, "name"):
        return d
    raise AssertionError(f"no sample value for gunicorn setting {setting.name!r}: add one")


@dataclass
class Outcome:
    """What rwsgi did with one spelling of one setting."""
    setting: str
    spelling: str
    code: int
    messages: list = field(default_factory=list)


@dataclass
class SettingResult:
    name: str
    flags: list
    treatment: dict
    outcomes: list = field(default_factory=list)
    served: bool | None = None
    serve_error: str = ""


def log_messages(text: str) -> list:
    out = []
    for line in text.splitlines():
        m = LOG_LINE.match(line)
        if m:
            out.append(m.group(1).strip())
        elif line.startswith("rwsgi: error: "):
            out.append(line[len("rwsgi: error: "):].strip())
    return out


class Walk:
    def __init__(self, rwsgi_bin: str, workdir: Path, env: dict):
        self.bin = rwsgi_bin
        self.dir = workdir
        self.env = dict(env)
        for k in ("PORT", "WEB_CONCURRENCY", "GUNICORN_CMD_ARGS", "RWSGI_CONFIG"):
            self.env.pop(k, None)
        (workdir / "main.py").write_text(APP_SOURCE + "\nclass Dirty:\n    pass\n")
        (workdir / "empty.conf.py").write_text("# no settings\n")
        self.samples = samples(workdir)
        # server.pem, server.key and ca.pem for the TLS settings.
        pki.make(workdir)
        self.table = {
            row["name"]: row
            for row in map(json.loads, subprocess.run(
                [rwsgi_bin, "--gunicorn-settings"], capture_output=True, text=True, check=True
            ).stdout.splitlines())
        }

    # --- one run --------------------------------------------------------------

    def cli_args(self, setting, flag: str, port: int = 0) -> list:
        value = value_for(setting, self.samples)
        if flag_like(setting):
            return [flag]
        if isinstance(value, str):
            value = value.format(port=port)
        return [flag, str(value)]

    def conf_file(self, setting, port: int = 0) -> Path:
        """A gunicorn.conf.py holding the setting. The check and the serve of one
        setting run at the same time, so each writes its own file (one file for both
        would let one run read the other's half-written file)."""
        value = value_for(setting, self.samples)
        if value == "hook":
            text = f"def {setting.name}(*args, **kwargs):\n    pass\n"
        else:
            if isinstance(value, str):
                value = value.format(port=port)
            text = f"{setting.name} = {value!r}\n"
        kind = f"serve-{port}" if port else "check"
        path = self.dir / f"{setting.name}.{kind}.gunicorn.conf.py"
        path.write_text(text)
        return path

    def check(self, setting, spelling: str) -> Outcome:
        if spelling == "config file":
            args = ["-c", str(self.conf_file(setting))]
        else:
            args = self.cli_args(setting, spelling)
        argv = [self.bin, "--check-config", *args, *companions(setting.name, self.dir),
                "--pythonpath", str(self.dir), "main:app"]
        if setting.name == "wsgi_app":
            argv.pop()
        p = subprocess.run(argv, capture_output=True, text=True, env=self.env,
                           cwd=self.dir, timeout=60)
        return Outcome(setting.name, spelling, p.returncode,
                       log_messages(p.stderr + p.stdout))

    def serve(self, setting) -> tuple[bool, str]:
        """Starts rwsgi with the setting's first spelling and asks for /."""
        port = free_port()
        if setting.cli:
            args = self.cli_args(setting, setting.cli[-1], port)
        else:
            args = ["-c", str(self.conf_file(setting, port))]
        argv = [self.bin, *args, *companions(setting.name, self.dir), "--pythonpath",
                str(self.dir)]
        if setting.name != "bind":
            argv += ["--bind", f"127.0.0.1:{port}"]
        if setting.name == "print_config":
            p = subprocess.run(argv + ["main:app"], capture_output=True, text=True,
                               env=self.env, cwd=self.dir, timeout=60)
            return p.returncode == 0 and "app = \"main:app\"" in p.stdout, p.stderr[-2000:]
        if setting.name != "wsgi_app":
            argv.append("main:app")
        if setting.name == "daemon":
            return self.serve_daemon(argv, port)
        log = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen(argv, stdout=log, stderr=log, env=self.env, cwd=self.dir,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                try:
                    return served(port, setting.name), ""
                except OSError:
                    time.sleep(0.05)
            log.seek(0)
            return False, log.read()[-3000:]
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            log.close()

    def serve_daemon(self, argv, port) -> tuple[bool, str]:
        """A daemon leaves its process group: it is found, and stopped, by its pid file."""
        pidfile = self.dir / f"daemon-{port}.pid"
        p = subprocess.run([*argv[:-1], "--pid", str(pidfile), argv[-1]], capture_output=True,
                           text=True, env=self.env, cwd=self.dir, timeout=60)
        if p.returncode != 0:
            return False, p.stderr[-2000:]
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                        return r.status == 200 and r.read() == b"served", ""
                except OSError:
                    time.sleep(0.05)
            return False, "the daemon did not serve"
        finally:
            stop_by_pidfile(pidfile)

    # --- the whole walk -------------------------------------------------------

    def run(self, parallel: int = 4) -> list:
        results = {}
        jobs = []
        for s in gunicorn.config.KNOWN_SETTINGS:
            results[s.name] = SettingResult(s.name, list(s.cli or []), self.table.get(s.name, {}))
            for spelling in [*(s.cli or []), "config file"]:
                jobs.append(("check", s, spelling))
            if self.table.get(s.name, {}).get("treatment") != "refused" and s.name != "check_config":
                jobs.append(("serve", s, None))

        def one(job):
            kind, s, spelling = job
            if kind == "check":
                return s.name, self.check(s, spelling)
            return s.name, self.serve(s)

        with ThreadPoolExecutor(parallel) as pool:
            for name, out in pool.map(one, jobs):
                if isinstance(out, Outcome):
                    results[name].outcomes.append(out)
                else:
                    results[name].served, results[name].serve_error = out
        return [results[s.name] for s in gunicorn.config.KNOWN_SETTINGS]


def stop_by_pidfile(pidfile: Path, timeout: float = 15) -> None:
    deadline = time.monotonic() + 5
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().strip())
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------
# judging and the docs table
# ---------------------------------------------------------------------------


def problems(r: SettingResult) -> list:
    """Why a setting's walk is wrong; empty when rwsgi did what its table says."""
    out = []
    t = r.treatment
    if not t:
        return [f"{r.name}: not in rwsgi's table (rwsgi --gunicorn-settings)"]
    for o in r.outcomes:
        said = [m for m in o.messages if f"gunicorn's {r.name}" in m or m.startswith("--worker-class")]
        if t["treatment"] == "refused":
            if o.code != 1 or not any(t["note"] in m for m in o.messages):
                out.append(f"{r.name} ({o.spelling}): expected a refusal saying {t['note']!r}, "
                           f"got exit {o.code}: {o.messages}")
            continue
        if o.code != 0:
            out.append(f"{r.name} ({o.spelling}): exit {o.code}: {o.messages}")
            continue
        if t["treatment"] in ("ignored", "planned"):
            if len(said) != 1 or t["note"] not in said[0]:
                out.append(f"{r.name} ({o.spelling}): expected one log line saying "
                           f"{t['note']!r}, got {o.messages}")
        elif said and r.name != "worker_class":  # same, implemented
            out.append(f"{r.name} ({o.spelling}): implemented, yet logged {said}")
    if t["treatment"] != "refused" and r.name != "check_config" and not r.served:
        out.append(f"{r.name}: did not serve: {r.serve_error}")
    return out


def message(r: SettingResult) -> str:
    """What rwsgi says about the setting, as observed (the first spelling's run)."""
    for o in r.outcomes:
        for m in o.messages:
            if f"gunicorn's {r.name}" in m:
                return m.split(": ", 1)[1] if m.startswith("-") else m
    return ""


def markdown(results: list) -> str:
    lines = [
        "# gunicorn settings in rwsgi",
        "",
        "Generated by `python-tests/gen_gunicorn_settings.py` from a walk over "
        f"`gunicorn.config.KNOWN_SETTINGS` of gunicorn {gunicorn.__version__} "
        f"({len(results)} settings) against rwsgi; `test_gunicorn_settings.py` fails "
        "when this file is stale. Every spelling listed was run: each command-line flag, "
        "and the key in a `gunicorn.conf.py`.",
        "",
        "- **same**: rwsgi's option with gunicorn's meaning (the gunicorn spellings are "
        "its aliases; `RWSGI_<OPTION>` and TOML keys work too).",
        "- **ignored**: accepted; it cannot mean anything in rwsgi, and rwsgi logs one "
        "line saying why (the text below).",
        "- **implemented**: gunicorn's meaning, without an rwsgi option of its own.",
        "- **planned**: parsed and validated with gunicorn's meaning; this build logs one "
        "line that it has no effect yet.",
        "- **refused**: rwsgi does not start, with the message below: accepting it would "
        "silently change how the app behaves.",
        "",
        "| setting | spellings | rwsgi | what rwsgi does |",
        "|---|---|---|---|",
    ]
    for r in results:
        t = r.treatment
        spellings = ", ".join(f"`{f}`" for f in r.flags) or "config file only"
        if t["treatment"] == "same":
            opt = "APP" if t["option"] == "app" else f"`--{t['option']}`"
            what = f"as {opt}" + (f"; {t['note']}" if t["note"] else "")
        elif t["treatment"] == "implemented":
            what = f"gunicorn's meaning: {t['note']}"
        elif t["treatment"] == "refused":
            what = f"refused: {t['note']}"
        else:
            what = message(r) or t["note"]
        what = what.replace("|", "\\|")
        lines.append(f"| `{r.name}` | {spellings} | {t['treatment']} | {what} |")
    lines.append("")
    return "\n".join(lines)
