"""Answers /status/CODE with that status (for per-code metrics)."""


def application(environ, start_response):
    parts = environ.get("PATH_INFO", "/").strip("/").split("/")
    code = int(parts[1]) if len(parts) == 2 and parts[0] == "status" and parts[1].isdigit() else 200
    reason = {200: "OK", 201: "Created", 404: "Not Found", 500: "Internal Server Error"}.get(code, "X")
    body = str(code).encode()
    start_response(f"{code} {reason}", [("Content-Type", "text/plain"),
                                        ("Content-Length", str(len(body)))])
    return [body]
