"""Starlette app for the framework end-to-end tests (served as ``fw_starlette:app``).

Same routes and JSON shapes as the other ``fw_*`` apps; see tests/e2e/test_frameworks.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


async def json_view(request: Request) -> JSONResponse:
    return JSONResponse({"framework": "starlette", "pid": os.getpid(), "message": "hello"})


async def form_view(request: Request) -> JSONResponse:
    async with request.form() as form:
        return JSONResponse({"name": form.get("name"), "colour": form.get("colour")})


async def upload_view(request: Request) -> JSONResponse:
    async with request.form(max_part_size=64 * 1024 * 1024) as form:
        upload = form["file"]
        assert isinstance(upload, UploadFile)
        digest = hashlib.sha256()
        size = 0
        while chunk := await upload.read(65536):
            digest.update(chunk)
            size += len(chunk)
        return JSONResponse(
            {"filename": upload.filename, "size": size, "sha256": digest.hexdigest()}
        )


async def stream_view(request: Request) -> StreamingResponse:
    count = int(request.query_params.get("n", "4"))
    delay = float(request.query_params.get("delay", "0.3"))

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(count):
            if i:
                await asyncio.sleep(delay)
            yield f"chunk {i}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


async def events_view(request: Request) -> StreamingResponse:
    """An endless server-sent-events stream that never checks for a disconnect itself;
    it says on stderr when it has ended."""
    ident = request.query_params.get("id", "")
    delay = float(request.query_params.get("delay", "0.05"))

    async def events() -> AsyncIterator[bytes]:
        i = 0
        try:
            while True:
                yield f"data: tick {i}\n\n".encode()
                i += 1
                await asyncio.sleep(delay)
        finally:
            print(f"events ended {ident}", file=sys.stderr, flush=True)

    return StreamingResponse(events(), media_type="text/event-stream")


async def boom_view(request: Request) -> JSONResponse:
    raise RuntimeError("deliberate failure fw-boom-marker")


async def query_view(request: Request) -> JSONResponse:
    params = request.query_params
    args = {key: params.getlist(key) for key in params}
    return JSONResponse(
        {"query_string": request.scope["query_string"].decode("latin-1"), "args": args}
    )


async def headers_view(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "x_echo": request.headers.get("x-echo"),
            "user_agent": request.headers.get("user-agent"),
        }
    )


async def url_view(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "json_url": request.url_for("json").path,
            "root_path": request.scope.get("root_path", ""),
            "path": request.url.path,
        }
    )


app = Starlette(
    routes=[
        Route("/json", json_view, name="json"),
        Route("/form", form_view, methods=["POST"]),
        Route("/upload", upload_view, methods=["POST"]),
        Route("/stream", stream_view),
        Route("/events", events_view),
        Route("/boom", boom_view),
        Route("/query", query_view),
        Route("/headers", headers_view),
        Route("/url", url_view),
    ]
)
