"""Circuit breakers: the window maths, each transition, and a breaker in a real Caller on memory://."""

from __future__ import annotations

import logging
import time

import pytest

from amqprpc import (
    CircuitOpen,
    ClusterRpcClient,
    Config,
    RemoteError,
    RpcProxy,
    RpcTimeout,
    UnknownService,
    rpc,
)
from amqprpc.exceptions import BrokerError, ConfigError, MethodNotFound, ServiceUnavailable
from amqprpc.resilience.breaker import (
    ANY_METHOD,
    Breakers,
    BreakerSettings,
    CircuitBreaker,
    Outcome,
    State,
    classify,
)
from amqprpc.resilience.window import SlidingCounts
from amqprpc.runner import service_container


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, **settings: object) -> CircuitBreaker:
    values = {"min_calls": 4, "failure_ratio": 0.5, "window": 10.0, "cooldown": 5.0,
              "half_open_calls": 2, **settings}
    return CircuitBreaker("svc", ANY_METHOD, BreakerSettings(**values), clock=clock)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- the window


def test_sliding_counts_forget_what_left_the_window() -> None:
    clock = Clock()
    counts = SlidingCounts(10.0, 2, clock=clock)
    counts.add(0, 3)
    clock.now += 5
    counts.add(0)
    counts.add(1)
    assert counts.total(0) == 4 and counts.total(1) == 1
    clock.now += 6  # the first three are now older than 10 s
    assert counts.total(0) == 1 and counts.total(1) == 1
    clock.now += 100  # far past: everything gone, without walking 100 slots
    assert counts.total(0) == 0 and counts.total(1) == 0


def test_sliding_counts_clear() -> None:
    counts = SlidingCounts(1.0, 1, clock=Clock())
    counts.add(0, 5)
    counts.clear()
    assert counts.total(0) == 0


# ---------------------------------------------------------------------- transitions


def test_opens_on_the_failure_ratio_only_after_min_calls() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record(Outcome.FAILURE)
    assert b.state is State.CLOSED  # 3 of 3 failed, but fewer than min_calls seen
    b.record(Outcome.FAILURE)
    assert b.state is State.OPEN
    assert b.allow() == pytest.approx(5.0)


def test_a_healthy_majority_keeps_it_closed() -> None:
    b = breaker(Clock())
    for _ in range(10):
        b.record(Outcome.OK)
    for _ in range(9):
        b.record(Outcome.FAILURE)
    assert b.state is State.CLOSED  # 9 of 19 < 50 %
    b.record(Outcome.FAILURE)
    assert b.state is State.OPEN  # 10 of 20


def test_old_failures_fall_out_of_the_window() -> None:
    clock = Clock()
    b = breaker(clock)
    for _ in range(3):
        b.record(Outcome.FAILURE)
    clock.now += 11
    b.record(Outcome.FAILURE)
    assert b.state is State.CLOSED


def test_half_open_after_cooldown_lets_a_limited_number_of_trials_through() -> None:
    clock = Clock()
    b = breaker(clock)
    b.trip("test")
    assert b.allow() is not None
    clock.now += 5.01
    assert b.allow() is None and b.state is State.HALF_OPEN
    assert b.allow() is None
    assert b.allow() is not None  # two trials out: the third waits for their verdict
    b.record(Outcome.OK)
    assert b.state is State.HALF_OPEN
    b.record(Outcome.OK)
    assert b.state is State.CLOSED and b.allow() is None


def test_a_failed_trial_opens_it_again_for_a_new_cooldown() -> None:
    clock = Clock()
    b = breaker(clock)
    b.trip("test")
    clock.now += 6
    assert b.allow() is None
    b.record(Outcome.FAILURE, "RpcTimeout: slow")
    assert b.state is State.OPEN
    assert b.allow() == pytest.approx(5.0)


def test_an_ignored_trial_gives_its_slot_back() -> None:
    clock = Clock()
    b = breaker(clock, half_open_calls=1)
    b.trip("test")
    clock.now += 6
    assert b.allow() is None
    assert b.allow() is not None
    b.record(Outcome.IGNORE)  # e.g. cancelled by its caller
    assert b.allow() is None


def test_no_consumer_opens_at_once() -> None:
    b = breaker(Clock())
    b.record(Outcome.ABSENT, "nobody consumes rpc-svc")
    assert b.state is State.OPEN


def test_each_transition_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    b = breaker(clock, half_open_calls=1)
    with caplog.at_level(logging.INFO, "amqprpc.resilience.breaker"):
        b.trip("no consumer")
        clock.now += 6
        b.allow()
        b.record(Outcome.OK)
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "circuit breaker service=svc method=* from=closed to=open reason=no consumer",
        "circuit breaker service=svc method=* from=open to=half_open reason=cooldown passed",
        "circuit breaker service=svc method=* from=half_open to=closed reason=1 trial call(s) succeeded",
    ]


def test_classify() -> None:
    assert classify(None, count_errors=False) is Outcome.OK
    assert classify(RpcTimeout("x"), count_errors=False) is Outcome.FAILURE
    assert classify(BrokerError("nacked"), count_errors=False) is Outcome.FAILURE
    assert classify(RemoteError("WorkerLost", "died"), count_errors=False) is Outcome.FAILURE
    assert classify(ServiceUnavailable("svc"), count_errors=False) is Outcome.ABSENT
    assert classify(UnknownService("svc"), count_errors=False) is Outcome.ABSENT
    assert classify(CircuitOpen("svc"), count_errors=False) is Outcome.IGNORE
    assert classify(MethodNotFound("x"), count_errors=True) is Outcome.IGNORE
    assert classify(RemoteError("ValueError", "bad"), count_errors=False) is Outcome.OK
    assert classify(RemoteError("ValueError", "bad"), count_errors=True) is Outcome.FAILURE


