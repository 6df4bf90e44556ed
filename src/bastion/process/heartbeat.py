"""Heartbeats: how the supervisor knows a worker's event loop is still turning.

Before the first fork the supervisor maps one anonymous shared page with a slot per
worker. Each worker's event loop writes ``time.monotonic()`` into its slot every
``workers.heartbeat_interval`` seconds; the clock is system-wide, so the supervisor can
compare it with its own. A slot that stops moving means the loop is blocked (an app
calling ``time.sleep`` on the loop, a deadlock, an endless loop) -- the one failure a
worker cannot report itself.
"""

from __future__ import annotations

import mmap
import struct
import time

# per worker: the last beat (an aligned 8-byte store does not tear), then its open
# connections and those with a request in progress at that beat
_SLOT = struct.Struct("ddd")
_BEAT = struct.Struct("d")
_LOAD = struct.Struct("dd")
MAX_SLOTS = 4096  # 96 KiB; far more workers than any machine runs (plus replacements)


class HeartbeatTable:
    """The shared table of last-beat times, one slot per live worker."""

    def __init__(self, slots: int = MAX_SLOTS) -> None:
        self._map = mmap.mmap(-1, slots * _SLOT.size, flags=mmap.MAP_SHARED)
        self._free = list(range(slots - 1, -1, -1))

    # -- supervisor side ---------------------------------------------------------------
    def allocate(self) -> int:
        """Reserve a slot for a worker about to be forked; it reads 0 until the first beat."""
        if not self._free:
            raise RuntimeError(f"more than {MAX_SLOTS} workers at once")
        slot = self._free.pop()
        _SLOT.pack_into(self._map, slot * _SLOT.size, 0.0, 0.0, 0.0)
        return slot

    def release(self, slot: int) -> None:
        self._free.append(slot)

    def last_beat(self, slot: int) -> float:
        """The monotonic time of the worker's last beat; 0.0 before its first one."""
        value: float = _BEAT.unpack_from(self._map, slot * _SLOT.size)[0]
        return value

    def last_load(self, slot: int) -> tuple[int, int]:
        """(open connections, connections with a request in progress) at the last beat."""
        conns, busy = _LOAD.unpack_from(self._map, slot * _SLOT.size + _BEAT.size)
        return int(conns), int(busy)

    # -- worker side -------------------------------------------------------------------
    def beat(self, slot: int, connections: int = 0, busy: int = 0) -> None:
        offset = slot * _SLOT.size
        _LOAD.pack_into(self._map, offset + _BEAT.size, float(connections), float(busy))
        _BEAT.pack_into(self._map, offset, time.monotonic())

    def close(self) -> None:
        self._map.close()
