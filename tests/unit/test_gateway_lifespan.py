"""ASGI lifespan: start-up and shut-down, state, and apps that do not support it."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from bastion.config.schema import AppConfig, Config
from bastion.gateway import build_gateway
from bastion.gateway.asgi import ASGIGateway
from bastion.gateway.lifespan import Lifespan, LifespanFailure
from bastion.gateway.loader import LoadedApp
from tests.unit.fake_exchange import FakeExchange, run_async

Scope = dict[str, Any]


def lifespan_app(
    *, startup: str = "complete", shutdown: str = "complete", log: list[str] | None = None
) -> Any:
    calls = log if log is not None else []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        assert scope["asgi"]["version"] == "3.0"
        message = await receive()
        assert message["type"] == "lifespan.startup"
        calls.append("startup")
        scope["state"]["db"] = "connected"
        if startup == "failed":
            await send({"type": "lifespan.startup.failed", "message": "no database"})
            return
        await send({"type": "lifespan.startup.complete"})
        message = await receive()
        assert message["type"] == "lifespan.shutdown"
        calls.append("shutdown")
        if shutdown == "failed":
            await send({"type": "lifespan.shutdown.failed", "message": "flush failed"})
            return
        await send({"type": "lifespan.shutdown.complete"})

    return app


def test_startup_and_shutdown_run_in_order_and_fill_state() -> None:
    calls: list[str] = []

    async def main() -> dict[str, Any]:
        state: dict[str, Any] = {}
        life = Lifespan(lifespan_app(log=calls), "auto", state)
        await life.startup()
        assert life.supported
        assert calls == ["startup"]
        await life.shutdown()
        return state

    assert run_async(main()) == {"db": "connected"}
    assert calls == ["startup", "shutdown"]


@pytest.mark.parametrize("mode", ["auto", "on"])
def test_startup_failed_raises_with_the_apps_message(mode: Any) -> None:
    async def main() -> None:
        await Lifespan(lifespan_app(startup="failed"), mode, {}).startup()

    with pytest.raises(LifespanFailure, match=r"^no database$"):
        run_async(main())


def test_shutdown_failed_is_logged_and_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        life = Lifespan(lifespan_app(shutdown="failed"), "auto", {})
        await life.startup()
        await life.shutdown()

    with pytest.raises(LifespanFailure, match="flush failed"):
        run_async(main())
    assert any("flush failed" in r.getMessage() for r in caplog.records)


async def rejects_lifespan(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        raise ValueError(f"only http, not {scope['type']}")  # what Django's handler does


async def ignores_lifespan(scope: Scope, receive: Any, send: Any) -> None:
    return None


@pytest.mark.parametrize("app", [rejects_lifespan, ignores_lifespan])
def test_auto_mode_carries_on_without_lifespan(app: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)

    async def main() -> Lifespan:
        life = Lifespan(app, "auto", {})
        await life.startup()
        await life.shutdown()
        return life

    life = run_async(main())
    assert not life.supported
    notes = [r for r in caplog.records if "lifespan not supported" in r.getMessage()]
    assert len(notes) == 1 and notes[0].levelno == logging.INFO


@pytest.mark.parametrize(
    ("app", "detail"),
    [
        (rejects_lifespan, "raised ValueError: only http, not lifespan"),
        (ignores_lifespan, "returned"),
    ],
)
def test_on_mode_requires_lifespan(app: Any, detail: str) -> None:
    async def main() -> None:
        await Lifespan(app, "on", {}).startup()

    with pytest.raises(LifespanFailure) as err:
        run_async(main())
    assert detail in str(err.value)


def test_off_mode_never_calls_the_app() -> None:
    calls: list[str] = []

    async def main() -> None:
        life = Lifespan(lifespan_app(log=calls), "off", {})
        await life.startup()
        await life.shutdown()

    run_async(main())
    assert calls == []


def test_unexpected_message_raises_inside_the_app() -> None:
    errors: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        try:
            await send({"type": "lifespan.shutdown.complete"})
        except RuntimeError as exc:
            errors.append(str(exc))
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})

    async def main() -> None:
        life = Lifespan(app, "on", {})
        await life.startup()
        await life.shutdown()

    run_async(main())
    assert errors == [
        "unexpected ASGI lifespan message 'lifespan.shutdown.complete' during startup"
    ]


def test_gateway_puts_lifespan_state_in_each_request_scope() -> None:
    seen: list[Scope] = []
    lifespan = lifespan_app()

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await lifespan(scope, receive, send)
            return
        seen.append(scope)
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body"})

    async def main() -> None:
        gw = build_gateway(Config(), LoadedApp(app, "asgi", "t:app"))
        await gw.startup()
        ex = FakeExchange()
        gw.handler(ex)
        await ex.wait_done()
        await gw.shutdown()

    run_async(main())
    assert seen[0]["state"] == {"db": "connected"}


def test_gateway_startup_failure_propagates() -> None:
    async def main() -> None:
        gw = ASGIGateway(lifespan_app(startup="failed"), Config())
        await gw.startup()

    with pytest.raises(LifespanFailure, match="no database"):
        run_async(main())


def test_lifespan_off_in_config_skips_it() -> None:
    calls: list[str] = []

    async def main() -> None:
        gw = ASGIGateway(lifespan_app(log=calls), Config(app=AppConfig(lifespan="off")))
        await gw.startup()
        await gw.shutdown()

    run_async(main())
    assert calls == []


def test_starlette_lifespan_state_reaches_requests() -> None:
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    events: list[str] = []

    @contextlib.asynccontextmanager
    async def life(app: Starlette) -> AsyncIterator[dict[str, str]]:
        events.append("up")
        yield {"greeting": "hello from lifespan"}
        events.append("down")

    async def home(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.state.greeting)

    app = Starlette(routes=[Route("/", home)], lifespan=life)

    async def main() -> FakeExchange:
        gw = ASGIGateway(app, Config())
        await gw.startup()
        ex = FakeExchange(headers=[("host", "x")])
        gw.handler(ex)
        await ex.wait_done()
        await gw.shutdown()
        return ex

    ex = run_async(main())
    assert ex.status == 200 and bytes(ex.body) == b"hello from lifespan"
    assert events == ["up", "down"]


def test_auto_mode_startup_that_raises_after_taking_the_message_is_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        raise ConnectionRefusedError("database is down")

    async def main() -> None:
        await Lifespan(app, "auto", {}).startup()

    with pytest.raises(LifespanFailure) as err:
        run_async(main())
    assert "ConnectionRefusedError: database is down" in str(err.value)
    assert "app.lifespan = 'off'" in str(err.value)
    assert any(r.exc_info for r in caplog.records if r.name == "bastion.error")


def test_auto_mode_http_only_app_that_reads_first_is_not_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()  # a naive app: reads the "body" whatever the scope
        await send({"type": "http.response.start", "status": 200})

    async def main() -> Lifespan:
        life = Lifespan(app, "auto", {})
        await life.startup()
        return life

    assert not run_async(main()).supported
    assert any("lifespan not supported" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
