"""The PEP 3333 response rules, written once for both ways of running a WSGI app.

:class:`Response` keeps what the app gave to ``start_response`` and sends the app's
result by these rules:

* ``start_response`` only stores the status and headers; a second call is allowed only
  with ``exc_info``, and re-raises it if the head has already gone out. The head goes
  out with the first non-empty body chunk, or the first ``write()`` call, or at the end.
* A result that is a list of one ``bytes`` chunk is sent, head and body, in one step.
* A ``wsgi.file_wrapper`` of a regular file, with a declared Content-Length, is sent
  with ``sendfile`` from the file's position (:func:`send_wrapped_file`); any other
  wrapper is iterated like any result.
* Body chunks must be bytes; bytearray and memoryview are accepted (and copied), anything
  else fails the request. Empty chunks are skipped.
* A first chunk as long as the declared Content-Length is the whole body: the response
  is finished at once and the iterator run to its end; anything more it yields is
  dropped, with a warning.
* Once the client has gone (:attr:`Response.gone`), the iteration stops and ``write()``
  raises :class:`~bastion.gateway.errors.ClientGone`.
* An exception from the app is logged and answered with a 500 (or the connection is
  dropped, once the head went out). The result's ``close()`` is always called, once.

Where the pieces of the response go is left to a subclass, the *sink* (the ``put_*``
methods): the inline runner (:mod:`bastion.gateway.wsgi`) writes them to the exchange on
the event loop and lets a task finish a response whose client reads slowly; the thread
runner (:mod:`bastion.gateway.wsgi_threads`) posts them from its thread to the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import TracebackType
from typing import IO, Any, Final

from bastion.gateway.errors import ClientGone
from bastion.gateway.failure import ERROR_LOG, fail_request
from bastion.gateway.wsgi_io import FileWrapper, regular_file
from bastion.protocol.types import Exchange

__all__ = [
    "EncodedHead",
    "Response",
    "body_bytes",
    "close_result",
    "fail_app",
    "log_overflow",
    "parse_status",
    "send_wrapped_file",
]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None]
#: a response head as the exchange takes it: the status and the encoded header pairs
EncodedHead = tuple[int, list[tuple[bytes, bytes]]]

_STATUS_CACHE: Final[dict[str, int]] = {}
_STATUS_CACHE_LIMIT: Final = 256


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


def body_bytes(data: object) -> bytes:
    """A body chunk (from the result or ``write()``) as ``bytes``; the one type check."""
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data)
    raise TypeError(
        f"WSGI response body data must be bytes (or bytearray, memoryview), "
        f"not {type(data).__name__}"
    )


class Response:
    """One WSGI response: the head the app gave to ``start_response``, and the rules
    that send its result through the sink methods a subclass implements."""

    __slots__ = ("gone", "headers", "it", "length", "result", "sent", "spool", "status")

    def __init__(self) -> None:
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.length: int | None = None  # the Content-Length the app declared
        self.sent = False  # whether the head has been handed to the sink
        self.gone = False  # the client left or the response failed: stop producing
        self.spool: IO[bytes] | None = None  # a request body file to close at the end
        self.result: Any = None  # what the app returned
        self.it: Iterator[Any] | None = None  # the iteration of ``result`` under way

    # -- the sink: where the pieces go (subclasses) ---------------------------------------
    def put(self, head: EncodedHead | None, chunk: bytes) -> bool:
        """Send a body chunk, the head first if given. Returns False when the client
        should be waited for before more is produced: the sink then calls
        :meth:`produce` again later (see :meth:`later`)."""
        raise NotImplementedError

    def put_last(self, head: EncodedHead | None, chunk: bytes) -> None:
        """Send the last body chunk (may be empty), the head first if given, and end."""
        raise NotImplementedError

    def put_file(self, head: EncodedHead, wrapper: FileWrapper, file: tuple[int, int, int]) -> None:
        """Send the head, then the file (``(fd, position, bytes left)``) as the body with
        :func:`send_wrapped_file`; the sink closes ``wrapper`` afterwards."""
        raise NotImplementedError

    def put_failure(self, exc: Exception) -> None:
        """The app (or the sending) failed: log it and answer 500, or drop the
        connection if the head went out."""
        raise NotImplementedError

    def later(self) -> None:
        """:meth:`put` asked to wait: carry on with :meth:`produce` once the client has
        caught up, and close the result at the end (:func:`close_result`)."""
        raise NotImplementedError

    # -- the rules ------------------------------------------------------------------------
    def respond(self, app: Callable[..., Any], environ: dict[str, Any]) -> None:
        """Call the app and send its result; close it unless the sending goes on later."""
        result: Any = None
        kept = False
        try:
            result = app(environ, self.start_response)
            kept = self.send(result)
        except Exception as exc:
            self.put_failure(exc)
        finally:
            if not kept:
                close_result(result, self)

    def send(self, result: Any) -> bool:
        """Send the app's result; True if sending goes on later (and closes it then)."""
        if not self.sent and self.status is not None:
            if type(result) is list and len(result) == 1:
                chunk = result[0]
                if type(chunk) is bytes:  # the common case: the whole response in one go
                    self.put_last(self.take_head(), chunk)
                    return False
            elif type(result) is FileWrapper:
                file = regular_file(result)
                if file is not None:
                    head = self.encode()
                    if self.length is not None:
                        self.sent = True
                        self.put_file(head, result, file)
                        return True
        self.result = result
        self.it = iter(result)
        if self.produce():
            self.later()
            return True
        return False

    def produce(self) -> bool:
        """Send chunks of the result until it ends (False) or the sink asks to wait
        (True: call again later)."""
        it = self.it
        if it is None:
            return False
        for item in it:
            chunk: bytes = item if type(item) is bytes else body_bytes(item)
            if self.gone:
                return False
            if not chunk:
                continue
            if self.sent:
                if not self.put(None, chunk):
                    return True
                continue
            head = self.take_head()
            if self.length == len(chunk):  # the whole declared body in one go
                self.put_last(head, chunk)
                for extra in it:
                    if extra:
                        log_overflow(self.length)
                        break
                return False
            if not self.put(head, chunk):
                return True
        if not self.gone:
            self.put_last(None if self.sent else self.take_head(), b"")
        return False

    def start_response(
        self, status: str, headers: list[tuple[str, str]], exc_info: ExcInfo | None = None
    ) -> Callable[[object], None]:
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

    def write(self, data: object) -> None:
        """The legacy ``write()`` callable: sends the head, if not yet sent, and ``data``."""
        chunk: bytes = data if type(data) is bytes else body_bytes(data)
        if self.gone:
            raise ClientGone("the client has disconnected")
        if not self.sent:
            self.put(self.take_head(), chunk)
        elif chunk:
            self.put(None, chunk)

    def take_head(self) -> EncodedHead:
        head = self.encode()
        self.sent = True
        return head

    def encode(self) -> EncodedHead:
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


