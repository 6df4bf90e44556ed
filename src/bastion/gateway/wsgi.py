"""The WSGI gateway (PEP 3333).

The request body is received in full before the app is called — into memory when a
Content-Length of at most 1 MiB is declared, otherwise into a spooled temporary file — so
reading ``wsgi.input`` never blocks and a slow client never holds the app.

Two ways to run the app (``app.wsgi_mode``):

* ``inline`` (default): on the event loop thread, straight from the protocol's callback.
  No thread hand-off, most throughput; for apps that do not wait on I/O. A response
  whose client reads slowly is finished by a task that waits for the client between
  chunks, and a long body yields to other connections every few chunks. The legacy
  ``write()`` callable cannot wait for a slow client: what it writes is buffered.
* ``threads``: on a pool of ``app.threads`` threads per worker (see
  :mod:`bastion.gateway.wsgi_threads`), for apps that wait on databases or other services.

``wsgi.file_wrapper`` responses of a regular file with a Content-Length are sent with
``sendfile``. An exception from the app is logged with a request id and answered with a
500 (the connection is dropped instead if the head was already sent). The result's
``close()`` is always called.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Iterator
from io import BytesIO
from typing import IO, Any, Final

from bastion.config.schema import Config
from bastion.gateway.failure import fail_request
from bastion.gateway.wsgi_environ import EnvironBuilder
from bastion.gateway.wsgi_io import SPOOL_LIMIT, FileWrapper, read_body, regular_file
from bastion.gateway.wsgi_response import Head, close_result, log_overflow
from bastion.protocol.types import ClientDisconnected, Exchange
from bastion.tasks import WorkerTasks

__all__ = ["WSGIApp", "WSGIGateway"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_SYNC_CHUNKS = 16  # body chunks written before letting other connections run
_TASK_GRACE = 2.0  # default wait at shutdown for responses still being sent


class WSGIGateway:
    """Serves a WSGI application. ``handler`` is what the protocol calls per request."""

    interface: Final = "wsgi"

    def __init__(self, app: WSGIApp, config: Config, tasks: WorkerTasks | None = None) -> None:
        self.app = app
        self.debug = config.server.debug
        threaded = config.app.wsgi_mode == "threads"
        self.environ = EnvironBuilder(config, multithread=threaded)
        #: where responses finished by a task run (the worker's, shared with the site)
        self.tasks = tasks if tasks is not None else WorkerTasks()
        self.run: Callable[[Exchange, dict[str, Any], Head | None], None]
        if threaded:
            from bastion.gateway.wsgi_threads import ThreadRunner

            self.threads: ThreadRunner | None = ThreadRunner(self, config.app.threads)
            self.run = self.threads.submit
        else:
            self.threads = None
            self.run = self.run_inline

    async def startup(self) -> None:
        """Nothing to do: WSGI has no start-up protocol."""

    async def shutdown(self, grace: float | None = None) -> None:
        """Finish (or, after ``grace`` seconds, cancel) responses still being sent; stop
        the thread pool, waiting for the requests running on it."""
        await self.tasks.finish(_TASK_GRACE if grace is None else grace)
        if self.threads is not None:
            await self.threads.shutdown()

    # -- the protocol's entry point ---------------------------------------------------
    def handler(self, exchange: Exchange) -> None:
        """Handle one request: gather its body, then run the app."""
        env = self.environ.build(exchange)
        if exchange.body_complete:
            body = exchange.take_buffered_body()
            if body and "CONTENT_LENGTH" not in env:  # a chunked body that is all here
                env["CONTENT_LENGTH"] = str(len(body))
            env["wsgi.input"] = BytesIO(body)
            self.run(exchange, env, None)
            return
        declared = env.get("CONTENT_LENGTH")
        if declared is not None and declared.isdigit() and int(declared) <= SPOOL_LIMIT:
            exchange.call_when_complete(lambda: self.body_arrived(exchange, env))
        else:
            self.spawn(self.spool_then_run(exchange, env))

    def body_arrived(self, exchange: Exchange, env: dict[str, Any]) -> None:
        if not exchange.body_complete:  # the client left before sending it all
            exchange.fail(None)
            return
        env["wsgi.input"] = BytesIO(exchange.take_buffered_body())
        self.run(exchange, env, None)

    async def spool_then_run(self, exchange: Exchange, env: dict[str, Any]) -> None:
        try:
            spool = await read_body(exchange)
        except ClientDisconnected:
            exchange.fail(None)
            return
        except Exception as exc:
            fail_request(exchange, exc, "could not store the request body", False)
            return
        # the whole body is here: tell apps that trust only CONTENT_LENGTH how long it is
        spool.seek(0, 2)
        env["CONTENT_LENGTH"] = str(spool.tell())
        spool.seek(0)
        env["wsgi.input"] = spool
        head = Head()
        head.spool = spool
        self.run(exchange, env, head)

    def spawn(self, coro: Any) -> None:
        self.tasks.spawn(coro)

    def failed(self, exchange: Exchange, exc: BaseException) -> None:
        fail_request(exchange, exc, "exception in WSGI app", self.debug)

    # -- inline mode ------------------------------------------------------------------
    def run_inline(self, ex: Exchange, env: dict[str, Any], spool_head: Head | None) -> None:
        resp = _InlineHead(ex)
        if spool_head is not None:
            resp.spool = spool_head.spool
        try:
            result = self.app(env, resp.start_response)
        except Exception as exc:
            resp.close_spool()
            self.failed(ex, exc)
            return
        handed_off = False
        try:
            if type(result) is list and len(result) == 1 and not resp.sent and resp.status:
                chunk = result[0]
                if type(chunk) is bytes:  # the common case: one write, one finish
                    status, headers = resp.encode()
                    resp.sent = True
                    ex.start_response(status, headers)
                    ex.finish(chunk)
                    if resp.spool is not None:
                        resp.close_spool()
                    return
            if type(result) is FileWrapper and not resp.sent and resp.status:
                handed_off = self.try_sendfile(ex, resp, result)
                if handed_off:
                    return
            handed_off = self.iterate(ex, resp, result)
        except Exception as exc:
            self.failed(ex, exc)
        finally:
            if not handed_off:
                close_result(result, resp)

    def iterate(self, ex: Exchange, resp: _InlineHead, result: Iterable[bytes]) -> bool:
        """Write the result's chunks; True if a task took over the rest."""
        it = iter(result)
        written = 0
        for chunk in it:
            if type(chunk) is not bytes:
                _check_chunk(chunk)
            if not chunk:
                continue
            if not resp.sent:
                status, headers = resp.encode()
                resp.sent = True
                ex.start_response(status, headers)
                if resp.length == len(chunk):  # the whole body in one go
                    ex.finish(chunk)
                    _expect_end(it, resp.length)
                    return False
            ex.write(chunk)
            written += 1
            if ex.writing_paused or written >= _SYNC_CHUNKS:
                self.spawn(self.iterate_async(ex, resp, result, it))
                return True
        if not resp.sent:
            status, headers = resp.encode()
            resp.sent = True
            ex.start_response(status, headers)
        ex.finish()
        return False

    async def iterate_async(
        self, ex: Exchange, resp: _InlineHead, result: Iterable[bytes], it: Iterator[bytes]
    ) -> None:
        """The rest of an inline response, waiting for a slow client between chunks."""
        try:
            written = 0
            while True:
                if ex.writing_paused:
                    await ex.drain()
                elif written >= _SYNC_CHUNKS:
                    written = 0
                    await asyncio.sleep(0)
                if ex.disconnected:
                    ex.fail(None)
                    return
                chunk = next(it, None)
                if chunk is None:
                    break
                if type(chunk) is not bytes:
                    _check_chunk(chunk)
                if not chunk:
                    continue
                if not resp.sent:
                    status, headers = resp.encode()
                    resp.sent = True
                    ex.start_response(status, headers)
                ex.write(chunk)
                written += 1
            if not resp.sent:
                status, headers = resp.encode()
                resp.sent = True
                ex.start_response(status, headers)
            ex.finish()
        except Exception as exc:
            self.failed(ex, exc)
        finally:
            close_result(result, resp)

    # -- wsgi.file_wrapper ------------------------------------------------------------
    def try_sendfile(self, ex: Exchange, resp: Head, wrapper: FileWrapper) -> bool:
        """Start a zero-copy send of ``wrapper``'s file if it qualifies; True if started."""
        file = regular_file(wrapper)
        if file is None:
            return False
        status, headers = resp.encode()
        if resp.length is None:
            return False
        resp.sent = True
        ex.start_response(status, headers)
        self.spawn(self.sendfile(ex, resp, wrapper, file, close_result))
        return True

    async def sendfile(
        self,
        ex: Exchange,
        resp: Head,
        wrapper: FileWrapper,
        file: tuple[int, int, int],
        close: Callable[[object, Head | None], None],
    ) -> None:
        fd, offset, left = file
        length = resp.length or 0
        try:
            if ex.head.method != "HEAD" and length:
                await ex.sendfile(fd, offset, min(length, left))
            if ex.disconnected:
                ex.fail(None)
            elif left < length:
                fail_request(
                    ex, None, f"file shorter ({left} bytes) than its Content-Length", False
                )
            else:
                ex.finish()
        except Exception as exc:
            self.failed(ex, exc)
        finally:
            close(wrapper, resp)


class _InlineHead(Head):
    """start_response state for an app running on the event loop thread."""

    __slots__ = ("ex",)

    def __init__(self, ex: Exchange) -> None:
        # Head.__init__ spelled out: this runs for every request
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.length: int | None = None
        self.sent = False
        self.spool: IO[bytes] | None = None
        self.ex = ex

    def write(self, data: bytes) -> None:
        """The legacy ``write()`` callable: sends at once (buffered, never waits)."""
        _check_chunk(data)
        ex = self.ex
        if not self.sent:
            status, headers = self.encode()
            self.sent = True
            ex.start_response(status, headers)
        if data:
            ex.write(data)


def _check_chunk(chunk: object) -> None:
    if not isinstance(chunk, bytes | bytearray | memoryview):
        raise TypeError(f"WSGI body chunks must be bytes, not {type(chunk).__name__}")


def _expect_end(it: Iterator[bytes], length: int | None) -> None:
    """Run the iterator to its end after the declared body was sent; drop any excess."""
    for extra in it:
        if extra:
            log_overflow(length)
            return
