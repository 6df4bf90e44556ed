"""Rate limiting without a server: rates, the GCRA of the local backend, the keys, and
configuration errors that name the file, the key and what was expected."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bastion.config.errors import ConfigError
from bastion.config.load import load_config
from bastion.config.ratelimit_schema import RouteRateLimitConfig
from bastion.config.render import render_config
from bastion.edge.ratelimit import Limit, LocalGcra, RateError, parse_rate
from bastion.protocol.head import RequestHead


def test_parse_rate() -> None:
    assert parse_rate("100/s") == (100, 1)
    assert parse_rate("600/m") == (600, 60)
    assert parse_rate(" 20 / 10s ") == (20, 10)
    assert parse_rate("5000/h").interval == pytest.approx(0.72)
    assert parse_rate("1/d") == (1, 86400)
    for bad in ("100", "0/s", "10/w", "1.5/s", "10/0s", "-1/s", "2000000/s"):
        with pytest.raises(RateError):
            parse_rate(bad)


def limit(rate: str, burst: int = 0, **kw: str) -> Limit:
    return Limit(RouteRateLimitConfig(rate=rate, burst=burst, **kw), "/#0")  # type: ignore[arg-type]


def test_local_gcra_burst_remaining_and_retry() -> None:
    store = LocalGcra()
    lim = limit("10/s", burst=3)  # T = 100 ms
    answers = [store.decide(["k"], [lim]) for _ in range(4)]
    assert [a[0] for a in answers] == [1, 1, 1, 0]
    assert [a[2] for a in answers] == [2, 1, 0, 0]  # remaining
    retry_us = answers[3][1]
    assert 0 < retry_us <= 100_000
    assert store.decide(["other"], [lim])[0] == 1  # another key, another count
    time.sleep(0.12)
    assert store.decide(["k"], [lim])[0] == 1
    assert store.decide(["k"], [lim])[0] == 0


def test_local_gcra_default_burst_is_the_count_and_all_limits_must_pass() -> None:
    store = LocalGcra()
    wide = limit("5/m")
    narrow = limit("2/m")
    assert wide.burst == 5
    got = [store.decide(["w", "n"], [wide, narrow])[0] for _ in range(4)]
    assert got == [1, 1, 0, 0]
    # the refused requests did not count against the wide limit: 3 of 5 left
    assert [store.decide(["w"], [wide])[0] for _ in range(4)] == [1, 1, 1, 0]


def head(**kw: object) -> RequestHead:
    base: dict[str, object] = {
        "method": "GET",
        "raw_path": b"/",
        "query_string": b"",
        "http_version": "1.1",
        "headers": [(b"x-tenant", b"acme")],
        "client": ("192.0.2.7", 5000),
        "server": ("127.0.0.1", 8000),
        "scheme": "http",
    }
    base.update(kw)
    return RequestHead(**base)  # type: ignore[arg-type]


def test_keys_and_their_fallback_to_the_address() -> None:
    assert limit("1/s").key(head()) == "/#0|a:192.0.2.7"
    assert limit("1/s").key(head(client=None)) == "/#0|a:unix"
    by_header = limit("1/s", key="header", header="X-Tenant")
    assert by_header.key(head()) == "/#0|h:acme"
    assert by_header.key(head(headers=[])) == "/#0|a:192.0.2.7"
    long = by_header.key(head(headers=[(b"x-tenant", b"x" * 500)]))
    assert len(long) < 100 and long.startswith("/#0|h:")
    by_user = limit("1/s", key="user", name="shared")
    assert by_user.key(head(user="alice")) == "shared|u:alice"
    assert by_user.key(head()) == "shared|a:192.0.2.7"
    by_key = limit("1/s", key="api_key")
    auth = {"bastion.auth": {"user": "ci", "method": "api_key", "key": "ci"}}
    assert by_key.key(head(user="ci", context=auth)) == "/#0|k:ci"
    assert by_key.key(head(user="ci")) == "/#0|a:192.0.2.7"


BAD = """\
[app]
target = "x:app"

[rate_limit]
backend = "redis"
redis_url = "http://localhost:6379"

