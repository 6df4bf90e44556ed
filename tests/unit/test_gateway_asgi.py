"""The ASGI gateway against an in-memory exchange: scope, receive, send, failures."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from bastion.config.schema import AppConfig, Config, ServerConfig, WorkersConfig
from bastion.gateway.asgi import ASGIGateway
from bastion.gateway.errors import ClientGone
from tests.unit.fake_exchange import FakeExchange, run_async

Scope = dict[str, Any]


def gateway(app: Any, *, root_path: str = "", debug: bool = False) -> ASGIGateway:
    return ASGIGateway(
        app, Config(app=AppConfig(root_path=root_path), server=ServerConfig(debug=debug))
    )


async def serve(gw: ASGIGateway, ex: FakeExchange, timeout: float = 5.0) -> FakeExchange:
    gw.handler(ex)
    await ex.wait_done(timeout)
    return ex


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def hello(scope: Scope, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"x-a", b"1")]})
    await send({"type": "http.response.body", "body": b"hello"})


# -- scope ------------------------------------------------------------------------------


def test_scope_has_every_key_an_app_needs() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(scope)
        await hello(scope, receive, send)

    headers = [("Host", "example.org"), ("X-Thing", "a"), ("X-Thing", "b")]
    ex = FakeExchange(
        "PUT", "/caf%C3%A9/x?q=1&r=%20", headers, client=("10.0.0.5", 4242), scheme="https"
    )
    run_async(serve(gateway(app), ex))
    scope = seen[0]
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "PUT"
    assert scope["scheme"] == "https"
    assert scope["path"] == "/café/x"
    assert scope["raw_path"] == b"/caf%C3%A9/x"
    assert scope["query_string"] == b"q=1&r=%20"
    assert scope["root_path"] == ""
    assert scope["headers"] is ex.head.headers
    assert scope["headers"] == [(b"host", b"example.org"), (b"x-thing", b"a"), (b"x-thing", b"b")]
    assert scope["client"] == ("10.0.0.5", 4242)
    assert scope["server"] == ("127.0.0.1", 8000)
    assert isinstance(scope["extensions"], dict)
    assert "state" not in scope
    assert ex.status == 200 and bytes(ex.body) == b"hello"
    assert ex.response_headers == [(b"x-a", b"1")]
    assert ex.finished and not ex.failed


@pytest.mark.parametrize(
    ("target", "path", "raw_path"),
    [
        ("/api/items", "/api/items", b"/api/items"),  # the proxy kept the prefix
        ("/items", "/api/items", b"/api/items"),  # the proxy stripped it
        ("/api", "/api", b"/api"),
        ("/apix", "/api/apix", b"/api/apix"),  # not a segment match
    ],
)
def test_root_path_is_included_in_path(target: str, path: str, raw_path: bytes) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(scope)
        await hello(scope, receive, send)

    run_async(serve(gateway(app, root_path="/api/"), FakeExchange("GET", target)))
    assert seen[0]["root_path"] == "/api"
    assert seen[0]["path"] == path
    assert seen[0]["raw_path"] == raw_path


def test_state_is_a_shallow_copy_per_request() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        seen.append(scope)
        scope["state"]["per_request"] = True
        await hello(scope, receive, send)

    gw = gateway(app)
    pool = object()
    gw.state = {"pool": pool}

    async def main() -> None:
        await serve(gw, FakeExchange())
        await serve(gw, FakeExchange())

    run_async(main())
    assert seen[0]["state"] is not seen[1]["state"]
    assert seen[1]["state"]["pool"] is pool
    assert gw.state == {"pool": pool}


# -- receive ----------------------------------------------------------------------------


def test_request_body_arrives_in_chunks_with_more_body() -> None:
    received: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            received.append(message)
            if not message.get("more_body"):
                break
        await hello(scope, receive, send)

    async def main() -> None:
        ex = FakeExchange("POST", "/", [("content-length", "9")], streaming=True)
        gateway(app).handler(ex)
        await settle()
        ex.feed(b"abc")
        await settle()
        ex.feed(b"def")
        await settle()
        ex.feed(b"ghi")
        ex.end()
        await ex.wait_done()

    run_async(main())
    body = b"".join(m["body"] for m in received)
    assert body == b"abcdefghi"
    assert all(m["type"] == "http.request" for m in received)
    assert [m["more_body"] for m in received][-1] is False
    assert all(m["more_body"] for m in received[:-1])


def test_whole_body_at_once_when_already_received() -> None:
    received: list[dict[str, Any]] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        received.append(await receive())
        await hello(scope, receive, send)

    ex = FakeExchange("POST", "/", [("content-length", "4")], [b"ab", b"cd"])
    run_async(serve(gateway(app), ex))
    assert received == [{"type": "http.request", "body": b"abcd", "more_body": False}]
    assert ex.receive_calls == 0  # no waiting needed


def test_receive_after_body_waits_for_disconnect() -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        message = await receive()
        events.append(message["type"])

    async def main() -> FakeExchange:
        ex = FakeExchange()
        gw = gateway(app)
        gw.handler(ex)
        await settle()
        assert events == []  # still waiting
        ex.disconnect()
        await settle()
        return ex

    ex = run_async(main())
    assert events == ["http.disconnect"]
    assert bytes(ex.body) == b"partial"


def test_receive_after_response_complete_returns_disconnect() -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await hello(scope, receive, send)
        events.append((await receive())["type"])

    async def main() -> None:
        gw = gateway(app)
        await serve(gw, FakeExchange())
        await settle()

    run_async(main())
    assert events == ["http.disconnect"]


def test_pending_receive_wakes_when_the_response_completes() -> None:
    """Starlette's StreamingResponse listens for disconnect while it streams."""
    events: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()

        async def listen() -> None:
            events.append((await receive())["type"])

        listener = asyncio.get_running_loop().create_task(listen())
        await hello(scope, receive, send)
        await asyncio.wait_for(listener, 2)

    ex = run_async(serve(gateway(app), FakeExchange()))
    assert events == ["http.disconnect"]
    assert ex.finished


