"""Real backends for the sink tests, started as processes on free ports, plus load helpers.

Fixtures (registered in conftest.py):

* ``moto``        – session: ``moto_server`` (CloudWatch over query/JSON), ``.url``,
                    ``.cloudwatch()`` → a boto3 client reading straight from moto.
* ``cw_adapter``  – session: ``fakes/cbor_moto_adapter.py`` in front of ``moto``;
                    ``.url`` is what rwsgi's ``--cloudwatch-endpoint`` points at,
                    ``.requests()`` what the Rust SDK sent, decoded.
* ``azure_fake``  – per test: ``fakes/azure_fakes.py`` (identity + ingestion endpoint);
                    ``.env()`` gives the ``IDENTITY_ENDPOINT``/``IDENTITY_HEADER`` pair.
* ``redis_server``– per module: a real ``redis-server`` with a password, which a test
                    may stop and start again on the same port.

A backend that cannot start fails the test loudly; nothing here skips.

Helpers: ``msec_stamp()`` (nginx ``$msec``), ``drive()`` (concurrent keep-alive load,
optionally stamped), ``scrape()`` (prometheus text → dict), ``poll()``, ``by_metric()`` and
``totals()`` (what the Azure fake accepted), ``HungListener`` (a black-holed port), ``Switch``
(a black-holed port that can start forwarding to a real backend).
"""

from __future__ import annotations

import http.client
import json
import math
import os
import select
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import TESTS_DIR, free_port

FAKES = TESTS_DIR / "fakes"
BIN_DIR = Path(sys.executable).parent
START_TIMEOUT = 30.0


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


