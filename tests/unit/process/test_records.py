"""The small pieces: a worker's record and its pairing, exit statuses, the heartbeat
table, and the recycle limit a worker draws."""

from __future__ import annotations

import os
import signal
import time

import pytest

from bastion.process.children import Child, describe_status
from bastion.process.control import ControlReader
from bastion.process.heartbeat import HeartbeatTable
from bastion.process.worker import recycle_limit


def _child(pid: int) -> Child:
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    return Child(pid=pid, slot=0, control=ControlReader(read_fd), generation=0, started=0.0)


def test_unlink_forgets_the_pairing_from_either_side() -> None:
    old, new = _child(1), _child(2)
    for side in ("old", "new"):
        new.predecessor, old.successor = old, new
        (old if side == "old" else new).unlink()
        assert old.successor is None and new.predecessor is None
    for c in (old, new):
        c.control.close()


def test_exit_statuses_are_described() -> None:
    assert describe_status(signal.SIGKILL) == "was killed by SIGKILL"
    assert describe_status(signal.SIGSEGV | 0x80) == "was killed by SIGSEGV"  # core dumped
    assert describe_status(3 << 8) == "exited with status 3"
    assert describe_status(0) == "exited with status 0"


def test_heartbeat_slots() -> None:
    table = HeartbeatTable(slots=2)
    try:
        a = table.allocate()
        b = table.allocate()
        assert {a, b} == {0, 1}
        with pytest.raises(RuntimeError):
            table.allocate()
        assert table.last_beat(a) == 0.0, "no beat yet"
        before = time.monotonic()
        table.beat(a)
        assert before <= table.last_beat(a) <= time.monotonic()
        assert table.last_beat(b) == 0.0
        table.release(a)
        assert table.allocate() == a
        assert table.last_beat(a) == 0.0, "a reused slot starts without a beat"
    finally:
        table.close()


def test_recycle_limit_is_drawn_within_the_jitter() -> None:
    draws = [recycle_limit(1000, 50) for _ in range(500)]
    assert all(1000 <= n <= 1050 for n in draws)
    assert min(draws) < 1010 and max(draws) > 1040  # spread over the range
    assert len(set(draws)) > 25
    assert {recycle_limit(1000, 0) for _ in range(20)} == {1000}
