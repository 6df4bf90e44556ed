"""The WSGI gateway against an in-memory exchange, inline and on threads."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from wsgiref.validate import validator

import pytest

from bastion.config.schema import AppConfig, Config, ServerConfig
from bastion.gateway.wsgi import WSGIGateway
from bastion.gateway.wsgi_io import SPOOL_LIMIT, FileWrapper
from tests.unit.fake_exchange import FakeExchange, run_async

Environ = dict[str, Any]


@pytest.fixture(params=["inline", "threads"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def gateway(app: Any, mode: str = "inline", **app_kw: Any) -> WSGIGateway:
    debug = app_kw.pop("debug", False)
    return WSGIGateway(
        app,
        Config(
            app=AppConfig(wsgi_mode=mode, threads=4, **app_kw),  # type: ignore[arg-type]
            server=ServerConfig(debug=debug),
        ),
    )


async def settle(rounds: int = 5) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def until(condition: Any, timeout: float = 5.0) -> None:
    """Poll ``condition()`` on the loop until it is true (threads report back async)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def serve(app: Any, ex: FakeExchange, mode: str = "inline", **kw: Any) -> FakeExchange:
    async def main() -> None:
        gw = gateway(app, mode, **kw)
        gw.handler(ex)
        await ex.wait_done()
        await settle()
        await gw.shutdown()

    run_async(main())
    return ex


def hello(environ: Environ, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]


class Closing:
    """An app result that records whether close() was called."""

    def __init__(self, chunks: list[Any], fail_at: int | None = None) -> None:
        self.chunks = chunks
        self.fail_at = fail_at
        self.closed = threading.Event()

    def __iter__(self) -> Iterator[Any]:
        for i, chunk in enumerate(self.chunks):
            if i == self.fail_at:
                raise ValueError("broke while iterating")
            yield chunk

    def close(self) -> None:
        self.closed.set()


# -- environ ----------------------------------------------------------------------------


def capture(environ: Environ, start_response: Any) -> list[bytes]:
    captured.append(dict(environ))
    start_response("204 No Content", [])
    return []


captured: list[Environ] = []


@pytest.fixture(autouse=True)
def _reset_captured() -> None:
    captured.clear()


def environ_for(ex: FakeExchange, mode: str = "inline", **kw: Any) -> Environ:
    serve(capture, ex, mode, **kw)
    return captured[0]


