"""Hostile clients: how much of a normal client's throughput each server keeps.

For each server (one worker, defaults) and each attack, side by side in one run:

1. the server starts fresh and a normal client (wrk, 4 keep-alive connections, reading
   ``/``) measures its unloaded throughput;
2. the control (slowloris and slow body): the same attack runs against a decoy instead
   of the server, ramps up, and the normal client measures the server again, still
   unattacked, while the attack tool works beside it (below);
3. the attack starts against the server, ramps up for a few seconds, and the same normal
   client measures again while it goes on; the server's memory (RSS of its process tree)
   is sampled;
4. the attack stops and the server is stopped.

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

The attack tools share a core with the normal client (wrk, 4 connections, closed loop:
bound by its latency), so "kept" also counts what they take from it: the tool's work and
wake-ups on that core delay wrk's. "kept_vs_decoy" takes that out: the good responses per
second under attack ÷ the server's unloaded figure measured while the same attack, with
the same tool on the same core at the same priority, hits a decoy (``harness/decoy.py``)
instead of the server. The decoy accepts every connection, reads and discards, and
answers only a complete request without a body (the tool's availability probe: an
unanswered probe leaves slowhttptest idle, an answered one keeps it polling, as against a
server); the attack's own connections are never answered, as a server waiting for the
rest of a head or body does not answer them. The decoy runs on the server's core, where
the server's own handling of the attack runs, so that nothing it does lands on the
client's core; its scheduler group has the lowest priority so that the server gets the
core whenever both want it, and its CPU is reported (``decoy_cpu``, a fraction of a
percent when the attack is slowloris). The kernel's loopback work for the attack's
packets falls on the sending (client's) core in both runs. ``attacker_cpu`` (while wrk
measures) and ``attacker_cpu_alone`` (the end of the ramp, before wrk starts) are the
tool's CPU in each run, for the reader to check that the control drew the same work from
it: what the tool spends still depends on the server (slowhttptest polls sockets a
server has answered or reset, over and over), and that part stays in "kept_vs_decoy".
There is no control for slow read (the tool's work is reading responses through a tiny
window: a decoy that never answers gives it nothing to read, and one that answers is a
server whose way of dropping slow readers sets what the tool spends) nor for churn (the
decoy would have to accept 2,000 connections a second on the server's core, about what
the servers spend on the churn: it would either take that from the server's baseline or,
held back, let its accept queue overflow so that the tool's connects fail and retry);
their rows give ``decoy_skipped``. ``--no-decoy`` skips the control.

What the server itself spends is reported apart, from its CPU time (``/proc``, its whole
process tree): ``attack_cpu`` is the share of its core it uses for the attack alone (the
last seconds of the ramp, before the normal client starts), and ``cpu_us`` is its CPU
time per good response, unloaded, beside the decoy and attacked. A server whose
``cpu_us`` stays flat and whose core is not busy is not what the normal client waits on.

Here the attack and the normal client share one address (127.0.0.1), which bastion's
per-address connection cap (``limits.max_connections_per_client``) would treat as one
client: it is turned off for bastion, as if the attack came from a thousand addresses,
so that what is measured is the deadlines, data rates and eviction every server has to
rely on then.

    .venv/bin/python bench/hostile.py                      # everything (about 5 min)
    .venv/bin/python bench/hostile.py --servers bastion --attacks slowloris
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.environment import ensure_peers, machine, source_tree, versions
from harness.measure import parse_wrk
from harness.procfs import process_tree, rss_kib, tree_cpu_seconds
from harness.servers import (
    CLIENT_CPU,
    HOST,
    RESULTS,
    SERVER_CPU,
    Server,
    free_port,
    pinned,
    renice_session,
    server_command,
    stop_all,
)
from harness.workloads import Workload

SERVERS = ("bastion", "uvicorn", "granian", "gunicorn")
ATTACKS = ("slowloris", "slowbody", "slowread", "churn")
RAMP = 4.0  # seconds for the attack to open its connections before measuring
ATTACK_ALONE = 2.0  # the end of the ramp, when the server's CPU for the attack is measured
HARNESS = Path(__file__).resolve().parent / "harness"
# the attacks a decoy that never answers draws the same work from the attack tool as a
# server does, and why not the others
DECOY_ATTACKS = ("slowloris", "slowbody")
NO_DECOY = {
    "slowread": "the tool's work is reading the responses through a tiny window: a decoy "
    "that never answers gives it nothing to read, and one that answers is a server whose "
    "way of dropping slow readers changes what the tool spends",
    "churn": "a decoy must accept 2,000 connections a second on the server's core, about "
    "what the servers spend on the churn: either it takes that from the server's baseline "
    "or, held back, its accept queue overflows and the tool's connects fail and retry",
}


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
        script = HARNESS / "churn.py"
        return [sys.executable, str(script), HOST, str(port), "2000", "5", length]
    raise ValueError(attack)


def measured(
    pid: int, port: int, seconds: float, attacker: int = 0, decoy: int = 0
) -> dict[str, Any]:
    """The normal client's figures, with the server's CPU time per good response (and
    the attack tool's and the decoy's CPU time, if there are ones)."""
    cpu0, t0 = tree_cpu_seconds(pid), time.monotonic()
    tool0 = tree_cpu_seconds(attacker) if attacker else 0.0
    decoy0 = tree_cpu_seconds(decoy) if decoy else 0.0
    result = normal_client(port, seconds)
    cpu, wall = tree_cpu_seconds(pid) - cpu0, time.monotonic() - t0
    good = result["requests"] - result["non_2xx"]
    result["server_cpu"] = round(cpu / wall, 3)
    result["cpu_us"] = round(cpu / good * 1e6, 1) if good else None
    if attacker:
        result["attacker_cpu"] = round((tree_cpu_seconds(attacker) - tool0) / wall, 3)
    if decoy:
        result["decoy_cpu"] = round((tree_cpu_seconds(decoy) - decoy0) / wall, 3)
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


def start_attack(attack: str, port: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    """The attack on ``port``, bounded in connections and in time (the ramp, the
    measurement and a margin)."""
    length = RAMP + args.seconds + 4
    # the attacker runs beside wrk on the client's CPU at the lowest priority, the same
    # against the decoy and the server: nice 19, and its session's autogroup at 19 too
    # (where the kernel groups tasks by session, a task's own nice only ranks it within
    # its session, so against wrk it would weigh as much as any other session)
    proc = subprocess.Popen(
        pinned(CLIENT_CPU, 19, attack_command(attack, port, args.connections, length)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    renice_session(proc.pid, 19)
    return proc


def kill_group(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def start_decoy(seconds: float) -> tuple[subprocess.Popen[str], int]:
    """A decoy listener (harness/decoy.py) that reads and discards and answers only the
    tool's probe, on the server's core; its port. It exits by itself after ``seconds``.

    It stands where the server stands during the attack (its core), as a server that
    spends as little as can be on the attack: its few reads a second are the only work
    it adds there, and none of it lands on the client's core. Its scheduler group (its
    session's autogroup, which is what weighs against the server's session) is set to
    the lowest priority so that, while the normal client measures the server beside it,
    the server gets its core whenever both want it; what it still takes is reported
    (``decoy_cpu``)."""
    port = free_port()
    cmd = [sys.executable, str(HARNESS / "decoy.py"), HOST, str(port), str(seconds)]
    proc = subprocess.Popen(
        pinned(SERVER_CPU, 19, cmd),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        renice_session(proc.pid, 19)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        if not ready or proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the decoy did not start")
    except BaseException:
        kill_group(proc)
        raise
    return proc, port


def stop_decoy(proc: subprocess.Popen[str]) -> dict[str, Any] | None:
    """Stop the decoy; what it saw (connections, bytes), or None if it did not say."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=5)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        return None
    with contextlib.suppress(ValueError):
        seen: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return seen
    return None


