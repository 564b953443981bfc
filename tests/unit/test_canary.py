"""Canary routing (amqprpc.routing) on ``memory://``: rules, shares, stickiness, fallback, live rules."""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from amqprpc import ClusterRpcClient, Config, ConfigError, ServiceContainer, rpc
from amqprpc.route_updates import RouteUpdates, rule_message, send_rule
from amqprpc.routing import (
    Router,
    RouteRule,
    canonical_key,
    check_version,
    rules_from_config,
    version_queue,
    versioned_key,
)
from amqprpc.transport import Delivery, QueueInfo

from ..waiting import wait_until


class Versioned:
    name = "versioned"
    config = Config()

    @rpc
    def which(self) -> str:
        return self.config.service_version or "stable"

    @rpc
    def slow(self, seconds: float) -> str:
        time.sleep(seconds)  # holding the canary's one handler, so the rest wait in its queue
        return self.config.service_version or "stable"


# ------------------------------------------------------------------ names and rules


def test_a_version_routes_as_one_topic_word_and_the_method_stays_after_the_first_dot():
    assert versioned_key("orders", "2.1.0", "create") == "orders@2_1_0.create"
    assert canonical_key("orders@2_1_0.create") == "orders.create"
    assert canonical_key("orders.create") == "orders.create"
    assert version_queue("orders", "2.1.0-rc.1") == "rpc-orders@2.1.0-rc.1"


@pytest.mark.parametrize("version", ["", "2..1", ".2", "2.1.", "2_1", "2.1.*", "v#", "x" * 65, "2 1"])
def test_a_version_that_cannot_name_a_queue_is_refused(version):
    with pytest.raises(ConfigError, match="version"):
        check_version(version)


@pytest.mark.parametrize("table, problem", [
    ({"orders": {"canary": "2.1.0"}}, "needs canary"),
    ({"orders": {"canary": "2.1.0", "weight": 1.5}}, "weight must be a number from 0 to 1"),
    ({"orders": {"canary": "2.1.0", "weight": True}}, "weight must be a number"),
    ({"orders": {"canary": "2.1.0", "weight": 0.1, "sticky": "cookie"}}, "sticky must be"),
    ({"orders": {"canary": "2.1.0", "weight": 0.1, "wieght": 0.2}}, "unknown setting"),
    ({"orders": "2.1.0"}, "must be a table"),
    ({"or ders": {"canary": "2.1.0", "weight": 0.1}}, "service name"),
])
def test_a_bad_routing_table_is_a_config_error_naming_it(table, problem):
    with pytest.raises(ConfigError, match=problem):
        Config(extra={"routing": table})


def test_config_file_rules(tmp_path):
    path = tmp_path / "amqprpc.toml"
    path.write_text('[routing.orders]\ncanary = "2.1.0"\nweight = 0.1\nsticky = "identity"\n')
    config = Config.load(path)
    assert rules_from_config(config.extra["routing"]) == {
        "orders": RouteRule("orders", "2.1.0", 0.1, "identity")}


def test_canary_needs_a_version():
    with pytest.raises(ConfigError, match="canary needs a service_version"):
        Config(canary=1)


# ------------------------------------------------------------------ the router's choice


def _live_router(rule: RouteRule) -> Router:
    router = Router({rule.service: rule}, lambda queue: True)
    router.choose(rule.service, None)  # the first call asks whether the version is served
    wait_until(lambda: router.choose(rule.service, None) is not None or
               router._live.get(version_queue(rule.service, rule.canary)), "the answer")
    return router


def test_an_unanswered_version_gets_nothing():
    asked = threading.Event()
    router = Router({"orders": RouteRule("orders", "2.1.0", 1.0)},
                    lambda queue: asked.wait(5) and False)
    assert [router.choose("orders", None) for _ in range(100)] == [None] * 100
    asked.set()


def test_the_share_is_the_weight_within_two_points_over_5000_calls():
    router = _live_router(RouteRule("orders", "2.1.0", 0.1))
    chosen = collections.Counter(router.choose("orders", None) for _ in range(5000))
    assert 400 <= chosen["2.1.0"] <= 600, chosen  # 10 % +- 2 %
    assert abs(chosen["2.1.0"] - 500) <= 5  # low-discrepancy: closer than chance would be


def test_sticky_by_identity_keeps_each_user_on_one_version_and_splits_users_by_weight():
    router = _live_router(RouteRule("orders", "2.1.0", 0.1, "identity"))
    first = {user: router.choose("orders", {"user_id": f"user-{user}"}) for user in range(5000)}
    again = {user: router.choose("orders", {"user_id": f"user-{user}"}) for user in range(5000)}
    assert first == again
    canaried = sum(1 for version in first.values() if version == "2.1.0")
    assert 400 <= canaried <= 600, canaried


def test_sticky_by_a_context_value():
    router = _live_router(RouteRule("orders", "2.1.0", 0.5, "context:tenant"))
    choices = {router.choose("orders", {"tenant": "acme"}) for _ in range(200)}
    assert len(choices) == 1


def test_a_version_without_consumers_gets_nothing():
    router = Router({"orders": RouteRule("orders", "2.1.0", 1.0)}, lambda queue: False)
    router.choose("orders", None)
    wait_until(lambda: version_queue("orders", "2.1.0") in router._live, "the answer")
    assert router.choose("orders", None) is None


# ------------------------------------------------------------------ end to end on memory://