def test_environ_is_complete(mode: str) -> None:
    ex = FakeExchange(
        "GET",
        "/caf%C3%A9/a%2Fb?x=1&y=%20",
        [
            ("Host", "example.org:8443"),
            ("Accept", "text/html"),
            ("Accept", "text/plain"),
            ("Cookie", "a=1"),
            ("Cookie", "b=2"),
            ("X-Forwarded_For", "6.6.6.6"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("Content-Type", "text/plain"),
        ],
        client=("10.1.2.3", 5555),
        scheme="https",
    )
    env = environ_for(ex, mode)
    assert env["REQUEST_METHOD"] == "GET"
    assert env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/caf\xc3\xa9/a/b"  # bytes as latin-1, %2F decoded
    assert env["QUERY_STRING"] == "x=1&y=%20"
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["SERVER_NAME"] == "example.org"
    assert env["SERVER_PORT"] == "8443"
    assert env["REMOTE_ADDR"] == "10.1.2.3"
    assert env["REMOTE_PORT"] == "5555"
    assert env["HTTP_HOST"] == "example.org:8443"
    assert env["HTTP_ACCEPT"] == "text/html, text/plain"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_X_FORWARDED_FOR"] == "1.2.3.4"  # the underscore spoof was dropped
    assert env["CONTENT_TYPE"] == "text/plain"
    assert "HTTP_CONTENT_TYPE" not in env
    assert "CONTENT_LENGTH" not in env
    assert env["wsgi.version"] == (1, 0)
    assert env["wsgi.url_scheme"] == "https"
    assert env["wsgi.multithread"] is (mode == "threads")
    assert env["wsgi.multiprocess"] is True
    assert env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.file_wrapper"] is FileWrapper
    assert env["wsgi.input"].read() == b""
    assert hasattr(env["wsgi.errors"], "write")


@pytest.mark.parametrize(
    ("host", "server", "name", "port"),
    [
        ("[::1]:9000", ("::1", 9000), "[::1]", "9000"),
        ("[::1]", ("::1", 9000), "[::1]", "80"),
        ("example.org", ("127.0.0.1", 8000), "example.org", "80"),
        ("example.org:", ("127.0.0.1", 8000), "example.org", "80"),  # an empty port
        (None, ("192.0.2.1", 8123), "192.0.2.1", "8123"),
        (None, ("/run/app.sock", None), "localhost", "80"),
    ],
)
def test_server_name_and_port(
    host: str | None, server: tuple[str, int | None], name: str, port: str
) -> None:
    headers = [("Host", host)] if host else []
    env = environ_for(FakeExchange(headers=headers, server=server, http_version="1.0"))
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == (name, port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"


def test_unix_socket_client_has_no_remote_addr() -> None:
    env = environ_for(FakeExchange(client=None))
    assert "REMOTE_ADDR" not in env and "REMOTE_PORT" not in env


@pytest.mark.parametrize(
    ("target", "script_name", "path_info"),
    [
        ("/app/users/1", "/app", "/users/1"),
        ("/app", "/app", ""),
        ("/users/1", "/app", "/users/1"),  # the proxy already stripped the prefix
        ("/application", "/app", "/application"),
    ],
)
def test_root_path_becomes_script_name(target: str, script_name: str, path_info: str) -> None:
    env = environ_for(FakeExchange("GET", target), root_path="/app/")
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == (script_name, path_info)


# -- request body -----------------------------------------------------------------------


def echo(environ: Environ, start_response: Any) -> list[bytes]:
    stream = environ["wsgi.input"]
    first = stream.readline()
    rest = stream.read()
    body = first + rest
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def test_body_already_received(mode: str) -> None:
    ex = FakeExchange("POST", "/", [("Content-Length", "12")], b"line1\nline2\n")
    serve(echo, ex, mode)
    assert ex.status == 200 and bytes(ex.body) == b"line1\nline2\n"


def test_small_body_waits_for_the_whole_of_it(mode: str) -> None:
    calls: list[bytes] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        calls.append(environ["wsgi.input"].read())
        return echo({**environ, "wsgi.input": io.BytesIO(calls[-1])}, start_response)

    async def main() -> FakeExchange:
        gw = gateway(app, mode)
        ex = FakeExchange("POST", "/", [("Content-Length", "6")], streaming=True)
        gw.handler(ex)
        ex.feed(b"abc")
        await settle()
        assert calls == []  # the app waits for the rest
        ex.feed(b"def")
        ex.end()
        await ex.wait_done()
        await gw.shutdown()
        return ex

    ex = run_async(main())
    assert calls == [b"abcdef"] and bytes(ex.body) == b"abcdef"
    assert ex.receive_calls == 0  # no coroutine needed for a small body


def test_large_or_chunked_body_is_spooled_with_its_length(mode: str) -> None:
    seen: list[tuple[str, int, bool]] = []
    chunk = os.urandom(256 * 1024)
    total = 5 * len(chunk)  # over the in-memory limit: goes to a temporary file

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        data = b"".join(iter(lambda: stream.read(70_000), b""))
        seen.append((environ["CONTENT_LENGTH"], len(data), data == chunk * 5))
        start_response("200 OK", [])
        return [b"ok"]

    async def main() -> FakeExchange:
        gw = gateway(app, mode)
        ex = FakeExchange("POST", "/", [("Transfer-Encoding", "chunked")], streaming=True)
        gw.handler(ex)
        for _ in range(5):
            ex.feed(chunk)
            await settle()
        ex.end()
        await ex.wait_done()
        await gw.shutdown()
        return ex

    assert total > SPOOL_LIMIT
    ex = run_async(main())
    assert seen == [(str(total), total, True)]
    assert bytes(ex.body) == b"ok"


def test_chunked_body_already_received_gets_a_content_length(mode: str) -> None:
    env = environ_for(
        FakeExchange("POST", "/", [("Transfer-Encoding", "chunked")], [b"abc", b"de"]), mode
    )
    assert env["CONTENT_LENGTH"] == "5"


def test_client_leaving_mid_body_never_reaches_the_app(mode: str) -> None:
    calls: list[int] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        calls.append(1)
        return []

    async def main() -> list[FakeExchange]:
        gw = gateway(app, mode)
        small = FakeExchange("POST", "/", [("Content-Length", "10")], streaming=True)
        large = FakeExchange("POST", "/", [("Content-Length", "9999999")], streaming=True)
        for ex in (small, large):
            gw.handler(ex)
            ex.feed(b"abc")
            await settle()
            ex.disconnect()
            await settle()
        await gw.shutdown()
        return [small, large]

    for ex in run_async(main()):
        assert ex.failed and ex.status is None
    assert calls == []


def test_input_supports_the_whole_pep3333_read_api() -> None:
    results: list[Any] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        results.append(stream.read(3))
        results.append(stream.readline(2))
        results.append(stream.readline())
        results.append(stream.readlines(1))
        results.append(list(stream))
        results.append(stream.read())
        start_response("200 OK", [])
        return []

    body = b"abcdef\nline2\nline3\nline4\n"
    serve(app, FakeExchange("POST", "/", [("Content-Length", str(len(body)))], body))
    assert results == [b"abc", b"de", b"f\n", [b"line2\n"], [b"line3\n", b"line4\n"], b""]


# -- response ---------------------------------------------------------------------------


def test_single_chunk_response_goes_out_in_one_write(mode: str) -> None:
    ex = serve(hello, FakeExchange(), mode)
    assert ex.status == 200 and ex.finished
    assert ex.response_headers == [(b"content-type", b"text/plain"), (b"content-length", b"5")]
    assert ex.writes == [b"hello"]


def test_single_chunk_iterable_with_content_length_goes_out_at_once(mode: str) -> None:
    result = Closing([b"hello"])

    def app(environ: Environ, start_response: Any) -> Closing:
        start_response("200 OK", [("Content-Length", "5")])
        return result

    ex = serve(app, FakeExchange(), mode)
    assert ex.writes == [b"hello"] and ex.finished
    assert result.closed.is_set()


def test_generator_with_empty_chunks_and_late_start_response(mode: str) -> None:
    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        yield b""  # allowed before start_response
        start_response("201 Created", [("X-Late", "yes")])
        yield b"a"
        yield b""
        yield b"bc"

    ex = serve(app, FakeExchange(), mode)
    assert ex.status == 201 and ex.header("x-late") == "yes"
    assert bytes(ex.body) == b"abc" and ex.finished


def test_empty_body(mode: str) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("304 Not Modified", [])
        return []

    ex = serve(app, FakeExchange(), mode)
    assert ex.status == 304 and ex.finished and bytes(ex.body) == b""


def test_write_callable(mode: str) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [])
        write(b"one ")
        write(b"two ")
        return [b"three"]

    ex = serve(app, FakeExchange(), mode)
    assert bytes(ex.body) == b"one two three" and ex.finished


def test_long_body_with_slow_client_continues_after_drain(mode: str) -> None:
    result = Closing([b"x" * 1000] * 50)

    def app(environ: Environ, start_response: Any) -> Closing:
        start_response("200 OK", [])
        return result

    async def main() -> FakeExchange:
        gw = gateway(app, mode)
        ex = FakeExchange()
        ex.pause_after(3000)
        gw.handler(ex)
        await until(lambda: len(ex.body) >= 3000)
        await settle()
        assert not ex.done
        assert len(ex.body) < 50_000
        ex.resume_writing()
        await ex.wait_done()
        await until(result.closed.is_set)
        await gw.shutdown()
        return ex

    ex = run_async(main())
    assert bytes(ex.body) == b"x" * 50_000 and ex.finished


def test_exc_info_replaces_the_head_before_it_is_sent(mode: str) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("X-A", "1")])
        try:
            raise KeyError("x")
        except KeyError:
            import sys

            start_response("503 Service Unavailable", [("X-B", "2")], sys.exc_info())
        return [b"unavailable"]

    ex = serve(app, FakeExchange(), mode)
    assert ex.status == 503 and ex.header("x-b") == "2" and ex.header("x-a") is None


