"""Outgoing connections the edge needs (a JWKS document, a forward-auth sub-request).

The edge itself opens no socket: its filters ask these clients, which own their
connection pools (httpx, from the ``auth`` extra) and are started and stopped with the
filter that uses them.
"""
