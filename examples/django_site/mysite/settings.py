"""Settings for the example site: DEBUG off, as in production, and no database."""

from __future__ import annotations

import os

DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
# set DJANGO_SECRET_KEY in a real deployment
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-change-me")
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]
ROOT_URLCONF = "mysite.urls"
WSGI_APPLICATION = "mysite.wsgi.application"
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
]
USE_TZ = True

# Unhandled exceptions go to bastion's error log (once); 4xx warnings are left out.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # No handler here: django.request passes its records on to the root logger, which
    # bastion writes to its error log. A handler of its own would print each twice.
    "loggers": {"django.request": {"level": "ERROR"}},
}
