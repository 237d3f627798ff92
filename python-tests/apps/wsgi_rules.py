"""One WSGI app with a route per PEP 3333 behaviour the tests probe.

Well-behaved routes always send Content-Type (so the same app passes
wsgiref.validate.validator); misbehaving routes are named for what they do wrong.
Side effects the tests need to observe from outside (close() calls, how far a
generator ran, what start_response raised) are appended as lines to files in
$RWSGI_TEST_STATE, which the test fixture points at a per-server temp dir.
"""

import io
import json
import os
import sys
import threading
import time
import zlib
from urllib.parse import parse_qs, unquote

STATE = os.environ.get("RWSGI_TEST_STATE", "/tmp")

_lock = threading.Lock()
_active = 0
_active_max = 0


class _Str(str):
    """A str subclass, as some frameworks pass header values."""


def record(name, line):
    with open(os.path.join(STATE, name), "a") as f:
        f.write(line + "\n")


def wait_flag(name, timeout=10.0):
    path = os.path.join(STATE, name)
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def qs(environ):
    return {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True).items()}


def text(start_response, body, status="200 OK", extra=()):
    if isinstance(body, str):
        body = body.encode("utf-8")
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))] + list(extra))
    return [body]


def as_json(start_response, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def read_all(inp, n=8192):
    """Read to EOF with read(n) only (wsgiref.validate allows only that form)."""
    out = []
    while True:
        b = inp.read(n)
        if not b:
            return b"".join(out)
        out.append(b)


class Closing:
    """An iterable whose close() is recorded in $STATE/closes as 'close <id>'."""

    def __init__(self, ident, chunks, fail_at=None, delay=0.0):
        self.ident = ident
        self.chunks = chunks
        self.fail_at = fail_at
        self.delay = delay
        self.produced = 0

    def __iter__(self):
        for i, c in enumerate(self.chunks):
            if self.fail_at is not None and i == self.fail_at:
                raise RuntimeError(f"closing-iterable failure {self.ident}")
            if self.delay:
                time.sleep(self.delay)
            self.produced += 1
            yield c

    def close(self):
        record("closes", f"close {self.ident} produced={self.produced}")


def endless(n_max=100000, size=65536):
    for _ in range(n_max):
        yield b"z" * size


def describe_environ(environ):
    out = {}
    types = {}
    for k, v in environ.items():
        types[k] = type(v).__name__
        if isinstance(v, (str, bool, int, float)) or v is None:
            out[k] = v
        elif isinstance(v, tuple):
            out[k] = list(v)
        else:
            out[k] = repr(type(v))
    inp = environ.get("wsgi.input")
    err = environ.get("wsgi.errors")
    return {
        "environ": out,
        "types": types,
        "environ_is_dict": type(environ) is dict,
        "input_methods": [m for m in ("read", "readline", "readlines", "__iter__") if hasattr(inp, m)],
        "errors_methods": [m for m in ("write", "writelines", "flush") if hasattr(err, m)],
        "file_wrapper_callable": callable(environ.get("wsgi.file_wrapper")),
        "cwd": os.getcwd(),
        "sys_path": sys.path,
        "sys_prefix": sys.prefix,
        "sys_version": sys.version,
        "pid": os.getpid(),
        "thread": threading.get_ident(),
    }


def input_op(environ, op, n):
    inp = environ["wsgi.input"]
    parts = []
    if op == "read_n":
        while True:
            b = inp.read(n)
            parts.append(b)
            if not b:
                break
    elif op == "read_all":
        parts = [inp.read(), inp.read(), inp.read(5)]
    elif op == "read_minus1":
        parts = [inp.read(-1), inp.read(-1), inp.read(10)]
    elif op == "readline":
        while True:
            b = inp.readline()
            parts.append(b)
            if not b:
                break
    elif op == "readline_size":
        while True:
            b = inp.readline(n)
            parts.append(b)
            if not b:
                break
    elif op == "readlines":
        parts = list(inp.readlines()) + [b"<rest>", read_all(inp)]
    elif op == "readlines_hint":
        parts = list(inp.readlines(n)) + [b"<rest>", read_all(inp)]
    elif op == "iter":
        parts = list(inp)
    elif op == "mixed":
        parts = [inp.readline(), inp.read(3), inp.readline(), read_all(inp)]
    else:
        raise ValueError(op)
    for p in parts:
        if type(p) is not bytes:
            raise TypeError(f"wsgi.input returned {type(p).__name__}, not bytes")
    return [p.decode("latin-1") for p in parts]


HOP_BY_HOP = {
    "connection": ("Connection", "close"),
    "transfer-encoding": ("Transfer-Encoding", "chunked"),
    "keep-alive": ("Keep-Alive", "timeout=5"),
    "upgrade": ("Upgrade", "websocket"),
    "proxy-authenticate": ("Proxy-Authenticate", "Basic"),
    "te": ("TE", "trailers"),
    "trailer": ("Trailer", "X-Foo"),
}


class TrackedFile(io.FileIO):
    def __init__(self, path, ident):
        super().__init__(path, "rb")
        self.ident = ident

    def close(self):
        if not self.closed:
            record("closes", f"close {self.ident}")
        super().close()


class TrackedBytesIO(io.BytesIO):
    def __init__(self, data, ident):
        super().__init__(data)
        self.ident = ident

    def close(self):
        if not self.closed:
            record("closes", f"close {self.ident}")
        super().close()


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    q = qs(environ)

    # -- environ -------------------------------------------------------------
    if path.startswith("/environ"):
        described = describe_environ(environ)
        if path == "/environ/mutate":
            # Changes that must not reach the next request's environ.
            environ["app.mark"] = "set by the previous request"
            environ["HTTP_HOST"] = "changed"
            environ["wsgi.url_scheme"] = "gopher"
            del environ["SCRIPT_NAME"]
            environ.clear()
        return as_json(start_response, described)

    if path == "/hello":
        return text(start_response, "hello world")

    # -- input ---------------------------------------------------------------
    if path == "/echo":
        body = read_all(environ["wsgi.input"])
        extra = [("X-Env-Content-Length", environ.get("CONTENT_LENGTH", "<absent>") or "<empty>")]
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))] + extra)
        return [body]

    if path == "/noread":
        return text(start_response, "did not read the body")

    if path == "/input":
        parts = input_op(environ, q["op"], int(q.get("n", "0") or 0))
        return as_json(start_response, {"parts": parts, "content_length": environ.get("CONTENT_LENGTH")})

    if path == "/upload":
        inp = environ["wsgi.input"]
        size = int(q.get("n", "65536"))
        total = 0
        crc = 0
        max_read = 0
        while True:
            b = inp.read(size)
            if not b:
                break
            total += len(b)
            max_read = max(max_read, len(b))
            crc = zlib.crc32(b, crc)
        return as_json(start_response, {"total": total, "crc32": crc, "max_read": max_read})

    # -- start_response ------------------------------------------------------
    if path == "/status":
        status = q.get("s", "200 OK")
        body = q.get("body", "status body").encode()
        start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    if path == "/echo-header":
        # A value made per request next to constants: the server's header cache
        # (start_response.rs) must send each request's own value.
        value = q.get("v", "")
        if q.get("sub"):
            value = _Str(value)
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-Echo", value),
                                  ("Content-Length", "2")])
        return [b"ok"]

    if path == "/interleaved":
        # A repeated name with another field between its values.
        start_response("200 OK", [("Set-Cookie", "a=1"), ("X-Other", "x"), ("Set-Cookie", "b=2"),
                                  ("Content-Length", "2")])
        return [b"ok"]

    if path == "/bad-header":
        kind = q["kind"]
        headers = [("Content-Type", "text/plain")]
        status = "200 OK"
        if kind == "space-name":
            headers.append(("Bad Name", "x"))
        elif kind == "colon-name":
            headers.append(("X-Bad:", "x"))
        elif kind == "newline-value":
            headers.append(("X-Injected", "a\r\nSet-Cookie: evil=1"))
        elif kind == "lf-value":
            headers.append(("X-Injected", "a\nX-Evil: 1"))
        elif kind == "nonlatin-value":
            headers.append(("X-Snowman", "snow \u2603"))
        elif kind == "bytes-name":
            headers.append((b"X-Bytes", "x"))
        elif kind == "bytes-value":
            headers.append(("X-Bytes", b"x"))
        elif kind == "bytes-status":
            status = b"200 OK"
        elif kind == "int-status":
            status = 200
        elif kind in HOP_BY_HOP:
            headers.append(HOP_BY_HOP[kind])
        else:
            raise ValueError(kind)
        start_response(status, headers)
        return [b"this body must not be sent with a 200"]

    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])
        write(b"hello ")
        write(b"world")
        return [b"!"]

    if path == "/write-stream":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        for i in range(3):
            write(f"w{i};".encode())
        return []

    if path == "/exc-before":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
        try:
            raise ValueError("replaced before headers")
        except ValueError:
            start_response("503 Replaced Status", [("Content-Type", "text/plain"), ("X-Second", "2")],
                           sys.exc_info())
        return [b"replaced body"]

    if path == "/exc-after":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"first-chunk;"
            try:
                raise ValueError("after headers")
            except ValueError:
                try:
                    start_response("500 Too Late", [("Content-Type", "text/plain")], sys.exc_info())
                except BaseException as e:  # noqa: BLE001 - recorded for the test, then re-raised
                    record("exc_after", f"raised {type(e).__name__}: {e}")
                    raise
                record("exc_after", "did not raise")
            yield b"should-not-be-sent"
        return Closing("exc-after", gen())

    if path == "/start-twice":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            start_response("201 Created", [("Content-Type", "text/plain")])
        except BaseException as e:  # noqa: BLE001
            record("start_twice", f"raised {type(e).__name__}")
            raise
        record("start_twice", "did not raise")
        return [b"second start_response accepted"]

    # -- response ------------------------------------------------------------
    if path == "/list":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"a", b"", b"bc", b"def"]

    if path == "/custom-iterable":
        class OnlyIter:
            def __iter__(self):
                return iter([b"only", b"-", b"iter"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return OnlyIter()

    if path == "/stream":
        flag = q["flag"]

        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b"chunk0;"
            ok = wait_flag(flag)
            yield b"chunk1;" if ok else b"flag-timeout;"
            yield b"chunk2;"
        return gen()

    if path == "/late-first":
        flag = q["flag"]

        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            yield b""
            wait_flag(flag)
            yield b"finally"
        return gen()

    if path == "/empty-then-raise":
        def gen():
            start_response("200 OK", [("Content-Type", "text/plain"), ("X-Early", "1")])
            yield b""
            yield b""
            raise RuntimeError("raised before the first non-empty chunk")
        return Closing("empty-then-raise", gen())

    if path == "/str-body":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return ["a str, not bytes"]

    if path == "/closing":
        ident = q["id"]
        mode = q.get("mode", "normal")
        if mode == "normal":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return Closing(ident, [b"one;", b"two;"])
        if mode == "raise-first":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return Closing(ident, [b"one;", b"two;"], fail_at=0)
        if mode == "raise-later":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return Closing(ident, [b"one;", b"two;", b"three;"], fail_at=2)
        if mode == "endless":
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            return Closing(ident, endless(), delay=0.005)
        if mode == "truncate":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
            return Closing(ident, [b"12345", b"67890"])
        raise ValueError(mode)

    if path == "/length":
        declared = int(q["declared"])
        actual = int(q["actual"])
        body = b"x" * actual
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(declared))])
        half = actual // 2
        return [body[:half], body[half:]]

    if path == "/nobody-status":
        status = q["s"]
        # No Content-Type: a 204/304 carries no content (wsgiref.validate checks this).
        start_response(status, [("X-Bodiless", "1")])
        return [b"LEAKED-BODY"]

    if path == "/chunks":
        n = int(q.get("n", "3"))

        def gen():
            start_response("200 OK", [("Content-Type", "text/plain")])
            for i in range(n):
                yield f"part{i};".encode()
        return gen()

    if path == "/slowgen":
        chunks = int(q.get("chunks", "1600"))
        size = int(q.get("size", "65536"))
        name = q.get("name", "slowgen")
        block = b"s" * size

        def gen():
            start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                      ("Content-Length", str(chunks * size))])
            for i in range(chunks):
                with open(os.path.join(STATE, name), "w") as f:
                    f.write(str(i + 1))
                yield block
        return gen()

    # -- files ---------------------------------------------------------------
    if path == "/file":
        kind = q.get("kind", "real")
        ident = q.get("id", "file")
        blksize = int(q.get("blksize", "8192"))
        if kind == "real":
            f = TrackedFile(q["path"], ident)
        else:
            with open(q["path"], "rb") as src:
                f = TrackedBytesIO(src.read(), ident)
        headers = [("Content-Type", "application/octet-stream")]
        if "declared" in q:
            headers.append(("Content-Length", q["declared"]))
        start_response("200 OK", headers)
        return environ["wsgi.file_wrapper"](f, blksize)

    if path == "/file-wrapper-iter":
        src = TrackedBytesIO(b"abcdefghij", "fw-iter")
        w = environ["wsgi.file_wrapper"](src, 4)
        blocks = [b.decode() for b in w]
        has_close = hasattr(w, "close")
        if has_close:
            w.close()
        return as_json(start_response, {"blocks": blocks, "has_close": has_close, "src_closed": src.closed})

    # -- errors --------------------------------------------------------------
    if path == "/raise":
        raise RuntimeError("app exploded " + q.get("marker", ""))

    if path == "/errors":
        marker = q.get("marker", "")
        err = environ["wsgi.errors"]
        err.write(f"wsgi-errors-write {marker}\n")
        err.writelines([f"wsgi-errors-writelines {marker}\n"])
        err.flush()
        return text(start_response, "logged")

    # -- threads and signals -------------------------------------------------
    if path == "/sleep":
        global _active, _active_max
        with _lock:
            _active += 1
            _active_max = max(_active_max, _active)
        try:
            time.sleep(float(q.get("s", "1")))
        finally:
            with _lock:
                _active -= 1
        return as_json(start_response, {"active_max": _active_max, "thread": threading.get_ident()})

    if path == "/spin":
        # Pure-Python loop: holds the GIL except at the interpreter's switch points.
        record("spin", "started")
        end = time.monotonic() + float(q.get("s", "3"))
        x = 0
        while time.monotonic() < end:
            x += 1
        return text(start_response, f"spun {x}")

    if path == "/swallow":
        # Swallows KeyboardInterrupt and everything else: Python must never see the
        # server's SIGINT/SIGTERM, or an app like this keeps the server alive.
        record("swallow", "started")
        end = time.monotonic() + float(q.get("s", "20"))
        while time.monotonic() < end:
            try:
                time.sleep(0.05)
            except BaseException:  # noqa: BLE001
                record("swallow", "swallowed an exception")
        return text(start_response, "swallowed")

    return text(start_response, "not found: " + path, status="404 Not Found")
