"""A Starlette app that shows what authentication handed it (tests/e2e/test_auth.py)."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket


async def show(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "auth": request.scope["extensions"].get("bastion.auth"),
            "remote_user": request.headers.get("x-remote-user"),
            "groups": request.headers.get("x-auth-groups"),
            "query": request.url.query,
            "has_user_key": "user" in request.scope,
        }
    )


async def ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json(
        {
            "auth": websocket.scope["extensions"].get("bastion.auth"),
            "remote_user": websocket.headers.get("x-remote-user"),
        }
    )
    await websocket.close()


app = Starlette(routes=[Route("/{rest:path}", show), WebSocketRoute("/{rest:path}", ws)])
