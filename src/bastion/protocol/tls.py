"""What a TLS connection knows about itself, gathered once when it is made.

The worker's listeners hand bastion a connection whose handshake is done; the
connection reads its :class:`TLSInfo` from the ``ssl.SSLObject`` and every request on it
carries the same object (``RequestHead.tls``). The gateways present it to apps: the
ASGI TLS extension (``scope["extensions"]["tls"]``) and ``SSL_*`` WSGI environ keys.

:class:`ServerContext` is the ``ssl.SSLContext`` bastion's listeners use: it remembers
the PEM of its certificate, which the ASGI extension reports as ``server_cert``.
"""

from __future__ import annotations

import ssl
from typing import Any

# RFC 4514 short names of the attributes ssl.getpeercert() spells out
_SHORT = {
    "commonName": "CN",
    "countryName": "C",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}
#: where the listener's SNI callback leaves the name a client asked for, on its SSLObject
SNI_ATTRIBUTE = "bastion_server_name"
_VERSIONS = {"TLSv1.3": 0x0304, "TLSv1.2": 0x0303, "TLSv1.1": 0x0302, "TLSv1": 0x0301}
_SUITES: dict[str, int] = {}


class ServerContext(ssl.SSLContext):
    """A server ``SSLContext`` that knows the PEM text of the certificate it serves."""

    server_pem: str | None = None


class TLSInfo:
    """The TLS facts of one connection (the same for every request on it)."""

    __slots__ = (
        "_asgi",
        "_cgi",
        "alpn",
        "cipher",
        "cipher_suite",
        "client_cert",
        "client_issuer",
        "client_serial",
        "client_subject",
        "server_cert",
        "server_name",
        "tls_version",
        "version",
    )

    def __init__(self, ssl_object: ssl.SSLObject) -> None:
        #: "TLSv1.3" / "TLSv1.2"
        self.version: str = ssl_object.version() or ""
        #: as the ASGI TLS extension has it: 0x0304 for TLS 1.3
        self.tls_version: int | None = _VERSIONS.get(self.version)
        cipher = ssl_object.cipher()
        #: the OpenSSL name of the cipher suite
        self.cipher: str = cipher[0] if cipher else ""
        #: its IANA number
        self.cipher_suite: int | None = _suite_number(self.cipher) if cipher else None
        #: the ALPN protocol agreed on ("http/1.1"), or ""
        self.alpn: str = ssl_object.selected_alpn_protocol() or ""
        #: the name the client asked for (SNI), or ""
        self.server_name: str = getattr(ssl_object, SNI_ATTRIBUTE, "") or ""
        context = ssl_object.context
        self.server_cert: str | None = (
            context.server_pem if isinstance(context, ServerContext) else None
        )
        der = ssl_object.getpeercert(binary_form=True)
        #: the client's certificate (PEM), verified against tls.ca_certs; None if it
        #: sent none
        self.client_cert: str | None = ssl.DER_cert_to_PEM_cert(der) if der else None
        peer: dict[str, Any] = (ssl_object.getpeercert() or {}) if der else {}
        #: RFC 4514 distinguished names of the client certificate's subject and issuer
        self.client_subject: str | None = rfc4514(peer["subject"]) if "subject" in peer else None
        self.client_issuer: str | None = rfc4514(peer["issuer"]) if "issuer" in peer else None
        self.client_serial: str | None = str(peer["serialNumber"]) if peer else None
        self._asgi: dict[str, Any] | None = None
        self._cgi: dict[str, str] | None = None

    def asgi(self) -> dict[str, Any]:
        """The ASGI TLS extension (``scope["extensions"]["tls"]``), a fresh copy."""
        if self._asgi is None:
            self._asgi = {
                "server_cert": self.server_cert,
                "client_cert_chain": [self.client_cert] if self.client_cert else [],
                "client_cert_name": self.client_subject,
                # a certificate that fails verification ends the handshake, so an app
                # never sees one
                "client_cert_error": None,
                "tls_version": self.tls_version,
                "cipher_suite": self.cipher_suite,
            }
        scope = dict(self._asgi)
        scope["client_cert_chain"] = list(self._asgi["client_cert_chain"])
        return scope

    def cgi(self) -> dict[str, str]:
        """The WSGI environ keys, named as Apache mod_ssl and nginx name them."""
        if self._cgi is None:
            keys = {
                "HTTPS": "on",
                "SSL_PROTOCOL": self.version,
                "SSL_CIPHER": self.cipher,
                "SSL_TLS_SNI": self.server_name,
                "SSL_CLIENT_VERIFY": "SUCCESS" if self.client_cert else "NONE",
            }
            if self.client_cert:
                keys["SSL_CLIENT_S_DN"] = self.client_subject or ""
                keys["SSL_CLIENT_I_DN"] = self.client_issuer or ""
                keys["SSL_CLIENT_M_SERIAL"] = self.client_serial or ""
                keys["SSL_CLIENT_CERT"] = self.client_cert
            self._cgi = keys
        return self._cgi


def rfc4514(name: Any) -> str:
    """A distinguished name as ``ssl.getpeercert()`` gives it (a sequence of RDNs, most
    general first), written as RFC 4514 says: most specific first, specials escaped."""
    rdns = []
    for rdn in reversed(name):
        parts = []
        for attr, value in rdn:
            parts.append(f"{_SHORT.get(attr, attr)}={_escape(str(value))}")
        rdns.append("+".join(parts))
    return ",".join(rdns)


def _escape(value: str) -> str:
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;=' or (i == 0 and ch in " #") or (i == len(value) - 1 and ch == " "):
            out.append("\\" + ch)
        elif ch == "\x00":
            out.append("\\00")
        else:
            out.append(ch)
    return "".join(out)


def _suite_number(name: str) -> int | None:
    if not _SUITES:
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        probe.set_ciphers("ALL")
        for suite in probe.get_ciphers():
            _SUITES[str(suite["name"])] = int(suite["id"]) & 0xFFFF
    return _SUITES.get(name)