def test_client_gone_before_body_gives_disconnect() -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        events.append((await receive())["type"])

    async def main() -> FakeExchange:
        ex = FakeExchange("POST", "/", [("content-length", "10")], streaming=True)
        gateway(app).handler(ex)
        await settle()
        ex.disconnect()
        await settle()
        return ex

    ex = run_async(main())
    assert events == ["http.disconnect"]
    assert ex.failed and ex.status is None  # nothing was sent to nobody


# -- send -------------------------------------------------------------------------------


def test_streamed_body_and_flow_control() -> None:
    progress: list[int] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(5):
            await send({"type": "http.response.body", "body": b"x" * 100, "more_body": True})
            progress.append(i)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def main() -> FakeExchange:
        ex = FakeExchange()
        ex.pause_after(200)
        gateway(app).handler(ex)
        await settle()
        assert progress == [0]  # the second send waits for the client
        assert len(ex.body) == 200
        ex.resume_writing()
        await ex.wait_done()
        return ex

    ex = run_async(main())
    assert progress == [0, 1, 2, 3, 4]
    assert bytes(ex.body) == b"x" * 500 and ex.finished


def test_send_after_disconnect_raises_an_oserror(caplog: pytest.LogCaptureFixture) -> None:
    """ASGI 2.4: send() on a closed connection raises an OSError subclass, every time."""
    raised: list[BaseException] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"a", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        for _ in range(2):
            try:
                await send({"type": "http.response.body", "body": b"b", "more_body": True})
            except OSError as exc:
                raised.append(exc)

    async def main() -> FakeExchange:
        ex = FakeExchange()
        gateway(app).handler(ex)
        await settle()
        ex.disconnect()
        await settle()
        return ex

    ex = run_async(main())
    assert len(raised) == 2 and all(isinstance(e, ClientGone) for e in raised)
    assert bytes(ex.body) == b"a"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_endless_stream_ends_when_the_client_goes(caplog: pytest.LogCaptureFixture) -> None:
    """An app that never checks for http.disconnect (an endless event stream) ends at its
    next send after the client left; the error that ends it is not logged."""
    sent: list[int] = []
    ended: list[bool] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            while True:
                try:
                    await send({"type": "http.response.body", "body": b"x", "more_body": True})
                except OSError:
                    raise RuntimeError("client gone") from None  # as Starlette does
                sent.append(1)
                await asyncio.sleep(0)
        finally:
            ended.append(True)

    async def main() -> FakeExchange:
        ex = FakeExchange()
        gw = gateway(app)
        gw.handler(ex)
        for _ in range(5):
            await asyncio.sleep(0)
        ex.disconnect()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not len(gw.tasks)
        return ex

    run_async(main())
    assert ended == [True] and len(sent) < 10
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_unrelated_error_after_the_client_left_is_still_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while (await receive())["type"] != "http.disconnect":
            pass
        try:
            await send({"type": "http.response.body", "body": b"x"})
        except OSError:
            pass
        raise KeyError("a bug of its own")

    async def main() -> None:
        ex = FakeExchange()
        gateway(app).handler(ex)
        await settle()
        ex.disconnect()
        await settle()

    run_async(main())
    assert [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"type": "http.response.body", "body": b"x"}], "before http.response.start"),
        (
            [
                {"type": "http.response.start", "status": 200},
                {"type": "http.response.start", "status": 200},
            ],
            "after http.response.start",
        ),
        ([{"type": "http.response.start", "status": "200"}], "status must be an int"),
        ([{"type": "websocket.accept"}], "unexpected ASGI message type 'websocket.accept'"),
        ([{"status": 200}], "must be a dict with a 'type'"),
        (
            [{"type": "http.response.start", "status": 200, "headers": [(b"x", b"a\r\nb")]}],
            "invalid http.response.start",
        ),
        (
            [{"type": "http.response.start", "status": 200, "headers": [("x", "str")]}],
            "invalid http.response.start",
        ),
        (
            [{"type": "http.response.start", "status": 200, "headers": None}],
            "invalid http.response.start",
        ),
        (
            [{"type": "http.response.start", "status": 200, "headers": [(b"a", b"b", b"c")]}],
            "invalid http.response.start",
        ),
        (
            [
                {"type": "http.response.start", "status": 200},
                {"type": "http.response.body", "body": "text"},
            ],
            "invalid http.response.body",
        ),
    ],
)
def test_protocol_errors_raise_in_send_and_fail_the_request(
    messages: list[dict[str, Any]], error: str, caplog: pytest.LogCaptureFixture
) -> None:
    raised: list[BaseException] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        try:
            for m in messages:
                await send(m)
        except RuntimeError as exc:
            raised.append(exc)
            raise

    ex = run_async(serve(gateway(app), FakeExchange()))
    assert len(raised) == 1 and error in str(raised[0])
    assert ex.failed and ex.status == 500
    assert b"a\r\nb" not in bytes(ex.body)
    errors = [r for r in caplog.records if r.name == "bastion.error"]
    assert len(errors) == 1 and errors[0].exc_info is not None


