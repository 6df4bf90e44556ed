"""A reload (SIGHUP) lets the old worker's WebSockets go on until
``workers.graceful_timeout`` ends, then closes them with 1001; a stop (SIGTERM) closes
them with 1001 at once, also those of a worker still in its reload grace."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest
from server import BastionProcess, serve
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

GRACE = 3.0


def ws_url(proc: BastionProcess, path: str) -> str:
    host, port = proc.host_port
    return f"ws://{host}:{port}{path}"


async def chat_until_closed(ws: ClientConnection, every: float = 0.1) -> tuple[int, float]:
    """Exchange a message every ``every`` seconds until the server closes; return the
    close code and the time of the last echo."""
    last = time.monotonic()
    n = 0
    while True:
        n += 1
        try:
            await ws.send(f"m{n}")
            assert await asyncio.wait_for(ws.recv(), 5) == f"m{n}"
        except ConnectionClosed as closed:
            assert closed.rcvd is not None
            return closed.rcvd.code, last
        last = time.monotonic()
        await asyncio.sleep(every)


def test_a_reload_lets_a_busy_session_go_on_until_the_grace_ends() -> None:
    args = ("ws_app:app", "--workers", "1", "--graceful-timeout", str(GRACE))
    with serve(*args) as proc:

        async def main() -> None:
            async with connect(ws_url(proc, "/echo")) as ws:
                await ws.send("before")
                assert await ws.recv() == "before"
                mark = len(proc.log)
                sent = time.monotonic()
                proc.signal(signal.SIGHUP)
                chat = asyncio.ensure_future(chat_until_closed(ws))
                await asyncio.to_thread(proc.wait_for_log, r"reload complete", 20, mark)
                retired = time.monotonic()
                # the new worker serves new sockets while the old one still carries ours
                async with connect(ws_url(proc, "/echo")) as fresh:
                    await fresh.send("new")
                    assert await fresh.recv() == "new"
                code, last = await chat
                assert code == 1001
                # it went on for the whole grace after the old worker was retired (the
                # reload may complete a little after the retirement: 0.5 s of slack)
                assert last - retired >= GRACE - 0.5, (last - retired, retired - sent)
                assert last - sent < GRACE + 10

        asyncio.run(main())
        proc.wait_for_log(r"ws_app: disconnect 1001 .* after \d+", 10)


@pytest.mark.parametrize("during_reload", [False, True])
def test_a_stop_closes_sessions_with_1001_at_once(during_reload: bool) -> None:
    args = ("ws_app:app", "--workers", "1", "--graceful-timeout", "30")
    with serve(*args) as proc:

        async def main() -> None:
            async with connect(ws_url(proc, "/echo")) as ws:
                await ws.send("x")
                assert await ws.recv() == "x"
                if during_reload:
                    mark = len(proc.log)
                    proc.signal(signal.SIGHUP)
                    await asyncio.to_thread(proc.wait_for_log, r"reload complete", 20, mark)
                    await asyncio.sleep(0.5)
                    await ws.send("still")
                    assert await ws.recv() == "still"
                stopped = time.monotonic()
                proc.signal(signal.SIGTERM)
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
                assert time.monotonic() - stopped < 5

        asyncio.run(main())
        assert proc.wait(20) == 0
