"""A Django Channels project served by bastion: ``ProtocolTypeRouter`` + ``URLRouter``,
a synchronous ``WebsocketConsumer`` and an ``AsyncWebsocketConsumer`` whose clients talk
through a group of the in-memory channel layer (tests/e2e/apps/fw_django)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
from server import APPS, BastionProcess, serve
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

pytest.importorskip("channels")


@pytest.fixture(scope="module")
def site() -> Iterator[BastionProcess]:
    with serve("fw_django.asgi_channels:application", "--workers", "1", cwd=APPS) as proc:
        yield proc


def ws_url(proc: BastionProcess, path: str) -> str:
    host, port = proc.host_port
    return f"ws://{host}:{port}{path}"


def test_a_sync_consumer_echoes_text_and_bytes(site: BastionProcess) -> None:
    async def main() -> None:
        async with connect(ws_url(site, "/ws/echo")) as ws:
            await ws.send("hello")
            assert await ws.recv() == "echo:hello"
            await ws.send(b"\x00\xff" * 1000)
            assert await ws.recv() == b"echo:" + b"\x00\xff" * 1000

    asyncio.run(main())


def test_two_clients_talk_through_a_group(site: BastionProcess) -> None:
    async def main() -> None:
        async with connect(ws_url(site, "/ws/room/lobby/ann")) as ann:
            assert await ann.recv() == "welcome ann"
            async with connect(ws_url(site, "/ws/room/lobby/bob")) as bob:
                assert await bob.recv() == "welcome bob"
                await ann.send("hi bob")
                assert await asyncio.wait_for(ann.recv(), 5) == "ann: hi bob"
                assert await asyncio.wait_for(bob.recv(), 5) == "ann: hi bob"
                await bob.send("hi ann")
                assert await asyncio.wait_for(ann.recv(), 5) == "bob: hi ann"
                assert await asyncio.wait_for(bob.recv(), 5) == "bob: hi ann"
                await bob.close(4100)
            # bob left the group: ann alone gets her own message
            await ann.send("alone")
            assert await asyncio.wait_for(ann.recv(), 5) == "ann: alone"

    asyncio.run(main())
    deadline = time.monotonic() + 10
    while "channels: bob left 4100" not in site.log and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "channels: bob left 4100" in site.log


def test_an_unrouted_path_fails_and_http_goes_to_django(site: BastionProcess) -> None:
    """URLRouter raises for a path it does not know, before accepting: a 500, with the
    traceback in the error log (as uvicorn does; Daphne closes the socket instead)."""

    async def main() -> None:
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url(site, "/ws/nowhere"))
        assert refused.value.response.status_code == 500

    asyncio.run(main())
    deadline = time.monotonic() + 10
    while "No route found for path" not in site.log and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "No route found for path" in site.log
    assert httpx.get(site.url + "/json").status_code == 200
