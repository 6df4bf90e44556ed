"""API keys, in a request header or a query parameter.

Keys are configured as the SHA-256 of the key, in hex, under a name that becomes the
identity. A plain SHA-256 is right here, where a slow password hash (argon2) is right
for passwords: an API key is random and long (``bastion apikey`` makes 32 random bytes),
so nobody can guess it faster by trying candidates against a leaked hash, and a fast
hash keeps the check to a microsecond per request. The presented key is hashed and the
digest looked up; the lookup compares digests, which the client cannot steer byte by
byte, so it leaks nothing usable about a stored key.

A key in the query is removed from the query before the app sees it (so the app does
not log it or put it in links); the request's access log line is written from the
request as received and still holds it: prefer the header.
"""

from __future__ import annotations

import hashlib
from urllib.parse import unquote_to_bytes

from bastion.config.auth_schema import ApiKeyAuthConfig
from bastion.edge.auth.identity import Gate, refuse
from bastion.edge.types import FilterResult, RouteMatch
from bastion.protocol.types import Exchange

__all__ = ["ApiKeyFilter", "digest_of"]


def digest_of(key: str) -> str:
    """The hex SHA-256 of ``key``, as the configuration stores it."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class ApiKeyFilter:
    """A route's ``auth_api_key`` filter."""

    def __init__(self, cfg: ApiKeyAuthConfig) -> None:
        self.names = {bytes.fromhex(d): name for name, d in cfg.keys.items()}
        self.header = cfg.header.lower().encode("latin-1")
        self.param = cfg.query_param.encode("utf-8")
        self.gate = Gate("api_key", cfg.identity_header)
        where = f'header="{cfg.header}"' if cfg.header else f'query="{cfg.query_param}"'
        self.challenge = f"ApiKey {where}"

    def __call__(self, exchange: Exchange, match: RouteMatch) -> FilterResult:
        head = exchange.head
        key = head.header(self.header) if self.header else None
        query = None
        if self.param:
            found, rest = self._from_query(head.query_string)
            if found is not None:
                query = rest
                if key is None:
                    key = found
        if key is None:
            refuse(exchange, "api_key", "no key", challenge=self.challenge)
            return None
        name = self.names.get(hashlib.sha256(key.strip()).digest())
        if name is None:
            refuse(exchange, "api_key", "unknown key", challenge=self.challenge)
            return None
        return self.gate.admit(exchange, name, {"key": name}, query_string=query)

    def _from_query(self, query: bytes) -> tuple[bytes | None, bytes]:
        """The key in ``query`` (first one) and the query without any of them."""
        if not query or query.find(self.param) < 0:
            return None, query
        found: bytes | None = None
        kept: list[bytes] = []
        for part in query.split(b"&"):
            name, _, value = part.partition(b"=")
            if unquote_to_bytes(name.replace(b"+", b" ")) == self.param:
                if found is None:
                    found = unquote_to_bytes(value.replace(b"+", b" "))
                continue
            kept.append(part)
        return found, b"&".join(kept)
