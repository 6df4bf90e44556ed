"""Cases modelled on the Autobahn testsuite's sections, on raw sockets.

The suite itself no longer runs on Python 3; each test names the section (and case
numbers) of the Autobahn fuzzingclient it follows. The server is the real ``bastion``
process with tests/e2e/apps/ws_app.py's ``/echo``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from server import BastionProcess, serve
from ws_raw import RawWebSocket, frame

TEXT, BINARY, CONT, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


@pytest.fixture(scope="module")
def server() -> Iterator[BastionProcess]:
    env = {"BASTION_WEBSOCKET__MAX_MESSAGE_SIZE": "1048576"}
    with serve("ws_app:app", "--workers", "1", env=env) as proc:
        yield proc


@pytest.fixture
def ws(server: BastionProcess) -> Iterator[RawWebSocket]:
    raw = RawWebSocket(*server.host_port)
    yield raw
    raw.close()


def echo(ws: RawWebSocket, opcode: int, payload: bytes) -> None:
    ws.send_frame(opcode, payload)
    assert ws.recv_frame()[:2] == (opcode, payload)


def fails_with(ws: RawWebSocket, code: int) -> None:
    """The server sends a close with ``code`` and then closes the TCP connection."""
    assert ws.recv_close() == code
    assert ws.closed_after()


# -- 1 Framing ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 125, 126, 127, 128, 65535, 65536])
def test_1_1_and_1_2_text_and_binary_of_every_length_encoding(ws: RawWebSocket, size: int) -> None:
    """1.1.1-1.1.7 (text) and 1.2.1-1.2.7 (binary): 7-bit, 16-bit and 64-bit lengths."""
    echo(ws, TEXT, b"*" * size)
    echo(ws, BINARY, b"\xfe" * size)


def test_1_1_8_a_frame_arriving_in_small_chunks(ws: RawWebSocket) -> None:
    """1.1.8: a 65536-byte text frame written in chunks of 997 bytes."""
    data = frame(TEXT, b"*" * 65536)
    for i in range(0, len(data), 997):
        ws.sock.sendall(data[i : i + 997])
    assert ws.recv_frame()[:2] == (TEXT, b"*" * 65536)


# -- 2 Pings/Pongs -----------------------------------------------------------------------------
@pytest.mark.parametrize("payload", [b"", b"Hello, world!", b"\x00\xff\xfe\xfd" * 31 + b"!"])
def test_2_1_to_2_4_a_ping_is_answered_with_its_payload(ws: RawWebSocket, payload: bytes) -> None:
    """2.1 (no payload), 2.2 (text), 2.3 (binary), 2.4 (125 bytes)."""
    ws.send_frame(PING, payload)
    assert ws.recv_frame()[:2] == (PONG, payload)


def test_2_5_a_ping_over_125_bytes_fails(ws: RawWebSocket) -> None:
    ws.send_frame(PING, b"x" * 126)
    fails_with(ws, 1002)


def test_2_7_and_2_8_unsolicited_pongs_are_ignored(ws: RawWebSocket) -> None:
    ws.send_frame(PONG, b"")
    ws.send_frame(PONG, b"unsolicited")
    echo(ws, TEXT, b"after")


def test_2_10_ten_pings_get_ten_pongs(ws: RawWebSocket) -> None:
    for i in range(10):
        ws.send_frame(PING, b"p%d" % i)
    assert [ws.recv_frame()[:2] for _ in range(10)] == [(PONG, b"p%d" % i) for i in range(10)]


# -- 3 Reserved bits ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "opcode, rsv",
    [(TEXT, 4), (TEXT, 2), (TEXT, 1), (BINARY, 6), (PING, 5), (CLOSE, 7)],
    ids=["3.1", "3.2", "3.3", "3.5", "3.6", "3.7"],
)
def test_3_reserved_bits_fail_the_connection(ws: RawWebSocket, opcode: int, rsv: int) -> None:
    """3.x: no extension was negotiated, so any RSV bit is a protocol error (1002)."""
    ws.send_frame(opcode, b"rsv" if opcode != CLOSE else b"", rsv=rsv)
    fails_with(ws, 1002)


def test_3_4_a_bad_frame_after_a_good_one_in_the_same_packet(ws: RawWebSocket) -> None:
    """3.4: the echo of the good message may come before the close or not at all (the
    suite's "non-strict" pass); the ping after the bad frame is never answered."""
    ws.sock.sendall(frame(TEXT, b"good") + frame(TEXT, b"bad", rsv=1) + frame(PING, b"p"))
    opcode, payload, _, _ = ws.recv_frame()
    if opcode == TEXT:
        assert payload == b"good"
        opcode, payload, _, _ = ws.recv_frame()
    assert (opcode, payload[:2]) == (CLOSE, struct.pack("!H", 1002))
    assert ws.closed_after()


# -- 4 Opcodes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("opcode", [3, 4, 5, 6, 7, 11, 12, 13, 14, 15])
def test_4_reserved_opcodes_fail_the_connection(ws: RawWebSocket, opcode: int) -> None:
    """4.1.1-4.1.5 (non-control 3-7) and 4.2.1-4.2.5 (control 11-15)."""
    ws.send_frame(opcode, b"reserved")
    fails_with(ws, 1002)


# -- 5 Fragmentation -----------------------------------------------------------------------------
def test_5_1_and_5_2_fragmented_control_frames_fail(ws: RawWebSocket) -> None:
    ws.send_frame(PING, b"frag", fin=False)
    fails_with(ws, 1002)


def test_5_3_to_5_5_a_text_message_in_fragments(ws: RawWebSocket) -> None:
    ws.send_frame(TEXT, b"frag", fin=False)
    ws.send_frame(CONT, b"ment", fin=False)
    ws.send_frame(CONT, b"ed", fin=True)
    assert ws.recv_frame()[:2] == (TEXT, b"fragmented")


def test_5_6_to_5_8_a_ping_between_fragments_is_answered_first(ws: RawWebSocket) -> None:
    ws.send_frame(TEXT, b"frag", fin=False)
    ws.send_frame(PING, b"between")
    ws.send_frame(CONT, b"ment", fin=True)
    assert ws.recv_frame()[:2] == (PONG, b"between")
    assert ws.recv_frame()[:2] == (TEXT, b"fragment")


@pytest.mark.parametrize("fin", [True, False])
def test_5_9_to_5_14_a_continuation_with_nothing_to_continue_fails(
    ws: RawWebSocket, fin: bool
) -> None:
    ws.send_frame(CONT, b"orphan", fin=fin)
    fails_with(ws, 1002)


def test_5_18_a_new_message_inside_a_fragmented_one_fails(ws: RawWebSocket) -> None:
    ws.send_frame(TEXT, b"one", fin=False)
    ws.send_frame(TEXT, b"two", fin=True)
    fails_with(ws, 1002)


# -- 6 UTF-8 handling ------------------------------------------------------------------------------
VALID = "κόσμε, ✓ and 𝄞".encode()


def test_6_2_valid_utf8_split_inside_a_code_point_across_fragments(ws: RawWebSocket) -> None:
    """6.2.3/6.2.4: fragment boundaries fall in the middle of multi-byte characters."""
    for i in range(len(VALID)):
        ws.send_frame(TEXT, VALID[:i], fin=False)
        ws.send_frame(CONT, VALID[i:], fin=True)
        assert ws.recv_frame()[:2] == (TEXT, VALID)


@pytest.mark.parametrize(
    "payload",
    [
        # 6.3.1
        b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80\x65\x64\x69\x74\x65\x64",
        b"\xff",  # 6.6.x: never valid
        b"\xc0\xaf",  # 6.9.x: overlong
        b"\xed\xa0\x80",  # 6.10.x: a surrogate
        b"\xf4\x90\x80\x80",  # 6.8.x: beyond U+10FFFF
        b"\xe2\x82",  # truncated at the end of the message
    ],
)
def test_6_invalid_utf8_in_text_fails_with_1007(ws: RawWebSocket, payload: bytes) -> None:
    ws.send_frame(TEXT, payload)
    fails_with(ws, 1007)


def test_6_4_invalid_utf8_fails_fast_inside_a_fragmented_message(ws: RawWebSocket) -> None:
    """6.4.1: the bad bytes come in the first fragment; the message never ends."""
    ws.send_frame(TEXT, b"\xce\xba\xf4\x90\x80\x80", fin=False)
    fails_with(ws, 1007)


def test_6_binary_messages_are_not_checked(ws: RawWebSocket) -> None:
    echo(ws, BINARY, b"\xff\xc0\xaf\xed\xa0\x80")


# -- 7 Close handling ------------------------------------------------------------------------
def test_7_1_1_echo_then_a_clean_close(ws: RawWebSocket) -> None:
    echo(ws, TEXT, b"Hello World!")
    ws.send_frame(CLOSE, struct.pack("!H", 1000))
    assert ws.recv_frame()[:2] == (CLOSE, struct.pack("!H", 1000))
    assert ws.closed_after()  # the server closes TCP first (RFC 6455 section 7.1.1)


def test_7_1_6_nothing_is_answered_after_the_close(ws: RawWebSocket) -> None:
    ws.sock.sendall(frame(CLOSE, struct.pack("!H", 1000)) + frame(TEXT, b"late") + frame(PING, b""))
    assert ws.recv_frame()[0] == CLOSE
    assert ws.closed_after()
    assert ws.buf == b""


def test_7_3_1_an_empty_close_is_answered_with_an_empty_close(ws: RawWebSocket) -> None:
    ws.send_frame(CLOSE, b"")
    assert ws.recv_frame()[:2] == (CLOSE, b"")


def test_7_3_2_a_close_with_a_1_byte_payload_fails(ws: RawWebSocket) -> None:
    ws.send_frame(CLOSE, b"\x03")
    fails_with(ws, 1002)


def test_7_3_6_a_close_with_a_123_byte_reason_is_echoed(ws: RawWebSocket) -> None:
    payload = struct.pack("!H", 1000) + b"*" * 123
    ws.send_frame(CLOSE, payload)
    assert ws.recv_frame()[:2] == (CLOSE, payload)


def test_7_5_1_a_close_reason_that_is_not_utf8_fails_with_1007(ws: RawWebSocket) -> None:
    ws.send_frame(CLOSE, struct.pack("!H", 1000) + b"\xce\xba\xed\xa0\x80")
    fails_with(ws, 1007)


@pytest.mark.parametrize(
    "code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999]
)
def test_7_7_valid_close_codes_are_echoed(ws: RawWebSocket, code: int) -> None:
    ws.send_frame(CLOSE, struct.pack("!H", code))
    assert ws.recv_frame()[:2] == (CLOSE, struct.pack("!H", code))


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999, 5000, 65535])
def test_7_9_invalid_close_codes_fail(ws: RawWebSocket, code: int) -> None:
    ws.send_frame(CLOSE, struct.pack("!H", code))
    fails_with(ws, 1002)