def under_decoy_attack(
    attack: str, pid: int, port: int, args: argparse.Namespace
) -> dict[str, Any]:
    """The server measured unloaded again, while the same attack runs against a decoy:
    the attack tool's share of the client's core is there, the server's handling of
    the attack is not."""
    decoy, decoy_port = start_decoy(RAMP + args.seconds + 15)
    attacker: subprocess.Popen[bytes] | None = None
    try:
        attacker = start_attack(attack, decoy_port, args)
        time.sleep(RAMP - ATTACK_ALONE)
        decoy0, tool0 = tree_cpu_seconds(decoy.pid), tree_cpu_seconds(attacker.pid)
        time.sleep(ATTACK_ALONE)
        decoy_alone = (tree_cpu_seconds(decoy.pid) - decoy0) / ATTACK_ALONE
        tool_alone = (tree_cpu_seconds(attacker.pid) - tool0) / ATTACK_ALONE
        result = measured(pid, port, args.seconds, attacker.pid, decoy.pid)
    finally:
        if attacker is not None:
            kill_group(attacker)
        seen = stop_decoy(decoy)
    result["attacker_cpu_alone"] = round(tool_alone, 3)
    result["decoy_cpu_alone"] = round(decoy_alone, 3)
    result["decoy_saw"] = seen
    return result


