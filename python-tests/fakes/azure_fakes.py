#!/usr/bin/env python3
"""Loopback Azure endpoints for testing the azure sink (stdlib only).

One server, one port, two Azure roles:

* **Identity endpoint**, App Service / Container Apps style (what rwsgi uses when
  ``IDENTITY_ENDPOINT`` and ``IDENTITY_HEADER`` are set)::

      GET /msi/token?api-version=2019-08-01&resource=https://monitoring.azure.com/
      X-IDENTITY-HEADER: <the --identity-header value>

  answers ``{"access_token", "expires_on", "resource", "token_type", "client_id"}``
  with ``expires_on`` as unix seconds in a string, as App Service does. Tokens live
  ``--token-lifetime`` seconds (settable at run time, to test refresh).

* **Ingestion endpoint**, Azure Monitor custom metrics::

      POST /subscriptions/S/resourceGroups/RG/providers/NS/TYPE/NAME/metrics

  checked as strictly as Azure documents it: a bearer token this server issued and
  that has not expired (else 401), ``Content-Type: application/json``, and the body
  field by field: ``time`` ISO 8601 within 30 minutes before / 4 minutes after now;
  ``data.baseData`` with non-empty ``metric`` and ``namespace``; ``dimNames``
  (optional, at most 10, unique, non-empty); a non-empty ``series`` whose
  ``dimValues`` match ``dimNames`` in length, with numeric ``min``, ``max``, ``sum``
  (``min <= max``) and integer ``count >= 1``. Errors are 400/401 with Azure's
  ``{"error": {"code", "message"}}``. A mode answers every POST with 403, as Azure
  does when the identity lacks the Monitoring Metrics Publisher role.

Control (for tests)::

    GET  /_received   accepted posts: [{"path", "body", "token_n"}]
    GET  /_rejected   rejected posts: [{"path", "status", "code", "message"}]
    GET  /_state      {"tokens_issued": n, "token_lifetime": s, "ingest_status": s|null,
                       "token_status": s|null, "token_failures": n}
    POST /_config     {"token_lifetime": secs, "ingest_status": 403 | null,
                       "token_status": 500 | null (the identity endpoint's answer)}
    POST /_reset      forget received/rejected posts (tokens stay valid)

Usage::

    python azure_fakes.py --listen 127.0.0.1:0 [--identity-header SECRET]
                          [--token-lifetime 3600] [--ingest-status 403]

Prints ``READY <port>`` once it listens.
"""

import argparse
import datetime
import json
import re
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

AUDIENCE = "https://monitoring.azure.com/"
APP_SERVICE_API_VERSION = "2019-08-01"
RESOURCE_PATH = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/[^/]+/[^/]+/[^/]+(/[^/]+/[^/]+)*/metrics$",
    re.IGNORECASE,
)
PAST_WINDOW = datetime.timedelta(minutes=30)
FUTURE_WINDOW = datetime.timedelta(minutes=4)


