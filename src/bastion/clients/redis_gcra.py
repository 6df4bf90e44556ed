"""Rate-limit decisions in Redis: one atomic round trip per request, shared by every
worker of every host that uses the same Redis and key prefix.

The decision is a Lua script (:data:`SCRIPT`) run with ``EVALSHA``; the script is loaded
once per worker (``SCRIPT LOAD`` at start-up, and again when Redis answers
``NOSCRIPT`` because it restarted or was flushed). It reads the clock with Redis's
``TIME``, so every worker and host decides by one clock and the hosts' own clocks never
matter; the writes it makes are replicated as effects (the default since Redis 5).

Each worker keeps one pool of connections (``max_connections``). The decisions asked
during one turn of the event loop go to Redis together, in one ``EVALSHA`` of the
script, which takes them in order: one command, one round trip and one pool checkout
for all of them instead of one each (under load, most decisions share a batch; alone, a
decision waits for nothing). Redis runs a script atomically, so a batch is as exact as
single decisions. Every decision is bounded
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

#: GCRA over several limits at once, for a batch of decisions. ARGV[1] is the number of
#: decisions; then, for each, its number of limits n and, for each limit, its emission
#: interval and its burst (the interval in microseconds); KEYS holds one counter per
#: limit, decision after decision. A decision passes only if every one of its limits
#: allows it, and only then are its counters advanced, so a request refused by one limit
#: costs nothing against the others. Decisions are taken in order, so two in one batch
#: for the same counter see each other. Each counter holds the "theoretical arrival time"
#: (microseconds, Redis clock) and expires when it would no longer matter. Returns, for
#: each decision: allowed (1/0), retry_after_us, then remaining and reset_us per limit.
SCRIPT = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
local k = 0
local a = 2
for r = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[a])
  a = a + 1
  local tats = {}
  local news = {}
  local ok = 1
  local retry = 0
  for i = 1, n do
    local interval = tonumber(ARGV[a + 2 * i - 2])
    local burst = tonumber(ARGV[a + 2 * i - 1])
    local stored = redis.call('GET', KEYS[k + i])
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
  out[#out + 1] = ok
  out[#out + 1] = retry
  for i = 1, n do
    local interval = tonumber(ARGV[a + 2 * i - 2])
    local burst = tonumber(ARGV[a + 2 * i - 1])
    local tat = tats[i]
    if ok == 1 then
      tat = news[i]
      redis.call('SET', KEYS[k + i], tat, 'PX', math.ceil((tat - now) / 1000) + 1)
    end
    local remaining = math.floor((now + burst * interval - tat) / interval)
    if remaining < 0 then remaining = 0 end
    out[#out + 1] = remaining
    out[#out + 1] = tat - now
  end
  k = k + n
  a = a + 2 * n
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
        # decisions waiting for the next batch: (keys, args, future of the reply)
        self._batch: list[tuple[Sequence[str], Sequence[int], asyncio.Future[Any]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
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
        """Run the script for ``keys`` and ``args`` (interval, burst per key), in the
        next batch; raises :class:`RedisUnavailable` within ``timeout``."""
        now = time.monotonic()
        if now < self.down_until:
            raise RedisUnavailable("Redis failed less than a second ago")
        self.calls += 1
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        batch = self._batch
        batch.append((keys, args, fut))
        if len(batch) == 1:
            loop.call_soon(self._send_batch)  # after the other requests of this turn
        reply: Any = await fut  # within the timeout: the batch's call is bounded
        if isinstance(reply, TimeoutError):
            self.down_until = time.monotonic() + RETRY_AFTER_FAILURE
            raise RedisUnavailable(f"no answer within {self.timeout:g} s")
        if isinstance(reply, BaseException):
            self.down_until = time.monotonic() + RETRY_AFTER_FAILURE
            raise RedisUnavailable(f"{type(reply).__name__}: {reply}") from reply
        if not isinstance(reply, list) or len(reply) != 2 + 2 * len(keys):
            raise RedisUnavailable(f"unexpected reply from the script: {reply!r}")
        return [int(v) for v in reply]

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        if not batch:
            return
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_batch(
        self, batch: list[tuple[Sequence[str], Sequence[int], asyncio.Future[Any]]]
    ) -> None:
        """One script call for the whole batch; each future gets its part of the reply,
        or the error (the waiting decisions turn it into :class:`RedisUnavailable`)."""
        if self.client is None:
            self.client = self._connect()
        keys: list[str] = []
        args: list[int] = [len(batch)]
        for k, a, _ in batch:
            keys.extend(k)
            args.append(len(k))
            args.extend(a)
        replies: list[Any]
        try:
            # one timer for the whole batch bounds every decision in it
            async with asyncio.timeout(self.timeout):
                try:
                    reply: Any = await self.client.evalsha(_SHA, len(keys), *keys, *args)
                except NoScriptError:
                    await self._load()  # Redis restarted or was flushed: load, then again
                    reply = await self.client.evalsha(_SHA, len(keys), *keys, *args)
            replies = _split(reply, batch)
        except (RedisError, OSError, TimeoutError) as exc:
            replies = [exc] * len(batch)
        except asyncio.CancelledError:
            for _, _, fut in batch:
                if not fut.done():
                    fut.cancel()
            raise
        for (_, _, fut), part in zip(batch, replies, strict=True):
            if not fut.done():  # (a decision that timed out has stopped waiting)
                fut.set_result(part)


def _split(
    reply: Any, batch: list[tuple[Sequence[str], Sequence[int], asyncio.Future[Any]]]
) -> list[Any]:
    """The script's flat reply cut into each decision's part (a wrong shape is left for
    the decision to report)."""
    if not isinstance(reply, list):
        return [reply] * len(batch)
    out: list[Any] = []
    pos = 0
    for keys, _, _ in batch:
        size = 2 + 2 * len(keys)
        out.append(reply[pos : pos + size])
        pos += size
    return out
