"""Client frames unmasked in C (websockets.speedups) give exactly what wsproto's own
masker gives, however the payload is split across reads."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from bastion.protocol import websocket, ws_mask

pytest.importorskip("websockets.speedups")


def python_unmask(data: bytes, key: bytes) -> bytes:
    return bytes(b ^ key[i % 4] for i, b in enumerate(data))


def test_the_c_masker_is_the_one_wsproto_uses() -> None:
    import wsproto.frame_protocol

    assert ws_mask.FAST_UNMASK
    assert wsproto.frame_protocol.XorMaskerSimple is ws_mask._CMasker


@pytest.mark.parametrize("seed", range(20))
def test_chunks_of_any_size_unmask_as_one(seed: int) -> None:
    rng = random.Random(seed)
    key = rng.randbytes(4)
    data = rng.randbytes(rng.randrange(0, 5000))
    masker = ws_mask._CMasker(key)
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


@pytest.mark.parametrize("c_speedup", [True, False])
def test_unmask_of_whole_payloads(monkeypatch: pytest.MonkeyPatch, c_speedup: bool) -> None:
    """What the session uses on whole frames, with and without the C speed-up."""
    if not c_speedup:
        monkeypatch.setattr(ws_mask, "_apply_mask", None)
    rng = random.Random(5)
    for size in [0, 1, 2, 3, 4, 5, 7, 125, 126, 4097, 65536, 65539]:
        key = rng.randbytes(4)
        data = rng.randbytes(size)
        framed = b"head" + data + b"tail"
        view = memoryview(framed)[4 : 4 + size]
        assert ws_mask.unmask(view, key) == python_unmask(data, key)
        assert type(ws_mask.unmask(data, key)) is bytes


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_frame_head_builds_the_frames_wsproto_builds(size: int) -> None:
    from wsproto.connection import Connection, ConnectionType
    from wsproto.events import BytesMessage, TextMessage

    server = Connection(ConnectionType.SERVER)
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    assert websocket.frame_head(2, size) + data == server.send(BytesMessage(data=data))
    text = "x" * size
    assert websocket.frame_head(1, size) + text.encode() == server.send(TextMessage(data=text))


def test_the_c_masker_loads_without_the_websockets_package() -> None:
    # (its package __init__ imports importlib.metadata: 1.7 MiB in every worker)
    probe = (
        "import sys, json; import bastion.protocol.websocket; "
        "import bastion.protocol.ws_mask as w; "
        "print(json.dumps([w.FAST_UNMASK, sorted(m for m in sys.modules "
        "if m.startswith(('websockets', 'importlib.metadata')))]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(out.stdout) == [True, []]
