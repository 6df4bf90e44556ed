"""Where the real ``bastion`` listens: IPv4, IPv6, Unix sockets, several binds at once,
inherited descriptors (``fd://N``), systemd socket activation, and SO_REUSEPORT.
"""

from __future__ import annotations

import functools
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from proc_tools import child_pids, get, get_unix, pid_of, wait_until
from server import APPS, BastionProcess, serve


def _has_ipv6_loopback() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback")


def test_ipv4_port_zero_prints_the_real_port() -> None:
    with serve("proc_app:app", "--workers", "1") as srv:
        host, port = srv.host_port
        assert host == "127.0.0.1" and port > 0
        assert get(srv.url)[0] == 200
        assert f"listening on http://127.0.0.1:{port}" in srv.log


@needs_ipv6
def test_ipv6_loopback() -> None:
    with serve("proc_app:app", "--workers", "1", "--bind", "[::1]:0") as srv:
        assert srv.url.startswith("http://[::1]:")
        port = srv.host_port[1]
        with socket.create_connection(("::1", port), timeout=5) as c:
            c.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := c.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 200")
        # IPv6-only: the IPv4 loopback on the same port is not ours
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_unix_socket_mode_and_removal(tmp_path: Path) -> None:
    path = tmp_path / "bastion.sock"
    with serve(
        "proc_app:app",
        "--workers",
        "2",
        "--bind",
        f"unix:{path}",
        "--unix-socket-mode",
        "600",
    ) as srv:
        assert srv.addresses == [f"unix:{path}"]
        st = os.stat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        status, body = get_unix(str(path))
        assert status == 200 and body.startswith("ok ")
        assert srv.stop() == 0
    assert not path.exists()


def test_stale_unix_socket_is_replaced_but_a_regular_file_is_not(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    leftover = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    leftover.bind(str(path))  # bound, never listening: what a crashed server leaves
    leftover.close()
    with serve("proc_app:app", "--workers", "1", "--bind", f"unix:{path}") as srv:
        assert get_unix(str(path))[0] == 200
        assert srv.stop() == 0
    regular = tmp_path / "data.txt"
    regular.write_text("precious")
    srv = serve("proc_app:app", "--bind", f"unix:{regular}", wait_ready=False).start()
    assert srv.exit_status() == 1
    assert "not a socket" in srv.log
    assert regular.read_text() == "precious"


def test_two_binds_at_once(tmp_path: Path) -> None:
    path = tmp_path / "two.sock"
    with serve(
        "proc_app:app",
        "--workers",
        "2",
        "--bind",
        "127.0.0.1:0",
        "--bind",
        f"unix:{path}",
    ) as srv:
        assert len(srv.addresses) == 2
        assert get(srv.url)[0] == 200
        assert get_unix(str(path))[0] == 200
        lines = [ln for ln in srv.log.splitlines() if "listening on" in ln]
        assert len(lines) == 2


def test_address_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        srv = serve("proc_app:app", "--bind", f"127.0.0.1:{port}", wait_ready=False).start()
        assert srv.exit_status() == 1
    assert "address already in use" in srv.log


def test_inherited_fd(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as lsock:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(128)
        fd = lsock.fileno()
        port = lsock.getsockname()[1]
        monkeypatch.setattr(
            subprocess, "Popen", functools.partial(subprocess.Popen, pass_fds=(fd,))
        )
        srv = BastionProcess(["serve", "proc_app:app", "--workers", "2", "--bind", f"fd://{fd}"])
        with srv:
            monkeypatch.undo()
            assert srv.url == f"http://127.0.0.1:{port}"
            assert f"(fd://{fd})" in srv.log
            assert get(srv.url)[0] == 200


def test_inherited_fd_must_be_a_listening_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as unbound:
        fd = unbound.fileno()
        monkeypatch.setattr(
            subprocess, "Popen", functools.partial(subprocess.Popen, pass_fds=(fd,))
        )
        srv = BastionProcess(["serve", "proc_app:app", "--bind", f"fd://{fd}"], wait_ready=False)
        srv.start()
        monkeypatch.undo()
        assert srv.exit_status() == 1
    assert "not a listening stream socket" in srv.log


def test_systemd_socket_activation() -> None:
    srv = BastionProcess(["serve", "proc_app:app", "--workers", "2", "--bind", "systemd"])
    srv.args = [sys.executable, str(APPS / "proc_systemd.py"), "2", "--", *srv.args[3:]]
    with srv:
        assert len(srv.addresses) == 2
        assert "(systemd fd 3)" in srv.log and "(systemd fd 4)" in srv.log
        for url in srv.addresses:
            assert get(url)[0] == 200


def test_systemd_without_activation_is_a_clear_error() -> None:
    srv = serve("proc_app:app", "--bind", "systemd", wait_ready=False).start()
    assert srv.exit_status() == 1
    assert "LISTEN_PID" in srv.log


def test_reuse_port_gives_each_worker_its_own_socket() -> None:
    with serve("proc_app:app", "--workers", "2", "--reuse-port") as srv:
        pids = set()
        for _ in range(200):
            status, body = get(srv.url)
            assert status == 200
            pids.add(pid_of(body))
            if len(pids) == 2:
                break
        assert pids == child_pids(srv.pid)
        # every worker listens on its own socket: two listening sockets on the port
        port = srv.host_port[1]
        wait_until(lambda: _listening_sockets(port) == 2, 5, "two listening sockets")
        assert srv.stop() == 0


def _listening_sockets(port: int) -> int:
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state = fields[1], fields[3]
        if state == "0A" and int(local.rpartition(":")[2], 16) == port:
            count += 1
    return count
