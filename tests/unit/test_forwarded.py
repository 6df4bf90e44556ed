"""The real client address behind trusted proxies (protocol/forwarded.py)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.protocol.forwarded import (
    ForwardedError,
    TrustedProxies,
    parse_address,
    parse_forwarded,
)
from bastion.protocol.head import RequestHead

PROXY = ("10.0.0.5", 40000)
STRANGER = ("203.0.113.9", 40000)


def head(headers: list[tuple[bytes, bytes]], client: tuple[str, int] | None = PROXY) -> RequestHead:
    return RequestHead("GET", b"/", b"", "1.1", headers, client, ("127.0.0.1", 8000))


def xff(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-forwarded-for", v.encode()) for v in values]


TRUST = TrustedProxies(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.2.3.4", ("1.2.3.4", 0)),
        (" 1.2.3.4 ", ("1.2.3.4", 0)),
        ("1.2.3.4:8080", ("1.2.3.4", 8080)),
        ("2001:db8::1", ("2001:db8::1", 0)),
        ("[2001:db8::1]", ("2001:db8::1", 0)),
        ("[2001:DB8::1]:443", ("2001:db8::1", 443)),
        ("::ffff:10.1.2.3", ("10.1.2.3", 0)),
        ("unknown", None),
        ("_hidden", None),
        ("example.com", None),
        ("1.2.3.4:99999", None),
        ("1.2.3.4:", None),
        ("[1.2.3.4]", None),
        ("[2001:db8::1", None),
        ("[2001:db8::1]x", None),
        ("1.2.3.256", None),
        ("fe80::1%eth0", None),
        ("", None),
        ("\u0661.\u0662.\u0663.\u0664", None),  # non-ASCII digits
    ],
)
def test_parse_address(text: str, expected: tuple[str, int] | None) -> None:
    assert parse_address(text) == expected


def test_untrusted_peer_headers_ignored() -> None:
    h = head([*xff("1.2.3.4"), (b"x-forwarded-proto", b"https")], client=STRANGER)
    assert TRUST.resolve(h) is h


def test_trusted_peer_one_hop() -> None:
    h = TRUST.resolve(head([*xff("1.2.3.4"), (b"x-forwarded-proto", b"https")]))
    assert h.client == ("1.2.3.4", 0)
    assert h.scheme == "https"


def test_walk_stops_at_first_untrusted_from_the_right() -> None:
    # the client claims 6.6.6.6; its own address was added by the outer proxy, 10.0.0.7
    h = TRUST.resolve(head(xff("6.6.6.6, 1.2.3.4, 10.0.0.7")))
    assert h.client == ("1.2.3.4", 0)


def test_several_lines_are_one_list() -> None:
    h = TRUST.resolve(head(xff("6.6.6.6", "1.2.3.4", "10.0.0.7")))
    assert h.client == ("1.2.3.4", 0)


def test_all_trusted_gives_leftmost() -> None:
    h = TRUST.resolve(head(xff("10.1.1.1, 10.0.0.7")))
    assert h.client == ("10.1.1.1", 0)


@pytest.mark.parametrize(
    "value",
    ["garbage", "unknown", "1.2.3.4, nonsense", "1.2.3.4, _obf", "1.2.3.4,,  ,999.1.1.1"],
)
def test_garbage_falls_back_to_last_trusted_hop(value: str) -> None:
    h = TRUST.resolve(head(xff(value)))
    assert h.client == PROXY
    # behind two trusted proxies, the inner one reported garbage: the outer one stands
    h = TRUST.resolve(head(xff(value + ", 10.9.9.9")))
    assert h.client == ("10.9.9.9", 0)


def test_proto_only_http_or_https() -> None:
    h = TRUST.resolve(head([(b"x-forwarded-proto", b"javascript")]))
    assert h.scheme == "http"
    h = TRUST.resolve(head([(b"x-forwarded-proto", b"HTTPS")]))
    assert h.scheme == "https"


def test_proto_follows_the_chosen_hop() -> None:
    h = TRUST.resolve(head([*xff("1.2.3.4, 10.0.0.7"), (b"x-forwarded-proto", b"https, http")]))
    assert (h.client, h.scheme) == (("1.2.3.4", 0), "https")


def test_forwarded_host_replaces_host() -> None:
    h = TRUST.resolve(
        head([(b"host", b"internal:8000"), (b"x-forwarded-host", b"www.example.com")])
    )
    assert h.header(b"host") == b"www.example.com"
    h = TRUST.resolve(head([(b"host", b"internal:8000"), (b"x-forwarded-host", b"bad host\x00")]))
    assert h.header(b"host") == b"internal:8000"


def test_ipv4_mapped_peer_is_trusted() -> None:
    h = TRUST.resolve(head(xff("1.2.3.4"), client=("::ffff:10.0.0.5", 1)))
    assert h.client == ("1.2.3.4", 0)


def test_unix_and_star() -> None:
    h = head(xff("1.2.3.4"), client=None)
    assert TRUST.resolve(h) is h
    assert TrustedProxies(["unix"]).resolve(h).client == ("1.2.3.4", 0)
    assert TrustedProxies(["*"]).resolve(head(xff("1.2.3.4"), STRANGER)).client == (
        "1.2.3.4",
        0,
    )


def test_comma_lists_and_errors() -> None:
    t = TrustedProxies(["10.0.0.1, 192.168.0.0/16"])
    assert t.trusts("192.168.3.4") and t.trusts("10.0.0.1") and not t.trusts("10.0.0.2")
    with pytest.raises(ForwardedError, match="network like"):
        TrustedProxies(["10.0.0.0/33"])
    assert not TrustedProxies([]).enabled


# -- RFC 7239 Forwarded --------------------------------------------------------------

FWD = TrustedProxies(["10.0.0.0/8"], "forwarded")


def fwd(*values: str) -> list[tuple[bytes, bytes]]:
    return [(b"forwarded", v.encode()) for v in values]


def test_parse_forwarded_elements() -> None:
    got = parse_forwarded(['for=1.2.3.4;proto=https, For="[2001:db8::1]:80";by=_x', 'for="a,b"'])
    assert got == [
        {"for": "1.2.3.4", "proto": "https"},
        {"for": "[2001:db8::1]:80", "by": "_x"},
        {"for": "a,b"},
    ]
    assert parse_forwarded(["for=1.2.3.4;for=5.6.7.8", "for", 'for="x'])[:3] == [
        None,
        None,
        None,
    ]


def test_forwarded_walk() -> None:
    h = FWD.resolve(head(fwd('for=6.6.6.6, for="[2001:db8::7]:4711";proto=https;host=a.example')))
    assert h.client == ("2001:db8::7", 4711)
    assert h.scheme == "https"
    assert h.header(b"host") == b"a.example"
    h = FWD.resolve(head(fwd("for=1.2.3.4", "for=10.0.0.9;proto=http")))
    assert h.client == ("1.2.3.4", 0)


def test_forwarded_unknown_and_obfuscated_keep_the_trusted_hop() -> None:
    h = FWD.resolve(head(fwd("for=6.6.6.6, for=unknown;proto=https")))
    assert h.client == PROXY
    assert h.scheme == "https"
    h = FWD.resolve(head(fwd("for=6.6.6.6, for=_hidden, for=10.0.0.8")))
    assert h.client == ("10.0.0.8", 0)
    h = FWD.resolve(head(fwd('for=6.6.6.6, for="1.2.3.4;proto=x')))
    assert h.client == PROXY


def test_family_is_exclusive() -> None:
    both = xff("1.2.3.4") + fwd("for=6.6.6.6")
    assert TRUST.resolve(head(both)).client == ("1.2.3.4", 0)
    assert FWD.resolve(head(both)).client == ("6.6.6.6", 0)


# -- properties ----------------------------------------------------------------------

UNTRUSTED_V4 = st.ip_addresses(v=4).filter(lambda a: a not in ipaddress.ip_network("10.0.0.0/8"))


@given(
    prefix=st.lists(st.text(max_size=20), max_size=4),
    attacker=st.text(max_size=40),
    client=UNTRUSTED_V4,
    proxies=st.lists(st.ip_addresses(network="10.0.0.0/8"), max_size=3),
)
def test_the_sender_never_chooses_past_its_own_hop(
    prefix: list[str], attacker: str, client: ipaddress.IPv4Address, proxies: list[object]
) -> None:
    """Whatever a client writes in X-Forwarded-For, trusted proxies append what they saw;
    the result is the address the outermost trusted proxy saw."""
    chain = [*prefix, attacker, str(client), *(str(p) for p in proxies)]
    h = TRUST.resolve(head(xff(", ".join(chain).replace("\r", "").replace("\n", ""))))
    assert h.client == (str(client), 0)


@given(st.binary(max_size=200), st.binary(max_size=200))
def test_any_bytes_never_raise_and_never_give_garbage(a: bytes, b: bytes) -> None:
    for trust in (TRUST, FWD):
        h = trust.resolve(
            head([(b"x-forwarded-for", a), (b"forwarded", b), (b"x-forwarded-proto", a)])
        )
        assert h.client is not None
        ipaddress.ip_address(h.client[0])
        assert h.scheme in ("http", "https")
