"""The soak: mixed load on a real rwsgi for a bounded time, while the master is sent
HUP and workers recycle at --max-requests, and the RSS and open fds of the master and
of every worker are sampled. One code path for CI's 60 s run (test_soak.py) and the
bench's 30 minutes (`bench/run.sh soak`, which writes the figures as JSON).

The load (clients on threads, each a loop of picks):
  keep-alive churn   a connection for 1-20 requests, then closed
  uploads            POST /upload, 16 KiB to 1 MiB, checked against its CRC
  streams            GET /chunks?n=200 (chunked) and /slowgen (a Content-Length stream)
  app errors         GET /raise: the 500 it asks for (counted apart, not a failure)
  not found          GET /status?s=404 ...

Figures: per process, at two quiet points (load paused until the keep-alive timeout
has closed every connection): after the warm-up and at the end; for the workers, the
largest of the live workers at each point (workers are replaced by HUP and recycling,
so per-generation flatness is what can be compared). Growth = end / warm - 1.

    python soak.py --bin target/debug/rwsgi --seconds 60 --out soak.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
KEEP_ALIVE = 2


def children(pid: int) -> list:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out += [int(x) for x in f.read().split()]
            except OSError:
                pass
    except OSError:
        pass
    return out


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.failures = []

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + n

    def fail(self, what):
        with self.lock:
            self.add("failures")
            if len(self.failures) < 20:
                self.failures.append(what)


class Client(threading.Thread):
    """One client: picks an action, runs it, records what came back."""

    def __init__(self, port: int, tally: Tally, seed: int):
        super().__init__(daemon=True)
        self.port, self.tally, self.rng = port, tally, random.Random(seed)
        self.running = threading.Event()
        self.running.set()
        self.stop = False

    def run(self):
        while not self.stop:
            self.running.wait()
            if self.stop:
                return
            pick = self.rng.random()
            try:
                if pick < 0.55:
                    self.keep_alive()
                elif pick < 0.75:
                    self.upload()
                elif pick < 0.9:
                    self.stream()
                elif pick < 0.95:
                    self.one("GET", "/raise?marker=soak", expect=500)
                else:
                    self.one("GET", "/status?s=404%20Not%20Found", expect=404)
            except Exception as e:  # noqa: BLE001 - recorded, the soak goes on
                self.tally.fail(f"{type(e).__name__}: {e}")

    def conn(self):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def request(self, c, method, path, body=None, fresh=True):
        """One exchange on c; a reused keep-alive connection the server closed just
        before this request is retried once on a new one, as HTTP clients do
        (urllib3, requests); such retries are counted."""
        try:
            c.request(method, path, body=body)
            r = c.getresponse()
            return c, r.status, r.read()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            if fresh:
                raise
            self.tally.add("keepalive_retries")
            c.close()
            c = self.conn()
            c.request(method, path, body=body)
            r = c.getresponse()
            return c, r.status, r.read()

    def check(self, status, expect, what):
        if status == expect:
            self.tally.add(f"status_{status}")
        elif status >= 500:
            self.tally.fail(f"unintended {status} for {what}")
        else:
            self.tally.fail(f"{status} for {what}, expected {expect}")

    def keep_alive(self):
        c = self.conn()
        try:
            for i in range(self.rng.randint(1, 20)):
                c, status, body = self.request(c, "GET", "/hello", fresh=i == 0)
                self.check(status, 200, "/hello")
                if status == 200 and body != b"hello world":
                    self.tally.fail(f"/hello body {body[:40]!r}")
        finally:
            c.close()

    def upload(self):
        data = os.urandom(self.rng.choice([16 << 10, 256 << 10, 1 << 20]))
        c = self.conn()
        try:
            c, status, body = self.request(c, "POST", "/upload?n=65536", body=data)
            self.check(status, 200, "/upload")
            if status == 200:
                got = json.loads(body)
                if got["total"] != len(data) or got["crc32"] != zlib.crc32(data):
                    self.tally.fail(f"upload of {len(data)} arrived as {got}")
                self.tally.add("uploaded_bytes", len(data))
        finally:
            c.close()

    def stream(self):
        c = self.conn()
        try:
            if self.rng.random() < 0.5:
                c, status, body = self.request(c, "GET", "/chunks?n=200")
                self.check(status, 200, "/chunks")
                if status == 200 and body != b"".join(f"part{i};".encode() for i in range(200)):
                    self.tally.fail("/chunks body differs")
            else:
                c, status, body = self.request(c, "GET", "/slowgen?chunks=8&size=65536&name=soak")
                self.check(status, 200, "/slowgen")
                if status == 200 and len(body) != 8 * 65536:
                    self.tally.fail(f"/slowgen sent {len(body)} bytes")
        finally:
            c.close()

    def one(self, method, path, expect):
        c = self.conn()
        try:
            c, status, _ = self.request(c, method, path)
            self.check(status, expect, path)
        finally:
            c.close()


def quiet_sample(master: int, clients) -> dict:
    """Pauses the load until every keep-alive connection has timed out, then
    samples the master and every live worker."""
    for c in clients:
        c.running.clear()
    time.sleep(KEEP_ALIVE + 1.5)
    workers = children(master)
    sample = {
        "master_rss_kb": rss_kb(master),
        "master_fds": fds(master),
        "workers": {str(w): {"rss_kb": rss_kb(w), "fds": fds(w)} for w in workers},
    }
    sample["worker_rss_kb"] = max((v["rss_kb"] for v in sample["workers"].values()), default=0)
    sample["worker_fds"] = max((v["fds"] for v in sample["workers"].values()), default=0)
    for c in clients:
        c.running.set()
    return sample


def wait_port(port: int, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"rwsgi exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("rwsgi did not listen")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(bin_path: str, seconds: float, logdir: Path, clients: int = 6, workers: int = 2,
        env: dict | None = None) -> dict:
    """Runs the soak; returns the figures (see the module's doc)."""
    port = free_port()
    warm = max(10.0, seconds * 0.2)
    hup_every = max(10.0, seconds / 6)
    logdir.mkdir(parents=True, exist_ok=True)
    state = logdir / "state"
    state.mkdir(exist_ok=True)
    e = dict(os.environ if env is None else env, RWSGI_TEST_STATE=str(state))
    argv = [bin_path, "--bind", f"127.0.0.1:{port}", "--chdir", str(HERE), "--workers", str(workers),
            "--threads", "4", "--keep-alive", str(KEEP_ALIVE), "--max-requests", "3000",
            "--max-requests-jitter", "500", "--access-log", "/dev/null", "apps.wsgi_rules:application"]
    with open(logdir / "soak-rwsgi.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=e,
                                start_new_session=True)
    tally = Tally()
    pool = [Client(port, tally, seed) for seed in range(clients)]
    hups = 0
    try:
        wait_port(port, proc)
        t0 = time.monotonic()
        for c in pool:
            c.start()
        time.sleep(warm)
        first = quiet_sample(proc.pid, pool)
        next_hup = time.monotonic() + hup_every / 2
        end = t0 + seconds
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"rwsgi exited with {proc.returncode} during the soak")
            if time.monotonic() >= next_hup:
                proc.send_signal(signal.SIGHUP)
                hups += 1
                next_hup += hup_every
            time.sleep(0.2)
        # Let the last HUP's workers take over before the final quiet point.
        last = quiet_sample(proc.pid, pool)
    finally:
        for c in pool:
            c.stop = True
            c.running.set()
        for c in pool:
            c.join(timeout=40)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    recycled = (logdir / "soak-rwsgi.log").read_text(errors="replace").count("max requests reached")

    def growth(key):
        return (last[key] - first[key]) / first[key] if first[key] else float("inf")

    return {
        "seconds": seconds,
        "warm_up_seconds": warm,
        "clients": clients,
        "workers": workers,
        "hups": hups,
        "recycled": recycled,
        "counts": tally.counts,
        "failures": tally.failures,
        "after_warm_up": first,
        "at_end": last,
        "growth": {k: growth(k) for k in ("master_rss_kb", "master_fds", "worker_rss_kb", "worker_fds")},
        "exit_code": proc.returncode,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--seconds", type=float, default=1800)
    ap.add_argument("--clients", type=int, default=6)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", required=True, help="where the figures go (JSON)")
    args = ap.parse_args()
    out = Path(args.out)
    figures = run(args.bin, args.seconds, out.parent / (out.stem + "-logs"), args.clients, args.workers)
    out.write_text(json.dumps(figures, indent=2) + "\n")
    g = figures["growth"]
    c = figures["counts"]
    served = sum(v for k, v in c.items() if k.startswith("status_"))
    print(f"soak {args.seconds:.0f}s: {served} responses, {c.get('failures', 0)} failures, "
          f"{figures['hups']} HUPs, {figures['recycled']} recycles; growth after warm-up: "
          f"master RSS {g['master_rss_kb']:+.1%}, fds {g['master_fds']:+.1%}; "
          f"worker RSS {g['worker_rss_kb']:+.1%}, fds {g['worker_fds']:+.1%}  -> {out}")
    ok = c.get("failures", 0) == 0 and all(v < 0.05 for v in g.values()) and figures["exit_code"] == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
