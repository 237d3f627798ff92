"""Start the wheel's ``rwsgi-server`` on the interpreter running this code.

The binary is linked to ``libpython3.X.so`` but carries no rpath: which libpython it
loads, and which prefix and site-packages it embeds, are decided here at run time
from this interpreter (``sys.executable`` and its sysconfig), never from the machine
the wheel was built on. So one wheel serves every install of its minor version: a
pyenv build, Debian's /usr/bin/python3.X with libpython3.X, python.org's, a Docker
``python:3.X`` image, and any venv made from them.

Before starting the binary it checks what would otherwise end in a loader error:
the minor version the binary was linked for, and a shared libpython for this
interpreter. Each failure names what to install or rebuild.
"""

from __future__ import annotations

import os
import struct
import sys
import sysconfig

SERVER = "rwsgi-server"
# The binary reads the interpreter to embed from here (src/wsgi/interpreter.rs).
PYTHON_ENV = "_RWSGI_PYTHON"


class LaunchError(Exception):
    """A reason rwsgi cannot start with this interpreter; the text is for the user."""


def where() -> str:
    """The interpreter and sys.path, for messages about a broken or mismatched install."""
    paths = "".join(f"  {p}\n" for p in sys.path)
    return f"Python: {sys.executable} ({sys.version.split()[0]})\nsys.path:\n{paths}"


def find_server() -> str:
    """The wheel's ``rwsgi-server``: in this scheme's scripts dir, else where RECORD says."""
    path = os.path.join(sysconfig.get_path("scripts"), SERVER)
    if os.access(path, os.X_OK):
        return path
    try:  # --user, --prefix or --target installs put it elsewhere
        from importlib.metadata import distribution

        for f in distribution("rwsgi").files or []:
            if f.name == SERVER:
                located = str(f.locate())
                if os.access(located, os.X_OK):
                    return located
    except Exception:  # noqa: BLE001 - any failure here means "not found"
        pass
    raise LaunchError(
        f"this rwsgi install has no {SERVER} binary (looked in {os.path.dirname(path)} and "
        f"in the package's RECORD). Reinstall it with:\n"
        f"  {sys.executable} -m pip install --force-reinstall rwsgi\n" + where()
    )


def needed_libraries(path: str) -> list[str]:
    """DT_NEEDED entries of a 64-bit little-endian ELF file (what the loader will look for)."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
            raise LaunchError(f"{path} is not a 64-bit Linux binary; reinstall rwsgi")
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
        loads, dynamic = [], None
        for i in range(phnum):
            p_type, _flags, offset, vaddr, _paddr, filesz = struct.unpack_from(
                "<IIQQQQ", table, i * phentsize)
            if p_type == 1:  # PT_LOAD
                loads.append((vaddr, offset, filesz))
            elif p_type == 2:  # PT_DYNAMIC
                dynamic = (offset, filesz)
        if dynamic is None:
            return []
        f.seek(dynamic[0])
        raw = f.read(dynamic[1])
        entries = [struct.unpack_from("<qQ", raw, i) for i in range(0, len(raw) - 15, 16)]
        strtab = next((v for tag, v in entries if tag == 5), None)  # DT_STRTAB
        if strtab is None:
            return []
        base = next((off + strtab - va for va, off, size in loads if va <= strtab < va + size),
                    None)
        if base is None:
            return []
        out = []
        for tag, value in entries:
            if tag == 1:  # DT_NEEDED
                f.seek(base + value)
                out.append(f.read(256).split(b"\0", 1)[0].decode())
        return out


def linked_libpython(server: str) -> str:
    """The libpython soname the binary needs, e.g. ``libpython3.11.so.1.0``."""
    for name in needed_libraries(server):
        if name.startswith("libpython3"):
            return name
    raise LaunchError(f"{server} is not linked to a libpython; reinstall rwsgi\n" + where())


def version_of(soname: str) -> str:
    """``libpython3.11.so.1.0`` -> ``3.11``."""
    return soname[len("libpython"):].split(".so", 1)[0]


def check_version(soname: str) -> None:
    built = version_of(soname)
    running = f"{sys.version_info[0]}.{sys.version_info[1]}"
    if built != running:
        raise LaunchError(
            f"this rwsgi was built for CPython {built}, but it was started by "
            f"{sys.executable}, which is CPython {sys.version.split()[0]}.\n"
            f"Install the wheel made for {running}: {sys.executable} -m pip install "
            f"--force-reinstall rwsgi (pip picks the cp{running.replace('.', '')} wheel), "
            f"or rebuild it for this Python with `bash scripts/build-wheels.sh` "
            f"in the rwsgi sources.\n" + where()
        )


def find_libpython(soname: str) -> str:
    """This interpreter's shared libpython, as its sysconfig describes it."""
    var = sysconfig.get_config_var
    libdir = var("LIBDIR") or ""
    multiarch = var("MULTIARCH") or ""
    dirs = [libdir, var("LIBPL") or ""]
    if multiarch and not libdir.endswith(multiarch):
        dirs.insert(1, os.path.join(libdir, multiarch))
    for d in dirs:
        path = os.path.join(d, soname)
        if d and os.path.isfile(path):
            return path
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    exe = sys.executable
    base = os.path.realpath(getattr(sys, "_base_executable", exe) or exe)
    if not var("Py_ENABLE_SHARED"):
        fix = (
            f"{base} was built without a shared libpython (./configure without "
            f"--enable-shared). rwsgi embeds CPython and needs {soname}: rebuild this "
            f"Python with it, e.g. with pyenv:\n"
            f"  env PYTHON_CONFIGURE_OPTS=--enable-shared pyenv install --force "
            f"{sys.version.split()[0]}\n"
            f"or use a Python that has one (Debian's python{version} with the "
            f"libpython{version} package, python.org builds, the python:{version} "
            f"Docker images)."
        )
    elif base.startswith("/usr/bin/") and os.path.exists("/etc/debian_version"):
        fix = (
            f"{base} is Debian's Python, whose shared library is a separate package: "
            f"install it with\n  apt-get install libpython{version}"
        )
    else:
        fix = (f"reinstall this Python with its shared library {soname}, or use one that "
               f"has it.")
    looked = ", ".join(d for d in dict.fromkeys(dirs) if d)
    raise LaunchError(
        f"rwsgi needs the shared library {soname} of {exe} (CPython {version}), and "
        f"it is not there (looked in {looked}).\n{fix}"
    )


def prepare() -> tuple[str, dict]:
    """(binary, environment) to start rwsgi with this interpreter; LaunchError if it cannot."""
    server = find_server()
    soname = linked_libpython(server)
    check_version(soname)
    libpython = find_libpython(soname)
    env = dict(os.environ)
    libdir = os.path.dirname(libpython)
    old = env.get("LD_LIBRARY_PATH")
    env["LD_LIBRARY_PATH"] = f"{libdir}:{old}" if old else libdir
    env[PYTHON_ENV] = sys.executable
    return server, env


def main() -> None:
    try:
        server, env = prepare()
    except LaunchError as e:
        sys.stderr.write(f"rwsgi: {e}\n")
        sys.exit(1)
    # exec, not a child: signals, the pid and the exit status are the server's own.
    os.execve(server, ["rwsgi", *sys.argv[1:]], env)
