"""Counts over a sliding time window, in buckets: the window maths breakers and budgets share.

The window is ``buckets`` slots of ``window / buckets`` seconds each. Adding to a count
moves the window forward first (slots that fell out are zeroed), so a total is always
"what happened in the last ``window`` seconds", give or take one slot. Not thread-safe:
the owner holds its own lock.
"""

from __future__ import annotations

from collections.abc import Callable

Clock = Callable[[], float]


class SlidingCounts:
    """``kinds`` counters (e.g. calls and failures) over the last ``window`` seconds."""

    __slots__ = ("_buckets", "_clock", "_current", "_slot", "_slots", "totals")

    def __init__(self, window: float, kinds: int, *, buckets: int = 10, clock: Clock) -> None:
        if window <= 0 or buckets < 1:
            raise ValueError("a window needs a positive length and at least one bucket")
        self._clock = clock
        self._slot = window / buckets
        self._buckets = buckets
        self._slots = [[0] * kinds for _ in range(buckets)]
        self._current = int(clock() / self._slot)
        self.totals = [0] * kinds

    def add(self, kind: int, amount: int = 1) -> None:
        self.advance()
        self._slots[self._current % self._buckets][kind] += amount
        self.totals[kind] += amount

    def advance(self) -> None:
        """Drop the slots older than the window."""
        now = int(self._clock() / self._slot)
        if now == self._current:
            return
        for step in range(min(now - self._current, self._buckets)):
            slot = self._slots[(self._current + 1 + step) % self._buckets]
            for kind, count in enumerate(slot):
                self.totals[kind] -= count
                slot[kind] = 0
        self._current = now

    def total(self, kind: int) -> int:
        self.advance()
        return self.totals[kind]

    def clear(self) -> None:
        for slot in self._slots:
            slot[:] = [0] * len(slot)
        self.totals[:] = [0] * len(self.totals)
