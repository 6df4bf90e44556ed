from __future__ import annotations

from django.urls import path

from fw_django import views

urlpatterns = [
    path("json", views.json_view, name="json"),
    path("form", views.form_view),
    path("upload", views.upload_view),
    path("stream", views.stream_view),
    path("events", views.events_view),
    path("boom", views.boom_view),
    path("query", views.query_view),
    path("headers", views.headers_view),
    path("url", views.url_view),
]
