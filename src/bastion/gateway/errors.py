"""Exceptions the gateways raise into applications.

Kept in a module of their own, which stays interpreted: compiled modules cannot define
subclasses of most built-in exception types.
"""

from __future__ import annotations


class ClientGone(OSError):
    """Raised by WSGI ``write()`` in threads mode once the client has disconnected."""
