"""Client frames cut anywhere across TCP reads, and mixed with control frames and
fragmented messages, come out as the same messages (the session parses whole simple
frames itself and hands the rest to wsproto; see protocol/websocket.py)."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator

import pytest
from server import BastionProcess, serve
from ws_raw import RawWebSocket, frame

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA

# every length encoding (7-bit, 16-bit, 64-bit), text with multi-byte characters, empty
# messages and a ping in the middle
MESSAGES: list[tuple[int, bytes]] = [
    (TEXT, "hello ✓ ünïcode".encode()),
    (BINARY, bytes(range(256)) + b"\x00" * 44),
    (PING, b"are you there"),
    (BINARY, bytes(70_000)),
    (TEXT, ("é" * 200 + "✓").encode()),
    (BINARY, b""),
    (TEXT, b""),
    (BINARY, b"\xff" * 125),
    (TEXT, b"x" * 126),
]


@pytest.fixture(scope="module")
def server() -> Iterator[BastionProcess]:
    with serve("ws_app:app", "--workers", "1") as proc:
        yield proc


@pytest.fixture
def ws(server: BastionProcess) -> Iterator[RawWebSocket]:
    raw = RawWebSocket(*server.host_port)
    raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    yield raw
    raw.close()


def send_in_pieces(ws: RawWebSocket, wire: bytes, cuts: list[int]) -> None:
    """Write ``wire`` cut at ``cuts``, pausing between pieces so that each is its own read."""
    at = 0
    for cut in [*sorted(set(cuts)), len(wire)]:
        if cut <= at:
            continue
        ws.sock.sendall(wire[at:cut])
        at = cut
        time.sleep(0.005)


def expect_echoes(ws: RawWebSocket, messages: list[tuple[int, bytes]]) -> None:
    """The data messages come back in order; each ping is answered (pongs may come
    before the echoes of earlier messages: the app answers those)."""
    data = [(op, p) for op, p in messages if op in (TEXT, BINARY)]
    pings = sorted(p for op, p in messages if op == PING)
    got: list[tuple[int, bytes]] = []
    pongs: list[bytes] = []
    while len(got) < len(data) or len(pongs) < len(pings):
        opcode, payload, fin, rsv = ws.recv_frame()
        assert fin and not rsv
        if opcode == PONG:
            pongs.append(payload)
        else:
            got.append((opcode, payload))
    assert got == data
    assert sorted(pongs) == pings


def cut_points(wire: bytes, seed: int) -> list[int]:
    """Cuts inside frame heads (after 1, 2, 3 ... bytes) and at random places."""
    rng = random.Random(seed)
    cuts = [rng.randrange(1, len(wire)) for _ in range(25)]
    at = 0
    for opcode, payload in MESSAGES:
        size = len(frame(opcode, payload))
        cuts.append(at + rng.randrange(1, min(size, 15)))
        at += size
    return cuts


@pytest.mark.parametrize("seed", range(4))
def test_frames_cut_anywhere_across_reads_come_out_whole(ws: RawWebSocket, seed: int) -> None:
    wire = b"".join(frame(op, p) for op, p in MESSAGES)
    send_in_pieces(ws, wire, cut_points(wire, seed))
    expect_echoes(ws, MESSAGES)
    # and the connection still works, one frame at a time
    ws.send_frame(TEXT, b"after")
    assert ws.recv_frame()[:2] == (TEXT, b"after")


def test_many_frames_in_one_write(ws: RawWebSocket) -> None:
    messages = MESSAGES * 5
    ws.sock.sendall(b"".join(frame(op, p) for op, p in messages))
    expect_echoes(ws, messages)


def test_frames_after_a_fragmented_message_in_the_same_write(ws: RawWebSocket) -> None:
    """A fragment hands the rest of the stream to wsproto: what follows still works."""
    wire = frame(TEXT, b"frag", fin=False) + frame(PING, b"between")
    wire += frame(CONT, "mented ✓".encode())
    wire += b"".join(frame(op, p) for op, p in MESSAGES)
    send_in_pieces(ws, wire, cut_points(wire, 7))
    expect_echoes(ws, [(TEXT, "fragmented ✓".encode()), (PING, b"between"), *MESSAGES])


def test_a_text_frame_cut_inside_a_character(ws: RawWebSocket) -> None:
    payload = "✓✓✓".encode()
    wire = frame(TEXT, payload)
    head = len(wire) - len(payload)
    send_in_pieces(ws, wire, [head + 1, head + 4, head + 5])
    assert ws.recv_frame()[:2] == (TEXT, payload)


def frames_until_close(ws: RawWebSocket) -> tuple[list[bytes], int]:
    """The payloads the server sent before its close, and the close code."""
    payloads = []
    while True:
        opcode, payload, _, _ = ws.recv_frame()
        if opcode == CLOSE:
            return payloads, int.from_bytes(payload[:2], "big")
        payloads.append(payload)


def test_invalid_utf8_after_good_frames_in_one_write_fails_with_1007(ws: RawWebSocket) -> None:
    # (the session closes while reading this write: the app may not get to echo "good")
    wire = frame(TEXT, b"good") + frame(BINARY, b"\xff") + frame(TEXT, b"bad \xff here")
    ws.sock.sendall(wire + frame(TEXT, b"never echoed"))
    payloads, code = frames_until_close(ws)
    assert code == 1007
    assert b"never echoed" not in payloads
    assert ws.closed_after()


def test_a_close_in_the_middle_of_a_write_ends_it(ws: RawWebSocket) -> None:
    wire = frame(TEXT, b"one") + frame(CLOSE, (4321).to_bytes(2, "big") + b"bye")
    ws.sock.sendall(wire + frame(TEXT, b"two"))
    payloads, code = frames_until_close(ws)
    assert code == 4321  # echoed
    assert b"two" not in payloads
    assert ws.closed_after()


def test_after_a_fragment_the_next_read_is_not_taken_for_a_new_frame(ws: RawWebSocket) -> None:
    """The payload of a fragment (here masked with a zero key, so it is sent as is) that
    arrives in its own read looks exactly like a whole text frame: it is still payload."""
    inner = frame(TEXT, b"sneaky")
    head = bytes([BINARY, 0x80 | len(inner)]) + b"\x00\x00\x00\x00"  # FIN clear, zero key
    send_in_pieces(ws, head + inner, [len(head)])
    ws.sock.sendall(frame(CONT, b"!"))
    assert ws.recv_frame()[:2] == (BINARY, inner + b"!")
