"""The Channels entry point (``bastion serve fw_django.asgi_channels:application``):
HTTP goes to Django's views, WebSocket to the consumers of :mod:`fw_django.consumers`."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fw_django.settings")
django_asgi = get_asgi_application()  # sets Django up before the consumers are imported

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from fw_django.consumers import EchoConsumer, RoomConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi,
        "websocket": URLRouter(
            [
                path("ws/echo", EchoConsumer.as_asgi()),
                path("ws/room/<str:room>/<str:name>", RoomConsumer.as_asgi()),
            ]
        ),
    }
)
