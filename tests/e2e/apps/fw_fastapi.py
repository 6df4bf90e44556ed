"""FastAPI app for the framework end-to-end tests (served as ``fw_fastapi:app``).

Same routes and JSON shapes as the other ``fw_*`` apps; see tests/e2e/test_frameworks.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Form, Header, Request, UploadFile
from fastapi.responses import StreamingResponse

app = FastAPI()


@app.api_route("/json", methods=["GET", "HEAD"], name="json")
async def json_view() -> dict[str, Any]:
    return {"framework": "fastapi", "pid": os.getpid(), "message": "hello"}


@app.post("/form")
async def form_view(name: Annotated[str, Form()], colour: Annotated[str, Form()]) -> dict[str, str]:
    return {"name": name, "colour": colour}


@app.post("/upload")
async def upload_view(file: UploadFile) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    while chunk := await file.read(65536):
        digest.update(chunk)
        size += len(chunk)
    return {"filename": file.filename, "size": size, "sha256": digest.hexdigest()}


@app.get("/stream")
async def stream_view(n: int = 4, delay: float = 0.3) -> StreamingResponse:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(n):
            if i:
                await asyncio.sleep(delay)
            yield f"chunk {i}\n".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


@app.get("/events")
async def events_view(id: str = "", delay: float = 0.05) -> StreamingResponse:
    """An endless server-sent-events stream that never checks for a disconnect itself;
    it says on stderr when it has ended."""

    async def events() -> AsyncIterator[bytes]:
        i = 0
        try:
            while True:
                yield f"data: tick {i}\n\n".encode()
                i += 1
                await asyncio.sleep(delay)
        finally:
            print(f"events ended {id}", file=sys.stderr, flush=True)

    return StreamingResponse(events(), media_type="text/event-stream")


@app.get("/boom")
async def boom_view() -> None:
    raise RuntimeError("deliberate failure fw-boom-marker")


@app.get("/query")
async def query_view(request: Request) -> dict[str, Any]:
    params = request.query_params
    return {
        "query_string": request.scope["query_string"].decode("latin-1"),
        "args": {key: params.getlist(key) for key in params},
    }


@app.get("/headers")
async def headers_view(
    x_echo: Annotated[str | None, Header()] = None,
    user_agent: Annotated[str | None, Header()] = None,
) -> dict[str, str | None]:
    return {"x_echo": x_echo, "user_agent": user_agent}


@app.get("/url")
async def url_view(request: Request) -> dict[str, str]:
    return {
        "json_url": request.url_for("json").path,
        "root_path": request.scope.get("root_path", ""),
        "path": request.url.path,
    }
