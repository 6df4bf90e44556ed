"""The background tasks of one worker, and how long they may run at shutdown.

Whatever answers a request outside the protocol's callback runs as a task of the
worker's one :class:`WorkerTasks`: an ASGI app's request, the rest of a WSGI response
written to a slow client, a static file sent with ``sendfile``, a filter's sub-request.
At shutdown, once the connections have drained, the worker gives them a grace period
to end on their own and then cancels what is left (:meth:`WorkerTasks.finish`).

On Python 3.12 and later a task starts eagerly: its coroutine runs at once, inside the
call that spawned it, up to its first real suspension; one that never suspends (an app
that answers from memory) completes without a trip through the event loop's queue.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Coroutine
from typing import Any

__all__ = ["EAGER_TASKS", "WorkerTasks"]

log = logging.getLogger("bastion.error")

_EAGER = sys.version_info >= (3, 12)
#: whether :meth:`WorkerTasks.spawn` runs a coroutine's first step at once (3.12+)
EAGER_TASKS = _EAGER


class WorkerTasks:
    """A set of running tasks owned by one worker."""

    __slots__ = ("_eager", "_tasks")

    def __init__(self, *, eager: bool = _EAGER) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        self._eager = eager and _EAGER

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task of this worker (eagerly where Python allows)."""
        loop = asyncio.get_running_loop()
        if self._eager:
            task: asyncio.Task[Any] = asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
            if task.done():
                return task  # finished without suspending: nothing to track
        else:
            task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def finish(self, grace: float) -> None:
        """Let the tasks still running end on their own for ``grace`` seconds, then
        cancel the rest (and give them a second to unwind)."""
        if self._tasks and grace > 0:
            log.info("waiting for %d running request task(s)", len(self._tasks))
            await asyncio.wait(list(self._tasks), timeout=grace)
        left = [task for task in self._tasks if not task.done()]
        for task in left:
            task.cancel()
        if left:
            log.warning("cancelled %d request task(s) still running", len(left))
            await asyncio.wait(left, timeout=1.0)

    def cancel_all(self) -> None:
        """Cancel every task now (an immediate stop)."""
        for task in list(self._tasks):
            task.cancel()