def test_exc_info_after_the_head_was_sent_reraises(mode: str) -> None:
    raised: list[BaseException] = []

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        yield b"started"
        try:
            raise KeyError("late")
        except KeyError:
            import sys

            try:
                start_response("500 Oops", [], sys.exc_info())
            except KeyError as exc:
                raised.append(exc)
                raise

    ex = serve(app, FakeExchange(), mode)
    assert len(raised) == 1
    assert ex.aborted and bytes(ex.body) == b"started"


def test_second_start_response_without_exc_info_is_an_error(mode: str) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        start_response("200 OK", [])
        return []

    assert serve(app, FakeExchange(), mode).status == 500


# -- failures and close() ---------------------------------------------------------------


def test_app_exception_is_a_logged_500(mode: str, caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        raise RuntimeError("exploded")

    ex = serve(app, FakeExchange("GET", "/x"), mode)
    assert ex.status == 500 and b"exploded" not in bytes(ex.body)
    records = [r for r in caplog.records if r.name == "bastion.error"]
    assert len(records) == 1
    assert "exception in WSGI app" in records[0].getMessage()
    assert f"request {os.getpid():x}-" in records[0].getMessage()
    assert records[0].exc_info is not None


def test_debug_500_has_the_traceback_for_loopback(mode: str) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        raise RuntimeError("visible in debug")

    ex = serve(app, FakeExchange(), mode, debug=True)
    assert ex.status == 500 and b"RuntimeError: visible in debug" in bytes(ex.body)
    remote = serve(app, FakeExchange(client=("198.51.100.7", 1)), mode, debug=True)
    assert remote.status == 500 and b"visible" not in bytes(remote.body)


def test_close_is_called_when_iteration_raises(mode: str) -> None:
    result = Closing([b"a", b"b", b"c"], fail_at=0)

    def app(environ: Environ, start_response: Any) -> Closing:
        start_response("200 OK", [])
        return result

    ex = serve(app, FakeExchange(), mode)
    assert result.closed.is_set() and ex.status == 500


def test_close_is_called_when_iteration_raises_after_the_head(mode: str) -> None:
    result = Closing([b"a", b"b", b"c"], fail_at=2)

    def app(environ: Environ, start_response: Any) -> Closing:
        start_response("200 OK", [])
        return result

    ex = serve(app, FakeExchange(), mode)
    assert result.closed.is_set() and ex.aborted and bytes(ex.body) == b"ab"


def test_close_is_called_when_the_client_leaves(mode: str) -> None:
    produced: list[int] = []
    closed = threading.Event()

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        try:
            for i in range(100_000):  # effectively endless
                produced.append(i)
                yield b"tick\n"
        finally:
            closed.set()

    async def main() -> FakeExchange:
        gw = gateway(app, mode)
        ex = FakeExchange()
        ex.pause_after(50)
        gw.handler(ex)
        await until(lambda: len(ex.body) >= 50)
        ex.disconnect()
        await until(closed.is_set)
        await gw.shutdown()
        return ex

    ex = run_async(main())
    assert closed.is_set()
    assert len(produced) < 100_000
    assert ex.failed and ex.status == 200


@pytest.mark.parametrize(
    "headers",
    [[("X-Evil", "a\r\nSet-Cookie: x=1")], [("X-Evil\n", "a")], [("X-Bad", 5)], [("X", "é€")]],
)
def test_bad_headers_never_reach_the_wire(mode: str, headers: list[Any]) -> None:
    result = Closing([b"body"])

    def app(environ: Environ, start_response: Any) -> Closing:
        start_response("200 OK", headers)
        return result

    ex = serve(app, FakeExchange(), mode)
    assert ex.status == 500 and ex.response_headers == []
    assert result.closed.is_set()


@pytest.mark.parametrize("status", ["200", "OK", "20 OK", "2000 OK", b"200 OK", 200])
def test_bad_status(mode: str, status: Any) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response(status, [])
        return [b"x"]

    ex = serve(app, FakeExchange(), mode)
    assert (ex.status == 200) is (status == "200")


def test_str_body_is_an_error(mode: str) -> None:
    def app(environ: Environ, start_response: Any) -> list[Any]:
        start_response("200 OK", [])
        return ["text is not bytes"]

    assert serve(app, FakeExchange(), mode).status == 500


@pytest.mark.parametrize("via", ["result", "write"])
def test_a_body_that_is_not_bytes_gets_the_same_words_everywhere(
    mode: str, via: str, caplog: pytest.LogCaptureFixture
) -> None:
    def app(environ: Environ, start_response: Any) -> list[Any]:
        write = start_response("200 OK", [])
        if via == "write":
            write("text")
            return []
        return [b"ok ", "text"]

    ex = serve(app, FakeExchange(), mode)
    assert ex.status == 500 or ex.aborted
    [record] = [r for r in caplog.records if r.name == "bastion.error"]
    assert record.exc_info is not None
    assert str(record.exc_info[1]) == (
        "WSGI response body data must be bytes (or bytearray, memoryview), not str"
    )


def test_body_without_start_response_is_an_error(mode: str) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        return [b"x"]

    assert serve(app, FakeExchange(), mode).status == 500


def test_errors_stream_logs_lines(caplog: pytest.LogCaptureFixture) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        errors = environ["wsgi.errors"]
        errors.write("first line\nsecond ")
        errors.write("part\n")
        errors.writelines(["third\n"])
        errors.write("unterminated")
        errors.flush()
        start_response("200 OK", [])
        return []

    serve(app, FakeExchange())
    lines = [r.getMessage() for r in caplog.records if r.name == "bastion.error"]
    assert lines == ["first line", "second part", "third", "unterminated"]


# -- file_wrapper -----------------------------------------------------------------------


@pytest.fixture
def data_file(tmp_path: Path) -> Path:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(300_000))
    return path


