"""The ASGI ``websocket`` scope (spec 2.4), on :mod:`bastion.protocol.websocket`.

The ASGI gateway hands over every request that asks to switch to WebSocket and can
(:attr:`Exchange.can_upgrade`). The handshake is checked first: an invalid one is answered
400 (426 for a version other than 13) without calling the app. Then the app runs with a
``websocket`` scope:

* ``receive()`` gives ``websocket.connect`` first; after ``websocket.accept``, the
  messages (``websocket.receive`` with ``text`` or ``bytes``), and at the end
  ``websocket.disconnect`` with the close ``code`` and ``reason``;
* ``send()`` takes ``websocket.accept`` (``subprotocol``, ``headers``),
  ``websocket.send`` (``text`` or ``bytes``) and ``websocket.close`` (``code``,
  ``reason``). A close before accepting answers 403. ``websocket.http.response.start`` /
  ``.body`` before accepting answer with an HTTP response instead (the WebSocket Denial
  Response extension). Sending on a closed socket raises :class:`SessionClosed` (an
  ``OSError``), as spec 2.4 asks.

An app that raises before accepting gives a 500; after, the socket closes with 1011. An
app that returns without accepting gives a 500; after accepting, the socket closes with
1000.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bastion.config.schema import Config
from bastion.gateway.failure import ERROR_LOG, describe, fail_request, request_id
from bastion.gateway.lifespan import ASGIApp, Message
from bastion.protocol.types import Exchange, InvalidResponse
from bastion.protocol.websocket import (
    GOING_AWAY,
    INTERNAL_ERROR,
    NORMAL,
    SessionClosed,
    WebSocketSession,
    valid_close_code,
)
from bastion.protocol.ws_handshake import (
    Handshake,
    HandshakeError,
    WebSocketSettings,
    accept_headers,
    read_handshake,
)
from bastion.tasks import WorkerTasks

__all__ = ["WebSocketServer"]

_DENIAL: dict[str, Any] = {}  # the (empty) settings of the websocket.http.response extension

# states of one cycle
_CONNECTING = 0  # the app has not answered the handshake
_ACCEPTED = 1  # a session carries the connection
_DENYING = 2  # an HTTP response is on its way instead
_ANSWERED = 3  # the handshake was answered with HTTP (403, 500 or the app's denial)


class WebSocketServer:
    """Starts an ASGI app for each WebSocket handshake."""

    __slots__ = ("debug", "settings")

    def __init__(self, config: Config) -> None:
        self.settings = settings_from_config(config)
        self.debug = config.server.debug

    def serve(
        self,
        exchange: Exchange,
        app: ASGIApp,
        tasks: WorkerTasks,
        root_path: str,
        state: dict[str, Any] | None,
    ) -> None:
        head = exchange.head
        try:
            handshake = read_handshake(head, self.settings)
        except HandshakeError as exc:
            _refuse(exchange, exc.status, exc.reason)
            return
        path = head.path
        raw_path = head.raw_path
        if root_path and not (path == root_path or path.startswith(root_path + "/")):
            path = root_path + path
            raw_path = root_path.encode("utf-8") + raw_path
        scope: dict[str, Any] = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": head.http_version,
            "scheme": "wss" if head.scheme == "https" else "ws",
            "server": head.server,
            "client": head.client,
            "root_path": root_path,
            "path": path,
            "raw_path": raw_path,
            "query_string": head.query_string,
            "headers": head.headers,
            "subprotocols": handshake.subprotocols,
            "extensions": {"websocket.http.response": _DENIAL},
        }
        if head.tls is not None:
            scope["extensions"]["tls"] = head.tls.asgi()
        context = head.context
        if context is not None:
            scope["extensions"].update(context)
        if state is not None:
            scope["state"] = state.copy()
        cycle = _Cycle(exchange, handshake, self.settings, self.debug)
        tasks.spawn(cycle.run(app, scope))


def settings_from_config(config: Config) -> WebSocketSettings:
    """The sessions' limits and timers from ``[websocket]``."""
    ws = config.websocket
    return WebSocketSettings(
        max_message_size=ws.max_message_size,
        max_queue=ws.max_queue,
        ping_interval=ws.ping_interval,
        ping_timeout=ws.ping_timeout,
        close_timeout=ws.close_timeout,
        compression=ws.compression,
    )


