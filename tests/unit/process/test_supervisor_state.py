"""The supervisor's bookkeeping, one loop turn at a time, with workers that are not
forked (see harness.py): who is started, replaced, retired, signalled and when."""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest

from bastion.process import supervisor
from bastion.process.children import State
from bastion.process.supervisor import (
    BACKOFF_MAX,
    BACKOFF_MIN,
    BACKOFF_RESET,
    SHUTDOWN_GRACE,
    restart_delay,
)
from tests.unit.process.harness import Harness, exited, killed

Make = Any  # the ``make`` fixture: (**workers) -> Harness


def serving_count(h: Harness) -> int:
    return len(h._serving())


# -- restart delay -----------------------------------------------------------------------
def test_restart_delay_doubles_with_each_crash_up_to_the_cap() -> None:
    backoff, delays = BACKOFF_MIN, []
    for _ in range(10):
        delay, backoff = restart_delay(backoff, lived=1.0)
        delays.append(delay)
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0]
    assert BACKOFF_MAX == 10.0


def test_restart_delay_starts_again_after_a_worker_that_stayed_up() -> None:
    assert restart_delay(BACKOFF_MAX, lived=BACKOFF_RESET) == (BACKOFF_MIN, 2 * BACKOFF_MIN)
    assert restart_delay(BACKOFF_MAX, lived=BACKOFF_RESET - 0.1) == (BACKOFF_MAX, BACKOFF_MAX)
    assert BACKOFF_RESET == 30.0


# -- start-up ----------------------------------------------------------------------------
def test_start_up_forks_the_target_and_runs_once_every_worker_is_ready(
    make: Make, logs: list[str]
) -> None:
    h = make(count=3)
    h.turn()
    assert len(h.forked) == 3 and h.phase == "starting"
    h.turn()
    assert len(h.forked) == 3, "a starting worker counts toward the target"
    for child in h.forked[:2]:
        h.tell(child, "ready", interface="asgi")
    assert h.phase == "starting"
    assert not any("ready: serving" in line for line in logs)
    h.tell(h.forked[2], "ready", interface="asgi")
    assert h.phase == "running"
    assert next(line for line in logs if "ready: serving" in line).count("with 3 workers") == 1
    assert all(c.state is State.READY and c.interface == "asgi" for c in h.forked)


def test_a_worker_that_cannot_start_stops_everything_without_a_retry(
    make: Make, logs: list[str]
) -> None:
    h = make(count=3)
    h.turn()
    bad = h.forked[0]
    h.tell(bad, "failed", message="could not import module 'main'")
    assert h.phase == "stopping" and h.exit_code == supervisor.EXIT_FAILED
    assert "could not import module 'main'" in logs
    assert all(c.received == [signal.SIGTERM] for c in h.forked)
    h.exit(bad, exited(3))
    h.turn()
    assert len(h.forked) == 3, "nothing restarted"
    assert not any("starting a new worker" in line for line in logs)


# -- max_requests ------------------------------------------------------------------------
def test_recycle_retires_the_worker_only_once_its_replacement_is_ready(
    make: Make, logs: list[str]
) -> None:
    h = make(count=2, graceful_timeout=7)
    old, other = h.start()
    h.tell(old, "recycle")
    assert len(h.forked) == 3
    new = h.forked[2]
    assert new.predecessor is old and old.successor is new and not new.for_reload
    # the old worker goes on serving; the replacement does not count yet
    assert old.state is State.READY and old.received == []
    assert serving_count(h) == 2
    h.tell(old, "recycle")  # asking twice starts no second replacement
    h.turn()
    assert len(h.forked) == 3
    h.tell(new, "ready", interface="asgi")
    assert old.state is State.RETIRING and old.received == [signal.SIGUSR2]
    assert old.kill_at == pytest.approx(time.monotonic() + 7 + SHUTDOWN_GRACE, abs=1)
    assert new.predecessor is None and old.successor is None
    assert set(h.ready()) == {new, other}
    assert f"worker {new.pid} ready in place of worker {old.pid}" in logs
    assert f"stopping worker {old.pid} (replaced)" in logs
    h.exit(old, exited(0))
    assert f"worker {old.pid} stopped" in logs
    assert len(h.forked) == 3 and h.respawn_at == 0.0


def test_a_recycle_replacement_that_cannot_start_leaves_the_old_worker_serving(
    make: Make, logs: list[str]
) -> None:
    h = make(count=1)
    (old,) = h.start()
    h.tell(old, "recycle")
    new = h.forked[1]
    h.tell(new, "failed", message="boom")
    h.exit(new, exited(3))
    assert f"worker {new.pid} could not start: boom" in logs
    assert old.state is State.READY and old.received == []
    assert h.respawn_at == 0.0 and h.backoff == BACKOFF_MIN
    h.turn()
    assert len(h.forked) == 2