def test_file_wrapper_with_length_uses_sendfile_from_the_position(
    mode: str, data_file: Path
) -> None:
    opened: list[Any] = []

    def app(environ: Environ, start_response: Any) -> Any:
        f = open(data_file, "rb")  # noqa: SIM115 - closed by the server through the wrapper
        opened.append(f)
        f.seek(1000)
        start_response("200 OK", [("Content-Length", str(300_000 - 1000))])
        return environ["wsgi.file_wrapper"](f)

    async def main() -> FakeExchange:
        gw = gateway(app, mode)
        ex = FakeExchange()
        gw.handler(ex)
        await ex.wait_done()
        await until(lambda: opened and opened[0].closed)
        await gw.shutdown()
        return ex

    ex = run_async(main())
    assert ex.finished and bytes(ex.body) == data_file.read_bytes()[1000:]
    assert [c[1:] for c in ex.sendfile_calls] == [(1000, 299_000)]


def test_file_wrapper_without_length_is_iterated(mode: str, data_file: Path) -> None:
    opened: list[Any] = []

    def app(environ: Environ, start_response: Any) -> Any:
        f = open(data_file, "rb")  # noqa: SIM115
        opened.append(f)
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](f, 65536)

    ex = serve(app, FakeExchange(), mode)
    assert bytes(ex.body) == data_file.read_bytes() and not ex.sendfile_calls
    assert opened[0].closed


