"""Command line: --version, exit 2 naming an unknown option or a bad value, app
loading errors (import failure, missing or non-callable attribute: non-zero exit
before listening, with module, exception and traceback), the default callable,
binds (--bind IPv4/IPv6/repeated, $PORT, the 127.0.0.1:8000 default), --chdir
first on sys.path, --pythonpath, --log-level, and the "Listening at" line."""

import os
import re
import socket
import subprocess
import time

import pytest

from conftest import REPO, TESTS_DIR, base_env, exchange, free_port, launch


def run(bin_path, *args, env=None, timeout=30):
    return subprocess.run([bin_path, *args], capture_output=True, text=True, timeout=timeout,
                          env=base_env(env), stdin=subprocess.DEVNULL)


def cargo_version():
    text = (REPO / "Cargo.toml").read_text()
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)


def test_version(rwsgi_bin):
    p = run(rwsgi_bin, "--version")
    assert p.returncode == 0, p.stderr
    assert "rwsgi" in p.stdout
    assert cargo_version() in p.stdout


def test_help_lists_options(rwsgi_bin):
    p = run(rwsgi_bin, "--help")
    assert p.returncode == 0
    for opt in ["--bind", "--threads", "--workers", "--chdir", "--pythonpath", "--venv", "--keep-alive",
                "--limit-request-line", "--limit-request-fields", "--limit-request-field-size",
                "--log-level", "--access-log", "--access-log-format", "--version"]:
        assert opt in p.stdout, opt


def test_unknown_option_exits_2_naming_it(rwsgi_bin):
    p = run(rwsgi_bin, "--no-such-option", "apps.plain:application")
    assert p.returncode == 2
    assert "--no-such-option" in p.stderr


@pytest.mark.parametrize("opt,value", [
    ("--threads", "abc"),
    ("--threads", "0"),
    ("--workers", "many"),
    ("--keep-alive", "soon"),
    ("--header-timeout", "x"),
    ("--limit-request-line", "-5"),
    ("--limit-request-fields", "lots"),
    ("--log-level", "loud"),
    ("--log-format", "xml"),
    ("--bind", "127.0.0.1:notaport"),
    ("--bind", "256.1.1.1:80"),
])
def test_bad_value_exits_2_naming_option(rwsgi_bin, opt, value):
    p = run(rwsgi_bin, f"{opt}={value}", "apps.plain:application")
    assert p.returncode == 2, f"{opt} {value}: exit {p.returncode}\n{p.stderr}"
    assert opt.lstrip("-") in (p.stderr + p.stdout).lower(), p.stderr


def test_missing_app_argument_is_usage_error(rwsgi_bin):
    p = run(rwsgi_bin)
    assert p.returncode == 2, p.stderr
    assert "app" in p.stderr.lower()


def _never_listens(rwsgi_bin, tmp_path, app, extra=()):
    port = free_port()
    argv = [rwsgi_bin, "--bind", f"127.0.0.1:{port}", "--chdir", str(TESTS_DIR), *extra, app]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=base_env(), stdin=subprocess.DEVNULL)
    connected = False
    deadline = time.monotonic() + 20
    while proc.poll() is None and time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                connected = True
        time.sleep(0.02)
    if proc.poll() is None:
        proc.kill()
        out, err = proc.communicate(timeout=5)
        pytest.fail(f"rwsgi still running 20s after a failing import:\n{err[-3000:]}")
    out, err = proc.communicate(timeout=5)
    return proc.returncode, connected, out, err


def test_import_failure_exits_before_listening(rwsgi_bin, tmp_path):
    code, connected, out, err = _never_listens(rwsgi_bin, tmp_path, "apps.import_error:application")
    assert code != 0
    assert not connected, "the port accepted connections although the app failed to import"
    assert "apps.import_error" in err
    assert "RuntimeError" in err and "import-time-marker-7f3a" in err
    assert "Traceback" in err
    assert "_helper" in err, "the Python traceback (with the failing function) is missing"


def test_missing_module_named(rwsgi_bin, tmp_path):
    code, connected, out, err = _never_listens(rwsgi_bin, tmp_path, "no_such_module_q9:application")
    assert code != 0 and not connected
    assert "no_such_module_q9" in err
    assert "ModuleNotFoundError" in err


def test_missing_attribute_named(rwsgi_bin, tmp_path):
    code, connected, out, err = _never_listens(rwsgi_bin, tmp_path, "apps.not_callable:missing_attr")
    assert code != 0 and not connected
    assert "missing_attr" in err
    assert "apps.not_callable" in err


def test_non_callable_attribute_named(rwsgi_bin, tmp_path):
    code, connected, out, err = _never_listens(rwsgi_bin, tmp_path, "apps.not_callable:application")
    assert code != 0 and not connected
    assert "application" in err
    assert "callable" in err.lower()


def test_import_failure_with_workers_exits_too(rwsgi_bin, tmp_path):
    code, connected, out, err = _never_listens(rwsgi_bin, tmp_path, "apps.import_error:application",
                                               ["--workers", "2"])
    assert code != 0
    assert "import-time-marker-7f3a" in err


def test_default_callable_is_application(start_server):
    srv = start_server("apps.plain")
    assert exchange(srv, "GET", "/").body == b"plain app"


