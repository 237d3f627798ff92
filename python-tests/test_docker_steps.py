"""The Docker example (examples/docker/Dockerfile) without a Docker engine: the same
steps on this machine. Stage 1 builds the rwsgi wheel for the image's Python with
maturin; here that is the wheel scripts/test.sh built with scripts/build-wheels.sh for
the interpreter of this test venv (the image's /usr/local/bin/python3). The final stage
is replayed line by line: a fresh venv of that Python (``/opt/venv``) gets the Django
example's requirements, then the Dockerfile's own ``pip install /wheels/rwsgi-*.whl``
line (with /wheels pointing at the wheelhouse), then the image's CMD runs as
``rwsgi`` found on the image's PATH, from another working directory with
``VIRTUAL_ENV`` and ``WEB_CONCURRENCY`` from the image, and serves the Django pages,
including the admin login page, while a background client keeps requesting them.
The final stage itself is checked to hold no Rust toolchain and no build tools."""

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from conftest import EXAMPLES, REPO, exchange, launch, process_tree
from loadclient import Load, wait_workers
from wheelhouse import wheel_for

DOCKER_DIR = EXAMPLES / "docker"
DJANGO_DIR = EXAMPLES / "django_project"
REQUIREMENTS = DJANGO_DIR / "requirements.txt"


def stages():
    """The Dockerfile's stages, each from its FROM line on."""
    text = (DOCKER_DIR / "Dockerfile").read_text()
    parts = re.split(r"^(?=FROM )", text, flags=re.M)
    return [p for p in parts if p.startswith("FROM ")]


def run_lines(stage: str) -> list[str]:
    """RUN instructions of a stage, continuation lines joined."""
    joined = stage.replace("\\\n", " ")
    return [m.group(1).strip() for m in re.finditer(r"^RUN (.*)$", joined, re.M)]


def dockerfile_final_stage():
    """(CMD argv, ENV of the last stage) as the Dockerfile declares them."""
    final = stages()[-1]
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", final, re.M).group(1))
    env = {}
    for m in re.finditer(r"^ENV ((?:.*\\\n)*.*)$", final, re.M):
        for k, v in re.findall(r"(\w+)=(\S+)", m.group(1)):
            env[k] = v
    return cmd, env


def swap_line() -> str:
    """The final stage's one line that installs rwsgi, without its BuildKit mount."""
    lines = [r for r in run_lines(stages()[-1]) if "rwsgi" in r]
    assert len(lines) == 1, lines
    return re.sub(r"^--mount=\S+\s+", "", lines[0])


@pytest.fixture(scope="session")
def image_python():
    """The interpreter the wheel is built for (the image's /usr/local/bin/python3)."""
    return getattr(sys, "_base_executable", sys.executable)


@pytest.fixture(scope="session")
def image_venv(tmp_path_factory, image_python):
    """``python -m venv /opt/venv && pip install -r requirements.txt``, once per session."""
    venv = tmp_path_factory.mktemp("docker-image") / "opt-venv"
    subprocess.run([image_python, "-m", "venv", str(venv)], check=True, timeout=60)
    p = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                        "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, f"pip install -r {REQUIREMENTS} failed:\n{p.stdout}\n{p.stderr}"
    return venv


def test_dockerfile_builds_a_wheel_and_the_final_image_has_no_toolchain():
    text = (DOCKER_DIR / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(froms) == 2, froms
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M).group(1)
    assert base.startswith("python:3.11-slim")
    assert froms[0].startswith("${PYTHON_IMAGE}") and froms[1] == "${PYTHON_IMAGE}"
    build, final = stages()
    # Stage 1: maturin builds the wheel for the image's interpreter into /wheels.
    maturin = [r for r in run_lines(build) if "maturin build" in r]
    assert len(maturin) == 1 and "--interpreter /usr/local/bin/python3" in maturin[0], maturin
    assert "--out /wheels" in maturin[0] and "--release" in maturin[0], maturin
    # Everything stage 1 copies is in the build context (Dockerfile.dockerignore).
    ignore = (DOCKER_DIR / "Dockerfile.dockerignore").read_text().split()
    for m in re.finditer(r"^COPY (?!--from)(.*) \S+$", build, re.M):
        for src in m.group(1).split():
            assert f"!{src.rstrip('/')}" in [i.rstrip("/") for i in ignore], src
            assert (REPO / src).exists(), src
    # The final stage: no Rust, no compiler, no apt-get; rwsgi arrives by one pip line.
    for word in ("cargo", "rustup", "rustc", "build-essential", "apt-get", "gcc", "maturin"):
        assert word not in final, f"{word!r} in the final stage"
    assert "COPY --from" not in final
    assert swap_line() == "pip install --no-cache-dir /wheels/rwsgi-*.whl"
    assert "pip install --no-cache-dir -r /tmp/requirements.txt" in run_lines(final)
    cmd, env = dockerfile_final_stage()
    assert cmd == ["rwsgi", "mysite.wsgi:application", "--bind", "0.0.0.0:8000",
                   "--queue-header", "X-RequestTime"]
    assert env["WEB_CONCURRENCY"].isdigit()
    assert env["VIRTUAL_ENV"] == "/opt/venv"
    assert env["PATH"].startswith("/opt/venv/bin:")


def test_docker_steps_serve_the_django_example(image_python, image_venv, tmp_path):
    # Stage 1's output: the wheel for the image's Python, in /wheels.
    minor = "%d.%d" % sys.version_info[:2]
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    shutil.copy(wheel_for(minor), wheels)

    # RUN pip install --no-cache-dir /wheels/rwsgi-*.whl, with the image's PATH
    # (/opt/venv/bin first) and /wheels mapped here.
    argv = swap_line().replace("/wheels/", f"{wheels}/").split()
    argv = [str(image_venv / "bin" / "pip")] + [
        a for arg in argv[1:] for a in (sorted(glob.glob(arg)) if "*" in arg else [arg])]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr

    venv_python = str(image_venv / "bin" / "python")
    image_path = f"{image_venv / 'bin'}:/usr/local/bin:/usr/bin:/bin"
    exe = shutil.which("rwsgi", path=image_path)
    assert exe == str(image_venv / "bin" / "rwsgi"), exe

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
        "PATH": image_path,
        "LD_LIBRARY_PATH": None,
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
        # libpython is the image Python's, found at run time (the wheel has no rpath).
        libdir = subprocess.run([venv_python, "-c", "import sysconfig; "
                                 "print(sysconfig.get_config_var('LIBDIR'))"],
                                capture_output=True, text=True, timeout=30).stdout.strip()
        libs = {line.split()[-1] for pid in process_tree(srv.proc.pid)
                for line in open(f"/proc/{pid}/maps") if "/libpython3" in line}
        assert libs and {os.path.dirname(lib) for lib in libs} == {libdir}, libs
        assert srv.stop() == 0
    finally:
        srv.stop()
    logs = srv.logs()
    assert "Traceback" not in logs, logs[-3000:]
