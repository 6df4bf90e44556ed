"""The ``bastion`` command line.

::

    bastion serve [APP] [options]    serve an app (MODULE:ATTR or path/to/app.py:ATTR)
    bastion serve --static /=./public    serve a directory (and no app)
    bastion serve --proxy /api=http://10.0.0.5:8000,http://10.0.0.6:8000
                                         forward /api to two servers, balanced
    bastion check [APP] [options]    validate the configuration and print it as TOML
    bastion --version

Every option of ``serve`` and ``check`` sets one configuration key (see
docs/configuration.md); only the options actually given override the config file and
the environment. A configuration problem prints ``bastion: error: ...`` and exits 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from collections.abc import Mapping, Sequence

from bastion import __version__
from bastion.cli_auth import COMMANDS as AUTH_COMMANDS
from bastion.cli_auth import add_commands, run_command
from bastion.config.errors import ConfigError
from bastion.config.keys import KEYS
from bastion.config.load import CliRoute, Resolved, resolve
from bastion.config.render import render_config
from bastion.config.schema import Config
from bastion.config.toml_write import toml_value

PROG = "bastion"


class Option(typing.NamedTuple):
    """One command-line option and the configuration key it sets."""

    flags: tuple[str, ...]
    key: str
    help: str
    metavar: str | None = None
    action: typing.Literal["value", "append", "true", "const"] = "value"
    const: object = None
    choices: bool = False  # offer the key's allowed values (a Literal) as choices


OPTIONS: tuple[Option, ...] = (
    Option(
        ("-b", "--bind"),
        "server.bind",
        "listen address; repeat for several (HOST:PORT, [IPV6]:PORT, unix:/path, fd://N, systemd)",
        "ADDR",
        "append",
    ),
    Option(("-w", "--workers"), "workers.count", "worker processes (0: one per CPU core)", "N"),
    Option(("--interface",), "app.interface", "how to call the app", choices=True),
    Option(("--factory",), "app.factory", "APP is a function that returns the app", action="true"),
    Option(("--app-dir",), "app.app_dir", "directory put first on sys.path", "DIR"),
    Option(("--root-path",), "app.root_path", "path prefix the app is mounted below", "PATH"),
    Option(("--lifespan",), "app.lifespan", "ASGI lifespan events", choices=True),
    Option(
        ("--wsgi-mode",),
        "app.wsgi_mode",
        "run a WSGI app on the event loop or on threads",
        choices=True,
    ),
    Option(("--threads",), "app.threads", "threads per worker for --wsgi-mode threads", "N"),
    Option(
        ("--preload",),
        "workers.preload",
        "import the app in the supervisor before forking",
        action="true",
    ),
    Option(
        ("--max-requests",),
        "workers.max_requests",
        "restart a worker after this many requests (0: never)",
        "N",
    ),
    Option(
        ("--max-requests-jitter",),
        "workers.max_requests_jitter",
        "add up to N random requests to --max-requests per worker",
        "N",
    ),
    Option(
        ("--reload",),
        "workers.reload",
        "development: reload the workers when the code changes",
        action="true",
    ),
    Option(
        ("--max-memory",),
        "workers.max_memory",
        "replace a worker whose memory (PSS) passes SIZE (512m, 1g)",
        "SIZE",
    ),
    Option(
        ("--timeout",),
        "workers.timeout",
        "restart a worker whose event loop is blocked this long",
        "SECONDS",
    ),
    Option(
        ("--graceful-timeout",),
        "workers.graceful_timeout",
        "time for in-flight requests when stopping a worker",
        "SECONDS",
    ),
    Option(
        ("--drain-delay",),
        "workers.drain_delay",
        "after SIGTERM, keep serving (not ready) this long before stopping",
        "SECONDS",
    ),
    Option(
        ("--admin",),
        "admin.bind",
        "admin listener for /metrics, /livez, /readyz and the dashboard (HOST:PORT)",
        "ADDR",
    ),
    Option(
        ("--keepalive-timeout",),
        "timeouts.keepalive",
        "close idle keep-alive connections after this long",
        "SECONDS",
    ),
    Option(
        ("--header-timeout",),
        "timeouts.header",
        "time allowed to receive the request headers (then 408)",
        "SECONDS",
    ),
    Option(
        ("--max-body-size",),
        "limits.max_body_size",
        'largest request body, like 10485760 or "10m" (then 413)',
        "BYTES",
    ),
    Option(("--max-connections",), "limits.max_connections", "open connections per worker", "N"),
    Option(("--pidfile",), "server.pidfile", "write the supervisor's pid to FILE", "FILE"),
    Option(("--user",), "server.user", "run as USER once the sockets are open", "USER"),
    Option(("--group",), "server.group", "run as GROUP once the sockets are open", "GROUP"),
    Option(("--server-header",), "server.server_header", "value of the Server header", "TEXT"),
    Option(
        ("--no-server-header",),
        "server.server_header",
        "send no Server header",
        action="const",
        const="",
    ),
    Option(
        ("--reuse-port",),
        "server.reuse_port",
        "one listening socket per worker (SO_REUSEPORT)",
        action="true",
    ),
    Option(
        ("--unix-socket-mode",),
        "server.unix_socket_mode",
        "permissions of unix: sockets, like 660",
        "OCTAL",
    ),
    Option(
        ("--forwarded-allow-ips",),
        "server.forwarded_allow_ips",
        'trusted proxies: comma-separated addresses or networks, "unix", "*" (any: dangerous)',
        "IPS",
    ),
    Option(
        ("--forwarded-header",),
        "server.forwarded_header",
        "which headers trusted proxies set",
        choices=True,
    ),
    Option(
        ("--proxy-protocol",),
        "server.proxy_protocol",
        'a bind whose connections start with a PROXY header ("*": all); repeat for several',
        "ADDR",
        "append",
    ),
    Option(("--certfile",), "tls.certfile", "serve TLS with this PEM certificate", "FILE"),
    Option(("--keyfile",), "tls.keyfile", "the PEM private key of --certfile", "FILE"),
    Option(
        ("--ca-certs",),
        "tls.ca_certs",
        "PEM CA certificates that client certificates must chain to",
        "FILE",
    ),
    Option(
        ("--client-auth",),
        "tls.client_auth",
        "ask for client certificates (needs --ca-certs)",
        choices=True,
    ),
    Option(("--log-level",), "log.level", "error log level", choices=True),
    Option(("--access-log",), "log.access", "access log format", choices=True),
    Option(("--access-log-file",), "log.access_file", 'access log path ("-": stdout)', "FILE"),
    Option(("--error-log-file",), "log.error_file", 'error log path ("-": stderr)', "FILE"),
    Option(
        ("--debug",),
        "server.debug",
        "tracebacks in 500 responses to clients on loopback",
        action="true",
    ),
)

APP_ARG = "APP"  # how the positional argument is named in messages
STATIC_FLAG = "--static"
PROXY_FLAG = "--proxy"


def _add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "app",
        nargs="?",
        metavar=APP_ARG,
        default=argparse.SUPPRESS,
        help="the app: MODULE:ATTR or path/to/app.py:ATTR (config: app.target)",
    )
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML config file (default: $BASTION_CONFIG, else none)",
    )
    parser.add_argument(
        STATIC_FLAG,
        dest="static",
        metavar="PREFIX=DIR",
        action="append",
        default=argparse.SUPPRESS,
        help="serve the files of DIR below the path PREFIX, before the app; repeat for "
        "several (config: a [[routes]] table with static.root)",
    )
    parser.add_argument(
        PROXY_FLAG,
        dest="proxy",
        metavar="PREFIX=URL,URL...",
        action="append",
        default=argparse.SUPPRESS,
        help="forward requests below the path PREFIX to these servers (http://HOST:PORT, "
        "https://HOST:PORT, HOST:PORT, unix:/path), balanced; repeat for several "
        "(config: [upstreams.NAME] and a [[routes]] table with proxy)",
    )
    for i, opt in enumerate(OPTIONS):
        help_text = f"{opt.help} (config: {opt.key})"
        dest = f"opt{i}"
        if opt.action == "true":
            parser.add_argument(
                *opt.flags,
                dest=dest,
                action="store_true",
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif opt.action == "const":
            parser.add_argument(
                *opt.flags,
                dest=dest,
                action="store_const",
                const=opt.const,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            choices = typing.get_args(KEYS[opt.key].annotation) if opt.choices else None
            parser.add_argument(
                *opt.flags,
                dest=dest,
                metavar=opt.metavar,
                choices=choices,
                action="append" if opt.action == "append" else "store",
                default=argparse.SUPPRESS,
                help=help_text,
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Serve any Python WSGI or ASGI app in production.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = sub.add_parser(
        "serve",
        help="serve an app",
        description="Serve an app. Options override the config file and BASTION_* variables.",
    )
    _add_options(serve)
    check = sub.add_parser(
        "check",
        help="validate the configuration and print it",
        description="Validate the configuration and print the effective result as TOML.",
    )
    _add_options(check)
    add_commands(sub)
    return parser


def cli_values(ns: argparse.Namespace) -> tuple[str | None, dict[str, object], dict[str, str]]:
    """From parsed arguments: the config file, key path -> value, key path -> flag."""
    given = vars(ns)
    values: dict[str, object] = {}
    flags: dict[str, str] = {}
    if "app" in given:
        values["app.target"] = given["app"]
        flags["app.target"] = APP_ARG
    for i, opt in enumerate(OPTIONS):
        if f"opt{i}" in given:
            values[opt.key] = given[f"opt{i}"]
            flags[opt.key] = opt.flags[-1]
    config = given.get("config")
    return (str(config) if config is not None else None), values, flags


def static_routes(ns: argparse.Namespace) -> list[CliRoute]:
    """The routes of ``--static PREFIX=DIR`` options, in the order given."""
    routes = []
    for spec in getattr(ns, "static", ()):
        prefix, sep, root = str(spec).partition("=")
        if not sep or not root:
            raise ConfigError(
                f"command line {STATIC_FLAG}: expected PREFIX=DIR (like /static=./public), "
                f"got {toml_value(spec)}"
            )
        routes.append(CliRoute({"path": prefix, "static": {"root": root}}, STATIC_FLAG))
    for i, spec in enumerate(getattr(ns, "proxy", ())):
        prefix, sep, servers = str(spec).partition("=")
        if not sep or not servers or not prefix:
            raise ConfigError(
                f"command line {PROXY_FLAG}: expected PREFIX=URL[,URL...] "
                f"(like /api=http://10.0.0.5:8000,http://10.0.0.6:8000), got {toml_value(spec)}"
            )
        name = f"cli-proxy-{i + 1}"
        upstream = {"servers": [s.strip() for s in servers.split(",") if s.strip()]}
        routes.append(
            CliRoute({"path": prefix, "proxy": {"upstream": name}}, PROXY_FLAG, (name, upstream))
        )
    return routes


def load(ns: argparse.Namespace, env: Mapping[str, str], *, require_app: bool) -> Resolved:
    file, values, flags = cli_values(ns)
    return resolve(
        file=file,
        env=env,
        cli=values,
        cli_flags=flags,
        cli_routes=static_routes(ns),
        require_app=require_app,
    )


def _error(message: str) -> None:
    for line in message.splitlines() or [""]:
        print(f"{PROG}: error: {line}", file=sys.stderr)


def _warn_if_stale_build() -> None:
    from bastion.buildinfo import stale_compiled_modules

    stale = stale_compiled_modules()
    if stale:
        sys.stderr.write(
            "bastion: warning: these sources changed after they were compiled, so the old "
            f"compiled code runs: {', '.join(stale)}. Reinstall (make, or pip install -e .) "
            "or install pure Python with BASTION_COMPILE=0.\n"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = build_parser()
    try:
        ns = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:  # --help, --version and usage errors (status 2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    if ns.command is None:
        parser.print_help(sys.stderr)
        return 2
    if ns.command in AUTH_COMMANDS:
        return run_command(ns)
    _warn_if_stale_build()
    try:
        resolved = load(ns, os.environ, require_app=ns.command == "serve")
        from bastion.process.tls import load_tls

        # the files: a problem stops here (serve loads them again when it starts)
        load_tls(resolved.config.tls, resolved.sources, warn=ns.command == "check")
    except ConfigError as e:
        _error(str(e))
        return e.exit_code
    if ns.command == "check":
        sys.stdout.write(render_config(resolved.config, resolved.sources))
        print("configuration OK")
        return 0
    from bastion.process.supervisor import run

    def reload() -> Config:
        """On SIGHUP: the file and the environment again, with the same flags."""
        return load(ns, os.environ, require_app=True).config

    return int(run(resolved.config, reload=reload))
