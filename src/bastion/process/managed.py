"""Managed processes: the ``[[process]]`` programs bastion runs beside its workers.

The supervisor starts each one (``subprocess.Popen``, its own session so a Ctrl-C in the
terminal reaches it only through bastion), reads its output through a pipe in the main
loop and logs each line as ``[name] line``, restarts it with a growing delay when it
ends, and on shutdown stops them one after the other, last declared first: the stop
signal, then ``SIGKILL`` after ``stop_timeout``, each time to the program's whole process
group (what a shell wrapper started too); what is left of the group when the program
itself ends gets the same grace (the stop signal, then ``SIGKILL``), and the program is
started again only once its group is gone. If the supervisor itself dies (even by
SIGKILL), each program gets its stop signal from the kernel (see
:mod:`bastion.process.pdeath`); what they started does not (a cgroup, as systemd's,
catches those).
"""

from __future__ import annotations

import math
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator

from bastion.config.processes import command_of
from bastion.config.schema import ProcessConfig
from bastion.observe.logging import logger
from bastion.process.children import describe_status
from bastion.process.pdeath import die_with_parent

MAX_LINE = 8192  # a longer line is logged in pieces


class Managed:
    """One ``[[process]]`` entry and its current run."""

    def __init__(self, cfg: ProcessConfig) -> None:
        self.cfg = cfg
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.backoff = cfg.backoff_min
        self.start_at = 0.0  # when to start it (again); inf: not to be started
        self.kill_at = math.inf
        self.buffer = b""
        self.restarts = 0
        #: the process group of a run whose program ended while what it started still
        #: runs (a shell wrapper's children), and when those get SIGKILL
        self.group = 0
        self.group_kill_at = math.inf

    @property
    def name(self) -> str:
        return self.cfg.name

    @property
    def stop_signal(self) -> int:
        return int(getattr(signal, self.cfg.stop_signal.upper()))

    @property
    def fd(self) -> int:
        """The read end of its output pipe, or -1."""
        if self.proc is None or self.proc.stdout is None or self.proc.stdout.closed:
            return -1
        return self.proc.stdout.fileno()

    def start(self) -> None:
        cfg = self.cfg
        env = dict(os.environ)
        env.update(cfg.env)
        try:
            self.proc = subprocess.Popen(
                command_of(cfg),
                env=env,
                cwd=cfg.cwd or None,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # its stop signal when the supervisor dies, even by SIGKILL
                preexec_fn=die_with_parent(self.stop_signal, os.getpid()),
            )
        except OSError as exc:
            logger.error("process %s: cannot start %s: %s", cfg.name, command_of(cfg)[0], exc)
            self.proc = None
            self._schedule_restart(time.monotonic(), failed=True)
            return
        os.set_blocking(self.fd, False)
        self.started = time.monotonic()
        self.start_at = math.inf
        logger.info("process %s started (pid %d)", cfg.name, self.proc.pid)

    def read_output(self, reads: int = 1) -> bool:
        """Log the complete lines available; False once the pipe is at its end. At most
        ``reads`` reads of the pipe (64 KiB each) per call: a program writing faster
        than lines are logged would otherwise hold the supervisor's loop (signals,
        heartbeats, the health endpoints) for as long as it kept writing."""
        if self.proc is None or self.proc.stdout is None:
            return False
        for _ in range(reads):
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                return True
            except OSError:
                chunk = b""
            if not chunk:
                self._flush(final=True)
                return False
            self.buffer += chunk
            self._flush(final=False)
        return True  # the rest at the loop's next turn (the pipe stays readable)

    def _flush(self, final: bool) -> None:
        *lines, rest = self.buffer.split(b"\n")
        while len(rest) > MAX_LINE:
            lines.append(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        if final and rest:
            lines.append(rest)
            rest = b""
        self.buffer = rest
        for line in lines:
            logger.info("[%s] %s", self.name, line.decode("utf-8", "replace").rstrip("\r"))

    def close_output(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def exited(self, status: int, stopping: bool) -> None:
        """Its process ended with wait ``status``: log it and plan a restart."""
        assert self.proc is not None
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        # what it wrote last (bounded: what it started may hold the pipe and write on)
        self.read_output(reads=16)
        self.close_output()
        pid = self.proc.pid
        how = describe_status(status)
        if _kill_group(pid, 0):
            # What it started (``sh -c "a & b"``, ``npm start``) still runs: it must not
            # outlive it (it would keep the ports and files its next run needs), but it
            # gets the stop's grace: the stop signal (already sent when stopping), then
            # SIGKILL at the stop's deadline.
            now = time.monotonic()
            if self.kill_at == math.inf:
                _kill_group(pid, self.stop_signal)
                self.group_kill_at = now + self.cfg.stop_timeout
            else:
                self.group_kill_at = self.kill_at
            self.group = pid
            logger.info("process %s: stopping what is left of its process group", self.name)
        self.proc = None
        self.kill_at = math.inf
        if stopping:
            logger.info("process %s (pid %d) %s", self.name, pid, how)
            return
        now = time.monotonic()
        failed = not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)
        restart = self.cfg.restart
        if restart == "never" or (restart == "on-failure" and not failed):
            logger.info(
                "process %s (pid %d) %s; not restarted (restart = %r)", self.name, pid, how, restart
            )
            self.start_at = math.inf
            return
        logger.warning("process %s (pid %d) %s", self.name, pid, how)
        self._schedule_restart(now, failed)

    def _schedule_restart(self, now: float, failed: bool) -> None:
        cfg = self.cfg
        if self.started and now - self.started >= cfg.backoff_max:
            self.backoff = cfg.backoff_min  # it ran well for a while: start over
        delay = self.backoff
        self.backoff = min(self.backoff * 2, cfg.backoff_max)
        self.start_at = now + delay
        self.restarts += 1
        logger.info("process %s: restarting in %gs", self.name, delay)

    def stop(self, now: float) -> None:
        """Ask it to stop (its stop signal); SIGKILL after ``stop_timeout``."""
        self.start_at = math.inf
        if self.proc is None:
            return
        sig = self.stop_signal
        logger.info("stopping process %s (pid %d)", self.name, self.proc.pid)
        self._signal(sig)
        self.kill_at = now + self.cfg.stop_timeout

    def kill(self) -> None:
        logger.warning("process %s did not stop in time: killing it", self.name)
        self.kill_at = math.inf
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        """``sig`` to its whole process group (its own session, made at its start): a
        shell or a launcher passes no signal on to what it started."""
        if self.proc is None:
            return
        if not _kill_group(self.proc.pid, sig):
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def check_group(self, now: float) -> bool:
        """Follow what is left of an ended run's process group: SIGKILL at its deadline.
        True when it has just gone."""
        if not self.group:
            return False
        if not _kill_group(self.group, 0):
            self.group, self.group_kill_at = 0, math.inf
            return True
        if now >= self.group_kill_at:
            logger.warning("process %s: killing what is left of its process group", self.name)
            _kill_group(self.group, signal.SIGKILL)
            self.group_kill_at = now + 1.0  # (then gone; checked again)
        return False

    def kill_group(self) -> None:
        if self.group:
            _kill_group(self.group, signal.SIGKILL)
            self.group, self.group_kill_at = 0, math.inf


def _kill_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the process group ``pgid`` (0: only whether it has a process);
    False if it has no process left."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


class ManagedProcesses:
    """Every ``[[process]]`` entry, as the supervisor's loop runs them: their output
    pipes in its ``selector`` (registered with the :class:`Managed` as the key's data),
    their restarts, and the order they stop in."""

    def __init__(self, configs: Iterable[ProcessConfig], selector: selectors.BaseSelector):
        self.entries = [Managed(cfg) for cfg in configs]
        self.selector = selector

    def __iter__(self) -> Iterator[Managed]:
        return iter(self.entries)

    @property
    def running(self) -> bool:
        return any(m.proc is not None or m.group for m in self.entries)

    @property
    def fds(self) -> list[int]:
        """The read ends of their output pipes (a forked worker closes them)."""
        return [m.fd for m in self.entries if m.fd >= 0]

    def deadlines(self) -> list[float]:
        """When the loop must wake up for them: a start or a kill (what is left of a
        process group is looked at every tick)."""
        return [min(m.start_at, m.kill_at, m.group_kill_at) for m in self.entries]

    def start(self, managed: Managed) -> None:
        managed.start()
        if managed.fd >= 0:
            self.selector.register(managed.fd, selectors.EVENT_READ, managed)

    def start_all(self) -> None:
        for managed in self.entries:
            self.start(managed)

    def reaped(self, pid: int, status: int, stopping: bool) -> bool:
        """Whether ``pid`` was one of them; if so, it ended with wait ``status``."""
        for managed in self.entries:
            if managed.proc is not None and managed.proc.pid == pid:
                fd = managed.fd
                if fd >= 0:
                    try:
                        self.selector.unregister(fd)
                    except (KeyError, ValueError):
                        pass
                managed.exited(status, stopping=stopping)
                if stopping:
                    self.stop_next()
                return True
        return False

    def check(self, now: float, stopping: bool) -> None:
        """Kill the ones past their stop timeout; start the ones whose delay is over."""
        for managed in self.entries:
            if managed.check_group(now) and stopping:
                self.stop_next()  # (its group gone: the one declared before it now)
            if now >= managed.kill_at:
                managed.kill()
            elif (
                managed.proc is None
                and not managed.group  # (its last run's processes first)
                and now >= managed.start_at
                and not stopping
            ):
                self.start(managed)

    def stop(self, now: float, immediate: bool, kill_after: float) -> None:
        """Shutdown: no more restarts; then each one's stop signal at once (SIGKILL
        ``kill_after`` seconds later at most), or one after the other (``immediate``
        false: :meth:`stop_next`)."""
        for managed in self.entries:
            managed.start_at = math.inf
        if immediate:
            for managed in self.entries:
                managed.stop(now)
                managed.kill_at = min(managed.kill_at, now + kill_after)
        else:
            self.stop_next()

    def stop_next(self) -> None:
        """On shutdown: stop the last declared process still running, once the ones
        after it have ended (they may depend on those declared before them)."""
        now = time.monotonic()
        for managed in reversed(self.entries):
            managed.start_at = math.inf
            if managed.group:
                return  # what it started is still stopping
            if managed.proc is not None:
                if managed.kill_at == math.inf:
                    managed.stop(now)
                return

    def kill_all(self) -> None:
        """The supervisor is exiting: kill what still runs and wait for it."""
        for managed in self.entries:
            if managed.proc is not None:
                managed.kill()
                managed.proc.wait()
                managed.close_output()
            managed.kill_group()
