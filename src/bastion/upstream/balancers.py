"""How a group chooses the server for a request.

A :class:`Balancer` gets the candidates (servers not ejected, not full, not already
tried for this request) and returns one. Consistent hashing and sticky sessions will
plug in here; they will need the request, hence the ``key`` argument (unused so far).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Protocol

from bastion.upstream.server import Server

__all__ = ["Balancer", "LeastRequests", "PeakEwma", "SmoothRoundRobin", "make_balancer"]


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
            server.current_weight += server.spec.weight
            total += server.spec.weight
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
            load = server.in_flight / server.spec.weight
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
        return a if a.cost(now) / a.spec.weight <= b.cost(now) / b.spec.weight else b


def make_balancer(name: str) -> Balancer:
    if name == "round_robin":
        return SmoothRoundRobin()
    if name == "least_requests":
        return LeastRequests()
    return PeakEwma()