def _refuse(exchange: Exchange, status: int, reason: str) -> None:
    body = reason.encode("utf-8") + b"\n"
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode("ascii")),
    ]
    if status == 426:
        headers.append((b"sec-websocket-version", b"13"))
        headers.append((b"upgrade", b"websocket"))
        headers.append((b"connection", b"Upgrade"))
    exchange.start_response(status, headers)
    exchange.finish(body)


class _Cycle:
    """One WebSocket's ``receive`` and ``send``, and the task that runs the app."""

    __slots__ = ("connected", "debug", "ex", "handshake", "session", "settings", "state")

    def __init__(
        self, exchange: Exchange, handshake: Handshake, settings: WebSocketSettings, debug: bool
    ) -> None:
        self.ex = exchange
        self.handshake = handshake
        self.settings = settings
        self.debug = debug
        self.state = _CONNECTING
        self.connected = False  # websocket.connect was received
        self.session: WebSocketSession | None = None

    async def run(self, app: ASGIApp, scope: dict[str, Any]) -> None:
        try:
            await app(scope, self.receive, self.send)
        except asyncio.CancelledError:
            self.cancelled()
            raise
        except BaseException as exc:
            self.crashed(exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.returned()

    def cancelled(self) -> None:
        session = self.session
        if session is not None:
            session.close(GOING_AWAY, "server shutting down")
        elif self.state != _ANSWERED:
            self.ex.fail(None)

    def crashed(self, exc: BaseException) -> None:
        state = self.state
        session = self.session
        if state == _CONNECTING:
            message = "exception in ASGI app before it accepted a WebSocket"
            fail_request(self.ex, exc, message, self.debug)
            self.state = _ANSWERED
            return
        if session is not None and isinstance(exc, SessionClosed):
            return  # the app sent on a closed socket and let the error out: nothing to tell
        ERROR_LOG.error(
            "exception in ASGI WebSocket app (request %s, %s)",
            request_id(),
            describe(self.ex),
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        if session is not None:
            session.close(INTERNAL_ERROR, "")
        elif state == _DENYING:
            self.ex.fail(None)

    def returned(self) -> None:
        state = self.state
        if state == _CONNECTING:
            message = "ASGI app returned without accepting the WebSocket"
            fail_request(self.ex, None, message, self.debug)
            self.state = _ANSWERED
        elif state == _DENYING:
            message = "ASGI app returned before its denial response was complete"
            fail_request(self.ex, None, message, False)
            self.state = _ANSWERED
        elif self.session is not None:
            self.session.close(NORMAL, "")

    # -- receive ------------------------------------------------------------------------
    async def receive(self) -> Message:
        session = self.session
        if session is None:
            if not self.connected:
                self.connected = True
                return {"type": "websocket.connect"}
            # the app waits before answering the handshake (or after denying it)
            if self.state != _ANSWERED:
                await self.ex.wait_disconnected()
            return {"type": "websocket.disconnect", "code": 1006, "reason": ""}
        message = await session.receive()
        if message is None:
            return {
                "type": "websocket.disconnect",
                "code": session.close_code,
                "reason": session.close_reason,
            }
        if type(message) is str:
            return {"type": "websocket.receive", "text": message}
        return {"type": "websocket.receive", "bytes": message}

    # -- send ---------------------------------------------------------------------------
    async def send(self, message: Message) -> None:
        try:
            kind = message["type"]
        except (TypeError, KeyError):
            raise RuntimeError(f"ASGI message must be a dict with a 'type': {message!r}") from None
        session = self.session
        if kind == "websocket.send":
            if session is None:
                raise RuntimeError(self.out_of_order(kind))
            text = message.get("text")
            data = message.get("bytes")
            if text is not None and data is None:
                if type(text) is not str:
                    raise RuntimeError(f"websocket.send text must be str, got {type(text)!r}")
                session.send(text)
            elif data is not None and text is None:
                if not isinstance(data, (bytes, bytearray, memoryview)):
                    raise RuntimeError(f"websocket.send bytes must be bytes, got {type(data)!r}")
                session.send(bytes(data) if type(data) is not bytes else data)
            else:
                raise RuntimeError("websocket.send needs exactly one of 'text' and 'bytes'")
            if session.writing_paused:
                await session.drain()
        elif kind == "websocket.accept":
            if self.state != _CONNECTING:
                raise RuntimeError(self.out_of_order(kind))
            self.accept(message)
        elif kind == "websocket.close":
            if session is not None:
                code = message.get("code", NORMAL)
                if code is None:
                    code = NORMAL
                reason = message.get("reason") or ""
                if type(code) is not int or not valid_close_code(code):
                    raise RuntimeError(f"websocket.close code {code!r} may not be sent")
                if type(reason) is not str or len(reason.encode("utf-8")) > 123:
                    raise RuntimeError("websocket.close reason must be text of at most 123 bytes")
                if not session.open:
                    raise SessionClosed("the WebSocket is closed")
                session.close(code, reason)
            elif self.state == _CONNECTING:
                # closed before accepting: the handshake fails with 403
                self.state = _ANSWERED
                if not self.ex.disconnected:
                    self.ex.start_response(403, [(b"content-length", b"0")])
                    self.ex.finish()
            else:
                raise RuntimeError(self.out_of_order(kind))
        elif kind == "websocket.http.response.start":
            if self.state != _CONNECTING:
                raise RuntimeError(self.out_of_order(kind))
            status = message.get("status")
            if type(status) is not int or status < 200:
                raise RuntimeError(f"{kind} status must be an int >= 200, got {status!r}")
            headers = message.get("headers", ())
            try:
                self.ex.start_response(status, headers if type(headers) is list else list(headers))
            except (TypeError, ValueError, InvalidResponse) as exc:
                raise RuntimeError(f"invalid {kind} message: {exc}") from None
            self.state = _DENYING
        elif kind == "websocket.http.response.body":
            if self.state != _DENYING:
                raise RuntimeError(self.out_of_order(kind))
            body = message.get("body", b"")
            ex = self.ex
            try:
                if message.get("more_body", False):
                    if body:
                        ex.write(body)
                    if ex.writing_paused:
                        await ex.drain()
                    return
                ex.finish(body)
            except (TypeError, ValueError, InvalidResponse) as exc:
                raise RuntimeError(f"invalid {kind} message: {exc}") from None
            self.state = _ANSWERED
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for a websocket")

    def accept(self, message: Message) -> None:
        ex = self.ex
        handshake = self.handshake
        subprotocol = message.get("subprotocol")
        if subprotocol is not None and subprotocol not in handshake.subprotocols:
            raise RuntimeError(f"subprotocol {subprotocol!r} was not offered by the client")
        extra = message.get("headers") or []
        try:
            headers = accept_headers(handshake, subprotocol, list(extra))
        except (TypeError, ValueError, AttributeError) as exc:
            raise RuntimeError(f"invalid websocket.accept headers: {exc}") from None
        session = WebSocketSession(asyncio.get_running_loop(), self.settings, handshake.extension)
        if ex.disconnected:
            self.session = session
            self.state = _ACCEPTED
            session.connection_lost(None)
            return
        try:
            flow = ex.take_over(101, headers, session)
        except InvalidResponse as exc:
            raise RuntimeError(f"invalid websocket.accept message: {exc}") from None
        self.session = session
        self.state = _ACCEPTED
        session.start(flow)

    def out_of_order(self, kind: str) -> str:
        where = {
            _CONNECTING: "before the WebSocket was accepted",
            _ACCEPTED: "after the WebSocket was accepted",
            _DENYING: "during the denial response",
            _ANSWERED: "after the handshake was answered",
        }[self.state]
        return f"unexpected ASGI message {kind!r} {where}"
