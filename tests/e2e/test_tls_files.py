"""Files sent over TLS: a static route, ASGI ``http.response.pathsend`` and WSGI
``wsgi.file_wrapper``, each large enough to take bastion's zero-copy path on a plain
connection (``sendfile`` to the socket). Under TLS the bytes must go through the TLS
transport: sent to the socket beneath it, they would leave unencrypted, in the middle of
the TLS stream, and the client would see a broken record, not the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from server import BastionProcess, serve
from tls_certs import make_certs

SIZE = 3 * 1024 * 1024 + 17  # past the static route's in-memory cache


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ssl.SSLContext, Path]]:
    root = tmp_path_factory.mktemp("tls-files")
    _, _, client = make_certs(root)
    files = root / "files"
    files.mkdir()
    big = files / "big.bin"
    big.write_bytes(os.urandom(SIZE))
    yield root, client, big


def fetch(url: str, client: ssl.SSLContext) -> tuple[httpx.Response, str]:
    digest = hashlib.sha256()
    with httpx.stream("GET", url, verify=client, timeout=30) as r:
        for chunk in r.iter_bytes():
            digest.update(chunk)
    return r, digest.hexdigest()


def tls_server(
    root: Path, app: str, *more: str, env: dict[str, str] | None = None
) -> BastionProcess:
    config = root / "bastion.toml"
    config.write_text(
        f"""
[server]
bind = ["127.0.0.1:0"]

[workers]
count = 1

[tls]
certfile = {json.dumps(str(root / "cert.pem"))}
keyfile = {json.dumps(str(root / "key.pem"))}

[[routes]]
path = "/files/"
static = {{ root = {json.dumps(str(root / "files"))} }}

[[routes]]
path = "/"
app = "default"
"""
    )
    return serve(app, "-c", str(config), *more, env=env)


def test_static_pathsend_and_file_wrapper_arrive_whole_over_tls(
    site: tuple[Path, ssl.SSLContext, Path],
) -> None:
    root, client, big = site
    want = hashlib.sha256(big.read_bytes()).hexdigest()
    with tls_server(root, "slow_reader:app") as srv:
        base = srv.url.replace("127.0.0.1", "localhost")
        assert base.startswith("https://")
        r, got = fetch(f"{base}/files/big.bin", client)
        assert r.status_code == 200 and int(r.headers["content-length"]) == SIZE
        assert got == want, "the static file arrived altered over TLS"
        # a range of it (the same zero-copy path, from an offset)
        r = httpx.get(
            f"{base}/files/big.bin", headers={"Range": "bytes=1000000-1999999"}, verify=client
        )
        assert r.status_code == 206 and r.content == big.read_bytes()[1000000:2000000]
        r, got = fetch(f"{base}/file?{big}", client)
        assert r.status_code == 200 and got == want, "pathsend arrived altered over TLS"
    with tls_server(
        root,
        "fw_wsgi_validate:app",
        "--interface",
        "wsgi",
        env={"FW_VALIDATE_FILE": str(big)},
    ) as srv:
        r, got = fetch(srv.url.replace("127.0.0.1", "localhost") + "/file", client)
        assert r.status_code == 200 and got == want, "wsgi.file_wrapper arrived altered over TLS"
