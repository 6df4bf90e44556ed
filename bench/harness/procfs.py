"""What /proc tells about a server: its process tree, its memory and its CPU time."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

RSS_INTERVAL = 0.2  # seconds between RSS samples
_CLK_TCK = os.sysconf("SC_CLK_TCK")  # the unit of /proc/stat and /proc/<pid>/stat


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (pids alive now)."""
    children = _children_map()
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class RssSampler:
    """Samples the RSS of a process tree in a thread; keeps the peaks."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak_tree_kib = 0
        self.peak_by_pid: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def sample(self) -> None:
        total = 0
        for pid in process_tree(self.root):
            kib = rss_kib(pid)
            total += kib
            self.peak_by_pid[pid] = max(self.peak_by_pid.get(pid, 0), kib)
        self.peak_tree_kib = max(self.peak_tree_kib, total)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(RSS_INTERVAL)

    @property
    def peak_worker_kib(self) -> int:
        """The largest process below the root (the worker), or the root if it has none."""
        below = [kib for pid, kib in self.peak_by_pid.items() if pid != self.root]
        return max(below) if below else self.peak_by_pid.get(self.root, 0)


@dataclass(frozen=True)
class CpuSnapshot:
    """Clock ticks so far: busy and total per CPU, used by a process tree, and used by the
    client side (this process and the children it has waited for, that is wrk)."""

    busy: dict[int, int]
    total: dict[int, int]
    tree: int
    client: int

    @classmethod
    def take(cls, root: int, cpus: tuple[int, ...]) -> CpuSnapshot:
        busy, total = {}, {}
        with open("/proc/stat") as f:
            for line in f:
                name, *values = line.split()
                if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                    # user nice system idle iowait irq softirq steal (guest is inside user)
                    t = [int(v) for v in values[:8]]
                    busy[int(name[3:])] = t[0] + t[1] + t[2] + t[5] + t[6] + t[7]
                    total[int(name[3:])] = sum(t)
        own = os.times()
        client = round((own.user + own.system + own.children_user + own.children_system) * _CLK_TCK)
        return cls(busy, total, sum(_ticks(pid) for pid in process_tree(root)), client)


def _ticks(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return 0
    fields = stat[stat.rfind(b")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def tree_cpu_seconds(root: int) -> float:
    """User and system CPU time of ``root``'s process tree so far (live processes)."""
    return sum(_ticks(pid) for pid in process_tree(root)) / _CLK_TCK


def cpu_usage(
    before: CpuSnapshot, after: CpuSnapshot, server_cpu: int, client_cpu: int
) -> dict[str, float]:
    """Shares of one core, in percent: the server's tree and everything else on the
    server's core; the client (wrk and this harness) and everything else on its core."""

    def pct(ticks: int, cpu: int) -> float:
        span = max(1, after.total[cpu] - before.total[cpu])
        return round(min(100.0, max(0.0, 100 * ticks / span)), 1)

    tree = after.tree - before.tree
    client = after.client - before.client
    return {
        "server_cpu_pct": pct(tree, server_cpu),
        "others_on_server_cpu_pct": pct(
            after.busy[server_cpu] - before.busy[server_cpu] - tree, server_cpu
        ),
        "client_cpu_pct": pct(client, client_cpu),
        "others_on_client_cpu_pct": pct(
            after.busy[client_cpu] - before.busy[client_cpu] - client, client_cpu
        ),
    }


def cpu_busy(cpus: tuple[int, ...], seconds: float) -> dict[int, float]:
    """How busy (percent) each of ``cpus`` is over the next ``seconds``."""
    before = CpuSnapshot.take(os.getpid(), cpus)
    time.sleep(seconds)
    after = CpuSnapshot.take(os.getpid(), cpus)
    shares = {}
    for cpu in cpus:
        span = max(1, after.total[cpu] - before.total[cpu])
        shares[cpu] = round(100 * (after.busy[cpu] - before.busy[cpu]) / span, 1)
    return shares
