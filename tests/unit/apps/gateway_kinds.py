"""Apps of every shape the loader must recognise (used by tests/unit/test_loader.py)."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from typing import Any


async def asgi_function(scope: Any, receive: Any, send: Any) -> None:
    pass


def wsgi_function(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b""]


class ASGIInstance:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        pass


class WSGIInstance:
    def __call__(self, environ: Any, start_response: Any) -> list[bytes]:
        return []


class ASGIClass:
    """An ASGI 3 app as a class: constructed per request, then awaited."""

    def __init__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope = scope

    def __await__(self) -> Iterator[None]:
        yield from ()


class WSGIClass:
    """A WSGI app as a class: constructed per request, then iterated (PEP 3333)."""

    def __init__(self, environ: Any, start_response: Any) -> None:
        start_response("200 OK", [])

    def __iter__(self) -> Iterator[bytes]:
        yield b""


async def _three(prefix: str, scope: Any, receive: Any, send: Any) -> None:
    pass


asgi_partial = functools.partial(_three, "x")
asgi_instance = ASGIInstance()
wsgi_instance = WSGIInstance()


class _Holder:
    app = asgi_instance


holder = _Holder()


def three_plain(a: Any, b: Any, c: Any) -> None:
    """Neither: a plain function of three arguments (an ASGI 2 style wrapper)."""


async def async_two(a: Any, b: Any) -> None:
    """Neither: a coroutine function of two arguments."""


def create_asgi() -> Any:
    return asgi_function


def create_wsgi() -> Any:
    return wsgi_function


def broken_factory() -> Any:
    raise RuntimeError("database URL missing")


not_callable = 42


async def async_factory() -> Any:
    return asgi_function
