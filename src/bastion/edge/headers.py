"""Response headers: security presets plus free-form add and remove rules.

:func:`headers_filter` turns a :class:`~bastion.config.schema.HeadersConfig` into an
:data:`~bastion.edge.types.ExchangeFilter`, once per route at start-up. Every header is
encoded to bytes then, so a response pays for one pass over its own header list.

Precedence, for one header name:

1. ``remove`` drops it, whatever set it (the app, the preset, ``add``);
2. ``add`` and ``content_security_policy`` replace the app's value;
3. a preset only fills in what the app did not send itself (an app that sends its
   own ``X-Frame-Options`` keeps it).

Rules apply to every response of the route, errors included, as Caddy's ``header`` and
nginx's ``add_header ... always`` do: a 404 page needs ``nosniff`` as much as a 200.
"""

from __future__ import annotations

from collections.abc import Iterable

from bastion.config.schema import HeadersConfig
from bastion.edge.types import ExchangeFilter
from bastion.edge.wrap import ExchangeWrapper
from bastion.protocol.fields import valid_header_name, valid_header_value
from bastion.protocol.types import Exchange, InvalidResponse

__all__ = ["HeaderRules", "HeadersExchange", "headers_filter", "preset_headers"]

Pair = tuple[bytes, bytes]

# Powerful features nobody on the page should use unless the site says so.
PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), "
    "microphone=(), payment=(), usb=()"
)


def preset_headers(preset: str, hsts_max_age: int) -> list[tuple[str, str]]:
    """The headers a preset sends, in the order they go out."""
    if preset == "none":
        return []
    basic = [
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "strict-origin-when-cross-origin"),
    ]
    if preset == "basic":
        return [*basic, ("X-Frame-Options", "SAMEORIGIN")]
    if preset == "strict":
        return [
            ("Strict-Transport-Security", f"max-age={hsts_max_age}; includeSubDomains"),
            *basic,
            ("X-Frame-Options", "DENY"),
            ("Cross-Origin-Opener-Policy", "same-origin"),
            ("Permissions-Policy", PERMISSIONS_POLICY),
        ]
    raise ValueError(f"unknown security preset {preset!r}")


def _encode(name: str, value: str, what: str) -> Pair:
    """A configured header as it goes on the wire, checked by the rule every response
    head is checked by (:mod:`bastion.protocol.fields`)."""
    raw_name = name.encode("latin-1", "replace")
    if not valid_header_name(raw_name):
        raise ValueError(f"{what}: {name!r} is not a valid header name")
    try:
        encoded = value.encode("latin-1")
    except UnicodeEncodeError:
        encoded = b"\n"  # beyond Latin-1: cannot be sent either
    if not valid_header_value(encoded):
        raise ValueError(f"{what}: the value of {name} holds characters that cannot be sent")
    return raw_name, encoded.strip(b" \t")


class HeaderRules:
    """One route's header rules, encoded once.

    ``forced`` replaces the app's headers of the same name; ``defaults`` fill in the
    ones the app left out; ``drop`` is every lower-case name taken out of the app's list.
    """

    __slots__ = ("defaults", "drop", "forced", "watch")

    def __init__(self, cfg: HeadersConfig) -> None:
        removed = {name.strip().lower().encode("ascii") for name in cfg.remove}
        forced: list[Pair] = []
        if cfg.content_security_policy:
            forced.append(
                _encode(
                    "Content-Security-Policy",
                    cfg.content_security_policy,
                    "headers.content_security_policy",
                )
            )
        for name, value in cfg.add.items():
            forced.append(_encode(name, value, "headers.add"))
        # a name given twice (CSP in both places, say): the later one wins
        by_name: dict[bytes, Pair] = {}
        for pair in forced:
            by_name[pair[0].lower()] = pair
        self.forced: tuple[Pair, ...] = tuple(p for key, p in by_name.items() if key not in removed)
        self.drop = frozenset(removed | by_name.keys())
        defaults: list[Pair] = []
        for name, value in preset_headers(cfg.preset, cfg.hsts_max_age):
            pair = _encode(name, value, "headers.preset")
            if pair[0].lower() not in self.drop:
                defaults.append(pair)
        self.defaults: tuple[Pair, ...] = tuple(defaults)
        # lower-case name -> bit, for the defaults the app may have sent itself
        self.watch = {pair[0].lower(): 1 << i for i, pair in enumerate(defaults)}

    @property
    def empty(self) -> bool:
        return not (self.forced or self.defaults or self.drop)

    def apply(self, headers: Iterable[Pair]) -> list[Pair]:
        """A new header list with the rules applied (the app's list is left as it was)."""
        drop = self.drop
        watch = self.watch
        seen = 0
        out: list[Pair] = []
        for pair in headers:
            name = pair[0]
            lname = name if name.islower() else name.lower()
            if lname in drop:
                continue
            if lname in watch:
                seen |= watch[lname]
            out.append(pair)
        out += self.forced
        if not seen:
            out += self.defaults
        else:
            for i, pair in enumerate(self.defaults):
                if not seen & (1 << i):
                    out.append(pair)
        return out


def headers_filter(cfg: HeadersConfig) -> ExchangeFilter | None:
    """The response-headers filter for a route, or ``None`` when it has nothing to do.

    Raises ``ValueError`` for a header name or value that cannot be sent (the config
    checks report those with their key path before this is called).
    """
    rules = HeaderRules(cfg)
    if rules.empty:
        return None

    def wrap(exchange: Exchange) -> Exchange:
        return HeadersExchange(exchange, rules)

    return wrap


class HeadersExchange(ExchangeWrapper):
    """An exchange whose response headers pass through a route's :class:`HeaderRules`."""

    __slots__ = ("_rules",)

    def __init__(self, inner: Exchange, rules: HeaderRules) -> None:
        super().__init__(inner)
        self._rules = rules

    def start_response(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        try:
            new = self._rules.apply(headers)
        except (TypeError, AttributeError, IndexError, ValueError):
            raise InvalidResponse(f"invalid response headers {headers!r}") from None
        self._inner.start_response(status, new)
