"""A decoy for an attack tool: listens on HOST:PORT, accepts every connection, reads and
discards whatever comes, for SECONDS at most (then exits by itself).

It answers one thing only, as a server would: a connection's first request when its head
is complete and it declares no body gets ``200 Hello, world!`` (and the connection stays
open, read and discarded). That is the attack tool's probe (slowhttptest checks that the
service is still available with a plain GET on its own connection); an attack's
connections never finish their heads (slowloris) or never finish their bodies (slow
body), so they are never answered. Whether the probe is answered changes what the tool
spends: a probe left unanswered makes it idle, one answered keeps it polling.

    python decoy.py HOST PORT SECONDS

It prints ``ready`` once it listens. On SIGTERM (or at its deadline) it prints one line
of JSON with what it saw (connections accepted, open at the end, the most open at once,
bytes read, connections the peer closed) and exits. Connections are held until the peer
closes them; above MAX_OPEN (kept under the file descriptor limit) the oldest is closed
to make room, so the process stays bounded whatever connects to it.
"""

from __future__ import annotations

import json
import resource
import selectors
import signal
import socket
import sys
import time

BACKLOG = 4096
READ_SIZE = 65536
HEAD_LIMIT = 16384  # bytes of a connection's start searched for the end of a head
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, world!"


def declares_body(head: bytes) -> bool:
    for line in head.lower().split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"transfer-encoding":
            return True
        if name.strip() == b"content-length" and value.strip() not in (b"", b"0"):
            return True
    return False


def main(host: str, port: int, seconds: float) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        soft = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    max_open = max(16, soft - 64)

    stop = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(BACKLOG)
    listener.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, None)
    # a connection's first bytes while its head may still be coming (None once answered
    # or given up on); insertion order: the oldest first
    conns: dict[socket.socket, bytearray | None] = {}
    stats = {
        "accepted": 0,
        "peak_open": 0,
        "bytes": 0,
        "answered": 0,
        "closed_by_peer": 0,
        "evicted": 0,
    }

    def close(sock: socket.socket) -> None:
        sel.unregister(sock)
        del conns[sock]
        sock.close()

    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while not stop and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            if sock is listener:
                for _ in range(64):  # accept what is queued, a batch at a time
                    try:
                        conn, _addr = listener.accept()
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:  # out of descriptors or similar: try again later
                        break
                    conn.setblocking(False)
                    if len(conns) >= max_open:
                        close(next(iter(conns)))
                        stats["evicted"] += 1
                    conns[conn] = bytearray()
                    sel.register(conn, selectors.EVENT_READ, None)
                    stats["accepted"] += 1
                stats["peak_open"] = max(stats["peak_open"], len(conns))
                continue
            if sock not in conns:  # closed to make room earlier in this batch
                continue
            try:
                data = sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if data:
                stats["bytes"] += len(data)
                start = conns[sock]
                if start is not None:
                    start += data
                    end = start.find(b"\r\n\r\n")
                    if end >= 0 and not declares_body(bytes(start[:end])):
                        try:
                            sock.send(ANSWER)  # a few bytes into an empty buffer
                        except OSError:
                            pass
                        stats["answered"] += 1
                    if end >= 0 or len(start) > HEAD_LIMIT:
                        conns[sock] = None
            else:
                stats["closed_by_peer"] += 1
                close(sock)
    stats["open"] = len(conns)
    for sock in list(conns):
        sock.close()
    listener.close()
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    h, p, s = sys.argv[1:4]
    raise SystemExit(main(h, int(p), float(s)))
