"""What systemd and other process managers expect: Type=notify readiness, a pid file,
and giving up root once the sockets are open."""

from __future__ import annotations

import os
import pwd
import signal
import socket
from pathlib import Path

import pytest
from proc_tools import child_pids, get, wait_until
from server import serve


class NotifySocket:
    """A stand-in for systemd's notification socket: collects the datagrams."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(20)
        self.path = path

    def next(self) -> dict[str, str]:
        data = self.sock.recv(4096).decode()
        return dict(line.split("=", 1) for line in data.splitlines())

    def close(self) -> None:
        self.sock.close()


def test_type_notify_ready_reloading_and_stopping(tmp_path: Path) -> None:
    notify = NotifySocket(tmp_path / "notify")
    try:
        env = {"NOTIFY_SOCKET": str(notify.path)}
        with serve("proc_app:app", "--workers", "2", env=env) as srv:
            msg = notify.next()
            assert msg["READY"] == "1" and msg["STATUS"] == "serving with 2 workers"
            # READY=1 comes only once every worker serves
            srv.wait_for_log(" ready: ", 5)
            assert len(child_pids(srv.pid)) == 2
            assert get(srv.url)[0] == 200
            srv.signal(signal.SIGHUP)
            msg = notify.next()
            assert msg["RELOADING"] == "1" and int(msg["MONOTONIC_USEC"]) > 0
            msg = notify.next()
            assert msg["READY"] == "1"
            srv.wait_for_log("reload complete", 5)
            srv.signal(signal.SIGTERM)
            assert notify.next()["STOPPING"] == "1"
            assert srv.wait(15) == 0
    finally:
        notify.close()


def test_pidfile_is_written_and_removed(tmp_path: Path) -> None:
    pidfile = tmp_path / "bastion.pid"
    with serve("proc_app:app", "--workers", "1", "--pidfile", str(pidfile)) as srv:
        assert pidfile.read_text() == f"{srv.pid}\n"
        assert srv.stop() == 0
    assert not pidfile.exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change user")
def test_user_and_group_are_taken_after_the_sockets_are_open() -> None:
    nobody = pwd.getpwnam("nobody")
    with serve("proc_app:app", "--workers", "2", "--user", "nobody") as srv:
        assert f"running as uid {nobody.pw_uid}" in srv.log
        for pid in [srv.pid, *child_pids(srv.pid)]:
            status = Path(f"/proc/{pid}/status").read_text()
            uids = next(line for line in status.splitlines() if line.startswith("Uid:"))
            assert uids.split()[1:] == [str(nobody.pw_uid)] * 4
        assert get(srv.url)[0] == 200
        assert srv.stop() == 0


def test_an_unknown_user_stops_bastion_at_start() -> None:
    srv = serve("proc_app:app", "--user", "no-such-user-here", wait_ready=False)
    with srv:
        assert srv.wait(15) == 1
        wait_until(lambda: "no user 'no-such-user-here'" in srv.log, 5)


def test_a_failed_switch_of_user_removes_the_pidfile(tmp_path: Path) -> None:
    # the pidfile is written before the user is switched: a switch that fails must
    # not leave it behind, naming a process that is gone
    pidfile = tmp_path / "bastion.pid"
    srv = serve(
        "proc_app:app",
        "--pidfile",
        str(pidfile),
        "--user",
        "no-such-user-here",
        wait_ready=False,
    )
    with srv:
        assert srv.wait(15) == 1
        wait_until(lambda: "no user 'no-such-user-here'" in srv.log, 5)
    assert not pidfile.exists()
    assert list(tmp_path.iterdir()) == []  # nor its temporary file
