"""A raw-socket WebSocket client for tests that must send what no library would:
unmasked frames, reserved bits and opcodes, broken UTF-8, bad close frames."""

from __future__ import annotations

import base64
import os
import socket
import struct


class RawWebSocket:
    def __init__(
        self,
        host: str,
        port: int,
        path: str = "/echo",
        extra: str = "",
        rcvbuf: int = 0,
    ) -> None:
        """The handshake on a new connection; ``rcvbuf`` sets a small receive buffer
        first (a client that reads slowly fills the server's side sooner)."""
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        self.sock = socket.socket(family, kind, proto)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(address)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
        self.sock.sendall(request.encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            assert chunk, "closed during the handshake"
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.head = head.decode("latin-1")
        assert self.head.startswith("HTTP/1.1 101 "), self.head

    def send_frame(
        self,
        opcode: int,
        payload: bytes = b"",
        fin: bool = True,
        rsv: int = 0,
        mask: bool = True,
    ) -> None:
        self.sock.sendall(frame(opcode, payload, fin, rsv, mask))

    def _read(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self) -> tuple[int, bytes, bool, int]:
        """(opcode, payload, fin, rsv bits) of the next frame from the server."""
        b0, b1 = self._read(2)
        assert not b1 & 0x80, "a server frame must not be masked"
        length = b1 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read(8))
        return b0 & 0x0F, self._read(length), bool(b0 & 0x80), (b0 >> 4) & 0x7

    def recv_close(self) -> int | None:
        """Read frames until the server's close; its code (None: closed without one)."""
        while True:
            try:
                opcode, payload, _, _ = self.recv_frame()
            except (EOFError, ConnectionResetError):
                return None
            if opcode == 0x8:
                return struct.unpack("!H", payload[:2])[0] if payload else 1005

    def closed_after(self) -> bool:
        """Whether the server closes the TCP connection (within the socket timeout)."""
        try:
            while True:
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


def frame(opcode: int, payload: bytes, fin: bool = True, rsv: int = 0, mask: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked
