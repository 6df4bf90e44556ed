"""An ASGI app that reports its own life cycle, for the supervisor's ordering tests.

It prints (to stdout, flushed, so the lines land in bastion's output in the order they
happened):

    lifecycle startup complete in pid P     -- lifespan start-up done (worker about ready)
    lifecycle shutdown in pid P             -- lifespan shutdown began (worker has stopped)

PROC_STARTUP_SECONDS delays the lifespan start-up (a replacement that takes a while to
get ready); PROC_SHUTDOWN_HANG=1 makes the lifespan shutdown never finish.

GET /          -> "ok <pid> <n>", n counting this process's requests
GET /slow?s=1  -> waits s seconds (without blocking the loop), then "slow <pid>"
GET /gc        -> "frozen <gc.get_freeze_count()> <1 if MARKER is frozen else 0>"
"""

import asyncio
import gc
import os

STARTUP_SECONDS = float(os.environ.get("PROC_STARTUP_SECONDS", "0"))
SHUTDOWN_HANG = os.environ.get("PROC_SHUTDOWN_HANG") == "1"

# an object created at import: frozen by gc.freeze() when the supervisor preloads the app
# (it holds a list: a dict of strings only is not tracked by the collector at all)
MARKER = {"created": ["at import"]}

served = 0


def _marker_frozen() -> bool:
    # frozen objects sit in the permanent generation, which gc.get_objects() leaves out
    assert gc.is_tracked(MARKER)
    return not any(o is MARKER for o in gc.get_objects())


async def _lifespan(receive, send):
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await asyncio.sleep(STARTUP_SECONDS)
            print(f"lifecycle startup complete in pid {os.getpid()}", flush=True)
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            print(f"lifecycle shutdown in pid {os.getpid()}", flush=True)
            if SHUTDOWN_HANG:
                await asyncio.sleep(3600)
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    global served
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    served += 1
    path = scope["path"]
    body = f"ok {os.getpid()} {served}"
    if path == "/slow":
        seconds = float(scope["query_string"].decode().partition("=")[2] or 1)
        print(f"slow request started in pid {os.getpid()}", flush=True)
        await asyncio.sleep(seconds)
        body = f"slow {os.getpid()}"
    elif path == "/gc":
        body = f"frozen {gc.get_freeze_count()} {int(_marker_frozen())}"
    data = body.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(data))],
        }
    )
    await send({"type": "http.response.body", "body": data})
