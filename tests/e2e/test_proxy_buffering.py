"""Request buffering (``proxy.buffer_request``): the body is read whole, in memory up
to the limit and in a temporary file beyond it, before an upstream connection is
taken, so a slow uploader never holds one."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

from proc_tools import child_pids
from test_proxy import proxy
from upstream_servers import RawServer, Request, response


def digest(req: Request) -> bytes:
    body = f"{len(req.body)} {hashlib.sha256(req.body).hexdigest()}".encode()
    return response(200, body, [("X-Length", req.header("content-length") or "-")])


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
        proxy(tmp_path, [up.address], route=", buffer_request = 65536") as p,
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
        proxy(tmp_path, [up.address], route=", buffer_request = 65536") as p,
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