[[routes]]
path = "/"
app = "default"
[[routes.rate_limit]]
rate = "100 per second"
[[routes.rate_limit]]
rate = "1/s"
key = "header"
[[routes.rate_limit]]
rate = "1/s"
key = "user"
burst = "many"
"""


def test_config_errors_name_file_key_and_expected(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(BAD)
    with pytest.raises(ConfigError) as err:
        load_config(file=str(path), env={}, cli={})
    problems = err.value.problems
    # a value of the wrong type is reported by itself, with its line
    assert f"{path}:19: routes[0].rate_limit[2].burst: expected an integer >= 0, got " in (
        "\n".join(problems)
    )
    path.write_text(BAD.replace('burst = "many"\n', ""))
    with pytest.raises(ConfigError) as err:
        load_config(file=str(path), env={}, cli={})
    text = "\n".join(err.value.problems)
    assert f'{path}:12: routes[0].rate_limit[0].rate: expected "COUNT/PERIOD"' in text
    assert f'{path}:13: routes[0].rate_limit[1].header: key = "header" needs' in text
    assert f'{path}:18: routes[0].rate_limit[2].key: key = "user" needs authentication' in text
    assert f'{path}:6: rate_limit.redis_url: expected a URL starting with "redis://"' in text


def test_config_errors_table_shapes(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text('[[routes]]\npath = "/"\nreturn = {}\nrate_limit = 5\n')
    with pytest.raises(ConfigError) as err:
        load_config(file=str(path), env={}, cli={})
    assert f"{path}:4: routes[0].rate_limit: expected [[routes.rate_limit]] tables" in str(
        err.value
    )
    path.write_text('[[routes]]\npath = "/"\nreturn = {}\n[routes.rate_limit]\nburst = 2\n')
    with pytest.raises(ConfigError) as err:
        load_config(file=str(path), env={}, cli={})
    assert f"{path}:4: routes[0].rate_limit: missing key rate (a string)" in str(err.value)
    path.write_text('[rate_limit]\non_error = "open"\n')
    with pytest.raises(ConfigError) as err:
        load_config(file=str(path), env={}, cli={})
    assert f'{path}:2: rate_limit.on_error: expected one of "allow", "deny", got "open"' in str(
        err.value
    )


def test_one_table_is_a_list_of_one_and_renders_back(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(
        '[[routes]]\npath = "/"\nreturn = {}\n[routes.rate_limit]\nrate = "5/m"\nburst = 2\n'
    )
    config = load_config(file=str(path), env={}, cli={})
    assert config.routes[0].rate_limit == (RouteRateLimitConfig(rate="5/m", burst=2),)
    again = tmp_path / "again.toml"
    again.write_text(render_config(config))
    assert load_config(file=str(again), env={}, cli={}) == config


def test_redis_keys_kept_per_address_match_and_stay_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A route keyed by the client address keeps each address's Redis keys: the same
    keys as built afresh, one set per address, and no more than ``KEYS_KEPT`` of them;
    a route keyed otherwise keeps none (its key is not the address alone)."""
    from bastion.config.ratelimit_schema import RateLimitConfig
    from bastion.edge.ratelimit import RateLimitFilter, _Backend

    backend = _Backend(RateLimitConfig(backend="redis", redis_url="redis://127.0.0.1:1/0"))
    by_address = RateLimitFilter([limit("10/s"), limit("100/m", name="api")], backend)
    monkeypatch.setattr(RateLimitFilter, "KEYS_KEPT", 8)
    a, b = head(client=("192.0.2.7", 1)), head(client=("192.0.2.8", 2))
    assert by_address._keys(a) == (b"bastion:rl:/#0|a:192.0.2.7", b"bastion:rl:api|a:192.0.2.7")
    assert by_address._keys(head(client=("192.0.2.7", 9))) == by_address._keys(a)
    assert by_address._keys(b) == (b"bastion:rl:/#0|a:192.0.2.8", b"bastion:rl:api|a:192.0.2.8")
    assert by_address._keys(head(client=None)) == (
        b"bastion:rl:/#0|a:unix",
        b"bastion:rl:api|a:unix",
    )
    for i in range(20):
        assert by_address._keys(head(client=(f"198.51.100.{i}", 1)))[0].endswith(
            f"|a:198.51.100.{i}".encode()
        )
        assert by_address.by_address is not None and len(by_address.by_address) <= 8
    by_header = RateLimitFilter([limit("10/s", key="header", header="X-Tenant")], backend)
    assert by_header.by_address is None
    assert by_header._keys(a) == (b"bastion:rl:/#0|h:acme",)
    assert by_header._keys(head(headers=[(b"x-tenant", b"other")])) == (b"bastion:rl:/#0|h:other",)
