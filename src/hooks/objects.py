"""The objects gunicorn's server hooks receive, as rwsgi builds them.

Hook files written for gunicorn read a handful of attributes of the `server`
(gunicorn's Arbiter), `worker`, `req` and `resp` objects; these classes carry the
ones public hook files use, with gunicorn's meanings. Log calls go to rwsgi's own
log through the `gunicorn.error` logger, as gunicorn's do.

Loaded by rwsgi (src/hooks/objects.rs) as the module `rwsgi._hooks`; `_emit` is the
Rust function that writes one log line.
"""

import logging
import os
import time

_emit = None  # set by rwsgi: _emit(levelno: int, message: str)


class _Handler(logging.Handler):
    def emit(self, record):
        try:
            _emit(record.levelno, self.format(record))
        except Exception:  # a log call must never break a hook
            self.handleError(record)


def _logger(name):
    log = logging.getLogger(name)
    if not any(isinstance(h, _Handler) for h in log.handlers):
        handler = _Handler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.propagate = False
    if log.level == logging.NOTSET:
        log.setLevel(logging.DEBUG)
    return log


class Logger:
    """`server.log` / `worker.log`: gunicorn's glogging.Logger surface."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.error_log = _logger("gunicorn.error")
        self.access_log = logging.getLogger("gunicorn.access")

    def critical(self, msg, *args, **kwargs):
        self.error_log.critical(msg, *args, **kwargs)

    def error(self, msg, *args, **kwargs):
        self.error_log.error(msg, *args, **kwargs)

    def warning(self, msg, *args, **kwargs):
        self.error_log.warning(msg, *args, **kwargs)

    warn = warning

    def info(self, msg, *args, **kwargs):
        self.error_log.info(msg, *args, **kwargs)

    def debug(self, msg, *args, **kwargs):
        self.error_log.debug(msg, *args, **kwargs)

    def exception(self, msg, *args, **kwargs):
        self.error_log.exception(msg, *args, **kwargs)

    def log(self, lvl, msg, *args, **kwargs):
        if isinstance(lvl, str):
            lvl = logging.getLevelName(lvl.upper())
        self.error_log.log(lvl, msg, *args, **kwargs)

    def reopen_files(self):
        pass

    def close_on_exec(self):
        pass


class Setting:
    """One entry of `cfg.settings`, as gunicorn's `Setting` exposes its value."""

    def __init__(self, name, value):
        self.name = name
        self.value = value

    def get(self):
        return self.value


class Config:
    """`server.cfg` / `worker.cfg`: every setting as an attribute (gunicorn's names)."""

    def __init__(self, values):
        object.__setattr__(self, "_values", dict(values))

    def __getattr__(self, name):
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(f"No configuration setting for: {name}") from None

    def __setattr__(self, name, value):
        self._values[name] = value

    def set(self, name, value):
        self._values[name] = value

    @property
    def settings(self):
        return {k: Setting(k, v) for k, v in self._values.items()}

    @property
    def address(self):
        return list(self._values.get("bind", []))

    @property
    def worker_class_str(self):
        return self._values.get("worker_class", "gthread")

    @property
    def env(self):
        return dict(self._values.get("raw_env_dict", {}))


class Server:
    """`server`: the master, with the attributes of gunicorn's Arbiter hooks read."""

    def __init__(self, cfg, pid, num_workers):
        self.pid = pid
        self._num_workers = num_workers
        self.WORKERS = {}
        self.LISTENERS = []
        self.app = None
        self.master_name = "Master"
        self._reloaded(cfg)

    def _reloaded(self, cfg):
        """What comes from the configuration: at start, and again on HUP when it
        was read again (what gunicorn's Arbiter.setup takes from it)."""
        self.cfg = cfg
        self.log = Logger(cfg)
        self.proc_name = cfg._values.get("proc_name") or "rwsgi"
        self.timeout = cfg._values.get("timeout")

    @property
    def num_workers(self):
        return self._num_workers

    @num_workers.setter
    def num_workers(self, value):
        self._num_workers = value

    def __repr__(self):
        return f"<rwsgi.Server pid={self.pid}>"


class Worker:
    """`worker`: gunicorn's `age` is the spawn counter, which rwsgi's worker id is."""

    def __init__(self, cfg, log, age, pid, ppid, timeout):
        self.cfg = cfg
        self.log = log
        self.age = age
        self.pid = pid
        self.ppid = ppid
        self.timeout = timeout
        self.alive = True
        self.booted = False
        self.aborted = False
        self.nr = 0
        self.max_requests = cfg._values.get("max_requests") or 0
        self.wsgi = None
        self.app = None
        self.tmp = None

    def __str__(self):
        return f"<Worker {self.pid}>"

    __repr__ = __str__


def worker_in_worker(server, age):
    """The `worker` object of this very process (worker side)."""
    return Worker(
        server.cfg, server.log, age, os.getpid(), os.getppid(), server.timeout
    )


def thread_stack(ident):
    """The Python stack of thread `ident`, or of every other thread when it has none
    (then each is headed by its name)."""
    import sys
    import threading
    import traceback

    frames = sys._current_frames()
    if ident in frames:
        return "".join(traceback.format_stack(frames[ident]))
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for tid, frame in frames.items():
        if tid == threading.get_ident():
            continue
        out.append(f"Thread {names.get(tid, tid)}:\n")
        out.extend(traceback.format_stack(frame))
    return "".join(out)


class Request:
    """`req` of pre_request/post_request: gunicorn's http.Request attributes (header
    names upper-cased, in order, repeats kept, as gunicorn stores them)."""

    def __init__(self, method, uri, path, query, version, headers, peer_addr):
        self.method = method
        self.uri = uri
        self.path = path
        self.query = query
        self.fragment = ""
        self.version = version
        self.headers = headers
        self.trailers = []
        self.scheme = "http"
        self.peer_addr = peer_addr
        self.remote_addr = peer_addr
        self.body = None
        self.start_time = time.time()

    def __repr__(self):
        return f"<rwsgi.Request {self.method} {self.uri}>"


class Response:
    """`resp` of post_request: status, headers and bytes sent, as gunicorn's."""

    def __init__(self, status, headers, sent):
        self.status = status
        try:
            self.status_code = int(status.split(None, 1)[0])
        except (ValueError, IndexError, AttributeError):
            self.status_code = None
        self.headers = headers
        self.sent = sent
        self.response_length = sent
        self.chunked = False
