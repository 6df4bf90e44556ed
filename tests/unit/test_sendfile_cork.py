"""Zero-copy file responses: head and file leave corked, and the cork is always released."""

from __future__ import annotations

import asyncio
import socket
import tempfile
from typing import Any

from bastion.protocol.h1_exchange import H1Exchange
from tests.unit.h1_harness import FakeTransport, make_conn


class SocketTransport(FakeTransport):
    """The fake transport, but with a real TCP socket behind it for sendfile."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self.sock = sock
        self.cork_history: list[int] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return self
        return super().get_extra_info(name, default)

    def fileno(self) -> int:
        return self.sock.fileno()

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self.sock.setsockopt(level, option, value)
        if option == socket.TCP_CORK:
            self.cork_history.append(value)

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)  # small heads only in this test


def test_file_response_is_corked_then_uncorked() -> None:
    async def main() -> None:
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
        server.setblocking(False)
        with tempfile.NamedTemporaryFile() as f:
            f.write(b"z" * 100_000)
            f.flush()
            done: list[bool] = []

            def handler(ex: H1Exchange) -> None:
                async def run() -> None:
                    ex.start_response(200, [(b"content-length", b"100000")])
                    await ex.sendfile(f.fileno(), 0, 100_000)
                    ex.finish()
                    done.append(True)

                asyncio.get_running_loop().create_task(run())

            proto, _, _ = make_conn(handler)
            transport = SocketTransport(server)
            transport.protocol = proto
            proto.connection_made(transport)  # type: ignore[arg-type]
            proto.data_received(b"GET /f HTTP/1.1\r\nHost: a\r\n\r\n")
            received = b""
            client.setblocking(False)
            for _ in range(2000):
                await asyncio.sleep(0.001)
                try:
                    received += client.recv(1 << 20)
                except BlockingIOError:
                    pass
                # the whole body, not just a read that ended in its bytes
                if done and len(received.partition(b"\r\n\r\n")[2]) >= 100_000:
                    break
            assert done
            head, _, body = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            assert len(body) == 100_000
            assert transport.cork_history == [1, 0]
            assert server.getsockopt(socket.IPPROTO_TCP, socket.TCP_CORK) == 0
        for s in (client, server, listener):
            s.close()

    asyncio.run(main())
