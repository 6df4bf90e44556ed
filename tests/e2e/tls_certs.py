"""A throw-away certificate for a TLS test: trustme's CA, a certificate for localhost and
127.0.0.1 written to ``root``, and a client context that trusts it."""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme


def make_certs(root: Path) -> tuple[str, str, ssl.SSLContext]:
    """(certfile, keyfile, client context)."""
    ca = trustme.CA()
    issued = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = root / "cert.pem", root / "key.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(key))
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return str(cert), str(key), client