@pytest.fixture
def config(request: pytest.FixtureRequest) -> Config:
    return Config(broker_url=f"memory://{request.node.name}", concurrency=4, rpc_timeout=10)


@pytest.fixture
def stable_and_canary(config: Config) -> Iterator[tuple[ServiceContainer, ServiceContainer]]:
    stable = ServiceContainer(Versioned, config.replace(service_version="2.0.0"))
    canary = ServiceContainer(Versioned, config.replace(service_version="2.1.0", canary=1))
    stable.start()
    canary.start()
    yield stable, canary
    for container in (stable, canary):
        container.kill()


def _shares(client: ClusterRpcClient, calls: int) -> collections.Counter[str]:
    futures = [client.call_async("versioned", "which") for _ in range(calls)]
    return collections.Counter(future.result(10) for future in futures)


def _wait_live(client: ClusterRpcClient) -> None:
    wait_until(lambda: client.call("versioned", "which") == "2.1.0", "a call on the canary")


def test_calls_split_by_weight_between_the_shared_queue_and_a_canary(config, stable_and_canary):
    routed = config.replace(extra={"routing": {"versioned": {"canary": "2.1.0", "weight": 0.1}}})
    with ClusterRpcClient(config=routed) as client:
        _wait_live(client)
        shares = _shares(client, 5000)
    assert set(shares) == {"2.0.0", "2.1.0"}
    assert 400 <= shares["2.1.0"] <= 600, shares


def test_without_a_rule_a_canary_gets_nothing(config, stable_and_canary):
    with ClusterRpcClient(config=config) as client:
        assert _shares(client, 200) == {"2.0.0": 200}


def test_a_stopped_canary_leaves_every_call_to_the_stable_workers(config, stable_and_canary):
    _, canary = stable_and_canary
    routed = config.replace(extra={"routing": {"versioned": {"canary": "2.1.0", "weight": 0.5}}})
    with ClusterRpcClient(config=routed) as client:
        _wait_live(client)
        canary.stop(grace=5)
        wait_until(lambda: _shares(client, 50) == {"2.0.0": 50}, "routing to stop")


def test_the_last_canary_worker_sends_what_is_queued_for_it_to_the_shared_queue(config):
    """Nothing is stranded in a version's queue when its last worker stops gracefully."""
    stable = ServiceContainer(Versioned, config.replace(service_version="2.0.0"))
    canary = ServiceContainer(Versioned, config.replace(service_version="2.1.0", canary=1,
                                                        concurrency=1))
    routed = config.replace(extra={"routing": {"versioned": {"canary": "2.1.0", "weight": 1.0}}})
    stable.start()
    canary.start()
    try:
        with ClusterRpcClient(config=routed) as client:
            _wait_live(client)
            futures = [client.call_async("versioned", "slow", 0.3) for _ in range(10)]
            wait_until(lambda: (client._connection.queue_info("rpc-versioned@2.1.0") or
                                QueueInfo("", 0, 0)).message_count >= 8, "calls to queue up")
            assert canary.stop(grace=5)
            answers = collections.Counter(future.result(10) for future in futures)
        assert sum(answers.values()) == 10 and answers["2.0.0"] >= 8, answers
    finally:
        stable.kill()
        canary.kill()


def test_a_live_rule_routes_and_off_rolls_back(config, stable_and_canary):
    with ClusterRpcClient(config=config) as client:
        send_rule(config, "versioned", RouteRule("versioned", "2.1.0", 1.0))
        _wait_live(client)
        send_rule(config, "versioned", None)
        wait_until(lambda: _shares(client, 20) == {"2.0.0": 20}, "the rollback")


# ------------------------------------------------------------------ hostile rules


class _Sink:
    """Just enough of a transport for RouteUpdates."""

    def declare(self, *entities: Any, remember: bool = True) -> None: ...

    def consume(self, queue: str, callback: Any, **kwargs: Any) -> str:
        self.callback = callback
        return "tag"


def _delivery(message: Any) -> Delivery:
    return Delivery(1, 1, message.body, dict(message.properties), message.exchange,
                    message.routing_key, False, True)


def test_with_a_key_an_unsigned_or_replayed_rule_changes_nothing():
    keyed = Config(discovery_key="k" * 32)
    router = Router({}, lambda queue: True)
    sink = _Sink()
    RouteUpdates(sink, keyed, router, "test")  # type: ignore[arg-type]
    rule = RouteRule("orders", "2.1.0", 1.0)
    sink.callback(_delivery(rule_message(Config(), "orders", rule)))  # unsigned
    assert router.rules == {}
    signed = rule_message(keyed, "orders", rule, now=None)
    sink.callback(_delivery(signed))
    assert router.rules == {"orders": rule}
    sink.callback(_delivery(rule_message(keyed, "orders", None, now=1.0)))  # from 1970: refused
    assert router.rules == {"orders": rule}
    sink.callback(_delivery(signed))  # the same message again: a replay
    off = rule_message(keyed, "orders", None)
    sink.callback(_delivery(off))
    assert router.rules == {}
    sink.callback(_delivery(signed))  # older than the last applied
    assert router.rules == {}


def test_a_rule_for_another_service_than_its_routing_key_says_is_refused():
    router = Router({}, lambda queue: True)
    sink = _Sink()
    RouteUpdates(sink, Config(), router, "test")  # type: ignore[arg-type]
    message = rule_message(Config(), "orders", RouteRule("orders", "2.1.0", 1.0))
    message.routing_key = "route.payments"
    sink.callback(_delivery(message))
    assert router.rules == {}
