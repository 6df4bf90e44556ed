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

Both modes send the app's result by the same rules (:mod:`bastion.gateway.wsgi_response`):
``wsgi.file_wrapper`` responses of a regular file with a Content-Length are sent with
``sendfile``; an exception from the app is logged with a request id and answered with a
500 (the connection is dropped instead if the head was already sent); the result's
``close()`` is always called.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from io import BytesIO as _BytesIO
from typing import IO, Any, Final

from bastion.config.schema import Config
from bastion.gateway.failure import fail_request
from bastion.gateway.wsgi_environ import EnvironBuilder
from bastion.gateway.wsgi_io import SPOOL_LIMIT, FileWrapper, read_body
from bastion.gateway.wsgi_response import (
    EncodedHead,
    Response,
    close_result,
    fail_app,
    send_wrapped_file,
)
from bastion.gateway.wsgi_threads import ThreadRunner
from bastion.protocol.types import ClientDisconnected, Exchange
from bastion.tasks import WorkerTasks

#: made for every buffered request body: a static of the compiled build
BytesIO: Final = _BytesIO

__all__ = ["WSGIApp", "WSGIGateway"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

_SYNC_CHUNKS: Final = 16  # body chunks written before letting other connections run
_TASK_GRACE: Final = 2.0  # default wait at shutdown for responses still being sent


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
        self.run: Callable[[Exchange, dict[str, Any], IO[bytes] | None], None]
        if threaded:
            self.threads: ThreadRunner | None = ThreadRunner(
                app, config.app.threads, self.tasks, self.debug
            )
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
            self.wait_for_body(exchange, env)
        else:
            self.tasks.spawn(self.spool_then_run(exchange, env))

    def wait_for_body(self, exchange: Exchange, env: dict[str, Any]) -> None:
        # its own method: a nested function in handler() would cost every request a
        # closure in the compiled build
        exchange.call_when_complete(lambda: self.body_arrived(exchange, env))

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
        self.run(exchange, env, spool)

    # -- inline mode ------------------------------------------------------------------
    def run_inline(self, ex: Exchange, env: dict[str, Any], spool: IO[bytes] | None) -> None:
        _InlineResponse(ex, self, spool).respond(self.app, env)


class _InlineResponse(Response):
    """A response sent on the event loop thread, straight to the exchange; when the
    client reads slowly, or after a few chunks, a task carries on with the rest."""

    __slots__ = ("ex", "gw", "written")

    def __init__(self, ex: Exchange, gw: WSGIGateway, spool: IO[bytes] | None) -> None:
        # Response.__init__ spelled out: this runs for every request
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []
        self.length: int | None = None
        self.sent = False
        self.gone = False
        self.spool: IO[bytes] | None = spool
        self.result: Any = None
        self.it = None
        self.ex = ex
        self.gw = gw
        self.written = 0  # chunks written since the loop last ran other work

    def put(self, head: EncodedHead | None, chunk: bytes) -> bool:
        ex = self.ex
        if head is not None:
            ex.start_response(head[0], head[1])
        ex.write(chunk)
        self.written += 1
        return self.written < _SYNC_CHUNKS and not ex.writing_paused

    def put_last(self, head: EncodedHead | None, chunk: bytes) -> None:
        ex = self.ex
        if head is not None:
            ex.start_response(head[0], head[1])
        ex.finish(chunk)

    def put_file(self, head: EncodedHead, wrapper: FileWrapper, file: tuple[int, int, int]) -> None:
        ex = self.ex
        ex.start_response(head[0], head[1])
        self.gw.tasks.spawn(send_wrapped_file(ex, self, wrapper, file, self.gw.debug, close_result))

    def put_failure(self, exc: Exception) -> None:
        fail_app(self.ex, exc, self.gw.debug)

    def later(self) -> None:
        self.gw.tasks.spawn(self.resume())

    async def resume(self) -> None:
        """The rest of the response: wait for a slow client (or let other connections
        run) between rounds of chunks."""
        ex = self.ex
        try:
            while True:
                if ex.writing_paused:
                    await ex.drain()
                else:
                    await asyncio.sleep(0)
                if ex.disconnected:
                    self.gone = True
                    ex.fail(None)
                    return
                self.written = 0
                if not self.produce():
                    return
        except Exception as exc:
            self.put_failure(exc)
        finally:
            close_result(self.result, self)
