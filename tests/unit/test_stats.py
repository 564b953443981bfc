"""The per-method call stats window the announcer sends with its heartbeat (amqprpc.discovery.stats)."""

from __future__ import annotations

from amqprpc import Config, DependencyProvider, ServiceContainer, rpc
from amqprpc.discovery import ServiceAnnouncer
from amqprpc.discovery.stats import SLICE, SLICES, CallStats, MethodStats, parse_extras
from amqprpc.testing import entrypoint_hook


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_counts_calls_errors_and_quantiles():
    clock = Clock()
    stats = CallStats(clock)
    for _ in range(98):
        stats.record("get", 0.002, True)
    stats.record("get", 0.5, False)
    stats.record("get", 0.5, False)
    snap = stats.snapshot()
    assert snap["window"] == SLICE * SLICES
    get = snap["methods"]["get"]
    assert get["calls"] == 100 and get["errors"] == 2
    assert 2.0 <= get["p50_ms"] <= 2.5  # an upper bucket bound: within ~25 %
    assert 400 <= get["p99_ms"] <= 625


def test_old_calls_leave_the_window():
    clock = Clock()
    stats = CallStats(clock)
    stats.record("get", 0.001, True)
    clock.now += SLICE * (SLICES - 1)
    stats.record("get", 0.001, True)
    assert stats.snapshot()["methods"]["get"]["calls"] == 2
    clock.now += SLICE
    assert stats.snapshot()["methods"]["get"]["calls"] == 1
    clock.now += SLICE * SLICES
    assert stats.snapshot()["methods"]["get"] == {"calls": 0, "errors": 0, "p50_ms": None, "p99_ms": None}


def test_parse_extras_drops_what_is_malformed():
    extras = parse_extras({
        "stats": {"window": 60, "methods": {"ok": {"calls": 3, "errors": 1, "p50_ms": 1, "p99_ms": "x"},
                                            "bad": {"calls": 1, "errors": 2},
                                            "<script>": {"calls": 1, "errors": 0},
                                            "neg": {"calls": -1, "errors": 0}}},
        "queues": ["rpc-a", 7, "a b"],
        "breakers": [{"name": "b", "state": "half_open"}, {"name": "c", "state": "melted"}, "x"],
    })
    assert extras.methods == (("ok", MethodStats(3, 1, 1.0, None)),)
    assert extras.queues == ("rpc-a",)
    assert extras.breakers == ({"name": "b", "state": "half_open"},)
    assert parse_extras({"stats": {"window": True, "methods": {}}}).window == 0.0


class Counter:
    name = "counter"

    @rpc
    def ok(self) -> int:
        return 1

    @rpc
    def boom(self) -> None:
        raise ValueError("no")


def test_the_announcer_counts_every_call_and_announces_it():
    container = ServiceContainer(Counter, Config(broker_url="memory://"), extensions=[ServiceAnnouncer])
    container.start()
    try:
        with entrypoint_hook(container, "ok") as ok:
            ok()
            ok()
        with entrypoint_hook(container, "boom") as boom:
            try:
                boom()
            except ValueError:
                pass
        [announcer] = [e for e in container._shared.values() if isinstance(e, ServiceAnnouncer)]
        extras = announcer._extras()
        methods = extras["stats"]["methods"]
        assert methods["ok"]["calls"] == 2 and methods["ok"]["errors"] == 0
        assert methods["boom"] == {**methods["boom"], "calls": 1, "errors": 1}
        assert extras["queues"] == ["rpc-counter"]
        assert extras["breakers"] == []
    finally:
        container.stop()


class BreakerBoard(DependencyProvider):
    """Stands in for the breaker helper's dependency: anything with ``breaker_states()``."""

    def breaker_states(self) -> list[dict[str, str]]:
        return [{"name": "payments", "state": "open"}]


class Guarded:
    name = "guarded"
    breakers = BreakerBoard()

    @rpc
    def ok(self) -> int:
        return 1


def test_breaker_states_of_a_dependency_are_announced_and_parsed():
    container = ServiceContainer(Guarded, Config(broker_url="memory://"), extensions=[ServiceAnnouncer])
    container.start()
    try:
        [announcer] = [e for e in container._shared.values() if isinstance(e, ServiceAnnouncer)]
        extras = announcer._extras()
        assert extras["breakers"] == [{"name": "payments", "state": "open"}]
        assert parse_extras(extras).breakers == ({"name": "payments", "state": "open"},)
    finally:
        container.stop()


def test_with_discovery_off_no_call_is_observed():
    container = ServiceContainer(Counter, Config(broker_url="memory://", discovery_interval=0),
                                 extensions=[ServiceAnnouncer])
    container.start()
    try:
        assert not any(isinstance(getattr(o, "__self__", None), ServiceAnnouncer)
                       for o in container.worker_observers)
    finally:
        container.stop()
