"""A background load client for the process-model tests.

``Load`` runs ``conns`` client threads; each keeps one keep-alive connection and
sends GET requests in a loop, reconnecting only after the server closed the
connection (``Connection: close``) or after a failure (or, with ``reuse=False``,
opens a new connection for every request). Every request is recorded as
a ``Result``: when it was issued, which connection carried it, which worker pid
answered (the test apps answer with ``os.getpid()``), or what went wrong.

What counts as a failure: anything but a complete ``200`` response to a request the
client issued (refused connect, reset, EOF before the full response, other status,
timeout). The client never retries, so a dropped request shows up as a failure.

``stop_issuing()`` makes every thread finish the request it is on and issue no more;
a test that stops the server sets it *before* signalling, so every recorded request
was issued before the signal and must succeed.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field

from conftest import SOCK_TIMEOUT, RawConn, request_bytes


class UnixConn(RawConn):
    """RawConn over an AF_UNIX stream socket."""

    def __init__(self, path: str, timeout: float = SOCK_TIMEOUT):  # noqa: D107
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.eof = False


@dataclass
class Result:
    conn: int
    seq: int
    path: str
    t0: float
    #: pid that answered the previous request on this connection (None: fresh one)
    prev_pid: int | None
    t1: float = 0.0
    pid: int | None = None
    body: bytes = b""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def pid_of(body: bytes) -> int | None:
    text = body.decode("utf-8", "replace").strip()
    if text.isdigit():
        return int(text)
    try:
        return int(json.loads(text)["pid"])
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class Load:
    """``connect()`` returns a fresh RawConn-like connection."""

    connect: object
    conns: int = 4
    path: object = "/pid"  # str, or callable(conn, seq) -> str
    pace: float = 0.01
    #: False: a new connection for every request (closed after the response)
    reuse: bool = True
    timeout: float = SOCK_TIMEOUT
    results: list = field(default_factory=list)
    #: connection id -> pid of the worker holding it right now (None: not connected)
    holder: dict = field(default_factory=dict)

    def __post_init__(self):
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True)
                         for i in range(self.conns)]

    # -- control ---------------------------------------------------------------

    def start(self) -> "Load":
        for t in self._threads:
            t.start()
        return self

    def stop_issuing(self) -> None:
        self._stop.set()

    def join(self, timeout: float = 20.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.1, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        assert not stuck, f"load threads still running after {timeout}s: {stuck}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.join()

    # -- views -----------------------------------------------------------------

    def snapshot(self) -> list:
        with self._lock:
            return list(self.results)

    def count(self) -> int:
        with self._lock:
            return len(self.results)

    def failures(self) -> list:
        return [r for r in self.snapshot() if not r.ok]

    def successes(self) -> list:
        return [r for r in self.snapshot() if r.ok]

    def pids(self) -> set:
        return {r.pid for r in self.snapshot() if r.ok and r.pid is not None}

    def wait_for(self, pred, timeout: float, what: str):
        """Polls ``pred(results)`` until truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            v = pred(self.snapshot())
            if v:
                return v
            if time.monotonic() > deadline:
                raise AssertionError(f"load: {what} not seen within {timeout}s; {self.summary()}")
            time.sleep(0.02)

    def wait_requests(self, n: int, timeout: float = 10.0) -> None:
        self.wait_for(lambda rs: len([r for r in rs if r.ok]) >= n, timeout, f"{n} successful requests")

    def summary(self) -> str:
        rs = self.snapshot()
        bad = [r for r in rs if not r.ok]
        lines = [f"{len(rs)} requests, {len(bad)} failed, pids seen {sorted(self.pids())}"]
        for r in bad[:10]:
            lines.append(f"  conn {r.conn} #{r.seq} {r.path} prev_pid={r.prev_pid} "
                         f"t={r.t0:.3f}..{r.t1:.3f}: {r.error}")
        return "\n".join(lines)

    # -- the client threads ------------------------------------------------------

    def _run(self, cid: int) -> None:
        conn = None
        prev = None
        seq = 0
        while not self._stop.is_set():
            path = self.path(cid, seq) if callable(self.path) else self.path
            r = Result(cid, seq, path, time.monotonic(), prev)
            seq += 1
            try:
                if conn is None:
                    conn = self.connect()
                    conn.settimeout(self.timeout)
                    prev = None
                    r.prev_pid = None
                conn.send(request_bytes("GET", path))
                resp = conn.read_response()
                r.body = resp.body
                if resp.status != 200:
                    r.error = f"status {resp.status}: {resp.body[:200]!r}"
                else:
                    r.pid = pid_of(resp.body)
                    prev = r.pid
                if (not self.reuse or (resp.header("Connection") or "").lower() == "close"
                        or resp.version == "HTTP/1.0"):
                    conn.close()
                    conn = None
            except Exception as e:  # noqa: BLE001 - every failure is recorded
                r.error = f"{type(e).__name__}: {e}"
                if conn is not None:
                    conn.close()
                conn = None
            r.t1 = time.monotonic()
            with self._lock:
                self.results.append(r)
                self.holder[cid] = prev if conn is not None else None
            if self.pace:
                time.sleep(self.pace)
        if conn is not None:
            conn.close()


# ---------------------------------------------------------------------------
# the process table
# ---------------------------------------------------------------------------


def proc_state(pid: int) -> str | None:
    """The one-letter state of a process (``Z`` for a zombie), None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def workers_of(master: int) -> list:
    """The master's children as the process table shows them (zombies included: a
    worker the master has not reaped still counts)."""
    from conftest import children_of

    return sorted(children_of(master))


def wait_workers(srv, n: int, timeout: float = 5.0, gone=()) -> list:
    """Polls until the master has exactly ``n`` children, none of them a zombie and
    none in ``gone``; returns their pids."""
    deadline = time.monotonic() + timeout
    while True:
        kids = workers_of(srv.pid)
        if (len(kids) == n and not set(kids) & set(gone)
                and all(proc_state(p) not in (None, "Z") for p in kids)):
            return kids
        if time.monotonic() > deadline:
            states = {p: proc_state(p) for p in kids}
            raise AssertionError(
                f"expected {n} workers (without {sorted(gone)}) within {timeout}s; "
                f"children of master {srv.pid}: {states}")
        time.sleep(0.01)


def alive(pid: int) -> bool:
    return proc_state(pid) not in (None, "Z")
