#!/usr/bin/env python3
"""Memory per idle WebSocket: 5,000 of them on one worker, bastion beside uvicorn.

For each server (one worker, the raw ASGI echo app ``bench/apps/raw_ws.py``, on
127.0.0.1): start it, warm it up with a few echoes, read the worker's RSS, open N
WebSockets (handshake, one echo each, then silence), read the RSS again after a pause,
check that every socket is still open, and time 200 echo round trips on one more
connection while the N others stay open (is the busy client still served fast?).
Reports (RSS after - before) / N and the echo latency.

bastion runs with ``--max-connections`` N + 100 (the default, 1,000 per worker, would
refuse the rest); uvicorn has no such limit by default. Raises RLIMIT_NOFILE for itself
and the servers. The whole run is bounded by ``--time-limit`` per server.

    .venv/bin/python bench/ws_idle.py                                  # 5,000, all servers
    .venv/bin/python bench/ws_idle.py --connections 1000 --servers bastion
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness.environment import source_tree
from harness.procfs import process_tree, rss_kib
from harness.servers import HOST, PEERS, PROJECT_PY, Server, free_port, stop_all
from idle import closed_count, failed, open_idle, raise_nofile, settle_rss, write_report
from ws import OP_TEXT, frame, handshake, read_frame

SERVERS = ("bastion", "uvicorn-websockets", "uvicorn-wsproto")
APP = "raw_ws:echo"
ECHO = b"0123456789abcdef"
ECHO_FRAME = frame(OP_TEXT, ECHO)
WARMUP = 200
PROBES = 200


def command(server: str, port: int, connections: int) -> list[str]:
    if server == "bastion":
        return [
            *(str(PROJECT_PY), "-m", "bastion", "serve", APP, "--workers", "1"),
            *("--bind", f"{HOST}:{port}", "--interface", "asgi", "--log-level", "warning"),
            *("--max-connections", str(connections + 100)),
        ]
    if server.startswith("uvicorn-"):
        return [
            *(str(PEERS / "bin" / "uvicorn"), APP, "--host", HOST, "--port", str(port)),
            *("--loop", "uvloop", "--http", "httptools", "--ws", server.split("-", 1)[1]),
            *("--no-access-log", "--log-level", "warning"),
        ]
    raise ValueError(server)


def serving_pid(root: int) -> int:
    """The process that holds the connections: the worker below bastion's supervisor,
    or uvicorn itself (one process)."""
    below = [pid for pid in process_tree(root) if pid != root]
    return max(below, key=rss_kib) if below else root


def echo(sock: socket.socket) -> None:
    sock.sendall(ECHO_FRAME)
    opcode, payload = read_frame(sock)
    if opcode != OP_TEXT or payload != ECHO:
        raise ConnectionError(f"bad echo: {opcode} {payload[:40]!r}")


def wait_ready(srv: Server, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if srv.exited() is not None:
            raise RuntimeError(f"exited with status {srv.exited()}")
        try:
            with handshake(port, timeout=1.0) as s:
                echo(s)
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("not ready")


def run(server: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    deadline = time.monotonic() + args.time_limit
    port = free_port()
    cmd = command(server, port, args.connections)
    result: dict[str, Any] = {"server": server, "command": " ".join(cmd)}
    srv = Server(server, cmd, port, workdir / f"{server}.log")
    socks: list[socket.socket] = []
    try:
        root = srv.start()
        wait_ready(srv, port)
        pid = serving_pid(root)
        with handshake(port) as warm:
            for _ in range(WARMUP):
                echo(warm)
        before = settle_rss(pid, 1.0)
        result["open_seconds"] = open_idle(
            socks, args.connections, deadline, lambda: handshake(port), echo
        )
        after = settle_rss(pid, 2.0)
        with handshake(port) as busy:
            times = []
            for _ in range(PROBES):
                t = time.perf_counter()
                echo(busy)
                times.append(time.perf_counter() - t)
        times.sort()
        result["echo_median_ms"] = round(statistics.median(times) * 1000, 3)
        result["echo_p99_ms"] = round(times[int(len(times) * 0.99) - 1] * 1000, 3)
        time.sleep(max(0.0, min(args.hold, deadline - time.monotonic())))
        result["closed"] = closed_count(socks)
        if (status := srv.exited()) is not None:
            raise RuntimeError(f"the server exited with status {status}")
        result["rss_before_kib"] = before
        result["rss_after_kib"] = after
        result["bytes_per_connection"] = round((after - before) * 1024 / args.connections)
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
    p.add_argument("--connections", type=int, default=5_000, help="default 5000")
    p.add_argument("--servers", default=",".join(SERVERS), help=",".join(SERVERS))
    p.add_argument("--hold", type=float, default=3.0, help="seconds to hold them idle (3)")
    p.add_argument("--time-limit", type=float, default=120.0, help="per server (120 s)")
    args = p.parse_args(argv)
    servers = [s for s in args.servers.split(",") if s]
    if not (1 <= args.connections <= 15_000 and 0 <= args.hold <= 60):
        p.error("--connections must be 1..15000, --hold 0..60 s")
    if any(s not in SERVERS for s in servers):
        p.error(f"--servers: choose among {', '.join(SERVERS)}")
    limit = raise_nofile(args.connections + 300)
    if limit < args.connections + 300:
        sys.exit(f"ws_idle: RLIMIT_NOFILE is {limit}, {args.connections + 300} needed")
    tree = source_tree()
    results = []
    with tempfile.TemporaryDirectory(prefix="bastion-ws-idle-") as tmp:
        try:
            for server in servers:
                results.append(run(server, args, Path(tmp)))
        finally:
            stop_all()
    for r in results:
        if not r["ok"]:
            print(f"{r['server']:<20} failed: {r['error']}")
            if r.get("log_tail"):
                print("    " + r["log_tail"].replace("\n", "\n    "))
            continue
        print(
            f"{r['server']:<20} {args.connections} idle WebSockets in {r['open_seconds']} s: "
            f"RSS {r['rss_before_kib'] / 1024:.1f} -> {r['rss_after_kib'] / 1024:.1f} MB, "
            f"{r['bytes_per_connection']:,} bytes each; {r['closed']} closed; "
            f"echo beside them {r['echo_median_ms']} ms median, {r['echo_p99_ms']} ms p99"
        )
    write_report("ws-idle", argv, tree, results=results)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