# -- framing rules outside Autobahn's sections (RFC 6455 section 5.1) ------------------------
def test_an_unmasked_client_frame_fails_with_1002(ws: RawWebSocket) -> None:
    ws.send_frame(TEXT, b"not masked", mask=False)
    fails_with(ws, 1002)


@pytest.mark.parametrize(
    "wire",
    [
        frame(TEXT, b"", mask=False),  # 2 bytes: shorter than any masked frame's head
        frame(CLOSE, struct.pack("!H", 1000), mask=False),  # 4 bytes
        frame(BINARY, b"abc", mask=False),  # 5 bytes
    ],
    ids=["2-byte text", "4-byte close", "5-byte binary"],
)
def test_a_short_unmasked_client_frame_fails_with_1002_at_once(
    ws: RawWebSocket, wire: bytes
) -> None:
    # (the session waited for the 4-byte mask key such a frame does not have)
    ws.sock.settimeout(3)
    ws.sock.sendall(wire)
    fails_with(ws, 1002)


# -- 9 Limits (scaled down: the server's limit here is 1 MiB) -----------------------------------
def test_9_a_message_at_the_limit_passes_and_one_byte_more_fails(ws: RawWebSocket) -> None:
    echo(ws, BINARY, bytes(1024 * 1024))
    ws.send_frame(BINARY, bytes(512 * 1024), fin=False)
    ws.send_frame(CONT, bytes(512 * 1024 + 1), fin=True)
    fails_with(ws, 1009)


