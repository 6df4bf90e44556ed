"""The identity authentication hands on: no client spelling can forge it or drop it,
and no identity can carry a line break into a header."""

from __future__ import annotations

import pytest

from bastion.edge.auth.identity import Gate, usable_name
from bastion.edge.proxy_headers import passable_request_trailers
from tests.unit.fake_exchange import FakeExchange


def admitted(headers: list[tuple[str, str]], user: str = "dave") -> list[tuple[bytes, bytes]]:
    gate = Gate("jwt", "X-Remote-User", strip=["X-Auth-Groups"])
    ex = FakeExchange(headers=headers)
    return gate.admit(ex, user).head.headers  # type: ignore[arg-type]


def test_forged_identity_headers_are_dropped_in_any_spelling() -> None:
    headers = admitted(
        [
            ("X-Remote-User", "root"),
            ("X_Remote_User", "root"),
            ("x_remote-user", "root"),
            ("X_Auth_Groups", "admins"),
            ("X-Other", "kept"),
        ]
    )
    assert (b"x-remote-user", b"dave") in headers
    names = [n for n, _ in headers]
    assert names.count(b"x-remote-user") == 1
    assert not any(
        n.replace(b"_", b"-") in (b"x-remote-user", b"x-auth-groups") and v != b"dave"
        for n, v in headers
    )
    assert (b"x-other", b"kept") in headers


def test_connection_cannot_name_the_identity_header_away() -> None:
    headers = admitted([("Connection", "keep-alive, X-Remote-User, x_auth_groups, x-other")])
    assert dict(headers)[b"connection"] == b"keep-alive, x-other"
    assert (b"x-remote-user", b"dave") in headers


@pytest.mark.parametrize(
    "name", ["mallory\r\nX-Admin: 1", "a\nb", "nul\x00", "tab\there", "del\x7f", "x" * 1025]
)
def test_names_with_control_characters_are_not_usable(name: str) -> None:
    assert not usable_name(name)
    with pytest.raises(ValueError):
        admitted([], user=name)


@pytest.mark.parametrize("name", ["dave", "Dave Smith", "dåvé@example.org", "x" * 1024])
def test_ordinary_names_are_usable(name: str) -> None:
    assert usable_name(name)


def test_request_trailers_cannot_add_what_the_proxy_or_auth_set() -> None:
    head = FakeExchange(headers=[("X-Remote-User", "dave"), ("Host", "x")]).head
    trailers = [
        (b"x-remote-user", b"admin"),
        (b"x_remote_user", b"admin"),
        (b"x-forwarded-for", b"10.0.0.1"),
        (b"forwarded", b"for=10.0.0.1"),
        (b"x-request-id", b"forged"),
        (b"x-real-ip", b"10.0.0.1"),
        (b"content-length", b"5"),
        (b"x-checksum", b"abc"),
    ]
    assert passable_request_trailers(trailers, head) == [(b"x-checksum", b"abc")]
