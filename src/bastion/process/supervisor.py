"""The supervisor: owns the sockets, forks the workers, and keeps them running.

It is deliberately plain blocking Python with no event loop and no threads, because it
forks. One loop waits (``selectors``) on the signal wakeup pipe and on every worker's
control pipe, then reaps exited workers, checks heartbeats and deadlines, and brings the
number of workers back to the target. See docs/process.md and docs/signals.md.

Start-up: open the listeners, optionally preload the app
(:mod:`~bastion.process.startup`), fork ``workers.count`` workers and wait until every
one says ``ready``. If any worker cannot start (the app fails to import, lifespan
start-up fails) everything stops and ``run`` returns 1 with the app's message in the
log -- a broken deploy never turns into a restart loop.

This module is the loop and the workers' life (fork, ready, replace, retire, reap,
deadlines, stop); what it ties together lives beside it: the ``[[process]]`` programs
(:mod:`~bastion.process.managed`), the memory watch
(:mod:`~bastion.process.memory_check`), SIGHUP's rolling reload
(:mod:`~bastion.process.rolling_reload`), SIGUSR2's upgrade
(:mod:`~bastion.process.upgrade`), the ``--reload`` watcher
(:mod:`~bastion.process.watch`), the signal queue (:mod:`~bastion.process.signals`) and
what each signal does (:mod:`~bastion.process.signal_actions`).
"""

from __future__ import annotations

import gc
import math
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from bastion.config.schema import Config
from bastion.observe import stacks
from bastion.observe.board import READY as BOARD_READY
from bastion.observe.board import route_labels
from bastion.observe.logging import error_stream, logger, setup_logging
from bastion.process.admin import AdminSide
from bastion.process.children import Child, State, describe_status, lost_requests
from bastion.process.control import ControlReader, Message
from bastion.process.heartbeat import HeartbeatTable
from bastion.process.listeners import Listener, close_listeners
from bastion.process.managed import Managed, ManagedProcesses
from bastion.process.memory_check import check_memory, first_watch
from bastion.process.rolling_reload import (
    advance_reload,
    reload_failed,
    start_reload,
    warn_restart_only,
)
from bastion.process.signal_actions import on_signal
from bastion.process.signals import SignalQueue
from bastion.process.startup import (
    banner,
    open_before_fork,
    preload,
    report_fatal,
    share_with_workers,
    uses_default_app,
)
from bastion.process.systemd import Notifier, remove_pidfile
from bastion.process.tls import ServerTLS
from bastion.process.upgrade import Upgrade
from bastion.process.watch import Watcher
from bastion.process.worker import EXIT_STARTUP_FAILED, WorkerSpec, run_worker

EXIT_OK = 0
EXIT_FAILED = 1  # could not start (bind, app import, lifespan) or a fatal error

BACKOFF_MIN = 0.1  # first restart delay after a crash
BACKOFF_MAX = 10.0
BACKOFF_RESET = 30.0  # a worker that lived this long resets the delay
SHUTDOWN_GRACE = 5.0  # after graceful_timeout, time left for lifespan shutdown
DUMP_WAIT = 1.0  # between the stack-dump signal and SIGKILL for a blocked worker
QUIT_WAIT = 2.0  # after SIGQUIT, before SIGKILL
TICK = 1.0  # longest wait in the main loop (heartbeat checks)

ReloadConfig = Callable[[], Config]


def restart_delay(backoff: float, lived: float) -> tuple[float, float]:
    """After a worker crashed: how long to wait before starting its replacement, and
    the delay for the crash after that.

    ``backoff`` is the delay the previous crash left; ``lived`` is how long the crashed
    worker ran. The delay doubles with each crash in a row, up to ``BACKOFF_MAX``, and
    starts again from ``BACKOFF_MIN`` after a worker that lived ``BACKOFF_RESET``.
    """
    delay = BACKOFF_MIN if lived >= BACKOFF_RESET else backoff
    return delay, min(delay * 2, BACKOFF_MAX)


