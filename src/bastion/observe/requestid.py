"""The request id: the client's ``X-Request-ID`` when it sent a usable one, else one
made here; the same id goes upstream when the request is proxied and into the access log.

A made id is a random prefix of the worker (new after each fork) and a counter: unique
without a system call per request.
"""

from __future__ import annotations

import os
from typing import Final

from bastion.protocol.head import RequestHead

MAX_LENGTH: Final = 200


class _Ids:
    """The worker's made ids: a random prefix and a counter (native fields in the
    compiled build: no module-dict lookup per request)."""

    __slots__ = ("count", "prefix")

    def __init__(self) -> None:
        self.prefix = ""
        self.count = 0
        self.renew()

    def renew(self) -> None:
        self.prefix = os.urandom(8).hex()
        self.count = 0

    def next(self) -> str:
        self.count += 1
        return self.prefix + format(self.count, "x")


_IDS: Final = _Ids()
os.register_at_fork(after_in_child=_IDS.renew)


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
    rid = _IDS.next()
    head.request_id = rid
    return rid
