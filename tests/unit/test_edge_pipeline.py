"""A route as a pipeline (bastion.edge.pipeline), behind the real HTTP/1.1 protocol.

Request filters in order, early answers, another request handed on, async filters
(continuing, answering, raising, the client leaving), response filters in order, the
lifecycle of filters and handlers; and a whole site built by ``build_site`` with
request filters given through its ``request_filters`` seam.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bastion.config.schema import Config, RouteConfig
from bastion.edge.assemble import Site, build_site
from bastion.edge.pipeline import AppHandler, Lifecycles, Pipeline
from bastion.edge.types import ExchangeFilter, FilterResult, Lifecycle, RouteMatch
from bastion.edge.wrap import ExchangeWithHead, ExchangeWrapper
from bastion.gateway import LoadedApp
from bastion.protocol.types import Exchange, Handler
from bastion.tasks import WorkerTasks
from tests.unit.fake_exchange import run_async
from tests.unit.h1_harness import FakeTransport, make_conn, parse_responses, settle

MATCH = RouteMatch(3, {"id": "7"}, "/b")


def get(path: str = "/a/b", extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: example.com\r\n" + extra + b"\r\n"


def serve(pipeline: Pipeline) -> tuple[FakeTransport, Any]:
    """The pipeline behind a real HTTP/1.1 connection, called with :data:`MATCH`."""
    route = pipeline.route_handler

    def handler(exchange: Exchange) -> None:
        route(exchange, MATCH)

    proto, transport, _ = make_conn(handler)
    return transport, proto


def responses(transport: FakeTransport) -> list[tuple[int, dict[str, str], bytes]]:
    return parse_responses(transport.take())


class Recorder:
    """A handler that records its calls and answers with the client and the path."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def __call__(self, exchange: Exchange, match: RouteMatch) -> None:
        assert match is MATCH
        self.log.append("handler")
        client = exchange.head.client[0] if exchange.head.client else "-"
        body = f"{client} {exchange.head.path}".encode()
        exchange.start_response(200, [(b"content-type", b"text/plain"), (b"x-trail", b"h")])
        exchange.finish(body)


def passing(name: str, log: list[str]) -> Any:
    def check(exchange: Exchange, match: RouteMatch) -> FilterResult:
        assert match is MATCH
        log.append(name)
        return exchange

    return check


def answering(status: int, headers: list[tuple[bytes, bytes]], log: list[str]) -> Any:
    def check(exchange: Exchange, match: RouteMatch) -> FilterResult:
        log.append(f"answer {status}")
        exchange.start_response(status, [*headers, (b"content-length", b"0")])
        exchange.finish()
        return None

    return check


class Trail(ExchangeWrapper):
    """A response filter that appends its name to the ``x-trail`` response header."""

    __slots__ = ("_name",)

    def __init__(self, inner: Exchange, name: bytes) -> None:
        super().__init__(inner)
        self._name = name

    def start_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        out = [(k, v + b"," + self._name if k == b"x-trail" else v) for k, v in headers]
        if not any(k == b"x-trail" for k, _ in headers):
            out.append((b"x-trail", self._name))
        self._inner.start_response(status, out)


def trail(name: str) -> ExchangeFilter:
    encoded = name.encode()

    def wrap(exchange: Exchange) -> Exchange:
        return Trail(exchange, encoded)

    return wrap


# -- synchronous request filters -------------------------------------------------------
def test_request_filters_run_in_order_on_the_protocol_callback() -> None:
    async def main() -> None:
        log: list[str] = []
        tasks = WorkerTasks()
        pipeline = Pipeline(
            Recorder(log),
            request_filters=[passing("one", log), passing("two", log), passing("three", log)],
            tasks=tasks,
        )
        transport, proto = serve(pipeline)
        proto.data_received(get())
        await asyncio.sleep(0)  # the protocol calls its handler from the loop's ready queue
        # answered within that one call: no task, no further loop turn
        assert log == ["one", "two", "three", "handler"]
        assert len(tasks) == 0
        [(status, _, body)] = responses(transport)
        assert (status, body) == (200, b"127.0.0.1 /a/b")

    run_async(main())


