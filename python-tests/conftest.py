"""Shared fixtures: start the real rwsgi binary, talk raw HTTP to it, read its logs.

* ``rwsgi_bin``      – path of the binary under test (``$RWSGI_BIN``, default
                       ``<repo>/target/debug/rwsgi``); a missing binary fails loudly.
* ``start_server``   – factory: ``start_server(app, *args, env=..., threads=...)`` starts
                       rwsgi on a free port (retrying on a port clash), waits until the
                       port accepts, and stops it (TERM, then KILL) at teardown.
* ``Server``         – the handle: ``.port``, ``.url``, ``.stderr_text()``, ``.raw()``...
* ``RawConn``        – raw-socket HTTP/1.x client that frames responses itself
                       (Content-Length, chunked, close-delimited) and can tell a closed
                       connection from an idle one.
* ``moto``, ``cw_adapter``, ``azure_fake``, ``redis_server`` – real sink backends on free
                       ports, from sink_services.py.

The logs of every server a failing test used are attached to the failure report.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO = TESTS_DIR.parent
APPS_DIR = TESTS_DIR / "apps"
EXAMPLES = REPO / "examples"

READY_TIMEOUT = 20.0
SOCK_TIMEOUT = 10.0

# Servers started during the current test (including module-scoped ones it used);
# their logs are dumped when the test fails.
_ACTIVE_SERVERS: list["Server"] = []


# ---------------------------------------------------------------------------
# the binary
# ---------------------------------------------------------------------------


def find_bin() -> str:
    path = os.environ.get("RWSGI_BIN") or str(REPO / "target" / "debug" / "rwsgi")
    return path


@pytest.fixture(scope="session")
def rwsgi_bin() -> str:
    path = find_bin()
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail(
            f"rwsgi binary not found or not executable at {path!r}: build it "
            "(cargo build) or set RWSGI_BIN",
            pytrace=False,
        )
    return path


def free_port(host: str = "127.0.0.1") -> int:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def base_env(extra: dict | None = None) -> dict:
    """Environment for a server: ours, plus VIRTUAL_ENV of the venv running pytest."""
    env = dict(os.environ)
    env.pop("PORT", None)
    env.pop("WEB_CONCURRENCY", None)
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    # A panic's message and location are enough; full backtraces bury the log tail.
    env["RUST_BACKTRACE"] = os.environ.get("RWSGI_TEST_BACKTRACE", "0")
    if extra:
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
    return env


# ---------------------------------------------------------------------------
# process tree helpers (workers run in child processes)
# ---------------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out.extend(int(x) for x in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    seen, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.append(p)
        todo.extend(children_of(p))
    return seen


def proc_status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_io(pid: int) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                k, v = line.split(":")
                out[k.strip()] = int(v)
    except OSError:
        pass
    return out


# ---------------------------------------------------------------------------
# the server handle
# ---------------------------------------------------------------------------


@dataclass
class Server:
    proc: subprocess.Popen
    host: str
    port: int
    args: list
    logdir: Path
    state_dir: Path
    stopped: bool = False
    returncode: int | None = None
    _stdout_path: Path = field(default=None)
    _stderr_path: Path = field(default=None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{h}:{self.port}"

    def stdout_text(self) -> str:
        return self._stdout_path.read_bytes().decode("utf-8", "replace")

    def stderr_text(self) -> str:
        return self._stderr_path.read_bytes().decode("utf-8", "replace")

    def logs(self) -> str:
        """stdout + stderr: wherever the server chooses to log, the tests find it."""
        return self.stderr_text() + "\n" + self.stdout_text()

    def wait_for_log(self, needle: str, timeout: float = 5.0, stream: str = "both") -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = {"both": self.logs, "stderr": self.stderr_text, "stdout": self.stdout_text}[stream]()
            if needle in text:
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in server {stream} after {timeout}s:\n{text[-3000:]}")
            time.sleep(0.05)

    def raw(self, timeout: float = SOCK_TIMEOUT, rcvbuf: int | None = None) -> "RawConn":
        return RawConn(self.host, self.port, timeout=timeout, rcvbuf=rcvbuf)

    def tree(self) -> list[int]:
        return process_tree(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        self.returncode = self.proc.wait(timeout=timeout)
        return self.returncode

    def state_file(self, name: str) -> Path:
        return self.state_dir / name

    def read_state_lines(self, name: str) -> list[str]:
        p = self.state_dir / name
        if not p.exists():
            return []
        return [l for l in p.read_text().splitlines() if l]

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.stopped:
            return self.returncode
        self.stopped = True
        tree = self.tree()
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.returncode = self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                for p in tree:
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass
                self.returncode = self.proc.wait(timeout=10)
        else:
            self.returncode = self.proc.returncode
        # Leftover workers must not outlive the test.
        for p in tree[1:]:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        return self.returncode


class ServerStartError(AssertionError):
    pass


def launch(
    bin_path: str,
    app: str | None,
    args: list,
    logdir: Path,
    *,
    env: dict | None = None,
    cwd: str | Path | None = None,
    bind: str | None = "auto",
    host: str = "127.0.0.1",
    chdir: str | Path | None = TESTS_DIR,
    wait: bool = True,
    ready_timeout: float = READY_TIMEOUT,
    pass_fds: tuple = (),
) -> Server:
    """Start rwsgi; retry on a port clash. bind="auto" picks a free port on host.
    pass_fds: file descriptors the server inherits (socket activation, fd://N)."""
    last_err = None
    for attempt in range(4):
        port = free_port(host) if bind == "auto" else None
        argv = [bin_path]
        if bind == "auto":
            h = f"[{host}]" if ":" in host else host
            argv += ["--bind", f"{h}:{port}"]
        if chdir is not None:
            argv += ["--chdir", str(chdir)]
        argv += [str(a) for a in args]
        if app is not None:
            argv.append(app)
        logdir.mkdir(parents=True, exist_ok=True)
        n = len(list(logdir.glob("stderr-*.log")))
        out_p = logdir / f"stdout-{n}.log"
        err_p = logdir / f"stderr-{n}.log"
        state = logdir / f"state-{n}"
        state.mkdir(exist_ok=True)
        e = base_env(env)
        e["RWSGI_TEST_STATE"] = str(state)
        with open(out_p, "wb") as out, open(err_p, "wb") as err:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=e,
                cwd=str(cwd) if cwd else None, start_new_session=True,
                pass_fds=tuple(pass_fds),
            )
        srv = Server(proc, host, port or 0, argv, logdir, state, _stdout_path=out_p, _stderr_path=err_p)
        _ACTIVE_SERVERS.append(srv)
        if not wait:
            return srv
        try:
            wait_ready(srv, ready_timeout)
            return srv
        except ServerStartError as exc:
            srv.stop(timeout=3)
            last_err = exc
            text = srv.stderr_text().lower()
            if bind == "auto" and ("in use" in text or "addrinuse" in text):
                continue
            raise
    raise last_err


