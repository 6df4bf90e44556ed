"""An idle supervisor sleeps: it must not spin once its start-up deadline has passed."""

from __future__ import annotations

import os
import time

from server import serve


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_idle_supervisor_uses_almost_no_cpu_after_the_startup_deadline() -> None:
    env = {"BASTION_WORKERS__STARTUP_TIMEOUT": "1"}
    with serve("http_echo:app", "--workers", "1", env=env) as proc:
        time.sleep(1.5)  # past the start-up deadline, where a stale deadline made it spin
        before = _cpu_ticks(proc.pid)
        time.sleep(2.0)
        used = _cpu_ticks(proc.pid) - before
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    # a loop that wakes once a second uses well under 5% of a core; a spinning one ~100%
    assert used < 0.1 * 2.0 * ticks_per_second, f"supervisor used {used} ticks in 2 s"