class Invalid(Exception):
    """A request Azure would refuse: HTTP status, error code, message."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_body(body, now):
    """Raises Invalid unless `body` is a custom-metric body Azure would accept."""
    if not isinstance(body, dict) or set(body) != {"time", "data"}:
        raise Invalid(400, "InvalidPayload", "body must be an object with exactly 'time' and 'data'")
    stamp = body["time"]
    try:
        when = datetime.datetime.fromisoformat(stamp)
    except (TypeError, ValueError):
        raise Invalid(400, "InvalidTime", f"time {stamp!r} is not ISO 8601")
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    if not (now - PAST_WINDOW <= when <= now + FUTURE_WINDOW):
        raise Invalid(400, "InvalidTime", f"time {stamp} is outside -30 min / +4 min of now")
    base = (body.get("data") or {}).get("baseData") if isinstance(body.get("data"), dict) else None
    if not isinstance(base, dict):
        raise Invalid(400, "InvalidPayload", "data.baseData is missing")
    for key in ("metric", "namespace"):
        if not isinstance(base.get(key), str) or not base[key].strip():
            raise Invalid(400, "InvalidPayload", f"baseData.{key} must be a non-empty string")
    names = base.get("dimNames", [])
    if not isinstance(names, list) or len(names) > 10 or len(set(names)) != len(names) or not all(
        isinstance(n, str) and n for n in names
    ):
        raise Invalid(400, "InvalidDimensions", "dimNames must be at most 10 unique non-empty strings")
    series = base.get("series")
    if not isinstance(series, list) or not series:
        raise Invalid(400, "InvalidPayload", "baseData.series must be a non-empty list")
    for i, s in enumerate(series):
        if not isinstance(s, dict):
            raise Invalid(400, "InvalidPayload", f"series[{i}] must be an object")
        values = s.get("dimValues", [])
        if not isinstance(values, list) or len(values) != len(names):
            raise Invalid(400, "InvalidDimensions", f"series[{i}].dimValues must have {len(names)} entries")
        if not all(isinstance(v, str) and v for v in values):
            raise Invalid(400, "InvalidDimensions", f"series[{i}].dimValues must be non-empty strings")
        for key in ("min", "max", "sum"):
            if not is_number(s.get(key)):
                raise Invalid(400, "InvalidPayload", f"series[{i}].{key} must be a number")
        count = s.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise Invalid(400, "InvalidPayload", f"series[{i}].count must be an integer >= 1")
        if s["min"] > s["max"]:
            raise Invalid(400, "InvalidPayload", f"series[{i}]: min > max")


class Fakes(BaseHTTPRequestHandler):
    server_version = "azure-fakes/1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("azure-fakes: " + (fmt % args) + "\n")

    def _json(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _read(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    # -- GET: identity endpoint and inspection -------------------------------------

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        state = self.server.state
        if url.path == "/msi/token":
            return self._token(urllib.parse.parse_qs(url.query))
        with state["lock"]:
            if url.path == "/_received":
                return self._json(200, state["received"])
            if url.path == "/_rejected":
                return self._json(200, state["rejected"])
            if url.path == "/_state":
                return self._json(200, {k: state[k] for k in ("tokens_issued", "token_lifetime", "ingest_status",
                                                          "token_status", "token_failures")})
        self._json(404, {"error": {"code": "NotFound", "message": self.path}})

    def _token(self, query):
        state = self.server.state
        if self.headers.get("X-IDENTITY-HEADER") != state["identity_header"]:
            return self._json(401, {"statusCode": 401, "message": "X-IDENTITY-HEADER missing or wrong"})
        if query.get("api-version") != [APP_SERVICE_API_VERSION]:
            return self._json(400, {"statusCode": 400, "message": "api-version must be 2019-08-01"})
        if query.get("resource") != [AUDIENCE]:
            return self._json(400, {"statusCode": 400, "message": f"unknown resource {query.get('resource')}"})
        with state["lock"]:
            forced = state["token_status"]
            if forced:
                state["token_failures"] += 1
        if forced:
            # What the App Service identity endpoint says when it is in trouble.
            return self._json(int(forced), {"statusCode": int(forced), "message": "An unexpected error occured"})
        with state["lock"]:
            state["tokens_issued"] += 1
            n = state["tokens_issued"]
            expires_on = int(time.time() + state["token_lifetime"])
            token = f"fake-token-{n}-{secrets.token_hex(8)}"
            state["tokens"][token] = (n, expires_on)
        self._json(
            200,
            {
                "access_token": token,
                "expires_on": str(expires_on),
                "resource": AUDIENCE,
                "token_type": "Bearer",
                "client_id": "00000000-0000-0000-0000-000000000000",
            },
        )

    # -- POST: ingestion and control ----------------------------------------------

    def do_POST(self):
        raw = self._read()
        state = self.server.state
        path = urllib.parse.urlsplit(self.path).path
        if path == "/_config":
            conf = json.loads(raw or b"{}")
            with state["lock"]:
                for key in ("token_lifetime", "ingest_status", "token_status"):
                    if key in conf:
                        state[key] = conf[key]
            return self._json(200, {})
        if path == "/_reset":
            with state["lock"]:
                state["received"].clear()
                state["rejected"].clear()
            return self._json(200, {})
        try:
            token_n, body = self._check_ingest(path, raw)
        except Invalid as bad:
            with state["lock"]:
                state["rejected"].append({"path": path, "status": bad.status, "code": bad.code, "message": bad.message})
            return self._json(bad.status, {"error": {"code": bad.code, "message": bad.message}})
        with state["lock"]:
            state["received"].append({"path": path, "body": body, "token_n": token_n})
        self._json(200, {})

    def _check_ingest(self, path, raw):
        state = self.server.state
        if not RESOURCE_PATH.match(path):
            raise Invalid(404, "InvalidResourceId", f"{path} is not RESOURCE_ID/metrics")
        auth = self.headers.get("Authorization") or ""
        if not auth.startswith("Bearer "):
            raise Invalid(401, "InvalidAuthenticationToken", "no bearer token")
        with state["lock"]:
            issued = state["tokens"].get(auth[len("Bearer "):])
            forced = state["ingest_status"]
        if issued is None:
            raise Invalid(401, "InvalidAuthenticationToken", "token was not issued by the identity endpoint")
        token_n, expires_on = issued
        if time.time() >= expires_on:
            raise Invalid(401, "ExpiredAuthenticationToken", "the access token has expired")
        if forced == 403:
            raise Invalid(
                403,
                "AuthorizationFailed",
                "The client does not have authorization to perform action "
                "'Microsoft.Insights/Metrics/Write'; grant Monitoring Metrics Publisher",
            )
        if forced:
            raise Invalid(int(forced), "Forced", f"forced status {forced}")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise Invalid(400, "UnsupportedMediaType", f"Content-Type must be application/json, got {ctype!r}")
        try:
            body = json.loads(raw)
        except ValueError:
            raise Invalid(400, "InvalidPayload", "body is not JSON")
        check_body(body, datetime.datetime.now(datetime.timezone.utc))
        return token_n, body


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any)")
    parser.add_argument("--identity-header", default="test-identity-header")
    parser.add_argument("--token-lifetime", type=float, default=3600.0, help="seconds")
    parser.add_argument("--ingest-status", type=int, default=None, help="answer every POST with this status")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Fakes)
    server.daemon_threads = True
    server.verbose = args.verbose
    server.state = {
        "lock": threading.Lock(),
        "identity_header": args.identity_header,
        "token_lifetime": args.token_lifetime,
        "ingest_status": args.ingest_status,
        "token_status": None,
        "token_failures": 0,
        "tokens_issued": 0,
        "tokens": {},
        "received": [],
        "rejected": [],
    }
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
