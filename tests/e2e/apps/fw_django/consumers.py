"""Django Channels consumers of the test project (``fw_django.asgi_channels``).

* ``EchoConsumer`` (synchronous ``WebsocketConsumer``): sends back each message,
  text as text and bytes as bytes, prefixed with ``echo:``.
* ``RoomConsumer`` (``AsyncWebsocketConsumer``): joins the group of its room (from the
  URL) on the in-memory channel layer; each text message is sent to the whole group as
  ``NAME: TEXT``; prints ``channels: NAME left CODE`` when its client leaves.
"""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer, WebsocketConsumer


class EchoConsumer(WebsocketConsumer):
    def connect(self) -> None:
        self.accept()

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            self.send(text_data="echo:" + text_data)
        elif bytes_data is not None:
            self.send(bytes_data=b"echo:" + bytes_data)


class RoomConsumer(AsyncWebsocketConsumer):
    group = ""
    name = ""

    async def connect(self) -> None:
        kwargs: dict[str, Any] = self.scope["url_route"]["kwargs"]
        self.group = "room-" + kwargs["room"]
        self.name = kwargs["name"]
        assert self.channel_layer is not None
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send(text_data=f"welcome {self.name}")

    async def disconnect(self, code: int) -> None:
        print(f"channels: {self.name} left {code}", flush=True)
        if self.channel_layer is not None and self.group:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert self.channel_layer is not None
        await self.channel_layer.group_send(
            self.group, {"type": "room.message", "text": f"{self.name}: {text_data}"}
        )

    async def room_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])
