"""The supervisor's record of each worker process it forked."""

from __future__ import annotations

import enum
import math
import os
import signal
from dataclasses import dataclass

from bastion.process.control import ControlReader
from bastion.process.memory import MemoryWatch


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
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"was killed by {name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
