"""Signals in the supervisor: real signals to this process, read from the wakeup pipe in
the order they came; held back while blocked; the previous handlers put back."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from bastion.process.signals import HANDLED, SignalQueue


@pytest.fixture
def queue() -> Iterator[SignalQueue]:
    before = {sig: signal.getsignal(sig) for sig in HANDLED}
    q = SignalQueue()
    q.install()
    try:
        yield q
    finally:
        q.unblock()
        q.restore()
        assert {sig: signal.getsignal(sig) for sig in HANDLED} == before


def test_signals_are_queued_in_arrival_order(queue: SignalQueue) -> None:
    for sig in (signal.SIGTTIN, signal.SIGHUP, signal.SIGTTOU, signal.SIGTTIN):
        os.kill(os.getpid(), sig)
    assert queue.pending() == [signal.SIGTTIN, signal.SIGHUP, signal.SIGTTOU, signal.SIGTTIN]
    assert queue.pending() == []


def test_the_handlers_only_enqueue(queue: SignalQueue) -> None:
    os.kill(os.getpid(), signal.SIGTERM)  # would end this process without the handler
    os.kill(os.getpid(), signal.SIGINT)  # would raise KeyboardInterrupt
    assert queue.pending() == [signal.SIGTERM, signal.SIGINT]


def test_blocked_signals_wait_until_unblocked(queue: SignalQueue) -> None:
    queue.block()
    # to this thread, where it is blocked (the supervisor has no other thread; the test
    # runner may, and a process-directed signal would go to one of them)
    signal.pthread_kill(threading.get_ident(), signal.SIGHUP)
    assert queue.pending() == []
    assert signal.SIGHUP in signal.sigpending()
    queue.unblock()
    assert queue.pending() == [signal.SIGHUP]


def test_restore_puts_back_the_wakeup_fd_and_handlers() -> None:
    outer = SignalQueue()
    outer.install()
    inner = SignalQueue()
    inner.install()
    inner.restore()
    try:
        os.kill(os.getpid(), signal.SIGTTIN)
        assert outer.pending() == [signal.SIGTTIN]
    finally:
        outer.restore()
    assert signal.set_wakeup_fd(-1) == -1


def test_every_signal_since_the_last_call_is_returned(queue: SignalQueue) -> None:
    for _ in range(600):  # more than one read of the pipe
        os.kill(os.getpid(), signal.SIGTTIN)
    os.kill(os.getpid(), signal.SIGHUP)
    assert queue.pending() == [signal.SIGTTIN] * 600 + [signal.SIGHUP]