def fail_app(ex: Exchange, exc: BaseException, debug: bool) -> None:
    """An exception from the app (or from sending its response): a logged 500."""
    fail_request(ex, exc, "exception in WSGI app", debug)


async def send_wrapped_file(
    ex: Exchange,
    resp: Response,
    wrapper: FileWrapper,
    file: tuple[int, int, int],
    debug: bool,
    close: Callable[[object, Response | None], None],
) -> None:
    """Send ``file`` (``(fd, position, bytes left)``) as the body of a response whose head
    has been started, then ``close(wrapper, resp)``. A file shorter than the declared
    Content-Length drops the connection."""
    fd, offset, left = file
    length = resp.length or 0
    try:
        if ex.head.method != "HEAD" and length:
            await ex.sendfile(fd, offset, min(length, left))
        if ex.disconnected:
            ex.fail(None)
        elif left < length:
            fail_request(ex, None, f"file shorter ({left} bytes) than its Content-Length", False)
        else:
            ex.finish()
    except Exception as exc:
        fail_app(ex, exc, debug)
    finally:
        close(wrapper, resp)


def close_result(result: object, resp: Response | None = None) -> None:
    """Call ``result.close()`` if it has one, logging (not raising) what it raises; close
    the request body file of ``resp``."""
    cls = result.__class__
    # a list or tuple has no close(); asking would cost an AttributeError (with its
    # formatted message) on every request in the compiled build
    close = None if cls is list or cls is tuple else getattr(result, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            ERROR_LOG.exception("exception in the WSGI app's close()")
    if resp is not None:
        resp.close_spool()


def log_overflow(length: int | None) -> None:
    """The app produced more body than the Content-Length it declared."""
    ERROR_LOG.warning(
        "WSGI app sent more body than its Content-Length (%s); the rest was dropped", length
    )
