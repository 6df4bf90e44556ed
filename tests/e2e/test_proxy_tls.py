"""https:// upstreams: an edge bastion forwarding to a backend bastion that serves TLS
with trustme certificates (verification, SNI, client certificates)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import trustme
from server import BastionProcess, child_env


class Certs:
    def __init__(self, root: Path) -> None:
        self.root = root
        ca = trustme.CA()
        self.ca_file = str(root / "ca.pem")
        ca.cert_pem.write_to_path(self.ca_file)
        self.cert, self.key = self.issue(ca, "main", "localhost", "127.0.0.1")
        self.alt_cert, self.alt_key = self.issue(ca, "alt", "alt.example")
        client = ca.issue_cert("edge@example.org", common_name="edge")
        self.client = str(root / "client.pem")
        client.private_key_and_cert_chain_pem.write_to_path(self.client)

    def issue(self, ca: trustme.CA, name: str, *identities: str) -> tuple[str, str]:
        cert = ca.issue_cert(*identities)
        cert.cert_chain_pems[0].write_to_path(str(self.root / f"{name}.crt"))
        cert.private_key_pem.write_to_path(str(self.root / f"{name}.key"))
        return str(self.root / f"{name}.crt"), str(self.root / f"{name}.key")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("proxy-tls"))


@contextmanager
def backend(cert: str, key: str, *more: str) -> Iterator[BastionProcess]:
    args = ["serve", "tls_apps:asgi_app", "--certfile", cert, "--keyfile", key]
    with BastionProcess([*args, *more, "--bind", "127.0.0.1:0", "--workers", "1"]) as proc:
        yield proc


@contextmanager
def edge(tmp_path: Path, back: BastionProcess, upstream: str = "") -> Iterator[BastionProcess]:
    host, port = back.host_port
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[upstreams.back]\nservers = ["https://{host}:{port}"]\nretries = 0\n{upstream}\n'
        '[[routes]]\npath = "/"\nproxy = "back"\n'
    )
    with BastionProcess(
        ["serve", "-c", str(config), "--bind", "127.0.0.1:0", "--workers", "1"]
    ) as proc:
        yield proc


def test_an_https_upstream_verified_with_a_ca_file(certs: Certs, tmp_path: Path) -> None:
    with (
        backend(certs.cert, certs.key) as back,
        edge(tmp_path, back, f'tls_ca_file = "{certs.ca_file}"') as front,
    ):
        for _ in range(3):  # the second and third reuse the pooled TLS connection
            r = httpx.get(front.url + "/x")
            assert r.status_code == 200
            seen = r.json()
            assert seen["scheme"] == "https"
            assert seen["tls"]["tls_version"] is not None
        assert "NOT checked" not in front.log


def test_verification_is_on_by_default(certs: Certs, tmp_path: Path) -> None:
    # the system's CAs do not know the test CA: the edge refuses the server
    with backend(certs.cert, certs.key) as back, edge(tmp_path, back) as front:
        r = httpx.get(front.url + "/x")
        assert r.status_code == 502
        assert r.text == "502 Bad Gateway (upstream back)\n"  # no detail for clients
        front.wait_for_log(r"TLS with 127\.0\.0\.1:\d+ failed: .*CERTIFICATE_VERIFY_FAILED", 5)


def test_verify_false_connects_and_says_so_loudly(certs: Certs, tmp_path: Path) -> None:
    with (
        backend(certs.cert, certs.key) as back,
        edge(tmp_path, back, "tls_verify = false") as front,
    ):
        assert httpx.get(front.url + "/x").status_code == 200
        assert "tls_verify = false: the servers' certificates are NOT checked" in front.log


def test_the_server_name_is_sent_as_sni_and_checked(certs: Certs, tmp_path: Path) -> None:
    # a backend whose only certificate names alt.example, reached by address
    with backend(certs.alt_cert, certs.alt_key) as back:
        ca = f'tls_ca_file = "{certs.ca_file}"\n'
        with edge(tmp_path, back, ca) as front:
            r = httpx.get(front.url + "/x")
            assert r.status_code == 502
            # the certificate does not name the address
            front.wait_for_log(r"TLS with 127\.0\.0\.1:\d+ failed: CERTIFICATE_VERIFY", 5)
        with edge(tmp_path, back, ca + 'tls_server_name = "alt.example"') as front:
            assert httpx.get(front.url + "/x").status_code == 200


def test_a_client_certificate_for_an_upstream_that_requires_one(
    certs: Certs, tmp_path: Path
) -> None:
    required = ("--ca-certs", certs.ca_file, "--client-auth", "required")
    with backend(certs.cert, certs.key, *required) as back:
        ca = f'tls_ca_file = "{certs.ca_file}"\n'
        with edge(tmp_path, back, ca) as front:
            assert httpx.get(front.url + "/x").status_code == 502
        with edge(tmp_path, back, ca + f'tls_certfile = "{certs.client}"') as front:
            r = httpx.get(front.url + "/x")
            assert r.status_code == 200
            assert "edge" in str(r.json()["tls"]["client_cert_name"])


def test_missing_tls_files_are_configuration_errors(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[upstreams.back]\nservers = ["https://127.0.0.1:9"]\n'
        f'tls_ca_file = "{tmp_path}/nope.pem"\ntls_keyfile = "{tmp_path}/k.pem"\n\n'
        '[[routes]]\npath = "/"\nproxy = "back"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bastion", "check", "-c", str(config)],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "upstreams.back.tls_ca_file: no such file" in proc.stderr
    assert "set tls_certfile too" in proc.stderr