# -- 12/13 Compression ---------------------------------------------------------------------------
DEFLATE = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"


def _deflate(data: bytes, wbits: int = 15) -> bytes:
    import zlib

    c = zlib.compressobj(9, zlib.DEFLATED, -wbits)
    return (c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]


def _inflate(data: bytes) -> bytes:
    import zlib

    return zlib.decompressobj(-15).decompress(data + b"\x00\x00\xff\xff")


@pytest.mark.parametrize(
    "offer, answer",
    [
        ("permessage-deflate", "permessage-deflate"),
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=15",
        ),
        (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10",
        ),
        ("permessage-deflate; unknown=1, permessage-deflate", "permessage-deflate"),
        ("permessage-deflate; server_max_window_bits=8", None),
        ("permessage-deflate; server_max_window_bits", None),
        ("permessage-deflate; server_max_window_bits=012", None),  # RFC 7692 7.1.2.1
        ("x-webkit-deflate-frame", None),
    ],
)
def test_13_permessage_deflate_parameters(
    server: BastionProcess, offer: str, answer: str | None
) -> None:
    ws = RawWebSocket(*server.host_port, extra=f"Sec-WebSocket-Extensions: {offer}\r\n")
    lines = {
        name.strip().lower(): value.strip()
        for name, _, value in (line.partition(":") for line in ws.head.split("\r\n")[1:])
    }
    assert lines.get("sec-websocket-extensions") == answer
    ws.close()