def test_an_early_answer_ends_the_chain_and_goes_through_the_response_filters() -> None:
    async def main() -> None:
        log: list[str] = []
        challenge = [(b"www-authenticate", b'Basic realm="site"')]
        pipeline = Pipeline(
            Recorder(log),
            request_filters=[
                passing("one", log),
                answering(401, challenge, log),
                passing("never", log),
            ],
            response_filters=[trail("outer"), trail("inner")],
            tasks=WorkerTasks(),
        )
        transport, proto = serve(pipeline)
        proto.data_received(get())
        await asyncio.sleep(0)
        assert log == ["one", "answer 401"]
        [(status, headers, _)] = responses(transport)
        assert status == 401
        assert headers["www-authenticate"] == 'Basic realm="site"'
        assert headers["x-trail"] == "outer,inner"

    run_async(main())


def test_a_filter_hands_on_a_different_request() -> None:
    async def main() -> None:
        log: list[str] = []
        seen: list[Any] = []

        def real_client(exchange: Exchange, match: RouteMatch) -> FilterResult:
            return ExchangeWithHead(exchange, exchange.head.replace(client=("203.0.113.9", 0)))

        def after(exchange: Exchange, match: RouteMatch) -> FilterResult:
            seen.append(exchange.head.client)
            return exchange

        pipeline = Pipeline(
            Recorder(log),
            request_filters=[real_client, after],
            response_filters=[trail("t")],
            tasks=WorkerTasks(),
        )
        transport, proto = serve(pipeline)
        proto.data_received(get())
        await asyncio.sleep(0)
        assert seen == [("203.0.113.9", 0)]
        [(status, headers, body)] = responses(transport)
        assert (status, body) == (200, b"203.0.113.9 /a/b")
        assert headers["x-trail"] == "h,t"  # the new head still answers through the filter

    run_async(main())


