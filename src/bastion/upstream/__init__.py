"""The upstream side of the reverse proxy: servers, their connections and pools, the
HTTP/1.1 client protocol, balancers and passive health.

Nothing here knows about routes: :mod:`bastion.edge.proxy` is the route handler that
uses it. Every object lives in one worker; nothing is shared between workers.
"""
