"""What systemd and other process managers expect: Type=notify readiness, a pid file,
and giving up root once the sockets are open."""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
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


def test_a_second_bastion_does_not_take_a_running_ones_pidfile(tmp_path: Path) -> None:
    """As gunicorn does: the second refuses to start (it would take the file and remove
    it when it stops, and signals sent by the file would then reach nobody); a file
    left by a bastion that died, or naming a process that is no bastion, is taken."""
    pidfile = tmp_path / "bastion.pid"
    with serve("proc_app:app", "--workers", "1", "--pidfile", str(pidfile)) as first:
        second = serve(
            "proc_app:app", "--workers", "1", "--pidfile", str(pidfile), wait_ready=False
        )
        with second:
            assert second.wait(15) == 1
            wait_until(lambda: f"names pid {first.pid}, a bastion that is running" in second.log, 5)
        assert pidfile.read_text() == f"{first.pid}\n"
        assert first.stop() == 0
    with subprocess.Popen(["sleep", "30"]) as other:  # a live process that is no bastion
        pidfile.write_text(f"{other.pid}\n")
        try:
            with serve("proc_app:app", "--workers", "1", "--pidfile", str(pidfile)) as third:
                assert pidfile.read_text() == f"{third.pid}\n"
                assert third.stop() == 0
        finally:
            other.kill()


def test_a_pidfile_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    # (not a `bastion check` error: a runtime directory such as /run/myproject is often
    # made by the service manager just before the start)
    srv = serve("proc_app:app", "--pidfile", str(tmp_path / "no" / "x.pid"), wait_ready=False)
    with srv:
        assert srv.wait(15) == 1
        wait_until(lambda: f"server.pidfile: cannot write {tmp_path}/no/x.pid" in srv.log, 5)
        assert ".tmp" not in srv.log


def test_log_files_that_cannot_be_opened_are_named(tmp_path: Path) -> None:
    missing = tmp_path / "no"
    env = {"BASTION_LOG__ERROR_FILE": str(missing / "error.log")}
    srv = serve("proc_app:app", env=env, wait_ready=False)
    with srv:
        assert srv.wait(15) == 1
        wait_until(lambda: f"log.error_file: cannot open {missing}/error.log" in srv.log, 5)
        assert "Traceback" not in srv.log
    env = {"BASTION_LOG__ACCESS": "json", "BASTION_LOG__ACCESS_FILE": str(missing / "a.log")}
    srv = serve("proc_app:app", env=env, wait_ready=False)
    with srv:
        assert srv.wait(15) == 1
        wait_until(lambda: f"log.access_file: cannot open {missing}/a.log" in srv.log, 5)


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
