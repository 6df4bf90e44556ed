"""A real :class:`~bastion.process.supervisor.Supervisor` whose workers are not forked.

Only the fork itself is replaced: ``_fork`` hands out a pid no Linux process can have,
and the test plays the worker through the write end of its real control pipe
(:meth:`Harness.tell`) and decides when it exits (:meth:`Harness.exit`). Everything else
-- the records of the workers, reload, recycling, restart delays, deadlines, signals
read from the real wakeup pipe -- is the supervisor's own code, one loop turn at a time
(:meth:`Harness.turn`). Signals the supervisor sends to workers are recorded instead
of sent (the ``make`` fixture has the supervisor build :class:`Recorded` records).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

from bastion.config.schema import Config, WorkersConfig
from bastion.process.children import Child, State
from bastion.process.control import ControlWriter, Message
from bastion.process.supervisor import Supervisor

# above the largest pid Linux can hand out (pid_max is at most 2**22)
FAKE_PID_BASE = 5_000_000


@dataclass(eq=False)
class Recorded(Child):
    """A worker record whose signals are kept, not sent."""

    received: list[int] = field(default_factory=list)

    def signal(self, sig: int) -> None:
        self.received.append(sig)


def exited(code: int) -> int:
    """The wait status of a process that exited with ``code``."""
    return code << 8


def killed(sig: int) -> int:
    """The wait status of a process killed by ``sig``."""
    return sig


class Harness(Supervisor):
    def __init__(self, **workers: Any) -> None:
        workers.setdefault("count", 2)
        super().__init__(Config(workers=WorkersConfig(**workers)), None)
        self.signals.install()
        self.selector.register(self.signals.read_fd, 1, None)  # selectors.EVENT_READ
        self.forked: list[Recorded] = []
        self._writers: dict[int, ControlWriter] = {}
        self._exits: list[tuple[int, int]] = []

    # -- the fork, replaced ------------------------------------------------------------
    def _fork(self, slot: int, read_fd: int, write_fd: int) -> int:
        pid = FAKE_PID_BASE + len(self.forked) + 1
        self._writers[pid] = ControlWriter(os.dup(write_fd))  # the worker's end
        return pid

    def _spawn(self, predecessor: Child | None = None, for_reload: bool = False) -> Child:
        child = super()._spawn(predecessor, for_reload)
        assert isinstance(child, Recorded)
        self.forked.append(child)
        return child

    def _reap(self) -> None:
        exits, self._exits = self._exits, []
        for pid, status in exits:
            child = self.children.pop(pid, None)
            if child is not None:
                self._on_exit(child, status)

    # -- driving it --------------------------------------------------------------------
    def turn(self) -> None:
        """One turn of the supervisor's loop, without waiting."""
        self._step(0)

    def tell(self, child: Child, kind: str, **kw: str) -> None:
        """The worker ``child`` sends a control message; the supervisor reads it."""
        self._writers[child.pid].send(Message(kind=kind, **kw))  # type: ignore[arg-type]
        self.turn()

    def exit(self, child: Child, status: int) -> None:
        """The worker ``child`` ends with wait status ``status``."""
        self._writers.pop(child.pid).close()
        self._exits.append((child.pid, status))
        self.turn()

    def send(self, sig: int) -> None:
        """A signal to the supervisor, through its real handlers and wakeup pipe."""
        os.kill(os.getpid(), sig)
        self.turn()

    def start(self) -> list[Recorded]:
        """Fork the workers and have each say ready: the supervisor is then running."""
        self.turn()
        for child in list(self.forked):
            self.tell(child, "ready", interface="asgi")
        assert self.phase == "running"
        return list(self.forked)

    # -- what it looks like ------------------------------------------------------------
    def ready(self) -> list[Child]:
        """Workers serving and not told to stop."""
        return [c for c in self.children.values() if c.state is State.READY]

    def starting(self) -> list[Child]:
        return [c for c in self.children.values() if c.state is State.STARTING]

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
        self._cleanup()


def soon(seconds: float) -> float:
    return time.monotonic() + seconds
