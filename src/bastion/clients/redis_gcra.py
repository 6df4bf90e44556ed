"""Rate-limit decisions in Redis: one atomic round trip per request, shared by every
worker of every host that uses the same Redis and key prefix.

The decision is a Lua script (:data:`SCRIPT`) run with ``EVALSHA``; the script is loaded
once per worker (``SCRIPT LOAD`` at start-up, and again when Redis answers
``NOSCRIPT`` because it restarted or was flushed). It reads the clock with Redis's
``TIME``, so every worker and host decides by one clock and the hosts' own clocks never
matter; the writes it makes are replicated as effects (the default since Redis 5).

Each worker keeps up to ``max_connections`` connections, made by redis-py (the URL, TLS,
unix sockets, authentication, the handshake, reconnecting after a failure). The
decisions asked during one turn of the event loop go to Redis together, in one
``EVALSHA`` of the script, which takes them in order: one command, one round trip for
all of them instead of one each (under load, most decisions share a batch; alone, a
decision waits for nothing). At most :data:`MAX_IN_FLIGHT` batches are sent and not yet
answered: the decisions asked meanwhile gather (over several turns of the loop) and go
together as soon as one is answered, so under load the batches are fewer and larger, and
a decision waits at most for one round trip before it is sent. Redis runs a script
atomically, so a batch is as exact as single decisions. A decision costs the caller no
task and no coroutine: it is a callback in the next batch (:meth:`RedisGcra.submit`);
the batch's command, a fixed shape, is written as RESP here (each route's arguments
encoded once) and its reply read by redis-py's parser (hiredis). Every decision is
bounded by ``timeout``, connecting and waiting for a connection included: past it, the
caller gets :class:`RedisUnavailable` and applies its ``on_error`` policy (a batch's
deadline is ``timeout`` from when its first decision was asked, its wait to be sent
included). After a failure the client does not ask Redis again for
:data:`RETRY_AFTER_FAILURE` seconds (requests meanwhile fail at once, without waiting
for the timeout again), then the next request tries; a Redis that is back is used again
without anything to restart.

``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs are accepted, as redis-py reads
them (``redis://:password@host:6379/0``, ``unix:///run/redis.sock?db=0``).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio.connection import Connection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError, ResponseError

from bastion.observe.logging import logger
from bastion.tasks import EAGER_TASKS, WorkerTasks

__all__ = [
    "MAX_BATCH_KEYS",
    "MAX_IN_FLIGHT",
    "RETRY_AFTER_FAILURE",
    "SCRIPT",
    "RedisGcra",
    "RedisUnavailable",
    "redacted",
]

#: seconds during which a client that just failed does not try Redis again
RETRY_AFTER_FAILURE = 1.0

#: script calls a worker has sent and Redis not yet answered, at most: the decisions asked
#: meanwhile gather and go in one call as soon as one is answered (under load, fewer and
#: larger batches; a decision asked while no call is waiting goes at once)
MAX_IN_FLIGHT = 2

#: at most this many counters in one script call (MGET passes them all through Lua's
#: stack, which holds 8,000 values); a larger batch is sent as several calls
MAX_BATCH_KEYS = 2000

#: GCRA over several limits at once, for a batch of decisions. ARGV[1] is the number of
#: decisions and ARGV[2] the number of profiles (the distinct sets of limits in the
#: batch: one per route); then each profile: its number of limits n and, for each limit,
#: its emission interval (microseconds) and its burst; then, for each decision, the index
#: of its profile. KEYS holds one counter per limit, decision after decision. A decision
#: passes only if every one of its limits allows it, and only then are its counters
#: advanced, so a request refused by one limit costs nothing against the others. Every
#: counter of the batch is read with one MGET; decisions are taken in order, and two in
#: one batch for the same counter see each other (``tats``); each counter the batch
#: changed is written once at the end, however many of its decisions counted against it.
#: A counter holds the "theoretical arrival time" (microseconds, Redis clock) and
#: expires when it would no longer matter. Returns, for each decision: allowed (1/0),
#: retry_after_us, then remaining and reset_us per limit.
SCRIPT = """
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local stored = redis.call('MGET', unpack(KEYS))
local a = 3
local counts, intervals, bursts = {}, {}, {}
for p = 1, tonumber(ARGV[2]) do
  local n = tonumber(ARGV[a])
  a = a + 1
  local iv, bu = {}, {}
  for i = 1, n do
    local interval = tonumber(ARGV[a])
    iv[i] = interval
    bu[i] = tonumber(ARGV[a + 1]) * interval
    a = a + 2
  end
  counts[p], intervals[p], bursts[p] = n, iv, bu
