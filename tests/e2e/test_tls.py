"""TLS on bastion's listeners, end to end: real processes, real TLS clients.

Certificates come from trustme (a throw-away CA per test module).
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme
from proc_tools import child_pids
from server import APPS, BastionProcess, child_env, serve


class Certs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ca = trustme.CA()
        self.ca.cert_pem.write_to_path(str(root / "ca.pem"))
        self.ca_file = str(root / "ca.pem")
        self.cert, self.key = self.issue("main", "localhost", "127.0.0.1")
        self.alt_cert, self.alt_key = self.issue("alt", "alt.example", "*.alt.example")
        client = self.ca.issue_cert("alice@example.org", common_name="alice")
        client.private_key_and_cert_chain_pem.write_to_path(str(root / "client.pem"))
        self.client = str(root / "client.pem")
        other = trustme.CA().issue_cert("mallory@example.org", common_name="mallory")
        other.private_key_and_cert_chain_pem.write_to_path(str(root / "stranger.pem"))
        self.stranger = str(root / "stranger.pem")

    def issue(self, name: str, *identities: str) -> tuple[str, str]:
        cert = self.ca.issue_cert(*identities)
        cert.cert_chain_pems[0].write_to_path(str(self.root / f"{name}.crt"))
        cert.private_key_pem.write_to_path(str(self.root / f"{name}.key"))
        return str(self.root / f"{name}.crt"), str(self.root / f"{name}.key")

    def client_context(self, certfile: str = "") -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=self.ca_file)
        ctx.set_alpn_protocols(["http/1.1"])
        if certfile:
            ctx.load_cert_chain(certfile)
        return ctx


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return Certs(tmp_path_factory.mktemp("tls"))


def tls_args(certs: Certs, *more: str) -> list[str]:
    return ["--certfile", certs.cert, "--keyfile", certs.key, *more]


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def request(
    sock: ssl.SSLSocket | socket.socket, path: str = "/", host: str = "localhost"
) -> tuple[int, dict[str, Any]]:
    """One keep-alive GET on an open connection; the status and the JSON body."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.startswith(b"{") else {}


def connect(
    port: int,
    ctx: ssl.SSLContext,
    name: str = "localhost",
    session: ssl.SSLSession | None = None,
) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        return ctx.wrap_socket(raw, server_hostname=name, session=session)
    except BaseException:
        raw.close()
        raise


def peer_names(sock: ssl.SSLSocket) -> list[str]:
    cert = sock.getpeercert()
    assert cert is not None
    return [str(v) for k, v in cert.get("subjectAltName", ()) if k == "DNS"]


# -- the basics ---------------------------------------------------------------------------


def test_asgi_sees_https_and_the_tls_extension_alpn_is_http11(certs: Certs) -> None:
    with serve("tls_apps:asgi_app", *tls_args(certs)) as srv:
        assert srv.url.startswith("https://127.0.0.1:")
        with connect(port_of(srv.url), certs.client_context()) as sock:
            assert sock.selected_alpn_protocol() == "http/1.1"
            assert sock.version() == "TLSv1.3"
            status, body = request(sock)
        assert status == 200
        assert body["scheme"] == "https"
        tls = body["tls"]
        assert tls["tls_version"] == 0x0304
        assert tls["cipher_suite"] in (0x1301, 0x1302, 0x1303)
        assert tls["client_cert_chain"] == [] and tls["client_cert_name"] is None
        assert tls["server_cert"] == Path(certs.cert).read_text()
        # a real HTTPS client, verifying the certificate
        r = httpx.get(srv.url.replace("127.0.0.1", "localhost"), verify=certs.client_context())
        assert r.json()["scheme"] == "https"


def test_wsgi_sees_https(certs: Certs) -> None:
    with serve("tls_apps:wsgi_app", *tls_args(certs)) as srv:
        r = httpx.get(srv.url, verify=certs.client_context())
        env = r.json()
        assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on"
        assert env["SSL_PROTOCOL"] == "TLSv1.3"
        assert env["SSL_CLIENT_VERIFY"] == "NONE" and "SSL_CLIENT_S_DN" not in env


def test_wsgi_sees_the_server_name_the_client_asked_for(certs: Certs) -> None:
    with serve("tls_apps:wsgi_app", *tls_args(certs)) as srv:
        by_name = httpx.get(
            srv.url.replace("127.0.0.1", "localhost"), verify=certs.client_context()
        )
        assert by_name.json()["SSL_TLS_SNI"] == "localhost"
        by_address = httpx.get(srv.url, verify=certs.client_context())  # no SNI for an IP
        assert by_address.json()["SSL_TLS_SNI"] == ""


def test_websocket_scope_scheme_is_wss(certs: Certs) -> None:
    import asyncio

    import websockets

    async def talk(url: str) -> str:
        async with websockets.connect(url, ssl=certs.client_context()) as ws:
            return str(await ws.recv())

    with serve("tls_apps:asgi_app", *tls_args(certs)) as srv:
        url = srv.url.replace("https://127.0.0.1", "wss://localhost") + "/ws"
        assert asyncio.run(talk(url)) == "wss"


def test_tls_on_a_unix_socket_is_announced_and_spoken(certs: Certs, tmp_path: Path) -> None:
    path = tmp_path / "tls.sock"
    with serve("tls_apps:asgi_app", *tls_args(certs, "--bind", f"unix:{path}")) as srv:
        assert f"listening on unix:{path} (TLS)" in srv.log
        raw = socket.socket(socket.AF_UNIX)
        raw.settimeout(10)
        raw.connect(str(path))
        with certs.client_context().wrap_socket(raw, server_hostname="localhost") as sock:
            status, body = request(sock)
        assert status == 200
        assert body["scheme"] == "https"


def test_tls_1_1_is_refused_and_1_2_accepted(certs: Certs) -> None:
    with serve("tls_apps:asgi_app", *tls_args(certs)) as srv:
        port = port_of(srv.url)
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.load_verify_locations(certs.ca_file)
        old.set_ciphers("ALL:@SECLEVEL=0")
        with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            old.minimum_version = ssl.TLSVersion.TLSv1
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(ssl.SSLError):  # the server closes the connection on the hello
            connect(port, old).close()
        tls12 = certs.client_context()
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        with connect(port, tls12) as sock:
            assert sock.version() == "TLSv1.2"
            assert "GCM" in sock.cipher()[0] or "CHACHA20" in sock.cipher()[0]
            assert request(sock)[0] == 200


# -- several certificates -------------------------------------------------------------------


def test_sni_picks_the_certificate_whose_san_names_the_host(certs: Certs, tmp_path: Path) -> None:
    config = tmp_path / "bastion.toml"
    config.write_text(
        f'[app]\ntarget = "tls_apps:asgi_app"\napp_dir = "{APPS}"\n'
        '[server]\nbind = ["127.0.0.1:0"]\n[workers]\ncount = 1\n'
        f'[tls]\ncertfile = "{certs.cert}"\nkeyfile = "{certs.key}"\n'
        f'[[tls.certificates]]\ncertfile = "{certs.alt_cert}"\nkeyfile = "{certs.alt_key}"\n'
    )
    with BastionProcess(["serve", "-c", str(config)]) as srv:
        port = port_of(srv.url)
        ctx = certs.client_context()
        with connect(port, ctx, "alt.example") as sock:
            assert peer_names(sock) == ["alt.example", "*.alt.example"]
            status, body = request(sock, host="alt.example")
            assert status == 200
            assert body["tls"]["server_cert"] == Path(certs.alt_cert).read_text()
        with connect(port, ctx, "www.alt.example") as sock:  # the wildcard
            assert peer_names(sock) == ["alt.example", "*.alt.example"]
        with connect(port, ctx, "localhost") as sock:
            assert peer_names(sock) == ["localhost"]
        # a name no certificate has: the default (first) certificate
        ctx.check_hostname = False
        with connect(port, ctx, "unknown.example") as sock:
            assert peer_names(sock) == ["localhost"]


# -- client certificates --------------------------------------------------------------------


def test_required_client_certificate(certs: Certs) -> None:
    args = tls_args(certs, "--ca-certs", certs.ca_file, "--client-auth", "required")
    with serve("tls_apps:asgi_app", *args) as srv:
        port = port_of(srv.url)
        with connect(port, certs.client_context(certs.client)) as sock:
            status, body = request(sock)
        assert status == 200
        tls = body["tls"]
        assert tls["client_cert_name"].startswith("CN=alice,OU=Testing cert #")
        assert ",O=trustme v" in tls["client_cert_name"]
        assert tls["client_cert_chain"][0].startswith("-----BEGIN CERTIFICATE-----")
        for client in ("", certs.stranger):  # none, or one the CA did not sign
            with (
                pytest.raises((ssl.SSLError, ConnectionError, OSError)),
                connect(port, certs.client_context(client)) as sock,
            ):
                request(sock)  # TLS 1.3: the refusal comes after the client's Finished


def test_required_client_certificate_reaches_wsgi(certs: Certs) -> None:
    args = tls_args(certs, "--ca-certs", certs.ca_file, "--client-auth", "required")
    with (
        serve("tls_apps:wsgi_app", *args) as srv,
        connect(port_of(srv.url), certs.client_context(certs.client)) as sock,
    ):
        status, env = request(sock)
    assert status == 200
    assert env["SSL_CLIENT_VERIFY"] == "SUCCESS"
    assert env["SSL_CLIENT_S_DN"].startswith("CN=alice,OU=Testing cert")
    assert env["SSL_CLIENT_I_DN"].startswith("OU=Testing CA")
    assert env["SSL_CLIENT_CERT"].startswith("-----BEGIN CERTIFICATE-----")


def test_optional_client_certificate(certs: Certs) -> None:
    args = tls_args(certs, "--ca-certs", certs.ca_file, "--client-auth", "optional")
    with serve("tls_apps:wsgi_app", *args) as srv:
        port = port_of(srv.url)
        with connect(port, certs.client_context()) as sock:
            status, env = request(sock)
        assert status == 200 and env["SSL_CLIENT_VERIFY"] == "NONE"
        with connect(port, certs.client_context(certs.client)) as sock:
            status, env = request(sock)
        assert status == 200 and env["SSL_CLIENT_S_DN"].startswith("CN=alice,")
        with (
            pytest.raises((ssl.SSLError, ConnectionError, OSError)),
            connect(port, certs.client_context(certs.stranger)) as sock,
        ):
            request(sock)


# -- sessions -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2])
def test_sessions_resume_on_every_worker(certs: Certs, version: ssl.TLSVersion) -> None:
    with serve("tls_apps:asgi_app", *tls_args(certs, "--workers", "2", "--reuse-port")) as srv:
        port = port_of(srv.url)
        ctx = certs.client_context()
        ctx.maximum_version = version
        with connect(port, ctx) as sock:
            _, body = request(sock)  # TLS 1.3 tickets come after the handshake
            session = sock.session
            first = body["pid"]
        assert session is not None
        pids = {first}
        deadline = time.monotonic() + 20
        while len(pids) < 2 and time.monotonic() < deadline:
            with connect(port, ctx, session=session) as sock:
                _, body = request(sock)
                assert sock.session_reused, f"not resumed on worker {body['pid']}"
                pids.add(body["pid"])
        assert len(pids) == 2, "every connection went to one worker"


# -- plain HTTP and idle clients ------------------------------------------------------------


def test_redirect_listener_sends_plain_http_to_https(certs: Certs) -> None:
    env = {"BASTION_TLS__REDIRECT_BIND": "127.0.0.1:0"}
    with serve("tls_apps:asgi_app", *tls_args(certs), env=env) as srv:
        assert len(srv.addresses) == 2
        https, plain = srv.addresses
        assert plain.startswith("http://")
        r = httpx.get(plain + "/a/b%20c?x=1&y=2", headers={"Host": "Example.COM:8080"})
        assert r.status_code == 308
        assert r.headers["location"] == f"https://example.com:{port_of(https)}/a/b%20c?x=1&y=2"
        r = httpx.post(plain + "/form", content=b"x" * 10)
        assert r.status_code == 308
        assert r.headers["location"] == f"https://127.0.0.1:{port_of(https)}/form"
        with socket.create_connection(("127.0.0.1", port_of(plain)), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert sock.recv(100).startswith(b"HTTP/1.1 400")


def test_redirect_listener_behind_a_proxy_protocol_balancer(certs: Certs) -> None:
    """A load balancer that sends PROXY headers on :80 and :443 (AWS NLB, HAProxy):
    the redirect listener named in server.proxy_protocol reads the header first."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        redirect = f"127.0.0.1:{probe.getsockname()[1]}"
    env = {"BASTION_TLS__REDIRECT_BIND": redirect}
    with serve("tls_apps:asgi_app", *tls_args(certs, "--proxy-protocol", redirect), env=env) as srv:
        https = srv.addresses[0]
        with socket.create_connection(("127.0.0.1", int(redirect.rsplit(":", 1)[1])), 5) as s:
            s.sendall(
                b"PROXY TCP4 203.0.113.7 127.0.0.1 40000 80\r\n"
                b"GET /x HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n\r\n"
            )
            out = b""
            while chunk := s.recv(4096):
                out += chunk
        assert out.startswith(b"HTTP/1.1 308"), out[:100]
        assert f"location: https://example.test:{port_of(https)}/x".encode() in out.lower()
        # the TLS listener expects no header: it was not named
        r = httpx.get(https.replace("127.0.0.1", "localhost") + "/", verify=certs.client_context())
        assert r.status_code == 200


def test_a_client_that_never_handshakes_is_closed(certs: Certs) -> None:
    env = {"BASTION_TLS__HANDSHAKE_TIMEOUT": "1"}
    with (
        serve("tls_apps:asgi_app", *tls_args(certs), env=env) as srv,
        socket.create_connection(("127.0.0.1", port_of(srv.url)), timeout=10) as sock,
    ):
        start = time.monotonic()
        try:
            assert sock.recv(100) == b""
        except ConnectionResetError:
            pass
        assert 0.8 < time.monotonic() - start < 8


def test_plain_http_on_the_tls_port_is_closed(certs: Certs) -> None:
    with serve("tls_apps:asgi_app", *tls_args(certs)) as srv:
        port = port_of(srv.url)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            start = time.monotonic()
            sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            try:
                answer = sock.recv(100)
            except ConnectionResetError:
                answer = b""
            assert not answer.startswith(b"HTTP/"), "no plain answer on a TLS port"
            assert time.monotonic() - start < 5
        # and the server is fine
        with connect(port, certs.client_context()) as tls:
            assert request(tls)[0] == 200


# -- reload ---------------------------------------------------------------------------------


def test_sighup_serves_new_certificates_and_keeps_open_connections(
    certs: Certs, tmp_path: Path
) -> None:
    cert, key = tmp_path / "site.crt", tmp_path / "site.key"
    shutil.copy(certs.cert, cert)
    shutil.copy(certs.key, key)
    with serve(
        "tls_apps:asgi_app", "--certfile", str(cert), "--keyfile", str(key), "--workers", "1"
    ) as srv:
        port = port_of(srv.url)
        ctx = certs.client_context()
        with connect(port, ctx) as sock:
            old_der = sock.getpeercert(binary_form=True)
        # a connection in the middle of a request to the old worker
        held = connect(port, ctx)
        _, body = request(held)
        old_pid = body["pid"]
        answers: list[tuple[int, dict[str, Any]]] = []
        slow = threading.Thread(target=lambda: answers.append(request(held, "/slow?3")))
        slow.start()
        time.sleep(0.3)
        new_cert, new_key = certs.issue("renewed", "localhost", "127.0.0.1")
        shutil.copy(new_cert, cert)
        shutil.copy(new_key, key)
        mark = len(srv.log)
        srv.signal(signal.SIGHUP)
        srv.wait_for_log(r"reload complete", 30, start=mark)
        with connect(port, ctx) as sock:
            assert sock.getpeercert(binary_form=True) != old_der
            assert sock.getpeercert(binary_form=True) == ssl.PEM_cert_to_DER_cert(
                Path(new_cert).read_text()
            )
            assert request(sock)[1]["pid"] != old_pid
        slow.join(10)
        held.close()
        assert answers and answers[0][0] == 200 and answers[0][1]["pid"] == old_pid

        # a broken certificate: refused, the current one keeps serving
        cert.write_text("not a certificate\n")
        mark = len(srv.log)
        srv.signal(signal.SIGHUP)
        srv.wait_for_log(r"cannot load the TLS certificates, keeping the current ones", 20, mark)
        assert "expected a PEM certificate" in srv.log[mark:]
        assert str(cert) in srv.log[mark:]
        with connect(port, ctx) as sock:
            assert sock.getpeercert(binary_form=True) == ssl.PEM_cert_to_DER_cert(
                Path(new_cert).read_text()
            )
            assert request(sock)[0] == 200
        assert len(child_pids(srv.pid)) == 1


# -- errors at start-up ---------------------------------------------------------------------


def start_error(*args: str) -> str:
    """Run ``bastion serve`` expecting a configuration error; its stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "bastion", "serve", "tls_apps:asgi_app", "-b", "127.0.0.1:0", *args],
        cwd=APPS,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    assert "ready" not in proc.stderr and "worker" not in proc.stderr
    return proc.stderr


@pytest.fixture(scope="module")
def bad(certs: Certs) -> Iterator[Path]:
    root = certs.root
    (root / "not-pem.crt").write_bytes(ssl.PEM_cert_to_DER_cert(Path(certs.cert).read_text()))
    encrypted = subprocess.run(
        ["openssl", "pkey", "-in", certs.key, "-aes256", "-passout", "pass:sesame"],
        capture_output=True,
        check=True,
    ).stdout
    (root / "encrypted.key").write_bytes(encrypted)
    (root / "password.txt").write_text("sesame\n")
    (root / "wrong-password.txt").write_text("open\n")
    yield root


def test_missing_certificate_file(certs: Certs) -> None:
    err = start_error("--certfile", "/nonexistent/site.crt", "--keyfile", certs.key)
    assert "command line --certfile: tls.certfile: /nonexistent/site.crt: file not found" in err


def test_key_that_does_not_match(certs: Certs) -> None:
    err = start_error("--certfile", certs.cert, "--keyfile", certs.alt_key)
    assert (
        f"command line --keyfile: tls.keyfile: {certs.alt_key}: the private key does not "
        "match the certificate" in err
    )


def test_check_warns_of_names_sent_to_an_unexpected_certificate(
    certs: Certs, tmp_path: Path
) -> None:
    """A name given in ``names`` that the certificate does not hold, and a name two
    entries serve (the first wins): both would go unnoticed until a client complains."""
    config = tmp_path / "sni.toml"
    config.write_text(
        "[tls]\n"
        f'certfile = "{certs.cert}"\n'
        f'keyfile = "{certs.key}"\n'
        "\n[[tls.certificates]]\n"
        f'certfile = "{certs.alt_cert}"\n'
        f'keyfile = "{certs.alt_key}"\n'
        'names = ["alt.example", "www.example.org"]\n'
        "\n[[tls.certificates]]\n"
        f'certfile = "{certs.alt_cert}"\n'
        f'keyfile = "{certs.alt_key}"\n'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "bastion", "check", "tls_apps:asgi_app", "-c", str(config)],
        cwd=APPS,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tls.certificates[0].names: www.example.org is not a name of the certificate" in (
        proc.stderr
    )
    assert "alt.example is served by an earlier certificate" in proc.stderr
    assert "localhost" not in proc.stderr  # (no warning about names that are fine)


