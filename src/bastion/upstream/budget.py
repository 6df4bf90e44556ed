"""The retry budget: retries may add at most ``retry_budget`` of the recent requests
plus ``retry_min_per_second`` (Linkerd's and Envoy's retry budgets), so when every
server fails the load they see grows by that share, not by ``retries + 1`` times.

"Recent" is the last :data:`WINDOW` seconds, counted in one-second buckets.
"""

from __future__ import annotations

from typing import Final

__all__ = ["WINDOW", "RetryBudget"]

WINDOW: Final = 10


class RetryBudget:
    """Counts first tries and retries per second over the last :data:`WINDOW` s."""

    __slots__ = ("_requests", "_retries", "_second", "min_per_second", "ratio")

    def __init__(self, ratio: float, min_per_second: float) -> None:
        self.ratio = ratio
        self.min_per_second = min_per_second
        self._requests = [0] * WINDOW
        self._retries = [0] * WINDOW
        self._second = 0

    def _advance(self, now: float) -> int:
        second = int(now)
        gap = second - self._second
        if gap > 0:
            for k in range(1, min(gap, WINDOW) + 1):
                slot = (self._second + k) % WINDOW
                self._requests[slot] = 0
                self._retries[slot] = 0
            self._second = second
        return second % WINDOW

    def request(self, now: float) -> None:
        """A request's first try."""
        self._requests[self._advance(now)] += 1

    def try_retry(self, now: float) -> bool:
        """Whether a retry fits in the budget now; if so it is counted."""
        slot = self._advance(now)
        allowed = self.ratio * sum(self._requests) + self.min_per_second * WINDOW
        if sum(self._retries) + 1 > allowed:
            return False
        self._retries[slot] += 1
        return True
