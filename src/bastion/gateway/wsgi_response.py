"""``start_response`` bookkeeping shared by the inline and threaded WSGI runners.

PEP 3333 rules kept here: the status and headers are only stored by ``start_response``
and go out with the first non-empty body chunk (or at the end); a second call is allowed
only with ``exc_info``, and re-raises it if the head has already gone out; the result's
``close()`` is always called.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import IO, Any

from bastion.gateway.failure import ERROR_LOG

__all__ = ["Head", "close_result", "log_overflow", "parse_status"]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]

_STATUS_CACHE: dict[str, int] = {}
_STATUS_CACHE_LIMIT = 256


def parse_status(status: Any) -> int:
    """The numeric code of a WSGI status string such as ``"200 OK"``."""
    try:
        code = _STATUS_CACHE.get(status)
    except TypeError:  # unhashable
        code = None
    if code is not None:
        return code
    if (
        type(status) is not str
        or len(status) < 3
        or not status[:3].isdigit()
        or (len(status) > 3 and status[3] != " ")
        or int(status[:3]) < 100
    ):
        raise ValueError(f"invalid WSGI status {status!r}: expected a str like '200 OK'")
    code = int(status[:3])
    if len(_STATUS_CACHE) < _STATUS_CACHE_LIMIT:
        _STATUS_CACHE[status] = code
    return code


class Head:
    """The response head an app gave to ``start_response``; subclasses add ``write``."""

    __slots__ = ("headers", "length", "sent", "spool", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.length: int | None = None  # the Content-Length the app declared
        self.sent = False  # whether the head has been handed to the exchange
        self.spool: IO[bytes] | None = None  # a request body file to close at the end

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None:
            try:
                if self.sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no reference cycle through the frame
        elif self.status is not None:
            raise RuntimeError("start_response() called a second time without exc_info")
        self.status = parse_status(status)
        self.headers = headers
        return self.write

    def write(self, data: bytes) -> None:  # pragma: no cover - replaced by subclasses
        raise NotImplementedError

    def encode(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        """The status and headers as the exchange takes them; sets :attr:`length`."""
        status = self.status
        if status is None:
            raise RuntimeError("the WSGI app sent a body without calling start_response()")
        out: list[tuple[bytes, bytes]] = []
        try:
            for name, value in self.headers:
                raw = name.encode("latin-1")
                out.append((raw, value.encode("latin-1")))
                if len(raw) == 14 and raw.lower() == b"content-length":
                    self.length = int(value)
        except (AttributeError, TypeError, ValueError) as exc:
            raise TypeError(
                "WSGI response headers must be a list of (str, str) tuples of latin-1 text "
                f"and a numeric Content-Length: {exc}"
            ) from exc
        return status, out

    def close_spool(self) -> None:
        if self.spool is not None:
            self.spool.close()
            self.spool = None


def close_result(result: object, head: Head | None = None) -> None:
    """Call ``result.close()`` if it has one, logging (not raising) what it raises."""
    close = getattr(result, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            ERROR_LOG.exception("exception in the WSGI app's close()")
    if head is not None:
        head.close_spool()


def log_overflow(length: int | None) -> None:
    """The app produced more body than the Content-Length it declared."""
    ERROR_LOG.warning(
        "WSGI app sent more body than its Content-Length (%s); the rest was dropped", length
    )
