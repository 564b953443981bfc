"""Retries and hedging: backoff, the budget, and GuardedCall driven by a fake sender and clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from amqprpc import CircuitOpen, ClusterRpcClient, Config, RemoteError, RpcFuture, rpc
from amqprpc.discovery import ServiceRegistry
from amqprpc.exceptions import BrokerBlocked, BrokerError, ConfigError, ConnectionLost, RpcTimeout
from amqprpc.resilience.breaker import State
from amqprpc.resilience.budget import RetryBudget
from amqprpc.resilience.guard import Resilience
from amqprpc.resilience.retries import RetryPolicy, idempotent_names, retryable
from amqprpc.runner import service_container


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(max_attempts=5, backoff=0.1, max_backoff=0.3)
    assert [policy.delay(n, rand=lambda: 1.0) for n in (1, 2, 3, 4)] == pytest.approx([0.1, 0.2, 0.3, 0.3])
    assert policy.delay(2, rand=lambda: 0.5) == pytest.approx(0.1)
    assert 0 <= policy.delay(1) <= 0.1
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)


def test_budget_allows_a_tenth_of_the_calls_in_the_window() -> None:
    clock = Clock()
    budget = RetryBudget(0.1, window=10.0, clock=clock)
    assert not budget.try_spend()  # no calls: no retries
    for _ in range(25):
        budget.record_call()
    assert [budget.try_spend() for _ in range(4)] == [True, True, False, False]
    assert budget.totals() == (25, 2)
    clock.now += 11  # the window moved on: calls and retries forgotten
    assert budget.totals() == (0, 0) and not budget.try_spend()


def test_budget_minimum() -> None:
    budget = RetryBudget(0.1, minimum=2, clock=Clock())
    assert [budget.try_spend() for _ in range(3)] == [True, True, False]


def test_what_is_retryable() -> None:
    assert retryable(RemoteError("WorkerLost", "died"))
    assert retryable(BrokerError("nacked")) and retryable(BrokerBlocked("alarm"))
    assert retryable(ConnectionLost("gone")) and retryable(CircuitOpen("svc"))
    assert not retryable(RpcTimeout("late")) and not retryable(RemoteError("ValueError", "no"))


def test_idempotent_names() -> None:
    known = idempotent_names(Config(broker_url="memory://x", retry_idempotent="users.get, catalog.*"))
    assert known("users", "get") and known("catalog", "anything")
    assert not known("users", "create")


# ---------------------------------------------------------------------- GuardedCall


class FakeCaller:
    """Sends nothing: each attempt is a future the test settles; ``later`` runs scheduled steps."""

    def __init__(self) -> None:
        self.sent: list[RpcFuture] = []
        self.later: list[tuple[float, Callable[[], None]]] = []

    def send(self, service: str, method: str, args: Any, kwargs: Any, *, timeout: float | None,
             context: Any) -> RpcFuture:
        future = RpcFuture(service, method, f"id-{len(self.sent)}", timeout or 1.0)
        self.sent.append(future)
        return future

    def schedule(self, delay: float, fn: Callable[[], None]) -> None:
        self.later.append((delay, fn))

    def run_later(self) -> None:
        steps, self.later = self.later, []
        for _, fn in steps:
            fn()


def resilience(caller: FakeCaller, **settings: Any) -> Resilience:
    values = {"retry_budget_min": 10, "retry_backoff": 0.0, **settings}
    config = Config(broker_url="memory://x", retries=1, retry_idempotent="svc.get", **values)
    return Resilience(config, schedule=caller.schedule, make_future=RpcFuture)


def call(r: Resilience, caller: FakeCaller, method: str = "get", **kw: Any) -> Any:
    return r.call(caller.send, "svc", method, (), {}, timeout=5.0, context=None, **kw)


def test_an_idempotent_call_is_retried_after_worker_lost_and_answered_once() -> None:
    caller = FakeCaller()
    r = resilience(caller)
    outer = call(r, caller)
    caller.sent[0].set_exception(RemoteError("WorkerLost", "died"))
    assert not outer.done() and len(caller.later) == 1
    caller.run_later()
    assert len(caller.sent) == 2
    caller.sent[1].set_result("ok")
    assert outer.result() == "ok"
    assert outer.correlation_id == "id-0"


def test_retries_stop_at_max_attempts() -> None:
    caller = FakeCaller()
    r = resilience(caller, retry_max_attempts=2)
    outer = call(r, caller)
    caller.sent[0].set_exception(RemoteError("WorkerLost", "1"))
    caller.run_later()
    caller.sent[1].set_exception(RemoteError("WorkerLost", "2"))
    assert not caller.later
    with pytest.raises(RemoteError, match="2"):
        outer.result()


def test_a_non_idempotent_method_is_never_retried() -> None:
    caller = FakeCaller()
    r = resilience(caller)
    future = call(r, caller, method="create")
    assert future is caller.sent[0]  # no wrapper at all
    future.set_exception(RemoteError("WorkerLost", "died"))
    assert not caller.later and len(caller.sent) == 1


def test_an_application_error_is_the_answer() -> None:
    caller = FakeCaller()
    r = resilience(caller)
    outer = call(r, caller)
    caller.sent[0].set_exception(RemoteError("ValueError", "no"))
    assert not caller.later
    with pytest.raises(RemoteError, match="no"):
        outer.result()


def test_no_retry_without_budget() -> None:
    caller = FakeCaller()
    r = resilience(caller, retry_budget_min=0)  # one call: 10 % of it is no retry
    outer = call(r, caller)
    caller.sent[0].set_exception(RemoteError("WorkerLost", "died"))
    assert not caller.later
    with pytest.raises(RemoteError):
        outer.result()


def test_a_refused_first_attempt_is_retried_and_otherwise_raised_at_once() -> None:
    caller = FakeCaller()
    r = resilience(caller)
    refusals = [BrokerBlocked("alarm")]

    def send(*args: Any, **kwargs: Any) -> RpcFuture:
        if refusals:
            raise refusals.pop()
        return caller.send(*args, **kwargs)

    outer = r.call(send, "svc", "get", (), {}, timeout=5.0, context=None)
    caller.run_later()
    caller.sent[0].set_result(1)
    assert outer.result() == 1
    r2 = resilience(FakeCaller(), retry_budget_min=0)

    def refuse(*args: Any, **kwargs: Any) -> RpcFuture:
        raise BrokerBlocked("alarm")

    with pytest.raises(BrokerBlocked):
        r2.call(refuse, "svc", "get", (), {}, timeout=5.0, context=None)


def test_hedging_sends_a_second_copy_first_answer_wins_loser_cancelled() -> None:
    caller = FakeCaller()
    r = resilience(caller, hedge_after=0.2)
    outer = call(r, caller)
    assert [delay for delay, _ in caller.later] == [0.2]
    caller.run_later()
    assert len(caller.sent) == 2
    caller.sent[1].set_result("fast")
    assert outer.result() == "fast"
    assert caller.sent[0].cancelled()
    assert r.budget.totals()[1] == 1  # the hedge was paid from the budget


def test_no_hedge_once_answered_or_per_call_off() -> None:
    caller = FakeCaller()
    r = resilience(caller, hedge_after=0.2)
    outer = call(r, caller)
    caller.sent[0].set_result("quick")
    caller.run_later()
    assert outer.result() == "quick" and len(caller.sent) == 1
    call(r, caller, hedge_after=0.0)
    assert not caller.later


def test_a_hedge_failing_leaves_the_original_to_answer() -> None:
    caller = FakeCaller()
    r = resilience(caller, hedge_after=0.2)
    outer = call(r, caller)
    caller.run_later()
    caller.sent[1].set_exception(ConnectionLost("gone"))
    assert not outer.done()
    caller.sent[0].set_result("late but fine")
    assert outer.result() == "late but fine"


def test_cancelling_the_call_cancels_its_attempts() -> None:
    caller = FakeCaller()
    r = resilience(caller)
    outer = call(r, caller)
    assert outer.cancel()
    assert caller.sent[0].cancelled()


def test_an_open_breaker_delays_a_retry_to_its_cooldown_or_fails_fast() -> None:
    caller = FakeCaller()
    r = Resilience(Config(broker_url="memory://x", retries=1, breaker=1, retry_idempotent="svc.get",
                          retry_budget_min=10, breaker_cooldown=60.0),
                   schedule=caller.schedule, make_future=RpcFuture)
    assert r.breakers is not None
    r.breakers.get("svc", "get").trip("test")
    started = time.perf_counter()
    with pytest.raises(CircuitOpen):  # the cooldown is past the deadline: no point waiting
        r.call(caller.send, "svc", "get", (), {}, timeout=5.0, context=None)
    assert time.perf_counter() - started < 0.05
    assert not caller.sent and not caller.later


# ---------------------------------------------------------------------- through a client on memory://


class Flaky:
    name = "flaky-retries"
    runs = 0

    @rpc(idempotent=True)
    def get(self) -> int:
        type(self).runs += 1
        return type(self).runs

    @rpc
    def create(self) -> int:
        return 0


def test_the_descriptor_carries_idempotent_and_a_client_uses_it() -> None:
    config = Config(broker_url="memory://retries-unit", retries=1, discovery_interval=0.1)
    container = service_container(Flaky, config)
    registry = ServiceRegistry(config)
    registry.start()
    container.start()
    try:
        assert registry.wait_for(lambda reg: reg.is_live("flaky-retries"), timeout=5)
        assert registry.is_idempotent("flaky-retries", "get")
        assert not registry.is_idempotent("flaky-retries", "create")
        assert not registry.is_idempotent("nobody", "get")
        with ClusterRpcClient(config=config) as client:
            assert client.resilience is not None
            client.resilience.lookups.append(registry.is_idempotent)
            assert client.resilience.is_idempotent("flaky-retries", "get")
            assert client.call("flaky-retries", "get") >= 1
            assert isinstance(client.call_async("flaky-retries", "get"), RpcFuture)
            assert client.resilience.breakers is None
            assert State.CLOSED.gauge == 0
    finally:
        container.stop()
        registry.stop()
