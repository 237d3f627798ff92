"""A minimal app under the default callable name `application`."""


def application(environ, start_response):
    body = b"plain app"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