@pytest.mark.parametrize("where", ["sync", "async", "sync after async"])
def test_a_filter_that_raises_fails_the_exchange(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        log: list[str] = []

        def sync_boom(exchange: Exchange, match: RouteMatch) -> FilterResult:
            raise RuntimeError("redis is down")

        async def async_boom(exchange: Exchange, match: RouteMatch) -> Exchange | None:
            await asyncio.sleep(0)
            raise RuntimeError("redis is down")

        async def async_pass(exchange: Exchange, match: RouteMatch) -> Exchange | None:
            await asyncio.sleep(0)
            return exchange

        chosen: dict[str, list[Any]] = {
            "sync": [sync_boom],
            "async": [async_boom],
            "sync after async": [async_pass, sync_boom],
        }
        tasks = WorkerTasks()
        pipeline = Pipeline(
            Recorder(log), request_filters=[*chosen[where], passing("never", log)], tasks=tasks
        )
        transport, proto = serve(pipeline)
        proto.data_received(get())
        await settle()
        assert log == []
        [(status, _, _)] = responses(transport)
        assert status == 500
        assert transport.done  # the connection closes after a failure
        assert len(tasks) == 0

    run_async(main())
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "GET /a/b" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert "redis is down" in str(errors[0].exc_info[1])


# -- async request filters -------------------------------------------------------------
def test_an_async_filter_continues_the_chain_when_it_is_done() -> None:
    async def main() -> None:
        log: list[str] = []
        gate = asyncio.Event()

        async def lookup(exchange: Exchange, match: RouteMatch) -> Exchange | None:
            assert match is MATCH
            log.append("lookup starts")
            await gate.wait()
            log.append("lookup done")
            return ExchangeWithHead(exchange, exchange.head.replace(client=("198.51.100.1", 0)))

        tasks = WorkerTasks()
        pipeline = Pipeline(
            Recorder(log),
            request_filters=[passing("one", log), lookup, passing("three", log)],
            response_filters=[trail("a"), trail("b"), trail("c")],
            tasks=tasks,
        )
        transport, proto = serve(pipeline)
        proto.data_received(get())
        await settle()
        assert log == ["one", "lookup starts"]
        assert transport.data == b""
        assert len(tasks) >= 1  # the filter's task runs in the worker's tasks
        gate.set()
        await settle()
        assert log == ["one", "lookup starts", "lookup done", "three", "handler"]
        [(status, headers, body)] = responses(transport)
        assert (status, body) == (200, b"198.51.100.1 /a/b")
        assert headers["x-trail"] == "h,a,b,c"
        assert len(tasks) == 0
        # the connection carries the next request as usual
        proto.data_received(get("/next"))
        await settle()
        gate.clear()
        assert [r[0] for r in responses(transport)] == [200]

    run_async(main())


def test_a_filter_awaits_only_when_it_needs_to() -> None:
    async def main() -> None:
        log: list[str] = []
        calls = 0

        def cached(exchange: Exchange, match: RouteMatch) -> FilterResult:
            if exchange.head.path == "/hit":
                return exchange

            async def miss() -> Exchange | None:
                nonlocal calls
                calls += 1
                await asyncio.sleep(0)
                exchange.start_response(429, [(b"retry-after", b"7"), (b"content-length", b"0")])
                exchange.finish()
                return None

            return miss()

        tasks = WorkerTasks()
        pipeline = Pipeline(Recorder(log), request_filters=[cached], tasks=tasks)
        transport, proto = serve(pipeline)
        proto.data_received(get("/hit"))
        await asyncio.sleep(0)
        assert log == ["handler"] and len(tasks) == 0
        proto.data_received(get("/miss"))
        await settle()
        statuses = [(r[0], r[1].get("retry-after")) for r in responses(transport)]
        assert statuses == [(200, None), (429, "7")]
        assert log == ["handler"] and calls == 1

    run_async(main())


@pytest.mark.parametrize("outcome", ["passes", "answers", "raises", "client leaves"])
def test_a_filter_that_returns_a_future_resumes_without_a_task(outcome: str) -> None:
    async def main() -> None:
        log: list[str] = []
        pending: list[tuple[Exchange, asyncio.Future[Exchange | None]]] = []

        def batched(exchange: Exchange, match: RouteMatch) -> FilterResult:
            fut: asyncio.Future[Exchange | None] = asyncio.get_running_loop().create_future()
            pending.append((exchange, fut))
            log.append("submitted")
            return fut

        tasks = WorkerTasks()
        pipeline = Pipeline(
            Recorder(log),
            request_filters=[batched, passing("next", log)],
            response_filters=[trail("a")],
            tasks=tasks,
        )
        transport, proto = serve(pipeline)
        proto.data_received(get())
        await settle()
        assert log == ["submitted"] and transport.data == b""
        assert len(tasks) == 0  # no task waits for the decision
        [(exchange, fut)] = pending
        if outcome == "passes":
            fut.set_result(ExchangeWithHead(exchange, exchange.head.replace(path="/moved")))
        elif outcome == "answers":
            exchange.start_response(429, [(b"content-length", b"0")])
            exchange.finish()
            fut.set_result(None)
        elif outcome == "raises":
            fut.set_exception(RuntimeError("the batch broke"))
        else:
            transport.close()
            await settle()
            fut.set_result(exchange)
        await settle()
        got = [(r[0], r[1].get("x-trail"), r[2]) for r in responses(transport)]
        if outcome == "passes":
            assert log == ["submitted", "next", "handler"]
            assert got == [(200, "h,a", b"127.0.0.1 /moved")]
        elif outcome == "answers":
            assert log == ["submitted"] and got == [(429, "a", b"")]
        elif outcome == "raises":
            assert log == ["submitted"] and [g[0] for g in got] == [500]
        else:
            assert log == ["submitted"] and got == []

    run_async(main())


@pytest.mark.parametrize("when", ["while it waits", "before it starts"])
def test_the_client_leaving_during_an_async_filter_ends_the_exchange(
    when: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        log: list[str] = []

        async def slow(exchange: Exchange, match: RouteMatch) -> Exchange | None:
            log.append("waiting")
            try:
                await asyncio.Event().wait()  # a sub-request that never answers
            except asyncio.CancelledError:
                log.append("cancelled")
                raise
            return exchange

        # a task that starts eagerly (Python 3.12) is already waiting when the client
        # leaves: "before it starts" exists only when tasks start from the loop's queue
        tasks = WorkerTasks(eager=when == "while it waits")
        pipeline = Pipeline(
            Recorder(log), request_filters=[slow, passing("never", log)], tasks=tasks
        )
        transport, proto = serve(pipeline)
        proto.data_received(get())
        if when == "while it waits":
            await settle()
            assert log == ["waiting"]
        transport.close()
        for _ in range(3):
            await settle()
        expected = ["waiting", "cancelled"] if when == "while it waits" else []
        assert log == expected
        assert transport.data == b""
        assert len(tasks) == 0  # nothing left waiting

    run_async(main())
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


# -- response filters ------------------------------------------------------------------
@pytest.mark.parametrize("count", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", ["route", "app route", "with a request filter", "no routes"])
def test_response_filters_wrap_in_order_outermost_first(shape: str, count: int) -> None:
    async def main() -> None:
        log: list[str] = []
        names = ["f1", "f2", "f3", "f4"][:count]
        recorder = Recorder(log)

        def app(exchange: Exchange) -> None:
            recorder(exchange, MATCH)

        handler = AppHandler(app) if shape in ("app route", "no routes") else recorder
        pipeline = Pipeline(
            handler,
            request_filters=[passing("r", log)] if shape == "with a request filter" else [],
            response_filters=[trail(n) for n in names],
            tasks=WorkerTasks(),
        )
        if shape == "no routes":
            proto, transport, _ = make_conn(pipeline.protocol_handler())
        else:
            transport, proto = serve(pipeline)
        proto.data_received(get())
        await asyncio.sleep(0)
        [(status, headers, _)] = responses(transport)
        assert status == 200
        assert headers["x-trail"] == ",".join(["h", *names])

    run_async(main())


def test_without_routes_request_filters_get_the_whole_path() -> None:
    async def main() -> None:
        matches: list[tuple[int, dict[str, str], str]] = []

        def look(exchange: Exchange, match: RouteMatch) -> FilterResult:
            matches.append((match.route_index, match.captures, match.rest))
            return exchange

        def app(exchange: Exchange) -> None:
            exchange.start_response(200, [(b"content-length", b"2")])
            exchange.finish(b"ok")

        pipeline = Pipeline(AppHandler(app), request_filters=[look], tasks=WorkerTasks())
        proto, transport, _ = make_conn(pipeline.protocol_handler())
        proto.data_received(get("/x/y%20z"))
        await asyncio.sleep(0)
        assert [r[0] for r in responses(transport)] == [200]
        assert matches == [(-1, {}, "/x/y z")]

    run_async(main())


# -- lifecycle -------------------------------------------------------------------------
class Part:
    """A filter with a lifecycle that records it (and may fail to start)."""

    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name = name
        self.log = log
        self.fail = fail

    def __call__(self, exchange: Exchange, match: RouteMatch) -> FilterResult:
        return exchange

    async def startup(self) -> None:
        await asyncio.sleep(0)
        if self.fail:
            raise ConnectionRefusedError(f"{self.name}: no redis")
        self.log.append(f"start {self.name}")

    async def shutdown(self) -> None:
        await asyncio.sleep(0)
        self.log.append(f"stop {self.name}")

    def __repr__(self) -> str:
        return f"<Part {self.name}>"


def lifespan_app(log: list[str]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    log.append("start app")
                    await send({"type": "lifespan.startup.complete"})
                else:
                    log.append("stop app")
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        client = scope["client"][0] if scope["client"] else "-"
        body = f"app {client} {scope['path']}".encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/plain"),
                    (b"content-length", b"%d" % len(body)),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def site_config(tmp_path: Path, **tables: Any) -> Config:
    (tmp_path / "pub").mkdir(exist_ok=True)
    (tmp_path / "pub" / "a.txt").write_text("file a\n")
    routes = [
        {"path": "/app/", "app": "default"},
        {"path": "/files/", "static": {"root": str(tmp_path / "pub")}},
        {"path": "/", "match": "exact", "return": {"body": "home"}},
    ]
    return msgspec.convert({"app": {"target": "x:y"}, "routes": routes, **tables}, Config)


def part_factories(log: list[str], fail: str = "") -> list[Any]:
    shared = Part("shared", log)

    def per_route(config: Config, route: RouteConfig | None, tasks: WorkerTasks) -> Any:
        assert route is not None
        return Part(route.path, log, fail=route.path == fail)

    def one_for_all(config: Config, route: RouteConfig | None, tasks: WorkerTasks) -> Any:
        return shared

    def nothing(config: Config, route: RouteConfig | None, tasks: WorkerTasks) -> Any:
        return None

    return [per_route, nothing, one_for_all]


def test_lifecycle_starts_in_route_order_and_stops_in_reverse(tmp_path: Path) -> None:
    async def main() -> None:
        log: list[str] = []
        tasks = WorkerTasks()
        config = site_config(tmp_path)
        site = build_site(
            config,
            LoadedApp(lifespan_app(log), "asgi", "x:y"),
            tasks,
            request_filters=part_factories(log),
        )
        assert isinstance(site, Site)
        statics = [p for p in site.parts.parts if not isinstance(p, Part)]
        assert len(statics) == 1 and isinstance(statics[0], Lifecycle)  # the static handler
        await site.startup()
        assert log == ["start app", "start /app/", "start shared", "start /files/", "start /"]
        del log[:]
        proto, transport, _ = make_conn(site.handler)
        proto.data_received(get("/files/a.txt"))
        await settle()
        [(status, _, body)] = responses(transport)
        assert (status, body) == (200, b"file a\n")
        await site.shutdown()
        assert log == ["stop /", "stop /files/", "stop shared", "stop /app/", "stop app"]

    run_async(main())


def test_a_part_that_fails_to_start_stops_those_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def main() -> None:
        log: list[str] = []
        config = site_config(tmp_path)
        site = build_site(
            config,
            LoadedApp(lifespan_app(log), "asgi", "x:y"),
            WorkerTasks(),
            request_filters=part_factories(log, fail="/files/"),
        )
        with pytest.raises(ConnectionRefusedError, match="no redis"):
            await site.startup()
        assert log == [
            "start app",
            "start /app/",
            "start shared",
            "stop shared",
            "stop /app/",
            "stop app",
        ]

    run_async(main())
    assert any("<Part /files/> failed to start" in r.getMessage() for r in caplog.records)


def test_parts_stop_after_the_request_tasks_have_ended(tmp_path: Path) -> None:
    async def main() -> None:
        log: list[str] = []
        tasks = WorkerTasks()
        part = Part("limiter", log)

        async def stuck(exchange: Exchange, match: RouteMatch) -> Exchange | None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                log.append("request cancelled")
                raise
            return exchange

        def factory(config: Config, route: RouteConfig | None, tasks: WorkerTasks) -> Any:
            return part if route is not None and route.path == "/" else stuck

        config = site_config(tmp_path)
        site = build_site(
            config, LoadedApp(lifespan_app(log), "asgi", "x:y"), tasks, request_filters=[factory]
        )
        await site.startup()
        proto, transport, _ = make_conn(site.handler)
        proto.data_received(get("/app/slow"))
        await settle()
        assert len(tasks) > 0
        await site.shutdown(grace=0.05)
        assert log == [
            "start app",
            "start limiter",
            "request cancelled",
            "stop limiter",
            "stop app",
        ]
        [(status, _, _)] = responses(transport)
        assert status == 500  # the worker stopped before the filter decided

    run_async(main())


def test_a_part_with_half_a_lifecycle_is_refused() -> None:
    class OnlyStarts:
        async def startup(self) -> None:
            pass

    with pytest.raises(TypeError, match=r"defines startup\(\) but not shutdown\(\)"):
        Lifecycles([OnlyStarts()])


def test_an_error_while_stopping_is_logged_and_the_rest_still_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log: list[str] = []

    class BadStop(Part):
        async def shutdown(self) -> None:
            raise OSError("pool already closed")

    parts = Lifecycles([Part("a", log), BadStop("b", log), Part("c", log)])

    async def main() -> None:
        await parts.startup()
        await parts.shutdown()

    run_async(main())
    assert log == ["start a", "start b", "start c", "stop c", "stop a"]
    assert any("error while stopping <Part b>" in r.getMessage() for r in caplog.records)


# -- a whole site: filters from the build_site seam, the real protocol, the real app ------
def basic_auth(config: Config, route: RouteConfig | None, tasks: WorkerTasks) -> Any:
    """Test-only: routes under /app/ want an Authorization header."""
    if route is not None and not route.path.startswith("/app/"):
        return None

    def check(exchange: Exchange, match: RouteMatch) -> FilterResult:
        if exchange.head.header(b"authorization") == b"Basic dTpw":
            return exchange
        exchange.start_response(
            401, [(b"www-authenticate", b'Basic realm="app"'), (b"content-length", b"0")]
        )
        exchange.finish()
        return None

    return check


def forwarded_for(config: Config, route: RouteConfig | None, tasks: WorkerTasks) -> Any:
    """Test-only: the client address from X-Forwarded-For, after an await."""

    async def check(exchange: Exchange, match: RouteMatch) -> Exchange | None:
        await asyncio.sleep(0)
        value = exchange.head.header(b"x-forwarded-for")
        if value is None:
            return exchange
        return ExchangeWithHead(exchange, exchange.head.replace(client=(value.decode(), 0)))

    return check


@pytest.mark.parametrize("shape", ["routes", "no routes", "no routes, no response filters"])
def test_a_site_with_request_filters_behind_the_real_protocol(tmp_path: Path, shape: str) -> None:
    async def main() -> None:
        log: list[str] = []
        routes = shape == "routes"
        tables: dict[str, Any] = {}
        if shape != "no routes, no response filters":
            tables["headers"] = {"add": {"X-Served-By": "bastion"}}
        if routes:
            config = site_config(tmp_path, **tables)
        else:
            config = msgspec.convert({"app": {"target": "x:y"}, **tables}, Config)
        site = build_site(
            config,
            LoadedApp(lifespan_app(log), "asgi", "x:y"),
            WorkerTasks(),
            request_filters=[forwarded_for, basic_auth],
        )
        await site.startup()
        handler: Handler = site.handler
        proto, transport, _ = make_conn(handler)
        path = "/app/x" if routes else "/x"
        proto.data_received(get(path, b"X-Forwarded-For: 192.0.2.4\r\n"))
        await settle()
        proto.data_received(
            get(path, b"X-Forwarded-For: 192.0.2.4\r\nAuthorization: Basic dTpw\r\n")
        )
        await settle()
        if routes:
            proto.data_received(get("/"))  # a route without the auth filter
            await settle()
        out = responses(transport)
        assert [r[0] for r in out] == [401, 200] + ([200] if routes else [])
        assert out[0][1]["www-authenticate"] == 'Basic realm="app"'
        assert out[1][2] == f"app 192.0.2.4 {path}".encode()
        assert all(r[1].get("x-served-by") == ("bastion" if tables else None) for r in out)
        if routes:
            assert out[2][2] == b"home"
        await site.shutdown()
        assert log == ["start app", "stop app"]

    run_async(main())
