"""Steady RPC and event traffic through a cluster, and the invariants checked after a fault.

Shared by the kill (B7) and partition (B8) tests: a service with an ``echo`` RPC and an
event handler that records payload numbers; a :class:`Load` that calls and dispatches at a
steady pace from two threads; :func:`check_calls` and :func:`check_events`, which assert
the invariants of shared/notes/reliability.md §3 (every call one outcome by its deadline;
lost confirmed events = 0, duplicates allowed and counted).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any

from amqprpc import (
    BrokerError,
    ClusterRpcClient,
    Config,
    EventPublisher,
    RpcFuture,
    RpcTimeout,
    ServiceContainer,
    event_handler,
    rpc,
)

from ..waiting import wait_until

HEARTBEAT = 2.0
CALL_TIMEOUT = 5.0
# How late past its deadline a call may resolve: the client sweeps deadlines periodically
# and a 2-core machine running 3 brokers is slow to schedule. A hang is minutes, not this.
DEADLINE_SLACK = 3.0
PACE = 0.02  # seconds between two calls (and two events) of the load: ~50/s each
RECOVERY_TIMEOUT = 30.0  # recovery takes ~1 s after a kill here; 30 s is "never"


class Probe:
    """What the service saw: events handled (by payload number, duplicates counted)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: Counter[int] = Counter()

    def handled(self, n: int) -> None:
        with self.lock:
            self.events[n] += 1

    def distinct_events(self) -> set[int]:
        with self.lock:
            return set(self.events)

    def duplicates(self) -> int:
        with self.lock:
            return sum(self.events.values()) - len(self.events)


def make_service(name: str, source: str, probe: Probe) -> type:
    """A service ``name`` with ``echo`` and a handler of ``source``'s ``tick`` events."""

    class ClusterService:
        @rpc
        def echo(self, value: Any) -> Any:
            return value

        @event_handler(source, "tick")
        def on_tick(self, payload: dict[str, int]) -> None:
            probe.handled(payload["n"])

    ClusterService.name = name  # type: ignore[attr-defined]
    return ClusterService


@dataclass
class Load:
    """Calls and events sent at a steady pace from two threads until :meth:`finish`."""

    client: ClusterRpcClient
    publisher: EventPublisher
    service: str
    source: str
    stop: threading.Event = field(default_factory=threading.Event)
    calls: list[tuple[int, RpcFuture]] = field(default_factory=list)
    resolved_at: dict[int, float] = field(default_factory=dict)
    events: list[tuple[int, Future[None], float]] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for target in (self._call, self._dispatch):
            thread = threading.Thread(target=target, name=f"load-{target.__name__}", daemon=True)
            thread.start()
            self.threads.append(thread)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(10)
            assert not thread.is_alive(), f"{thread.name} did not stop: a send blocked"

    def results_since(self, since: float) -> int:
        """Calls issued at or after ``since`` (monotonic) that returned their own value."""
        return sum(
            1 for _, f in list(self.calls)
            if f.deadline - f.timeout >= since and f.done() and f.exception() is None
        )

    def handled_since(self, since: float, probe: Probe) -> bool:
        """Whether an event dispatched after ``since`` has been handled."""
        handled = probe.distinct_events()
        return any(sent > since and n in handled for n, _, sent in list(self.events))

    def state_since(self, since: float) -> str:
        """What became of the calls and events sent at or after ``since``, for failure messages."""
        calls = Counter(_outcome(f) for _, f in list(self.calls) if f.deadline - f.timeout >= since)
        events = Counter(_outcome(f) for _, f, sent in list(self.events) if sent >= since)
        return f"calls since: {dict(calls)}, events since: {dict(events)}"

    def _call(self) -> None:
        i = 0
        while not self.stop.wait(PACE):
            future = self.client.call_async(self.service, "echo", i, _timeout=CALL_TIMEOUT)
            future.add_done_callback(lambda _, i=i: self.resolved_at.setdefault(i, time.monotonic()))
            self.calls.append((i, future))
            i += 1

    def _dispatch(self) -> None:
        n = 0
        while not self.stop.wait(PACE):
            self.events.append((n, self.publisher.dispatch(self.source, "tick", {"n": n}),
                                time.monotonic()))
            n += 1


