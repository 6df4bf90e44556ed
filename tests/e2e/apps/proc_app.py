"""A small ASGI app for the process tests (signals, supervision, listeners).

GET /          -> "ok <pid>"
GET /slow?s=1  -> waits s seconds (without blocking the loop), then "slow <pid>"
GET /block     -> blocks the event loop in time.sleep (a hung worker)
"""

import asyncio
import os
import sys
import time

IMPORTED_IN = os.getpid()
print(f"proc_app imported in pid {IMPORTED_IN}", file=sys.stderr, flush=True)


def block_the_loop_forever() -> None:
    time.sleep(60)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                print(f"proc_app lifespan shutdown in pid {os.getpid()}", flush=True)
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    body = f"ok {os.getpid()}"
    if path == "/slow":
        query = scope["query_string"].decode()
        seconds = float(query.partition("=")[2] or 1)
        print(f"slow request started in pid {os.getpid()}", flush=True)
        await asyncio.sleep(seconds)
        body = f"slow {os.getpid()}"
    elif path == "/block":
        block_the_loop_forever()
    elif path == "/imported":
        body = str(IMPORTED_IN)
    data = body.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(data))],
        }
    )
    await send({"type": "http.response.body", "body": data})
