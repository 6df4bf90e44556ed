"""Security presets and add/remove rules around an in-memory exchange."""

from __future__ import annotations

import pytest

from bastion.config.schema import CompressConfig, HeadersConfig
from bastion.edge.compress import compress_filter
from bastion.edge.headers import PERMISSIONS_POLICY, headers_filter, preset_headers
from bastion.protocol.types import Exchange
from tests.unit.fake_exchange import FakeExchange

HTML = (b"content-type", b"text/html; charset=utf-8")


def answer(
    cfg: HeadersConfig, headers: list[tuple[bytes, bytes]], status: int = 200
) -> FakeExchange:
    ex = FakeExchange()
    filt = headers_filter(cfg)
    assert filt is not None
    w = filt(ex)
    w.start_response(status, headers)
    w.finish(b"<p>hi</p>")
    return ex


def test_nothing_to_do_is_none() -> None:
    assert headers_filter(HeadersConfig()) is None
    assert headers_filter(HeadersConfig(preset="none", hsts_max_age=5)) is None


def test_basic_preset() -> None:
    ex = answer(HeadersConfig(preset="basic"), [HTML])
    assert ex.header("x-content-type-options") == "nosniff"
    assert ex.header("referrer-policy") == "strict-origin-when-cross-origin"
    assert ex.header("x-frame-options") == "SAMEORIGIN"
    assert ex.header("strict-transport-security") is None
    assert ex.header("content-type") == "text/html; charset=utf-8"
    assert bytes(ex.body) == b"<p>hi</p>"


def test_strict_preset() -> None:
    ex = answer(HeadersConfig(preset="strict", hsts_max_age=600), [HTML])
    assert ex.header("strict-transport-security") == "max-age=600; includeSubDomains"
    assert ex.header("x-content-type-options") == "nosniff"
    assert ex.header("referrer-policy") == "strict-origin-when-cross-origin"
    assert ex.header("x-frame-options") == "DENY"
    assert ex.header("cross-origin-opener-policy") == "same-origin"
    assert ex.header("permissions-policy") == PERMISSIONS_POLICY
    assert "camera=()" in PERMISSIONS_POLICY and "geolocation=()" in PERMISSIONS_POLICY


def test_preset_names_are_unique() -> None:
    for preset in ("basic", "strict"):
        names = [n.lower() for n, _ in preset_headers(preset, 1)]
        assert len(names) == len(set(names))
    with pytest.raises(ValueError):
        preset_headers("loose", 1)


def test_preset_keeps_the_apps_own_value() -> None:
    ex = answer(HeadersConfig(preset="strict"), [HTML, (b"X-Frame-Options", b"SAMEORIGIN")])
    assert ex.header("x-frame-options") == "SAMEORIGIN"
    assert ex.header("x-content-type-options") == "nosniff"
    assert len([n for n, _ in ex.response_headers if n == b"x-frame-options"]) == 1


def test_content_security_policy_replaces_the_apps() -> None:
    csp = "default-src 'self'; img-src 'self' data:"
    ex = answer(
        HeadersConfig(content_security_policy=csp),
        [HTML, (b"content-security-policy", b"default-src *")],
    )
    assert ex.header("content-security-policy") == csp


def test_add_replaces_case_insensitively() -> None:
    ex = answer(
        HeadersConfig(add={"Cache-Control": "no-store", "X-Served-By": "edge-1"}),
        [HTML, (b"cache-control", b"max-age=60"), (b"CACHE-CONTROL", b"public")],
    )
    assert ex.header("cache-control") == "no-store"
    assert ex.header("x-served-by") == "edge-1"


def test_add_beats_the_preset() -> None:
    ex = answer(HeadersConfig(preset="basic", add={"x-frame-options": "DENY"}), [HTML])
    assert ex.header("x-frame-options") == "DENY"


def test_remove_case_insensitive() -> None:
    ex = answer(
        HeadersConfig(remove=("x-powered-by", "SERVER")),
        [HTML, (b"X-Powered-By", b"PHP/5"), (b"Server", b"gunicorn"), (b"x-keep", b"1")],
    )
    assert ex.header("x-powered-by") is None
    assert ex.header("server") is None
    assert ex.header("x-keep") == "1"


def test_remove_beats_preset_and_add() -> None:
    ex = answer(
        HeadersConfig(
            preset="strict", add={"X-Test": "1"}, remove=("X-Test", "Permissions-Policy")
        ),
        [HTML],
    )
    assert ex.header("x-test") is None
    assert ex.header("permissions-policy") is None
    assert ex.header("strict-transport-security") is not None


@pytest.mark.parametrize("status", [200, 301, 404, 500])
def test_applies_to_every_status(status: int) -> None:
    ex = answer(HeadersConfig(preset="basic"), [HTML], status)
    assert ex.status == status
    assert ex.header("x-content-type-options") == "nosniff"


def test_app_list_not_mutated() -> None:
    headers = [HTML, (b"server", b"x")]
    answer(HeadersConfig(preset="basic", remove=("server",)), headers)
    assert headers == [HTML, (b"server", b"x")]


@pytest.mark.parametrize(
    "cfg",
    [
        HeadersConfig(add={"X-Bad": "a\r\nInjected: yes"}),
        HeadersConfig(add={"X-Bad": "a\nb"}),
        HeadersConfig(add={"Bad Name": "v"}),
        HeadersConfig(add={"X-Bad": "\u2603"}),
        HeadersConfig(content_security_policy="default-src 'self'\r\n"),
    ],
)
def test_bad_values_refused_at_build(cfg: HeadersConfig) -> None:
    with pytest.raises(ValueError):
        headers_filter(cfg)


def test_with_compression_both_apply() -> None:
    """Headers outside compression: rules see the app's headers, compression the result."""
    ex = FakeExchange(headers=[("accept-encoding", "gzip")])
    comp = compress_filter(CompressConfig(enabled=True))
    head = headers_filter(HeadersConfig(preset="basic", add={"Cache-Control": "no-transform"}))
    assert comp is not None and head is not None
    w: Exchange = head(comp(ex))
    w.start_response(200, [HTML])
    w.finish(b"x" * 5000)
    assert ex.header("x-content-type-options") == "nosniff"
    assert ex.header("content-encoding") is None  # no-transform, added by the rule, is respected
    ex = FakeExchange(headers=[("accept-encoding", "gzip")])
    head = headers_filter(HeadersConfig(preset="basic"))
    assert head is not None
    w = head(comp(ex))
    w.start_response(200, [HTML])
    w.finish(b"x" * 5000)
    assert ex.header("x-content-type-options") == "nosniff"
    assert ex.header("content-encoding") == "gzip"


def test_wrapper_has_slots() -> None:
    filt = headers_filter(HeadersConfig(preset="basic"))
    assert filt is not None
    assert not hasattr(filt(FakeExchange()), "__dict__")
