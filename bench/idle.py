#!/usr/bin/env python3
"""Memory per idle keep-alive connection: 10,000 of them on one bastion worker.

Starts ``bastion serve raw_asgi:hello --workers 1`` on 127.0.0.1 (``--max-connections``
and ``--keepalive-timeout`` raised so that neither closes the connections during the
run), warms the worker up, reads its RSS, then opens N connections that each make one
keep-alive request, read the answer and stay idle. After a pause it reads the worker's
RSS again and checks that every connection is still open (no end of stream, no error),
holds them a few seconds more and checks again. Reports (RSS after - before) / N.

Target: <= 2.5 KB per connection, all kept. Raises RLIMIT_NOFILE (soft, up to the hard
limit) for itself and the server. The whole run is bounded by ``--time-limit``.

    .venv/bin/python bench/idle.py                       # 10,000 connections
    .venv/bin/python bench/idle.py --connections 2000    # a quick check
"""

from __future__ import annotations

import argparse
import json
import resource
import select
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness.environment import bastion_build, machine, source_tree
from harness.procfs import process_tree, rss_kib
from harness.servers import HOST, PROJECT_PY, RESULTS, ROOT, Server, free_port, stop_all
from harness.workloads import HELLO, WORKLOADS_BY_NAME

TARGET_BYTES = 2.5 * 1000  # per idle connection
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: idle.py\r\n\r\n"
SOCKET_TIMEOUT = 5.0
WARMUP_REQUESTS = 200


def raise_nofile(needed: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE (children inherit it); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    if soft != resource.RLIM_INFINITY and soft < needed:
        try:  # root may raise the hard limit too
            resource.setrlimit(resource.RLIMIT_NOFILE, (needed, needed))
            soft = needed
        except (ValueError, OSError):
            pass
    return needed if soft == resource.RLIM_INFINITY else soft


def read_answer(sock: socket.socket) -> bytes:
    """One whole response to REQUEST (the hello app's: Content-Length framing)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed inside the response body")
        body += chunk
    if not head.startswith(b"HTTP/1.1 200") or body != HELLO:
        raise ConnectionError(f"unexpected answer: {data[:200]!r}")
    return data


def worker_pid(root: int) -> int:
    """The worker below the supervisor (the largest child if there are several)."""
    below = [pid for pid in process_tree(root) if pid != root]
    if not below:
        raise RuntimeError("no worker process below the supervisor")
    return max(below, key=rss_kib)


def closed_count(socks: list[socket.socket]) -> int:
    """How many of ``socks`` the server has closed (end of stream or an error)."""
    poller = select.poll()
    by_fd = {}
    for s in socks:
        poller.register(s, select.POLLIN | select.POLLERR | select.POLLHUP)
        by_fd[s.fileno()] = s
    closed = 0
    for fd, events in poller.poll(0):
        if events & (select.POLLERR | select.POLLHUP):
            closed += 1
            continue
        try:
            if by_fd[fd].recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
    return closed


def settle_rss(pid: int, seconds: float) -> int:
    """The worker's RSS (KiB) after ``seconds`` of idling (the highest of a few reads)."""
    end = time.monotonic() + seconds
    peak = rss_kib(pid)
    while time.monotonic() < end:
        time.sleep(0.1)
        peak = max(peak, rss_kib(pid))
    return peak


def open_idle(
    socks: list[socket.socket],
    count: int,
    deadline: float,
    connect: Callable[[], socket.socket],
    exchange: Callable[[socket.socket], object],
) -> float:
    """Open ``count`` connections (kept in ``socks``, so that the caller closes them
    whatever happens), each with one ``exchange``; the seconds it took."""
    started = time.monotonic()
    for i in range(count):
        if time.monotonic() > deadline:
            raise RuntimeError(f"time limit reached after {i} connections")
        s = connect()
        socks.append(s)
        exchange(s)
    return round(time.monotonic() - started, 1)


def failed(result: dict[str, Any], exc: Exception, opened: int, srv: Server) -> None:
    """Note in ``result`` a run that failed, with the end of the server's log."""
    result["ok"] = False
    result["error"] = f"{exc.__class__.__name__}: {exc}"
    result["opened"] = opened
    result["log_tail"] = srv.log_tail()


def write_report(name: str, argv: list[str] | None, tree: dict[str, Any], **found: Any) -> None:
    """Save the results with what they were measured on, in bench/results/NAME-TIME.json."""
    started = datetime.now(UTC)
    report = {
        "started": started.isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)],
        "tree": tree,
        "machine": machine(),
        "bastion_build": bastion_build(),
        **found,
    }
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {path.relative_to(ROOT)}")


