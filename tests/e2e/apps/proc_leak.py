"""An ASGI app that leaks memory on purpose: each GET /leak keeps 4 MiB for good.

GET /      -> "ok <pid>"
GET /leak  -> "leaked <total MiB> <pid>"
"""

import os

KEPT: list[bytearray] = []


async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["path"] == "/leak":
        chunk = bytearray(4 << 20)
        for i in range(0, len(chunk), 4096):  # touch every page: really resident
            chunk[i] = 1
        KEPT.append(chunk)
        body = f"leaked {len(KEPT) * 4} {os.getpid()}"
    else:
        body = f"ok {os.getpid()}"
    data = body.encode()
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(data))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})
