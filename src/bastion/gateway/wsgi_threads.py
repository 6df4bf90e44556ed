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
from typing import IO, Any, Final

from bastion.gateway.errors import ClientGone
from bastion.gateway.wsgi_io import FileWrapper
from bastion.gateway.wsgi_response import (
    EncodedHead,
    Response,
    close_result,
    fail_app,
    send_wrapped_file,
)
from bastion.protocol.types import Exchange
from bastion.tasks import WorkerTasks

__all__ = ["QUEUED_LIMIT", "ClientGone", "ThreadRunner"]

QUEUED_LIMIT: Final = 4 * 1024 * 1024  # response bytes a thread may get ahead of its client

_WRITE: Final = 0
_FINISH: Final = 1
_FAIL: Final = 2
_SENDFILE: Final = 3


class ThreadRunner:
    """The pool and the submission of requests to it."""

    def __init__(
        self, app: Callable[..., Any], threads: int, tasks: WorkerTasks, debug: bool
    ) -> None:
        self.app = app
        self.tasks = tasks  # where the loop's side waits for slow clients and sends files
        self.debug = debug
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bastion-wsgi")
        # queued work and what to do instead if shutdown cancels it before it runs
        self.queued: dict[Future[None], Callable[[], None]] = {}

    def submit(self, ex: Exchange, env: dict[str, Any], spool: IO[bytes] | None) -> None:
        job = _Job(self, ex, env, asyncio.get_running_loop())
        job.spool = spool
        try:
            self._track(self.pool.submit(job.run), job.abandon)
        except RuntimeError:  # the pool is shutting down
            job.abandon()

    def close_later(self, result: object, resp: Response | None) -> None:
        """Close a result on a pool thread (its close() may do the app's I/O)."""
        try:
            fut = self.pool.submit(close_result, result, resp)
        except RuntimeError:
            close_result(result, resp)
        else:
            self._track(fut, lambda: close_result(result, resp))

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


class _Job(Response):
    """One request in threads mode: the sink posts each piece of the response from the
    pool thread to the event loop, where :meth:`pump` hands it to the exchange."""

    __slots__ = (
        "cond",
        "draining",
        "ended",
        "env",
        "ex",
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
        # loop side
        self.queue: deque[tuple[int, Any, EncodedHead | None]] = deque()
        self.draining = False
        self.ended = False  # finish() or fail() has been called on the exchange

    # -- on the pool thread ------------------------------------------------------------
    def run(self) -> None:
        self.respond(self.runner.app, self.env)

    def put(self, head: EncodedHead | None, chunk: bytes) -> bool:
        self.post(_WRITE, chunk, head)
        return True  # post() itself waits while too much is queued

    def put_last(self, head: EncodedHead | None, chunk: bytes) -> None:
        self.post(_FINISH, chunk, head)

    def put_file(self, head: EncodedHead, wrapper: FileWrapper, file: tuple[int, int, int]) -> None:
        self.post(_SENDFILE, (wrapper, file), head)

    def put_failure(self, exc: Exception) -> None:
        self.post(_FAIL, exc, None)

    def later(self) -> None:  # pragma: no cover - put() never asks to wait
        raise RuntimeError("a thread's response never waits on the event loop")

    def post(self, kind: int, payload: Any, head: EncodedHead | None) -> None:
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
    def apply(self, kind: int, payload: Any, head: EncodedHead | None) -> None:
        if self.ended:
            if kind == _SENDFILE:
                self.runner.close_later(payload[0], self)
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
                self.runner.tasks.spawn(self.wait_drain())
                return
            kind, payload, head = queue.popleft()
            try:
                if head is not None:
                    ex.start_response(head[0], head[1])
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
                        fail_app(ex, payload, self.runner.debug)
                else:
                    self.ended = True
                    wrapper, file = payload
                    self.runner.tasks.spawn(
                        send_wrapped_file(
                            ex, self, wrapper, file, self.runner.debug, self.close_after
                        )
                    )
            except Exception as exc:
                self.stop()
                fail_app(ex, exc, self.runner.debug)
        if self.ended:
            self.stop()

    def abandon(self) -> None:
        """The request will not run (the pool is stopping): release what it holds."""
        self.close_spool()
        self.ex.fail(None)

    def close_after(self, result: object, resp: Response | None) -> None:
        self.runner.close_later(result, resp)

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
