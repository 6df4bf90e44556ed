"""The ASGI 3 gateway: one task per request, talking to the protocol's :class:`Exchange`.

Per request this builds the ``http`` scope, starts ``app(scope, receive, send)`` as a
task and translates messages both ways:

* ``receive()`` yields ``http.request`` messages with the body as it arrives. Once the
  body is over, it waits until the client disconnects or the response is complete and
  then yields ``http.disconnect`` (at once if the client has already gone).
* ``send()`` turns ``http.response.start`` / ``http.response.body`` into
  :meth:`Exchange.start_response` / :meth:`~Exchange.write` / :meth:`~Exchange.finish`,
  waiting for the client whenever the transport says writing is paused. Once the
  client has disconnected, ``send()`` raises :class:`~bastion.gateway.errors.ClientGone`,
  an ``OSError`` (ASGI 2.4), so a stream or an endless server-sent-events loop ends
  at its next message instead of running on for nobody; an exception that escapes the
  app because of it is not logged as an error. ``http.response.pathsend`` sends a file
  by path, zero-copy.
* The HTTP trailers extension: after ``http.response.start`` with ``trailers: True``
  and the last ``http.response.body``, the app sends ``http.response.trailers``
  messages (``headers``, ``more_trailers``); the last one ends the response, its fields
  in the last chunk. They are written only where they can be: a chunked response (no
  ``Content-Length``) to an HTTP/1.1 client that sent ``TE: trailers``. Otherwise the
  response ends with its body and the trailers are dropped, as are fields that must not
  be trailers (framing, routing, authentication, caching, ``Content-Type``...).
* Messages that break the protocol (body before start, a second start, an unknown type,
  wrong value types, header bytes that must not reach the wire) raise ``RuntimeError``
  inside the app's ``send``; if the app then ends without a complete response the client
  gets a 500 (or a dropped connection if the response had begun).

An exception escaping the app is logged once with a request id and answered with 500.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Final

from bastion.config.schema import Config
from bastion.gateway.asgi_websocket import WebSocketServer
from bastion.gateway.errors import ClientGone
from bastion.gateway.failure import ERROR_LOG, describe, fail_request, request_id
from bastion.gateway.lifespan import ASGIApp, Lifespan, Message
from bastion.protocol.fields import (
    NOT_TRAILERS,
    accepts_trailers,
    check_header_name,
    check_header_value,
)
from bastion.protocol.types import ClientDisconnected, Exchange, InvalidResponse
from bastion.protocol.ws_handshake import is_websocket_request
from bastion.tasks import WorkerTasks

__all__ = ["ASGIApp", "ASGIGateway"]

# response states
_IDLE: Final = 0
_STARTED: Final = 1
_DONE: Final = 2
_TRAILERS: Final = 3  # the body is over: waiting for the app's http.response.trailers

_TASK_GRACE: Final = 2.0  # default wait for app tasks at shutdown, after connections have drained

_PATHSEND: Final[dict[str, Any]] = {}  # the (empty) settings of the pathsend extension
_TRAILER_EXT: Final[dict[str, Any]] = {}  # and of the trailers extension


class ASGIGateway:
    """Serves an ASGI 3 application. ``handler`` is what the protocol calls per request."""

    __slots__ = (
        "_debug",
        "_grace",
        "_lifespan_mode",
        "_root_bytes",
        "_root_path",
        "app",
        "lifespan",
        "state",
        "tasks",
        "websocket",
    )

    interface: Final = "asgi"

    def __init__(self, app: ASGIApp, config: Config, tasks: WorkerTasks | None = None) -> None:
        self.app = app
        # lifespan state (scope["state"]), set after a lifespan start-up the app supports
        self.state: dict[str, Any] | None = None
        self._root_path = config.app.root_path.rstrip("/")
        self._root_bytes = self._root_path.encode("utf-8")
        self._debug = config.server.debug
        self._grace = min(config.workers.graceful_timeout, _TASK_GRACE)
        #: where request tasks run (the worker's, shared with the rest of the site)
        self.tasks = tasks if tasks is not None else WorkerTasks()
        self._lifespan_mode = config.app.lifespan
        self.lifespan: Lifespan | None = None
        #: serves requests that switch to WebSocket (gateway/asgi_websocket.py)
        self.websocket = WebSocketServer(config)

    async def startup(self) -> None:
        """Run the app's lifespan start-up (raises LifespanFailure if it fails)."""
        if self._lifespan_mode == "off":
            return
        state: dict[str, Any] = {}
        self.lifespan = Lifespan(self.app, self._lifespan_mode, state)
        await self.lifespan.startup()
        if self.lifespan.supported:
            self.state = state

    async def shutdown(self, grace: float | None = None) -> None:
        """Wait for (then cancel) app tasks still running; run the lifespan shut-down.

        ``grace`` bounds the wait for app tasks; by default the smaller of
        ``workers.graceful_timeout`` and 2 s, so the lifespan shut-down still fits in the
        time the supervisor allows after draining connections.
        """
        await self.finish_requests(self._grace if grace is None else grace)
        if self.lifespan is not None:
            await self.lifespan.shutdown()

    def handler(self, exchange: Exchange) -> None:
        """Start the app for one request (the protocol's :data:`Handler`)."""
        head = exchange.head
        if exchange.can_upgrade and is_websocket_request(head):
            self.websocket.serve(exchange, self.app, self.tasks, self._root_path, self.state)
            return
        path = head.path
        raw_path = head.raw_path
        root = self._root_path
        if root and not (path == root or path.startswith(root + "/")):
            # the proxy in front stripped the prefix: ASGI's path includes root_path
            path = root + path
            raw_path = self._root_bytes + raw_path
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": head.http_version,
            "server": head.server,
            "client": head.client,
            "scheme": head.scheme,
            "method": head.method,
            "root_path": root,
            "path": path,
            "raw_path": raw_path,
            "query_string": head.query_string,
            "headers": head.headers,
            "extensions": {
                "http.response.pathsend": _PATHSEND,
                "http.response.trailers": _TRAILER_EXT,
            },
        }
        if head.tls is not None:
            scope["extensions"]["tls"] = head.tls.asgi()
        context = head.context
        if context is not None:
            scope["extensions"].update(context)
        if self.state is not None:
            scope["state"] = self.state.copy()
        cycle = _Cycle(exchange, self._debug)
        self.tasks.spawn(cycle.run(self.app, scope))

    async def finish_requests(self, grace: float) -> None:
        """Let app tasks still running end on their own for ``grace`` seconds, then
        cancel them.

        By the time the worker shuts the gateway down its connections are closed, but an
        app may still be at work after its response (Starlette's background tasks run
        there); like uvicorn, give them the graceful period before cancelling.
        """
        await self.tasks.finish(grace)


