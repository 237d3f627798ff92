"""pre_request / post_request as public hook files write them, recording what they
see as JSON lines in $HOOKS_LOG; pre_request refuses /refuse (a raising hook)."""

import json
import os


def _record(**fields):
    fields["in_pid"] = os.getpid()
    with open(os.environ["HOOKS_LOG"], "a") as f:
        f.write(json.dumps(fields) + "\n")


def pre_request(worker, req):
    worker.log.info("REQUEST - %s (%s)", req.method, req.path)
    if req.path == "/refuse":
        raise PermissionError("pre_request refuses /refuse")
    req.seen_by_pre = True  # gunicorn's req is a plain object hooks may annotate
    _record(hook="pre_request", worker_pid=worker.pid, method=req.method, path=req.path,
            uri=req.uri, query=req.query, version=list(req.version),
            headers=[list(h) for h in req.headers])


def post_request(worker, req, environ, resp):
    _record(hook="post_request", worker_pid=worker.pid, method=req.method, path=req.path,
            uri=req.uri, seen_by_pre=getattr(req, "seen_by_pre", False), status=resp.status,
            status_code=resp.status_code, sent=resp.sent,
            path_info=environ.get("PATH_INFO"), x_test=environ.get("HTTP_X_TEST"),
            resp_headers=[list(h) for h in resp.headers])