def worker_count(config: Config) -> int:
    """``workers.count``, with 0 meaning one per CPU this process may run on."""
    if config.workers.count:
        return config.workers.count
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def run(config: Config, *, reload: ReloadConfig | None = None) -> int:
    """Serve until told to stop; return the process exit status.

    ``reload`` re-reads the configuration (file, environment, the same command-line
    flags) on SIGHUP; it may raise to report an invalid configuration, which is logged
    and the running configuration kept. Without it SIGHUP re-imports the app only.
    """
    try:
        setup_logging(config.log)
    except OSError as exc:
        path = config.log.error_file
        sys.stderr.write(
            f"bastion: error: log.error_file: cannot open {path}: {exc.strerror or exc}\n"
        )
        return EXIT_FAILED
    return Supervisor(config, reload).run()


class Supervisor:
    def __init__(self, config: Config, reload: ReloadConfig | None) -> None:
        self.config = config
        self.reload_config = reload
        self.target = worker_count(config)
        self.children: dict[int, Child] = {}
        self.phase = "starting"  # starting -> running -> stopping
        self.exit_code = EXIT_OK
        self.listeners: list[Listener] = []
        self.tls: ServerTLS | None = None
        #: what a reload in progress replaced: configuration and TLS
        self.before_reload: tuple[Config, ServerTLS | None] | None = None
        self.loaded: Any = None
        self.heartbeat = HeartbeatTable()
        self.signals = SignalQueue()
        self.selector = selectors.DefaultSelector()
        self.generation = 0
        self.reloading = False
        #: --reload: the workers could not start with the code as it is; no worker is
        #: started again until the watcher reports a change (SIGHUP)
        self.awaiting_change = False
        #: --reload: the code changed while the workers were starting (a start that
        #: fails then tries again at once, on the new code)
        self.change_pending = False
        self.backoff = BACKOFF_MIN
        self.respawn_at = 0.0
        self.startup_deadline = math.inf
        self.stop_deadline = math.inf
        # the admin listener and the metrics board (docs/operations.md), if configured
        self.admin: AdminSide | None = AdminSide(config) if config.admin.bind else None
        self.drain_at = math.inf  # SIGTERM with workers.drain_delay: when to stop
        self.upgrade = Upgrade()  # SIGUSR2: the new bastion, or the old one (process/upgrade)
        self.notify = Notifier()  # systemd Type=notify (nothing without NOTIFY_SOCKET)
        self.pidfile = config.server.pidfile
        # [[process]]: programs run beside the workers
        self.managed = ManagedProcesses(config.process, self.selector)
        self.watcher = Watcher()  # --reload

    # -- start-up ----------------------------------------------------------------------
    def run(self) -> int:
        opened = open_before_fork(self.config, self.upgrade, self.admin)
        if opened is None:
            return EXIT_FAILED
        self.tls, self.listeners = opened
        if self.admin is not None and self.upgrade.old and self.admin.inherited:
            self.admin.held = True  # the old bastion's admin answers until we take over
        try:
            if self.config.workers.preload and uses_default_app(self.config):
                loaded, self.loaded = preload(self.config)
                if not loaded:
                    return EXIT_FAILED
            if self.config.workers.immortalize:
                share_with_workers()
            self.signals.install()
            self.selector.register(self.signals.read_fd, selectors.EVENT_READ, None)
            self._start_admin()
            self.startup_deadline = time.monotonic() + self.config.workers.startup_timeout
            self.managed.start_all()
            workers = self.config.workers
            if workers.reload:
                self.watcher.start(list(workers.reload_dirs) or [self.config.app.app_dir or "."])
            self._reconcile()
            self._loop()
        finally:
            self._cleanup()
        return self.exit_code

    # -- the main loop -----------------------------------------------------------------
    def _loop(self) -> None:
        while self.phase != "stopping" or self.children or self.managed.running:
            self._step(self._wait_time())

    def _step(self, timeout: float) -> None:
        """One turn of the loop: wait up to ``timeout`` for signals and messages, then
        reap, enforce deadlines and restore the number of workers."""
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                for sig in self.signals.pending():
                    on_signal(self, sig)
            elif isinstance(key.data, Managed):
                if not key.data.read_output():
                    self.selector.unregister(key.fd)
            else:
                self._read_messages(key.data)
        self._reap()
        self._check_deadlines()
        self.managed.check(time.monotonic(), stopping=self.phase == "stopping")
        self._check_memory()
        self._reconcile()
        if self.admin is not None:
            self.admin.board.beat()
            if not self.admin.pid:
                self._start_admin()

    def _wait_time(self) -> float:
        now = time.monotonic()
        deadlines = [now + TICK, self.startup_deadline, self.stop_deadline, self.drain_at]
        deadlines.extend(c.kill_at for c in self.children.values())
        deadlines.extend(self.managed.deadlines())
        if self.respawn_at > now and self.phase == "running":
            deadlines.append(self.respawn_at)
        return max(0.0, min(deadlines) - now)

    # -- the admin listener (docs/operations.md) ------------------------------------
    def _start_admin(self) -> None:
        """Fork the admin process (again, if it died and its restart delay is over)."""
        if self.admin is None:
            return
        close_fds = [*self.signals.fds, self.selector.fileno()]
        close_fds.extend(lst.sock.fileno() for lst in self.listeners if lst.sock.fileno() >= 0)
        close_fds.extend(c.control.fd for c in self.children.values() if c.control.fd >= 0)
        self.signals.block()
        try:
            if self.admin.restart_at:
                self.admin.due(close_fds)
            else:
                self.admin.start(close_fds)
        except OSError as exc:  # out of processes or memory: try again later
            logger.error("cannot start the admin process: %s", exc)
            self.admin.restart_at = time.monotonic() + 1.0
        finally:
            self.signals.unblock()

    # -- workers -----------------------------------------------------------------------
    def _spawn(self, predecessor: Child | None = None, for_reload: bool = False) -> Child:
        slot = self.heartbeat.allocate()
        if self.admin is not None:
            self.admin.board.reset(slot)
        read_fd, write_fd = os.pipe()
        try:
            pid = self._fork(slot, read_fd, write_fd)
        except OSError:
            os.close(read_fd)
            os.close(write_fd)
            self.heartbeat.release(slot)
            raise
        os.close(write_fd)
        if self.admin is not None:
            self.admin.board.started(slot, pid, self.generation)
        child = Child(
            pid=pid,
            slot=slot,
            control=ControlReader(read_fd),
            generation=self.generation,
            started=time.monotonic(),
            predecessor=predecessor,
            for_reload=for_reload,
        )
        if predecessor is not None:
            predecessor.successor = child
        self.children[pid] = child
        self.selector.register(read_fd, selectors.EVENT_READ, child)
        logger.debug("worker %d started", pid)
        return child

    def _fork(self, slot: int, read_fd: int, write_fd: int) -> int:
        """Fork a worker that beats in heartbeat ``slot`` and reports on ``write_fd``;
        return its pid. ``read_fd`` is the supervisor's end, which the worker closes."""
        close_fds = [*self.signals.fds, self.selector.fileno(), read_fd]
        close_fds.extend(self.managed.fds)
        close_fds.extend(c.control.fd for c in self.children.values())
        if self.admin is not None:
            close_fds.extend(self.admin.fds)
        spec = WorkerSpec(
            config=self.config,
            listeners=self.listeners,
            heartbeat=self.heartbeat,
            slot=slot,
            control_fd=write_fd,
            close_fds=close_fds,
            loaded=self.loaded,
            tls=self.tls,
            board=self.admin.board if self.admin is not None else None,
        )
        for stream in (sys.stdout, sys.stderr, error_stream()):
            stream.flush()
        # keep the pages of bastion's modules (and of a preloaded app) shared with the
        # workers: the collector of a worker would otherwise write to every object
        gc.freeze()
        self.signals.block()
        try:
            pid = os.fork()
            if pid == 0:
                run_worker(spec)  # unblocks the signals once its own handlers are set
        finally:
            self.signals.unblock()
        return pid

    def _try_spawn(self, predecessor: Child, for_reload: bool) -> Child | None:
        """Start a replacement for ``predecessor``; None (logged) if the fork failed."""
        try:
            return self._spawn(predecessor=predecessor, for_reload=for_reload)
        except OSError as exc:
            logger.error("cannot start a worker: %s", exc)
            return None

    def _serving(self) -> list[Child]:
        """Workers that count toward the target: not retiring, not someone's replacement."""
        return [
            c for c in self.children.values() if c.state is not State.RETIRING and not c.predecessor
        ]

    def _reconcile(self) -> None:
        """Start or retire workers until the target number is serving or starting."""
        if self.phase == "stopping" or self.awaiting_change:
            return
        serving = self._serving()
        missing = self.target - len(serving)
        if missing > 0:
            if self.phase == "running" and time.monotonic() < self.respawn_at:
                return
            for _ in range(missing):
                try:
                    self._spawn()
                except OSError as exc:  # out of processes or memory: try again later
                    logger.error("cannot start a worker: %s", exc)
                    if self.phase == "starting":
                        self._fatal(f"cannot start a worker: {exc}")
                    else:
                        self.respawn_at = time.monotonic() + BACKOFF_MAX
                    return
        elif missing < 0 and self.phase == "running":
            # retire the newest first: the longest-running ones are warm
            for child in sorted(serving, key=lambda c: c.started, reverse=True)[:-missing]:
                self._retire(child, "fewer workers wanted")

    def _retire(self, child: Child, reason: str) -> None:
        child.unlink()
        child.state = State.RETIRING
        child.reason = reason
        self._count_restart(child, "reload" if reason == "reloaded" else "")
        child.kill_at = time.monotonic() + self.config.workers.graceful_timeout + SHUTDOWN_GRACE
        logger.info("stopping worker %d (%s)", child.pid, reason)
        # SIGUSR2, not SIGTERM: its WebSockets may go on until graceful_timeout
        child.signal(signal.SIGUSR2)

    def _read_messages(self, child: Child) -> None:
        for msg in child.control.read():
            self._on_message(child, msg)
        if child.control.closed and child.control.fd >= 0:
            self.selector.unregister(child.control.fd)
            child.control.close()

    def _on_message(self, child: Child, msg: Message) -> None:
        if msg.kind == "failed":
            child.failure = msg.message
            if self.phase == "starting" and self.watcher.proc is None:
                self._fatal(msg.message)  # (--reload waits for a fix: see _on_exit)
        elif msg.kind == "ready":
            self._on_ready(child, msg.interface)
        elif (
            msg.kind == "recycle"
            and self.phase == "running"
            and child.state is State.READY
            and not child.successor
        ):
            logger.info("worker %d reached max_requests: replacing it", child.pid)
            self._count_restart(child, "max_requests")
            self._try_spawn(child, for_reload=False)

    def _on_ready(self, child: Child, interface: str) -> None:
        if child.state is not State.STARTING:
            return
        child.state = State.READY
        child.interface = interface
        if self.admin is not None:
            self.admin.board.set_state(child.slot, BOARD_READY)
        child.memory = first_watch(time.monotonic(), self.config.workers.memory_check_interval)
        logger.debug("worker %d serving", child.pid)
        old = child.predecessor
        if old is not None:
            logger.info("worker %d ready in place of worker %d", child.pid, old.pid)
            child.unlink()
            self._retire(old, "reloaded" if child.for_reload else "replaced")
        if self.phase == "starting" and not any(
            c.state is State.STARTING for c in self.children.values()
        ):
            self.phase = "running"
            self.startup_deadline = math.inf  # met: must not bound the loop's wait any more
            if self.admin is not None:
                self.admin.board.set_ready(True)
            banner(self.config, self.listeners, len(self._serving()), interface)
            self.upgrade.take_over(self.listeners, self.pidfile)
            if self.admin is not None and self.admin.held:
                self.admin.held = False
                self._start_admin()
            count = len(self._serving())
            self.notify.ready(
                f"serving with {count} worker{'s'[: count - 1]}",
                mainpid=os.getpid() if self.upgrade.took_over else 0,  # systemd: the new main pid
            )
            if self.change_pending:  # --reload: the code changed while they started
                self.change_pending = False
                start_reload(self)
        if child.for_reload:
            advance_reload(self)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.admin is not None and self.admin.reaped(pid, status):
                continue
            child = self.children.pop(pid, None)
            if child is not None:
                self._on_exit(child, status)
            elif not self.upgrade.reaped(pid, status) and not self.watcher.reaped(pid, status):
                self.managed.reaped(pid, status, stopping=self.phase == "stopping")

    def _on_exit(self, child: Child, status: int) -> None:
        if child.control.fd >= 0:
            self._read_messages(child)  # a last "failed" may have come with the exit
            if child.control.fd >= 0:
                self.selector.unregister(child.control.fd)
                child.control.close()
        lost = lost_requests(child, status, self.heartbeat)
        self.heartbeat.release(child.slot)
        if self.admin is not None:
            self.admin.board.exited(child.slot)
            stacks.forget(child.pid)
        replaced = child.predecessor
        child.unlink()
        how = describe_status(status)
        failed = os.WIFEXITED(status) and os.WEXITSTATUS(status) == EXIT_STARTUP_FAILED
        if self.phase == "stopping" or child.state is State.RETIRING:
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
                logger.info("worker %d stopped", child.pid)
            elif os.WIFSIGNALED(status) and os.WTERMSIG(status) in (signal.SIGTERM, signal.SIGUSR2):
                logger.debug("worker %d %s", child.pid, how)  # stopped before it could drain
            elif not (lost and child.reason):  # (else logged with what it held, just now)
                logger.warning("worker %d %s", child.pid, how)
            return
        if self.phase == "starting":
            if (child.failure or failed) and self.watcher.proc is not None:
                self._await_change(child, child.failure or how)
                return
            self._fatal(child.failure or f"worker {child.pid} {how} while starting")
            return
        if child.failure or failed:
            logger.error("worker %d could not start: %s", child.pid, child.failure or how)
            self._count_restart(child, "startup")
        else:
            logger.error("worker %d %s unexpectedly%s", child.pid, how, lost)
            self._count_restart(child, "crash")
        if child.for_reload and self.reloading:
            reload_failed(self)
        if replaced is not None:
            return  # the worker it was meant to replace keeps serving
        now = time.monotonic()
        delay, self.backoff = restart_delay(self.backoff, now - child.started)
        self.respawn_at = now + delay
        logger.info("starting a new worker in %.1fs", delay)

    # -- deadlines and heartbeats ------------------------------------------------------
    def _check_deadlines(self) -> None:
        now = time.monotonic()
        if now >= self.drain_at:
            logger.info("drain delay over: stopping gracefully")
            self._stop(immediate=False)
        if self.phase == "starting" and now >= self.startup_deadline:
            self._fatal(
                f"workers did not start within {self.config.workers.startup_timeout:g}s "
                "(workers.startup_timeout)"
            )
        timeout = self.config.workers.timeout
        startup_timeout = self.config.workers.startup_timeout
        for child in list(self.children.values()):
            if now >= child.kill_at:
                child.kill_at = math.inf
                if child.reason != "timeout":
                    logger.warning("worker %d did not stop in time: killing it", child.pid)
                child.signal(signal.SIGKILL)
                continue
            if child.state is State.STARTING:
                if self.phase == "running" and now - child.started > startup_timeout:
                    logger.error(
                        "worker %d did not start within %gs: killing it",
                        child.pid,
                        startup_timeout,
                    )
                    child.failure = "start-up timed out"
                    child.signal(signal.SIGKILL)
                continue
            if child.reason == "timeout":
                continue
            last = self.heartbeat.last_beat(child.slot)
            if last and now - last > timeout:
                logger.error("worker %d timed out (event loop blocked > %gs)", child.pid, timeout)
                self._retire_blocked(child, now)

    def _check_memory(self) -> None:
        """workers.max_memory and growth warnings (process/memory_check.py)."""
        if self.phase == "running":
            check_memory(
                self.children.values(),
                self.config.workers,
                time.monotonic(),
                self._replace_over_memory,
            )

    def _replace_over_memory(self, child: Child) -> None:
        if self._try_spawn(child, for_reload=False) is not None:
            self._count_restart(child, "max_memory")

    def _retire_blocked(self, child: Child, now: float) -> None:
        child.unlink()
        child.state = State.RETIRING
        child.reason = "timeout"
        self._count_restart(child, "timeout")
        child.signal(signal.SIGUSR1)  # faulthandler in the worker dumps every stack
        child.kill_at = now + DUMP_WAIT

    def _count_restart(self, child: Child, cause: str) -> None:
        """For the metrics: a worker is being replaced because of ``cause`` (also marks it
        retiring on the board; "" counts nothing)."""
        if self.admin is not None:
            self.admin.retiring(child.slot)
            if cause:
                self.admin.board.count_restart(cause)

    # -- reload (process/rolling_reload.py) -------------------------------------------
    def _apply_config(self, config: Config, restoring: bool = False) -> None:
        """Take a reload's ``config`` (``restoring``: the one before a failed reload, with
        no warning, and the admin token as it is now: a token rotated stays rotated)."""
        if not restoring:
            warn_restart_only(self.config, config)
        old, self.config = self.config, config
        self.target = worker_count(config)
        if self.admin is not None:  # the new routes' metric labels, before any fork
            self.admin.board.name_routes(route_labels(config))
            if not restoring:
                self.admin.reconfigure(config)
        if config.log != old.log:
            setup_logging(config.log)

    # -- --reload: waiting for the code to be fixed ------------------------------------
    def _await_change(self, child: Child, failure: str) -> None:
        """--reload, the first start: the app does not start with the code as it is.
        Wait for the watcher's next change instead of stopping, as a development
        server does: the error is shown, and fixed in the editor."""
        logger.error("worker %d could not start: %s", child.pid, failure)
        # the others of this start go too (a half-started bastion has no way to become
        # "running" with a worker missing): the next start begins from none
        now = time.monotonic()
        for other in list(self.children.values()):
            if other is child or other.state is State.RETIRING:
                continue
            other.unlink()
            other.state = State.RETIRING
            other.reason = "stopped: the code does not start"
            other.kill_at = now + 2.0
            other.signal(signal.SIGTERM)
        if not self.awaiting_change:
            self.awaiting_change = True
            self.startup_deadline = math.inf
            if self.change_pending:
                # the code changed while this start was under way: try the new code now
                self.change_pending = False
                start_reload(self)
                return
            logger.error("--reload: waiting for a change to the code to start again")

    def retry_after_change(self) -> None:
        """SIGHUP while awaiting a change: start the workers again, on the new code."""
        self.awaiting_change = False
        self.change_pending = False
        self.generation += 1
        self.startup_deadline = time.monotonic() + self.config.workers.startup_timeout
        logger.info("--reload: code changed: starting the workers again")

    # -- stopping ----------------------------------------------------------------------
    def _fatal(self, message: str) -> None:
        if self.phase == "stopping":
            return
        report_fatal(message)
        self.exit_code = EXIT_FAILED
        self._stop(immediate=False)

    def _stop(self, immediate: bool, retire: bool = False) -> None:
        """Stop every worker: at once, gracefully, or (``retire``: another bastion
        takes over) gracefully with WebSockets let go on until graceful_timeout."""
        now = time.monotonic()
        self.upgrade.stop_new()  # (if it is not ready yet: it must not take over)
        if self.phase != "stopping" and not self.upgrade.handed_over:
            self.notify.stopping()
        self.phase = "stopping"
        self.drain_at = math.inf
        if self.admin is not None and not self.upgrade.handed_over:
            # (handed over: the new bastion serves and its admin says so; this one's
            # admin, stopping, must not answer "draining" meanwhile)
            self.admin.board.set_draining()
        self.reloading = False
        self.managed.stop(now, immediate, kill_after=QUIT_WAIT)
        self.startup_deadline = math.inf
        close_listeners(self.listeners)  # the kernel stops queueing new connections
        for child in self.children.values():
            child.unlink()
            if immediate:
                # a worker still starting has no handlers yet (SIGQUIT would dump core)
                child.signal(signal.SIGKILL if child.state is State.STARTING else signal.SIGQUIT)
                child.kill_at = min(child.kill_at, now + QUIT_WAIT)
            elif child.state is not State.RETIRING and retire:
                self._retire(child, "handed over")
            elif child.state is not State.RETIRING:
                child.state = State.RETIRING
                child.reason = "stop"
                child.signal(signal.SIGTERM)
                child.kill_at = now + self.config.workers.graceful_timeout + SHUTDOWN_GRACE
            elif child.reason != "stop":
                # retired earlier (a reload): its WebSockets are closed now, not later
                child.signal(signal.SIGTERM)

    def _cleanup(self) -> None:
        self.watcher.stop()
        self.managed.kill_all()
        for child in self.children.values():
            child.signal(signal.SIGKILL)
        for pid in list(self.children):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.children.clear()
        close_listeners(self.listeners)
        if self.admin is not None:
            self.admin.stop()
            stacks.remove()
        self.signals.restore()
        self.selector.close()
        self.heartbeat.close()
        if self.pidfile:
            remove_pidfile(self.pidfile)
        logger.info("bastion stopped")