class _Cycle:
    """One request's ``receive`` and ``send``, and the task that runs the app."""

    __slots__ = ("body_done", "debug", "ex", "gone", "response", "trailers", "waiters")

    def __init__(self, exchange: Exchange, debug: bool) -> None:
        self.ex = exchange
        self.debug = debug
        self.response = _IDLE
        self.body_done = False
        self.gone = False  # send() or receive() has told the app the client is gone
        self.waiters: list[asyncio.Future[None]] | None = None
        #: the trailer fields so far, while the app sends them and they can be written
        #: (None: no trailers expected, or dropped)
        self.trailers: list[tuple[bytes, bytes]] | None = None

    async def run(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        try:
            await app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            if self.response != _DONE:
                self.ex.fail(None)
            raise
        except BaseException as exc:
            if self.gone and isinstance(exc, Exception) and _from_gone(exc):
                # the app stopped because send() told it the client left: not an error
                self.ex.fail(None)
                self.wake_waiters()
                return
            self.crashed(exc)
            if not isinstance(exc, Exception):
                raise
            return
        if self.response != _DONE:
            self.incomplete()

    def crashed(self, exc: BaseException) -> None:
        ex = self.ex
        if self.response == _DONE:
            ERROR_LOG.error(
                "exception in ASGI app after its response was sent (request %s, %s)",
                request_id(),
                describe(ex),
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        else:
            fail_request(ex, exc, "exception in ASGI app", self.debug)
        self.wake_waiters()

    def incomplete(self) -> None:
        ex = self.ex
        if ex.disconnected or self.gone:
            # the app stopped because it was told the client left: not an error
            ex.fail(None)
        elif self.response == _TRAILERS:
            # the body was complete; the trailers the app announced never came
            self.response = _DONE
            ex.finish(b"", self.trailers)
        elif self.response == _IDLE:
            fail_request(ex, None, "ASGI app returned without sending a response", self.debug)
        else:
            fail_request(ex, None, "ASGI app returned before its response was complete", False)
        self.wake_waiters()

    # -- receive ------------------------------------------------------------------------
    async def receive(self) -> Message:
        if not self.body_done:
            ex = self.ex
            if ex.body_complete:  # all of it is here: no need to wait
                self.body_done = True
                return {"type": "http.request", "body": ex.take_buffered_body(), "more_body": False}
            try:
                body, more = await ex.receive_body()
            except ClientDisconnected:
                self.body_done = True
                self.gone = True
                return {"type": "http.disconnect"}
            if not more:
                self.body_done = True
            return {"type": "http.request", "body": body, "more_body": more}
        if self.response != _DONE and not self.ex.disconnected:
            await self.wait_disconnect_or_done()
        if self.response != _DONE:
            self.gone = True  # the client left (or closed its side) before the response ended
        return {"type": "http.disconnect"}

    async def wait_disconnect_or_done(self) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        if self.waiters is None:
            self.waiters = []
        self.waiters.append(waiter)
        watcher = loop.create_task(self.ex.wait_disconnected())
        watcher.add_done_callback(lambda _: _resolve(waiter))
        try:
            await waiter
        finally:
            watcher.cancel()
            if waiter in self.waiters:
                self.waiters.remove(waiter)

    def wake_waiters(self) -> None:
        if self.waiters:
            for waiter in self.waiters:
                _resolve(waiter)
            self.waiters.clear()

    # -- send ---------------------------------------------------------------------------
    async def send(self, message: Message) -> None:
        ex = self.ex
        if ex.disconnected:
            # ASGI 2.4: send() on a closed connection raises an OSError, so the app
            # stops producing (Starlette's StreamingResponse relies on it)
            self.gone = True
            raise ClientGone("the client has disconnected")
        try:
            kind = message["type"]
        except (TypeError, KeyError):
            raise RuntimeError(f"ASGI message must be a dict with a 'type': {message!r}") from None
        if kind == "http.response.body":
            if self.response != _STARTED:
                raise RuntimeError(self.out_of_order(kind))
            body = message.get("body", b"")
            try:
                if message.get("more_body", False):
                    if body:
                        ex.write(body)
                    if ex.writing_paused:
                        await ex.drain()
                    return
                if self.trailers is not None:
                    if body:
                        ex.write(body)
                    self.response = _TRAILERS
                    return
                ex.finish(body)
            except (TypeError, ValueError, InvalidResponse) as exc:
                raise RuntimeError(f"invalid {kind} message: {exc}") from None
            self.response = _DONE
            if self.waiters:
                self.wake_waiters()
        elif kind == "http.response.start":
            if self.response != _IDLE:
                raise RuntimeError(self.out_of_order(kind))
            status = message.get("status")
            if type(status) is not int:
                raise RuntimeError(f"http.response.start status must be an int, got {status!r}")
            headers = message.get("headers", ())
            try:
                ex.start_response(status, headers if type(headers) is list else list(headers))
            except (TypeError, ValueError, InvalidResponse) as exc:
                raise RuntimeError(f"invalid http.response.start message: {exc}") from None
            self.response = _STARTED
            if (
                message.get("trailers") is True
                and ex.head.http_version == "1.1"
                and accepts_trailers(ex.head.headers)
            ):
                self.trailers = []
        elif kind == "http.response.pathsend":
            if self.response != _STARTED:
                raise RuntimeError(self.out_of_order(kind))
            await self.pathsend(message.get("path"))
        elif kind == "http.response.trailers":
            self.send_trailers(message)
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for an http request")

    def send_trailers(self, message: Message) -> None:
        """An ``http.response.trailers`` message: kept until the last, which ends the
        response. Ignored when the trailers are dropped (the response is over)."""
        if self.response != _TRAILERS:
            if self.response == _DONE:
                return  # dropped: the response ended with its body
            raise RuntimeError(self.out_of_order("http.response.trailers"))
        fields = self.trailers
        assert fields is not None
        try:
            for name, value in message.get("headers", ()):
                lname = check_header_name(name)
                check_header_value(name, value)
                if lname not in NOT_TRAILERS:
                    fields.append((lname, value))
        except (TypeError, ValueError, InvalidResponse) as exc:
            raise RuntimeError(f"invalid http.response.trailers message: {exc}") from None
        if message.get("more_trailers", False):
            return
        self.response = _DONE
        self.ex.finish(b"", fields)
        if self.waiters:
            self.wake_waiters()

    async def pathsend(self, path: object) -> None:
        if not isinstance(path, str) or not os.path.isabs(path):
            raise RuntimeError(f"http.response.pathsend needs an absolute path, got {path!r}")
        ex = self.ex
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        try:
            size = os.fstat(fd).st_size
            await ex.sendfile(fd, 0, size)
        finally:
            os.close(fd)
        if not ex.disconnected:
            ex.finish()
        self.response = _DONE
        self.wake_waiters()

    def out_of_order(self, kind: str) -> str:
        where = {
            _IDLE: "before http.response.start",
            _STARTED: "after http.response.start",
            _DONE: "after the response was complete",
            _TRAILERS: "after the last http.response.body (trailers expected)",
        }[self.response]
        return f"unexpected ASGI message {kind!r} {where}"


def _from_gone(exc: BaseException) -> bool:
    """Whether ``exc`` is, or was raised while handling, the :class:`ClientGone` that
    ``send()`` raised (Starlette turns it into its own ``ClientDisconnect``)."""
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 16:
        if isinstance(cur, ClientGone):
            return True
        if isinstance(cur, BaseExceptionGroup):
            return all(_from_gone(sub) for sub in cur.exceptions)
        cur = cur.__cause__ if cur.__cause__ is not None else cur.__context__
        seen += 1
    return False


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
