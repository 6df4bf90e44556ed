#!/usr/bin/env python3
"""WebSocket benchmark: bastion against uvicorn (websockets, wsproto) and Granian.

Two workloads on the same ASGI echo app (``bench/apps/raw_ws.py``):

- ``ws-echo``: 64 connections, each sends one 16-byte text message and waits for its echo
  before sending the next; the figure is round trips per second (and their latency).
- ``ws-64k``: 64 connections, each sends one 64 KiB binary message and waits for its
  echo; the figure is MiB/s of messages echoed (one direction counted).

Each server runs alone with one worker pinned to CPU 0 (``taskset -c 0``); the load
client runs on CPU 1, traffic goes only to 127.0.0.1, every run is bounded (warm-up, then
``--duration`` seconds, 8 by default). For each server: wait for quiet cores, start it,
check that it echoes text and binary messages byte for byte, warm up, measure (CPU time
of both cores, peak RSS of the server's tree), check the echo again, stop it.

The load client (``ws.py client``, run as its own process on CPU 1) is written so that it
is not the bottleneck: raw non-blocking sockets on one epoll loop, no WebSocket library;
every frame it sends is built and masked once before the run (the same mask each time),
so sending is one ``send`` of ready bytes; reading only parses frame heads and counts
payload bytes. Two checks say whether it kept up, and both are in the output:

1. its own CPU use: the client's core is measured like the server's; a client that used
   under ~90 % of its core while the server used ~100 % of its own was waiting for the
   server, not the other way round (a `!` note marks runs where the client was above
   90 %);
2. the ``bare`` server (``ws.py bare``): a minimal WebSocket echo written for this check
   on uvloop (handshake, unmask, echo one frame; no limits, no ASGI, no validation). The
   client against it shows how many round trips the client can drive at least; that
   figure should be well above every real server's.

    .venv/bin/python bench/ws.py                       # both workloads, all servers (~3 min)
    .venv/bin/python bench/ws.py --only ws-echo --servers bastion,granian --duration 4

Results go to bench/results/ws-<UTC time>.json. See bench/README.md.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import io
import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = base64.b64encode(hashlib.sha1(KEY + WS_GUID).digest())
MASK = b"\x37\xfa\x21\x3d"
TEXT_MESSAGE = b"0123456789abcdef"  # 16 bytes of text
BINARY_SIZE = 64 * 1024
OP_TEXT, OP_BINARY, OP_CLOSE = 0x1, 0x2, 0x8


# -- frames -------------------------------------------------------------------------------


def frame(opcode: int, payload: bytes, mask: bytes | None = MASK) -> bytes:
    """One final frame; masked (as a client must) unless ``mask`` is None."""
    n = len(payload)
    bit = 0x80 if mask is not None else 0
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + xor_mask(payload, mask)


def xor_mask(data: bytes, mask: bytes) -> bytes:
    n = len(data)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def handshake(port: int, timeout: float = 5.0) -> socket.socket:
    """A connected socket past the opening handshake (no extension offered)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n" % (port, KEY)
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101") or ACCEPT not in head:
            raise ConnectionError(f"handshake refused: {head[:200]!r}")
        if rest:
            raise ConnectionError("data after the handshake")
    except BaseException:
        sock.close()
        raise
    return sock


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One whole (unfragmented, unmasked) frame from a blocking socket."""

    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed inside a frame")
            buf += chunk
        return buf

    b0, b1 = exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(exact(2), "big")
    elif n == 127:
        n = int.from_bytes(exact(8), "big")
    if b1 & 0x80:
        raise ConnectionError("masked frame from the server")
    return b0 & 0x0F, exact(n)


def probe(port: int) -> str | None:
    """None if the server echoes a text and a 64 KiB binary message exactly, else why not."""
    try:
        sock = handshake(port, timeout=3.0)
    except OSError as e:
        return f"no handshake ({e})"
    try:
        binary = bytes(range(256)) * (BINARY_SIZE // 256)
        for opcode, payload in ((OP_TEXT, "héllo ✓".encode()), (OP_BINARY, binary)):
            sock.sendall(frame(opcode, payload))
            got = read_frame(sock)
            if got != (opcode, payload):
                return f"wrong echo: opcode {got[0]}, {len(got[1])} bytes {got[1][:40]!r}"
        sock.sendall(frame(OP_CLOSE, (1000).to_bytes(2, "big")))
        with contextlib.suppress(OSError):
            read_frame(sock)
        return None
    except OSError as e:
        return f"echo failed ({e.__class__.__name__}: {e})"
    finally:
        sock.close()


# -- the load client ------------------------------------------------------------------------


def run_client(port: int, mode: str, connections: int, seconds: float) -> dict[str, Any]:
    """Drive ``connections`` sockets for ``seconds``: each sends one message and waits for
    its echo before the next. Counts only echoes complete before the deadline."""
    opcode, payload = (
        (OP_TEXT, TEXT_MESSAGE) if mode == "echo" else (OP_BINARY, b"\xa5" * BINARY_SIZE)
    )
    out_frame = frame(opcode, payload)  # built and masked once
    want = len(payload)
    expect = frame(opcode, payload, None)  # the echo, as an unmasked server frame
    socks = [handshake(port) for _ in range(connections)]
    ep = select.epoll()
    by_fd: dict[int, socket.socket] = {}
    buf: dict[int, bytearray] = {}
    pending: dict[int, memoryview] = {}
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    errors: list[str] = []
    IN, OUT = select.EPOLLIN, select.EPOLLOUT
    clock = time.perf_counter

    def send(fd: int) -> None:
        sock = by_fd[fd]
        sent_at[fd] = clock()
        n = sock.send(out_frame)
        if n < len(out_frame):
            pending[fd] = memoryview(out_frame)[n:]
            ep.modify(fd, IN | OUT)

    for sock in socks:
        sock.setblocking(False)
        fd = sock.fileno()
        by_fd[fd] = sock
        buf[fd] = bytearray()
        ep.register(fd, IN)
    start = clock()
    deadline = start + seconds
    for fd in by_fd:
        send(fd)
    active = len(by_fd)
    bytes_in = 0
    while active:
        now = clock()
        if now >= deadline:
            break
        for fd, ev in ep.poll(deadline - now):
            sock = by_fd[fd]
            if ev & OUT and fd in pending:
                rest = pending[fd]
                n = sock.send(rest)
                if n < len(rest):
                    pending[fd] = rest[n:]
                else:
                    del pending[fd]
                    ep.modify(fd, IN)
            if not ev & (IN | select.EPOLLHUP | select.EPOLLERR):
                continue
            try:
                data = sock.recv(262144)
            except BlockingIOError:
                continue
            except OSError as e:
                data, why = b"", str(e)
            else:
                why = "closed by the server"
            if not data:
                errors.append(why)
                ep.unregister(fd)
                active -= 1
                continue
            bytes_in += len(data)
            b = buf[fd]
            if data == expect and not b:  # the usual case for small messages: one whole echo
                done = clock()
                if done > deadline:
                    break
                latencies.append(done - sent_at[fd])
                send(fd)
                continue
            b += data
            while len(b) >= 2:
                n = b[1] & 0x7F
                hl = 2
                if n == 126:
                    if len(b) < 4:
                        break
                    n, hl = int.from_bytes(b[2:4], "big"), 4
                elif n == 127:
                    if len(b) < 10:
                        break
                    n, hl = int.from_bytes(b[2:10], "big"), 10
                if len(b) < hl + n:
                    break
                op = b[0] & 0x0F
                del b[: hl + n]
                if op != opcode or n != want:
                    errors.append(f"unexpected frame: opcode {op}, {n} bytes")
                    continue
                done = clock()
                if done > deadline:
                    break
                latencies.append(done - sent_at[fd])
                send(fd)
    elapsed = min(clock(), deadline) - start
    close = frame(OP_CLOSE, (1000).to_bytes(2, "big"))
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.setblocking(True)
            sock.settimeout(0.5)
            sock.send(close)
        sock.close()
    ep.close()
    latencies.sort()
    count = len(latencies)

    def pct(p: float) -> float:
        return round(latencies[min(count - 1, int(count * p))] * 1000, 3) if count else 0.0

    return {
        "messages": count,
        "seconds": round(elapsed, 3),
        "rate": round(count / elapsed, 1) if elapsed > 0 else 0.0,
        "mib_s": round(count * want / elapsed / 2**20, 1) if elapsed > 0 else 0.0,
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "errors": len(errors),
        "first_errors": errors[:5],
        "connections": connections,
        "message_bytes": want,
    }


# -- the bare server -----------------------------------------------------------------------


def run_bare(port: int) -> None:
    """A minimal WebSocket echo on uvloop, to check the client against: it does the least
    a server can (handshake, unmask, echo each frame as one frame), no checks at all."""
    import asyncio

    import uvloop

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: Any = transport
            self.buf = bytearray()
            self.open = False
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data: bytes) -> None:
            b = self.buf
            b += data
            if not self.open:
                end = b.find(b"\r\n\r\n")
                if end < 0:
                    return
                key = b""
                for line in bytes(b[:end]).split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"sec-websocket-key":
                        key = value.strip()
                accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
                self.t.write(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
                )
                del b[: end + 4]
                self.open = True
            while len(b) >= 6:
                n = b[1] & 0x7F
                hl = 2
                if n == 126:
                    n, hl = int.from_bytes(b[2:4], "big"), 4
                elif n == 127:
                    n, hl = int.from_bytes(b[2:10], "big"), 10
                if len(b) < hl + 4 + n:
                    return
                op = b[0] & 0x0F
                mask = bytes(b[hl : hl + 4])
                payload = xor_mask(bytes(b[hl + 4 : hl + 4 + n]), mask)
                del b[: hl + 4 + n]
                self.t.write(frame(op, payload, None))
                if op == OP_CLOSE:
                    self.t.close()
                    return

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Echo, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# -- the benchmark -------------------------------------------------------------------------

SERVERS = ("bastion", "uvicorn-websockets", "uvicorn-wsproto", "granian", "bare")
WORKLOADS = {
    "ws-echo": ("echo", "echo round trips, 16-byte text, 64 connections each waiting"),
    "ws-64k": ("binary", "64 KiB binary messages echoed, 64 connections each waiting"),
}
TARGETS = (("uvicorn-websockets", 1.3), ("uvicorn-wsproto", 1.3), ("granian", 1.0))
CLIENT_BUSY_PCT = 90.0
NOISY_PCT = 5.0  # other processes above this share of a benchmark core: measure again
APP = "raw_ws:echo"


def server_command(server: str, port: int) -> list[str]:
    from harness.servers import BENCH, HOST, PEERS, PROJECT_PY

    peers_bin = PEERS / "bin"
    if server == "bastion":
        return [
            *(str(PROJECT_PY), "-m", "bastion", "serve", APP, "--workers", "1"),
            *("--bind", f"{HOST}:{port}", "--interface", "asgi", "--log-level", "warning"),
        ]
    if server.startswith("uvicorn-"):
        return [
            *(str(peers_bin / "uvicorn"), APP, "--host", HOST, "--port", str(port)),
            *("--loop", "uvloop", "--http", "httptools", "--ws", server.split("-", 1)[1]),
            *("--no-access-log", "--log-level", "warning"),
        ]
    if server == "granian":
        return [
            *(str(peers_bin / "granian"), "--interface", "asgi", "--workers", "1"),
            *("--host", HOST, "--port", str(port), "--log-level", "warning", APP),
        ]
    if server == "bare":
        return [str(PROJECT_PY), str(BENCH / "ws.py"), "bare", "--port", str(port)]
    raise ValueError(server)


def wait_ready(srv: Any, port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    problem = "no answer"
    while time.monotonic() < deadline:
        if srv.exited() is not None:
            raise RuntimeError(f"exited with status {srv.exited()}")
        wrong = probe(port)
        if wrong is None:
            return
        problem = wrong
        time.sleep(0.2)
    raise RuntimeError(f"not ready after {timeout:.0f} s: {problem}")


def client(port: int, mode: str, seconds: float, args: argparse.Namespace) -> dict[str, Any]:
    from harness.servers import CLIENT_CPU, pinned

    cmd = [sys.executable, str(Path(__file__).resolve()), "client", "--port", str(port)]
    cmd += ["--mode", mode, "--connections", str(args.connections), "--seconds", str(seconds)]
    proc = subprocess.run(
        pinned(CLIENT_CPU, args.nice, cmd),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"client failed: {proc.stderr.strip()[-500:]}")
    return dict(json.loads(proc.stdout))


def measure(server: str, name: str, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    from harness.measure import settle
    from harness.procfs import CpuSnapshot, RssSampler, cpu_usage
    from harness.servers import CLIENT_CPU, SERVER_CPU, Server, free_port

    mode = WORKLOADS[name][0]
    port = free_port()
    cmd = server_command(server, port)
    row: dict[str, Any] = {"server": server, "ok": False, "command": " ".join(cmd)}
    row["busy_before_pct"] = settle(args.settle)
    srv = Server(server, cmd, port, logs / f"{name}-{server}.log", nice=args.nice)
    try:
        pid = srv.start()
        wait_ready(srv, port)
        if args.warmup > 0:
            client(port, mode, args.warmup, args)
        cpus = (SERVER_CPU, CLIENT_CPU)
        with RssSampler(pid) as rss:
            before = CpuSnapshot.take(pid, cpus)
            row.update(client(port, mode, args.duration, args))
            after = CpuSnapshot.take(pid, cpus)
            rss.sample()
        row.update(cpu_usage(before, after, SERVER_CPU, CLIENT_CPU))
        row["rss_tree_mb"] = round(rss.peak_tree_kib / 1024, 1)
        if row["server_cpu_pct"] > 0:  # messages per second of the server's own CPU time
            row["rate_per_cpu"] = round(row["rate"] * 100 / row["server_cpu_pct"], 1)
        if srv.exited() is not None:
            raise RuntimeError(f"exited during the run with status {srv.exited()}")
        if wrong := probe(port):
            raise RuntimeError(f"wrong echo after the run: {wrong}")
        if not row["messages"]:
            raise RuntimeError("no message echoed")
        row["ok"] = True
        row["void"] = (
            f"{row['errors']} client errors: {row['first_errors']}" if row["errors"] else None
        )
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
        row["error"] = str(e)
        row["log_tail"] = srv.log_tail()
    finally:
        row["port_freed"] = srv.stop()
    return row


def disturbance(row: dict[str, Any]) -> float:
    """How much of a benchmark core other processes took during the run (percent)."""
    return max(row.get("others_on_server_cpu_pct", 0.0), row.get("others_on_client_cpu_pct", 0.0))


def measure_quietly(server: str, name: str, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    """Measure; again (up to ``args.retries`` times) when other processes took over 5 % of
    a benchmark core; keep the least disturbed run."""
    attempts: list[dict[str, Any]] = []
    for attempt in range(1 + args.retries):
        if attempt:
            print(f"    others took {disturbance(attempts[-1]):.0f}% of a core: measuring again")
        row = measure(server, name, args, logs)
        attempts.append(row)
        if not row["ok"] or row["void"] or disturbance(row) <= NOISY_PCT:
            break
    best = min([r for r in attempts if r["ok"]] or attempts, key=disturbance)
    best["attempts"] = len(attempts)
    return best


def print_table(name: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n== {name}: {WORKLOADS[name][1]} ==")
    mine = [r for r in rows if r["server"] == "bastion" and r["ok"] and not r["void"]]
    ours = mine[0]["rate"] if mine else 0
    ours_cpu = mine[0].get("rate_per_cpu", 0) if mine else 0
    print(
        f"{'server':<19} {'msg/s':>9} {'MiB/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'RSS MB':>7} "
        f"{'CPU %':>6} {'client %':>8} {'bastion ÷ (per CPU-s)':>21}"
    )
    for r in rows:
        if not r["ok"]:
            print(f"{r['server']:<19} failed: {r.get('error')}")
            continue
        if r["void"]:
            print(f"{r['server']:<19} VOID: {r['void']}")
            continue
        ratio = f"{ours / r['rate']:.2f}x" if ours and r["server"] != "bastion" else "-"
        per_cpu = r.get("rate_per_cpu") or 0.0
        if ours_cpu and per_cpu and r["server"] != "bastion":
            ratio += f" ({ours_cpu / per_cpu:.2f}x)"
        notes = []
        if r["client_cpu_pct"] > CLIENT_BUSY_PCT:
            notes.append(f"client used {r['client_cpu_pct']:.0f}% of its core")
        others = disturbance(r)
        if others > NOISY_PCT:
            notes.append(f"other processes took {others:.0f}% of a benchmark core")
        print(
            f"{r['server']:<19} {r['rate']:>9.0f} {r['mib_s']:>7.1f} {r['p50_ms']:>7.2f} "
            f"{r['p99_ms']:>7.2f} {r['rss_tree_mb']:>7.1f} {r['server_cpu_pct']:>6.0f} "
            f"{r['client_cpu_pct']:>8.0f} {ratio:>21}"
            + ("  ! " + "; ".join(notes) if notes else "")
        )


def check_targets(results: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = {r["server"]: r for r in results.get("ws-echo", [])}
    out = []

    def good(r: dict[str, Any] | None) -> bool:
        return bool(r and r["ok"] and not r["void"])

    for peer, want in TARGETS:
        target = f"ws-echo round trips >= {want}x {peer}"
        ours, theirs = rows.get("bastion"), rows.get(peer)
        if not (good(ours) and good(theirs)):
            out.append({"target": target, "verdict": "n/a", "detail": "a run is missing or void"})
            continue
        assert ours is not None and theirs is not None
        ratio = ours["rate"] / theirs["rate"]
        detail = f"{ratio:.2f}x ({ours['rate']:.0f} vs {theirs['rate']:.0f} round trips/s)"
        verdict = "PASS" if ratio >= want else "MISS"
        out.append(
            {"target": target, "verdict": verdict, "ratio": round(ratio, 3), "detail": detail}
        )
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--only", help="workloads, comma-separated: " + ",".join(WORKLOADS))
    p.add_argument("--servers", help="servers, comma-separated: " + ",".join(SERVERS))
    p.add_argument("--duration", type=float, default=8.0, help="seconds per measured run (8)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up (2)")
    p.add_argument("--connections", type=int, default=64, help="connections (64)")
    p.add_argument("--settle", type=float, default=20.0, help="wait up to S s for quiet cores (20)")
    p.add_argument("--retries", type=int, default=2, help="re-measure disturbed runs (2)")
    p.add_argument("--nice", type=int, help="niceness of servers and client (-20 as root)")
    args = p.parse_args(argv)
    if not (1 <= args.duration <= 60 and 0 <= args.warmup <= 30 and 1 <= args.connections <= 1000):
        p.error("--duration 1..60, --warmup 0..30, --connections 1..1000")
    if args.nice is None:
        args.nice = -20 if os.geteuid() == 0 else 0
    args.workloads = [w for w in (args.only or ",".join(WORKLOADS)).split(",") if w]
    args.server_names = [s for s in (args.servers or ",".join(SERVERS)).split(",") if s]
    for w in args.workloads:
        if w not in WORKLOADS:
            p.error(f"unknown workload {w}")
    for s in args.server_names:
        if s not in SERVERS:
            p.error(f"unknown server {s}")
    return args


def main(argv: list[str] | None = None) -> int:
    from harness.environment import (
        bastion_build,
        ensure_peers,
        machine,
        preflight,
        source_tree,
        versions,
    )
    from harness.servers import CLIENT_CPU, RESULTS, ROOT, renice_session, stop_all

    args = parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    preflight()
    if set(args.server_names) - {"bastion", "bare"}:
        ensure_peers()
    os.sched_setaffinity(0, {CLIENT_CPU})
    if args.nice:
        renice_session(os.getpid(), args.nice)
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": ["ws.py", *(sys.argv[1:] if argv is None else argv)],
        "settings": {
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "connections": args.connections,
            "text_message_bytes": len(TEXT_MESSAGE),
            "binary_message_bytes": BINARY_SIZE,
            "server_cpu": 0,
            "client_cpu": CLIENT_CPU,
            "workers": 1,
            "nice": args.nice,
            "retries": args.retries,
            "settle_s": args.settle,
        },
        "tree": source_tree(),
        "machine": machine(),
        "versions": versions(),
        "bastion_build": bastion_build(),
        "workloads": {},
    }
    results: dict[str, list[dict[str, Any]]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bastion-ws-bench-") as tmp:
            for name in args.workloads:
                rows = results.setdefault(name, [])
                report["workloads"][name] = {"title": WORKLOADS[name][1], "rows": rows}
                for server in args.server_names:
                    print(f"  {name} / {server} ...", flush=True)
                    row = measure_quietly(server, name, args, Path(tmp))
                    if not row["ok"] and row.get("log_tail"):
                        print("    " + row["log_tail"].replace("\n", "\n    "))
                    rows.append(row)
                print_table(name, rows)
    except KeyboardInterrupt:
        report["interrupted"] = True
    finally:
        stop_all()
    report["targets"] = check_targets(results)
    report["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    if report["targets"]:
        print("\n== targets ==")
    for t in report["targets"]:
        print(f"{t['verdict']:<5} {t['target']}: {t['detail']}")
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"ws-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults: {path.relative_to(ROOT)}")
    return 130 if report.get("interrupted") else 0


def sub_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="ws.py " + argv[0])
    p.add_argument("--port", type=int, required=True)
    if argv[0] == "bare":
        run_bare(p.parse_args(argv[1:]).port)
        return 0
    p.add_argument("--mode", choices=("echo", "binary"), default="echo")
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--seconds", type=float, default=8.0)
    a = p.parse_args(argv[1:])
    print(json.dumps(run_client(a.port, a.mode, a.connections, a.seconds)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("client", "bare"):
        sys.exit(sub_main(sys.argv[1:]))
    sys.exit(main())
