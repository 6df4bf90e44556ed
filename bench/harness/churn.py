"""Opens RATE new TCP connections a second to HOST:PORT that send nothing, holds each
HOLD seconds, for SECONDS in all (a churn of idle connections). Bounded in time."""

from __future__ import annotations

import asyncio
import socket
import sys


async def hold(host: str, port: int, seconds: float) -> None:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    except (OSError, TimeoutError):
        return
    await asyncio.sleep(seconds)
    writer.transport.abort()


async def main(host: str, port: int, rate: int, hold_s: float, total: float) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + total
    tasks: set[asyncio.Task[None]] = set()
    step = 0.01
    per_step = max(1, round(rate * step))
    while loop.time() < end:
        for _ in range(per_step):
            task = asyncio.create_task(hold(host, port, hold_s))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.sleep(step)
    for task in list(tasks):
        task.cancel()


if __name__ == "__main__":
    socket.setdefaulttimeout(2)
    h, p, r, hs, t = sys.argv[1:6]
    asyncio.run(main(h, int(p), int(r), float(hs), float(t)))
