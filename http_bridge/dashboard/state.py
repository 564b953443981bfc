"""The dashboard's JSON (``GET /dashboard/state.json``): what the registry knows, plus queue depths.

Everything comes from discovery: the services and their live instances (descriptors), the
per-method call stats and breaker states each instance sends with its heartbeat
(``amqprpc.discovery.stats``), and the depth of every queue the instances say they consume,
asked of the broker by passive declares on the registry's connection, at most once per
``QUEUE_TTL`` seconds whatever the number of open pages. The shape is documented in
docs/bridge.md ("Dashboard") and pinned by tests/http_bridge/test_dashboard.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from amqprpc import ServiceRegistry
from amqprpc.discovery import InstanceExtras, ServiceView

QUEUE_TTL = 2.0  # seconds a set of queue depths is reused
MAX_QUEUES = 500  # queues asked about per refresh: a registry full of junk cannot make it loop
DLQ_SUFFIX = ".dlq"


class QueueDepths:
    """Queue depths by name, refreshed from the broker at most every ``ttl`` seconds."""

    def __init__(self, ttl: float = QUEUE_TTL, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self._clock = clock
        self._depths: dict[str, tuple[int, int] | None] = {}
        self._names: frozenset[str] = frozenset()
        self._at = -1e9
        self._refresh: asyncio.Future[None] | None = None

    async def get(self, registry: ServiceRegistry, names: list[str]) -> dict[str, tuple[int, int] | None]:
        """``{queue: (messages, consumers) or None}``; one refresh shared by concurrent readers."""
        wanted = frozenset(names[:MAX_QUEUES])
        if self._refresh is None and (self._clock() - self._at > self.ttl or not wanted <= self._names):
            loop = asyncio.get_running_loop()
            self._refresh = loop.run_in_executor(None, self._ask, registry, sorted(wanted))
        if self._refresh is not None:
            refresh = self._refresh
            try:
                await refresh
            finally:
                if self._refresh is refresh:
                    self._refresh = None
        return self._depths

    def _ask(self, registry: ServiceRegistry, names: list[str]) -> None:
        depths: dict[str, tuple[int, int] | None] = {}
        for name in names:
            try:
                info = registry.queue_info(name)
            except Exception:  # a slow or refusing broker: the page shows "?"
                info = None
            depths[name] = None if info is None else (info.message_count, info.consumer_count)
        self._depths, self._names, self._at = depths, frozenset(names), self._clock()


async def build_state(registry: ServiceRegistry | None, depths: QueueDepths) -> dict[str, Any]:
    """The whole page's data, JSON-ready."""
    if registry is None:
        return {"generated_at": time.time(), "services": [], "breakers": []}
    views = registry.services()
    extras = {view.name: registry.extras(view.name) for view in views}
    names = sorted({q for per in extras.values() for extra in per.values() for q in extra.queues})
    known = await depths.get(registry, names)
    services = [_service(view, extras[view.name], known) for view in views]
    breakers = [breaker for service in services for breaker in service["breakers"]]
    return {"generated_at": time.time(), "services": services, "breakers": breakers}


def _service(view: ServiceView, extras: dict[str, InstanceExtras], depths: dict[str, tuple[int, int] | None]
             ) -> dict[str, Any]:
    instances = [{
        "id": d.instance, "host": d.host, "pid": d.pid, "version": d.version,
        "amqprpc": d.amqprpc_version, "since": d.started_at, "last_seen": d.sent_at,
    } for d in view.instances]
    totals: dict[str, dict[str, Any]] = {}
    window = 0.0
    queues: list[str] = []
    breakers: list[dict[str, Any]] = []
    for instance, extra in extras.items():
        window = max(window, extra.window)
        for name in extra.queues:
            if name not in queues:
                queues.append(name)
        breakers.extend({"service": view.name, "instance": instance, **b} for b in extra.breakers)
        for method_name, stats in extra.methods:
            total = totals.setdefault(method_name, {"calls": 0, "errors": 0, "p50_ms": None, "p99_ms": None})
            total["calls"] += stats.calls
            total["errors"] += stats.errors
            for key in ("p50_ms", "p99_ms"):  # the slowest instance's: what the worst caller sees
                value = getattr(stats, key)
                if value is not None and (total[key] is None or value > total[key]):
                    total[key] = value
    methods = []
    for method in view.methods:
        total = totals.pop(method.name, {"calls": 0, "errors": 0, "p50_ms": None, "p99_ms": None})
        methods.append(_method_row(method.name, total, window, http=str(method.http) if method.http
                                   else None, roles=list(method.roles), public=method.public))
    for name, total in sorted(totals.items()):  # event handlers, timers: stats but no descriptor
        methods.append(_method_row(name, total, window, http=None, roles=[], public=False))
    return {
        "name": view.name,
        "live": view.is_live,
        "version": view.version,
        "down_for": round(view.down_for, 1),
        "window": window,
        "instances": instances,
        "methods": methods,
        "queues": [_queue_row(name, depths.get(name)) for name in queues],
        "breakers": breakers,
    }


def _method_row(name: str, total: dict[str, Any], window: float, **info: Any) -> dict[str, Any]:
    calls, errors = total["calls"], total["errors"]
    return {
        "name": name, **info, "calls": calls, "errors": errors,
        "calls_per_s": round(calls / window, 3) if window else 0.0,
        "error_rate": round(errors / calls, 4) if calls else 0.0,
        "p50_ms": total["p50_ms"], "p99_ms": total["p99_ms"],
    }


def _queue_row(name: str, depth: tuple[int, int] | None) -> dict[str, Any]:
    return {"name": name, "dead_letter": name.endswith(DLQ_SUFFIX),
            "messages": None if depth is None else depth[0],
            "consumers": None if depth is None else depth[1]}
