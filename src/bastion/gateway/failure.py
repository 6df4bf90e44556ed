"""What both gateways do when an application fails a request.

The error is logged once, with its traceback and a request id, on the ``bastion.error``
logger; the client gets a bare 500 (or, if the response had already started, the
connection is dropped so it cannot mistake a truncated body for a whole one). With
``server.debug`` on and the client on loopback, the 500 carries the traceback as plain
text instead; never otherwise.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import traceback
from typing import Final

from bastion.protocol.types import Exchange

__all__ = ["ERROR_LOG", "describe", "fail_request", "request_id"]

ERROR_LOG: Final = logging.getLogger("bastion.error")

_counter: Final = itertools.count(1)


def request_id() -> str:
    """A short id for one failed request: the worker's pid and a counter, in hex."""
    return f"{os.getpid():x}-{next(_counter):x}"


def describe(exchange: Exchange) -> str:
    """``METHOD /path`` of a request, safe to put in a log line."""
    target = exchange.head.raw_path.decode("latin-1")
    if exchange.head.query_string:
        target += "?" + exchange.head.query_string.decode("latin-1")
    return f"{_safe(exchange.head.method)} {_safe(target)}"


def _safe(text: str) -> str:
    if text.isprintable():
        return text
    return text.encode("unicode_escape").decode("ascii")


def fail_request(exchange: Exchange, exc: BaseException | None, message: str, debug: bool) -> None:
    """Log ``message`` (with ``exc``'s traceback) and answer 500, or drop the connection."""
    rid = request_id()
    ERROR_LOG.error(
        "%s (request %s, %s)",
        message,
        rid,
        describe(exchange),
        exc_info=(type(exc), exc, exc.__traceback__) if exc is not None else None,
    )
    if debug and not exchange.response_started and _is_loopback(exchange.head.client):
        lines = [f"500 Internal Server Error\n\n{message}\nrequest id: {rid}\n\n"]
        if exc is not None:
            lines.extend(traceback.format_exception(exc))
        body = "".join(lines).encode("utf-8", "replace")
        try:
            exchange.start_response(
                500,
                [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", str(len(body)).encode("ascii")),
                ],
            )
            exchange.finish(body)
            return
        except Exception:
            pass
    exchange.fail(None)  # logged above, with the request id: the protocol need not log it


def _is_loopback(client: tuple[str, int] | None) -> bool:
    if client is None:
        return False
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False
