"""WebSocket routes of real frameworks for tests/e2e/test_websocket_apps.py.

``fastapi_app``: ``/ws/{room}`` (a FastAPI WebSocket route with a query parameter and a
subprotocol), ``starlette_app``: ``/ws`` (a Starlette ``WebSocketEndpoint``, mounted at
``/star/``), each echoing with a prefix.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.routing import WebSocketRoute

fastapi_app = FastAPI()


@fastapi_app.websocket("/ws/{room}")
async def room(websocket: WebSocket, room: str, name: str = "anon") -> None:
    await websocket.accept(
        subprotocol="chat" if "chat" in websocket.scope["subprotocols"] else None
    )
    await websocket.send_json({"room": room, "name": name})
    try:
        while True:
            text = await websocket.receive_text()
            if text == "bye":
                await websocket.close(code=4000, reason="see you")
                return
            await websocket.send_text(f"{room}: {text}")
    except WebSocketDisconnect as exc:
        print(f"fastapi: disconnect {exc.code}", flush=True)


@fastapi_app.get("/plain")
async def plain() -> dict[str, str]:
    return {"framework": "fastapi"}


class Echo(WebSocketEndpoint):
    encoding = "bytes"

    async def on_receive(self, websocket: Any, data: bytes) -> None:
        await websocket.send_bytes(b"starlette:" + data)


starlette_app = Starlette(routes=[WebSocketRoute("/ws", Echo)])
