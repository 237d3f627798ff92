"""The Docker example (examples/docker/Dockerfile) without a Docker engine: the same
steps on this machine. The image's Python is the interpreter rwsgi was built against;
a fresh venv of it gets the Django example's requirements (pip, from the index, as
``pip install -r requirements.txt`` in the image); the rwsgi binary is copied to
another folder (the image's /usr/local/bin); its libpython must resolve to that
Python's LIBDIR (what building with PYO3_PYTHON=<the image's python> guarantees; a
full release build here would take far longer than this test may, so the binary
already built is checked instead); then the image's CMD runs from another working
directory with ``--chdir`` to the project, ``VIRTUAL_ENV`` and ``WEB_CONCURRENCY``
from the image, and serves the Django pages, including the admin login page, while
a background client keeps requesting them."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from conftest import EXAMPLES, exchange, launch
from loadclient import Load, wait_workers

DOCKER_DIR = EXAMPLES / "docker"
DJANGO_DIR = EXAMPLES / "django_project"
REQUIREMENTS = DJANGO_DIR / "requirements.txt"


def dockerfile_final_stage():
    """(CMD argv, ENV of the last stage) as the Dockerfile declares them."""
    text = (DOCKER_DIR / "Dockerfile").read_text()
    final = text[text.rindex("\nFROM "):]
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", final, re.M).group(1))
    env = {}
    for m in re.finditer(r"^ENV ((?:.*\\\n)*.*)$", final, re.M):
        for k, v in re.findall(r"(\w+)=(\S+)", m.group(1)):
            env[k] = v
    return cmd, env


@pytest.fixture(scope="session")
def image_python():
    """The interpreter rwsgi was built against (the image's /usr/local/bin/python3)."""
    return getattr(sys, "_base_executable", sys.executable)


@pytest.fixture(scope="session")
def image_venv(tmp_path_factory, image_python):
    """``python -m venv /opt/venv && pip install -r requirements.txt``, once per session."""
    venv = tmp_path_factory.mktemp("docker-image") / "opt-venv"
    subprocess.run([image_python, "-m", "venv", str(venv)], check=True, timeout=60)
    p = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"pip install -r {REQUIREMENTS} failed:\n{p.stdout}\n{p.stderr}"
    return venv


def test_dockerfile_builds_against_the_final_image_python():
    text = (DOCKER_DIR / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(froms) == 2, froms
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M).group(1)
    assert base.startswith("python:3.11-slim")
    assert froms[0].startswith("${PYTHON_IMAGE}") and froms[1] == "${PYTHON_IMAGE}"
    assert "ENV PYO3_PYTHON=/usr/local/bin/python3" in text
    assert "pip install --no-cache-dir -r /tmp/requirements.txt" in text
    cmd, env = dockerfile_final_stage()
    assert cmd == ["rwsgi", "mysite.wsgi:application", "--bind", "0.0.0.0:8000",
                   "--queue-header", "X-RequestTime"]
    assert env["WEB_CONCURRENCY"].isdigit()
    assert env["VIRTUAL_ENV"] == "/opt/venv"


def test_docker_steps_serve_the_django_example(rwsgi_bin, image_venv, tmp_path):
    # COPY --from=build /usr/local/bin/rwsgi /usr/local/bin/rwsgi
    bindir = tmp_path / "usr-local-bin"
    bindir.mkdir()
    exe = bindir / "rwsgi"
    shutil.copy2(rwsgi_bin, exe)

    # The copied binary loads libpython from the image Python's LIBDIR, with no help
    # from LD_LIBRARY_PATH.
    venv_python = str(image_venv / "bin" / "python")
    libdir = subprocess.run([venv_python, "-c",
                             "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                            capture_output=True, text=True, check=True, timeout=30).stdout.strip()
    ldd_env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    ldd = subprocess.run(["ldd", str(exe)], capture_output=True, text=True, check=True,
                         timeout=30, env=ldd_env).stdout
    m = re.search(r"(libpython3\.\d+\S*\.so\S*) => (\S+)", ldd)
    assert m, f"no libpython in ldd output:\n{ldd}"
    assert os.path.dirname(m.group(2)) == libdir, f"libpython from {m.group(2)}, LIBDIR {libdir}"

    # Django comes from the image's venv only: the bare interpreter has none.
    bare = subprocess.run([os.path.realpath(venv_python), "-I", "-c", "import django"],
                          capture_output=True, timeout=30)
    assert bare.returncode != 0, "django importable without the venv; the test proves nothing"

    db_dir = tmp_path / "data"
    db_dir.mkdir()
    mig = subprocess.run([venv_python, "manage.py", "migrate", "--noinput"], cwd=DJANGO_DIR,
                         env=dict(os.environ, DJANGO_DB_DIR=str(db_dir)), capture_output=True,
                         text=True, timeout=60)
    assert mig.returncode == 0, mig.stdout + mig.stderr

    # CMD [...] from another working directory, with the image's environment.
    cmd, env = dockerfile_final_stage()
    args = list(cmd[1:])
    i = args.index("--bind")
    del args[i:i + 2]  # the test binds a free local port instead of 0.0.0.0:8000
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_env = {
        "VIRTUAL_ENV": str(image_venv),
        "WEB_CONCURRENCY": env["WEB_CONCURRENCY"],
        "DJANGO_DB_DIR": str(db_dir),
        "PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin",
        "PYTHONPATH": None,
        "PYTHONHOME": None,
    }
    srv = launch(str(exe), None, args, tmp_path / "rwsgi", env=run_env, cwd=elsewhere,
                 chdir=DJANGO_DIR)
    try:
        wait_workers(srv, int(env["WEB_CONCURRENCY"]), timeout=10)
        stamp = {"X-RequestTime": f"{time.time():.3f}"}
        page = exchange(srv, "GET", "/", headers=stamp)
        assert page.status == 200, page.text[:500]
        assert "csrfmiddlewaretoken" in page.text
        admin = exchange(srv, "GET", "/admin/login/?next=/admin/", headers=stamp)
        assert admin.status == 200, admin.text[:500]
        assert "Django administration" in admin.text
        paths = ["/", "/admin/login/?next=/admin/", "/entries/"]
        with Load(srv.raw, conns=2, path=lambda c, s: paths[s % 3]) as load:
            load.wait_requests(30)
        assert not load.failures(), load.summary()
        assert srv.stop() == 0
    finally:
        srv.stop()
    logs = srv.logs()
    assert "Traceback" not in logs, logs[-3000:]
