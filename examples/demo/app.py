"""The bastion demo: a small Starlette app that shows how it is being served.

Run it from this directory (``make run`` does exactly this)::

    bastion serve -c bastion.toml

then open http://127.0.0.1:8000. The page shows which worker process answered, the
request headers as the app received them, a live stream of server-sent events, a file
upload that reports the file's size and SHA-256, and the headers bastion added on its
own: compression and security headers from bastion.toml, and the validators of the
files under static/, which bastion serves itself without calling the app. ``curl -N
http://127.0.0.1:8000/stream`` shows a chunked response arriving line by line.
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import os
import platform
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

STARTED = time.time()
EVENTS = 30  # server-sent events per page view, one a second


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    # runs once in each worker before it takes requests, and again as it stops
    app.state.worker_started = time.time()
    yield


def _whoami(request: Request) -> dict[str, object]:
    return {
        "worker_pid": os.getpid(),
        "supervisor_pid": os.getppid(),
        "worker_uptime_seconds": round(time.time() - request.app.state.worker_started, 1),
        "python": platform.python_version(),
        "client": list(request.client) if request.client else None,
        "http_version": request.scope.get("http_version"),
        "root_path": request.scope.get("root_path", ""),
    }


async def index(request: Request) -> HTMLResponse:
    who = _whoami(request)
    rows = "\n".join(
        f"<tr><th>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in request.headers.items()
    )
    page = PAGE.format(
        pid=who["worker_pid"],
        ppid=who["supervisor_pid"],
        uptime=who["worker_uptime_seconds"],
        python=who["python"],
        http=html.escape(str(who["http_version"])),
        client=html.escape(":".join(str(p) for p in request.client) if request.client else "-"),
        rows=rows,
        base=html.escape(f"{request.url.scheme}://{request.url.netloc}"),
    )
    return HTMLResponse(page)


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse(_whoami(request))


async def events(request: Request) -> StreamingResponse:
    async def ticks() -> AsyncIterator[str]:
        for n in range(1, EVENTS + 1):
            now = time.strftime("%H:%M:%S")
            yield f"data: tick {n}/{EVENTS} at {now} from worker {os.getpid()}\n\n"
            await asyncio.sleep(1)
        yield f"event: done\ndata: {EVENTS} events sent\n\n"

    return StreamingResponse(
        ticks(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


async def stream(request: Request) -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        for n in range(1, 6):
            yield f"line {n} of 5 from worker {os.getpid()}\n"
            await asyncio.sleep(0.5)

    return StreamingResponse(lines(), media_type="text/plain")


async def upload(request: Request) -> JSONResponse:
    async with request.form() as form:
        item = form.get("file")
        if not isinstance(item, UploadFile):
            return JSONResponse({"error": "send a file in the 'file' field"}, status_code=400)
        digest = hashlib.sha256()
        size = 0
        while chunk := await item.read(1 << 16):
            digest.update(chunk)
            size += len(chunk)
        return JSONResponse({"filename": item.filename, "size": size, "sha256": digest.hexdigest()})


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok\n")


app = Starlette(
    routes=[
        Route("/", index),
        Route("/api/whoami", whoami),
        Route("/events", events),
        Route("/stream", stream),
        Route("/upload", upload, methods=["POST"]),
        Route("/healthz", healthz),
    ],
    lifespan=lifespan,
)

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bastion demo</title>
<link rel="icon" href="/static/bastion.svg">
<link rel="stylesheet" href="/static/demo.css">
</head>
<body>
<h1><img src="/static/bastion.svg" alt="">bastion demo</h1>
<p>A Starlette app, served over ASGI by bastion's pre-forked workers.</p>

<section>
  <h2>Who answered</h2>
  <p>worker pid <span class="big">{pid}</span> &middot; supervisor pid {ppid}
     &middot; worker up {uptime}s &middot; Python {python} &middot; HTTP/{http}
     &middot; you are {client}</p>
  <p>Reload in a new window, or run <code>curl -s {base}/api/whoami</code>
     a few times: each new connection goes to whichever worker accepts it first.</p>
</section>

<section>
  <h2>Live stream <small>(server-sent events from <code>/events</code>)</small></h2>
  <pre id="ticks"></pre>
  <p>Plain chunked streaming: <code>curl -N {base}/stream</code></p>
</section>

<section>
  <h2>Upload a file</h2>
  <form id="upload"><input type="file" name="file" required> <button>Upload</button></form>
  <p id="result"></p>
</section>

<section>
  <h2>What bastion added <small>(see bastion.toml)</small></h2>
  <table>
    <tr><th>this page, from the app</th><td><pre id="page-headers">...</pre></td></tr>
    <tr><th>/static/demo.css, from bastion's static route (the app never saw it)</th>
        <td><pre id="css-headers">...</pre></td></tr>
  </table>
  <p class="muted">Compression, the security headers and the static route are all set in
     the config file; the app itself sets none of them.</p>
</section>

<section>
  <h2>Your request headers, as the app sees them</h2>
  <table>{rows}</table>
</section>

<script src="/static/demo.js"></script>
</body>
</html>
"""