def test_recycle_is_ignored_while_starting_or_retiring(make: Make) -> None:
    h = make(count=1)
    h.turn()
    (child,) = h.forked
    h.tell(child, "recycle")  # still starting: the supervisor is not running yet
    assert len(h.forked) == 1
    h.tell(child, "ready", interface="asgi")
    h.send(signal.SIGTTIN)
    h.tell(h.forked[1], "ready", interface="asgi")
    h.send(signal.SIGTTOU)  # retires the newest
    retiring = h.forked[1]
    assert retiring.state is State.RETIRING
    h.tell(retiring, "recycle")
    assert len(h.forked) == 2


# -- rolling reload ----------------------------------------------------------------------
def test_reload_replaces_one_worker_at_a_time_never_serving_fewer(
    make: Make, logs: list[str]
) -> None:
    h = make(count=3)
    olds = h.start()
    h.send(signal.SIGHUP)
    assert "SIGHUP received: reloading 3 workers one by one" in logs
    replaced = []
    for old in olds:  # oldest first
        assert len(h.starting()) == 1, "one replacement at a time"
        (new,) = h.starting()
        assert new.predecessor is old and new.for_reload and new.generation == 1
        assert old.received == [] and old.state is State.READY
        h.turn()
        assert h.starting() == [new], "nothing more until it is ready"
        assert len(h.ready()) == 3
        h.tell(new, "ready", interface="asgi")
        assert old.received == [signal.SIGUSR2] and old.state is State.RETIRING
        assert len(h.ready()) == 3
        replaced.append(new)
    assert h.starting() == [] and not h.reloading
    assert "reload complete: 3 workers serving" in logs
    assert set(h.ready()) == set(replaced)
    assert all(c.generation == 1 for c in h.ready())
    for old in olds:
        h.exit(old, exited(0))
    h.turn()
    assert len(h.forked) == 6


def test_reload_stops_at_a_replacement_that_cannot_start(make: Make, logs: list[str]) -> None:
    h = make(count=2)
    olds = h.start()
    h.send(signal.SIGHUP)
    (new,) = h.starting()
    h.tell(new, "failed", message="ImportError: half-deployed")
    h.exit(new, exited(3))
    assert f"worker {new.pid} could not start: ImportError: half-deployed" in logs
    assert "reload failed: keeping the running workers" in logs
    assert not h.reloading
    for _ in range(3):
        h.turn()
    assert len(h.forked) == 3, "no second attempt, no restart"
    assert h.respawn_at == 0.0 and h.backoff == BACKOFF_MIN
    assert all(c.state is State.READY and c.received == [] for c in olds)
    # the next SIGHUP tries again
    h.send(signal.SIGHUP)
    (again,) = h.starting()
    assert again.predecessor is olds[0] and again.generation == 2


def test_sighup_is_ignored_while_starting(make: Make, logs: list[str]) -> None:
    h = make(count=1)
    h.turn()
    h.send(signal.SIGHUP)
    assert "SIGHUP received while starting: ignored" in logs
    assert h.generation == 0 and not h.reloading


# -- crashes -----------------------------------------------------------------------------
def test_a_crashed_worker_is_replaced_after_a_delay_that_doubles(
    make: Make, logs: list[str]
) -> None:
    h = make(count=1)
    (child,) = h.start()
    for expected in (0.1, 0.2, 0.4):
        crashed = time.monotonic()
        h.exit(child, killed(signal.SIGKILL))
        assert f"worker {child.pid} was killed by SIGKILL unexpectedly" in logs
        assert logs[-1] == f"starting a new worker in {expected:.1f}s"
        assert h.respawn_at == pytest.approx(crashed + expected, abs=0.05)
        forked = len(h.forked)
        h.turn()
        assert len(h.forked) == forked, "not before the delay"
        assert h._wait_time() <= expected + 0.01  # the loop wakes up for it
        time.sleep(max(0.0, h.respawn_at - time.monotonic()))
        h.turn()
        assert len(h.forked) == forked + 1
        child = h.forked[-1]
        h.tell(child, "ready", interface="asgi")
    assert h.backoff == 0.8


def test_the_delay_starts_again_once_a_crashed_worker_had_stayed_up(make: Make) -> None:
    h = make(count=1)
    (child,) = h.start()
    h.backoff = 6.4  # after several crashes in a row
    child.started = time.monotonic() - BACKOFF_RESET - 1
    h.exit(child, killed(signal.SIGSEGV))
    assert h.respawn_at - time.monotonic() <= BACKOFF_MIN
    assert h.backoff == 2 * BACKOFF_MIN