def _outcome(future: Future[Any]) -> str:
    if not future.done():
        return "pending"
    error = future.exception()
    return "ok" if error is None else f"{type(error).__name__}: {error}"


def deploy(register: Callable[[Any], Any], service_cls: type, worker_url: str,
           client_url: str) -> tuple[ServiceContainer, ClusterRpcClient, EventPublisher]:
    """Start a worker of ``service_cls`` (quorum queues) on ``worker_url``, and a client and
    an event publisher on ``client_url``; ``register`` stops them after the test."""
    config = Config(broker_url=worker_url, heartbeat=HEARTBEAT, queue_type="quorum")
    container = register(ServiceContainer(service_cls, config))
    container.connection.max_backoff = 1.0  # tests wait for recovery: keep retries brisk
    container.start(wait=True)
    client_config = config.replace(broker_url=client_url)
    client = register(ClusterRpcClient(config=client_config, timeout=CALL_TIMEOUT))
    client._connection.max_backoff = 1.0
    client.start()
    publisher = register(EventPublisher(config=client_config))
    publisher.connection.max_backoff = 1.0
    publisher.start()
    return container, client, publisher


def wait_served_since(load: Load, probe: Probe, since: float, calls: int, what: str,
                      extra: str = "") -> None:
    """Wait until ``calls`` calls and one event sent after ``since`` were served."""
    try:
        wait_until(lambda: load.results_since(since) >= calls,
                   f"{calls} calls issued after {what} to succeed", timeout=RECOVERY_TIMEOUT)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; {load.state_since(since)}{extra}") from None
    wait_until(lambda: load.handled_since(since, probe),
               f"an event dispatched after {what} to be handled", timeout=RECOVERY_TIMEOUT)


def check_calls(load: Load, client: ClusterRpcClient) -> Counter[str]:
    """Every call ended in exactly one outcome by its deadline: its own result, or a timeout,
    a lost connection or a refusal by the broker (a nacked request: not run). Returns the
    outcome counts."""
    outcomes: Counter[str] = Counter()
    for i, future in load.calls:
        remaining = future.deadline - time.monotonic()
        try:
            value = future.result(timeout=max(0.0, remaining) + DEADLINE_SLACK)
        except (RpcTimeout, BrokerError) as exc:  # ConnectionLost is a BrokerError
            assert future.done(), f"call {i} did not end by its deadline: {exc!r}"
            outcomes[type(exc).__name__] += 1
        else:
            assert value == i, f"call {i} got another call's result: {value!r}"
            outcomes["result"] += 1
        late = load.resolved_at[i] - future.deadline
        assert late <= DEADLINE_SLACK, f"call {i} resolved {late:.1f}s after its deadline"
    assert client._caller.pending_count() == 0
    return outcomes


def check_events(load: Load, probe: Probe) -> dict[str, int]:
    """Every event was confirmed or failed (none left pending), and no confirmed one is lost.

    Not confirmed is not lost: the publisher was told (connection gone, or the broker nacked
    while the queue had no leader). Returns counts for the test's summary.
    """
    _, not_done = wait_futures([f for _, f, _ in load.events], timeout=RECOVERY_TIMEOUT)
    assert not not_done, f"{len(not_done)} events neither confirmed nor failed"
    confirmed = {n for n, f, _ in load.events if f.exception() is None}
    failed = [f.exception() for _, f, _ in load.events if f.exception() is not None]
    assert all(isinstance(exc, BrokerError) for exc in failed), {repr(e) for e in failed}
    try:
        wait_until(lambda: confirmed <= probe.distinct_events(),
                   "every confirmed event to be handled", timeout=RECOVERY_TIMEOUT)
    except AssertionError:
        pass  # the assertion below names the lost ones
    lost = confirmed - probe.distinct_events()
    assert not lost, f"{len(lost)} confirmed events lost: {sorted(lost)[:20]}"
    return {"confirmed": len(confirmed), "failed": len(failed),
            "handled": len(probe.distinct_events()), "duplicates": probe.duplicates()}