def test_app_recovering_from_a_bad_head_can_still_answer() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"a", b"\n")]})
        except RuntimeError:
            await send({"type": "http.response.start", "status": 502, "headers": []})
            await send({"type": "http.response.body", "body": b"sorry"})

    ex = run_async(serve(gateway(app), FakeExchange()))
    assert ex.status == 502 and bytes(ex.body) == b"sorry" and not ex.failed


def test_trailers_are_dropped_for_a_client_that_did_not_ask() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        assert scope["extensions"]["http.response.trailers"] == {}
        await send({"type": "http.response.start", "status": 200, "trailers": True})
        await send({"type": "http.response.body", "body": b"x"})
        assert ex.finished  # at the end of the body
        await send({"type": "http.response.trailers", "headers": [(b"a", b"b")]})

    for ex in (FakeExchange(), FakeExchange(headers=[("TE", "trailers")], http_version="1.0")):
        run_async(serve(gateway(app), ex))
        assert ex.finished and not ex.failed and bytes(ex.body) == b"x"
        assert ex.sent_trailers is None


TE = [("TE", "trailers")]


def test_trailers_end_the_response_for_a_client_that_asked() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "trailers": True})
        await send({"type": "http.response.body", "body": b"x"})
        assert not ex.finished
        await send(
            {"type": "http.response.trailers", "headers": [(b"A", b"1")], "more_trailers": True}
        )
        await send({"type": "http.response.trailers", "headers": [[b"b", b"2"], (b"vary", b"x")]})

    ex = FakeExchange(headers=TE)
    run_async(serve(gateway(app), ex))
    assert ex.finished and not ex.failed and bytes(ex.body) == b"x"
    assert ex.sent_trailers == [(b"a", b"1"), (b"b", b"2")]


def test_trailers_out_of_order_or_malformed_raise() -> None:
    errors: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "trailers": True})
        for message in (
            {"type": "http.response.trailers", "headers": []},  # before the body's end
            {"type": "http.response.body", "body": b"x"},
            {"type": "http.response.body", "body": b"y"},  # the body is over
            {"type": "http.response.trailers", "headers": [("a", "b")]},  # str, not bytes
            {"type": "http.response.trailers", "headers": [(b"a b", b"c")]},  # bad name
        ):
            try:
                await send(message)
            except RuntimeError as exc:
                errors.append(str(exc))
        # the app ends without the trailers it announced: the response ends without them

    ex = FakeExchange(headers=TE)
    run_async(serve(gateway(app), ex))
    assert len(errors) == 4, errors
    assert "before the last http.response.body" not in errors[0]
    assert "trailers expected" in errors[1]
    assert ex.finished and not ex.failed and bytes(ex.body) == b"x"
    assert ex.sent_trailers == []


