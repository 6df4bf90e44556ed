"""What a connection protocol offers to whatever answers its requests.

A protocol (``http1`` today; ``http2`` later) parses bytes into :class:`Exchange` objects
and hands each one to a :data:`Handler`. The handler (the ASGI or WSGI gateway, later the
edge router) reads the request body and writes the response through the exchange; it
never sees the socket. Nothing here knows about routing or applications.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from bastion.protocol.head import RequestHead

if TYPE_CHECKING:
    from bastion.protocol.flow import Flow


class ClientDisconnected(Exception):
    """The client went away before the request body was read or the response written."""


class InvalidResponse(Exception):
    """The handler tried to send something that must not reach the wire.

    For example a header name or value holding CR, LF or NUL, a second response head, or
    more body bytes than the Content-Length it declared.
    """


class Session(Protocol):
    """Whatever takes a connection over after a ``101 Switching Protocols`` (a WebSocket
    session, a proxy's tunnel): from then on it gets the connection's bytes.

    It writes, pauses reading and closes through the
    :class:`~bastion.protocol.flow.Flow` that :meth:`Exchange.take_over` returns.
    """

    def data_received(self, data: bytes) -> None:
        """Bytes from the client (the first call may carry what followed the request
        head in the same packet)."""

    def eof_received(self) -> None:
        """The client will send nothing more (its write side is closed)."""

    def connection_lost(self, exc: Exception | None) -> None:
        """The connection is gone; nothing more can be written."""

    def shutdown(self) -> None:
        """The server is stopping: end the session soon (a WebSocket sends 1001)."""


class Exchange(Protocol):
    """One request and its response, as seen by a handler.

    ``head`` is the request (method, target, headers, client, ...), set before the
    handler is called and never changed: a layer that presents a different request
    wraps the exchange with a new head.
    """

    head: RequestHead
    keep_alive: bool  # whether the connection may carry another request afterwards

    # request body -------------------------------------------------------------------
    @property
    def body_complete(self) -> bool:
        """True once the whole request body has been received (always for GET/HEAD)."""
        ...

    @property
    def disconnected(self) -> bool:
        """True once the client has gone away."""
        ...

    async def receive_body(self) -> tuple[bytes, bool]:
        """Return the next chunk of the request body and whether more follows.

        Returns ``(b"", False)`` once the body is exhausted. Raises
        :class:`ClientDisconnected` if the client went away before the body ended.
        Reading resumes only as the handler consumes (backpressure).
        """
        ...

    def take_buffered_body(self) -> bytes:
        """Return and clear the body bytes received so far without waiting.

        Meant for handlers that wait for :attr:`body_complete` (see
        :meth:`call_when_complete`) and then want the whole body at once.
        """
        ...

    def call_when_complete(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (once) when the body is complete or the client has gone.

        Called immediately if that is already so. While the handler waits this way, the
        body is buffered up to ``limits.max_body_size`` without pausing reads.
        """
        ...

    async def wait_disconnected(self) -> None:
        """Return when the client has gone away or closed its side (for ASGI
        ``http.disconnect``)."""
        ...

    # response ----------------------------------------------------------------------
    @property
    def response_started(self) -> bool:
        """True once :meth:`start_response` has been called."""
        ...

    def inform(self, status: int, headers: Iterable[Any]) -> None:
        """Send an informational (1xx) response before the final one: 103 Early Hints,
        or a 100 Continue the handler chooses to send itself.

        Ignored for HTTP/1.0 clients, and for a 100 nobody asked for. Raises
        :class:`InvalidResponse` after the final response began, for 101 (see
        :meth:`take_over`) or a status outside 100-199.
        """
        ...

    def start_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Queue the status line and headers.

        ``headers`` is only read, never modified, so a handler may pass a list it
        built once at start-up; wrappers that change headers build a new list. Header
        names may be in any case. Adds Date and Server (if configured), and chooses
        the framing: Content-Length if given, chunked for HTTP/1.1 otherwise, close-
        delimited for HTTP/1.0. Raises :class:`InvalidResponse` for CR/LF/NUL in names or
        values, a status outside 100-999, or a second call.
        """
        ...

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send part of the response body (never blocks; see :meth:`drain`).

        Bytes-like data is accepted; anything else raises ``TypeError``.
        """
        ...

    def finish(
        self,
        data: bytes | bytearray | memoryview = b"",
        trailers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """Send the last part of the body and end the response.

        ``trailers``: fields sent after the body, in the last chunk. They go out only
        when the body is chunked (an HTTP/1.1 response with no ``Content-Length``);
        otherwise they are dropped, which RFC 9110 6.5.1 allows. Names and values are
        checked like headers'; the caller leaves out fields that must not be trailers.
        """
        ...

    @property
    def writing_paused(self) -> bool:
        """True while the client reads slower than we write (await :meth:`drain`)."""
        ...

    async def drain(self) -> None:
        """Wait while the client is not reading fast enough (transport paused)."""
        ...

    def fail(self, exc: BaseException | None = None, status: int = 500) -> None:
        """The handler failed: send ``status`` (500, or 502 for a proxy whose upstream's
        response broke) if nothing was sent yet, else drop the connection.

        ``exc`` is the exception, for the error log. Safe to call more than once.
        """
        ...

    async def sendfile(self, fd: int, offset: int, count: int) -> None:
        """Send ``count`` bytes of the open file ``fd`` from ``offset`` as body, zero-copy.

        Falls back to reading and writing when zero-copy is not possible (for example a
        chunked response, or TLS later). Respects flow control.
        """
        ...

    @property
    def request_trailers(self) -> list[tuple[bytes, bytes]]:
        """The trailer fields of a chunked request body (lower-case names, values as
        received), once the body is complete (:attr:`body_complete`); empty before,
        and for a request that had none. Read only."""
        ...

    @property
    def forwarded_by(self) -> str | None:
        """The address of the connection's peer when it is one of the trusted proxies
        (``server.forwarded_allow_ips``: its forwarding headers were believed), ``"unix"``
        for a trusted Unix-socket peer; None when the peer is not trusted."""
        ...

    # upgrade ----------------------------------------------------------------------------
    @property
    def can_upgrade(self) -> bool:
        """Whether :meth:`take_over` is possible: the request asked to switch protocols
        (``Connection: upgrade`` and ``Upgrade``), carries no body, and nothing follows
        it on the connection but the new protocol's bytes."""
        ...

    def take_over(self, status: int, headers: list[tuple[bytes, bytes]], session: Session) -> Flow:
        """Answer ``101 Switching Protocols`` with ``headers`` and give the connection to
        ``session``: every byte from the client goes to it from now on (the exchange is
        complete). Returns the connection's flow, for the session's writes, pauses and
        close. Raises :class:`InvalidResponse` when :attr:`can_upgrade` is false, the
        response has started, or ``status`` is not 101.
        """
        ...


Handler = Callable[[Exchange], None]
"""Called by the protocol for each request, on the event loop, when its head is parsed.

The handler must not block. It takes ownership of the exchange: it must eventually call
:meth:`Exchange.finish` or :meth:`Exchange.fail`.
"""