def poll(check, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Calls check() until it returns something truthy; fails with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def wait_port(port: int, proc: subprocess.Popen, name: str, log: Path, timeout: float = START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"{name} exited with {proc.returncode}:\n{_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{name} not listening on {port} after {timeout}s:\n{_tail(log)}")
        time.sleep(0.05)


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "<no log>"


def stop_proc(proc: subprocess.Popen | None):
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def start_ready_script(script: Path, args: list, log: Path, name: str) -> tuple[subprocess.Popen, int]:
    """Starts one of the fakes, which print `READY <port>` on stdout once listening."""
    err = open(log, "wb")
    proc = subprocess.Popen(
        [sys.executable, str(script), "--listen", "127.0.0.1:0", *map(str, args)],
        stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    err.close()
    deadline = time.monotonic() + START_TIMEOUT
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            stop_proc(proc)
            raise AssertionError(f"{name} did not print READY:\n{_tail(log)}")
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(proc.stdout.fileno(), 1)
            if not chunk:
                continue
            line += chunk
    word, _, port = line.decode().strip().partition(" ")
    if word != "READY":
        stop_proc(proc)
        raise AssertionError(f"{name} printed {line!r} instead of READY <port>")
    return proc, int(port)


def get_json(url: str, method: str = "GET", body: dict | None = None):
    data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read() or b"null")


def msec_stamp(offset: float = 0.0) -> str:
    """What nginx sends for `$msec`: unix seconds with milliseconds, truncated."""
    t = time.time() - offset
    return f"{math.floor(t * 1000) / 1000:.3f}"


# Sockets that hold the dead ports for the rest of the test run.
_DEAD = []


def dead_port() -> int:
    """A loopback port nobody listens on: connect is refused. The port stays bound
    (never listening) for the rest of the run, so the kernel cannot hand it to a
    server started later; a port merely bound and closed once went to the very
    adapter that was told to forward to it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _DEAD.append(s)
    return s.getsockname()[1]


class HungListener:
    """A loopback port that accepts connections and never answers: a black-holed
    endpoint, where only the client's own timeouts end an attempt."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.held = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        except OSError:
            pass
        for c in [self.sock, *self.held]:
            try:
                c.close()
            except OSError:
                pass


class Switch:
    """A loopback port in front of a real backend that can be black-holed and brought
    back: while ``hung``, it accepts and never answers (like HungListener); once
    ``forward_to(port)`` is called, the held connections are closed (as a backend
    restarting would) and every new one is piped to the backend."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.target = None
        self.held = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def forward_to(self, port: int):
        self.target = port
        for c in self.held:
            try:
                c.close()
            except OSError:
                pass

    def _accept(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.target is None:
                self.held.append(conn)
            else:
                threading.Thread(target=self._pipe, args=(conn, self.target), daemon=True).start()

    @staticmethod
    def _pipe(conn, port):
        try:
            up = socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            conn.close()
            return
        pair = {conn: up, up: conn}
        try:
            while True:
                ready, _, _ = select.select(list(pair), [], [], 30)
                if not ready:
                    return
                for s in ready:
                    data = s.recv(65536)
                    if not data:
                        return
                    pair[s].sendall(data)
        except OSError:
            return
        finally:
            conn.close()
            up.close()

    def close(self):
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for c in [self.sock, *self.held]:
            try:
                c.close()
            except OSError:
                pass


# ---------------------------------------------------------------------------
# load
# ---------------------------------------------------------------------------


@dataclass
class Load:
    """Outcome of drive(): what was sent and what came back."""
    sent: int = 0
    stamped: int = 0
    ok: int = 0
    failures: list = field(default_factory=list)
    # Per stamped request: seconds from its stamp to the response's arrival, an
    # upper bound of the queue time rwsgi measured for it.
    stamp_to_response: list = field(default_factory=list)
    latencies: list = field(default_factory=list)


def drive(server, n: int, concurrency: int = 6, path: str = "/hello", header: str = "X-RequestTime",
          stamp_every: int = 1, offset: float = 0.0) -> Load:
    """Sends n GETs over `concurrency` keep-alive connections. Request i carries the
    queue stamp when i % stamp_every == 0 (stamp_every=0: none). Any non-200 answer
    or connection error counts as a failure."""
    lock = threading.Lock()
    out = Load()

    def worker(indices):
        conn = None
        for i in indices:
            stamped = stamp_every and i % stamp_every == 0
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(server.host, server.port, timeout=15)
                headers = {}
                s = None
                if stamped:
                    s = msec_stamp(offset)
                    headers[header] = s
                t0 = time.perf_counter()
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                resp.read()
                now = time.time()
                dt = time.perf_counter() - t0
                with lock:
                    out.sent += 1
                    out.stamped += 1 if stamped else 0
                    out.latencies.append(dt)
                    if resp.status == 200:
                        out.ok += 1
                    else:
                        out.failures.append(f"#{i}: HTTP {resp.status}")
                    if stamped:
                        out.stamp_to_response.append(now - float(s))
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    out.sent += 1
                    out.stamped += 1 if stamped else 0
                    out.failures.append(f"#{i}: {type(e).__name__}: {e}")
                if conn is not None:
                    conn.close()
                conn = None
        if conn is not None:
            conn.close()

    shares = [range(k, n, concurrency) for k in range(concurrency)]
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, shares))
    return out


def sequential_latencies(server, n: int, path: str = "/") -> list:
    """Seconds per request for n requests, one after another on one connection."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=10)
    out = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            conn.request("GET", path, headers={"X-RequestTime": msec_stamp()})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
            out.append(time.perf_counter() - t0)
    finally:
        conn.close()
    return out


# ---------------------------------------------------------------------------
# prometheus
# ---------------------------------------------------------------------------


def scrape(addr: str) -> dict:
    """`/metrics` of the prometheus sink as {'name{labels}': value}."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        out[key] = float(value)
    return out


def requests_total(metrics: dict) -> float:
    return sum(v for k, v in metrics.items() if k.startswith("rwsgi_requests_total"))


# ---------------------------------------------------------------------------
# moto + CBOR adapter
# ---------------------------------------------------------------------------


class Moto:
    def __init__(self, port: int, proc: subprocess.Popen):
        self.port, self.proc = port, proc
        self.url = f"http://127.0.0.1:{port}"

    def cloudwatch(self):
        import boto3

        return boto3.client(
            "cloudwatch", endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id="testing", aws_secret_access_key="testing",
        )


class Adapter:
    def __init__(self, port: int, proc: subprocess.Popen):
        self.port, self.proc = port, proc
        self.url = f"http://127.0.0.1:{port}"

    def requests(self, namespace: str | None = None) -> list:
        """PutMetricData params the SDK sent (for one namespace), oldest first."""
        reqs = get_json(self.url + "/_requests")
        out = [r["params"] for r in reqs if r["operation"] == "PutMetricData"]
        if namespace is not None:
            out = [p for p in out if p.get("Namespace") == namespace]
        return out

    def datums(self, namespace: str, metric: str) -> list:
        return [d for p in self.requests(namespace) for d in p["MetricData"] if d["MetricName"] == metric]


@pytest.fixture(scope="session")
def moto(tmp_path_factory):
    exe = BIN_DIR / "moto_server"
    if not exe.exists():
        exe = shutil.which("moto_server")
        if not exe:
            pytest.fail("moto_server not found next to the test interpreter nor on PATH "
                        "(pip install 'moto[server]')", pytrace=False)
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    for _ in range(3):
        port = free_port()
        with open(log, "wb") as f:
            proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=f, stderr=f,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_port(port, proc, "moto_server", log)
            break
        except AssertionError:
            stop_proc(proc)
            if "in use" not in _tail(log):
                raise
    else:
        pytest.fail(f"moto_server did not start:\n{_tail(log)}", pytrace=False)
    yield Moto(port, proc)
    stop_proc(proc)


@pytest.fixture(scope="session")
def cw_adapter(moto, tmp_path_factory):
    log = tmp_path_factory.mktemp("adapter") / "adapter.log"
    proc, port = start_ready_script(FAKES / "cbor_moto_adapter.py", ["--moto", moto.url], log, "CBOR adapter")
    yield Adapter(port, proc)
    stop_proc(proc)


def aws_env(**extra) -> dict:
    """Fake AWS credentials, and nothing from the real machine's AWS setup."""
    env = {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": None, "AWS_PROFILE": None, "AWS_REGION": None, "AWS_DEFAULT_REGION": None,
        "AWS_ENDPOINT_URL": None, "AWS_ENDPOINT_URL_CLOUDWATCH": None,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    env.update(extra)
    return env


# ---------------------------------------------------------------------------
# Azure fakes
# ---------------------------------------------------------------------------

IDENTITY_HEADER = "identity-header-Zq81xT"


class AzureFake:
    def __init__(self, port: int, proc: subprocess.Popen):
        self.port, self.proc = port, proc
        self.url = f"http://127.0.0.1:{port}"

    def env(self) -> dict:
        return {
            "IDENTITY_ENDPOINT": self.url + "/msi/token", "IDENTITY_HEADER": IDENTITY_HEADER,
            "AZURE_TENANT_ID": None, "AZURE_CLIENT_ID": None, "AZURE_CLIENT_SECRET": None,
            "AZURE_FEDERATED_TOKEN_FILE": None,
        }

    def received(self) -> list:
        return get_json(self.url + "/_received")

    def rejected(self) -> list:
        return get_json(self.url + "/_rejected")

    def state(self) -> dict:
        return get_json(self.url + "/_state")

    def configure(self, **conf):
        get_json(self.url + "/_config", "POST", conf)


def by_metric(received):
    """Accepted posts grouped by metric name."""
    out = defaultdict(list)
    for post in received:
        base = post["body"]["data"]["baseData"]
        out[base["metric"]].append(post)
    return out


def totals(posts):
    """count/sum/min/max over every series of some posts, as Azure would aggregate them."""
    series = [s for p in posts for s in p["body"]["data"]["baseData"]["series"]]
    return {
        "count": sum(s["count"] for s in series),
        "sum": sum(s["sum"] for s in series),
        "min": min(s["min"] for s in series),
        "max": max(s["max"] for s in series),
    }


@pytest.fixture
def azure_fake(tmp_path):
    procs = []

    def start(*args) -> AzureFake:
        log = tmp_path / f"azure-fakes-{len(procs)}.log"
        proc, port = start_ready_script(FAKES / "azure_fakes.py",
                                        ["--identity-header", IDENTITY_HEADER, *args], log, "Azure fakes")
        procs.append(proc)
        return AzureFake(port, proc)

    yield start
    for p in procs:
        stop_proc(p)


# ---------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------

REDIS_PASSWORD = "pw-Redis-7f3e9a"


class RedisServer:
    """redis-server with a password and no persistence; stop() and start() keep the port."""

    def __init__(self, workdir: Path):
        self.exe = shutil.which("redis-server")
        if not self.exe:
            pytest.fail("redis-server is not installed", pytrace=False)
        self.workdir = workdir
        self.port = free_port()
        self.proc = None
        self.url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{self.port}/0"

    def start(self):
        log = self.workdir / "redis.log"
        with open(log, "ab") as f:
            self.proc = subprocess.Popen(
                [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", REDIS_PASSWORD,
                 "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
                stdout=f, stderr=f, stdin=subprocess.DEVNULL, start_new_session=True,
            )
        wait_port(self.port, self.proc, "redis-server", log)
        poll(lambda: self._ping(), 10, what="redis PING")

    def _ping(self):
        try:
            return self.client().ping()
        except Exception:  # noqa: BLE001 - still loading
            return False

    def stop(self, kill: bool = False):
        """TERM (redis-server shuts down cleanly), or kill=True: SIGKILL, a crash."""
        if kill and self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)
        stop_proc(self.proc)
        self.proc = None

    def client(self):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, password=REDIS_PASSWORD, db=0,
                           decode_responses=True, socket_timeout=5)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    yield srv
    srv.stop()
