"""Rate-limit decisions in Redis: one atomic round trip per request, shared by every
worker of every host that uses the same Redis and key prefix.

The decision is a Lua script (:data:`SCRIPT`) run with ``EVALSHA``; the script is loaded
once per worker (``SCRIPT LOAD`` at start-up, and again when Redis answers
``NOSCRIPT`` because it restarted or was flushed). It reads the clock with Redis's
``TIME``, so every worker and host decides by one clock and the hosts' own clocks never
matter; the writes it makes are replicated as effects (the default since Redis 5).

Each worker keeps one pool of connections (``max_connections``; a decision holds one
for a round trip and waits for a free one when all are busy). Every decision is bounded
by ``timeout``, connecting and waiting for a connection included: past it, the caller
gets :class:`RedisUnavailable` and applies its ``on_error`` policy. After a failure the
client does not ask Redis again for :data:`RETRY_AFTER_FAILURE` seconds (requests meanwhile
fail at once, without waiting for the timeout again), then the next request tries; a
Redis that is back is used again without anything to restart.

``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs are accepted, as redis-py reads
them (``redis://:password@host:6379/0``, ``unix:///run/redis.sock?db=0``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

__all__ = ["RETRY_AFTER_FAILURE", "SCRIPT", "RedisGcra", "RedisUnavailable", "redacted"]

#: seconds during which a client that just failed does not try Redis again
RETRY_AFTER_FAILURE = 1.0

#: GCRA over several limits at once. KEYS: one counter per limit. ARGV: for each limit
#: its emission interval and its burst (the interval in microseconds). A request passes
#: only if every limit allows it, and only then is every counter advanced, so a request
#: refused by one limit costs nothing against the others. Each counter holds the
#: "theoretical arrival time" (microseconds, Redis clock) and expires when it would no
#: longer matter. Returns {allowed (1/0), retry_after_us, then remaining and reset_us for
#: each limit}.
SCRIPT = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local tats = {}
local news = {}
local ok = 1
local retry = 0
for i = 1, n do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local stored = redis.call('GET', KEYS[i])
  local tat = now
  if stored then
    tat = tonumber(stored)
    if tat < now then tat = now end
  end
  local new = tat + interval
  local wait = new - burst * interval - now
  if wait > 0 then
    ok = 0
    if wait > retry then retry = wait end
  end
  tats[i] = tat
  news[i] = new
end
local out = {ok, retry}
for i = 1, n do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tats[i]
  if ok == 1 then
    tat = news[i]
    redis.call('SET', KEYS[i], tat, 'PX', math.ceil((tat - now) / 1000) + 1)
  end
  local remaining = math.floor((now + burst * interval - tat) / interval)
  if remaining < 0 then remaining = 0 end
  out[#out + 1] = remaining
  out[#out + 1] = tat - now
end
return out
"""

_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


class RedisUnavailable(Exception):
    """Redis did not decide in time, or could not be reached (the message says why)."""


def redacted(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class RedisGcra:
    """One worker's Redis client for rate-limit decisions (see the module)."""

    def __init__(self, url: str, *, timeout: float, max_connections: int) -> None:
        self.url = url
        self.timeout = timeout
        self.max_connections = max_connections
        self.client: Redis | None = None
        self.down_until = 0.0
        #: decisions asked of Redis; script loads (for the tests and the bench)
        self.calls = 0
        self.loads = 0

    def _connect(self) -> Redis:
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=self.max_connections,
            timeout=self.timeout,  # waiting for a free connection
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),  # a failure is answered by on_error, not retried
            health_check_interval=0,
        )
        return Redis(connection_pool=pool, auto_close_connection_pool=True)

    async def start(self) -> None:
        """Open the pool and load the script; a Redis that is down is not an error here
        (the first decisions find out, and the policy for failures applies)."""
        self.client = self._connect()
        try:
            async with asyncio.timeout(self.timeout):
                await self._load()
        except (RedisError, OSError, TimeoutError):
            pass

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            await client.aclose()

    async def _load(self) -> None:
        assert self.client is not None
        sha = await self.client.script_load(SCRIPT)
        self.loads += 1
        if sha != _SHA:  # pragma: no cover - a Redis that hashes differently
            raise RedisUnavailable(f"SCRIPT LOAD returned {sha!r}, expected {_SHA}")

    async def decide(self, keys: Sequence[str], args: Sequence[int]) -> list[int]:
        """Run the script for ``keys`` and ``args`` (interval, burst per key); raises
        :class:`RedisUnavailable` within ``timeout``."""
        now = time.monotonic()
        if now < self.down_until:
            raise RedisUnavailable("Redis failed less than a second ago")
        if self.client is None:
            self.client = self._connect()
        self.calls += 1
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    reply: Any = await self.client.evalsha(_SHA, len(keys), *keys, *args)
                except NoScriptError:
                    await self._load()
                    reply = await self.client.evalsha(_SHA, len(keys), *keys, *args)
        except TimeoutError:
            self.down_until = time.monotonic() + RETRY_AFTER_FAILURE
            raise RedisUnavailable(f"no answer within {self.timeout:g} s") from None
        except (RedisError, OSError) as exc:
            self.down_until = time.monotonic() + RETRY_AFTER_FAILURE
            raise RedisUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(reply, list) or len(reply) != 2 + 2 * len(keys):
            raise RedisUnavailable(f"unexpected reply from the script: {reply!r}")
        return [int(v) for v in reply]
