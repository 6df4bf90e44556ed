"""The TLS contexts of bastion's listeners, made from ``[tls]`` in the supervisor.

They are made before the workers fork, so every worker shares one set of session
ticket keys and a client resumes its session on whichever worker takes its next
connection. A SIGHUP makes new ones from the files as they are then (new workers get
them; old workers keep theirs until their connections are done).

Every problem with a file is a :class:`~bastion.config.errors.ConfigError` naming the
file, the key and what was expected; an encrypted key without
``tls.keyfile_password_file`` is refused, never prompted for.
"""

from __future__ import annotations

import _ssl
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field

from bastion.config.errors import DEFAULT, ConfigError, Source, problem
from bastion.config.schema import TLSConfig
from bastion.observe.logging import logger
from bastion.protocol.tls import SNI_ATTRIBUTE, ServerContext

_VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass
class ServerTLS:
    """The contexts of the listeners: ``context`` is the default one; the names a
    client may ask for (SNI) pick others."""

    context: ssl.SSLContext
    handshake_timeout: float
    by_name: dict[str, ssl.SSLContext] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)

    def pick(self, name: str) -> ssl.SSLContext | None:
        name = name.lower().rstrip(".")
        found = self.by_name.get(name)
        if found is None and "." in name:
            found = self.by_name.get("*." + name.split(".", 1)[1])
        return found


class _Problems(Exception):
    def __init__(self, label: str, detail: str) -> None:
        super().__init__(detail)
        self.label = label
        self.detail = detail