def test_a_retiring_worker_that_exits_is_not_a_crash(make: Make, logs: list[str]) -> None:
    h = make(count=2)
    first, second = h.start()
    h.send(signal.SIGTTOU)
    assert second.state is State.RETIRING, "the newest goes first"
    h.exit(second, killed(signal.SIGTERM))
    h.turn()
    assert len(h.forked) == 2 and h.respawn_at == 0.0
    assert not any("unexpectedly" in line or "new worker" in line for line in logs)


def test_a_starting_worker_past_startup_timeout_is_killed(make: Make, logs: list[str]) -> None:
    h = make(count=1, startup_timeout=0.05)
    h.start()
    h.send(signal.SIGTTIN)
    late = h.forked[1]
    time.sleep(0.1)
    h.turn()
    assert late.received == [signal.SIGKILL] and late.failure == "start-up timed out"
    assert f"worker {late.pid} did not start within 0.05s: killing it" in logs


# -- workers wanted ----------------------------------------------------------------------
def test_sigttin_and_sigttou_change_the_target_never_below_one(make: Make) -> None:
    h = make(count=2)
    h.start()
    h.send(signal.SIGTTIN)
    assert h.target == 3 and len(h.starting()) == 1
    for _ in range(5):
        h.send(signal.SIGTTOU)
    assert h.target == 1
    assert serving_count(h) == 1
    # the longest-running worker is the one kept
    assert h._serving() == [h.forked[0]]
    retired = [c for c in h.forked[1:] if c.state is State.RETIRING]
    assert len(retired) == 2 and all(c.received == [signal.SIGUSR2] for c in retired)


# -- stopping ----------------------------------------------------------------------------
def test_sigterm_stops_every_worker_gracefully_then_kills_the_late_ones(
    make: Make, logs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "SHUTDOWN_GRACE", 0.05)
    h = make(count=2, graceful_timeout=0.05)
    quick, late = h.start()
    h.send(signal.SIGTERM)
    assert "SIGTERM received: stopping gracefully" in logs
    assert h.phase == "stopping"
    for child in (quick, late):
        assert child.state is State.RETIRING and child.received == [signal.SIGTERM]
        assert child.kill_at == pytest.approx(time.monotonic() + 0.1, abs=0.05)
    h.exit(quick, exited(0))
    time.sleep(0.15)
    h.turn()
    assert quick.received == [signal.SIGTERM]
    assert late.received == [signal.SIGTERM, signal.SIGKILL]
    assert f"worker {late.pid} did not stop in time: killing it" in logs
    h.turn()
    assert late.received.count(signal.SIGKILL) == 1, "killed once"
    h.exit(late, killed(signal.SIGKILL))
    assert f"worker {late.pid} was killed by SIGKILL" in logs
    assert h.children == {} and h.exit_code == supervisor.EXIT_OK
    assert len(h.forked) == 2, "nothing restarted while stopping"


def test_sigquit_stops_at_once_and_a_second_sigint_too(make: Make) -> None:
    h = make(count=1)
    (ready,) = h.start()
    h.send(signal.SIGTTIN)
    starting = h.forked[1]
    h.send(signal.SIGQUIT)
    # a worker still starting has no handlers yet: SIGKILL rather than a core dump
    assert ready.received == [signal.SIGQUIT] and starting.received == [signal.SIGKILL]
    assert ready.kill_at <= time.monotonic() + supervisor.QUIT_WAIT

    h2 = make(count=1)
    (child,) = h2.start()
    h2.send(signal.SIGINT)
    assert child.received == [signal.SIGTERM]
    h2.send(signal.SIGTERM)  # a repeated SIGTERM changes nothing
    assert child.received == [signal.SIGTERM]
    h2.send(signal.SIGINT)
    assert child.received == [signal.SIGTERM, signal.SIGQUIT]


# -- heartbeats --------------------------------------------------------------------------
def test_a_worker_whose_loop_stopped_beating_gets_a_stack_dump_then_sigkill(
    make: Make, logs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(supervisor, "DUMP_WAIT", 0.05)
    h = make(count=2, timeout=0.2)
    stuck, healthy = h.start()
    h.heartbeat.beat(stuck.slot)
    time.sleep(0.3)
    h.heartbeat.beat(healthy.slot)
    h.turn()
    assert f"worker {stuck.pid} timed out (event loop blocked > 0.2s)" in logs
    assert stuck.received == [signal.SIGUSR1] and stuck.state is State.RETIRING
    assert healthy.received == []
    assert len(h.starting()) == 1, "its replacement starts at once"
    time.sleep(0.1)
    h.turn()
    assert stuck.received == [signal.SIGUSR1, signal.SIGKILL]
    assert not any("did not stop in time" in line for line in logs)


def test_a_worker_that_never_beat_is_not_taken_for_blocked(make: Make) -> None:
    h = make(count=1, timeout=0.05)
    (child,) = h.start()
    time.sleep(0.1)
    h.turn()
    assert child.received == []