def one(server: str, attack: str, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    w = workload(server)
    port = free_port()
    cmd = server_command(server, w, port)
    if server == "bastion":
        cmd = ["env", "BASTION_LIMITS__MAX_CONNECTIONS_PER_CLIENT=0", *cmd]
    srv = Server(server, cmd, port, logs / f"{server}-{attack}.log")
    pid = srv.start()
    decoyed: dict[str, Any] | None = None
    try:
        srv.wait_ready(w)
        base_rss = sum(rss_kib(p) for p in process_tree(pid))
        unloaded = measured(pid, port, args.seconds)
        if args.decoy and attack in DECOY_ATTACKS:
            decoyed = under_decoy_attack(attack, pid, port, args)
        attacker = start_attack(attack, port, args)
        sampler = RssSampler(pid)
        sampler.start()
        try:
            time.sleep(RAMP - ATTACK_ALONE)
            cpu0, tool0 = tree_cpu_seconds(pid), tree_cpu_seconds(attacker.pid)
            time.sleep(ATTACK_ALONE)
            attack_cpu = (tree_cpu_seconds(pid) - cpu0) / ATTACK_ALONE
            tool_alone = (tree_cpu_seconds(attacker.pid) - tool0) / ATTACK_ALONE
            attacked = measured(pid, port, args.seconds, attacker.pid)
            attacked["attacker_cpu_alone"] = round(tool_alone, 3)
        finally:
            sampler.stop_event.set()
            kill_group(attacker)
        alive = srv.exited() is None
    finally:
        srv.stop()
    kept = attacked["good_rps"] / unloaded["good_rps"] if unloaded["good_rps"] else 0.0
    row: dict[str, Any] = {
        "server": server,
        "attack": attack,
        "unloaded": unloaded,
        "attacked": attacked,
        "kept": round(kept, 3),
        "attack_cpu": round(attack_cpu, 3),
        "rss_base_mib": round(base_rss / 1024, 1),
        "rss_peak_mib": round(sampler.peak_kib / 1024, 1),
        "server_alive": alive,
        "decoy": decoyed,
        "kept_vs_decoy": None,
    }
    if decoyed is not None:
        if decoyed["good_rps"]:
            row["kept_vs_decoy"] = round(attacked["good_rps"] / decoyed["good_rps"], 3)
    elif args.decoy:
        row["decoy_skipped"] = NO_DECOY.get(attack, "no decoy for this attack")
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0, help="each wrk measurement")
    parser.add_argument(
        "--no-decoy",
        dest="decoy",
        action="store_false",
        help="skip the control measurement with the attack on a decoy",
    )
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
                d = row["decoy"]
                control = (
                    f"  vs decoy {row['kept_vs_decoy']:.1%} (with the attack on a decoy "
                    f"{d['good_rps']:.0f}/s, attacker {d['attacker_cpu']:.0%}, decoy "
                    f"{d['decoy_cpu']:.0%}, server {d['server_cpu']:.0%} busy)"
                    if d and row["kept_vs_decoy"] is not None
                    else ""
                )
                print(
                    f"{attack:10} {server:9} kept {row['kept']:6.1%}{control}  "
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
