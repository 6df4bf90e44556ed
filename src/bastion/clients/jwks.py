"""Fetching a JSON Web Key Set over HTTP(S), asynchronously.

:class:`JwksFetcher` keeps one connection pool; :meth:`JwksFetcher.fetch` returns the
parsed document or raises :class:`JwksFetchError` (the caller keeps its old keys).
"""

from __future__ import annotations

import json
from typing import Any

import httpx

__all__ = ["JwksFetchError", "JwksFetcher"]

_MAX_SIZE = 1024 * 1024  # a key set is a few KiB; refuse anything absurd


class JwksFetchError(Exception):
    """The key set could not be fetched or read (the message says why)."""


class JwksFetcher:
    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self.client = httpx.AsyncClient(
            timeout=self.timeout,
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=1),
            follow_redirects=False,
            trust_env=False,
        )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def fetch(self) -> dict[str, Any]:
        if self.client is None:
            await self.start()
        assert self.client is not None
        try:
            response = await self.client.get(self.url, headers={"accept": "application/json"})
        except httpx.HTTPError as exc:
            raise JwksFetchError(f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            raise JwksFetchError(f"status {response.status_code}")
        if len(response.content) > _MAX_SIZE:
            raise JwksFetchError("larger than 1 MiB")
        try:
            doc = json.loads(response.content)
        except ValueError as exc:
            raise JwksFetchError(f"not JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise JwksFetchError('not a key set (no "keys" list)')
        return doc