def test_pathsend_sends_the_file(tmp_path: Path) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(os.urandom(200_000))

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        assert "http.response.pathsend" in scope["extensions"]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", b"200000")],
            }
        )
        await send({"type": "http.response.pathsend", "path": str(path)})

    ex = run_async(serve(gateway(app), FakeExchange()))
    assert ex.finished and bytes(ex.body) == path.read_bytes()
    assert ex.sendfile_calls and ex.sendfile_calls[0][1:] == (0, 200_000)


# -- failures ---------------------------------------------------------------------------


def test_app_exception_is_a_500_logged_once_with_a_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise ValueError("kaboom")

    ex = run_async(serve(gateway(app), FakeExchange("GET", "/boom?x=1")))
    assert ex.status == 500 and ex.failed
    assert b"kaboom" not in bytes(ex.body)
    records = [r for r in caplog.records if r.name == "bastion.error"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "exception in ASGI app" in message
    assert f"request {os.getpid():x}-" in message
    assert "GET /boom?x=1" in message
    assert records[0].exc_info is not None and records[0].exc_info[0] is ValueError


def test_exception_after_the_body_started_drops_the_connection() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise ValueError("mid-stream")

    ex = run_async(serve(gateway(app), FakeExchange()))
    assert ex.aborted and ex.status == 200 and bytes(ex.body) == b"part"


def test_exception_after_complete_response_is_logged_but_response_kept(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await hello(scope, receive, send)
        raise ValueError("cleanup failed")

    async def main() -> FakeExchange:
        ex = await serve(gateway(app), FakeExchange())
        await settle()
        return ex

    ex = run_async(main())
    assert ex.finished and not ex.failed and not ex.failed_after_finish
    assert any("after its response was sent" in r.getMessage() for r in caplog.records)


def test_returning_without_a_response_is_a_500(caplog: pytest.LogCaptureFixture) -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        return None

    ex = run_async(serve(gateway(app), FakeExchange()))
    assert ex.status == 500
    assert any("without sending a response" in r.getMessage() for r in caplog.records)


def test_returning_mid_body_drops_the_connection() -> None:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200})
        await send({"type": "http.response.body", "body": b"half", "more_body": True})

    ex = run_async(serve(gateway(app), FakeExchange()))
    assert ex.aborted and bytes(ex.body) == b"half"


def boom_app() -> Any:
    async def app(scope: Scope, receive: Any, send: Any) -> None:
        raise ZeroDivisionError("secret detail")

    return app


def test_debug_shows_the_traceback_to_a_loopback_client() -> None:
    ex = run_async(serve(gateway(boom_app(), debug=True), FakeExchange()))
    assert ex.status == 500
    assert ex.header("content-type") == "text/plain; charset=utf-8"
    assert b"ZeroDivisionError: secret detail" in bytes(ex.body)
    assert b"Traceback" in bytes(ex.body)


@pytest.mark.parametrize(
    ("debug", "client"),
    [(True, ("203.0.113.9", 1)), (False, ("127.0.0.1", 1)), (True, None)],
)
def test_no_traceback_otherwise(debug: bool, client: tuple[str, int] | None) -> None:
    ex = run_async(serve(gateway(boom_app(), debug=debug), FakeExchange(client=client)))
    assert ex.status == 500
    assert b"secret detail" not in bytes(ex.body)


def test_shutdown_waits_for_background_work_then_cancels_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await hello(scope, receive, send)
        if scope["path"] == "/background":
            await asyncio.sleep(0.05)  # work after the response, like a background task
            events.append("background done")
        else:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                events.append("cancelled")
                raise

    async def main() -> None:
        gw = ASGIGateway(app, Config(workers=WorkersConfig(graceful_timeout=0.5)))
        for path in ("/background", "/forever"):
            gw.handler(FakeExchange("GET", path))
        await settle()
        started = asyncio.get_running_loop().time()
        await gw.shutdown()
        assert 0.4 < asyncio.get_running_loop().time() - started < 3
        assert not len(gw.tasks)

    run_async(main())
    assert events == ["background done", "cancelled"]
    assert any("cancelled 1 request task" in r.getMessage() for r in caplog.records)


def test_many_requests_in_a_row() -> None:
    async def main() -> None:
        gw = gateway(hello)
        for _ in range(200):
            ex = await serve(gw, FakeExchange())
            assert ex.status == 200
        await settle()
        assert not len(gw.tasks)

    run_async(main())