def wait_ready(srv: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    fam = socket.AF_INET6 if ":" in srv.host else socket.AF_INET
    while True:
        if srv.proc.poll() is not None:
            raise ServerStartError(
                f"rwsgi exited with {srv.proc.returncode} before listening; argv={srv.args}\n"
                f"--- stderr ---\n{srv.stderr_text()[-4000:]}\n--- stdout ---\n{srv.stdout_text()[-2000:]}"
            )
        try:
            with socket.socket(fam, socket.SOCK_STREAM) as s:
                s.settimeout(1)
                s.connect((srv.host, srv.port))
            return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise ServerStartError(
                f"rwsgi not listening on {srv.host}:{srv.port} after {timeout}s; argv={srv.args}\n"
                f"--- stderr ---\n{srv.stderr_text()[-4000:]}"
            )
        time.sleep(0.05)


@pytest.fixture
def start_server(rwsgi_bin, tmp_path):
    """Factory fixture: start_server(app, *args, env=None, ...) -> Server."""
    started = []

    def _start(app, *args, **kw):
        srv = launch(rwsgi_bin, app, list(args), tmp_path / "rwsgi", **kw)
        started.append(srv)
        return srv

    yield _start
    for s in started:
        s.stop()


def _module_server(request, rwsgi_bin, tmp_path_factory, app, *args, **kw):
    logdir = tmp_path_factory.mktemp("rwsgi-" + request.module.__name__.rsplit(".", 1)[-1])
    srv = launch(rwsgi_bin, app, list(args), logdir, **kw)
    request.addfinalizer(srv.stop)
    return srv


@pytest.fixture(scope="module")
def module_server_factory(request, rwsgi_bin, tmp_path_factory):
    """Module-scoped factory, for servers shared by many tests of one file."""

    def _start(app, *args, **kw):
        return _module_server(request, rwsgi_bin, tmp_path_factory, app, *args, **kw)

    return _start


# Query strings for warming routes that would otherwise sleep, spin or stream long.
_WARM_QUERY = {"/sleep": "?s=0", "/spin": "?s=0", "/swallow": "?s=0", "/slowgen": "?chunks=1&size=1"}


def warm_routes(srv) -> None:
    """Requests every GET route of apps/wsgi_rules.py once (GET and HEAD), so that with
    --threads 1 the quick ones are known and later requests run inline on the IO
    thread (a route never seen goes to the Python thread)."""
    src = (TESTS_DIR / "apps" / "wsgi_rules.py").read_text()
    for path in sorted(set(re.findall(r'path == "(/[^"]*)"', src))):
        for method in ("GET", "HEAD"):
            try:
                with socket.create_connection((srv.host, srv.port), timeout=10) as c:
                    c.sendall(f"{method} {path}{_WARM_QUERY.get(path, '')} HTTP/1.1\r\n"
                              f"Host: x\r\nConnection: close\r\n\r\n".encode())
                    while c.recv(65536):
                        pass
            except OSError:
                pass
    # What the warm-up requests recorded is not what the tests look for.
    for f in srv.state_dir.iterdir():
        if f.is_file():
            f.unlink()


@pytest.fixture(scope="module", params=["threads4", "inline"])
def rules_server(request, module_server_factory):
    """The PEP 3333 test app (apps/wsgi_rules.py), twice: with 4 Python threads, and
    with --threads 1 after every route was warmed, so that the same rules are checked
    on requests run inline on the IO thread."""
    if request.param == "threads4":
        return module_server_factory("apps.wsgi_rules:application", "--threads", "4")
    srv = module_server_factory("apps.wsgi_rules:application", "--threads", "1")
    warm_routes(srv)
    return srv


@pytest.fixture(autouse=True)
def _track_servers(request):
    """Remember which servers this test started, for the failure report."""
    request.node._rwsgi_first = len(_ACTIVE_SERVERS)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if not rep.failed or getattr(item, "_rwsgi_dumped", False):
        return
    item._rwsgi_dumped = True
    servers = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, Server)]
    servers += [s for s in _ACTIVE_SERVERS[getattr(item, "_rwsgi_first", len(_ACTIVE_SERVERS)):]
                if s not in servers]
    for i, s in enumerate(servers[-4:]):
        try:
            rep.sections.append((f"rwsgi #{i} argv", " ".join(map(str, s.args))))
            rep.sections.append((f"rwsgi #{i} stderr (tail)", s.stderr_text()[-5000:]))
            rep.sections.append((f"rwsgi #{i} stdout (tail)", s.stdout_text()[-2000:]))
        except OSError:
            pass


