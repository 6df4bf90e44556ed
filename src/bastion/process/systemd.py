"""What a process manager expects of a daemon: readiness notification (systemd
``Type=notify``), a pid file, and giving up root after binding privileged ports.

The notify protocol is one datagram per state change, ``KEY=VALUE`` lines, sent to the
Unix socket named by ``NOTIFY_SOCKET`` (``@name`` is the abstract namespace). No
libsystemd is needed; without ``NOTIFY_SOCKET`` nothing is sent.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import time

from bastion.observe.logging import logger


class Notifier:
    """``sd_notify()``: tells systemd (or anything listening on ``NOTIFY_SOCKET``)."""

    def __init__(self) -> None:
        address = os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address

    def send(self, *fields: str) -> None:
        if not self.address:
            return
        data = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(data, self.address)
        except OSError as exc:
            logger.warning("cannot notify systemd at %s: %s", self.address, exc)

    def ready(self, status: str, mainpid: int = 0) -> None:
        fields = ["READY=1", f"STATUS={status}"]
        if mainpid:
            fields.insert(0, f"MAINPID={mainpid}")
        self.send(*fields)

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")


class PidfileError(Exception):
    pass


def running_bastion(path: str) -> int:
    """The pid ``path`` names when that process is running and is a bastion (another
    instance), else 0: a pidfile left by one that died, or naming a pid the system has
    since given to another program, is stale."""
    try:
        with open(path) as f:
            pid = int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0
    if pid <= 0 or pid == os.getpid():
        return 0
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return 0  # (no such process)
    return pid if b"bastion" in cmdline else 0


def write_pidfile(path: str, replacing: int = 0) -> None:
    """Write our pid to ``path`` atomically (a temporary file renamed over it); refuse
    while another bastion that the file names is running, as gunicorn does (the second
    would take the file, and remove it when it stops: signals sent by the file would then
    reach nobody). ``replacing``: the bastion this one takes over from (an upgrade)."""
    other = running_bastion(path)
    if other and other != replacing:
        raise PidfileError(
            f"server.pidfile: {path} names pid {other}, a bastion that is running: stop it "
            "first, or give this one another pidfile"
        )
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(tmp, path)
    except OSError as exc:
        raise PidfileError(f"server.pidfile: cannot write {path}: {exc.strerror}") from None


def remove_pidfile(path: str) -> None:
    """Remove ``path`` if it still names this process (an upgrade may have replaced it)."""
    try:
        with open(path) as f:
            if f.read().strip() != str(os.getpid()):
                return
        os.unlink(path)
    except OSError:
        pass


class PrivilegeError(Exception):
    pass


def drop_privileges(user: str, group: str) -> str:
    """Become ``user`` (and ``group``, else the user's own group); return a description.
    Called after the listening sockets are open, so ports below 1024 can be bound."""
    try:
        entry = pwd.getpwnam(user) if user else None
    except KeyError:
        raise PrivilegeError(f"server.user: no user {user!r} on this system") from None
    gid: int | None = None
    if group:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise PrivilegeError(f"server.group: no group {group!r} on this system") from None
    elif entry is not None:
        gid = entry.pw_gid
    try:
        if gid is not None:
            os.setgroups([])
            os.setgid(gid)
        if entry is not None:
            os.initgroups(entry.pw_name, gid if gid is not None else entry.pw_gid)
            os.setuid(entry.pw_uid)
    except OSError as exc:
        raise PrivilegeError(f"cannot switch to user {user!r} / group {group!r}: {exc}") from None
    return f"uid {os.getuid()}, gid {os.getgid()}"
