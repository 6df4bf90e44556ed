"""[tls] settings that cannot work together, the certificates table, and the names
bastion gives a client certificate's subject."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config.errors import ConfigError
from bastion.config.load import load_config
from bastion.config.render import render_config
from bastion.protocol.tls import rfc4514


def problems(tmp_path: Path, text: str) -> tuple[str, ...]:
    (tmp_path / "bastion.toml").write_text(text)
    with pytest.raises(ConfigError) as err, pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        load_config(file="bastion.toml", env={}, cli={})
    return err.value.problems


def test_settings_that_need_a_certificate(tmp_path: Path) -> None:
    found = problems(tmp_path, '[tls]\nkeyfile = "k.pem"\nredirect_bind = ["0.0.0.0:80"]\n')
    assert found == (
        "bastion.toml:2: tls.keyfile: has no effect without a certificate: set tls.certfile "
        "(--certfile) too",
        "bastion.toml:3: tls.redirect_bind: has no effect without a certificate: set "
        "tls.certfile (--certfile) too",
    )


def test_client_auth_and_ca_certs_go_together(tmp_path: Path) -> None:
    found = problems(tmp_path, '[tls]\ncertfile = "c.pem"\nclient_auth = "optional"\n')
    assert found == (
        'bastion.toml:3: tls.client_auth: "optional" needs tls.ca_certs (--ca-certs), the CAs '
        "client certificates are checked against",
    )
    found = problems(tmp_path, '[tls]\ncertfile = "c.pem"\nca_certs = "ca.pem"\n')
    assert found[0].startswith("bastion.toml:3: tls.ca_certs: is only used to check client")


def test_redirect_bind_must_be_a_tcp_address_not_in_server_bind(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        '[server]\nbind = ["127.0.0.1:8443"]\n'
        '[tls]\ncertfile = "c.pem"\nredirect_bind = ["unix:/tmp/x.sock", "127.0.0.1:8443"]\n',
    )
    assert found == (
        "bastion.toml:5: tls.redirect_bind: expected HOST:PORT addresses (a redirect needs a "
        "TCP port), got 'unix:/tmp/x.sock'",
        "bastion.toml:5: tls.redirect_bind: '127.0.0.1:8443' is also in server.bind: one port "
        "cannot speak both HTTP and HTTPS",
    )


def test_certificates_table_is_read_and_printed_back(tmp_path: Path) -> None:
    (tmp_path / "bastion.toml").write_text(
        '[tls]\ncertfile = "a.pem"\n'
        '[[tls.certificates]]\ncertfile = "b.pem"\nnames = ["b.example"]\n'
        '[[tls.certificates]]\ncertfile = "c.pem"\nkeyfile = "c.key"\n'
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        config = load_config(file="bastion.toml", env={}, cli={})
    assert [c.certfile for c in config.tls.certificates] == ["b.pem", "c.pem"]
    assert config.tls.certificates[0].names == ("b.example",)
    text = render_config(config, {})
    assert 'certfile = "b.pem"' in text and 'names = ["b.example"]' in text
    found = problems(tmp_path, '[[tls.certificates]]\nkeyfile = "x.key"\n')
    assert "tls.certificates" in found[0] and "certfile" in found[0]


def test_proxy_protocol_and_the_handshake_cap_on_tls_listeners(tmp_path: Path) -> None:
    (tmp_path / "bastion.toml").write_text(
        '[server]\nbind = ["0.0.0.0:443"]\nproxy_protocol = ["0.0.0.0:443"]\n'
        '[tls]\ncertfile = "a.pem"\nmax_handshakes = 64\nhandshake_wait = 0\n'
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        config = load_config(file="bastion.toml", env={}, cli={})
    assert config.server.proxy_protocol == ("0.0.0.0:443",)
    assert (config.tls.max_handshakes, config.tls.handshake_wait) == (64, 0.0)
    found = problems(tmp_path, '[tls]\ncertfile = "a.pem"\nmax_handshakes = -1\n')
    assert "tls.max_handshakes" in found[0]


def test_subject_names_follow_rfc_4514() -> None:
    subject = (
        (("countryName", "US"),),
        (("organizationName", "Acme, Inc."),),
        (("commonName", "#alice+bob "),),
    )
    assert rfc4514(subject) == "CN=\\#alice\\+bob\\ ,O=Acme\\, Inc.,C=US"
