"""ASGI entry point: ``bastion serve fw_django.asgi:application``."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "fw_django.settings")

application = get_asgi_application()
