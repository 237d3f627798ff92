#!/usr/bin/env python3
"""Smithy RPC-v2-CBOR front for moto_server's CloudWatch (test endpoint).

Why: aws-sdk-cloudwatch (Rust) speaks only Smithy RPC v2 CBOR, and moto 5.2 serves
CloudWatch over query and JSON 1.0 only. This adapter sits in between:

    rwsgi --cloudwatch-endpoint http://ADAPTER  ->  adapter  ->  moto_server

It accepts what the SDK sends:

    POST /service/GraniteServiceVersion20100801/operation/<Operation>
    smithy-protocol: rpc-v2-cbor
    Content-Type: application/cbor            (Content-Encoding: gzip allowed)

decodes the CBOR body (cbor2), and forwards it to moto as AWS JSON 1.0
(``X-Amz-Target: GraniteServiceVersion20100801.<Operation>``), passing the SDK's
``Authorization`` header through because moto takes the region and the account
from it. moto's answer goes back as RPC v2 CBOR: the output map on success (an empty
map for PutMetricData), or on error the error shape ``{"__type", "message"}`` with
moto's status and its ``x-amzn-query-error`` header, which is where the SDK reads
the error code of this query-compatible service.

Conversions: CBOR timestamps (tag 1) become epoch seconds in JSON; in answers, keys
that name timestamps (``Timestamp``, ``Timestamps``, ``*Timestamp``, ``StartTime``,
``EndTime``, ``LastModified``) go back as tag 1. That covers PutMetricData
exactly; other operations are forwarded on a best-effort basis.

Usage::

    python cbor_moto_adapter.py --listen 127.0.0.1:PORT --moto http://127.0.0.1:MOTO_PORT

Prints ``READY <port>`` once it listens (PORT may be 0). ``GET /_requests`` returns
the decoded requests (JSON) so that a test can see exactly what the SDK sent;
``POST /_reset`` forgets them.
"""

import argparse
import base64
import datetime
import gzip
import json
import re
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cbor2

SERVICE = "GraniteServiceVersion20100801"
ROUTE = re.compile(r"^/service/([^/]+)/operation/([^/?]+)$")
TIMESTAMP_KEY = re.compile(r"^(Timestamps?|.*Timestamp|StartTime|EndTime|LastModified)$")


def to_json_value(value):
    """CBOR-decoded value -> JSON-encodable value (timestamps as epoch seconds)."""
    if isinstance(value, datetime.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=datetime.timezone.utc)
        return value.timestamp()
    if isinstance(value, dict):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, cbor2.CBORTag):
        raise ValueError(f"unsupported CBOR tag {value.tag}")
    if value is cbor2.undefined:
        return None
    return value


def to_cbor_value(value, key=None):
    """JSON value from moto -> CBOR-ready value (timestamp keys as datetimes)."""
    if isinstance(value, dict):
        return {k: to_cbor_value(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [to_cbor_value(v, key) for v in value]
    if key and TIMESTAMP_KEY.match(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.datetime.fromtimestamp(value, tz=datetime.timezone.utc)
    return value


class Adapter(BaseHTTPRequestHandler):
    server_version = "cbor-moto-adapter/1"
    protocol_version = "HTTP/1.1"

    # -- plumbing ---------------------------------------------------------------

    def log_message(self, fmt, *args):  # quiet unless asked
        if self.server.verbose:
            sys.stderr.write("adapter: " + (fmt % args) + "\n")

    def _body(self):
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        if (self.headers.get("Content-Encoding") or "").lower() == "gzip":
            data = gzip.decompress(data)
        return data

    def _send(self, status, payload, extra_headers=None, content_type="application/cbor"):
        body = payload if isinstance(payload, bytes) else cbor2.dumps(payload, datetime_as_timestamp=True)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if content_type == "application/cbor":
            self.send_header("smithy-protocol", "rpc-v2-cbor")
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status, type_, message, query_code=None):
        headers = {}
        if query_code:
            fault = "Sender" if status < 500 else "Receiver"
            headers["x-amzn-query-error"] = f"{query_code};{fault}"
        self._send(status, {"__type": type_, "message": message}, headers)

    # -- test inspection --------------------------------------------------------

    def do_GET(self):
        if self.path == "/_requests":
            with self.server.lock:
                body = json.dumps(self.server.requests).encode()
            return self._send(200, body, content_type="application/json")
        self._error(404, "UnknownOperationException", f"no route for GET {self.path}")

    # -- the adapter ------------------------------------------------------------

    def do_POST(self):
        if self.path == "/_reset":
            with self.server.lock:
                self.server.requests.clear()
            return self._send(200, b"{}", content_type="application/json")
        match = ROUTE.match(self.path)
        if not match or match.group(1) != SERVICE:
            self._body()
            return self._error(404, "UnknownOperationException", f"no route for {self.path}")
        if self.headers.get("smithy-protocol") != "rpc-v2-cbor":
            self._body()
            return self._error(400, "InvalidRequest", "missing header smithy-protocol: rpc-v2-cbor")
        operation = match.group(2)
        try:
            raw = self._body()
            decoded = cbor2.loads(raw) if raw else {}
            params = to_json_value(decoded)
        except Exception as exc:  # malformed CBOR is the client's fault
            return self._error(400, "SerializationException", f"cannot decode CBOR: {exc}")
        with self.server.lock:
            self.server.requests.append(
                {
                    "operation": operation,
                    "content_encoding": self.headers.get("Content-Encoding"),
                    "params": params,
                }
            )

        forward = urllib.request.Request(
            self.server.moto + "/",
            data=json.dumps(params).encode(),
            method="POST",
            headers={
                "Content-Type": "application/x-amz-json-1.0",
                "X-Amz-Target": f"{SERVICE}.{operation}",
                "Authorization": self.headers.get("Authorization", ""),
                "X-Amz-Date": self.headers.get("X-Amz-Date", ""),
            },
        )
        try:
            with urllib.request.urlopen(forward, timeout=10) as resp:
                status, headers, text = resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            status, headers, text = err.code, err.headers, err.read()
        except OSError as exc:
            return self._error(503, "ServiceUnavailable", f"moto unreachable: {exc}", "ServiceUnavailable")

        extra = {}
        if headers.get("x-amzn-requestid"):
            extra["x-amzn-requestid"] = headers["x-amzn-requestid"]
        try:
            answer = json.loads(text) if text.strip() else {}
        except ValueError:
            answer = None
        if 200 <= status < 300:
            return self._send(status, to_cbor_value(answer or {}), extra)
        if isinstance(answer, dict):
            type_ = answer.get("__type") or "InternalFailure"
            message = answer.get("message") or answer.get("Message") or ""
        else:
            type_, message = "InternalFailure", text.decode(errors="replace")[:500]
        query_error = headers.get("x-amzn-query-error")
        if query_error:
            extra["x-amzn-query-error"] = query_error
        self._send(status, {"__type": type_, "message": message}, extra)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any)")
    parser.add_argument("--moto", required=True, help="moto_server base URL")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host or "127.0.0.1", int(port)), Adapter)
    server.daemon_threads = True
    server.moto = args.moto.rstrip("/")
    server.verbose = args.verbose
    server.lock = threading.Lock()
    server.requests = []
    print(f"READY {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
