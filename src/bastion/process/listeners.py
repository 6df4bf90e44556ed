"""Listening sockets, made once by the supervisor and inherited by every worker.

Each ``server.bind`` entry becomes one :class:`Listener`:

* ``HOST:PORT`` / ``[V6]:PORT`` -- a TCP socket; host names are resolved (first address
  wins); IPv6 sockets are IPv6-only so ``[::]`` and ``0.0.0.0`` can be bound side by side.
* ``unix:/path`` -- a Unix socket; a stale socket file left by a crashed server is
  removed first, the file gets ``server.unix_socket_mode`` and is removed at exit.
* ``fd://N`` -- a descriptor inherited already listening (from a process manager).
* ``systemd`` -- every socket passed by systemd socket activation (``LISTEN_FDS``).

With ``server.reuse_port`` the supervisor only reserves each TCP address (bound, not
listening) and every worker binds and listens on its own ``SO_REUSEPORT`` socket, so the
kernel spreads new connections across workers instead of letting them race for one queue.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass

from bastion.config.binds import BindError, BindSpec, parse_bind
from bastion.config.schema import ServerConfig

SD_LISTEN_FDS_START = 3  # systemd passes sockets from fd 3 on (sd_listen_fds(3))


class ListenerError(Exception):
    """A listening socket could not be made; the message names the bind."""


@dataclass
class Listener:
    """One listening socket and how to describe it."""

    sock: socket.socket
    spec: BindSpec
    url: str  # "http://127.0.0.1:8000", "unix:/run/app.sock"
    origin: str = ""  # "fd://3" / "systemd" for inherited sockets, for the banner
    unix_path: str = ""  # a socket file we created and remove at exit
    unix_inode: int = 0
    reuse_port: bool = False  # workers bind their own SO_REUSEPORT socket
    redirect: bool = False  # a tls.redirect_bind listener: answers 308 to https
    inherited_unix_path: str = ""  # a socket file made by the bastion this one upgrades
    tls: bool = False  # speaks TLS (a TCP listener's URL says https://)

    def describe(self) -> str:
        # a Unix socket's URL has no scheme to say TLS with: said beside it
        notes = [
            n
            for n in ("TLS" if self.tls and self.url.startswith("unix:") else "", self.origin)
            if n
        ]
        return f"{self.url} ({', '.join(notes)})" if notes else self.url


def _tcp_url(sock: socket.socket) -> str:
    addr = sock.getsockname()
    host, port = addr[0], addr[1]
    if sock.family == socket.AF_INET6:
        return f"http://[{host}]:{port}"
    return f"http://{host}:{port}"


def _sock_url(sock: socket.socket) -> str:
    if sock.family == socket.AF_UNIX:
        name = sock.getsockname()
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        return f"unix:{name or '(unnamed)'}"
    return _tcp_url(sock)


def _resolve(spec: BindSpec) -> tuple[socket.AddressFamily, tuple[object, ...]]:
    try:
        infos = socket.getaddrinfo(
            spec.host, spec.port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise ListenerError(f"cannot resolve {spec.host!r} in bind {spec}: {exc}") from None
    if not infos:
        raise ListenerError(f"{spec.host!r} in bind {spec} resolves to no address")
    family, _, _, _, sockaddr = infos[0]
    return family, tuple(sockaddr)


def bind_tcp(
    family: socket.AddressFamily,
    sockaddr: tuple[object, ...],
    *,
    reuse_port: bool,
    listen: int | None,
) -> socket.socket:
    """Make a TCP socket bound to ``sockaddr``; listen with backlog ``listen`` if given."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(sockaddr)
        if listen is not None:
            sock.listen(listen)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _open_tcp(spec: BindSpec, cfg: ServerConfig) -> Listener:
    family, sockaddr = _resolve(spec)
    try:
        sock = bind_tcp(
            family,
            sockaddr,
            reuse_port=cfg.reuse_port,
            listen=None if cfg.reuse_port else cfg.backlog,
        )
    except OSError as exc:
        raise ListenerError(f"cannot listen on {spec}: {_reason(exc)}") from None
    return Listener(sock=sock, spec=spec, url=_tcp_url(sock), reuse_port=cfg.reuse_port)


def _reason(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "address already in use (is another server running?)"
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need privileges)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "address not available on this machine"
    return exc.strerror or str(exc)


