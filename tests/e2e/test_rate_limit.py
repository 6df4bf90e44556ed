"""Rate limits through the real ``bastion``: the local backend (burst, 429 and its
headers, recovery), two instances of two workers each sharing one Redis, Redis killed
and paused under fail-open and fail-closed, and the keys (a header, the Basic identity,
the address behind a trusted proxy)."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis_server import RedisServer
from server import BastionProcess, child_env

from bastion.clients.redis_gcra import SCRIPT

SCRIPT_SHA = hashlib.sha1(SCRIPT.encode()).hexdigest()


def get(proc: BastionProcess, path: str, **kw: object) -> httpx.Response:
    # a new connection each time, so the requests spread over the workers
    return httpx.get(proc.url + path, timeout=10, **kw)  # type: ignore[arg-type]


def serve(tmp: Path, config: str, workers: int = 1) -> BastionProcess:
    path = tmp / f"bastion-{time.monotonic_ns()}.toml"
    path.write_text(config)
    return BastionProcess(
        ["serve", "-c", str(path), "--bind", "127.0.0.1:0", "--workers", str(workers)]
    )


APP = """
[app]
target = "addr_app:app"
"""


def limited(path: str, rate: str, burst: int, **keys: str) -> str:
    """A route at ``path`` to the app, under one rate limit (``keys``: its other keys)."""
    more = "".join(f'{name} = "{value}"\n' for name, value in keys.items())
    return f"""
[[routes]]
path = "{path}"
app = "default"
[[routes.rate_limit]]
rate = "{rate}"
burst = {burst}
{more}"""


# -- the local backend -------------------------------------------------------------------
LOCAL = (
    APP
    + """
[rate_limit]
headers = "always"
"""
    + limited("/", "2/s", 3, name="per-client")
)


def test_local_burst_then_429_with_headers_then_recovery(tmp_path: Path) -> None:
    with serve(tmp_path, LOCAL) as site:
        allowed = [get(site, "/") for _ in range(3)]
        assert [r.status_code for r in allowed] == [200, 200, 200]
        assert allowed[0].headers["ratelimit-policy"] == '"per-client";q=2;w=1'
        assert [r.headers["ratelimit"] for r in allowed] == [
            '"per-client";r=2;t=1',
            '"per-client";r=1;t=1',
            '"per-client";r=0;t=2',
        ]
        refused = get(site, "/")
        assert refused.status_code == 429
        assert refused.text == "Too Many Requests\n"
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["ratelimit-policy"] == '"per-client";q=2;w=1'
        assert re.fullmatch(r'"per-client";r=0;t=[12]', refused.headers["ratelimit"])
        assert get(site, "/").status_code == 429
        time.sleep(0.6)  # one request every 0.5 s at 2/s
        with httpx.Client(timeout=10) as client:  # the two back to back, on one connection
            pair = [client.get(site.url + "/").status_code for _ in range(2)]
        assert pair == [200, 429]
        time.sleep(1.6)  # the whole burst back
        assert [get(site, "/").status_code for _ in range(4)] == [200, 200, 200, 429]


# -- two instances, one Redis ------------------------------------------------------------
SHARED = (
    APP
    + """
