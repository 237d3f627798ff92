"""The rwsgi wheels (issue 12), installed with pip into fresh venvs the way users do.

* Per CPython 3.10-3.13 (pyenv's): ``pip install rwsgi-*.whl flask`` into a fresh venv
  puts ``rwsgi`` on that venv's PATH; it serves examples/flask_app with that venv's
  interpreter (its sys.prefix, its Flask, its libpython mapped from its LIBDIR);
  ``rwsgi --version`` and ``python -m rwsgi --version`` name that Python.
* One 3.11 wheel in two prefixes: a venv of pyenv's 3.11.7 and a venv of Debian's
  /usr/bin/python3.11 (with Debian's libpython3.11) each run their own libpython; the
  wheel's binary carries no rpath from the build machine.
* Clear errors, never a loader failure: a wheel for another minor version; Debian's
  python3.11 without libpython3.11 (the package hidden in a private mount namespace);
  a Python built without --enable-shared (its own sysconfig saying so, through
  ``_PYTHON_SYSCONFIGDATA_NAME``); a broken install; a venv without the app's packages.

The wheels come from ``$RWSGI_WHEELHOUSE`` (scripts/test.sh builds them there with
``scripts/build-wheels.sh --profile dev``).
"""

from __future__ import annotations

import json
import os
import pprint
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import EXAMPLES, exchange, free_port, launch, process_tree
from wheelhouse import make_venv, pyenv_python, run, wheel_for

MINORS = ["3.10", "3.11", "3.12", "3.13"]
DEBIAN_PYTHON = "/usr/bin/python3.11"
LOADER_ERROR = "error while loading shared libraries"
FLASK = "flask>=3,<4"

PROBE = '''
import json, sys, flask
from app import app  # examples/flask_app, through --pythonpath


@app.get("/_probe")
def _probe():
    return {"prefix": sys.prefix, "executable": sys.executable, "flask": flask.__file__,
            "version": sys.version.split()[0]}
'''


def user_env(venv: Path | None = None, **extra) -> dict:
    """A shell where the user typed `rwsgi`: the venv's bin first on PATH, no VIRTUAL_ENV
    (the venv must be found from the interpreter that runs the launcher)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME")}
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra)
    return env


def config_var(python, name: str) -> str:
    return run([python, "-c", f"import sysconfig; print(sysconfig.get_config_var({name!r}))"],
               timeout=60).stdout.strip()


def mapped_libpython(pid: int) -> set[str]:
    """The libpython files mapped by pid and its children (the workers)."""
    found = set()
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/maps") as f:
                for line in f:
                    path = line.split()[-1]
                    if "/libpython3" in path:
                        found.add(path)
        except OSError:
            pass
    return found


def serve_probe(venv: Path, tmp_path: Path):
    """`rwsgi` from the venv's PATH serving examples/flask_app plus a /_probe route."""
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir(exist_ok=True)
    (probe_dir / "probe.py").write_text(PROBE)
    rwsgi = shutil.which("rwsgi", path=str(venv / "bin"))
    assert rwsgi == str(venv / "bin" / "rwsgi"), f"rwsgi is not on the venv's PATH: {rwsgi}"
    env = user_env(venv)
    env["VIRTUAL_ENV"] = None  # launch() merges over the test's environment
    env["LD_LIBRARY_PATH"] = None
    return launch(rwsgi, "probe:app", ["--pythonpath", EXAMPLES / "flask_app"],
                  tmp_path / "logs", env=env, chdir=probe_dir)


def check_probe(srv, venv: Path, python_version: str, libdir: str) -> None:
    r = exchange(srv, "GET", "/")
    assert r.status == 200 and r.body == b"Hello from Flask\n", r
    r = exchange(srv, "GET", "/_probe")
    assert r.status == 200, r
    probe = json.loads(r.body)
    assert probe["prefix"] == str(venv), probe
    assert probe["executable"] == str(venv / "bin" / "python"), probe
    assert probe["flask"].startswith(str(venv) + "/"), probe
    assert probe["version"] == python_version, probe
    libs = mapped_libpython(srv.proc.pid)
    assert libs and all(os.path.dirname(lib) == libdir for lib in libs), (libs, libdir)


def python_version(python) -> str:
    return run([python, "-c", "import platform; print(platform.python_version())"]).stdout.strip()


