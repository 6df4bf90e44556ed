"""Hostile clients: how much of a normal client's throughput each server keeps.

For each server (one worker, defaults) and each attack, side by side in one run:

1. the server starts fresh and a normal client (wrk, 4 keep-alive connections, reading
   ``/``) measures its unloaded throughput;
2. the attack starts, ramps up for a few seconds, and the same normal client measures
   again while it goes on; the server's memory (RSS of its process tree) is sampled;
3. the attack stops and the server is stopped.

Attacks (all against 127.0.0.1, bounded in connections and time):

* ``slowloris``: 1,000 connections sending request headers a few bytes at a time
  (slowhttptest -H);
* ``slowbody``: 1,000 POSTs declaring a large body and sending it a few bytes at a time
  (slowhttptest -B);
* ``slowread``: 1,000 connections requesting a 1 MiB response and reading it through a
  tiny window (slowhttptest -X);
* ``churn``: 2,000 new connections a second that send nothing and are held 5 s each.

"kept" is the good responses per second under attack ÷ unloaded (target ≥ 0.9). Socket
errors of the normal client are reported too.

The attack tools share a core with the normal client, so "kept" also counts what they
take from it. What the server itself spends is reported apart, from its CPU time
(``/proc``, its whole process tree): ``attack_cpu`` is the share of its core it uses for
the attack alone (the last seconds of the ramp, before the normal client starts), and
``cpu_us`` is its CPU time per good response, unloaded and attacked. A server whose
``cpu_us`` stays flat and whose core is not busy is not what the normal client waits on.
``attacker_cpu`` is the attack tool's CPU time while the normal client measures, as a
share of the core they share: how a server treats the attack changes what the tool
spends (slowhttptest polls the sockets that a server has reset over and over).

Here the attack and the normal client share one address (127.0.0.1), which bastion's
per-address connection cap (``limits.max_connections_per_client``) would treat as one
client: it is turned off for bastion, as if the attack came from a thousand addresses,
so that what is measured is the deadlines, data rates and eviction every server has to
rely on then.

    .venv/bin/python bench/hostile.py                      # everything (about 4 min)
    .venv/bin/python bench/hostile.py --servers bastion --attacks slowloris
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.environment import ensure_peers, machine, source_tree, versions
from harness.measure import parse_wrk
from harness.procfs import process_tree, rss_kib
from harness.servers import (
    CLIENT_CPU,
    HOST,
    RESULTS,
    Server,
    free_port,
    pinned,
    server_command,
    stop_all,
)
from harness.workloads import Workload

SERVERS = ("bastion", "uvicorn", "granian", "gunicorn")
ATTACKS = ("slowloris", "slowbody", "slowread", "churn")
RAMP = 4.0  # seconds for the attack to open its connections before measuring
ATTACK_ALONE = 2.0  # the end of the ramp, when the server's CPU for the attack is measured


def _hello(body: bytes) -> bool:
    return body == b"Hello, world!"


def workload(server: str) -> Workload:
    if server == "gunicorn":
        return Workload("hostile", "hostile", "wsgi", "hostile_wsgi:app", (server,), _hello)
    return Workload("hostile", "hostile", "asgi", "hostile_asgi:app", (server,), _hello)


def attack_command(attack: str, port: int, conns: int, seconds: float) -> list[str]:
    url = f"http://{HOST}:{port}/"
    length = str(round(seconds))
    common = ["-c", str(conns), "-r", str(conns), "-l", length, "-p", "3"]
    if attack == "slowloris":
        return ["slowhttptest", "-H", *common, "-i", "5", "-x", "10", "-u", url]
    if attack == "slowbody":
        return ["slowhttptest", "-B", *common, "-i", "5", "-x", "10", "-s", "100000", "-u", url]
    if attack == "slowread":
        return [
            *("slowhttptest", "-X", *common, "-w", "32", "-y", "64"),
            *("-n", "2", "-z", "32", "-k", "1", "-u", url + "big"),
        ]
    if attack == "churn":
        script = Path(__file__).resolve().parent / "harness" / "churn.py"
        return [sys.executable, str(script), HOST, str(port), "2000", "5", length]
    raise ValueError(attack)


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(root: int) -> float:
    """User and system CPU time of ``root``'s process tree so far (live processes)."""
    ticks = 0
    for pid in process_tree(root):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / _CLK_TCK


