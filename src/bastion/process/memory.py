"""How much memory a worker uses, read by the supervisor from /proc.

``workers.max_memory`` recycles a worker that passes a limit (see the supervisor), and a
worker whose memory keeps growing is reported. Two measures:

* RSS, from ``/proc/PID/statm``: every resident page, shared or not. Cheap; what ``ps``
  shows. With ``workers.preload`` it counts the shared, preloaded pages once per worker.
* PSS, from ``/proc/PID/smaps_rollup`` (Linux 4.14+): each shared page counts for its
  share, so the PSS of all workers adds up to what they really cost together. Reading it
  walks the process's page tables, which takes a millisecond or so for a large worker:
  fine every few seconds, not per request. Falls back to RSS where it is missing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

# A warning when a worker's memory has grown at this many checks in a row, by this share
# in all, is repeated at most once per WARN_EVERY checks.
GROWTH_CHECKS = 6
GROWTH_SHARE = 0.10
WARN_EVERY = 30


def read_rss(pid: int) -> int:
    """Resident set size in bytes; 0 if the process is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            fields = f.read().split()
    except OSError:
        return 0
    return int(fields[1]) * _PAGE


def read_pss(pid: int) -> int:
    """Proportional set size in bytes (RSS where the kernel has no smaps_rollup); 0 if
    the process is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return read_rss(pid)


def read_memory(pid: int, metric: str) -> int:
    return read_pss(pid) if metric == "pss" else read_rss(pid)


def mib(size: int) -> str:
    return f"{size / 1048576:.1f} MiB"


@dataclass
class MemoryWatch:
    """One worker's memory readings, as the supervisor takes them."""

    next_check: float  # monotonic time of the next reading
    last: int = 0
    rising: list[int] = field(default_factory=list)  # readings that grew in a row
    quiet_until: int = 0  # checks to go before growth may be reported again
    checks: int = 0

    def record(self, size: int) -> str:
        """Note a reading; return a warning when the memory keeps growing, else ''."""
        self.checks += 1
        if self.quiet_until:
            self.quiet_until -= 1
        if self.last and size > self.last:
            if not self.rising:
                self.rising.append(self.last)
            self.rising.append(size)
        else:
            self.rising.clear()
        self.last = size
        rising = self.rising
        if (
            len(rising) > GROWTH_CHECKS
            and not self.quiet_until
            and rising[-1] >= rising[0] * (1 + GROWTH_SHARE)
        ):
            self.quiet_until = WARN_EVERY
            grown = f"{mib(rising[0])} -> {mib(rising[-1])}"
            return f"grew at each of its last {len(rising) - 1} checks ({grown})"
        return ""
