"""A Starlette app served by bastion (ASGI).

Run it from this directory::

    bastion serve starlette_app:app
"""

from __future__ import annotations

import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


async def index(request: Request) -> PlainTextResponse:
    return PlainTextResponse("Hello from Starlette!\n")


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": request.path_params["name"], "worker_pid": os.getpid()})


app = Starlette(routes=[Route("/", index), Route("/hello/{name}", hello)])