def test_listening_line_names_address(start_server):
    srv = start_server("apps.plain:application")
    srv.wait_for_log("Listening at", timeout=5, stream="stderr")
    line = [l for l in srv.stderr_text().splitlines() if "Listening at" in l][0]
    assert f"127.0.0.1:{srv.port}" in line


def test_port_env_binds_all_interfaces(start_server):
    port = free_port()
    srv = start_server("apps.plain:application", bind=None, env={"PORT": str(port)}, wait=False)
    srv.port = port
    from conftest import wait_ready
    wait_ready(srv, 20)
    assert exchange(srv, "GET", "/").status == 200
    # 0.0.0.0 also accepts on 127.0.0.2, which a 127.0.0.1 bind would refuse.
    with socket.create_connection(("127.0.0.2", port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.")


def test_default_bind_127_0_0_1_8000(start_server):
    with socket.socket() as probe:
        busy = probe.connect_ex(("127.0.0.1", 8000)) == 0
    srv = start_server("apps.plain:application", bind=None, wait=False)
    srv.port = 8000
    if busy:
        # Something else holds 8000: rwsgi must fail naming that address.
        srv.wait(20)
        assert srv.returncode != 0
        assert "8000" in srv.stderr_text()
        return
    from conftest import wait_ready
    wait_ready(srv, 20)
    assert exchange(srv, "GET", "/").body == b"plain app"
    with socket.socket() as s:
        s.settimeout(2)
        assert s.connect_ex(("127.0.0.2", 8000)) != 0, "default bind should be 127.0.0.1 only"


def test_ipv6_bind(start_server):
    srv = start_server("apps.wsgi_rules:application", host="::1")
    env = exchange(srv, "GET", "/environ").json()["environ"]
    assert env["REMOTE_ADDR"] == "::1"
    assert env["SERVER_PORT"] == str(srv.port)


def test_repeated_bind(start_server):
    p2 = free_port()
    srv = start_server("apps.wsgi_rules:application", "--bind", f"127.0.0.1:{p2}")
    assert exchange(srv, "GET", "/hello").status == 200
    with socket.create_connection(("127.0.0.1", p2), timeout=5) as s:
        s.sendall(b"GET /hello HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(4096):
            data += chunk
    assert data.endswith(b"hello world")


def test_chdir_first_on_sys_path(start_server, tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    a.mkdir()
    b.mkdir()
    code = ("import os, sys\nWHO = '{who}'\n"
            "def application(environ, start_response):\n"
            "    body = (WHO + ' ' + os.getcwd() + ' ' + sys.path[0]).encode()\n"
            "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
            "    return [body]\n")
    (a / "whoapp.py").write_text(code.format(who="chdir"))
    (b / "whoapp.py").write_text(code.format(who="pythonpath"))
    srv = start_server("whoapp:application", "--pythonpath", str(b), chdir=a)
    who, cwd, first = exchange(srv, "GET", "/").body.decode().split(" ")
    assert who == "chdir", "--chdir must come before --pythonpath on sys.path"
    assert cwd == str(a)
    assert first in (str(a), "", ".")


def test_pythonpath_comma_list(start_server, tmp_path):
    d1, d2 = tmp_path / "d1", tmp_path / "d2"
    d1.mkdir()
    d2.mkdir()
    (d1 / "mod_one.py").write_text("VALUE = 'one'\n")
    (d2 / "pp_app.py").write_text(
        "import mod_one\n"
        "def application(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [mod_one.VALUE.encode()]\n")
    srv = start_server("pp_app:application", "--pythonpath", f"{d1},{d2}", chdir=None, cwd=tmp_path)
    assert exchange(srv, "GET", "/").body == b"one"


def test_log_level_error_hides_info(start_server):
    srv = start_server("apps.wsgi_rules:application", "--log-level", "error")
    assert exchange(srv, "GET", "/hello").status == 200
    time.sleep(0.3)
    assert "Listening at" not in srv.stderr_text()


def test_log_level_debug_accepted(start_server):
    srv = start_server("apps.wsgi_rules:application", "--log-level", "debug")
    assert exchange(srv, "GET", "/hello").status == 200
    assert "Listening at" in srv.stderr_text()


def test_error_log_to_file(start_server, tmp_path):
    log = tmp_path / "server.log"
    srv = start_server("apps.wsgi_rules:application", "--error-log", str(log))
    assert exchange(srv, "GET", "/errors?marker=to-file").status == 200
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if log.exists() and "to-file" in log.read_text(errors="replace"):
            break
        time.sleep(0.05)
    text = log.read_text(errors="replace")
    assert "Listening at" in text
    assert "wsgi-errors-write to-file" in text


def test_log_format_json(start_server):
    import json
    srv = start_server("apps.wsgi_rules:application", "--log-format", "json")
    assert exchange(srv, "GET", "/errors?marker=json-line").status == 200
    srv.wait_for_log("json-line", timeout=5)
    lines = [l for l in srv.stderr_text().splitlines() if l.strip()]
    objs = [json.loads(l) for l in lines]  # every line is one JSON object
    assert any("Listening at" in json.dumps(o) for o in objs)
    assert any("wsgi-errors-write json-line" in json.dumps(o) for o in objs)
