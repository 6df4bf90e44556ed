from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse


def index(request: HttpRequest) -> HttpResponse:
    link = reverse("hello", args=["world"])
    return HttpResponse(f"Hello from Django! Try {link}\n", content_type="text/plain")


def hello(request: HttpRequest, name: str) -> JsonResponse:
    return JsonResponse({"hello": name, "worker_pid": os.getpid()})
