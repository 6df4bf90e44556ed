"""The supervisor's watch over its workers' memory (``workers.max_memory``): each ready
worker is read every ``workers.memory_check_interval`` (give or take a fifth, so that
the readings spread), one that keeps growing is reported, and one over the limit is
replaced -- one at a time. The readings themselves are :mod:`bastion.process.memory`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection

from bastion.config.schema import WorkersConfig
from bastion.observe.logging import logger
from bastion.process.children import Child, State
from bastion.process.memory import MemoryWatch, mib, read_memory


def first_watch(now: float, interval: float) -> MemoryWatch:
    """The watch of a worker that just became ready."""
    # a random first reading, so that the workers' readings (and recycling) spread
    return MemoryWatch(now + interval * random.uniform(0.2, 1.0))


def check_memory(
    children: Collection[Child],
    workers: WorkersConfig,
    now: float,
    replace: Callable[[Child], object],
) -> None:
    """Read the memory of each worker whose turn it is; report one that keeps growing,
    and ``replace`` one over ``workers.max_memory``.

    ``children`` is the supervisor's live view of its workers: a replacement that
    ``replace`` starts shows in it, and holds back the next one.
    """
    limit = workers.max_memory
    for child in list(children):
        watch = child.memory
        if watch is None or child.state is not State.READY or now < watch.next_check:
            continue
        watch.next_check = now + workers.memory_check_interval * random.uniform(0.8, 1.2)
        size = read_memory(child.pid, workers.memory_metric)
        if not size:
            continue
        growing = watch.record(size)
        if growing:
            logger.warning(
                "worker %d: memory (%s) %s%s",
                child.pid,
                workers.memory_metric.upper(),
                growing,
                "" if limit else "; workers.max_memory would recycle it",
            )
        if not limit or size <= limit or child.successor is not None:
            continue
        if any(c.predecessor is not None for c in children):
            continue  # a replacement is starting: one at a time
        logger.warning(
            "worker %d uses %s (%s), over workers.max_memory (%s): replacing it%s",
            child.pid,
            mib(size),
            workers.memory_metric.upper(),
            mib(limit),
            # over at its first reading: its replacement will be too, and so on
            "; it was over at its first check: workers.max_memory is below what a "
            "fresh worker takes, raise it"
            if watch.checks == 1
            else "",
        )
        replace(child)
