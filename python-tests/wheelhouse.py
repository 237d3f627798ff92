"""The rwsgi wheels under test and fresh venvs to install them in (test_wheels.py,
test_docker_steps.py). scripts/test.sh builds the wheels into ``$RWSGI_WHEELHOUSE``
with ``scripts/build-wheels.sh --profile dev``; a missing wheel fails the test."""

from __future__ import annotations

import glob
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import REPO

PYENV_ROOT = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")


def wheelhouse() -> Path:
    return Path(os.environ.get("RWSGI_WHEELHOUSE") or REPO / "target" / "wheels-ci")


def wheel_for(minor: str) -> Path:
    tag = "cp" + minor.replace(".", "")
    found = sorted(glob.glob(str(wheelhouse() / f"rwsgi-*-{tag}-{tag}-*.whl")))
    if not found:
        pytest.fail(f"no rwsgi wheel for CPython {minor} in {wheelhouse()}: build them with "
                    f"`bash scripts/build-wheels.sh --profile dev --out {wheelhouse()}`",
                    pytrace=False)
    return Path(found[-1])


def pyenv_python(minor: str) -> str:
    dirs = sorted(glob.glob(str(PYENV_ROOT / "versions" / f"{minor}.*")),
                  key=lambda d: [int(x) for x in re.findall(r"\d+", os.path.basename(d))])
    dirs = [d for d in dirs if re.fullmatch(r"\d+\.\d+\.\d+", os.path.basename(d))]
    if not dirs:
        pytest.fail(f"no pyenv CPython {minor} under {PYENV_ROOT}/versions", pytrace=False)
    return os.path.join(dirs[-1], "bin", "python3")


def run(argv, timeout=180, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout, **kw)


def make_venv(python: str, dest: Path, *packages) -> Path:
    p = run([python, "-m", "venv", dest], timeout=120)
    assert p.returncode == 0, f"{python} -m venv failed:\n{p.stderr}"
    if packages:
        p = run([dest / "bin" / "python", "-m", "pip", "install", "-q",
                 "--disable-pip-version-check", *packages], timeout=300)
        assert p.returncode == 0, f"pip install {packages} failed:\n{p.stdout}\n{p.stderr}"
    return dest