[rate_limit]
backend = "redis"
redis_url = "{url}"
key_prefix = "{prefix}"
"""
    + limited("/burst", "1/m", 20)
    + limited("/steady", "10/s", 5)
)


@pytest.fixture(scope="module")
def two_sites(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[tuple[BastionProcess, BastionProcess]]:
    tmp = tmp_path_factory.mktemp("shared")
    config = SHARED.format(url=redis_server.url, prefix="shared-test:")
    with serve(tmp, config, workers=2) as a, serve(tmp, config, workers=2) as b:
        yield a, b


def test_two_instances_share_one_limit(two_sites: tuple[BastionProcess, BastionProcess]) -> None:
    a, b = two_sites
    statuses = [get(site, "/burst").status_code for _ in range(30) for site in (a, b)]
    # exactly the burst, whichever instance and worker answered
    assert statuses.count(200) == 20, statuses
    assert statuses[:20] == [200] * 20
    assert set(statuses[20:]) == {429}


def test_two_instances_share_the_steady_rate(
    two_sites: tuple[BastionProcess, BastionProcess],
) -> None:
    """Over a window, 4 workers together allow the burst plus rate x window, within one
    request: the clock is Redis's."""
    a, b = two_sites
    results: list[tuple[float, float, int]] = []
    lock = threading.Lock()
    stop = time.monotonic() + 2.0

    def client(site: BastionProcess) -> None:
        with httpx.Client(timeout=10) as c:
            while time.monotonic() < stop:
                t0 = time.monotonic()
                code = c.get(site.url + "/steady").status_code
                with lock:
                    results.append((t0, time.monotonic(), code))

    threads = [threading.Thread(target=client, args=(s,)) for s in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    allowed = sum(1 for *_, code in results if code == 200)
    first_end = min(end for _, end, _ in results)
    first_start = min(start for start, _, _ in results)
    last_start = max(start for start, _, _ in results)
    last_end = max(end for _, end, _ in results)
    low = 5 + int(10 * (last_start - first_end)) - 1
    high = 5 + int(10 * (last_end - first_start)) + 1 + 1
    assert low <= allowed <= high, (low, allowed, high, len(results))
    assert any(code == 429 for *_, code in results[-10:])  # saturated to the end


# -- Redis down or hanging --------------------------------------------------------------
FAILING = (
    APP
    + """
[rate_limit]
backend = "redis"
redis_url = "{url}"
on_error = "{on_error}"
timeout = 0.3
"""
    + limited("/", "1/m", 3)
)


def timed(site: BastionProcess) -> tuple[int, float]:
    t0 = time.monotonic()
    code = get(site, "/").status_code
    return code, time.monotonic() - t0


def test_redis_killed_and_paused_fail_open_and_closed(tmp_path: Path) -> None:
    redis = RedisServer(tmp_path).start()
    try:
        allow = serve(tmp_path, FAILING.format(url=redis.url, on_error="allow"))
        deny = serve(tmp_path, FAILING.format(url=redis.url, on_error="deny"))
        with allow, deny:
            # both share one count: 3 requests in all, then 429 from either
            assert [get(s, "/").status_code for s in (allow, deny, allow)] == [200] * 3
            assert get(allow, "/").status_code == 429
            assert get(deny, "/").status_code == 429

            redis.stop()
            for _ in range(6):
                code, took = timed(allow)
                assert code == 200 and took < 0.3 + 1.5
                code, took = timed(deny)
                assert code == 503 and took < 0.3 + 1.5
            refused = get(deny, "/")
            assert refused.headers["retry-after"] == "1"
            # logged once, not once per request
            allow.wait_for_log(r"rate limit: Redis at \S+ failed")
            assert len(re.findall(r"rate limit: Redis at \S+ failed", allow.log)) == 1

            redis.start()  # a new, empty Redis on the same port
            time.sleep(1.2)  # past the pause after a failure
            codes = [get(s, "/").status_code for s in (allow, deny, allow, deny, allow)]
            assert codes == [200, 200, 200, 429, 429]
            allow.wait_for_log(r"rate limit: Redis at \S+ answers again")

            # a Redis that accepts connections and never answers
            redis.pause()
            try:
                for _ in range(3):
                    code, took = timed(allow)
                    assert code == 200 and took < 0.3 + 1.5
                    code, took = timed(deny)
                    assert code == 503 and took < 0.3 + 1.5
            finally:
                redis.resume()
            time.sleep(1.2)
            assert get(allow, "/").status_code == 429  # the counts held through the pause
    finally:
        redis.stop()


# -- keys --------------------------------------------------------------------------------
KEYS = (
    APP
    + """
[server]
forwarded_allow_ips = ["127.0.0.1"]
"""
    + limited("/tenant", "1/m", 2, key="header", header="X-Tenant")
    + limited("/user", "1/m", 2, key="user")
    + """[routes.auth_basic]
users_file = "{users}"
"""
    + limited("/addr", "1/m", 2)
    + limited("/login", "1/m", 3)
    + """[routes.auth_basic]
users_file = "{users}"
"""
)


def passwd(users: Path, user: str, password: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bastion", "passwd", str(users), user],
        input=password + "\n",
        capture_output=True,
        text=True,
        env=child_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_keys_header_identity_and_address_behind_proxy(tmp_path: Path) -> None:
    users = tmp_path / "users"
    passwd(users, "alice", "pw-alice")
    passwd(users, "bob", "pw-bob")
    with serve(tmp_path, KEYS.format(users=users)) as site:

        def codes(path: str, n: int, **kw: object) -> list[int]:
            return [get(site, path, **kw).status_code for _ in range(n)]

        # by header: each tenant its own count; no header falls back to the address
        assert codes("/tenant", 3, headers={"X-Tenant": "a"}) == [200, 200, 429]
        assert codes("/tenant", 3, headers={"X-Tenant": "b"}) == [200, 200, 429]
        assert codes("/tenant", 3) == [200, 200, 429]
        # by the Basic identity
        assert codes("/user", 3, auth=("alice", "pw-alice")) == [200, 200, 429]
        assert codes("/user", 2, auth=("bob", "pw-bob")) == [200, 200]
        assert codes("/user", 1, auth=("alice", "wrong")) == [401]  # auth runs first
        # by the real address behind the trusted proxy (127.0.0.1)
        one = {"X-Forwarded-For": "10.0.0.1"}
        two = {"X-Forwarded-For": "10.0.0.2"}
        assert codes("/addr", 3, headers=one) == [200, 200, 429]
        assert codes("/addr", 2, headers=two) == [200, 200]
        assert codes("/addr", 2) == [200, 200]  # the proxy itself
        # an IPv6 client counts by its /64 (limits.client_ipv6_prefix): a new address
        # of the same network for each request gets no new allowance; another network,
        # and an IPv4-mapped spelling of an IPv4 client, are their own
        same = [{"X-Forwarded-For": f"2001:db8:1:2::{i:x}"} for i in range(1, 4)]
        assert [get(site, "/addr", headers=h).status_code for h in same] == [200, 200, 429]
        other = {"X-Forwarded-For": "2001:db8:1:3::1"}
        assert codes("/addr", 2, headers=other) == [200, 200]
        mapped = {"X-Forwarded-For": "::ffff:10.0.0.2"}
        assert codes("/addr", 1, headers=mapped) == [429]  # 10.0.0.2 used its two
        # an address limit runs before authentication: guessed passwords count, and
        # past the limit not even the right one is checked (as nginx's limit_req)
        three = {"X-Forwarded-For": "10.0.0.3"}
        assert codes("/login", 4, headers=three, auth=("alice", "guess")) == [401] * 3 + [429]
        assert codes("/login", 1, headers=three, auth=("alice", "pw-alice")) == [429]
        four = {"X-Forwarded-For": "10.0.0.4"}
        assert codes("/login", 1, headers=four, auth=("alice", "pw-alice")) == [200]


def stat(redis: RedisServer, name: str) -> int:
    info = redis.command("INFO", "stats").decode()
    m = re.search(rf"^{name}:(\d+)", info, re.MULTILINE)
    assert m is not None, info
    return int(m.group(1))


def test_pooled_connections_and_script_reloaded_after_flush(
    two_sites: tuple[BastionProcess, BastionProcess], redis_server: RedisServer
) -> None:
    a, b = two_sites
    for site in (a, b):  # every worker has its pool open
        for _ in range(4):
            get(site, "/burst")
    before = stat(redis_server, "total_connections_received")
    for _ in range(20):
        for site in (a, b):
            get(site, "/burst")
    # no connection per request: at most one more per worker
    assert stat(redis_server, "total_connections_received") - before <= 4
    assert redis_server.command("SCRIPT", "FLUSH").startswith(b"+OK")
    codes = [get(site, "/burst").status_code for site in (a, b)]
    assert codes == [429, 429]  # decided by the script, loaded again (NOSCRIPT)
    assert redis_server.command("SCRIPT", "EXISTS", SCRIPT_SHA).startswith(b"*1\r\n:1")


BATCHED = (
    APP
    + """
[rate_limit]
backend = "redis"
redis_url = "{url}"
key_prefix = "batch-test:"
"""
    + limited("/", "1/m", 10, key="header", header="x-who")
)


def evalsha_calls(redis: RedisServer) -> int:
    info = redis.command("INFO", "commandstats").decode()
    m = re.search(r"^cmdstat_evalsha:calls=(\d+)", info, re.MULTILINE)
    return int(m.group(1)) if m else 0


def test_requests_arriving_together_are_decided_in_one_batch_exactly(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """30 requests sent at once to one worker, for two clients with a burst of 10 each:
    fewer script calls than requests, and still exactly 10 allowed per client."""
    import socket

    with serve(tmp_path, BATCHED.format(url=redis_server.url)) as site:
        assert get(site, "/", headers={"x-who": "warm-up"}).status_code == 200
        host, port = site.url.removeprefix("http://").rsplit(":", 1)
        socks = [socket.create_connection((host, int(port)), timeout=10) for _ in range(30)]
        before = evalsha_calls(redis_server)
        for i, s in enumerate(socks):
            who = "alice" if i % 2 else "bob"
            s.sendall(f"GET / HTTP/1.1\r\nHost: x\r\nx-who: {who}\r\n\r\n".encode())
        statuses: dict[str, list[int]] = {"alice": [], "bob": []}
        for i, s in enumerate(socks):
            head = b""
            while b"\r\n" not in head:
                chunk = s.recv(4096)
                assert chunk, "connection closed without an answer"
                head += chunk
            s.close()
            statuses["alice" if i % 2 else "bob"].append(int(head.split(b" ", 2)[1]))
        calls = evalsha_calls(redis_server) - before
    for who, got in statuses.items():
        assert sorted(got) == [200] * 10 + [429] * 5, who
    assert 1 <= calls < 30, calls


def test_a_batch_larger_than_lua_can_unpack_is_sent_as_several_calls(
    redis_server: RedisServer,
) -> None:
    """More counters asked in one turn of the loop than one script call can take: every
    decision is still answered, by as many calls as needed."""
    import asyncio

    from bastion.clients.redis_gcra import MAX_BATCH_KEYS, RedisGcra, RedisUnavailable

    async def main() -> tuple[list[list[int] | RedisUnavailable], int]:
        client = RedisGcra(redis_server.url, timeout=5.0, max_connections=4)
        await client.start()
        try:
            answers: list[list[int] | RedisUnavailable] = []
            total = 4 * MAX_BATCH_KEYS + 1000  # beyond the 8,000 Lua can unpack
            done = asyncio.get_running_loop().create_future()

            def answered(answer: list[int] | RedisUnavailable) -> None:
                answers.append(answer)
                if len(answers) == total:
                    done.set_result(None)

            for i in range(total):  # one key each, the same key twice in a row
                client.submit([b"split-test:%d" % (i // 2)], (1_000_000, 1), answered)
            await asyncio.wait_for(done, 10)
            return answers, client.batches
        finally:
            await client.close()

    answers, batches = asyncio.run(main())
    assert all(isinstance(a, list) for a in answers), next(
        a for a in answers if not isinstance(a, list)
    )
    # the pairs stayed in order: the first of each key allowed, the second refused
    assert [a[0] for a in answers if isinstance(a, list)] == [1, 0] * (len(answers) // 2)
    assert batches == 5


def test_batches_run_in_the_worker_tasks_and_always_answer(redis_server: RedisServer) -> None:
    """A batch runs as one of the worker's tasks (a stopping worker waits for it), and
    a batch that fails in an unforeseen way still answers every decision in it."""
    import asyncio

    from bastion.clients.redis_gcra import RedisGcra, RedisUnavailable
    from bastion.tasks import WorkerTasks

    async def main() -> tuple[int, list[object]]:
        tasks = WorkerTasks()
        client = RedisGcra(redis_server.url, timeout=5.0, max_connections=2, tasks=tasks)
        await client.start()
        try:
            got: list[object] = []
            client.submit([b"tasks-test:a"], (1_000_000, 5), got.append)
            await asyncio.sleep(0)
            running = len(tasks)
            for _ in range(50):
                if got:
                    break
                await asyncio.sleep(0.02)
            # a key that is not bytes breaks the batch before it is sent
            client.submit(["not bytes"], (1_000_000, 5), got.append)  # type: ignore[list-item]
            for _ in range(50):
                if len(got) == 2:
                    break
                await asyncio.sleep(0.02)
            return running, got
        finally:
            await client.close()

    running, got = asyncio.run(main())
    assert running == 1
    assert len(got) == 2, got
    assert isinstance(got[0], list) and got[0][0] == 1
    assert isinstance(got[1], RedisUnavailable)


def test_decisions_asked_while_a_batch_waits_go_together(redis_server: RedisServer) -> None:
    """With a script call waiting for Redis, the decisions asked over the next turns of
    the loop are not sent one call each: they gather and go in one call when the first
    is answered; all are answered, in order."""
    import asyncio

    from bastion.clients.redis_gcra import RedisGcra

    async def main() -> tuple[list[object], int]:
        client = RedisGcra(redis_server.url, timeout=5.0, max_connections=4, max_in_flight=1)
        await client.start()
        got: list[object] = []
        try:
            redis_server.pause()  # the first call waits, connection open
            try:
                client.submit([b"gather-test:a"], (1_000_000, 3), got.append)
                for _ in range(4):  # one decision per turn of the loop
                    await asyncio.sleep(0.01)
                    client.submit([b"gather-test:a"], (1_000_000, 3), got.append)
            finally:
                redis_server.resume()
            for _ in range(250):
                if len(got) == 5:
                    break
                await asyncio.sleep(0.02)
            return got, client.batches
        finally:
            await client.close()

    got, batches = asyncio.run(main())
    assert [a[0] for a in got if isinstance(a, list)] == [1, 1, 1, 0, 0], got
    assert batches == 2


def test_a_decision_that_waited_to_be_sent_is_still_bounded_by_the_timeout(
    redis_server: RedisServer,
) -> None:
    """A decision asked while a call waits for a Redis that does not answer gets its
    answer (the error) within ``timeout`` of being asked, not of being sent."""
    import asyncio

    from bastion.clients.redis_gcra import RedisGcra, RedisUnavailable

    async def main() -> list[tuple[float, object]]:
        client = RedisGcra(redis_server.url, timeout=0.4, max_connections=4, max_in_flight=1)
        await client.start()
        got: list[tuple[float, object]] = []
        try:
            redis_server.pause()
            try:
                t0 = time.monotonic()
                client.submit(
                    [b"wait-test:a"],
                    (1_000_000, 3),
                    lambda a: got.append((time.monotonic() - t0, a)),
                )
                await asyncio.sleep(0.2)
                t1 = time.monotonic()
                client.submit(
                    [b"wait-test:b"],
                    (1_000_000, 3),
                    lambda a: got.append((time.monotonic() - t1, a)),
                )
                for _ in range(100):
                    if len(got) == 2:
                        break
                    await asyncio.sleep(0.01)
                return got
            finally:
                redis_server.resume()
        finally:
            await client.close()

    got = asyncio.run(main())
    assert len(got) == 2, got
    assert all(isinstance(a, RedisUnavailable) for _, a in got), got
    # each within its 0.4 s (slack for a busy machine), the second not at 0.6 s
    assert all(waited < 0.55 for waited, _ in got), got


def test_a_batch_writes_each_counter_once(redis_server: RedisServer) -> None:
    """Many decisions on one counter in one script call: the counter is read and
    written once for the call, and the decisions still see each other."""
    import asyncio

    from bastion.clients.redis_gcra import RedisGcra

    def sets() -> int:
        stats = redis_server.command("INFO", "commandstats").decode()
        m = re.search(r"cmdstat_set:calls=(\d+)", stats)
        return int(m.group(1)) if m else 0

    async def main() -> tuple[list[object], int]:
        client = RedisGcra(redis_server.url, timeout=5.0, max_connections=1)
        await client.start()
        try:
            got: list[object] = []
            for _ in range(10):
                client.submit([b"once-test:a"], (1_000_000, 6), got.append)
            client.submit([b"once-test:b"], (1_000_000, 6), got.append)
            for _ in range(250):
                if len(got) == 11:
                    break
                await asyncio.sleep(0.02)
            return got, client.batches
        finally:
            await client.close()

    before = sets()
    got, batches = asyncio.run(main())
    assert batches == 1
    assert [a[0] for a in got if isinstance(a, list)] == [1] * 6 + [0] * 4 + [1], got
    assert sets() - before == 2
