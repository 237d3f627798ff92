"""Virtualenvs and the embedded interpreter: a package pip-installed only into a fresh
venv imports with --venv and with $VIRTUAL_ENV (and not without either), --venv wins
over $VIRTUAL_ENV, sys.prefix and sys.path are the venv's, a missing venv dir is an
error, and the interpreter inside rwsgi is the one it was built against: same
sys.version, libpython mapped from that interpreter's LIBDIR (never another one)."""

import base64
import hashlib
import json
import os
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from conftest import base_env, exchange, process_tree

MARKER = "venv-probe-marker-2b7d"


def make_wheel(dest_dir):
    """A tiny pure-Python wheel, built by hand: pip installs it offline, no build step."""
    name, ver = "rwsgi_venv_probe", "1.0"
    whl = dest_dir / f"{name}-{ver}-py3-none-any.whl"
    files = {
        f"{name}/__init__.py": f'MARKER = "{MARKER}"\n',
        f"{name}-{ver}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n",
        f"{name}-{ver}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    with zipfile.ZipFile(whl, "w") as z:
        for path, text in files.items():
            data = text.encode()
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(data)}")
        record.append(f"{name}-{ver}.dist-info/RECORD,,")
        z.writestr(f"{name}-{ver}.dist-info/RECORD", "\n".join(record) + "\n")
    return whl


@pytest.fixture(scope="module")
def probe_venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("venvtest")
    venv = root / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", str(venv)], check=True, timeout=180)
    whl = make_wheel(root)
    p = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--no-index", "-q", str(whl)],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stdout + p.stderr
    return venv


def venv_python_info(venv):
    out = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "import sys, json, rwsgi_venv_probe as m; "
                          "print(json.dumps({'version': sys.version, 'prefix': sys.prefix, 'path': sys.path, 'file': m.__file__}))"],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return json.loads(out)


def probe(srv):
    r = exchange(srv, "GET", "/")
    assert r.status == 200, r.body[:2000]
    return r.json()


def test_probe_package_only_in_the_venv(probe_venv):
    # Preconditions that make the other tests meaningful.
    info = venv_python_info(probe_venv)
    assert info["file"].startswith(str(probe_venv))
    p = subprocess.run([sys.executable, "-c", "import rwsgi_venv_probe"], capture_output=True, timeout=60)
    assert p.returncode != 0, "the probe package leaked outside its venv"


def test_venv_option(start_server, probe_venv):
    srv = start_server("apps.venv_probe_app:application", "--venv", str(probe_venv), env={"VIRTUAL_ENV": None})
    d = probe(srv)
    assert d["marker"] == MARKER, d["origin"]
    assert d["origin"].startswith(str(probe_venv))


def test_virtual_env_variable(start_server, probe_venv):
    srv = start_server("apps.venv_probe_app:application", env={"VIRTUAL_ENV": str(probe_venv)})
    d = probe(srv)
    assert d["marker"] == MARKER, d["origin"]


def test_venv_option_wins_over_virtual_env(start_server, probe_venv):
    srv = start_server("apps.venv_probe_app:application", "--venv", str(probe_venv),
                       env={"VIRTUAL_ENV": sys.prefix})
    assert probe(srv)["marker"] == MARKER


def test_no_venv_no_package(start_server):
    srv = start_server("apps.venv_probe_app:application", env={"VIRTUAL_ENV": None})
    d = probe(srv)
    assert d["marker"] is None
    assert "rwsgi_venv_probe" in d["origin"]


def test_venv_sys_prefix_and_path_match_venv_python(start_server, probe_venv):
    info = venv_python_info(probe_venv)
    srv = start_server("apps.venv_probe_app:application", "--venv", str(probe_venv), env={"VIRTUAL_ENV": None})
    d = probe(srv)
    assert os.path.realpath(d["sys_prefix"]) == os.path.realpath(info["prefix"])
    venv_site = [p for p in info["path"] if p.endswith("site-packages")]
    assert venv_site
    for p in venv_site:
        assert p in d["sys_path"], f"{p} missing from rwsgi's sys.path {d['sys_path']}"
    # the venv's site-packages come before any other site-packages
    sp = [p for p in d["sys_path"] if p.endswith("site-packages")]
    assert sp[0] == venv_site[0], sp


def test_missing_venv_dir_is_an_error(rwsgi_bin, tmp_path):
    missing = tmp_path / "no-such-venv"
    p = subprocess.run([rwsgi_bin, "--venv", str(missing), "--bind", "127.0.0.1:0",
                        "apps.venv_probe_app:application"],
                       capture_output=True, text=True, timeout=30, env=base_env({"VIRTUAL_ENV": None}),
                       stdin=subprocess.DEVNULL)
    assert p.returncode != 0
    assert str(missing) in p.stderr


def test_interpreter_is_the_one_built_against(start_server, probe_venv):
    info = venv_python_info(probe_venv)
    srv = start_server("apps.venv_probe_app:application", "--venv", str(probe_venv), env={"VIRTUAL_ENV": None})
    d = probe(srv)
    assert d["sys_version"] == info["version"] == sys.version


def test_libpython_from_build_interpreter_libdir(start_server):
    srv = start_server("apps.venv_probe_app:application")
    probe(srv)
    libdir = os.path.realpath(sysconfig.get_config_var("LIBDIR"))
    mapped = set()
    for pid in process_tree(srv.pid):
        try:
            with open(f"/proc/{pid}/maps") as f:
                for line in f:
                    path = line.split()[-1]
                    if "libpython" in os.path.basename(path):
                        mapped.add(path)
        except OSError:
            pass
    assert mapped, "no libpython mapped: is the interpreter linked statically? then check sys.version only"
    for path in mapped:
        assert os.path.dirname(os.path.realpath(path)) == libdir, \
            f"rwsgi loaded {path}, not the libpython in {libdir}"