def _remove_stale_unix(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise ListenerError(f"cannot listen on unix:{path}: the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # nobody is listening: a leftover from a server that died
        return
    except OSError as exc:
        raise ListenerError(f"cannot listen on unix:{path}: {_reason(exc)}") from None
    finally:
        probe.close()
    raise ListenerError(f"cannot listen on unix:{path}: another server is listening there")


def _open_unix(spec: BindSpec, cfg: ServerConfig) -> Listener:
    path = spec.path
    _remove_stale_unix(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, cfg.unix_socket_mode)
        sock.listen(cfg.backlog)
        sock.setblocking(False)
        inode = os.stat(path).st_ino
    except OSError as exc:
        sock.close()
        raise ListenerError(f"cannot listen on {spec}: {_reason(exc)}") from None
    return Listener(sock=sock, spec=spec, url=f"unix:{path}", unix_path=path, unix_inode=inode)


def adopt_fd(fd: int, spec: BindSpec, origin: str, *, listening: bool = True) -> Listener:
    """A Listener for descriptor ``fd``, which must be a stream socket (listening, unless
    ``listening`` is false: a reserved ``reuse_port`` address)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ListenerError(f"{origin}: file descriptor {fd} is not usable: {exc}") from None
    try:
        accepting = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
    except OSError:
        accepting = 0
    if sock.type != socket.SOCK_STREAM or (listening and not accepting):
        sock.detach()
        raise ListenerError(f"{origin}: file descriptor {fd} is not a listening stream socket")
    sock.setblocking(False)
    return Listener(sock=sock, spec=spec, url=_sock_url(sock), origin=origin)


def _open_systemd(spec: BindSpec) -> list[Listener]:
    pid_text = os.environ.get("LISTEN_PID", "")
    count_text = os.environ.get("LISTEN_FDS", "")
    if not pid_text.isdigit() or int(pid_text) != os.getpid() or not count_text.isdigit():
        raise ListenerError(
            "bind 'systemd' needs socket activation: LISTEN_PID and LISTEN_FDS are not set "
            "for this process (start bastion from a systemd .socket unit)"
        )
    count = int(count_text)
    if count < 1:
        raise ListenerError("bind 'systemd': systemd passed no sockets (LISTEN_FDS=0)")
    # like sd_listen_fds(unset_environment=1): children must not take them for their own
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return [
        adopt_fd(fd, spec, f"systemd fd {fd}")
        for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)
    ]


def open_listeners(
    cfg: ServerConfig, inherited: dict[str, list[Listener]] | None = None
) -> list[Listener]:
    """Make every listening socket of ``cfg.bind``; on failure close those already made.

    ``inherited`` holds the sockets a supervisor being upgraded handed over, by bind
    text: a bind found there takes them (and they leave the dict) instead of binding.
    """
    listeners: list[Listener] = []
    try:
        for text in cfg.bind:
            if inherited and text in inherited:
                listeners.extend(inherited.pop(text))
                continue
            try:
                spec = parse_bind(text)
            except BindError as exc:
                raise ListenerError(f"bind {text!r}: {exc}") from None
            if spec.kind == "tcp":
                listeners.append(_open_tcp(spec, cfg))
            elif spec.kind == "unix":
                listeners.append(_open_unix(spec, cfg))
            elif spec.kind == "fd":
                listeners.append(adopt_fd(spec.fd, spec, f"fd://{spec.fd}"))
            else:
                listeners.extend(_open_systemd(spec))
    except BaseException:
        close_listeners(listeners)
        raise
    if not listeners:
        raise ListenerError("server.bind is empty: nothing to listen on")
    return listeners


def open_redirect_listeners(
    binds: tuple[str, ...],
    cfg: ServerConfig,
    inherited: dict[str, list[Listener]] | None = None,
) -> list[Listener]:
    """The plain-HTTP listeners of ``tls.redirect_bind`` (TCP only, checked before)."""
    listeners: list[Listener] = []
    try:
        for text in binds:
            if inherited and "redirect " + text in inherited:
                listeners.extend(inherited.pop("redirect " + text))
                continue
            try:
                spec = parse_bind(text)
            except BindError as exc:
                raise ListenerError(f"tls.redirect_bind {text!r}: {exc}") from None
            lst = _open_tcp(spec, cfg)
            lst.redirect = True
            lst.origin = "redirect to https"
            listeners.append(lst)
    except BaseException:
        close_listeners(listeners)
        raise
    return listeners


def mark_tls(listeners: list[Listener]) -> None:
    """Mark the listeners that speak TLS (all but the redirect ones): ``https://`` in
    their URLs, "(TLS)" beside a Unix socket's."""
    for lst in listeners:
        if lst.redirect:
            continue
        lst.tls = True
        if lst.url.startswith("http://"):
            lst.url = "https://" + lst.url[len("http://") :]


def https_port(listeners: list[Listener]) -> int:
    """The port redirects send clients to: the first TLS TCP listener's (else 443)."""
    for lst in listeners:
        if not lst.redirect and lst.sock.family in (socket.AF_INET, socket.AF_INET6):
            return int(lst.sock.getsockname()[1])
    return 443


def worker_sockets(listeners: list[Listener], backlog: int) -> list[socket.socket]:
    """The sockets one worker serves: shared ones, or its own SO_REUSEPORT ones."""
    socks = []
    for lst in listeners:
        if lst.reuse_port:
            addr = lst.sock.getsockname()
            socks.append(bind_tcp(lst.sock.family, addr, reuse_port=True, listen=backlog))
        else:
            socks.append(lst.sock)
    return socks


def close_listeners(listeners: list[Listener]) -> None:
    """Close every socket and remove the Unix socket files we created."""
    for lst in listeners:
        try:
            lst.sock.close()
        except OSError:
            pass
        if lst.unix_path:
            try:
                if os.stat(lst.unix_path).st_ino == lst.unix_inode:
                    os.unlink(lst.unix_path)
            except OSError:
                pass
