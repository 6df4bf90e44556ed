"""The request id: the client's ``X-Request-ID`` when it sent a usable one, else one
made here; the same id goes upstream when the request is proxied and into the access log.

A made id is a random prefix of the worker (new after each fork) and a counter: unique
without a system call per request.
"""

from __future__ import annotations

import os

from bastion.protocol.head import RequestHead

MAX_LENGTH = 200

_prefix = os.urandom(8).hex()
_count = 0


def _new_prefix() -> None:
    global _prefix, _count
    _prefix = os.urandom(8).hex()
    _count = 0


os.register_at_fork(after_in_child=_new_prefix)


def request_id(head: RequestHead) -> str:
    """The id of the request of ``head``: given once, the same whenever asked again."""
    rid = head.request_id
    if rid:
        return rid
    value = head.header(b"x-request-id")
    if value is not None and 0 < len(value) <= MAX_LENGTH and value.isascii():
        text = value.decode("ascii")
        if text.isprintable():
            head.request_id = text
            return text
    global _count
    _count += 1
    rid = f"{_prefix}{_count:x}"
    head.request_id = rid
    return rid
