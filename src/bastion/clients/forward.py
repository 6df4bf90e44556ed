"""The sub-request of forward authentication: one pooled async HTTP client per route."""

from __future__ import annotations

import httpx

__all__ = ["ForwardAnswer", "ForwardClient", "ForwardTimeout", "ForwardUnreachable"]


class ForwardTimeout(Exception):
    """The auth service did not answer in time."""


class ForwardUnreachable(Exception):
    """The auth service could not be reached, or its answer could not be read."""


class ForwardAnswer:
    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        #: lower-case names, raw values
        self.headers = headers
        self.body = body


class ForwardClient:
    def __init__(self, url: str, method: str, timeout: float, max_connections: int) -> None:
        self.url = url
        self.method = method
        self.timeout = timeout
        self.max_connections = max_connections
        self.client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self.client = httpx.AsyncClient(
            timeout=self.timeout,
            limits=httpx.Limits(
                max_connections=self.max_connections,
                max_keepalive_connections=self.max_connections,
            ),
            follow_redirects=False,
            trust_env=False,
        )

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None

    async def ask(self, headers: list[tuple[bytes, bytes]]) -> ForwardAnswer:
        if self.client is None:
            await self.start()
        assert self.client is not None
        try:
            response = await self.client.request(self.method, self.url, headers=headers)
        except httpx.TimeoutException as exc:
            raise ForwardTimeout(str(exc) or type(exc).__name__) from exc
        except httpx.HTTPError as exc:
            raise ForwardUnreachable(f"{type(exc).__name__}: {exc}") from exc
        return ForwardAnswer(
            response.status_code,
            [(k.lower(), v) for k, v in response.headers.raw],
            response.content,
        )
