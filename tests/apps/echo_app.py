"""The app of tests/own_vs_hyper.rs: answers with what it was given (method, target,
protocol, the body read, every HTTP_* key), so that both HTTP paths are compared on
what reaches the app as well as on the bytes sent back. The query picks the response's
shape: ?s=STATUS, ?shape=list|gen|empty|write|len|short, so the framing rules are
exercised (Content-Length, chunked, HEAD, 204/304). Standard library only."""


def application(environ, start_response):
    q = dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
    body = environ["wsgi.input"].read()
    seen = [environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", ""),
            environ["SERVER_PROTOCOL"], environ.get("CONTENT_LENGTH", "-"), environ.get("CONTENT_TYPE", "-"),
            repr(body)]
    seen += sorted(f"{k}={v!r}" for k, v in environ.items() if k.startswith("HTTP_"))
    out = "\n".join(seen).encode("latin-1", "replace")
    status = q.get("s", "200").replace("%20", " ")
    if " " not in status:
        status += " X"
    shape = q.get("shape", "list")
    headers = [("Content-Type", "text/plain")]
    if shape == "len":
        headers.append(("Content-Length", str(len(out))))
    elif shape == "short":
        headers.append(("Content-Length", str(len(out) + 5)))
    try:
        write = start_response(status, headers)
    except Exception as e:  # noqa: BLE001 - a bad ?s= is the app's own error
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [repr(e).encode()]
    if shape == "empty":
        return []
    if shape == "gen":
        return (out[i:i + 7] for i in range(0, len(out), 7))
    if shape == "write":
        write(out[:10])
        return [out[10:]]
    return [out]
