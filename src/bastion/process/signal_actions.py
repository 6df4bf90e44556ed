"""What the supervisor does on each signal it acts on (docs/signals.md).

The signals reach the main loop through the queue of :mod:`~bastion.process.signals`;
:func:`on_signal` is called for each, in arrival order, with the supervisor, whose
state it changes and whose steps (stop, reload) it takes:

* SIGTERM, SIGINT: stop gracefully (SIGTERM first drains with ``workers.drain_delay``;
  during an upgrade the old bastion hands over; SIGINT twice stops at once);
* SIGQUIT: stop at once;
* SIGHUP: the rolling reload (:mod:`~bastion.process.rolling_reload`);
* SIGTTIN, SIGTTOU: one worker more, one fewer;
* SIGUSR1: reopen the log files (logrotate);
* SIGUSR2: upgrade in place (:mod:`~bastion.process.upgrade`);
* the signals in ``IGNORED``: logged only. SIGCHLD only wakes the loop to reap.
"""

from __future__ import annotations

import math
import signal
import time
from typing import TYPE_CHECKING

from bastion.observe.logging import logger, reopen_error_log
from bastion.process.children import State
from bastion.process.rolling_reload import start_reload
from bastion.process.signals import IGNORED, signal_name

if TYPE_CHECKING:
    from bastion.process.supervisor import Supervisor


def on_signal(sup: Supervisor, sig: int) -> None:
    """Act on ``sig``, one the supervisor's queue delivered."""
    if sig == signal.SIGCHLD:
        return
    if sig in (signal.SIGTERM, signal.SIGINT):
        if (
            sup.phase != "stopping"
            and sup.upgrade.new is not None
            and sig == signal.SIGTERM
            and sup.upgrade.new_took_over()
        ):
            # from the new bastion, ready to serve (it said so first)
            logger.info(
                "SIGTERM received while the new bastion (pid %d) runs: handing over "
                "and stopping gracefully",
                sup.upgrade.new.pid,
            )
            sup.upgrade.hand_over_files(sup.listeners)
            if sup.admin is not None:
                sup.admin.hand_over()
            sup._stop(immediate=False, retire=True)
        elif sup.phase != "stopping":
            name = signal.Signals(sig).name
            if sup.upgrade.new is not None:
                # an operator's stop while the new bastion starts: both stop
                logger.info(
                    "%s received during an upgrade: stopping, and the new bastion (pid %d)",
                    name,
                    sup.upgrade.new.pid,
                )
                sup._stop(immediate=False)
                return
            if sig == signal.SIGTERM and _drain_first(sup):
                return
            logger.info("%s received: stopping gracefully", name)
            sup._stop(immediate=False)
        elif sig == signal.SIGINT:
            logger.info("SIGINT received again: stopping now")
            sup._stop(immediate=True)
    elif sig == signal.SIGQUIT:
        logger.info("SIGQUIT received: stopping now")
        sup._stop(immediate=True)
    elif sig == signal.SIGHUP:
        start_reload(sup)
    elif sig == signal.SIGTTIN:
        sup.target += 1
        logger.info("SIGTTIN received: %d workers", sup.target)
    elif sig == signal.SIGTTOU:
        if sup.target > 1:
            sup.target -= 1
        logger.info("SIGTTOU received: %d worker%s", sup.target, "s"[: sup.target - 1])
    elif sig == signal.SIGUSR1:
        _reopen_logs(sup)
    elif sig == signal.SIGUSR2:
        _start_upgrade(sup)
    elif sig in IGNORED:
        logger.warning("%s received: ignored", signal_name(sig))


def _reopen_logs(sup: Supervisor) -> None:
    """SIGUSR1 (logrotate): open the log files again by name, here and in every
    worker (which the supervisor tells with SIGHUP)."""
    try:
        reopened = reopen_error_log()
    except OSError as exc:
        logger.error("SIGUSR1: cannot reopen log.error_file: %s", exc)
        reopened = False
    logger.info("SIGUSR1 received: %s", "log files reopened" if reopened else "logs reopened")
    for child in sup.children.values():
        # retiring ones too: they still log (their last requests, their WebSockets'
        # ends); a starting one ignores SIGHUP and opens the files by name anyway
        if child.state is State.READY or child.state is State.RETIRING:
            child.signal(signal.SIGHUP)


def _start_upgrade(sup: Supervisor) -> None:
    """SIGUSR2: start a new bastion on the same sockets (see process/upgrade.py)."""
    upgrade = sup.upgrade
    draining = sup.drain_at != math.inf
    if sup.phase != "running" or upgrade.new is not None or upgrade.handed_over or draining:
        busy = f"upgrading (new bastion pid {upgrade.new.pid})" if upgrade.new else sup.phase
        logger.info("SIGUSR2 received while %s: ignored", "draining" if draining else busy)
        return
    admin = sup.admin.sock if sup.admin is not None else None
    upgrade.start(sup.listeners, admin, sup.config.admin.bind)


def _drain_first(sup: Supervisor) -> bool:
    """SIGTERM: readiness goes false at once; with ``workers.drain_delay`` the workers
    keep serving that long before the graceful stop. True while draining."""
    if sup.admin is not None:
        sup.admin.board.set_draining()
    delay = sup.config.workers.drain_delay
    if sup.drain_at != math.inf:
        logger.info("SIGTERM received again: stopping gracefully now")
        sup.drain_at = math.inf
        return False
    if delay <= 0 or sup.phase != "running":
        return False
    logger.info("SIGTERM received: not ready, serving %gs more (workers.drain_delay)", delay)
    sup.drain_at = time.monotonic() + delay
    return True
