"""Kubernetes lifecycle (issue 13): /healthz and /readyz on --health-bind, readiness
failing on TERM while --shutdown-delay keeps serving, and readiness following
server_wait with --ready-max-server-wait.

The TERM test plays the orchestrator: clients keep sending (new connections too) for a
while after /readyz fails, as a proxy does until the endpoint removal reaches it, and
not one request may fail."""

import http.client
import signal
import subprocess
import threading
import time

import requests

from conftest import free_port, rwsgi_bin  # noqa: F401 - fixture
from sink_services import poll

APP = "apps.queue_app:application"


def probe(port: int, path: str) -> tuple[int, str]:
    try:
        r = requests.get(f"http://127.0.0.1:{port}{path}", timeout=2)
        return r.status_code, r.text
    except requests.RequestException as e:
        return -1, str(e)


class SteadyLoad:
    """`clients` threads sending GET `path` back to back until stopped; every 5th
    request opens a new connection, as a proxy's pool does."""

    def __init__(self, port: int, clients: int, path: str):
        self.port, self.path = port, path
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.done: list[float] = []
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]
        for t in self.threads:
            t.start()

    def run(self):
        conn, n = None, 0
        while not self.stop.is_set():
            try:
                if conn is None or n % 5 == 0:
                    if conn is not None:
                        conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                conn.request("GET", self.path)
                resp = conn.getresponse()
                resp.read()
                with self.lock:
                    if resp.status == 200:
                        self.done.append(time.monotonic())
                    else:
                        self.failures.append(f"HTTP {resp.status}")
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.failures.append(f"{type(e).__name__}: {e}")
                conn = None
            n += 1

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(15)


def test_term_with_shutdown_delay_fails_readiness_and_loses_no_request(start_server):
    hport = free_port()
    delay = 2.0
    srv = start_server(APP, "--workers", "2", "--threads", "2", "--health-bind", f"127.0.0.1:{hport}",
                       "--shutdown-delay", str(delay), "--graceful-timeout", "5")
    poll(lambda: probe(hport, "/readyz")[0] == 200, 10, what="/readyz 200")
    # Ready as soon as one worker serves; the second may still be receiving its sockets.
    poll(lambda: "2/2 workers serving" in probe(hport, "/healthz")[1], 10, what="/healthz: 2/2 workers serving")
    assert probe(hport, "/healthz")[0] == 200

    load = SteadyLoad(srv.port, 4, "/sleep?ms=20")
    polls: list[tuple[float, int, int]] = []
    stop_polling = threading.Event()

    def poller():
        while not stop_polling.is_set():
            ready = probe(hport, "/readyz")[0]
            t = time.monotonic()  # the answer's time: an answer before TERM saw no TERM
            polls.append((t, ready, probe(hport, "/healthz")[0]))
            time.sleep(0.05)
    pt = threading.Thread(target=poller, daemon=True)
    pt.start()
    time.sleep(1.0)
    t_term = time.monotonic()
    srv.signal(signal.SIGTERM)
    # The orchestrator's view: readiness fails, and traffic still arrives for a while
    # (endpoint removal propagating), here 1.5 s of the 2 s delay.
    poll(lambda: any(t > t_term and r == 503 for t, r, _ in polls), 2, interval=0.02,
         what="/readyz 503 after TERM")
    t_unready = min(t for t, r, _ in polls if t > t_term and r == 503)
    time.sleep(max(0.0, t_term + 1.5 - time.monotonic()))
    load.finish()
    stop_polling.set()
    pt.join(5)
    assert srv.wait(15) == 0
    assert load.failures == [], load.failures[:10]
    assert t_unready - t_term < 0.5, "readiness must fail at once on TERM"
    after_term = [t for t in load.done if t > t_term + 0.2]
    assert len(after_term) > 30, f"only {len(after_term)} requests answered after TERM"
    # Alive throughout the delay; not ready from TERM on.
    during = [(r, h) for t, r, h in polls if t_unready <= t < t_term + delay - 0.2]
    assert during and all(r == 503 and h == 200 for r, h in during), during
    before = [r for t, r, _ in polls if t < t_term]
    assert before and all(r == 200 for r in before), before
    logs = srv.stderr_text()
    assert "serving 2.0s before draining" in logs, logs[-2000:]


def test_readiness_fails_while_server_wait_is_over_the_bound(start_server):
    hport = free_port()
    srv = start_server(APP, "--workers", "1", "--threads", "1", "--health-bind", f"127.0.0.1:{hport}",
                       "--ready-max-server-wait", "0.05", "--notify-interval", "1", "--queue-header",
                       "X-RequestTime")
    poll(lambda: probe(hport, "/readyz")[0] == 200, 10, what="/readyz 200")
    # One thread, four clients of a 100 ms app: each request waits about 300 ms.
    load = SteadyLoad(srv.port, 4, "/sleep?ms=100")
    try:
        poll(lambda: probe(hport, "/readyz")[0] == 503, 10, what="/readyz 503 under queueing")
        status, text = probe(hport, "/readyz")
        assert "p90 server_wait" in text and "--ready-max-server-wait 0.050s" in text, text
        assert probe(hport, "/healthz")[0] == 200
    finally:
        load.finish()
    assert load.failures == []
    # The next intervals have nothing queued: ready again.
    poll(lambda: probe(hport, "/readyz")[0] == 200, 10, what="/readyz 200 again")


def test_health_listener_refuses_other_paths_and_methods(start_server):
    hport = free_port()
    start_server(APP, "--health-bind", f"127.0.0.1:{hport}")
    poll(lambda: probe(hport, "/healthz")[0] == 200, 10, what="/healthz")
    assert probe(hport, "/")[0] == 404
    assert requests.post(f"http://127.0.0.1:{hport}/readyz", timeout=2).status_code == 405


def test_lifecycle_options_are_validated(rwsgi_bin):  # noqa: F811
    cases = [
        (["--ready-max-server-wait", "0.1"], "--ready-max-server-wait needs --health-bind"),
        (["--shutdown-delay", "-1"], "--shutdown-delay -1: must be a number of seconds >= 0"),
        (["--health-bind", "nohost"], "--health-bind must be HOST:PORT"),
    ]
    for args, message in cases:
        p = subprocess.run([rwsgi_bin, *args, APP], capture_output=True, text=True, timeout=20)
        assert p.returncode == 2 and message in p.stderr, (args, p.returncode, p.stderr)
