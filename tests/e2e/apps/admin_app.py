"""An ASGI app for the admin listener's tests.

Lifespan start-up takes ADMIN_START_SECONDS (default 0), so that /readyz can be seen
saying "not ready" first.

GET /          -> "ok <pid>"
GET /status/N  -> an empty answer with status N
GET /block     -> blocks the event loop in time.sleep, inside blocked_here() (a stuck
                  worker, whose stack dump shows that function)
GET /gc        -> makes 100 reference cycles (200 objects), then runs gc.collect()
"""

import asyncio
import gc
import os
import time


def blocked_here():
    time.sleep(60)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await asyncio.sleep(float(os.environ.get("ADMIN_START_SECONDS", "0")))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    if scope["method"] == "POST":
        more = True
        while more:
            message = await receive()
            more = message.get("more_body", False)
    status = 200
    body = f"ok {os.getpid()}".encode()
    if path == "/block":
        blocked_here()
    elif path == "/gc":
        # no automatic collection in between: the full one below finds all 200
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(100):
                a, b = [], []
                a.append(b)
                b.append(a)
            del a, b
            gc.collect()
        finally:
            if was_enabled:
                gc.enable()
    elif path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        body = b""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})