end
local tats, changed, cur, out = {}, {}, {}, {}
local o, k = 0, 0
for r = 1, tonumber(ARGV[1]) do
  local p = tonumber(ARGV[a])
  a = a + 1
  local n, iv, bu = counts[p], intervals[p], bursts[p]
  local ok, retry = 1, 0
  for i = 1, n do
    local key = KEYS[k + i]
    local tat = tats[key]
    if tat == nil then
      tat = tonumber(stored[k + i]) or now
      if tat < now then tat = now end
      tats[key] = tat
    end
    cur[i] = tat
    local wait = tat + iv[i] - bu[i] - now
    if wait > 0 then
      ok = 0
      if wait > retry then retry = wait end
    end
  end
  out[o + 1] = ok
  out[o + 2] = retry
  o = o + 2
  for i = 1, n do
    local tat = cur[i]
    if ok == 1 then
      tat = tat + iv[i]
      local key = KEYS[k + i]
      tats[key] = tat
      changed[key] = true
    end
    local remaining = math.floor((now + bu[i] - tat) / iv[i])
    if remaining < 0 then remaining = 0 end
    out[o + 1] = remaining
    out[o + 2] = tat - now
    o = o + 2
  end
  k = k + n
end
for key in pairs(changed) do
  local tat = tats[key]
  redis.call('SET', key, string.format('%d', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
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


#: what a decision's callback gets: the script's answer for it, or why there is none
Answer = list[int] | RedisUnavailable
Done = Callable[[Answer], None]
_Entry = tuple[Sequence[bytes], tuple[int, ...], Done]


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


_EVALSHA = _bulk(b"EVALSHA") + _bulk(_SHA.encode("ascii"))
#: a profile's index in the script's arguments, for the first few
_INDEX = [_bulk(b"%d" % i) for i in range(64)]


class RedisGcra:
    """One worker's Redis client for rate-limit decisions (see the module).

    redis-py makes the connections (URL, TLS, unix sockets, authentication, the
    handshake, reconnecting); this client keeps up to ``max_connections`` of them,
    writes the one command it sends (``EVALSHA`` of a batch, a fixed shape) as bytes
    itself and reads the reply with redis-py's parser."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_connections: int,
        tasks: WorkerTasks | None = None,
        max_in_flight: int = MAX_IN_FLIGHT,
    ) -> None:
        self.url = url
        #: where the batches run: the worker's tasks, so that a worker that stops waits
        #: for the decisions its requests are waiting for (else tasks of its own)
        self.worker_tasks = tasks
        self.timeout = timeout
        self.max_connections = max(1, max_connections)
        #: batches sent at once; the decisions asked meanwhile wait for one to be
        #: answered and go together in the next
        self.max_in_flight = max(1, max_in_flight)
        self.down_until = 0.0
        #: what a decision asked while Redis is known to be down gets
        self.down_error = RedisUnavailable("Redis failed less than a second ago")
        self._factory: ConnectionPool | None = None
        self._all: list[Connection] = []
        self._idle: list[Connection] = []
        self._waiting: deque[asyncio.Future[Connection]] = deque()
        # decisions waiting for the next batch: (keys, args, callback)
        self._batch: list[_Entry] = []
        # when the first decision of ``_batch`` was asked (the loop's clock): its deadline
        # is that plus ``timeout``, however long it waited for the batch before it
        self._since = 0.0
        # batches sent and not answered yet (at most ``max_in_flight``)
        self._in_flight = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # each route's arguments as RESP (their count, their bytes), encoded once
        self._encoded_args: dict[tuple[int, ...], tuple[int, bytes]] = {}
        #: decisions asked of Redis; batches sent; script loads (for the tests and the bench)
        self.calls = 0
        self.batches = 0
        self.loads = 0

    def _pool(self) -> ConnectionPool:
        if self._factory is None:
            self._factory = ConnectionPool.from_url(
                self.url,
                # every exchange with Redis is bounded by one timer per batch (the
                # ``timeout``), so the connections need none of their own per read
                socket_timeout=None,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),  # a failure is answered by on_error
                health_check_interval=0,
            )
        return self._factory

    async def _acquire(self) -> Connection:
        if self._idle:
            return self._idle.pop()
        if len(self._all) < self.max_connections:
            conn: Connection = self._pool().make_connection()  # type: ignore[no-untyped-call]
            self._all.append(conn)
            return conn
        waiter: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release(waiter.result())  # handed over as the wait ended
            raise

    def _release(self, conn: Connection) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self._idle.append(conn)

    async def _command(self, packed: bytes) -> Any:
        """Send one packed command on a free connection and read its reply; a
        connection that failed or was interrupted is closed (and reconnects when next
        used)."""
        conn = await self._acquire()
        try:
            await conn.send_packed_command(packed, check_health=False)
            return await conn.read_response()
        except BaseException as exc:
            if not isinstance(exc, ResponseError):  # an error reply leaves it usable
                await conn.disconnect(nowait=True)
            raise
        finally:
            self._release(conn)

    async def start(self) -> None:
        """Connect and load the script; a Redis that is down is not an error here
        (the first decisions find out, and the policy for failures applies)."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._load()
        except (RedisError, OSError, TimeoutError):
            pass

    async def close(self) -> None:
        conns, self._all, self._idle = self._all, [], []
        for conn in conns:
            try:
                await conn.disconnect(nowait=True)
            except (RedisError, OSError):  # pragma: no cover - closing anyway
                pass
        factory, self._factory = self._factory, None
        if factory is not None:
            await factory.aclose()

    async def _load(self) -> None:
        packed = b"*3\r\n" + _bulk(b"SCRIPT") + _bulk(b"LOAD") + _bulk(SCRIPT.encode())
        sha = await self._command(packed)
        self.loads += 1
        if isinstance(sha, bytes):
            sha = sha.decode("ascii", "replace")
        if sha != _SHA:  # pragma: no cover - a Redis that hashes differently
            raise RedisUnavailable(f"SCRIPT LOAD returned {sha!r}, expected {_SHA}")

    def submit(self, keys: Sequence[bytes], args: tuple[int, ...], done: Done) -> bool:
        """Ask for a decision on ``keys`` with ``args`` (interval and burst per key) in
        the next batch: ``done`` is called on the event loop with the script's answer or
        a :class:`RedisUnavailable`, within ``timeout``. Returns False at once (and
        ``done`` is never called) while Redis is known to be down (:attr:`down_error`
        says why)."""
        if self.down_until and time.monotonic() < self.down_until:
            return False
        self.calls += 1
        batch = self._batch
        batch.append((keys, args, done))
        if len(batch) == 1:
            loop = asyncio.get_running_loop()
            self._since = loop.time()
            if self._in_flight < self.max_in_flight:
                # sent once the other requests of this turn of the loop have joined it:
                # a new task's first step waits its turn on 3.11; on 3.12+ tasks start
                # eagerly, so the start itself waits its turn
                if EAGER_TASKS:
                    loop.call_soon(self._start_batch)
                else:
                    self._start_batch()
            # else it goes as soon as a batch in flight is answered
        return True

    async def decide(self, keys: Sequence[str], args: Sequence[int]) -> list[int]:
        """:meth:`submit`, awaited: the answer, or :class:`RedisUnavailable`."""
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        if not self.submit([k.encode() for k in keys], tuple(args), fut.set_result):
            raise self.down_error
        answer = await fut
        if isinstance(answer, RedisUnavailable):
            raise answer
        return answer

    def _start_batch(self) -> None:
        if self._batch and self._in_flight < self.max_in_flight:
            self._in_flight += 1
            task = self._spawn(self._send_batch())
            task.add_done_callback(self._sent)

    def _sent(self, task: asyncio.Task[None]) -> None:
        """A batch was answered (or failed, or was cancelled): send what gathered."""
        self._in_flight -= 1
        self._start_batch()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        if self.worker_tasks is not None:
            return self.worker_tasks.spawn(coro)
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _send_batch(self) -> None:
        """Send the decisions gathered so far as one script call; above
        :data:`MAX_BATCH_KEYS` counters, the rest stays for the next call."""
        batch, self._batch = self._batch, []
        if not batch:
            return  # an earlier call (started in the same turn) took it
        since = self._since
        size = 0
        for i, (keys, _, _) in enumerate(batch):
            size += len(keys)
            if size > MAX_BATCH_KEYS and i > 0:
                batch, self._batch = batch[:i], batch[i:]
                self._start_batch()  # at once if another call may be in flight
                break
        await self._run_batch(batch, since + self.timeout)

    def _pack(self, batch: list[_Entry]) -> bytes:
        """``EVALSHA`` of the script for the whole batch, as RESP: the batch's distinct
        profiles (the routes' arguments, each encoded once per worker) and, per
        decision, its keys and its profile's index."""
        keys: list[bytes] = []
        profiles: dict[tuple[int, ...], bytes] = {}
        encoded = self._encoded_args
        nargs = 2
        index = _INDEX
        refs: list[bytes] = []
        parts: list[bytes] = []
        for k, a, _ in batch:
            for key in k:
                keys.append(b"$%d\r\n%s\r\n" % (len(key), key))
            ref = profiles.get(a)
            if ref is None:
                known = encoded.get(a)
                if known is None:
                    known = (
                        1 + len(a),
                        _bulk(b"%d" % (len(a) // 2)) + b"".join(_bulk(b"%d" % v) for v in a),
                    )
                    if len(encoded) < 1024:
                        encoded[a] = known
                n = len(profiles) + 1
                ref = index[n] if n < len(index) else _bulk(b"%d" % n)
                profiles[a] = ref
                nargs += known[0]
                parts.append(known[1])
            refs.append(ref)
        head = b"*%d\r\n%s%s" % (
            3 + len(keys) + nargs + len(batch),
            _EVALSHA,
            _bulk(b"%d" % len(keys)),
        )
        counts = _bulk(b"%d" % len(batch)) + _bulk(b"%d" % len(profiles))
        return b"".join((head, *keys, counts, *parts, *refs))

    async def _run_batch(self, batch: list[_Entry], deadline: float) -> None:
        """One script call for the whole batch; each decision's callback gets its part
        of the reply, or the error."""
        self.batches += 1
        answers: list[Answer]
        try:
            packed = self._pack(batch)
            # one timer for the whole batch bounds every decision in it: ``timeout``
            # from when its first decision was asked
            async with asyncio.timeout_at(deadline):
                try:
                    reply: Any = await self._command(packed)
                except NoScriptError:
                    await self._load()  # Redis restarted or was flushed: load, then again
                    reply = await self._command(packed)
            answers = _split(reply, batch)
        except TimeoutError:
            self.down_until = time.monotonic() + RETRY_AFTER_FAILURE
            answers = [RedisUnavailable(f"no answer within {self.timeout:g} s")] * len(batch)
        except Exception as exc:  # RedisError, OSError; anything else too: never a hang
            self.down_until = time.monotonic() + RETRY_AFTER_FAILURE
            answers = [RedisUnavailable(f"{type(exc).__name__}: {exc}")] * len(batch)
        except asyncio.CancelledError:
            gone = RedisUnavailable("the client was closed")
            for _, _, done in batch:
                _call(done, gone)
            raise
        for (_, _, done), answer in zip(batch, answers, strict=True):
            _call(done, answer)


def _call(done: Done, answer: Answer) -> None:
    try:
        done(answer)
    except Exception:  # pragma: no cover - a callback's own bug stays its own
        logger.exception("rate limit: error in a decision's callback")


def _split(reply: Any, batch: list[_Entry]) -> list[Answer]:
    """The script's flat reply cut into each decision's part."""
    size = sum(2 + 2 * len(keys) for keys, _, _ in batch)
    if not isinstance(reply, list) or len(reply) != size:
        bad = RedisUnavailable(f"unexpected reply from the script: {reply!r:.200}")
        return [bad] * len(batch)
    out: list[Answer] = []
    pos = 0
    for keys, _, _ in batch:
        end = pos + 2 + 2 * len(keys)
        out.append(reply[pos:end])
        pos = end
    return out