def test_problems_name_the_line_of_their_key(certs: Certs, tmp_path: Path) -> None:
    """In a file, a problem with the key names the keyfile's line, and one with a
    second [[tls.certificates]] entry that entry's lines, not the first one's."""
    config = tmp_path / "tls.toml"
    config.write_text(
        "[tls]\n"
        f'certfile = "{certs.cert}"\n'
        f'keyfile = "{certs.alt_key}"\n'
        "\n[[tls.certificates]]\n"
        f'certfile = "{certs.cert}"\n'
        f'keyfile = "{certs.key}"\n'
        "\n[[tls.certificates]]\n"
        'certfile = "/nonexistent/second.crt"\n'
        f'keyfile = "{certs.key}"\n'
    )
    err = start_error("-c", str(config))
    assert f"tls.toml:3: tls.keyfile: {certs.alt_key}: the private key does not match" in err
    assert "tls.toml:10: tls.certificates[1].certfile: /nonexistent/second.crt" in err


def test_certificate_that_is_not_pem(certs: Certs, bad: Path) -> None:
    err = start_error("--certfile", str(bad / "not-pem.crt"), "--keyfile", certs.key)
    assert f"tls.certfile: {bad / 'not-pem.crt'}: expected a PEM certificate" in err


def test_encrypted_key_is_refused_without_a_password_file(certs: Certs, bad: Path) -> None:
    key = str(bad / "encrypted.key")
    err = start_error("--certfile", certs.cert, "--keyfile", key)
    assert f"tls.keyfile: {key}: the private key is encrypted" in err
    assert "tls.keyfile_password_file" in err
    env_pw = {"BASTION_TLS__KEYFILE_PASSWORD_FILE": str(bad / "wrong-password.txt")}
    proc = subprocess.run(
        [sys.executable, "-m", "bastion", "check", "tls_apps:asgi_app"],
        cwd=APPS,
        env=child_env({**env_pw, "BASTION_TLS__CERTFILE": certs.cert, "BASTION_TLS__KEYFILE": key}),
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2 and "cannot decrypt the private key" in proc.stderr
    env = {"BASTION_TLS__KEYFILE_PASSWORD_FILE": str(bad / "password.txt")}
    with (
        serve("tls_apps:asgi_app", "--certfile", certs.cert, "--keyfile", key, env=env) as srv,
        connect(port_of(srv.url), certs.client_context()) as sock,
    ):
        assert request(sock)[0] == 200


def test_client_auth_without_ca_certs(certs: Certs) -> None:
    err = start_error(*tls_args(certs), "--client-auth", "required")
    assert "tls.client_auth" in err and "needs tls.ca_certs" in err


# -- cost ---------------------------------------------------------------------------------


def _minor_faults(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return int(fields[7])


def test_requests_on_a_kept_alive_tls_connection_map_no_memory(certs: Certs) -> None:
    # each TLS record is decrypted into a fresh 256 KiB buffer; served from its own
    # mapping it costs mmap, mremap, munmap and a page fault per request
    with serve("tls_apps:asgi_app", *tls_args(certs, "--workers", "1")) as srv:
        (worker,) = child_pids(srv.proc.pid)
        url = srv.url.replace("127.0.0.1", "localhost")
        with httpx.Client(verify=certs.client_context()) as client:
            for _ in range(50):
                assert client.get(url).status_code == 200
            before = _minor_faults(worker)
            for _ in range(400):
                assert client.get(url).status_code == 200
            faults = _minor_faults(worker) - before
    assert faults < 200, f"{faults} page faults in the worker for 400 requests"
