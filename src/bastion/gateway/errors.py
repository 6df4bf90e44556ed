"""Exceptions the gateways raise into applications.

Kept in a module of their own, which stays interpreted: compiled modules cannot define
subclasses of most built-in exception types.
"""

from __future__ import annotations


class ClientGone(OSError):
    """The client has disconnected: raised by an ASGI app's ``send()`` (ASGI 2.4 asks for
    an ``OSError``) and by the WSGI ``write()`` callable."""
