"""WebSocket end to end: the real ``bastion`` process, the ``websockets`` client library.

The app is tests/e2e/apps/ws_app.py (plain ASGI). Protocol violations that no client
library would send are in test_websocket_autobahn.py (raw sockets).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from server import BastionProcess, serve
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from ws_raw import RawWebSocket

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def server() -> Iterator[BastionProcess]:
    with serve("ws_app:app", "--workers", "1") as proc:
        yield proc


def ws_url(proc: BastionProcess, path: str) -> str:
    host, port = proc.host_port
    return f"ws://{host}:{port}{path}"


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def wait_for_log(proc: BastionProcess, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in proc.log.splitlines():
            if text in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in the log:\n{proc.log[-3000:]}")


# -- echo -----------------------------------------------------------------------------------
@pytest.mark.parametrize("compression", ["deflate", None])
@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, MiB, 16 * MiB])
def test_text_and_binary_echo_from_0_bytes_to_16_mib(
    server: BastionProcess, size: int, compression: str | None
) -> None:
    if size == 16 * MiB and compression:
        pytest.skip("16 MiB through zlib both ways takes long on a small machine")

    async def main() -> None:
        async with connect(ws_url(server, "/echo"), max_size=None, compression=compression) as ws:
            offered = ws.response.headers.get("sec-websocket-extensions")
            assert (offered is not None) == (compression is not None)
            data = bytes(range(256)) * (size // 256) + bytes(size % 256)
            await ws.send(data)
            assert await ws.recv() == data
            text = "é" * (size // 2)
            await ws.send(text)
            assert await ws.recv() == text

    run(main())


def test_fragmented_messages_are_reassembled(server: BastionProcess) -> None:
    async def main() -> None:
        async with connect(ws_url(server, "/echo")) as ws:
            await ws.send(["frag", "men", "", "ted ✓"])
            assert await ws.recv() == "fragmented ✓"
            await ws.send([b"\x00" * 70000, b"\x01" * 3])
            assert await ws.recv() == b"\x00" * 70000 + b"\x01" * 3

    run(main())


def test_many_messages_keep_their_order(server: BastionProcess) -> None:
    async def main() -> None:
        async with connect(ws_url(server, "/echo")) as ws:
            for i in range(500):
                await ws.send(f"m{i}")
            assert [await ws.recv() for _ in range(500)] == [f"m{i}" for i in range(500)]

    run(main())


# -- limits -----------------------------------------------------------------------------------
@pytest.mark.parametrize("compression", ["deflate", None])
def test_a_message_over_the_limit_closes_with_1009(
    server: BastionProcess, compression: str | None
) -> None:
    async def main() -> None:
        async with connect(ws_url(server, "/echo"), max_size=None, compression=compression) as ws:
            # zeros inflate from a few KiB: the limit is on the inflated size (a bomb)
            await ws.send(bytes(16 * MiB + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1009

    run(main())
    wait_for_log(server, "ws_app: disconnect 1009")


# -- close -------------------------------------------------------------------------------------
@pytest.mark.parametrize("code, reason", [(1000, ""), (1001, "going"), (4001, "bye ✓"), (3000, "")])
def test_the_app_closes_with_its_code_and_reason(
    server: BastionProcess, code: int, reason: str
) -> None:
    async def main() -> None:
        async with connect(ws_url(server, f"/close?code={code}&reason={reason}")) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None
            assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (code, reason)
            # the close handshake completed: the app was told with its own code
            assert closed.value.sent is not None and closed.value.sent.code == code

    run(main())
    wait_for_log(server, f"ws_app: after close websocket.disconnect {code}")


@pytest.mark.parametrize("code, reason", [(1000, ""), (1001, ""), (4123, "client says bye")])
def test_the_client_closes_and_the_app_gets_its_code_and_reason(
    server: BastionProcess, code: int, reason: str
) -> None:
    async def main() -> None:
        ws = await connect(ws_url(server, "/echo"))
        await ws.send("x")
        assert await ws.recv() == "x"
        await ws.close(code, reason)
        assert ws.close_code == code  # the server echoed it

    run(main())
    wait_for_log(server, f"ws_app: disconnect {code} {reason!r} after 1")


def test_a_client_that_vanishes_is_a_1006_disconnect(server: BastionProcess) -> None:
    raw = RawWebSocket(*server.host_port, path="/echo?vanish")
    raw.close()
    wait_for_log(server, "ws_app: disconnect 1006")


def closed_by_the_server(server: BastionProcess, path: str) -> int | None:
    """Open a WebSocket to ``path`` and wait for the server to close it: the code it
    sent (None if its close frame had none)."""

    async def main() -> int | None:
        async with connect(ws_url(server, path)) as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            return closed.value.rcvd.code if closed.value.rcvd is not None else None

    return asyncio.run(main())


def test_an_app_error_after_accepting_closes_with_1011(server: BastionProcess) -> None:
    assert closed_by_the_server(server, "/crash") == 1011
    wait_for_log(server, "ws_app: crash after accept")


def test_an_app_that_returns_after_accepting_closes_with_1000(server: BastionProcess) -> None:
    assert closed_by_the_server(server, "/return") == 1000


# -- the handshake ------------------------------------------------------------------------------
def test_subprotocol_negotiation_extra_headers_and_the_scope(server: BastionProcess) -> None:
    async def main() -> None:
        async with connect(
            ws_url(server, "/info?a=1"),
            subprotocols=["v2.bogus", "superchat", "chat"],  # type: ignore[list-item]
            origin="https://app.example",  # type: ignore[arg-type]
        ) as ws:
            assert ws.subprotocol == "superchat"
            assert ws.response.headers["x-extra"] == "1"
            info = json.loads(await ws.recv())
        assert info == {
            "path": "/info",
            "raw_path": "/info",
            "query_string": "a=1",
            "scheme": "ws",
            "http_version": "1.1",
            "subprotocols": ["v2.bogus", "superchat", "chat"],
            "spec_version": "2.4",
            "origin": "https://app.example",
            "extensions": ["websocket.http.response"],
        }

    run(main())


def test_no_subprotocol_when_none_is_offered(server: BastionProcess) -> None:
    async def main() -> None:
        async with connect(ws_url(server, "/echo")) as ws:
            assert ws.subprotocol is None
            assert "sec-websocket-protocol" not in ws.response.headers

    run(main())


def test_the_denial_response_reaches_the_client(server: BastionProcess) -> None:
    async def main() -> None:
        with pytest.raises(InvalidStatus) as denied:
            await connect(ws_url(server, "/deny"))
        response = denied.value.response
        assert response.status_code == 401
        assert response.headers["x-denied"] == "yes"
        assert response.body == b"not you"

    run(main())


@pytest.mark.parametrize(
    "path, status", [("/close-early", 403), ("/crash-early", 500), ("/return-early", 500)]
)
def test_closing_or_failing_before_accepting_is_an_http_error(
    server: BastionProcess, path: str, status: int
) -> None:
    async def main() -> None:
        with pytest.raises(InvalidStatus) as refused:
            await connect(ws_url(server, path))
        assert refused.value.response.status_code == status

    run(main())


def _handshake(server: BastionProcess, headers: dict[str, str]) -> httpx.Response:
    base = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    base.update(headers)
    return httpx.get(server.url + "/echo", headers={k: v for k, v in base.items() if v})


@pytest.mark.parametrize(
    "headers, status",
    [
        ({"Sec-WebSocket-Version": "8"}, 426),
        ({"Sec-WebSocket-Version": ""}, 426),
        ({"Sec-WebSocket-Key": ""}, 400),
        ({"Sec-WebSocket-Key": "c2hvcnQ="}, 400),  # 5 bytes, not 16
        ({"Sec-WebSocket-Key": "not base64 at all!!!!!!="}, 400),
    ],
)
def test_an_invalid_handshake_is_refused_without_the_app(
    server: BastionProcess, headers: dict[str, str], status: int
) -> None:
    response = _handshake(server, headers)
    assert response.status_code == status
    if status == 426:
        assert response.headers["sec-websocket-version"] == "13"


def test_the_rfc_sample_key_gets_the_rfc_accept_value(server: BastionProcess) -> None:
    # RFC 6455 section 1.3
    host, port = server.host_port
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(
            b"GET /echo HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head


def test_a_plain_http_request_still_reaches_the_app(server: BastionProcess) -> None:
    assert httpx.get(server.url + "/echo").text == "http"


# -- ping / pong and keep-alive -----------------------------------------------------------------
def test_the_server_answers_pings(server: BastionProcess) -> None:
    async def main() -> None:
        async with connect(ws_url(server, "/echo")) as ws:
            pong = await ws.ping(b"are you there")
            latency = await asyncio.wait_for(pong, 5)
            assert latency >= 0

    run(main())


@pytest.fixture(scope="module")
def pinging_server() -> Iterator[BastionProcess]:
    env = {
        "BASTION_WEBSOCKET__PING_INTERVAL": "0.3",
        "BASTION_WEBSOCKET__PING_TIMEOUT": "0.5",
        "BASTION_WEBSOCKET__MAX_QUEUE": "4",
        "BASTION_WEBSOCKET__COMPRESSION": "false",
        # no send-rate check: a client that reads nothing is dropped by what a test
        # looks at (the ping timeout), not by that check's 5 s grace
        "BASTION_TIMEOUTS__MIN_SEND_RATE": "0",
    }
    with serve("ws_app:app", "--workers", "1", env=env) as proc:
        yield proc


def test_a_silent_client_is_pinged_and_kept(pinging_server: BastionProcess) -> None:
    async def main() -> None:
        # the websockets client answers pings by itself
        async with connect(ws_url(pinging_server, "/echo"), ping_interval=None) as ws:
            await asyncio.sleep(2.0)
            await ws.send("still here")
            assert await ws.recv() == "still here"

    run(main())


def test_a_peer_that_does_not_answer_pings_is_closed_with_1011(
    pinging_server: BastionProcess,
) -> None:
    raw = RawWebSocket(*pinging_server.host_port, path="/echo?dead")
    started = time.monotonic()
    opcode, payload, _, _ = raw.recv_frame()
    assert opcode == 0x9  # the keep-alive ping, which this peer ignores
    assert raw.recv_close() == 1011
    assert raw.closed_after()
    assert time.monotonic() - started < 5
    raw.close()
    wait_for_log(pinging_server, "ws_app: disconnect 1011")


def test_an_app_sending_to_a_dead_peer_is_released_when_it_is_dropped(
    pinging_server: BastionProcess,
) -> None:
    """The app blocks in send() while the peer reads nothing; when the peer is found
    dead (no pong) the session ends, and so must the app's wait (it lasted until the
    send timeout, a minute, after the session had closed)."""
    raw = RawWebSocket(*pinging_server.host_port, path="/flood", rcvbuf=4096)
    try:
        line = wait_for_log(pinging_server, "ws_app: flood ended after", timeout=8)
        took = float(line.split("ws_app: flood ended after ")[1].split(" s")[0])
        assert took < 5, line
    finally:
        raw.close()


def test_output_waiting_for_slow_websocket_clients_counts_against_the_budget() -> None:
    """limits.max_pending_output bounds what a worker holds for clients that do not
    read, WebSocket sessions included: a session holding a 12 MiB message passes the
    4 MiB budget, and it is dropped within a second or two, not after timeouts.send
    (the send-rate check, off here, would drop it after 5 s)."""
    env = {
        "BASTION_LIMITS__MAX_PENDING_OUTPUT": "4m",
        "BASTION_TIMEOUTS__MIN_SEND_RATE": "0",
        "BASTION_WEBSOCKET__PING_INTERVAL": "0",
        "BASTION_WEBSOCKET__COMPRESSION": "false",
    }
    with serve("ws_app:app", "--workers", "1", env=env) as proc:
        clients = []
        try:
            for _ in range(2):
                path = f"/flood?size={12 * MiB}"
                clients.append(RawWebSocket(*proc.host_port, path=path, rcvbuf=4096))
                time.sleep(0.3)
            line = wait_for_log(proc, "ws_app: flood ended after", timeout=8)
            took = float(line.split("ws_app: flood ended after ")[1].split(" s")[0])
            assert took < 5, line
            assert "limits.max_pending_output" in proc.log
        finally:
            for c in clients:
                c.close()


def test_compression_off_is_not_negotiated(pinging_server: BastionProcess) -> None:
    async def main() -> None:
        async with connect(ws_url(pinging_server, "/echo"), compression="deflate") as ws:
            assert "sec-websocket-extensions" not in ws.response.headers
            await ws.send("plain")
            assert await ws.recv() == "plain"

    run(main())


# -- backpressure --------------------------------------------------------------------------------
def test_a_socket_whose_app_does_not_receive_stops_being_read(
    pinging_server: BastionProcess,
) -> None:
    """max_queue = 4: after that the server reads nothing, so the client's writes back
    up in TCP's buffers instead of in the server's memory."""
    raw = RawWebSocket(*pinging_server.host_port, path="/sink?wait=4")
    assert raw.recv_frame()[1] == b"ready"
    raw.sock.setblocking(False)
    sent = 0
    message = b"\x82\xfe\xff\xff" + b"\x00\x00\x00\x00" + bytes(65535)  # masked with zeros
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and sent < 64 * MiB:
        try:
            sent += raw.sock.send(message)
        except BlockingIOError:
            time.sleep(0.05)
    # the kernel buffers a few MiB at most; without backpressure all of it would be read
    assert sent < 64 * MiB, sent
    line = wait_for_log(pinging_server, "ws_app: sink read", timeout=15)
    assert int(line.split()[-1]) > 4
    raw.close()


def test_pings_from_a_peer_that_does_not_read_get_one_pong_for_the_latest(
    server: BastionProcess,
) -> None:
    """A pong for every ping of a client that reads nothing piled up in the worker
    without bound (a flood of pings grew it by hundreds of MiB). While the client does
    not read, only the latest ping is owed a pong (RFC 6455 5.5.3), sent when it reads
    again."""
    raw = RawWebSocket(*server.host_port, path="/mark", rcvbuf=4096)
    # 25 MB of pongs: more than the kernel's buffers take (up to 4 MiB each way here)
    count = 200_000
    payloads = [b"%06d" % i + b"-" * 119 for i in range(count)]  # 125 bytes each
    # masked with the key 0 (any key is valid), so that the bytes need no masking here
    wire = b"".join(b"\x89\xfd\x00\x00\x00\x00" + p for p in payloads)
    # then a message the app logs: once it is logged, every ping before it was read
    token = b"done-%d" % time.monotonic_ns()
    wire += b"\x81" + bytes([0x80 | len(token)]) + b"\x00\x00\x00\x00" + token
    started = time.monotonic()
    for at in range(0, len(wire), 65536):
        raw.sock.sendall(wire[at : at + 65536])
    wait_for_log(server, f"ws_app: mark {token.decode()}", timeout=30)  # nothing read yet
    pongs = []
    while not pongs or pongs[-1] != payloads[-1]:
        opcode, payload, _, _ = raw.recv_frame()
        assert opcode == 0xA
        pongs.append(payload)
    # what fit in the buffers before the client stopped reading, then the latest
    assert len(pongs) < count // 2, len(pongs)
    assert time.monotonic() - started < 30
    assert all(a < b for a, b in itertools.pairwise(pongs))  # in order, none twice
    raw.send_frame(0x9, b"still open")
    assert raw.recv_frame()[:2] == (0xA, b"still open")
    raw.close()
