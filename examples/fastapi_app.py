"""A FastAPI app served by bastion (ASGI).

Run it from this directory::

    bastion serve fastapi_app:app

The interactive API docs are at /docs.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # open connection pools here; bastion runs this once per worker before serving
    app.state.greeting = "Hello"
    yield


app = FastAPI(title="bastion example", lifespan=lifespan)


class Item(BaseModel):
    name: str
    price: float


@app.get("/")
async def index() -> dict[str, object]:
    return {"message": f"{app.state.greeting} from FastAPI!", "worker_pid": os.getpid()}


@app.post("/items")
async def create_item(item: Item) -> Item:
    return item


@app.get("/countdown")
async def countdown() -> StreamingResponse:
    async def lines() -> AsyncIterator[str]:
        for n in range(5, 0, -1):
            yield f"{n}\n"
            await asyncio.sleep(0.5)
        yield "lift-off\n"

    return StreamingResponse(lines(), media_type="text/plain")