# ---------------------------------------------------------------------------
# one wheel per minor version
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("minor", MINORS)
def test_wheel_in_a_fresh_venv_serves_flask_from_the_venv_path(minor, tmp_path):
    base = pyenv_python(minor)
    venv = make_venv(base, tmp_path / f"venv{minor}", wheel_for(minor), FLASK)
    version = python_version(base)

    # `rwsgi --version` and `python -m rwsgi --version` name the Python they run with.
    for argv in ([venv / "bin" / "rwsgi", "--version"],
                 [venv / "bin" / "python", "-m", "rwsgi", "--version"]):
        p = run(argv, env=user_env(venv), cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert f"(Python {version}," in p.stdout, p.stdout
        assert f"interpreter {venv}/bin/python" in p.stdout, p.stdout

    # The probe checks that Flask comes from the venv's site-packages.
    srv = serve_probe(venv, tmp_path)
    try:
        check_probe(srv, venv, version, config_var(base, "LIBDIR"))
    finally:
        srv.stop()


# ---------------------------------------------------------------------------
# one 3.11 wheel, two prefixes
# ---------------------------------------------------------------------------


def test_one_wheel_runs_the_libpython_of_each_prefix(tmp_path):
    whl = wheel_for("3.11")
    assert os.path.exists(DEBIAN_PYTHON), f"{DEBIAN_PYTHON} missing: scripts/test.sh installs it"
    pyenv_venv = make_venv(pyenv_python("3.11"), tmp_path / "pyenv-venv", whl, FLASK)
    debian_venv = make_venv(DEBIAN_PYTHON, tmp_path / "debian-venv", whl, FLASK)

    # The binary has no rpath or runpath: libpython comes from whoever starts it.
    dyn = run(["readelf", "-d", pyenv_venv / "bin" / "rwsgi-server"]).stdout
    assert "libpython3.11.so" in dyn, dyn
    assert "RPATH" not in dyn and "RUNPATH" not in dyn, dyn

    seen = {}
    for venv, base in ((pyenv_venv, pyenv_python("3.11")), (debian_venv, DEBIAN_PYTHON)):
        libdir = config_var(base, "LIBDIR")
        version = python_version(base)
        srv = serve_probe(venv, tmp_path / venv.name)
        try:
            check_probe(srv, venv, version, libdir)
            seen[venv.name] = (version, mapped_libpython(srv.proc.pid))
        finally:
            srv.stop()
    assert seen["pyenv-venv"][1] != seen["debian-venv"][1], seen
    assert seen["debian-venv"][1] == {"/usr/lib/x86_64-linux-gnu/libpython3.11.so.1.0"}, seen


# ---------------------------------------------------------------------------
# clear errors
# ---------------------------------------------------------------------------


def assert_clean_failure(p: subprocess.CompletedProcess, *needles: str) -> None:
    text = p.stdout + p.stderr
    assert p.returncode != 0, text
    assert LOADER_ERROR not in text and "Traceback" not in text, text
    for n in needles:
        assert n in text, f"{n!r} not in:\n{text}"


def test_minor_version_mismatch_names_the_wheel_to_install(tmp_path):
    # A 3.11 wheel that ended up in a 3.12 venv (a copied site-packages, a wrong tag):
    # pip itself would refuse the cp311 file name, so it is renamed.
    src = wheel_for("3.11")
    fake = tmp_path / src.name.replace("cp311-cp311", "cp312-cp312")
    shutil.copy(src, fake)
    venv = make_venv(pyenv_python("3.12"), tmp_path / "venv312", fake)
    p = run([venv / "bin" / "rwsgi", "--version"], env=user_env(venv))
    assert_clean_failure(p, "built for CPython 3.11", "CPython 3.12",
                         f"{venv}/bin/python", "-m pip install --force-reinstall rwsgi",
                         "build-wheels.sh", "sys.path:")


def test_debian_python_without_libpython_names_the_package(tmp_path):
    """Debian's python3.11 is a static executable; its shared library is the separate
    libpython3.11 package. Here that package's files are hidden in a private mount
    namespace (the rest of /usr/lib/x86_64-linux-gnu stays, as symlinks), which is what
    a machine without it looks like to the launcher and to the loader."""
    venv = make_venv(DEBIAN_PYTHON, tmp_path / "debian-venv", wheel_for("3.11"))
    libdir = "/usr/lib/x86_64-linux-gnu"
    real, farm = tmp_path / "real-lib", tmp_path / "lib-without-libpython"
    real.mkdir()
    farm.mkdir()
    # The farm of symlinks is made before it replaces the directory: after that, only
    # programs that need nothing from it could run.
    script = f"""
set -e
mount --make-rprivate /
mount --bind {libdir} {real}
for f in {real}/* ; do
  case "${{f##*/}}" in libpython3.11*) ;; *) ln -s "$f" {farm}/ ;; esac
done
mount --bind {farm} {libdir}
exec {venv}/bin/rwsgi --version
"""
    p = run(["unshare", "--mount", "sh", "-c", script], env=user_env(venv))
    assert_clean_failure(p, "libpython3.11.so.1.0", "apt-get install libpython3.11",
                         f"{venv}/bin/python")


def test_python_without_shared_libpython_names_the_rebuild(tmp_path):
    """A pyenv build without --enable-shared: its sysconfig says Py_ENABLE_SHARED=0 and
    its LIBDIR holds only libpython3.11.a. The interpreter's own sysconfig is made to
    say so through _PYTHON_SYSCONFIGDATA_NAME (the hook CPython reads it from)."""
    venv = make_venv(pyenv_python("3.11"), tmp_path / "venv", wheel_for("3.11"))
    static_lib = tmp_path / "static-prefix" / "lib"
    static_lib.mkdir(parents=True)
    (static_lib / "libpython3.11.a").write_bytes(b"!<arch>\n")
    vars_ = json.loads(run([venv / "bin" / "python", "-c",
                            "import json, sysconfig; print(json.dumps(sysconfig.get_config_vars(),"
                            " default=str))"]).stdout)
    vars_.update(Py_ENABLE_SHARED=0, LDLIBRARY="libpython3.11.a", INSTSONAME="libpython3.11.a",
                 LIBDIR=str(static_lib), LIBPL=str(static_lib / "python3.11" / "config"))
    mod_dir = tmp_path / "sysconfigdata"
    mod_dir.mkdir()
    (mod_dir / "_sysconfigdata_rwsgi_static.py").write_text(
        "build_time_vars = " + pprint.pformat(vars_) + "\n")
    env = user_env(venv, PYTHONPATH=str(mod_dir),
                   _PYTHON_SYSCONFIGDATA_NAME="_sysconfigdata_rwsgi_static")
    probe = run([venv / "bin" / "python", "-c",
                 "import sysconfig; print(sysconfig.get_config_var('Py_ENABLE_SHARED'))"], env=env)
    assert probe.stdout.strip() == "0", probe  # the simulation is in effect
    p = run([venv / "bin" / "rwsgi", "--version"], env=env)
    assert_clean_failure(p, "without a shared libpython", "--enable-shared",
                         "PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install",
                         "libpython3.11.so.1.0")


def test_broken_install_names_the_interpreter_and_sys_path(tmp_path):
    venv = make_venv(pyenv_python("3.11"), tmp_path / "venv", wheel_for("3.11"))
    (venv / "bin" / "rwsgi-server").unlink()
    p = run([venv / "bin" / "rwsgi", "--version"], env=user_env(venv))
    assert_clean_failure(p, "no rwsgi-server binary", "--force-reinstall rwsgi",
                         f"Python: {venv}/bin/python", "sys.path:", str(venv))
    # The launcher package itself gone: the script still explains instead of a traceback.
    site = run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
               ).stdout.strip()
    shutil.rmtree(Path(site) / "rwsgi")
    p = run([venv / "bin" / "rwsgi", "--version"], env=user_env(venv))
    assert_clean_failure(p, "this install is broken", "--force-reinstall rwsgi",
                         f"Python: {venv}/bin/python", "sys.path:", site)


def test_venv_without_the_apps_packages_names_the_interpreter_and_sys_path(tmp_path):
    venv = make_venv(pyenv_python("3.11"), tmp_path / "venv", wheel_for("3.11"))  # no Flask
    p = run([venv / "bin" / "rwsgi", "--bind", f"127.0.0.1:{free_port()}", "--chdir", EXAMPLES / "flask_app",
             "app:app"], env=user_env(venv), timeout=120)
    text = p.stdout + p.stderr
    assert p.returncode != 0, text
    assert LOADER_ERROR not in text, text
    assert "No module named 'flask'" in text, text
    assert f"Python: {venv}/bin/python (3.11." in text, text
    assert "sys.path:" in text and f"{venv}/lib/python3.11/site-packages" in text, text
