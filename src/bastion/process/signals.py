"""Signals in the supervisor: handlers only enqueue, the main loop decides.

A Python signal handler runs between two bytecodes of whatever the supervisor was doing,
so acting there (forking, killing, logging) invites re-entrancy bugs. Instead
``signal.set_wakeup_fd`` makes the C-level handler write each signal's number into a
pipe; the main loop waits on that pipe along with the workers' control pipes and reads
the numbers in arrival order. The Python-level handlers do nothing. What the
supervisor then does on each is :mod:`~bastion.process.signal_actions`.
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any

# SIGCHLD only wakes the loop so it reaps promptly.
ACTED_ON = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGCHLD,
    signal.SIGUSR1,  # reopen the log files
    signal.SIGUSR2,  # re-execute bastion (upgrade in place)
)


def _optional(*names: str) -> tuple[int, ...]:
    return tuple(int(getattr(signal, n)) for n in names if hasattr(signal, n))


# Signals whose default action ends the process but that mean nothing to bastion: a
# stray one (a timer of some tool, a power event, a resource limit) must not take the
# site down. They are logged and otherwise ignored. (SIGPIPE is ignored by Python
# itself; faults such as SIGSEGV must keep their default; SIGKILL and SIGSTOP cannot be
# caught.)
IGNORED: tuple[int, ...] = (
    *_optional(
        "SIGALRM", "SIGVTALRM", "SIGPROF", "SIGIO", "SIGPWR", "SIGSTKFLT", "SIGXCPU", "SIGXFSZ"
    ),
    *range(signal.SIGRTMIN, signal.SIGRTMAX + 1),
)
HANDLED: tuple[int, ...] = (*ACTED_ON, *IGNORED)


def signal_name(sig: int) -> str:
    """``SIGTERM``, or ``signal 99`` for a number Python has no name for."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _enqueued(signum: int, frame: FrameType | None) -> None:
    """The number is already in the wakeup pipe; nothing to do here."""


class SignalQueue:
    """The wakeup pipe and the handlers that feed it."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        os.set_blocking(self.write_fd, False)
        self._previous: dict[int, Any] = {}
        self._previous_wakeup = -1

    def install(self) -> None:
        self._previous_wakeup = signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, _enqueued)

    def pending(self) -> list[int]:
        """Every signal received since the last call, oldest first."""
        received: list[int] = []
        while True:
            try:
                data = os.read(self.read_fd, 512)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                break
            received.extend(data)
        return received

    def block(self) -> None:
        """Hold the handled signals back (around a fork); they stay pending."""
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)

    def unblock(self) -> None:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)

    def restore(self) -> None:
        """Put back the handlers found at :meth:`install` and close the pipe."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
        signal.set_wakeup_fd(self._previous_wakeup)
        for fd in (self.read_fd, self.write_fd):
            try:
                os.close(fd)
            except OSError:
                pass

    @property
    def fds(self) -> list[int]:
        return [self.read_fd, self.write_fd]