def send_one(sock: socket.socket) -> None:
    sock.sendall(REQUEST)
    read_answer(sock)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    deadline = time.monotonic() + args.time_limit
    port = free_port()
    w = WORKLOADS_BY_NAME["asgi-plaintext"]
    cmd = [str(PROJECT_PY), "-m", "bastion", "serve", w.target, "--workers", "1"]
    cmd += ["--bind", f"{HOST}:{port}", "--interface", "asgi", "--log-level", "warning"]
    cmd += ["--max-connections", str(args.connections + 100)]
    cmd += ["--keepalive-timeout", str(args.time_limit + 60)]
    result: dict[str, Any] = {"command": " ".join(cmd), "connections": args.connections}
    srv = Server("bastion", cmd, port, workdir / "server.log")
    socks: list[socket.socket] = []
    try:
        root = srv.start()
        srv.wait_ready(w)
        worker = worker_pid(root)
        with socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT) as warm:
            for _ in range(WARMUP_REQUESTS):
                send_one(warm)
        before = settle_rss(worker, 1.0)
        result["open_seconds"] = open_idle(
            socks,
            args.connections,
            deadline,
            lambda: socket.create_connection((HOST, port), timeout=SOCKET_TIMEOUT),
            send_one,
        )
        after = settle_rss(worker, 2.0)
        result["closed_at_once"] = closed_count(socks)
        time.sleep(max(0.0, min(args.hold, deadline - time.monotonic())))
        result["closed_after_hold"] = closed_count(socks)
        result["hold_seconds"] = args.hold
        if (status := srv.exited()) is not None:
            raise RuntimeError(f"the server exited with status {status}")
        result["worker_rss_before_kib"] = before
        result["worker_rss_after_kib"] = after
        result["bytes_per_connection"] = round((after - before) * 1024 / args.connections)
        result["all_kept"] = result["closed_after_hold"] == 0
        result["ok"] = True
    except (RuntimeError, OSError) as exc:
        failed(result, exc, len(socks), srv)
    finally:
        for s in socks:
            s.close()
        srv.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--connections", type=int, default=10_000, help="default 10000")
    p.add_argument("--hold", type=float, default=5.0, help="seconds to hold them idle (5)")
    p.add_argument("--time-limit", type=float, default=120.0, help="whole run bound (120 s)")
    args = p.parse_args(argv)
    if not (1 <= args.connections <= 50_000 and 0 <= args.hold <= 300):
        p.error("--connections must be 1..50000, --hold 0..300 s")
    limit = raise_nofile(args.connections + 200)
    if limit < args.connections + 200:
        sys.exit(f"idle: RLIMIT_NOFILE is {limit}, {args.connections + 200} needed")
    tree = source_tree()
    with tempfile.TemporaryDirectory(prefix="bastion-idle-") as tmp:
        try:
            result = run(args, Path(tmp))
        finally:
            stop_all()
    if not result["ok"]:
        print(f"idle: failed: {result['error']}")
        if result.get("log_tail"):
            print("    " + result["log_tail"].replace("\n", "\n    "))
    else:
        per = result["bytes_per_connection"]
        kept = args.connections - result["closed_after_hold"]
        print(
            f"{args.connections} idle connections opened in {result['open_seconds']} s; "
            f"worker RSS {result['worker_rss_before_kib'] / 1024:.1f} MB -> "
            f"{result['worker_rss_after_kib'] / 1024:.1f} MB: {per:,} bytes per connection"
        )
        print(f"still open after {args.hold:g} s idle: {kept} of {args.connections}")
        verdict = "PASS" if per <= TARGET_BYTES else "MISS"
        print(f"{verdict:<5} <= {TARGET_BYTES / 1000:g} KB per idle connection: {per:,} bytes")
        verdict = "PASS" if result["all_kept"] else "MISS"
        print(f"{verdict:<5} all kept open: {kept} of {args.connections}")
    write_report("idle", argv, tree, result=result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
