"""How a group chooses the server for a request.

A :class:`Balancer` gets the candidates (servers not ejected, not full, not already
tried for this request) and returns one. ``key`` is what :class:`ConsistentHash` hashes
(the client address, path, a header or a cookie: ``hash_on``); the others ignore it.

Consistent hashing is a ring with virtual nodes (Karger et al.; ketama), not Maglev:
a ring needs no rebuild when a server is ejected or already tried (the walk goes on
clockwise to the next candidate, so only that server's keys move, spread over the
others), weights are simply more points, and a lookup is a binary search. Maglev's
table gives a more even spread but has to be rebuilt (O(M), M ~ 65537) for every
change of the candidate set, and here that set changes per request (tried servers).
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from hashlib import blake2b
from typing import Final, Protocol

from bastion.upstream.server import Server

__all__ = [
    "Balancer",
    "ConsistentHash",
    "LeastRequests",
    "PeakEwma",
    "SmoothRoundRobin",
    "make_balancer",
]


class Balancer(Protocol):
    def choose(self, candidates: Sequence[Server], now: float, key: bytes) -> Server:
        """One of ``candidates`` (never empty)."""
        ...


class SmoothRoundRobin:
    """nginx's smooth weighted round robin: weights 5, 1, 1 give a a b a c a a, not
    a a a a a b c."""

    __slots__ = ()

    def choose(self, candidates: Sequence[Server], now: float, key: bytes) -> Server:
        if len(candidates) == 1:
            return candidates[0]
        total = 0
        best = candidates[0]
        for server in candidates:
            server.current_weight += server.weight
            total += server.weight
            if server.current_weight > best.current_weight:
                best = server
        best.current_weight -= total
        return best


class LeastRequests:
    """The server with the fewest requests in flight relative to its weight; ties go
    to a random one of them, so equal servers share evenly."""

    __slots__ = ("_random",)

    def __init__(self, rng: random.Random | None = None) -> None:
        self._random = rng or random.Random()

    def choose(self, candidates: Sequence[Server], now: float, key: bytes) -> Server:
        if len(candidates) == 1:
            return candidates[0]
        best: list[Server] = []
        best_load = 0.0
        for server in candidates:
            load = server.in_flight / server.weight
            if not best or load < best_load:
                best = [server]
                best_load = load
            elif load == best_load:
                best.append(server)
        return best[0] if len(best) == 1 else self._random.choice(best)


class PeakEwma:
    """Power of two choices over peak-EWMA cost (latency times load): two random
    servers, the cheaper wins. A slow server's latency jumps at once and decays over
    seconds, so traffic moves away quickly and comes back gradually."""

    __slots__ = ("_random",)

    def __init__(self, rng: random.Random | None = None) -> None:
        self._random = rng or random.Random()

    def choose(self, candidates: Sequence[Server], now: float, key: bytes) -> Server:
        n = len(candidates)
        if n == 1:
            return candidates[0]
        i = int(self._random.random() * n)
        j = int(self._random.random() * (n - 1))
        if j >= i:
            j += 1
        a, b = candidates[i], candidates[j]
        return a if a.cost(now) / a.weight <= b.cost(now) / b.weight else b


#: ring points per unit of weight (ketama uses 160; 100 keeps a server's share
#: within a few percent of its weight)
POINTS_PER_WEIGHT: Final = 100


def hash64(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


class ConsistentHash:
    """A hash ring over every server of the group, ``POINTS_PER_WEIGHT * weight``
    points each; a key goes to the first candidate clockwise from its hash. Adding or
    removing one of N servers moves about 1/N of the keys, all to or from it. A request
    without a key (no such header or cookie) goes to a random candidate."""

    __slots__ = ("_owners", "_points", "_random")

    def __init__(self, servers: Sequence[Server], rng: random.Random | None = None) -> None:
        self._random = rng or random.Random()
        self._points: list[int] = []
        self._owners: list[Server] = []
        self.rebuild(servers)

    def rebuild(self, servers: Sequence[Server]) -> None:
        """Place ``servers`` on the ring (after a server joined or left)."""
        ring: list[tuple[int, str, Server]] = []
        for server in servers:
            label = server.spec.label
            for i in range(POINTS_PER_WEIGHT * server.weight):
                ring.append((hash64(b"%s-%d" % (label.encode(), i)), label, server))
        ring.sort(key=lambda point: (point[0], point[1]))
        self._points = [p[0] for p in ring]
        self._owners = [p[2] for p in ring]

    def choose(self, candidates: Sequence[Server], now: float, key: bytes) -> Server:
        if len(candidates) == 1:
            return candidates[0]
        if not key or not self._points:
            return candidates[int(self._random.random() * len(candidates))]
        points, owners = self._points, self._owners
        n = len(points)
        start = bisect.bisect_left(points, hash64(key))
        for step in range(n):
            owner = owners[(start + step) % n]
            if owner in candidates:
                return owner
        return candidates[int(self._random.random() * len(candidates))]


def make_balancer(name: str, servers: Sequence[Server] = ()) -> Balancer:
    if name == "hash":
        return ConsistentHash(servers)
    if name == "round_robin":
        return SmoothRoundRobin()
    if name == "least_requests":
        return LeastRequests()
    return PeakEwma()
