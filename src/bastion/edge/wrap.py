"""A base for response filters: an exchange that hands everything to the one it wraps.

A filter (compression, response headers) subclasses :class:`ExchangeWrapper` and
overrides only the response methods it changes. The request attributes are copied once
when the wrapper is made, so reading them costs what it costs on the real exchange.
"""

from __future__ import annotations

from collections.abc import Callable

from bastion.protocol.types import Exchange

__all__ = ["ExchangeWrapper"]


class ExchangeWrapper:
    """Implements :class:`~bastion.protocol.types.Exchange` by delegating to ``inner``."""

    __slots__ = (
        "_inner",
        "client",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query_string",
        "raw_path",
        "scheme",
        "server",
    )

    def __init__(self, inner: Exchange) -> None:
        self._inner = inner
        self.method = inner.method
        self.raw_path = inner.raw_path
        self.path = inner.path
        self.query_string = inner.query_string
        self.http_version = inner.http_version
        self.headers = inner.headers
        self.client = inner.client
        self.server = inner.server
        self.scheme = inner.scheme
        self.keep_alive = inner.keep_alive

    @property
    def inner(self) -> Exchange:
        """The exchange this one wraps."""
        return self._inner

    # -- request body ----------------------------------------------------------------
    @property
    def body_complete(self) -> bool:
        return self._inner.body_complete

    @property
    def disconnected(self) -> bool:
        return self._inner.disconnected

    async def receive_body(self) -> tuple[bytes, bool]:
        return await self._inner.receive_body()

    def take_buffered_body(self) -> bytes:
        return self._inner.take_buffered_body()

    def call_when_complete(self, callback: Callable[[], None]) -> None:
        self._inner.call_when_complete(callback)

    async def wait_disconnected(self) -> None:
        await self._inner.wait_disconnected()

    # -- response ----------------------------------------------------------------------
    @property
    def response_started(self) -> bool:
        return self._inner.response_started

    def start_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._inner.start_response(status, headers)

    def write(self, data: bytes) -> None:
        self._inner.write(data)

    def finish(self, data: bytes = b"") -> None:
        self._inner.finish(data)

    @property
    def writing_paused(self) -> bool:
        return self._inner.writing_paused

    async def drain(self) -> None:
        await self._inner.drain()

    def fail(self, exc: BaseException | None = None) -> None:
        self._inner.fail(exc)

    async def sendfile(self, fd: int, offset: int, count: int) -> None:
        await self._inner.sendfile(fd, offset, count)
