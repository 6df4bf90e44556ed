#!/usr/bin/env python3
"""The ceiling: the least a Python HTTP/1.1 server on uvloop + httptools can do per request.

A reference for bench/run.py, not a server to use: no limits, no timeouts, no error pages
beyond a 400 for bytes that are not HTTP, one process. Per request it parses the head with
httptools, makes one app call and writes one response:

* ``--interface asgi``: ``await app(scope, receive, send)`` with the scope's required
  keys, its coroutine started at once from the parser's callback and given a task only
  if it suspends (``lifespan`` is not run);
* ``--interface wsgi``: ``app(environ, start_response)`` called inline on the event loop,
  with PEP 3333's required environ keys.

Responses carry a cached ``Date`` and are framed with the app's ``Content-Length``, or one
computed when the app sends its whole body at once, else chunked. Keep-alive follows
httptools' ``should_keep_alive()``; pipelined requests are answered in order, one at a
time.

    .venv/bin/python bench/ceiling.py --interface asgi --port 8000 raw_asgi:hello
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import io
import socket
import sys
import time
from collections import deque
from email.utils import formatdate
from typing import Any
from urllib.parse import unquote_to_bytes

import httptools
import uvloop

_STATUS = {200: b"OK", 201: b"Created", 204: b"No Content", 304: b"Not Modified"}
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_date = b""


def _tick_date() -> None:
    global _date
    _date = b"date: " + formatdate(time.time(), usegmt=True).encode() + b"\r\n"
    asyncio.get_running_loop().call_later(1.0, _tick_date)


def _head(status: int, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> list[bytes]:
    """The status line and header lines (without the final blank line)."""
    reason = _STATUS.get(status, b"Unknown")
    out = [b"HTTP/1.1 %d %s\r\n" % (status, reason), _date]
    out.extend(b"%s: %s\r\n" % (name, value) for name, value in headers)
    if not keep_alive:
        out.append(b"connection: close\r\n")
    return out


class Request:
    __slots__ = ("body", "headers", "keep_alive", "method", "url", "version")

    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []


class Connection(asyncio.Protocol):
    def __init__(self, app: Any, interface: str, server: tuple[str, int]) -> None:
        self.app = app
        self.asgi = interface == "asgi"
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: Any = None
        self.client: tuple[str, int] | None = None
        self.request = Request()
        self.pending: deque[Request] = deque()  # parsed, waiting for the one in flight
        self.busy = False
        self.closed = False
        self.environ: dict[str, Any] = {}

    # -- asyncio --------------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = (peer[0], peer[1]) if peer else None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self.asgi:  # what every request's environ starts from
            self.environ = {
                "SCRIPT_NAME": "",
                "SERVER_NAME": self.server[0],
                "SERVER_PORT": str(self.server[1]),
                "wsgi.version": (1, 0),
                "wsgi.url_scheme": "http",
                "wsgi.errors": sys.stderr,
                "wsgi.multithread": False,
                "wsgi.multiprocess": False,
                "wsgi.run_once": False,
            }
            if self.client:
                self.environ["REMOTE_ADDR"] = self.client[0]

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._close_after(_BAD_REQUEST)
        except httptools.HttpParserError:
            self._close_after(_BAD_REQUEST)

    def _close_after(self, data: bytes) -> None:
        self.transport.write(data)
        self.transport.close()
        self.closed = True

    # -- httptools --------------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.request.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.request.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        self.request.body.append(body)

    def on_message_complete(self) -> None:
        req = self.request
        req.method = self.parser.get_method()
        req.version = self.parser.get_http_version()
        req.keep_alive = self.parser.should_keep_alive()
        self.request = Request()
        if self.busy:
            self.pending.append(req)
        else:
            self._start(req)

    # -- one request ------------------------------------------------------------------------

    def _start(self, req: Request) -> None:
        self.busy = True
        if self.asgi:
            # Start the app's coroutine at once; only one that suspends gets a task. No
            # ASGI server can do this on Python 3.11 for every app (anyio wants a current
            # task); it is the least a request can cost, which is what a ceiling is.
            coro = self._asgi(req)
            try:
                yielded = coro.send(None)
            except StopIteration:
                return
            asyncio.get_running_loop().create_task(_carry_on(coro, yielded))
        else:
            self._wsgi(req)

    def _done(self, keep_alive: bool) -> None:
        self.busy = False
        if not keep_alive:
            self.transport.close()
            self.closed = True
        elif self.pending:
            self._start(self.pending.popleft())

    async def _asgi(self, req: Request) -> None:
        url = httptools.parse_url(req.url)
        path = url.path
        text_path = unquote_to_bytes(path) if b"%" in path else path
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": req.version,
            "method": req.method.decode("ascii"),
            "scheme": "http",
            "path": text_path.decode("utf-8", "replace"),
            "raw_path": path,
            "query_string": url.query or b"",
            "root_path": "",
            "headers": req.headers,
            "client": self.client,
            "server": self.server,
        }
        body = b"".join(req.body)
        received = False
        state: dict[str, Any] = {"chunked": False, "started": False}
        head_only = req.method == b"HEAD"

        async def receive() -> dict[str, Any]:
            nonlocal received
            if not received:
                received = True
                return {"type": "http.request", "body": body, "more_body": False}
            await asyncio.Future()  # never: the connection is not watched
            return {}

        async def send(message: dict[str, Any]) -> None:
            if self.closed:
                raise OSError("connection closed")
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["headers"] = list(message.get("headers", ()))
                return
            data = message.get("body", b"")
            more = message.get("more_body", False)
            if head_only and state["started"]:
                return
            if not state["started"]:
                state["started"] = True
                headers = state["headers"]
                if not any(name.lower() == b"content-length" for name, _ in headers):
                    if more and req.version == "1.0":
                        req.keep_alive = False  # the body ends where the connection does
                    elif more:
                        state["chunked"] = True
                        headers.append((b"transfer-encoding", b"chunked"))
                    else:
                        headers.append((b"content-length", b"%d" % len(data)))
                head = _head(state["status"], headers, req.keep_alive)
                head.append(b"\r\n")
                if head_only:
                    self.transport.write(b"".join(head))
                    return
                if not state["chunked"]:
                    head.append(data)
                    self.transport.write(b"".join(head))
                    return
                self.transport.write(b"".join(head))
            if state["chunked"]:
                chunk = b"%x\r\n%s\r\n" % (len(data), data) if data else b""
                self.transport.write(chunk if more else chunk + b"0\r\n\r\n")
            elif data:
                self.transport.write(data)

        try:
            await self.app(scope, receive, send)
        except Exception as exc:  # the ceiling has no error pages: drop the connection
            print(f"ceiling: app failed: {exc!r}", file=sys.stderr)
            self.transport.close()
            self.closed = True
            return
        if not self.closed:
            self._done(req.keep_alive)

    def _wsgi(self, req: Request) -> None:
        url = httptools.parse_url(req.url)
        path = url.path
        environ = self.environ.copy()
        environ["REQUEST_METHOD"] = req.method.decode("ascii")
        environ["PATH_INFO"] = (unquote_to_bytes(path) if b"%" in path else path).decode("latin-1")
        environ["QUERY_STRING"] = (url.query or b"").decode("latin-1")
        environ["SERVER_PROTOCOL"] = "HTTP/" + req.version
        environ["wsgi.input"] = io.BytesIO(b"".join(req.body))
        for name, value in req.headers:
            key = _environ_key(name)
            text = value.decode("latin-1")
            environ[key] = environ[key] + "," + text if key in environ else text
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
            started[:] = [status, headers]
            return None

        try:
            result = self.app(environ, start_response)
            try:
                data = b"".join(result)
            finally:
                if hasattr(result, "close"):
                    result.close()
        except Exception as exc:
            print(f"ceiling: app failed: {exc!r}", file=sys.stderr)
            self.transport.close()
            self.closed = True
            return
        status, headers = started
        head: list[str] = []
        head.extend(f"{name}: {value}\r\n" for name, value in headers)
        if not any(name.lower() == "content-length" for name, _ in headers):
            head.append(f"content-length: {len(data)}\r\n")
        if not req.keep_alive:
            head.append("connection: close\r\n")
        head.append("\r\n")
        body = b"" if req.method == b"HEAD" else data
        status_line = f"HTTP/1.1 {status}\r\n".encode("latin-1")
        self.transport.write(b"".join((status_line, _date, "".join(head).encode("latin-1"), body)))
        self._done(req.keep_alive)


async def _carry_on(coro: Any, yielded: Any) -> None:
    """Drive a coroutine that suspended on its first step (it awaits ``yielded``)."""
    while True:
        try:
            if yielded is None:
                await asyncio.sleep(0)
            else:
                await yielded
        except asyncio.CancelledError as exc:
            try:
                yielded = coro.throw(exc)
            except (StopIteration, asyncio.CancelledError):
                return
            continue
        except Exception:
            pass  # the coroutine reads the future's exception itself when resumed
        try:
            yielded = coro.send(None)
        except StopIteration:
            return


_ENVIRON_KEYS: dict[bytes, str] = {}  # header name -> environ key, for the usual names


def _environ_key(name: bytes) -> str:
    key = _ENVIRON_KEYS.get(name)
    if key is None:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        if len(_ENVIRON_KEYS) < 256:
            _ENVIRON_KEYS[name] = key
    return key


def load(target: str) -> Any:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


async def serve(app: Any, interface: str, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    _tick_date()
    server = await loop.create_server(
        lambda: Connection(app, interface, (host, port)), host, port, backlog=2048
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--interface", choices=("asgi", "wsgi"), required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("target", help="module:attribute of the app (the module on sys.path)")
    args = p.parse_args()
    sys.path.insert(0, ".")
    app = load(args.target)
    uvloop.run(serve(app, args.interface, args.host, args.port))


if __name__ == "__main__":
    main()