def measured(pid: int, port: int, seconds: float, attacker: int = 0) -> dict[str, Any]:
    """The normal client's figures, with the server's CPU time per good response (and
    the attack tool's CPU time, if there is one)."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    tool0 = cpu_seconds(attacker) if attacker else 0.0
    result = normal_client(port, seconds)
    cpu, wall = cpu_seconds(pid) - cpu0, time.monotonic() - t0
    good = result["requests"] - result["non_2xx"]
    result["server_cpu"] = round(cpu / wall, 3)
    result["cpu_us"] = round(cpu / good * 1e6, 1) if good else None
    if attacker:
        result["attacker_cpu"] = round((cpu_seconds(attacker) - tool0) / wall, 3)
    return result


def normal_client(port: int, seconds: float) -> dict[str, Any]:
    cmd = ["wrk", "-t1", "-c4", f"-d{round(seconds)}s", "--timeout", "3s", "--latency"]
    out = subprocess.run(
        pinned(CLIENT_CPU, 0, [*cmd, f"http://{HOST}:{port}/"]),
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=False,
    ).stdout
    result = parse_wrk(out)
    good = result["requests"] - result["non_2xx"]
    result["good_rps"] = round(good / seconds, 1)
    return result


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(0.25):
            total = sum(rss_kib(p) for p in process_tree(self.pid))
            self.peak_kib = max(self.peak_kib, total)


def one(server: str, attack: str, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    w = workload(server)
    port = free_port()
    cmd = server_command(server, w, port)
    if server == "bastion":
        cmd = ["env", "BASTION_LIMITS__MAX_CONNECTIONS_PER_CLIENT=0", *cmd]
    srv = Server(server, cmd, port, logs / f"{server}-{attack}.log")
    pid = srv.start()
    try:
        srv.wait_ready(w)
        base_rss = sum(rss_kib(p) for p in process_tree(pid))
        unloaded = measured(pid, port, args.seconds)
        length = RAMP + args.seconds + 4
        # the attacker runs beside wrk on the client's CPU, at the lowest priority, so
        # that its own work does not lower what wrk measures
        attacker = subprocess.Popen(
            pinned(CLIENT_CPU, 19, attack_command(attack, port, args.connections, length)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        sampler = RssSampler(pid)
        sampler.start()
        try:
            time.sleep(RAMP - ATTACK_ALONE)
            cpu0 = cpu_seconds(pid)
            time.sleep(ATTACK_ALONE)
            attack_cpu = (cpu_seconds(pid) - cpu0) / ATTACK_ALONE
            attacked = measured(pid, port, args.seconds, attacker.pid)
        finally:
            sampler.stop_event.set()
            attacker.kill()
            attacker.wait(10)
        alive = srv.exited() is None
    finally:
        srv.stop()
    kept = attacked["good_rps"] / unloaded["good_rps"] if unloaded["good_rps"] else 0.0
    return {
        "server": server,
        "attack": attack,
        "unloaded": unloaded,
        "attacked": attacked,
        "kept": round(kept, 3),
        "attack_cpu": round(attack_cpu, 3),
        "rss_base_mib": round(base_rss / 1024, 1),
        "rss_peak_mib": round(sampler.peak_kib / 1024, 1),
        "server_alive": alive,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0, help="each wrk measurement")
    args = parser.parse_args()
    servers = [s for s in args.servers.split(",") if s]
    if any(s != "bastion" for s in servers):
        ensure_peers()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    logs = RESULTS / f"hostile-{stamp}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for attack in args.attacks.split(","):
            for server in servers:
                row = one(server, attack, args, logs)
                rows.append(row)
                a = row["attacked"]
                print(
                    f"{attack:10} {server:9} kept {row['kept']:6.1%}  "
                    f"unloaded {row['unloaded']['good_rps']:8.0f}/s  "
                    f"attacked {a['good_rps']:8.0f}/s  errors {a['socket_errors']}  "
                    f"non-2xx {a['non_2xx']}  RSS {row['rss_base_mib']} -> "
                    f"{row['rss_peak_mib']} MiB  server CPU: attack alone "
                    f"{row['attack_cpu']:.0%}, {row['unloaded']['cpu_us']} -> "
                    f"{a['cpu_us']} us/response ({row['unloaded']['server_cpu']:.0%} -> "
                    f"{a['server_cpu']:.0%} busy), attacker {a['attacker_cpu']:.0%}",
                    flush=True,
                )
    finally:
        stop_all()
    out = RESULTS / f"hostile-{stamp}.json"
    report = {
        "what": "normal client's throughput under hostile clients (bench/hostile.py)",
        "connections": args.connections,
        "rows": rows,
        "versions": versions(),
        "source": source_tree(),
        "machine": machine(),
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"results: {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    for path in logs.iterdir():
        if path.stat().st_size == 0:
            path.unlink()
    if not any(logs.iterdir()):
        os.rmdir(logs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