def test_file_wrapper_of_a_non_file_is_iterated(mode: str) -> None:
    def app(environ: Environ, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "6")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"memory"), 4)

    ex = serve(app, FakeExchange(), mode)
    assert bytes(ex.body) == b"memory" and not ex.sendfile_calls


def test_file_shorter_than_its_content_length_drops_the_connection(
    mode: str, data_file: Path
) -> None:
    def app(environ: Environ, start_response: Any) -> Any:
        start_response("200 OK", [("Content-Length", "400000")])
        return FileWrapper(open(data_file, "rb"))

    async def main() -> FakeExchange:
        gw = gateway(app, mode)
        ex = FakeExchange()
        gw.handler(ex)
        await ex.wait_done()
        await gw.shutdown()
        return ex

    ex = run_async(main())
    assert ex.aborted and len(ex.body) == 300_000


# -- wsgiref's validator ----------------------------------------------------------------


def validated(app: Any) -> Any:
    return validator(app)


def test_validator_get(mode: str) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["PATH_INFO"].encode("latin-1")]

    ex = serve(validated(app), FakeExchange("GET", "/v?q=1", [("Host", "h")]), mode)
    assert ex.status == 200 and bytes(ex.body) == b"/v"


def test_validator_post_readline_and_write(mode: str) -> None:
    def app(environ: Environ, start_response: Any) -> list[bytes]:
        stream = environ["wsgi.input"]
        first = stream.readline()
        rest = stream.read(int(environ["CONTENT_LENGTH"]) - len(first))
        environ["wsgi.errors"].write("validated\n")
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(first.upper())
        return [rest]

    body = b"hello\nworld"
    ex = serve(
        validated(app),
        FakeExchange("POST", "/", [("Content-Length", str(len(body)))], body),
        mode,
    )
    assert bytes(ex.body) == b"HELLO\nworld"


def test_validator_file_wrapper(mode: str, data_file: Path) -> None:
    def app(environ: Environ, start_response: Any) -> Any:
        start_response(
            "200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", "300000")]
        )
        return environ["wsgi.file_wrapper"](open(data_file, "rb"))

    ex = serve(validated(app), FakeExchange(), mode)
    assert bytes(ex.body) == data_file.read_bytes()


def test_flask_app(mode: str) -> None:
    flask = pytest.importorskip("flask")
    app = flask.Flask("bastion_test")

    @app.post("/items/<int:item>")
    def item(item: int) -> Any:
        return {"item": item, "json": flask.request.get_json(), "q": flask.request.args["q"]}

    body = b'{"a": 1}'
    ex = serve(
        app,
        FakeExchange(
            "POST",
            "/items/7?q=z",
            [("Host", "x"), ("Content-Type", "application/json"), ("Content-Length", "8")],
            body,
        ),
        mode,
    )
    assert ex.status == 200
    import json

    assert json.loads(bytes(ex.body)) == {"item": 7, "json": {"a": 1}, "q": "z"}