# ---------------------------------------------------------------------------
# raw HTTP
# ---------------------------------------------------------------------------


class ConnectionClosed(AssertionError):
    """The peer closed before a complete response; .partial holds what came."""

    def __init__(self, msg, partial=b""):
        super().__init__(msg)
        self.partial = partial


@dataclass
class Response:
    version: str
    status: int
    reason: str
    headers: list  # [(name, value)] as sent, latin-1 decoded
    body: bytes
    raw_head: bytes
    close_delimited: bool = False

    def header(self, name: str, default=None):
        vals = self.header_all(name)
        return vals[0] if vals else default

    def header_all(self, name: str) -> list:
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


class RawConn:
    """One TCP connection; send bytes, read responses framed by hand."""

    def __init__(self, host: str, port: int, timeout: float = SOCK_TIMEOUT, rcvbuf: int | None = None):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, port))
        self.buf = b""
        self.eof = False

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._fill():
                part, self.buf = self.buf, b""
                raise ConnectionClosed(f"connection closed before {marker!r}", part)
        i = self.buf.index(marker) + len(marker)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def _read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                part, self.buf = self.buf, b""
                raise ConnectionClosed(f"connection closed after {len(part)} of {n} bytes", part)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_some(self, max_bytes: int = 65536) -> bytes:
        if self.buf:
            out, self.buf = self.buf[:max_bytes], self.buf[max_bytes:]
            return out
        self._fill()
        out, self.buf = self.buf[:max_bytes], self.buf[max_bytes:]
        return out

    def read_head(self) -> tuple:
        head = self._read_until(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        first = lines[0].decode("latin-1")
        parts = first.split(" ", 2)
        version, status = parts[0], int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        for l in lines[1:]:
            k, _, v = l.decode("latin-1").partition(":")
            headers.append((k.strip(), v.strip()))
        return version, status, reason, headers, head

    def read_response(self, method: str = "GET", skip_interim: bool = True) -> Response:
        """Read one response. 1xx interim responses are skipped unless skip_interim=False."""
        while True:
            version, status, reason, headers, head = self.read_head()
            resp = Response(version, status, reason, headers, b"", head)
            if 100 <= status < 200:
                if skip_interim and status != 101:
                    continue
                return resp
            break
        if method.upper() == "HEAD" or status in (204, 304):
            return resp
        te = ",".join(resp.header_all("Transfer-Encoding")).lower()
        if "chunked" in te:
            resp.body = self._read_chunked()
        elif resp.header("Content-Length") is not None:
            resp.body = self._read_exact(int(resp.header("Content-Length")))
        else:
            resp.close_delimited = True
            while self._fill():
                pass
            resp.body, self.buf = self.buf, b""
        return resp

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            try:
                line = self._read_until(b"\r\n")
            except ConnectionClosed as e:
                raise ConnectionClosed("connection closed inside chunked body", body + e.partial)
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                # trailers until empty line
                while True:
                    l = self._read_until(b"\r\n")
                    if l == b"\r\n":
                        return body
            try:
                body += self._read_exact(size)
            except ConnectionClosed as e:
                raise ConnectionClosed("connection closed inside a chunk", body + e.partial)
            self._read_exact(2)

    def is_closed(self, timeout: float = 3.0) -> bool:
        """True if the peer closes (EOF/reset) within timeout with no further data."""
        if self.buf:
            return False
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return True
        except socket.timeout:
            return False
        finally:
            self.sock.settimeout(old)
        if data:
            self.buf += data
            return False
        self.eof = True
        return True

    def wait_closed(self, timeout: float) -> float:
        """Seconds until the peer closed; fails if it sends data or stays open past timeout."""
        t0 = time.monotonic()
        old = self.sock.gettimeout()
        self.sock.settimeout(timeout)
        got = b""
        try:
            while True:
                try:
                    data = self.sock.recv(65536)
                except (ConnectionResetError, BrokenPipeError):
                    break
                if not data:
                    break
                got += data
        except socket.timeout:
            raise AssertionError(f"connection still open after {timeout}s (got {got[:200]!r})")
        finally:
            self.sock.settimeout(old)
        self.extra_before_close = got
        return time.monotonic() - t0


def request_bytes(method: str, path: str, headers: dict | list | None = None, body: bytes = b"",
                  version: str = "HTTP/1.1", host: str = "localhost") -> bytes:
    hs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {k.lower() for k, _ in hs}
    if "host" not in names and version == "HTTP/1.1":
        hs.insert(0, ("Host", host))
    if body and "content-length" not in names and "transfer-encoding" not in names:
        hs.append(("Content-Length", str(len(body))))
    out = f"{method} {path} {version}\r\n".encode("latin-1")
    for k, v in hs:
        kb = k if isinstance(k, bytes) else k.encode("latin-1")
        vb = v if isinstance(v, bytes) else str(v).encode("latin-1")
        out += kb + b": " + vb + b"\r\n"
    return out + b"\r\n" + body


def exchange(server: Server, method: str = "GET", path: str = "/", headers=None, body: bytes = b"",
             version: str = "HTTP/1.1", timeout: float = SOCK_TIMEOUT) -> Response:
    """One request on a fresh connection; returns the response."""
    with server.raw(timeout) as c:
        c.send(request_bytes(method, path, headers, body, version))
        return c.read_response(method)


def chunked(body_parts: list) -> bytes:
    out = b""
    for p in body_parts:
        out += f"{len(p):x}\r\n".encode() + p + b"\r\n"
    return out + b"0\r\n\r\n"


def python_libdir() -> str:
    import sysconfig
    return sysconfig.get_config_var("LIBDIR")


def wait_close_record(server, ident, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in server.read_state_lines("closes"):
            if line.split()[:2] == ["close", ident]:
                return line
        time.sleep(0.05)
    raise AssertionError(f"close() of iterable {ident!r} was not called within {timeout}s")




# ---------------------------------------------------------------------------
# sink backends (moto + CBOR adapter, Azure fakes, redis-server): their fixtures are
# in sink_services.py, loaded as a plugin (it imports this file, never the reverse)
# ---------------------------------------------------------------------------

pytest_plugins = ["sink_services"]


# ---------------------------------------------------------------------------
# queue time: report lines, /metrics, nginx in front
# ---------------------------------------------------------------------------

REPORT_MESSAGE = "queue time report"
QUEUE_APP = "apps.queue_app:application"
QUEUE_HEADER = "X-RequestTime"


def start_tracked(start_server, *args, interval=1, app=QUEUE_APP, header=QUEUE_HEADER):
    """rwsgi with the log (JSON) and prometheus sinks; returns (server, metrics URL)."""
    mport = free_port()
    srv = start_server(
        app, "--queue-header", header, "--log-format", "json",
        "--notify", "log", "--notify", "prometheus", "--metrics-bind", f"127.0.0.1:{mport}",
        "--notify-interval", str(interval), *args)
    return srv, f"http://127.0.0.1:{mport}/metrics"


def report_lines(server: Server) -> list:
    """The log sink's JSON report lines (``--log-format json``), oldest first."""
    out = []
    for line in server.logs().splitlines():
        if REPORT_MESSAGE not in line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        fields = rec.get("fields", rec)
        if fields.get("message") == REPORT_MESSAGE:
            out.append({**fields, "timestamp": rec.get("timestamp")})
    return out


def wait_reports(server: Server, count: int, timeout: float = 15.0) -> list:
    """Polls until at least ``count`` report lines were logged; returns them all."""
    deadline = time.monotonic() + timeout
    while True:
        lines = report_lines(server)
        if len(lines) >= count:
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(lines)} of {count} report lines after {timeout}s:\n{server.logs()[-3000:]}")
        time.sleep(0.05)


def wait_next_report(server: Server, timeout: float = 15.0) -> dict:
    """Waits for the next report line logged from now on and returns it."""
    n = len(report_lines(server))
    return wait_reports(server, n + 1, timeout)[n]


class Metrics:
    """One parsed scrape of ``/metrics`` (prometheus_client's own text parser)."""

    def __init__(self, text: str):
        from prometheus_client.parser import text_string_to_metric_families

        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = {}
        for fam in self.families.values():
            for s in fam.samples:
                self.samples[(s.name, self._key(s.labels))] = s.value

    @staticmethod
    def _key(labels: dict) -> tuple:
        # Bucket bounds are numbers: le="1" and le="1.0" are the same bucket.
        return tuple(sorted((k, float(v) if k == "le" else v) for k, v in labels.items()))

    def get(self, name: str, **labels) -> float:
        key = (name, self._key(labels))
        assert key in self.samples, f"no sample {name}{labels} in /metrics:\n{self.text}"
        return self.samples[key]

    def total(self, name: str) -> float:
        """Sum of a sample over all its label values (e.g. every status class)."""
        return sum(v for (n, _), v in self.samples.items() if n == name)


def scrape(metrics_url: str) -> Metrics:
    import requests

    r = requests.get(metrics_url, timeout=SOCK_TIMEOUT)
    assert r.status_code == 200, r.text
    return Metrics(r.text)


def settled_metrics(server: Server, metrics_url: str, intervals: int = 3) -> Metrics:
    """Scrapes /metrics after ``intervals`` more reports, so that every request
    answered before this call is counted (one interval to be taken, one for a late
    snapshot, one so the prometheus task has surely applied it)."""
    n = len(report_lines(server))
    wait_reports(server, n + intervals)
    return scrape(metrics_url)


@dataclass
class Nginx:
    proc: subprocess.Popen
    port: int
    prefix: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def launch_nginx(prefix: Path, upstream_port: int) -> Nginx:
    """nginx with examples/nginx.conf (``proxy_set_header X-RequestTime $msec;``) in
    front of ``127.0.0.1:upstream_port``, on a free port, prefix dir ``prefix``."""
    import shutil

    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    assert os.path.exists(nginx), "nginx is not installed"
    conf = (EXAMPLES / "nginx.conf").read_text()
    assert "127.0.0.1:8000" in conf and "127.0.0.1:8080" in conf
    assert "proxy_set_header X-RequestTime $msec;" in conf
    for _ in range(4):
        port = free_port()
        text = conf.replace("127.0.0.1:8000", f"127.0.0.1:{upstream_port}").replace(
            "127.0.0.1:8080", f"127.0.0.1:{port}")
        if os.geteuid() == 0:
            # nginx's workers would drop to "nobody", who cannot enter pytest's 0700 temp dirs.
            text = "user root;\n" + text
        prefix.mkdir(parents=True, exist_ok=True)
        (prefix / "nginx.conf").write_text(text)
        with open(prefix / "nginx.stderr", "wb") as err:
            proc = subprocess.Popen(
                [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")],
                stdout=err, stderr=err, stdin=subprocess.DEVNULL)
        ng = Nginx(proc, port, prefix)
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            with socket.socket() as s:
                s.settimeout(1)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return ng
            time.sleep(0.05)
        ng.stop()
        log = (prefix / "nginx.stderr").read_text()
        if "in use" not in log:
            raise AssertionError(f"nginx did not start:\n{log}")
    raise AssertionError("nginx: no free port after 4 attempts")


@pytest.fixture
def nginx_proxy(tmp_path):
    """Factory: nginx_proxy(upstream_port) -> Nginx, stopped at teardown."""
    started = []

    def _start(upstream_port: int) -> Nginx:
        ng = launch_nginx(tmp_path / f"nginx-{len(started)}", upstream_port)
        started.append(ng)
        return ng

    yield _start
    for ng in started:
        ng.stop()


def preconnected_burst(host: str, port: int, paths: list, headers=None, timeout: float = 20.0) -> list:
    """Opens one connection per path first, then sends every request back to back, so
    they arrive together; returns the responses in order."""
    conns = [RawConn(host, port, timeout=timeout) for _ in paths]
    try:
        for c, p in zip(conns, paths):
            hs = headers(p) if callable(headers) else headers
            c.send(request_bytes("GET", p, hs, host=f"{host}:{port}"))
        return [c.read_response() for c in conns]
    finally:
        for c in conns:
            c.close()
