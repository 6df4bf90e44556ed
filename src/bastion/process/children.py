"""The supervisor's record of each worker process it forked, and what it says of one
that ended."""

from __future__ import annotations

import enum
import math
import os
import signal
import time
from dataclasses import dataclass

from bastion.observe.logging import logger
from bastion.process.control import ControlReader
from bastion.process.heartbeat import HeartbeatTable
from bastion.process.memory import MemoryWatch
from bastion.process.signals import signal_name


class State(enum.Enum):
    STARTING = "starting"  # forked; loading the app and running lifespan start-up
    READY = "ready"  # serving requests
    RETIRING = "retiring"  # told to stop (or being killed); no longer counted


@dataclass(eq=False)
class Child:
    """One worker, seen from the supervisor."""

    pid: int
    slot: int  # heartbeat slot
    control: ControlReader
    generation: int  # bumped by each reload: older generations run older code
    started: float  # monotonic time of the fork
    state: State = State.STARTING
    interface: str = ""
    # a replacement and the worker it replaces, until the replacement is ready
    predecessor: Child | None = None
    successor: Child | None = None
    for_reload: bool = False  # started by a rolling reload
    failure: str = ""  # the app's message when the worker could not start
    reason: str = ""  # why it is retiring, for the log
    kill_at: float = math.inf  # when to SIGKILL it if it has not exited
    memory: MemoryWatch | None = None  # readings of its memory, once it is ready

    def signal(self, sig: int) -> None:
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            pass

    def unlink(self) -> None:
        """Forget any replacement pairing (this one is retiring or gone)."""
        if self.successor is not None:
            self.successor.predecessor = None
            self.successor = None
        if self.predecessor is not None:
            self.predecessor.successor = None
            self.predecessor = None


def describe_status(status: int) -> str:
    """``exited with status 1`` / ``was killed by SIGKILL``, from a wait status."""
    if os.WIFSIGNALED(status):
        return f"was killed by {signal_name(os.WTERMSIG(status))}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def lost_requests(child: Child, status: int, heartbeat: HeartbeatTable) -> str:
    """For a worker that died (crashed, or killed for a blocked loop) with wait
    ``status``: what it held at its last heartbeat, which its clients lost; '' for a
    clean exit. Logged here for a worker that was retiring or blocked."""
    if child.state is State.STARTING or (os.WIFEXITED(status) and not os.WEXITSTATUS(status)):
        return ""
    killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    if child.state is State.RETIRING and child.reason != "timeout" and not killed:
        return ""  # a retiring worker that stopped by itself finished or closed them
    last = heartbeat.last_beat(child.slot)
    if not last:
        return ""
    conns, busy = heartbeat.last_load(child.slot)
    if child.reason == "timeout":
        busy = max(busy, 1)  # at least the request that blocked the loop
        conns = max(conns, busy)
    message = (
        f": it held {conns} connection{'s'[: conns != 1]}, {busy} with a request in "
        f"progress (at its last heartbeat, {time.monotonic() - last:.1f}s before); "
        "those requests failed"
    )
    if child.reason:  # (a worker retiring, or blocked: logged here, not below)
        logger.error("worker %d %s%s", child.pid, describe_status(status), message)
    return message