def test_settings_per_service_override_and_checks() -> None:
    config = Config(broker_url="memory://x", breaker_min_calls=7,
                    extra={"ORDERS_BREAKER_MIN_CALLS": "2", "orders_breaker_count_errors": "true"})
    assert BreakerSettings.for_service(config, "users").min_calls == 7
    orders = BreakerSettings.for_service(config, "orders")
    assert orders.min_calls == 2 and orders.count_errors is True
    with pytest.raises(ConfigError, match="breaker_min_calls"):
        BreakerSettings.for_service(Config(broker_url="memory://x",
                                           extra={"a_breaker_min_calls": "0"}), "a")
    with pytest.raises(ConfigError, match="breaker_failure_ratio"):
        Config(broker_url="memory://x", breaker_failure_ratio=1.5)


def test_breakers_per_service_unless_a_method_has_its_own() -> None:
    breakers = Breakers(Config(broker_url="memory://x", breaker_per_method="svc.slow"))
    assert breakers.get("svc", "a") is breakers.get("svc", "b")
    assert breakers.get("svc", "slow") is not breakers.get("svc", "a")
    assert breakers.get("svc", "slow").method == "slow"


# ---------------------------------------------------------------------- in a Caller


class Sleepy:
    name = "sleepy-breaker"

    @rpc
    def nap(self, seconds: float) -> str:
        time.sleep(seconds)
        return "rested"


def test_an_open_breaker_fails_fast_without_publishing() -> None:
    config = Config(broker_url="memory://breaker-unit", breaker=1, breaker_min_calls=2,
                    breaker_failure_ratio=0.6, breaker_cooldown=60.0)
    container = service_container(Sleepy, config)
    container.start()
    try:
        with ClusterRpcClient(config=config) as client:
            assert client.call("sleepy-breaker", "nap", 0) == "rested"
            for _ in range(2):
                with pytest.raises(RpcTimeout):
                    client.call("sleepy-breaker", "nap", 0.5, _timeout=0.1)
            sent = []
            client._connection.publish = lambda *a, **k: sent.append(a)  # type: ignore[method-assign]
            started = time.perf_counter()
            with pytest.raises(CircuitOpen) as raised:
                client.call("sleepy-breaker", "nap", 0)
            assert time.perf_counter() - started < 0.05  # in practice a few microseconds
            assert not sent
            assert isinstance(raised.value, ServiceUnavailable) and raised.value.retry_after > 50
            assert client.resilience is not None and client.resilience.breakers is not None
            assert client.resilience.breakers.get("sleepy-breaker", "nap").state is State.OPEN
    finally:
        container.stop()


def test_an_unknown_service_opens_its_breaker_at_once() -> None:
    config = Config(broker_url="memory://breaker-unit-unknown", breaker=1)
    with ClusterRpcClient(config=config) as client:
        with pytest.raises(UnknownService):
            client.call("nobody-here", "x")
        with pytest.raises(CircuitOpen):
            client.call("nobody-here", "x")


def test_breakers_off_is_the_plain_path() -> None:
    with ClusterRpcClient(config=Config(broker_url="memory://breaker-off")) as client:
        assert client.resilience is None


def test_breaker_state_is_a_metric() -> None:
    from amqprpc.metrics.registry import MetricsRegistry

    config = Config(broker_url="memory://breaker-metrics", breaker=1)
    metrics = MetricsRegistry()
    with ClusterRpcClient(config=config) as client:
        metrics.client_calls.watch_client(client)
        with pytest.raises(UnknownService):
            client.call("nobody-metrics", "x")
        text = metrics.render().decode()
    assert 'amqprpc_breaker_state{method="*",service="nobody-metrics"} 1.0' in text


def test_a_deadline_already_past_is_not_the_services_fault() -> None:
    config = Config(broker_url="memory://breaker-past", breaker=1, breaker_min_calls=1)
    with ClusterRpcClient(config=config) as client:
        for _ in range(3):
            with pytest.raises(RpcTimeout):
                client.call("anyone", "x", _timeout=-1)
        assert client.resilience is not None and client.resilience.breakers is not None
        assert client.resilience.breakers.get("anyone", "x").state is State.CLOSED


class Front:
    name = "front-breaker"
    backend = RpcProxy("nobody-behind")

    @rpc
    def forward(self) -> object:
        return self.backend.anything()


def test_rpc_proxy_calls_go_through_the_containers_breakers() -> None:
    config = Config(broker_url="memory://breaker-proxy", breaker=1)
    container = service_container(Front, config)
    container.start()
    try:
        with ClusterRpcClient(config=config.replace(breaker=0)) as client:
            with pytest.raises(UnknownService):
                client.call("front-breaker", "forward")
            with pytest.raises(CircuitOpen) as raised:  # rebuilt from the wire by name
                client.call("front-breaker", "forward")
        assert raised.value.service == "nobody-behind" and raised.value.retry_after > 0
    finally:
        container.stop()


def test_rpc_proxy_reports_its_breakers_for_the_announcer() -> None:
    config = Config(broker_url="memory://breaker-states", breaker=1)
    container = service_container(Front, config)
    container.start()
    try:
        proxy = container.dependencies["backend"]
        assert proxy.breaker_states() == []  # no call yet: no breaker
        with ClusterRpcClient(config=config.replace(breaker=0)) as client, pytest.raises(UnknownService):
            client.call("front-breaker", "forward")
        assert proxy.breaker_states() == [{"name": "nobody-behind", "state": "open"}]
    finally:
        container.stop()
