"""Per-method call statistics a worker sends with its heartbeat: the bridge's dashboard reads them.

Each container's announcer owns one ``CallStats``: a rolling window (``SLICES`` slices of
``SLICE`` seconds, one minute) of calls, errors and a coarse latency histogram per method,
fed by the container's worker observers. ``record`` is one lock, one clock read and a few
increments (docs/benchmarks.md, "What the dashboard's call stats cost"); ``snapshot`` runs
once per heartbeat and sends, per method, the calls and errors of the window and its p50
and p99 (upper bucket bounds, so within one bucket: about 25 %).

Wire shape (the ``stats`` key of an announcement, docs/protocol.md)::

    {"window": 60.0, "methods": {"get": {"calls": 120, "errors": 2,
                                          "p50_ms": 1.2, "p99_ms": 8.0}}}

The announcement's ``breakers`` key is a list of ``{"name", "state"}`` objects (``state`` one of
``closed``, ``open``, ``half_open``), from any dependency of the container that has a
``breaker_states()`` method; ``queues`` lists the queues the instance consumes, with their
dead-letter queues. ``parse_extras`` checks all three from the wire: anything malformed is
dropped, never trusted half-way.
"""

from __future__ import annotations

import bisect
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

SLICE = 5.0  # seconds per slice of the window
SLICES = 12  # slices kept: the window is SLICE x SLICES seconds
# Latency bucket upper bounds in seconds: 0.1 ms to 60 s, each ~1.25 x the last (coarse p50/p99).
BOUNDS = tuple(round(0.0001 * 1.25 ** i, 7) for i in range(58))
MAX_METHODS = 256  # methods per instance the bridge keeps (a hostile announcement is cut here)
MAX_QUEUES = 256
MAX_BREAKERS = 256
BREAKER_STATES = ("closed", "open", "half_open")
_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,255}$")


class _Slice:
    __slots__ = ("buckets", "calls", "errors", "index")

    def __init__(self, index: int) -> None:
        self.index = index
        self.calls = 0
        self.errors = 0
        self.buckets = [0] * (len(BOUNDS) + 1)


class CallStats:
    """Calls, errors and latencies per method over the last minute, for one container."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._methods: dict[str, list[_Slice]] = {}

    def record(self, method: str, seconds: float, ok: bool) -> None:
        """One finished call of ``method`` (any thread)."""
        index = int(self._clock() / SLICE)
        bucket = bisect.bisect_left(BOUNDS, seconds)
        with self._lock:
            slices = self._methods.get(method)
            if slices is None:
                if len(self._methods) >= MAX_METHODS:
                    return
                slices = self._methods[method] = []
            if not slices or slices[-1].index != index:
                slices.append(_Slice(index))
                if len(slices) > SLICES:
                    del slices[0]
            current = slices[-1]
            current.calls += 1
            if not ok:
                current.errors += 1
            current.buckets[bucket] += 1

    def snapshot(self) -> dict[str, Any]:
        """The wire form of the window now (see the module docstring)."""
        oldest = int(self._clock() / SLICE) - SLICES + 1
        methods: dict[str, dict[str, Any]] = {}
        with self._lock:
            for name, slices in self._methods.items():
                live = [s for s in slices if s.index >= oldest]
                calls = sum(s.calls for s in live)
                buckets = [sum(column) for column in zip(*(s.buckets for s in live), strict=True)]
                methods[name] = {
                    "calls": calls,
                    "errors": sum(s.errors for s in live),
                    "p50_ms": _quantile_ms(buckets, calls, 0.50),
                    "p99_ms": _quantile_ms(buckets, calls, 0.99),
                }
        return {"window": SLICE * SLICES, "methods": methods}


def _quantile_ms(buckets: list[int], total: int, q: float) -> float | None:
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(buckets):
        seen += count
        if seen >= rank:
            bound = BOUNDS[index] if index < len(BOUNDS) else BOUNDS[-1]
            return round(bound * 1000, 3)
    return round(BOUNDS[-1] * 1000, 3)


# ---------------------------------------------------------------------- receiving side


@dataclass(frozen=True, slots=True)
class MethodStats:
    calls: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None


@dataclass(frozen=True, slots=True)
class InstanceExtras:
    """What an instance announces besides its descriptor: stats, queues, breakers."""

    window: float = 0.0
    methods: tuple[tuple[str, MethodStats], ...] = ()
    queues: tuple[str, ...] = ()
    breakers: tuple[dict[str, Any], ...] = ()


NO_EXTRAS = InstanceExtras()


def parse_extras(payload: Any) -> InstanceExtras:
    """The ``stats``, ``queues`` and ``breakers`` of an announcement; what is malformed is dropped."""
    if not isinstance(payload, dict):
        return NO_EXTRAS
    window, methods = _parse_stats(payload.get("stats"))
    queues = payload.get("queues")
    names = tuple(q for q in queues[:MAX_QUEUES] if isinstance(q, str) and _NAME.match(q)) \
        if isinstance(queues, list) else ()
    return InstanceExtras(window, methods, names, _parse_breakers(payload.get("breakers")))


def _parse_stats(raw: Any) -> tuple[float, tuple[tuple[str, MethodStats], ...]]:
    if not isinstance(raw, dict):
        return 0.0, ()
    window: Any = raw.get("window")
    methods = raw.get("methods")
    if not _number(window) or not 0 < window <= 3600 or not isinstance(methods, dict):
        return 0.0, ()
    out: list[tuple[str, MethodStats]] = []
    for name, entry in list(methods.items())[:MAX_METHODS]:
        if not isinstance(name, str) or not _NAME.match(name) or not isinstance(entry, dict):
            continue
        calls: Any = entry.get("calls")
        errors: Any = entry.get("errors")
        if not _count(calls) or not _count(errors) or errors > calls:
            continue
        out.append((name, MethodStats(calls, errors, _ms(entry.get("p50_ms")), _ms(entry.get("p99_ms")))))
    return float(window), tuple(sorted(out))


def _parse_breakers(raw: Any) -> tuple[dict[str, Any], ...]:
    if not isinstance(raw, list):
        return ()
    out = []
    for entry in raw[:MAX_BREAKERS]:
        if not isinstance(entry, dict):
            continue
        name, state = entry.get("name"), entry.get("state")
        if isinstance(name, str) and _NAME.match(name) and state in BREAKER_STATES:
            out.append({"name": name, "state": state})
    return tuple(out)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


def _ms(value: Any) -> float | None:
    return float(value) if _number(value) and 0 <= value < 1e9 else None