def test_12_compressed_messages_both_ways(server: BastionProcess) -> None:
    ws = RawWebSocket(*server.host_port, extra=DEFLATE)
    for message in (b"Hello" * 1000, b"", "ünïcode ✓".encode()):
        ws.send_frame(TEXT, _deflate(message), rsv=4)
        opcode, payload, _, rsv = ws.recv_frame()
        assert (opcode, rsv) == (TEXT, 4)
        assert _inflate(payload) == message
    ws.close()


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_12_a_ping_between_compressed_fragments(server: BastionProcess, opcode: int) -> None:
    """RFC 6455 5.4: a control frame may come between a message's fragments; the
    compressed message is inflated whole (RFC 7692 6.2), and the next one too."""
    import zlib

    ws = RawWebSocket(*server.host_port, extra=DEFLATE)
    inflater = zlib.decompressobj(-15)  # the server keeps its context between messages
    first = ("fragmented ✓ " * 80).encode()
    data = _deflate(first)
    half = len(data) // 2
    ws.send_frame(opcode, data[:half], fin=False, rsv=4)
    ws.send_frame(PING, b"between")
    ws.send_frame(CONT, data[half:], fin=True)
    second = b"the next message"
    ws.send_frame(opcode, _deflate(second), rsv=4)
    got = []
    while len(got) < 2:
        op, payload, fin, rsv = ws.recv_frame()
        if op == PONG:
            assert payload == b"between"
            continue
        assert (op, fin, rsv) == (opcode, True, 4), (op, payload[:50])
        got.append(inflater.decompress(payload + b"\x00\x00\xff\xff"))
    assert got == [first, second]
    ws.close()


def test_12_a_compression_bomb_is_closed_with_1009(server: BastionProcess) -> None:
    """64 MiB of zeros deflate to about 64 KiB; the limit is 1 MiB once inflated."""
    ws = RawWebSocket(*server.host_port, extra=DEFLATE)
    ws.send_frame(BINARY, _deflate(bytes(64 * 1024 * 1024)), rsv=4)
    fails_with(ws, 1009)
    ws.close()


def test_12_rsv1_on_a_control_frame_fails_even_with_compression(server: BastionProcess) -> None:
    ws = RawWebSocket(*server.host_port, extra=DEFLATE)
    ws.send_frame(PING, b"", rsv=4)
    fails_with(ws, 1002)
    ws.close()


def test_12_corrupt_deflate_data_fails_with_1007(server: BastionProcess) -> None:
    ws = RawWebSocket(*server.host_port, extra=DEFLATE)
    ws.send_frame(BINARY, b"\xff\xff\xff\xff\xff", rsv=4)
    fails_with(ws, 1007)
    ws.close()
