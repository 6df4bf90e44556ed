"""Rate limiting: a route's ``[[routes.rate_limit]]`` tables, as one request filter.

Each limit is a GCRA (generic cell rate algorithm, the "virtual scheduling" form of
ITU-T I.371): a rate of ``count`` requests per ``period`` gives an emission interval
``T = period / count``; a key's state is one number, its theoretical arrival time
``tat``. A request at ``now`` is allowed if ``max(tat, now) + T - burst * T <= now``,
and then ``tat`` becomes ``max(tat, now) + T``. A client with a clean slate may send
``burst`` requests at once, then one every ``T``; unlike a fixed window there is no
boundary at which twice the rate gets through, and unlike a sliding log it keeps one
number per key.

A route may have several limits; a request passes only if every one allows it, and only
then does it count against them. The counters live in the worker
(``[rate_limit] backend = "local"``: exact within one worker, so N workers allow N
times the rate) or in Redis (``"redis"``: one count for every worker of every host,
:mod:`bastion.clients.redis_gcra`). Refused requests get ``429 Too Many Requests`` with
``Retry-After`` and the ``RateLimit-Policy`` / ``RateLimit`` fields of
draft-ietf-httpapi-ratelimit-headers (docs/rate-limiting.md).

The key of a request is its client address (the real one behind trusted proxies), a
header's value, the authenticated user (``head.user``) or the API key's name (from
``head.context["bastion.auth"]``). A request that has no such key (no header, not
authenticated) is counted by its address instead, under a key of its own kind, so
anonymous clients never share a count with a header value or a user.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import time
from collections.abc import Iterable, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Final, NamedTuple

from bastion.config.ratelimit_schema import RateLimitConfig, RouteRateLimitConfig
from bastion.config.schema import Config, RouteConfig
from bastion.edge.types import FilterResult, RouteMatch
from bastion.edge.wrap import ExchangeWrapper
from bastion.observe.logging import logger
from bastion.protocol.client_group import client_group
from bastion.protocol.head import RequestHead
from bastion.protocol.types import Exchange
from bastion.tasks import WorkerTasks

if TYPE_CHECKING:
    from bastion.clients.redis_gcra import RedisGcra

__all__ = [
    "LocalGcra",
    "Rate",
    "RateError",
    "RateLimitFilter",
    "parse_rate",
    "rate_limit_before_auth",
    "rate_limit_filter",
]

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE_RE = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]*)\s*([smhd])\s*")
RATE_FORM = '"COUNT/PERIOD" like "100/s", "600/m", "5000/h", "20/10s" (s, m, h or d)'
_MAX_KEY = 64  # longer key values are hashed


class RateError(ValueError):
    """A rate that does not parse."""


class Rate(NamedTuple):
    requests: int
    period: int  # seconds

    @property
    def interval(self) -> float:
        """Seconds between requests at the steady rate (GCRA's T)."""
        return self.period / self.requests


def parse_rate(text: str) -> Rate:
    m = _RATE_RE.fullmatch(text)
    if m is None:
        raise RateError(f"expected {RATE_FORM}, got {text!r}")
    count = int(m.group(1))
    period = int(m.group(2) or 1) * _PERIODS[m.group(3)]
    if count < 1 or period < 1:
        raise RateError(f"expected a count and a period of at least 1, got {text!r}")
    if period * 1_000_000 // count < 1:
        raise RateError(f"more than one request a microsecond: {text!r}")
    return Rate(count, period)


def _sf_string(text: str) -> str:
    """``text`` as a Structured Field string (RFC 8941 3.3.3)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Limit:
    """One limit of a route, ready to use: its rate, burst, key and counter name."""

    __slots__ = (
        "burst",
        "burst_us",
        "header",
        "interval_us",
        "ipv6_prefix",
        "kind",
        "name",
        "policy",
        "scope",
    )

    def __init__(self, cfg: RouteRateLimitConfig, scope: str, ipv6_prefix: int = 64) -> None:
        rate = parse_rate(cfg.rate)
        self.burst = cfg.burst or rate.requests
        self.interval_us = max(1, round(rate.interval * 1_000_000))
        self.burst_us = self.burst * self.interval_us
        self.kind = cfg.key
        self.header = cfg.header.lower().encode("latin-1")
        self.name = cfg.name or scope
        #: where its counters live: its name if given (shared), else route and position
        self.scope = cfg.name or scope
        #: its item of RateLimit-Policy
        self.policy = f"{_sf_string(self.name)};q={rate.requests};w={rate.period}"
        #: an IPv6 client counts by its prefix of this many bits (limits.client_ipv6_prefix)
        self.ipv6_prefix = ipv6_prefix

    def key(self, head: RequestHead) -> str:
        """The counter of ``head``'s client for this limit."""
        value: str | None = None
        if self.kind == "header":
            raw = head.header(self.header)
            if raw is not None:
                value = "h:" + raw.decode("latin-1").strip()
        elif self.kind == "user":
            if head.user is not None:
                value = "u:" + head.user
        elif self.kind == "api_key":
            info = head.context.get("bastion.auth") if head.context else None
            if isinstance(info, dict) and info.get("method") == "api_key":
                name = info.get("key")
                if isinstance(name, str):
                    value = "k:" + name
        if value is None:
            client = head.client
            value = "a:" + (
                client_group(client[0], self.ipv6_prefix) if client is not None else "unix"
            )
        if len(value) > _MAX_KEY:
            value = value[:2] + hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()
        return f"{self.scope}|{value}"


class LocalGcra:
    """The counters of one worker (``backend = "local"``): exact within the worker."""

    __slots__ = ("decisions", "tats")

    #: above this many keys, those whose state no longer matters are swept
    SWEEP_ABOVE = 10_000

    def __init__(self) -> None:
        self.tats: dict[str, int] = {}
        self.decisions = 0

    def decide(self, keys: Sequence[str], limits: Sequence[Limit]) -> list[int]:
        """The same answer as the Redis script: ``[allowed, retry_after_us, then
        remaining and reset_us per limit]``, by this process's monotonic clock."""
        now = time.monotonic_ns() // 1000
        tats = self.tats
        olds: list[int] = []
        ok = 1
        retry = 0
        for key, limit in zip(keys, limits, strict=True):
            tat = tats.get(key, now)
            if tat < now:
                tat = now
            olds.append(tat)
            wait = tat + limit.interval_us - limit.burst_us - now
            if wait > 0:
                ok = 0
                retry = max(retry, wait)
        out = [ok, retry]
        for key, limit, tat in zip(keys, limits, olds, strict=True):
            if ok:
                tat += limit.interval_us
                tats[key] = tat
            out.append(max(0, (now + limit.burst_us - tat) // limit.interval_us))
            out.append(tat - now)
        self.decisions += 1
        if self.decisions & 1023 == 0 and len(tats) > self.SWEEP_ABOVE:
            for key in [k for k, tat in tats.items() if tat <= now]:
                del tats[key]
        return out


class _Backend:
    """What the routes of one worker share: the local counters or the Redis client."""

    def __init__(self, cfg: RateLimitConfig, tasks: WorkerTasks | None = None) -> None:
        self.cfg = cfg
        self.local = LocalGcra() if cfg.backend == "local" else None
        self.redis: RedisGcra | None = None
        if cfg.backend == "redis":
            from bastion.clients.redis_gcra import RedisGcra

            self.redis = RedisGcra(
                cfg.redis_url,
                timeout=cfg.timeout,
                max_connections=cfg.max_connections,
                tasks=tasks,
            )
        self.users = 0
        self.failing = False
        self.last_logged = -math.inf
        self.failures = 0

    async def start(self) -> None:
        self.users += 1
        if self.users == 1 and self.redis is not None:
            await self.redis.start()

    async def stop(self) -> None:
        self.users -= 1
        if self.users == 0 and self.redis is not None:
            await self.redis.close()

    def failed(self, why: str) -> None:
        """Log a Redis failure, at most once per ``log_interval``."""
        from bastion.clients.redis_gcra import redacted

        self.failures += 1
        self.failing = True
        now = time.monotonic()
        if now - self.last_logged < self.cfg.log_interval:
            return
        self.last_logged = now
        policy = (
            "allowing requests (on_error = allow)"
            if self.cfg.on_error == "allow"
            else f"refusing requests with {self.cfg.error_status} (on_error = deny)"
        )
        logger.error(
            "rate limit: Redis at %s failed (%s); %s; %d failure(s) since the last message",
            redacted(self.cfg.redis_url),
            why,
            policy,
            self.failures,
        )
        self.failures = 0

    def recovered(self) -> None:
        from bastion.clients.redis_gcra import redacted

        self.failing = False
        logger.warning("rate limit: Redis at %s answers again", redacted(self.cfg.redis_url))


# one backend per worker, shared by its routes: (the worker's tasks, the backend)
_BACKENDS: dict[int, tuple[WorkerTasks, _Backend]] = {}


def _backend(cfg: RateLimitConfig, tasks: WorkerTasks) -> _Backend:
    known = _BACKENDS.get(id(tasks))
    if known is None or known[0] is not tasks or known[1].cfg != cfg:
        known = (tasks, _Backend(cfg, tasks))
        _BACKENDS[id(tasks)] = known
    return known[1]


class _WithHeaders(ExchangeWrapper):
    """An allowed request whose response carries the RateLimit fields."""

    __slots__ = ("extra",)

    def __init__(self, inner: Exchange, extra: list[tuple[bytes, bytes]]) -> None:
        super().__init__(inner)
        self.extra = extra

    def start_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        headers.extend(self.extra)
        self._inner.start_response(status, headers)


_BODY = b"Too Many Requests\n"
_PHRASES = {s.value: s.phrase for s in HTTPStatus}


class RateLimitFilter:
    """A :data:`~bastion.edge.types.RequestFilter`: a route's limits (see the module).

    With the local backend it decides synchronously; with Redis it returns a future that
    the next batch of decisions settles (the pipeline resumes the route from it)."""

    __slots__ = (
        "always",
        "args",
        "backend",
        "by_address",
        "deny_on_error",
        "error_status",
        "limits",
        "policy",
        "prefix",
    )

    #: at most this many client addresses' Redis keys are kept ready (then forgotten)
    KEYS_KEPT = 4096

    def __init__(self, limits: Sequence[Limit], backend: _Backend) -> None:
        self.limits = tuple(limits)
        self.backend = backend
        cfg = backend.cfg
        self.always = cfg.headers == "always"
        self.deny_on_error = cfg.on_error == "deny"
        self.error_status = cfg.error_status
        self.policy = ", ".join(limit.policy for limit in self.limits).encode("latin-1")
        self.prefix = cfg.key_prefix
        #: the script's arguments for this route's decisions: interval and burst per limit
        self.args = tuple(v for lim in self.limits for v in (lim.interval_us, lim.burst))
        #: when every limit is keyed by the client address: each address's Redis keys,
        #: encoded once (the address is the whole key; a busy client asks many times)
        self.by_address: dict[str, tuple[bytes, ...]] | None = (
            {} if all(lim.kind == "address" for lim in self.limits) else None
        )

    async def startup(self) -> None:
        await self.backend.start()

    async def shutdown(self) -> None:
        await self.backend.stop()

    def __call__(self, exchange: Exchange, match: RouteMatch) -> FilterResult:
        head = exchange.head
        local = self.backend.local
        if local is not None:
            keys = [limit.key(head) for limit in self.limits]
            return self._apply(exchange, local.decide(keys, self.limits))
        return self._ask_redis(exchange, head)

    def _ask_redis(self, exchange: Exchange, head: RequestHead) -> FilterResult:
        """Submit the decision to the next batch and return a future of the filter's
        result, which the pipeline resumes from (no task, no coroutine); the batch
        answers within the timeout, so the future is always done in time."""
        redis = self.backend.redis
        assert redis is not None
        keys = self._keys(head)
        fut: asyncio.Future[Exchange | None] = asyncio.get_running_loop().create_future()

        def done(answer: list[int] | Exception) -> None:
            if fut.done():  # pragma: no cover - nothing else settles it
                return
            try:
                if exchange.disconnected:
                    fut.set_result(exchange)  # the pipeline ends it as a client that left
                elif isinstance(answer, Exception):  # RedisUnavailable
                    fut.set_result(self._unavailable(exchange, answer))
                else:
                    if self.backend.failing:
                        self.backend.recovered()
                    fut.set_result(self._apply(exchange, answer))
            except Exception as exc:  # the exchange fails (500): never left waiting
                if not fut.done():
                    fut.set_exception(exc)

        if not redis.submit(keys, self.args, done):
            return self._unavailable(exchange, redis.down_error)
        return fut

    def _keys(self, head: RequestHead) -> Sequence[bytes]:
        """The Redis keys of ``head``'s client, one per limit."""
        known = self.by_address
        if known is not None:
            client = head.client
            address = client[0] if client is not None else "unix"
            keys = known.get(address)
            if keys is None:
                if len(known) >= self.KEYS_KEPT:
                    known.clear()
                keys = known[address] = self._encode(head)
            return keys
        return self._encode(head)

    def _encode(self, head: RequestHead) -> tuple[bytes, ...]:
        prefix = self.prefix
        return tuple((prefix + lim.key(head)).encode("utf-8", "replace") for lim in self.limits)

    def _unavailable(self, exchange: Exchange, exc: Exception) -> Exchange | None:
        self.backend.failed(str(exc))
        if self.deny_on_error:
            self._refuse(exchange, self.error_status, [], 1)
            return None
        return exchange

    def _fields(self, answer: list[int]) -> list[tuple[bytes, bytes]]:
        items = []
        for i, limit in enumerate(self.limits):
            remaining = answer[2 + 2 * i]
            reset = -(-answer[3 + 2 * i] // 1_000_000)  # whole seconds, rounded up
            items.append(f"{_sf_string(limit.name)};r={remaining};t={reset}")
        return [(b"ratelimit-policy", self.policy), (b"ratelimit", ", ".join(items).encode())]

    def _apply(self, exchange: Exchange, answer: list[int]) -> Exchange | None:
        if answer[0]:
            if self.always:
                return _WithHeaders(exchange, self._fields(answer))
            return exchange
        retry = max(1, -(-answer[1] // 1_000_000))
        self._refuse(exchange, 429, self._fields(answer), retry)
        return None

    def _refuse(
        self,
        exchange: Exchange,
        status: int,
        fields: Iterable[tuple[bytes, bytes]],
        retry_after: int,
    ) -> None:
        body = _BODY if status == 429 else f"{_PHRASES.get(status, 'Error')}\n".encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"retry-after", str(retry_after).encode("ascii")),
            *fields,
        ]
        exchange.start_response(status, headers)
        exchange.finish(b"" if exchange.head.method == "HEAD" else body)


def route_scope(route: RouteConfig, index: int) -> str:
    """The default counter name of a route's ``index``-th limit: its host, path and
    position, the same on every host that has the same route."""
    return f"{route.host}{route.path}#{index}"


#: limits whose key is known before authentication: they run before it, so that the
#: requests it refuses count too (password guessing is limited, as nginx's limit_req
#: runs before auth_basic)
BEFORE_AUTH: Final = ("address", "header")


def _route_limits(
    config: Config, route: RouteConfig | None, tasks: WorkerTasks, before_auth: bool
) -> RateLimitFilter | None:
    if route is None or not route.rate_limit:
        return None
    limits = [
        Limit(cfg, route_scope(route, i), config.limits.client_ipv6_prefix)
        for i, cfg in enumerate(route.rate_limit)
        if (cfg.key in BEFORE_AUTH) == before_auth
    ]
    if not limits:
        return None
    return RateLimitFilter(limits, _backend(config.rate_limit, tasks))


def rate_limit_before_auth(
    config: Config, route: RouteConfig | None, tasks: WorkerTasks
) -> RateLimitFilter | None:
    """The route's limits keyed by client address or a header, as one filter that runs
    before authentication; None when it has none."""
    return _route_limits(config, route, tasks, before_auth=True)


def rate_limit_filter(
    config: Config, route: RouteConfig | None, tasks: WorkerTasks
) -> RateLimitFilter | None:
    """The route's limits keyed by the authenticated user or API key, as one filter that
    runs after authentication; None when it has none."""
    return _route_limits(config, route, tasks, before_auth=False)
