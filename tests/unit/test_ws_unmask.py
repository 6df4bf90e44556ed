"""Client frames unmasked in C (websockets.speedups) give exactly what wsproto's own
masker gives, however the payload is split across reads."""

from __future__ import annotations

import random

import pytest

from bastion.protocol import websocket

pytest.importorskip("websockets.speedups")


def python_unmask(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def test_the_c_masker_is_the_one_wsproto_uses() -> None:
    import wsproto.frame_protocol

    assert websocket.FAST_UNMASK
    assert wsproto.frame_protocol.XorMaskerSimple is websocket._CMasker


@pytest.mark.parametrize("seed", range(20))
def test_chunks_of_any_size_unmask_as_one(seed: int) -> None:
    rng = random.Random(seed)
    key = rng.randbytes(4)
    data = rng.randbytes(rng.randrange(0, 5000))
    masker = websocket._CMasker(key)
    out = bytearray()
    at = 0
    while at < len(data):
        step = rng.choice((1, 2, 3, 5, 7, 64, 1000))
        piece = masker.process(bytearray(data[at : at + step]))
        assert type(piece) is bytes  # wsproto turns it into bytes next: no copy
        out += piece
        at += step
    assert bytes(out) == python_unmask(data, key)
    assert masker.process(bytearray()) == b""


def test_a_masked_message_in_odd_pieces_through_a_session_parser() -> None:
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import BytesMessage

    client = Connection(ConnectionType.CLIENT)
    server = Connection(ConnectionType.SERVER)
    payload = bytes(range(256)) * 300
    wire = client.send(BytesMessage(data=payload))
    got = bytearray()
    for i in range(0, len(wire), 4097):
        server.receive_data(wire[i : i + 4097])
        for event in server.events():
            assert isinstance(event, BytesMessage)
            got += event.data
    assert bytes(got) == payload
