from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST, require_safe


@require_safe
def json_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"framework": "django", "pid": os.getpid(), "message": "hello"})


@csrf_exempt
@require_POST
def form_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"name": request.POST.get("name"), "colour": request.POST.get("colour")})


@csrf_exempt
@require_POST
def upload_view(request: HttpRequest) -> JsonResponse:
    upload = request.FILES["file"]
    digest = hashlib.sha256()
    size = 0
    for chunk in upload.chunks(65536):
        digest.update(chunk)
        size += len(chunk)
    return JsonResponse({"filename": upload.name, "size": size, "sha256": digest.hexdigest()})


def stream_view(request: HttpRequest) -> StreamingHttpResponse:
    count = int(request.GET.get("n", "4"))
    delay = float(request.GET.get("delay", "0.3"))

    def chunks() -> Iterator[bytes]:
        for i in range(count):
            if i:
                time.sleep(delay)
            yield f"chunk {i}\n".encode()

    async def async_chunks() -> AsyncIterator[bytes]:
        for i in range(count):
            if i:
                await asyncio.sleep(delay)
            yield f"chunk {i}\n".encode()

    # under ASGI Django streams only asynchronous iterators chunk by chunk
    content = async_chunks() if isinstance(request, ASGIRequest) else chunks()
    return StreamingHttpResponse(content, content_type="text/plain")


def events_view(request: HttpRequest) -> StreamingHttpResponse:
    """An endless server-sent-events stream; it says on stderr when it has ended."""
    ident = request.GET.get("id", "")
    delay = float(request.GET.get("delay", "0.05"))

    def events() -> Iterator[bytes]:
        i = 0
        try:
            while True:
                yield f"data: tick {i}\n\n".encode()
                i += 1
                time.sleep(delay)
        finally:
            print(f"events ended {ident}", file=sys.stderr, flush=True)

    async def async_events() -> AsyncIterator[bytes]:
        i = 0
        try:
            while True:
                yield f"data: tick {i}\n\n".encode()
                i += 1
                await asyncio.sleep(delay)
        finally:
            print(f"events ended {ident}", file=sys.stderr, flush=True)

    if isinstance(request, ASGIRequest):
        return StreamingHttpResponse(async_events(), content_type="text/event-stream")
    return _SaysWhenClosed(events(), content_type="text/event-stream", ident=ident)


class _SaysWhenClosed(StreamingHttpResponse):
    """A streaming response that says on stderr when the server calls its close()."""

    def __init__(self, *args: Any, ident: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ident = ident

    def close(self) -> None:
        super().close()
        print(f"events closed {self.ident}", file=sys.stderr, flush=True)


def boom_view(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("deliberate failure fw-boom-marker")


def query_view(request: HttpRequest) -> JsonResponse:
    args = {key: request.GET.getlist(key) for key in request.GET}
    return JsonResponse({"query_string": request.META.get("QUERY_STRING", ""), "args": args})


def headers_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {"x_echo": request.headers.get("X-Echo"), "user_agent": request.headers.get("User-Agent")}
    )


def url_view(request: HttpRequest) -> JsonResponse:
    return JsonResponse(
        {
            "json_url": reverse("json"),
            "root_path": request.META.get("SCRIPT_NAME", ""),
            "path": request.path,
        }
    )
