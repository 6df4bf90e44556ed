"""A WSGI app for the process tests: answers "wsgi <pid>"."""

import os


def app(environ, start_response):
    body = f"wsgi {os.getpid()}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
