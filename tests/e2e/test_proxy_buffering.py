"""Request buffering (``proxy.buffer_request``): the body is read whole, in memory up
to the limit and in a temporary file beyond it, before an upstream connection is
taken, so a slow uploader never holds one."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

import pytest
from proc_tools import child_pids, wait_until
from test_proxy import proxy
from upstream_servers import RawServer, Request, response


def digest(req: Request) -> bytes:
    body = f"{len(req.body)} {hashlib.sha256(req.body).hexdigest()}".encode()
    return response(200, body, [("X-Length", req.header("content-length") or "-")])


#: the route's bodies: 64 KiB in memory, the rest in a temporary file
BUFFERED = ", buffer_request = 65536"


def read_response(s: socket.socket) -> bytes:
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
        head, _, body = out.partition(b"\r\n\r\n")
        if b"content-length:" in head.lower():
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(body) >= length:
                break
    return out


def test_a_slow_upload_reaches_the_upstream_only_once_complete(tmp_path: Path) -> None:
    body = os.urandom(300_000)  # over the 64k in memory: the rest goes to a file
    with (
        RawServer(digest) as up,
        proxy(tmp_path, [up.address], route=BUFFERED) as p,
    ):
        host, port = p.host_port
        with socket.create_connection((host, port), timeout=10) as s:
            s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(body), 100_000):
                part = body[i : i + 100_000]
                s.sendall(b"%x\r\n%s\r\n" % (len(part), part))
                time.sleep(0.4)
                # the upload is not complete: no upstream connection is taken yet
                assert up.connections == 0
            s.sendall(b"0\r\n\r\n")
            got = read_response(s)
    assert got.startswith(b"HTTP/1.1 200 "), got[:200]
    assert f"{len(body)} {hashlib.sha256(body).hexdigest()}".encode() in got
    # sent upstream with its length, not chunked
    assert b"\r\nx-length: 300000\r\n" in got.lower()
    assert up.connections == 1


def test_a_small_buffered_body_is_sent_again_on_a_retry(tmp_path: Path) -> None:
    # the first server takes the request and closes without an answer; a buffered PUT
    # (idempotent) can be sent again, whole, to the other server
    def dead(req: Request) -> bytes:
        return b"<close>"

    with (
        RawServer(dead) as bad,
        RawServer(digest) as good,
        proxy(
            tmp_path,
            [bad.address, good.address],
            upstream='balance = "round_robin"',
            route=", buffer_request = 1048576",
        ) as p,
    ):
        host, port = p.host_port
        for _ in range(2):  # round robin: one of the two starts on the dead server
            with socket.create_connection((host, port), timeout=10) as s:
                s.sendall(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
                got = read_response(s)
            assert got.startswith(b"HTTP/1.1 200 "), got[:300]
            assert f"5 {hashlib.sha256(b'hello').hexdigest()}".encode() in got
        assert len(bad.requests) == 1


def test_a_large_buffered_upload_arrives_intact(tmp_path: Path) -> None:
    # 48 MiB through a 64 KiB memory buffer: the rest is written to the temporary file
    # in blocks by the disk thread, then read back from it
    block = os.urandom(1 << 20)
    blocks = [bytes([i]) + block[1:] for i in range(48)]
    sha = hashlib.sha256()
    for b in blocks:
        sha.update(b)
    total = sum(len(b) for b in blocks)
    with (
        RawServer(digest) as up,
        proxy(tmp_path, [up.address], route=BUFFERED) as p,
    ):
        host, port = p.host_port
        (worker,) = child_pids(p.pid)
        with socket.create_connection((host, port), timeout=60) as s:
            # a body held in memory first: whatever threads a proxied request makes
            s.sendall(b"PUT /small HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nsmall")
            assert read_response(s).startswith(b"HTTP/1.1 200 ")
            threads = set(os.listdir(f"/proc/{worker}/task"))
            s.sendall(b"PUT /big HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % total)
            for b in blocks:
                s.sendall(b)
            got = read_response(s)
        # the spill had a thread of its own (the disk thread), not the event loop's
        assert set(os.listdir(f"/proc/{worker}/task")) - threads
    assert got.startswith(b"HTTP/1.1 200 "), got[:200]
    assert f"{total} {sha.hexdigest()}".encode() in got
    assert f"\r\nx-length: {total}\r\n".encode() in got.lower()


# -- the temporary file is closed -------------------------------------------------------
# A spilled body's file has no name (O_TMPFILE, or unlinked at once): only the worker's
# descriptor keeps it, and one left open holds its disk space until the worker exits.
# The files are made in TMPDIR: each test gives bastion a folder of its own, and the
# worker's descriptors into it (/proc/<pid>/fd: "<folder>/#12345 (deleted)") are its
# bodies' files. A file bastion forgets to close is closed when its request's objects
# are freed, with a ResourceWarning: the tests have Python show those, and look for them.

UNCLOSED = "unclosed file <_io.BufferedRandom"


@pytest.fixture
def spill_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The TMPDIR of the bastion the test starts (its environment is ours), which
    shows its ResourceWarnings."""
    folder = tmp_path / "spill"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setenv("PYTHONWARNINGS", "always::ResourceWarning")
    return folder


