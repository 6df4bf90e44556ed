"""Running a WSGI app on a thread pool (``app.wsgi_mode = "threads"``).

Each worker has a pool of ``app.threads`` threads. The app, its iteration and its
``close()`` run on a pool thread; everything that touches the connection runs on the
event loop: the thread hands each piece of the response (head, chunks, end, failure)
over with ``loop.call_soon_threadsafe`` and carries on. The thread waits only when more
than 4 MiB of its response is queued but not yet accepted by the client's connection, so
a slow reader costs memory up to that cap, then holds one thread, never the loop.

When the client disconnects, the iteration stops at the next chunk and the legacy
``write()`` callable raises :class:`ClientGone` (an ``OSError``), so an app streaming to a
client that left does not run forever; ``close()`` is still called.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from bastion.gateway.errors import ClientGone
from bastion.gateway.wsgi_io import FileWrapper, regular_file
from bastion.gateway.wsgi_response import Head, close_result, log_overflow
from bastion.protocol.types import Exchange

if TYPE_CHECKING:
    from bastion.gateway.wsgi import WSGIGateway

__all__ = ["QUEUED_LIMIT", "ClientGone", "ThreadRunner"]

QUEUED_LIMIT = 4 * 1024 * 1024  # response bytes a thread may get ahead of its client

_WRITE = 0
_FINISH = 1
_FAIL = 2
_SENDFILE = 3


class ThreadRunner:
    """The pool and the submission of requests to it."""

    def __init__(self, gateway: WSGIGateway, threads: int) -> None:
        self.gateway = gateway
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bastion-wsgi")
        # queued work and what to do instead if shutdown cancels it before it runs
        self.queued: dict[Future[None], Callable[[], None]] = {}

    def submit(self, ex: Exchange, env: dict[str, Any], spool_head: Head | None) -> None:
        job = _Job(self, ex, env, asyncio.get_running_loop())
        if spool_head is not None:
            job.spool = spool_head.spool
        try:
            self._track(self.pool.submit(job.run), job.abandon)
        except RuntimeError:  # the pool is shutting down
            job.abandon()

    def close_later(self, result: object, head: Head | None) -> None:
        """Close a result on a pool thread (its close() may do the app's I/O)."""
        try:
            fut = self.pool.submit(close_result, result, head)
        except RuntimeError:
            close_result(result, head)
        else:
            self._track(fut, lambda: close_result(result, head))

    def _track(self, fut: Future[None], instead: Callable[[], None]) -> None:
        self.queued[fut] = instead
        fut.add_done_callback(self._untrack)

    def _untrack(self, fut: Future[None]) -> None:
        if not fut.cancelled():
            self.queued.pop(fut, None)

    async def shutdown(self) -> None:
        """Stop taking requests, drop the queued ones and wait for the running ones."""
        await asyncio.to_thread(self.pool.shutdown, True, cancel_futures=True)
        for fut, instead in list(self.queued.items()):
            if fut.cancelled():
                instead()
        self.queued.clear()


class _Job(Head):
    """One request in threads mode: the thread's side and the loop's side."""

    __slots__ = (
        "cond",
        "draining",
        "ended",
        "env",
        "ex",
        "gone",
        "loop",
        "queue",
        "runner",
        "unsent",
        "waiting",
    )

    def __init__(
        self,
        runner: ThreadRunner,
        ex: Exchange,
        env: dict[str, Any],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__()
        self.runner = runner
        self.ex = ex
        self.env = env
        self.loop = loop
        self.cond = threading.Condition(threading.Lock())
        self.unsent = 0  # bytes handed to the loop and not yet taken by the connection
        self.waiting = False  # the thread waits for unsent to drop
        self.gone = False  # the client left or the response failed: stop producing
        # loop side
        self.queue: deque[tuple[int, Any, tuple[int, list[tuple[bytes, bytes]]] | None]] = deque()
        self.draining = False
        self.ended = False  # finish() or fail() has been called on the exchange

    # -- on the pool thread ------------------------------------------------------------
    def run(self) -> None:
        result: Any = None
        handed_off = False
        try:
            result = self.runner.gateway.app(self.env, self.start_response)
            if type(result) is list and len(result) == 1 and not self.sent and self.status:
                chunk = result[0]
                if type(chunk) is bytes:
                    self.post(_FINISH, chunk, self.take_head())
                    return
            if type(result) is FileWrapper and not self.sent and self.status:
                file = regular_file(result)
                if file is not None:
                    head = self.encode()
                    if self.length is not None:
                        self.sent = True
                        handed_off = True
                        self.post(_SENDFILE, (result, file), head)
                        return
            it = iter(result)
            for chunk in it:
                if type(chunk) is not bytes and not isinstance(chunk, bytearray | memoryview):
                    raise TypeError(f"WSGI body chunks must be bytes, not {type(chunk).__name__}")
                if self.gone:
                    break
                if not chunk:
                    continue
                if self.sent:
                    self.post(_WRITE, chunk, None)
                    continue
                head = self.take_head()
                if self.length == len(chunk):  # the whole body in one go
                    self.post(_FINISH, chunk, head)
                    for extra in it:
                        if extra:
                            log_overflow(self.length)
                            break
                    return
                self.post(_WRITE, chunk, head)
            if not self.gone:
                self.post(_FINISH, b"", None if self.sent else self.take_head())
        except Exception as exc:
            self.post(_FAIL, exc, None)
        finally:
            if not handed_off:
                close_result(result, self)

    def write(self, data: bytes) -> None:
        """The legacy ``write()`` callable; waits while too much is queued unsent."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError(f"WSGI write() takes bytes, not {type(data).__name__}")
        if self.gone:
            raise ClientGone("the client has disconnected")
        head = None if self.sent else self.take_head()
        if data or head is not None:
            self.post(_WRITE, bytes(data), head)

    def take_head(self) -> tuple[int, list[tuple[bytes, bytes]]]:
        head = self.encode()
        self.sent = True
        return head

    def post(
        self, kind: int, payload: Any, head: tuple[int, list[tuple[bytes, bytes]]] | None
    ) -> None:
        if kind <= _FINISH and payload:
            size = len(payload)
            with self.cond:
                while self.unsent > QUEUED_LIMIT and not self.gone:
                    self.waiting = True
                    if not self.cond.wait(1.0) and self.loop.is_closed():
                        self.gone = True
                self.waiting = False
                self.unsent += size
        try:
            self.loop.call_soon_threadsafe(self.apply, kind, payload, head)
        except RuntimeError:  # the event loop has closed
            self.gone = True

    # -- on the event loop ---------------------------------------------------------------
    def apply(
        self, kind: int, payload: Any, head: tuple[int, list[tuple[bytes, bytes]]] | None
    ) -> None:
        if self.ended:
            if kind == _SENDFILE:
                self.runner.close_later(payload[0], None)
            return
        self.queue.append((kind, payload, head))
        if not self.draining:
            self.pump()

    def pump(self) -> None:
        ex = self.ex
        queue = self.queue
        while queue and not self.ended:
            if ex.disconnected:
                self.stop()
                ex.fail(None)
                break
            if ex.writing_paused:
                self.draining = True
                self.runner.gateway.spawn(self.wait_drain())
                return
            kind, payload, head = queue.popleft()
            try:
                if head is not None:
                    ex.start_response(*head)
                if kind == _WRITE:
                    ex.write(payload)
                    self.release(len(payload))
                elif kind == _FINISH:
                    self.ended = True
                    ex.finish(payload)
                elif kind == _FAIL:
                    self.stop()
                    if isinstance(payload, ClientGone) and ex.disconnected:
                        ex.fail(None)
                    else:
                        self.runner.gateway.failed(ex, payload)
                else:
                    self.ended = True
                    wrapper, file = payload
                    self.runner.gateway.spawn(
                        self.runner.gateway.sendfile(ex, self, wrapper, file, self.close_after)
                    )
            except Exception as exc:
                self.stop()
                self.runner.gateway.failed(ex, exc)
        if self.ended:
            self.stop()

    def abandon(self) -> None:
        """The request will not run (the pool is stopping): release what it holds."""
        self.close_spool()
        self.ex.fail(None)

    def close_after(self, result: object, head: Head | None) -> None:
        self.runner.close_later(result, head)

    async def wait_drain(self) -> None:
        try:
            await self.ex.drain()
        except Exception:
            pass
        self.draining = False
        self.pump()

    def release(self, size: int) -> None:
        with self.cond:
            self.unsent -= size
            if self.waiting and self.unsent <= QUEUED_LIMIT:
                self.cond.notify()

    def stop(self) -> None:
        """No more of this response will be sent: free the thread if it waits."""
        self.ended = True
        self.queue.clear()
        with self.cond:
            self.gone = True
            self.unsent = 0
            self.cond.notify()
