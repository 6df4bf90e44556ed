"""Parsing PROXY protocol headers, v1 and v2 (protocol/proxy.py)."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.protocol.proxy import (
    MAX_V2_LENGTH,
    V2_SIGNATURE,
    ProxyError,
    parse_proxy_header,
)


def v2(command: int, fam: int, body: bytes) -> bytes:
    return V2_SIGNATURE + bytes([0x20 | command, fam]) + struct.pack("!H", len(body)) + body


def v2_inet(src: str, dst: str, sport: int, dport: int, tlvs: bytes = b"") -> bytes:
    a, b = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    fam = 0x11 if a.version == 4 else 0x21
    return v2(1, fam, a.packed + b.packed + struct.pack("!HH", sport, dport) + tlvs)


# -- v1 ------------------------------------------------------------------------------


def test_v1_tcp4() -> None:
    data = b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET / HTTP/1.1\r\n"
    h = parse_proxy_header(data)
    assert h is not None
    assert h.client == ("192.0.2.1", 56324)
    assert h.server == ("198.51.100.2", 443)
    assert data[h.length :] == b"GET / HTTP/1.1\r\n"
    assert not h.local


def test_v1_tcp6_and_unknown() -> None:
    h = parse_proxy_header(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n")
    assert h is not None and h.client == ("2001:db8::1", 1) and h.server == ("2001:db8::2", 2)
    h = parse_proxy_header(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nX")
    assert h is not None and h.local and h.length == len(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n")
    h = parse_proxy_header(b"PROXY UNKNOWN\r\n")
    assert h is not None and h.local


@pytest.mark.parametrize("cut", [1, 5, 6, 20, 44])
def test_v1_incomplete_needs_more(cut: int) -> None:
    assert parse_proxy_header(b"PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n"[:cut]) is None


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 56324\r\n",
        b"PROXY TCP4 2001:db8::1 198.51.100.2 1 2\r\n",
        b"PROXY TCP6 192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 65536 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 01 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 -1 2\r\n",
        b"PROXY TCP4  192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY UDP4 192.0.2.1 198.51.100.2 1 2\r\n",
        b"PROXY TCP4 192.0.2.1 198.51.100.2 1 2\n",
        b"PROXY " + b"A" * 120,
        b"PROXYTCP4",
        b"proxy TCP4 192.0.2.1 198.51.100.2 1 2\r\n",
    ],
)
def test_v1_refused(data: bytes) -> None:
    with pytest.raises(ProxyError):
        parse_proxy_header(data)


# -- v2 ------------------------------------------------------------------------------


def test_v2_ipv4_with_tlvs() -> None:
    tlvs = b"\x01\x00\x02h2" + b"\x04\x00\x00"  # ALPN, NOOP
    data = v2_inet("192.0.2.1", "198.51.100.2", 1234, 443, tlvs) + b"GET"
    h = parse_proxy_header(data)
    assert h is not None
    assert (h.client, h.server) == (("192.0.2.1", 1234), ("198.51.100.2", 443))
    assert data[h.length :] == b"GET"


def test_v2_ipv6() -> None:
    h = parse_proxy_header(v2_inet("2001:db8::1", "2001:db8::2", 5, 6))
    assert h is not None and h.client == ("2001:db8::1", 5) and h.server == ("2001:db8::2", 6)


def test_v2_local_unspec_unix() -> None:
    h = parse_proxy_header(v2(0, 0x11, b"\x00" * 12))
    assert h is not None and h.local and h.length == 28
    h = parse_proxy_header(v2(1, 0x00, b""))
    assert h is not None and h.local
    src, dst = b"/tmp/c".ljust(108, b"\x00"), b"/run/app.sock".ljust(108, b"\x00")
    h = parse_proxy_header(v2(1, 0x31, src + dst))
    assert h is not None and not h.local
    assert h.client is None and h.server == ("/run/app.sock", None)


@pytest.mark.parametrize("cut", [1, 11, 12, 15, 16, 27])
def test_v2_incomplete_needs_more(cut: int) -> None:
    assert parse_proxy_header(v2_inet("192.0.2.1", "198.51.100.2", 1, 2)[:cut]) is None


@pytest.mark.parametrize(
    "data",
    [
        V2_SIGNATURE[:11] + b"X",
        V2_SIGNATURE + b"\x11\x11\x00\x0c" + b"\x00" * 12,  # version 1
        V2_SIGNATURE + b"\x22\x11\x00\x0c" + b"\x00" * 12,  # command 2
        V2_SIGNATURE + b"\x21\x41\x00\x0c" + b"\x00" * 12,  # family 4
        V2_SIGNATURE + b"\x21\x13\x00\x0c" + b"\x00" * 12,  # transport 3
        V2_SIGNATURE + b"\x21\x11\x00\x08" + b"\x00" * 8,  # short IPv4
        V2_SIGNATURE + b"\x21\x21\x00\x0c" + b"\x00" * 12,  # short IPv6
        V2_SIGNATURE + b"\x21\x31\x00\x0c" + b"\x00" * 12,  # short UNIX
        V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", MAX_V2_LENGTH + 1),  # too long
    ],
)
def test_v2_refused(data: bytes) -> None:
    with pytest.raises(ProxyError):
        parse_proxy_header(data)


@given(st.binary(max_size=300))
def test_any_bytes_parse_refuse_or_wait(data: bytes) -> None:
    try:
        h = parse_proxy_header(data)
    except ProxyError:
        return
    if h is not None:
        assert 0 < h.length <= len(data)


@given(
    st.ip_addresses(v=4),
    st.ip_addresses(v=4),
    st.integers(0, 65535),
    st.integers(0, 65535),
    st.binary(max_size=64),
)
def test_v2_roundtrip(
    src: ipaddress.IPv4Address, dst: ipaddress.IPv4Address, sp: int, dp: int, rest: bytes
) -> None:
    data = v2_inet(str(src), str(dst), sp, dp) + rest
    h = parse_proxy_header(data)
    assert h is not None and h.client == (str(src), sp) and h.server == (str(dst), dp)
    assert data[h.length :] == rest
    v1 = f"PROXY TCP4 {src} {dst} {sp} {dp}\r\n".encode() + rest
    h = parse_proxy_header(v1)
    assert h is not None and h.client == (str(src), sp) and v1[h.length :] == rest
