"""Settings of the test project: production-like (DEBUG off), no database."""

from __future__ import annotations

DEBUG = False
SECRET_KEY = "fw-django-test-only-not-secret"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
ROOT_URLCONF = "fw_django.urls"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
USE_TZ = True
WSGI_APPLICATION = "fw_django.wsgi.application"

# The recipe of docs/getting-started.md: tracebacks once in bastion's error log, no 4xx.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # No handler here: django.request passes its records on to the root logger, which
    # bastion writes to its error log. A handler of its own would print each twice.
    "loggers": {"django.request": {"level": "ERROR"}},
}

# Channels (fw_django.asgi_channels): one worker, so the in-memory layer reaches every
# consumer.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
