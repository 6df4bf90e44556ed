"""A small Django project for the framework end-to-end tests.

Served as ``fw_django.wsgi:application`` (or ``fw_django.asgi:application``); it needs no
database. Same routes and JSON shapes as the other ``fw_*`` apps.
"""