# -- threads mode specifics -------------------------------------------------------------


def test_threads_run_requests_concurrently() -> None:
    gate = threading.Barrier(3, timeout=5)

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        gate.wait()  # all three must be in the app at once
        start_response("200 OK", [])
        return [threading.current_thread().name.encode()]

    async def main() -> list[FakeExchange]:
        gw = gateway(app, "threads")
        exchanges = [FakeExchange() for _ in range(3)]
        for ex in exchanges:
            gw.handler(ex)
        for ex in exchanges:
            await ex.wait_done()
        await gw.shutdown()
        return exchanges

    names = {bytes(ex.body) for ex in run_async(main())}
    assert len(names) == 3 and all(n.startswith(b"bastion-wsgi") for n in names)


def test_thread_waits_when_too_much_is_queued_for_a_slow_client() -> None:
    from bastion.gateway.wsgi_threads import QUEUED_LIMIT

    produced: list[int] = []
    block = b"y" * (512 * 1024)
    count = 24  # 12 MiB in all, three times the cap

    def app(environ: Environ, start_response: Any) -> Iterator[bytes]:
        start_response("200 OK", [])
        for i in range(count):
            produced.append(i)
            yield block

    async def main() -> FakeExchange:
        gw = gateway(app, "threads")
        ex = FakeExchange()
        ex.pause_after(1)
        gw.handler(ex)
        await until(lambda: len(produced) * len(block) > QUEUED_LIMIT)
        await asyncio.sleep(0.2)
        assert len(produced) * len(block) <= QUEUED_LIMIT + 3 * len(block)
        ex.resume_writing()
        await ex.wait_done()
        await gw.shutdown()
        return ex

    ex = run_async(main())
    assert len(ex.body) == count * len(block) and ex.finished


def test_threads_write_after_disconnect_raises_client_gone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from bastion.gateway.wsgi_threads import ClientGone

    outcome: list[str] = []
    stop = threading.Event()

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        write = start_response("200 OK", [])
        try:
            for _ in range(10_000):
                write(b"data")
                stop.wait(0.001)
        except ClientGone:
            outcome.append("gone")
            raise
        return []

    async def main() -> FakeExchange:
        gw = gateway(app, "threads")
        ex = FakeExchange()
        gw.handler(ex)
        await until(lambda: len(ex.body) > 0)
        ex.disconnect()
        await until(lambda: bool(outcome))
        await gw.shutdown()
        return ex

    ex = run_async(main())
    assert outcome == ["gone"]
    assert ex.failed and ex.dropped_writes == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_shutdown_cancels_a_response_stuck_on_a_client_that_never_reads() -> None:
    result = Closing([b"z" * 1000] * 10)

    def app(environ: Environ, start_response: Any) -> Closing:
        start_response("200 OK", [])
        return result

    async def main() -> WSGIGateway:
        gw = gateway(app)
        ex = FakeExchange()
        ex.pause_after(1)
        gw.handler(ex)
        await settle()
        assert len(gw.tasks)
        started = asyncio.get_running_loop().time()
        await gw.shutdown(grace=0.2)
        assert asyncio.get_running_loop().time() - started < 2
        return gw

    gw = run_async(main())
    assert not len(gw.tasks) and result.closed.is_set()


def test_threads_shutdown_drops_queued_requests_and_finishes_running_ones() -> None:
    release = threading.Event()
    ran: list[str] = []

    def app(environ: Environ, start_response: Any) -> list[bytes]:
        ran.append(environ["PATH_INFO"])
        release.wait(5)
        start_response("200 OK", [])
        return [b"done"]

    async def main() -> tuple[FakeExchange, FakeExchange]:
        gw = WSGIGateway(app, Config(app=AppConfig(wsgi_mode="threads", threads=1)))
        running, queued = FakeExchange("GET", "/running"), FakeExchange("GET", "/queued")
        gw.handler(running)
        gw.handler(queued)
        await until(lambda: ran == ["/running"])
        asyncio.get_running_loop().call_later(0.1, release.set)
        await gw.shutdown()
        await running.wait_done()
        return running, queued

    running, queued = run_async(main())
    assert ran == ["/running"]
    assert bytes(running.body) == b"done" and running.finished
    assert queued.failed and queued.status == 500
