"""One measurement: a server under wrk, with its latency, throughput and memory."""

from __future__ import annotations

import argparse
import http.client
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from harness.procfs import CpuSnapshot, RssSampler, cpu_busy, cpu_usage, process_tree, rss_kib
from harness.servers import (
    BENCH,
    CLIENT_CPU,
    HOST,
    SERVER_CPU,
    Server,
    free_port,
    pinned,
    probe,
    server_command,
)
from harness.workloads import NOISY_PCT, Workload, interference, void_reason

QUIET_PCT = 10.0  # both benchmark cores below this busy share: the machine is quiet enough

# -- wrk ----------------------------------------------------------------------------------

_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def run_wrk(w: Workload, port: int, seconds: float, args: argparse.Namespace) -> dict[str, Any]:
    cmd = ["wrk", "-t1", f"-c{args.connections}", f"-d{max(1, round(seconds))}s"]
    cmd += ["--latency", "--timeout", "5s"]
    if w.post:
        cmd += ["-s", str(BENCH / "post_10k.lua")]
    if w.accept_encoding:
        cmd += ["-H", f"Accept-Encoding: {w.accept_encoding}"]
    cmd.append(f"http://{HOST}:{port}/")
    out = subprocess.run(
        pinned(CLIENT_CPU, args.nice, cmd),
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    ).stdout
    return parse_wrk(out)


def parse_wrk(out: str) -> dict[str, Any]:
    result: dict[str, Any] = {"requests": 0, "rps": 0.0, "non_2xx": 0, "socket_errors": {}}
    if m := re.search(r"Requests/sec:\s+([\d.]+)", out):
        result["rps"] = float(m.group(1))
    if m := re.search(r"(\d+) requests in", out):
        result["requests"] = int(m.group(1))
    if m := re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out):
        result["non_2xx"] = int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        keys = ("connect", "read", "write", "timeout")
        result["socket_errors"] = {k: int(v) for k, v in zip(keys, m.groups(), strict=True)}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M):
        result[f"p{pct}_ms"] = round(float(value) * _UNIT_MS[unit], 3)
    if not result["requests"]:
        result["wrk_output"] = out[-2000:]
    return result


# -- one measurement ------------------------------------------------------------------------


def measure_quietly(
    server: str, w: Workload, args: argparse.Namespace, logs: Path
) -> dict[str, Any]:
    """Measure when the benchmark cores are quiet; measure again (up to ``args.retries``
    times) when other processes took a share of them, and keep the least disturbed run."""
    attempts: list[dict[str, Any]] = []
    for attempt in range(1 + args.retries):
        if attempt:
            print(f"    others took {interference(attempts[-1]):.0f}% of a core: measuring again")
        busy_before = settle(args.settle)
        row = measure(server, w, args, logs)
        row["busy_before_pct"] = busy_before
        attempts.append(row)
        if not row["ok"] or row["void"] or interference(row) <= NOISY_PCT:
            break  # a void run is the server's doing: it is reported, not measured away
    best = min([r for r in attempts if r["ok"]] or attempts, key=interference)
    best["attempts"] = len(attempts)
    return best


def settle(limit: float) -> float:
    """Wait up to ``limit`` seconds for both benchmark cores to be quiet; their busiest
    share (percent) over the last second waited."""
    deadline = time.monotonic() + limit
    while True:
        busiest = max(cpu_busy((SERVER_CPU, CLIENT_CPU), 1.0).values()) if limit > 0 else 0.0
        if busiest < QUIET_PCT or time.monotonic() >= deadline:
            return busiest


def measure(server: str, w: Workload, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    port = free_port()
    cmd = server_command(server, w, port)
    row: dict[str, Any] = {"server": server, "ok": False, "command": " ".join(cmd)}
    srv = Server(server, cmd, port, logs / f"{w.name}-{server}.log", nice=args.nice)
    try:
        pid = srv.start()
        srv.wait_ready(w)
        row["idle_rss_tree_mb"] = _mb(sum(rss_kib(p) for p in process_tree(pid)))
        if args.warmup > 0:
            run_wrk(w, port, args.warmup, args)
        cpus = (SERVER_CPU, CLIENT_CPU)
        with RssSampler(pid) as rss:
            before = CpuSnapshot.take(pid, cpus)
            row.update(run_wrk(w, port, args.duration, args))
            after = CpuSnapshot.take(pid, cpus)
            rss.sample()
        row.update(cpu_usage(before, after, SERVER_CPU, CLIENT_CPU))
        if row["server_cpu_pct"] > 0:  # requests per second of the server's own CPU time
            row["rps_per_cpu"] = round(row["rps"] * 100 / row["server_cpu_pct"], 1)
        row["rss_tree_mb"] = _mb(rss.peak_tree_kib)
        row["rss_worker_mb"] = _mb(rss.peak_worker_kib)
        row["processes"] = len(rss.peak_by_pid)
        if (status := srv.exited()) is not None:
            raise RuntimeError(f"exited during the run with status {status}")
        wrong = probe(w, port)
        if wrong:
            raise RuntimeError(f"wrong answer after the run: {wrong}")
        if not row["requests"]:
            raise RuntimeError("wrk completed no request")
        row["ok"] = True
        row["void"] = void_reason(row)
    except (RuntimeError, OSError, http.client.HTTPException, subprocess.SubprocessError) as e:
        row["error"] = str(e)
        row["log_tail"] = srv.log_tail()
    finally:
        row["port_freed"] = srv.stop()
    return row


def _mb(kib: int) -> float:
    return round(kib / 1024, 1)
