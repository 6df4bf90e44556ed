"""A base for filters: an exchange that hands everything to the one it wraps.

A response filter (compression, response headers) subclasses :class:`ExchangeWrapper`
and overrides only the response methods it changes. It shares the wrapped exchange's
request head. A request filter that presents a different request (the real client
address behind a trusted proxy, a rewritten path) hands on an :class:`ExchangeWithHead`
(or its own subclass that sets ``head``): the next filters and the handler see the new
head, and the response still goes out through the exchange it wraps.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from bastion.protocol.flow import Flow
from bastion.protocol.head import RequestHead
from bastion.protocol.types import Exchange, Session

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # (only the compiler reads it: no dependency at run time)

    def mypyc_attr(*_: object, **__: object) -> Callable[[type], type]:  # type: ignore[misc]
        return lambda cls: cls


__all__ = ["ExchangeWithHead", "ExchangeWrapper"]


@mypyc_attr(allow_interpreted_subclasses=True)
class ExchangeWrapper:
    """Implements :class:`~bastion.protocol.types.Exchange` by delegating to ``inner``."""

    __slots__ = ("_inner", "head", "keep_alive")

    def __init__(self, inner: Exchange) -> None:
        self._inner = inner
        self.head = inner.head
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

    def inform(self, status: int, headers: Iterable[Any]) -> None:
        self._inner.inform(status, headers)

    def start_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._inner.start_response(status, headers)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._inner.write(data)

    def finish(
        self,
        data: bytes | bytearray | memoryview = b"",
        trailers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self._inner.finish(data, trailers)

    @property
    def writing_paused(self) -> bool:
        return self._inner.writing_paused

    async def drain(self) -> None:
        await self._inner.drain()

    def fail(self, exc: BaseException | None = None, status: int = 500) -> None:
        self._inner.fail(exc, status)

    async def sendfile(self, fd: int, offset: int, count: int) -> None:
        await self._inner.sendfile(fd, offset, count)

    # -- upgrade -----------------------------------------------------------------------
    @property
    def request_trailers(self) -> list[tuple[bytes, bytes]]:
        return self._inner.request_trailers

    @property
    def forwarded_by(self) -> str | None:
        return self._inner.forwarded_by

    @property
    def can_upgrade(self) -> bool:
        return self._inner.can_upgrade

    def take_over(self, status: int, headers: list[tuple[bytes, bytes]], session: Session) -> Flow:
        # an upgraded connection carries no HTTP response for a filter to change
        return self._inner.take_over(status, headers, session)


@mypyc_attr(allow_interpreted_subclasses=True)
class ExchangeWithHead(ExchangeWrapper):
    """``inner`` presenting the request ``head`` (make it with ``inner.head.replace()``)."""

    __slots__ = ()

    def __init__(self, inner: Exchange, head: RequestHead) -> None:
        super().__init__(inner)
        self.head = head