def load_tls(
    config: TLSConfig, sources: Mapping[str, Source] | None = None, *, warn: bool = True
) -> ServerTLS | None:
    """The contexts ``config`` describes (None when TLS is off); raise ConfigError.
    ``warn``: log the names that go to an unexpected certificate (off for the check
    ``serve`` makes before it starts, which loads them again)."""
    if not config.certfile and not config.certificates:
        return None
    src = sources or {}
    problems: list[str] = []
    made: list[tuple[ServerContext, tuple[str, ...], list[str]]] = []
    entries: list[tuple[str, str, str, tuple[str, ...], str]] = []
    if config.certfile:
        entries.append((config.certfile, config.keyfile, config.keyfile_password_file, (), "tls"))
    for i, cert in enumerate(config.certificates):
        entries.append(
            (
                cert.certfile,
                cert.keyfile,
                cert.keyfile_password_file,
                cert.names,
                f"tls.certificates[{i}]",
            )
        )
    for certfile, keyfile, password_file, names, prefix in entries:
        try:
            ctx, found = _context(config, certfile, keyfile, password_file, prefix)
            made.append((ctx, names or tuple(found), [certfile, keyfile]))
            for name in names if warn else ():
                if not _covers(found, name):
                    logger.warning(
                        "%s.names: %s is not a name of the certificate in %s (%s): clients "
                        "asking for it get a certificate they will refuse",
                        prefix,
                        name,
                        certfile,
                        ", ".join(found) or "no names",
                    )
        except _Problems as exc:
            # where the key the problem is about was set (--keyfile, the file's line),
            # else where its entry's certificate was
            where = (
                src.get(exc.label)
                or src.get(f"{prefix}.certfile")
                or src.get("tls.certificates", DEFAULT)
            )
            problems.append(problem(where, exc.label, exc.detail))
    if problems:
        raise ConfigError(problems)
    default = made[0][0]
    tls = ServerTLS(context=default, handshake_timeout=config.handshake_timeout)
    for ctx, names, files in made:
        tls.files.extend(f for f in files if f)
        for name in names:
            key = name.lower().rstrip(".")
            if key in tls.by_name:
                if warn and tls.by_name[key] is not ctx:
                    logger.warning(
                        "tls: %s is served by an earlier certificate; the one in %s is "
                        "not used for it",
                        name,
                        files[0],
                    )
                continue
            tls.by_name[key] = ctx
    several = len(made) > 1

    def choose(sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        # the name the client asked for, which the server side's SSLObject does not
        # keep (its server_hostname is the client side's): SSL_TLS_SNI, the ASGI TLS
        # extension's server name
        setattr(sslobj, SNI_ATTRIBUTE, name or "")
        if name and several:
            found = tls.pick(name)
            if found is not None and found is not ctx:
                sslobj.context = found
        return None

    default.sni_callback = choose
    return tls


def _read(path: str, label: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise _Problems(label, f"{path}: file not found") from None
    except IsADirectoryError:
        raise _Problems(label, f"{path}: is a directory, not a file") from None
    except OSError as exc:
        raise _Problems(label, f"{path}: cannot read it: {exc.strerror or exc}") from None


def _context(
    config: TLSConfig, certfile: str, keyfile: str, password_file: str, prefix: str
) -> tuple[ServerContext, list[str]]:
    cert_label = f"{prefix}.certfile"
    key_label = f"{prefix}.keyfile" if keyfile else cert_label
    cert_pem = _read(certfile, cert_label)
    if cert_pem.find(b"-----BEGIN CERTIFICATE-----") < 0:
        raise _Problems(
            cert_label,
            f"{certfile}: expected a PEM certificate (text starting with "
            "-----BEGIN CERTIFICATE-----)",
        )
    key_pem = _read(keyfile, key_label) if keyfile else cert_pem
    key_path = keyfile or certfile
    begin = key_pem.find(b"-----BEGIN ")
    if begin < 0 or key_pem.find(b"PRIVATE KEY-----", begin) < 0:
        raise _Problems(
            key_label,
            f"{key_path}: expected a PEM private key (-----BEGIN PRIVATE KEY-----)"
            + ("" if keyfile else "; set tls.keyfile to the file that holds the key"),
        )
    encrypted = key_pem.find(b"ENCRYPTED") >= 0
    password: bytes | None = None
    if encrypted:
        if not password_file:
            raise _Problems(
                key_label,
                f"{key_path}: the private key is encrypted; put its passphrase in a file "
                f"and name it in {prefix}.keyfile_password_file (bastion never prompts)",
            )
        text = _read(password_file, f"{prefix}.keyfile_password_file")
        password = text.splitlines()[0] if text else b""

    def give_password() -> bytes:
        if password is None:
            raise _Problems(key_label, f"{key_path}: the private key is encrypted")
        return password

    ctx = ServerContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = _VERSIONS[config.min_version]
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.set_ciphers(config.ciphers)
    except ssl.SSLError:
        raise _Problems(
            "tls.ciphers", f"no cipher suite of {config.ciphers!r} is known to OpenSSL"
        ) from None
    ctx.set_alpn_protocols(list(config.alpn))
    try:
        ctx.load_cert_chain(certfile, keyfile or None, password=give_password)
    except _Problems:
        raise
    except ssl.SSLError as exc:
        reason = str(exc.reason or "")
        if reason == "KEY_VALUES_MISMATCH":
            detail = f"{key_path}: the private key does not match the certificate in {certfile}"
        elif reason in ("BAD_DECRYPT", "BAD_PASSWORD_READ") or encrypted:
            detail = (
                f"{key_path}: cannot decrypt the private key with the passphrase in {password_file}"
            )
        else:
            detail = f"{certfile}: cannot use the certificate and key: {exc}"
        raise _Problems(key_label, detail) from None
    if config.client_auth != "none":
        try:
            ctx.load_verify_locations(cafile=config.ca_certs)
        except FileNotFoundError:
            raise _Problems("tls.ca_certs", f"{config.ca_certs}: file not found") from None
        except (ssl.SSLError, OSError) as exc:
            raise _Problems(
                "tls.ca_certs", f"{config.ca_certs}: expected PEM CA certificates: {exc}"
            ) from None
        required = config.client_auth == "required"
        ctx.verify_mode = ssl.CERT_REQUIRED if required else ssl.CERT_OPTIONAL
    first = cert_pem.find(b"-----BEGIN CERTIFICATE-----")
    end = cert_pem.find(b"-----END CERTIFICATE-----", first)
    ctx.server_pem = cert_pem[first : end + 25].decode("ascii", "replace") + "\n"
    return ctx, _names(certfile)


def _covers(names: list[str], name: str) -> bool:
    """Whether a certificate for ``names`` is valid for ``name`` (a wildcard covers one
    label)."""
    want = name.lower().rstrip(".")
    for have in names:
        have = have.lower().rstrip(".")
        if have == want:
            return True
        if have.startswith("*.") and "." in want and want.split(".", 1)[1] == have[2:]:
            return True
    return False


def _names(certfile: str) -> list[str]:
    """The DNS names of the certificate's subjectAltName (else its common name)."""
    try:
        decoded = _ssl._test_decode_cert(certfile)  # type: ignore[attr-defined]
    except Exception:
        return []
    names = [str(v) for k, v in decoded.get("subjectAltName", ()) if k == "DNS"]
    if not names:
        for rdn in decoded.get("subject", ()):
            names.extend(str(v) for k, v in rdn if k == "commonName")
    return names