def body_files(pid: int, folder: Path) -> int:
    """How many files in ``folder`` process ``pid`` has open."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith(f"{folder}/"):
            count += 1
    return count


SPILLED = 300_000  # over the route's 64k in memory: the rest goes to a file
HEAD = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % SPILLED


def start_spilled_upload(s: socket.socket, worker: int, folder: Path) -> bytes:
    """Send the head and the first half of a body that spills to a file, see the file
    open in ``worker``; return the rest of the body."""
    body = os.urandom(SPILLED)
    assert body_files(worker, folder) == 0
    s.sendall(HEAD + body[: SPILLED // 2])
    wait_until(lambda: body_files(worker, folder) == 1, 10, "the body's temporary file")
    return body[SPILLED // 2 :]


def spilled_upload(s: socket.socket, worker: int, folder: Path) -> bytes:
    """A whole upload that spills to a file (seen open meanwhile); the response."""
    s.sendall(start_spilled_upload(s, worker, folder))
    return read_response(s)


def wait_file_closed(worker: int, folder: Path) -> None:
    wait_until(lambda: body_files(worker, folder) == 0, 10, "the file closed")


def test_the_body_file_is_closed_after_the_request_is_forwarded(
    tmp_path: Path, spill_dir: Path
) -> None:
    with (
        RawServer(digest) as up,
        proxy(tmp_path, [up.address], route=BUFFERED) as p,
    ):
        (worker,) = child_pids(p.pid)
        with socket.create_connection(p.host_port, timeout=10) as s:
            for _ in range(2):  # on one connection: the file goes with its request
                got = spilled_upload(s, worker, spill_dir)
                assert got.startswith(b"HTTP/1.1 200 "), got[:200]
                assert f"{SPILLED} ".encode() in got
                wait_file_closed(worker, spill_dir)
        assert len(up.requests) == 2
    assert UNCLOSED not in p.log  # (complete once bastion has stopped)


def test_the_body_file_is_closed_when_the_client_leaves_mid_upload(
    tmp_path: Path, spill_dir: Path
) -> None:
    with (
        RawServer(digest) as up,
        proxy(tmp_path, [up.address], route=BUFFERED) as p,
    ):
        (worker,) = child_pids(p.pid)
        s = socket.create_connection(p.host_port, timeout=10)
        try:
            start_spilled_upload(s, worker, spill_dir)
        finally:
            s.close()  # half the body sent
        wait_file_closed(worker, spill_dir)
        assert up.connections == 0  # nothing was forwarded
        # and the worker still serves
        with socket.create_connection(p.host_port, timeout=10) as s:
            s.sendall(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
            assert read_response(s).startswith(b"HTTP/1.1 200 ")
    assert UNCLOSED not in p.log


def refused_address() -> str:
    """A local port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def test_the_body_file_is_closed_when_the_upstream_fails(tmp_path: Path, spill_dir: Path) -> None:
    # a POST is not sent again: the upstream that closes without an answer is a 502
    def dead(req: Request) -> bytes:
        return b"<close>"

    with (
        RawServer(dead) as up,
        proxy(tmp_path, [up.address], route=BUFFERED) as p,
    ):
        (worker,) = child_pids(p.pid)
        with socket.create_connection(p.host_port, timeout=10) as s:
            got = spilled_upload(s, worker, spill_dir)
        assert got.startswith(b"HTTP/1.1 502 "), got[:200]
        assert len(up.requests) == 1 and len(up.requests[0].body) == SPILLED
        wait_file_closed(worker, spill_dir)
    assert UNCLOSED not in p.log


def test_the_body_file_is_closed_when_no_server_takes_it(tmp_path: Path, spill_dir: Path) -> None:
    # the one server refuses the connection: tried again, no server is left
    with proxy(tmp_path, [refused_address()], route=BUFFERED) as p:
        (worker,) = child_pids(p.pid)
        with socket.create_connection(p.host_port, timeout=10) as s:
            got = spilled_upload(s, worker, spill_dir)
        assert got.startswith((b"HTTP/1.1 502 ", b"HTTP/1.1 503 ")), got[:200]
        wait_file_closed(worker, spill_dir)
    assert UNCLOSED not in p.log
