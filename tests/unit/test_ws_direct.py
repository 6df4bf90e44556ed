"""A session without an extension parses whole simple frames itself (not wsproto) and
hands the connection's bytes to wsproto from the first fragment on; either way the app
gets the same messages."""

from __future__ import annotations

import asyncio
import os

from bastion.protocol.flow import Flow
from bastion.protocol.state import ConnectionTracker
from bastion.protocol.websocket import WebSocketSession
from bastion.protocol.ws_handshake import WebSocketSettings
from tests.unit.h1_harness import FakeTransport

TEXT, BINARY, CONT, PING, PONG = 0x1, 0x2, 0x0, 0x9, 0xA


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A client frame (masked)."""
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def open_session(loop: asyncio.AbstractEventLoop) -> tuple[WebSocketSession, FakeTransport]:
    session = WebSocketSession(loop, WebSocketSettings(ping_interval=0))
    flow = Flow(loop, ConnectionTracker(), 10.0)
    transport = FakeTransport()
    flow.attach(transport)
    session.start(flow)
    return session, transport


def test_simple_frames_are_parsed_without_wsproto_until_a_fragment() -> None:
    async def main() -> None:
        session, transport = open_session(asyncio.get_running_loop())
        big = os.urandom(70_000)
        wire = frame(TEXT, "héllo ✓".encode()) + frame(PING, b"p") + frame(BINARY, big)
        for at in range(0, len(wire), 999):
            session.data_received(wire[at : at + 999])
        assert await session.receive() == "héllo ✓"
        assert await session.receive() == big
        assert bytes(transport.data) == bytes([0x80 | PONG, 1]) + b"p"
        assert session._direct  # nothing went to wsproto but the whole ping frame

        session.data_received(frame(TEXT, b"frag", fin=False) + frame(CONT, b"ment"))
        assert not session._direct  # from here on wsproto parses everything
        assert await session.receive() == "fragment"
        session.data_received(frame(BINARY, b"after"))
        assert await session.receive() == b"after"

    asyncio.run(main())


def test_the_session_builds_the_frames_it_sends() -> None:
    async def main() -> None:
        session, transport = open_session(asyncio.get_running_loop())
        session.send("✓")
        session.send(b"\x00" * 200)
        assert bytes(transport.data) == b"\x81\x03" + "✓".encode() + b"\x82\x7e\x00\xc8" + bytes(
            200
        )

    asyncio.run(main())
