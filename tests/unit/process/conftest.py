"""Fixtures for the process unit tests: the supervisor harness and the log it writes."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from bastion.process import supervisor
from tests.unit.process.harness import Harness, Recorded


@pytest.fixture
def logs() -> Iterator[list[str]]:
    """The messages bastion's logger writes during the test."""
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record.getMessage())

    log = logging.getLogger("bastion")
    handler = Keep(logging.DEBUG)
    level, propagate = log.level, log.propagate
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield records
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        log.propagate = propagate


@pytest.fixture
def make(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """``make(count=..., ...)`` builds a Harness; each is cleaned up after the test."""
    monkeypatch.setattr(supervisor, "Child", Recorded)
    made: list[Harness] = []

    def build(**workers: Any) -> Harness:
        h = Harness(**workers)
        made.append(h)
        return h

    previous = signal.getsignal(signal.SIGINT)
    try:
        yield build
    finally:
        for h in reversed(made):  # undo the signal handlers in the order they nest
            h.close()
        assert signal.getsignal(signal.SIGINT) is previous
