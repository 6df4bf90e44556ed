"""A plain WSGI app checked by ``wsgiref.validate`` on every request.

``fw_wsgi_validate:app`` is wrapped in the standard library's validator, which raises
``AssertionError`` into the server whenever the server (or the app) breaks PEP 3333, and
here every ``WSGIWarning`` is an error too. So a 200 from each route, and no traceback in
the server's log, means the server's side of the contract held. ``fw_wsgi_validate:plain``
is the same app unwrapped (it lets the server see ``wsgi.file_wrapper`` objects).

Routes: GET /hello; POST /read, /readline, /readline-sized, /readlines, /iter (the body
read each way, answered with its size and sha256); GET /write (the write() callable);
GET /file (wsgi.file_wrapper over the file named by $FW_VALIDATE_FILE); GET /errors
(a line to wsgi.errors); GET /exc-info (start_response again with exc_info); GET
/environ/... (the CGI variables as JSON).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.validate import WSGIWarning, validator

warnings.simplefilter("error", WSGIWarning)

StartResponse = Callable[..., Callable[[bytes], object]]
Environ = dict[str, Any]

BODY_ROUTES = ("/read", "/readline", "/readline-sized", "/readlines", "/iter")

CGI_KEYS = (
    "REQUEST_METHOD",
    "SCRIPT_NAME",
    "PATH_INFO",
    "QUERY_STRING",
    "CONTENT_TYPE",
    "CONTENT_LENGTH",
    "SERVER_NAME",
    "SERVER_PORT",
    "SERVER_PROTOCOL",
    "REMOTE_ADDR",
    "HTTP_HOST",
    "HTTP_X_ECHO",
)


def _text(start_response: StartResponse, body: bytes, status: str = "200 OK") -> list[bytes]:
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _digest(start_response: StartResponse, chunks: Iterable[bytes], **extra: int) -> list[bytes]:
    h = hashlib.sha256()
    size = 0
    for chunk in chunks:
        h.update(chunk)
        size += len(chunk)
    body = json.dumps({"size": size, "sha256": h.hexdigest(), **extra}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


def _read_chunks(stream: Any, length: str) -> Iterable[bytes]:
    """Read with read(n): up to CONTENT_LENGTH when there is one, else to end of input."""
    remaining = int(length) if length else -1
    while remaining:
        chunk = stream.read(8192 if remaining < 0 else min(8192, remaining))
        if not chunk:
            return
        remaining -= len(chunk) if remaining > 0 else 0
        yield chunk


def _readline_chunks(stream: Any, size: int | None) -> Iterable[bytes]:
    while True:
        line = stream.readline() if size is None else stream.readline(size)
        if not line:
            return
        yield line


def _body(environ: Environ, start_response: StartResponse, how: str) -> list[bytes]:
    stream = environ["wsgi.input"]
    if how == "read":
        return _digest(start_response, _read_chunks(stream, environ.get("CONTENT_LENGTH", "")))
    if how in ("readline", "readline-sized"):
        lines = list(_readline_chunks(stream, None if how == "readline" else 7))
        return _digest(start_response, lines, lines=len(lines))
    if how == "readlines":
        lines = stream.readlines()
        return _digest(start_response, lines, lines=len(lines))
    lines = list(stream)  # "iter"
    return _digest(start_response, lines, lines=len(lines))


def _write(start_response: StartResponse) -> list[bytes]:
    write = start_response("200 OK", [("Content-Type", "text/plain")])
    write(b"written-1 ")
    write(b"written-2 ")
    return [b"returned"]


def _file(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    path = os.environ["FW_VALIDATE_FILE"]
    size = os.path.getsize(path)
    start_response(
        "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))]
    )
    return environ["wsgi.file_wrapper"](open(path, "rb"), 65536)  # closed by its close()


def _exc_info(start_response: StartResponse) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    try:
        raise ValueError("the app changed its mind before sending a byte")
    except ValueError:
        body = b"recovered"
        start_response(
            "503 Service Unavailable",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
            sys.exc_info(),
        )
    return [body]


def plain(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    method = environ["REQUEST_METHOD"]
    path = environ.get("PATH_INFO", "")
    if path == "/hello" and method in ("GET", "HEAD"):
        return _text(start_response, b"hello from a validated app\n")
    if method == "POST" and path in BODY_ROUTES:
        return _body(environ, start_response, path[1:])
    if path == "/write":
        return _write(start_response)
    if path == "/file":
        return _file(environ, start_response)
    if path == "/errors":
        errors = environ["wsgi.errors"]
        errors.write("fw-validate: a line written to wsgi.errors\n")
        errors.flush()
        return _text(start_response, b"logged\n")
    if path == "/exc-info":
        return _exc_info(start_response)
    if path.startswith("/environ"):
        seen = {key: environ[key] for key in CGI_KEYS if key in environ}
        seen["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
        seen["wsgi.multithread"] = environ["wsgi.multithread"]
        seen["wsgi.multiprocess"] = environ["wsgi.multiprocess"]
        body = json.dumps(seen).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    return _text(start_response, b"not found\n", "404 Not Found")


app = validator(plain)
