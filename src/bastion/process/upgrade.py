"""Upgrading bastion in place (SIGUSR2 to the supervisor): a new supervisor, the same
sockets.

The running supervisor starts the command it was started with again (``sys.orig_argv``:
the same interpreter, flags and arguments, so the code now on disk), handing it its
listening sockets as inherited descriptors, described in the environment variable
``_BASTION_INHERITED`` (JSON: descriptor, the bind it came from, and how it was made),
and its admin socket the same way in ``_BASTION_INHERITED_ADMIN`` (the admin socket is
never shared by SO_REUSEPORT: a second bastion on the same admin port fails to start).
The new supervisor takes those sockets instead of binding again (a port picked with
``:0`` stays the same; nothing is ever refused), reads the configuration afresh, starts
its workers, and once every one of them is ready tells the old supervisor
(``_BASTION_UPGRADE_FROM``) to stop gracefully. Until then the old workers serve, and if
the new bastion cannot start, it exits and the old one simply goes on.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

from bastion.config.binds import BindError, parse_bind
from bastion.observe.logging import logger
from bastion.process.children import describe_status
from bastion.process.listeners import Listener, ListenerError, adopt_fd
from bastion.process.systemd import PidfileError, write_pidfile

INHERITED_ENV = "_BASTION_INHERITED"  # (not BASTION_*: those are settings)
ADMIN_ENV = "_BASTION_INHERITED_ADMIN"  # the admin socket: {"fd": ..., "bind": ...}
UPGRADE_FROM_ENV = "_BASTION_UPGRADE_FROM"
#: the write end of a pipe to the old bastion: the new one writes ``s`` at its start
#: and ``r`` when it takes over, just before its SIGTERM, so the old one tells that
#: SIGTERM from an operator's. (A new bastion that never said ``s``, a version from
#: before the pipe, is taken at its word: its SIGTERM is the handover.)
READY_ENV = "_BASTION_UPGRADE_READY_FD"


def hand_over(
    listeners: list[Listener],
    admin: socket.socket | None = None,
    admin_bind: str = "",
    ready_fd: int = -1,
) -> subprocess.Popen[bytes]:
    """Start the new bastion with ``listeners`` (and the ``admin`` socket, bound for
    ``admin_bind``; ``ready_fd``, the pipe it says it took over on) inherited; return
    its process."""
    entries: list[dict[str, object]] = []
    fds: list[int] = []
    for lst in listeners:
        fd = lst.sock.fileno()
        fds.append(fd)
        entries.append(
            {
                "fd": fd,
                "bind": lst.spec.text,
                "origin": lst.origin,
                "url": lst.url,
                "redirect": lst.redirect,
                "reuse_port": lst.reuse_port,
                "unix_path": lst.unix_path,
            }
        )
    env = dict(os.environ)
    env[INHERITED_ENV] = json.dumps(entries)
    env[UPGRADE_FROM_ENV] = str(os.getpid())
    env.pop(ADMIN_ENV, None)
    if admin is not None:
        fds.append(admin.fileno())
        env[ADMIN_ENV] = json.dumps({"fd": admin.fileno(), "bind": admin_bind})
    env.pop(READY_ENV, None)
    if ready_fd >= 0:
        fds.append(ready_fd)
        env[READY_ENV] = str(ready_fd)
    argv = [sys.executable, *sys.orig_argv[1:]]
    return subprocess.Popen(argv, env=env, pass_fds=fds)


def take_inherited() -> dict[str, list[Listener]]:
    """The sockets an upgrading supervisor handed over, by the bind text they were made
    for; empty when bastion was not started by an upgrade. Clears the variable so the
    workers and managed processes do not see it."""
    text = os.environ.pop(INHERITED_ENV, "")
    if not text:
        return {}
    found: dict[str, list[Listener]] = {}
    try:
        entries = json.loads(text)
    except ValueError:
        return {}
    for entry in entries:
        fd = int(entry["fd"])
        bind = str(entry["bind"])
        try:
            spec = parse_bind(bind)
        except BindError:
            os.close(fd)
            continue
        try:
            lst = adopt_fd(fd, spec, str(entry["origin"]), listening=not entry["reuse_port"])
        except ListenerError:
            continue
        lst.redirect = bool(entry["redirect"])
        lst.reuse_port = bool(entry["reuse_port"])
        lst.url = str(entry["url"])
        # the file is this bastion's to remove only once it has taken over
        lst.inherited_unix_path = str(entry["unix_path"])
        found.setdefault(("redirect " if lst.redirect else "") + bind, []).append(lst)
    return found


def take_inherited_admin(bind: str) -> socket.socket | None:
    """The admin socket an upgrading supervisor handed over, if it was bound for
    ``bind`` (else it is closed and None returned: the new configuration binds
    elsewhere). Clears the variable, as :func:`take_inherited` does."""
    text = os.environ.pop(ADMIN_ENV, "")
    if not text:
        return None
    try:
        entry = json.loads(text)
        fd = int(entry["fd"])
        given = str(entry["bind"])
    except (ValueError, KeyError, TypeError):
        return None
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return None
    if given != bind:
        sock.close()
        return None
    sock.set_inheritable(False)
    return sock


def upgrading_from() -> int:
    """The pid of the supervisor that started this one to replace itself, or 0."""
    text = os.environ.pop(UPGRADE_FROM_ENV, "")
    return int(text) if text.isdigit() else 0


def take_ready_fd() -> int:
    """The pipe to tell the old bastion this one took over on, or -1 (not kept by the
    workers and processes this one starts)."""
    text = os.environ.pop(READY_ENV, "")
    if not text.isdigit():
        return -1
    fd = int(text)
    try:
        os.set_inheritable(fd, False)
        os.write(fd, b"s")  # (this bastion will say when it takes over)
    except OSError:
        return -1
    return fd


def close_unused(inherited: dict[str, list[Listener]]) -> None:
    """Close inherited sockets the new configuration no longer binds."""
    for listeners in inherited.values():
        for lst in listeners:
            try:
                lst.sock.close()
            except OSError:
                pass
    inherited.clear()


class Upgrade:
    """The supervisor's part in an upgrade: the new bastion it started on SIGUSR2, until
    that one is ready and stops it; and, in a bastion started that way, the old one."""

    def __init__(self) -> None:
        self.new: subprocess.Popen[bytes] | None = None  # the new bastion, while it runs
        self.old = 0  # the supervisor this one replaces (it was started by one)
        self.handed_over = False  # the new bastion is ready: it owns the sockets now
        self.took_over = False  # this bastion replaced another one
        self.ready_read = -1  # (old side) the new bastion writes here when it takes over
        self.ready_said = b""  # (old side) what it wrote so far
        self.ready_write = -1  # (new side) where to say so to the old one

    def start(
        self, listeners: list[Listener], admin: socket.socket | None, admin_bind: str
    ) -> None:
        """SIGUSR2: start a new bastion (the code now on disk) on the same sockets; it
        stops this one once its workers are ready."""
        self._close_ready()
        try:
            read, write = os.pipe()
        except OSError as exc:
            logger.error("SIGUSR2: cannot start a new bastion: %s", exc)
            return
        os.set_blocking(read, False)
        try:
            self.new = hand_over(listeners, admin, admin_bind, write)
        except OSError as exc:
            os.close(read)
            logger.error("SIGUSR2: cannot start a new bastion: %s", exc)
            return
        finally:
            os.close(write)
        self.ready_read = read
        logger.info(
            "SIGUSR2 received: started a new bastion (pid %d) on the same sockets; this "
            "one serves until it is ready",
            self.new.pid,
        )

    def new_took_over(self) -> bool:
        """Whether the new bastion took over (then its SIGTERM is the handover, not an
        operator's stop): it said so, or it is a version that says nothing."""
        while self.ready_read >= 0:
            try:
                said = os.read(self.ready_read, 16)
            except (BlockingIOError, OSError):
                break
            if not said:
                break
            self.ready_said += said
        return b"r" in self.ready_said or not self.ready_said

    def _close_ready(self) -> None:
        self.ready_said = b""
        if self.ready_read >= 0:
            os.close(self.ready_read)
            self.ready_read = -1

    def hand_over_files(self, listeners: list[Listener]) -> None:
        """The new bastion is ready (it sent SIGTERM): it owns the sockets, and removes
        the unix socket files when it stops."""
        self.handed_over = True
        for lst in listeners:
            lst.unix_path = ""

    def reaped(self, pid: int, status: int) -> bool:
        """Whether ``pid`` was the new bastion; if so it ended with wait ``status``."""
        if self.new is None or pid != self.new.pid:
            return False
        self.new.returncode = os.waitstatus_to_exitcode(status)
        self.new = None
        self._close_ready()
        if not self.handed_over:
            logger.error(
                "upgrade failed: the new bastion (pid %d) %s; this one goes on serving",
                pid,
                describe_status(status),
            )
        return True

    def stop_new(self) -> None:
        """This bastion stops before the new one was ready: it must not take over."""
        if self.new is not None and not self.handed_over:
            logger.info("stopping the new bastion (pid %d) too", self.new.pid)
            self.new.send_signal(signal.SIGTERM)

    def take_over(self, listeners: list[Listener], pidfile: str) -> None:
        """Every worker of this (upgraded) bastion is ready: stop the old one."""
        for lst in listeners:
            if lst.inherited_unix_path:  # this bastion removes the file at exit now
                lst.unix_path = lst.inherited_unix_path
                try:
                    lst.unix_inode = os.stat(lst.unix_path).st_ino
                except OSError:
                    lst.unix_path = ""
        old, self.old = self.old, 0
        self.took_over = bool(old)
        if old and pidfile:
            try:
                write_pidfile(pidfile, replacing=old)
            except PidfileError as exc:
                logger.error("%s", exc)
        if old and old == os.getppid():
            logger.info("upgrade complete: stopping the previous bastion (pid %d)", old)
            if self.ready_write >= 0:
                try:
                    os.write(self.ready_write, b"r")
                except OSError:
                    pass
            os.kill(old, signal.SIGTERM)
        if self.ready_write >= 0:
            os.close(self.ready_write)
            self.ready_write = -1


__all__ = [
    "Upgrade",
    "close_unused",
    "hand_over",
    "take_inherited",
    "take_inherited_admin",
    "take_ready_fd",
    "upgrading_from",
]
